//! The artifact classifier (`thaw::artifact::classify`: bytes -> wasm / cwasm with its target and
//! engine section, read by `thaw::engine::cwasm_facts`) and the ABI-version reader of a `.wasm`
//! (`thaw::proxy_wasm::abi::declared_abi`, wasmparser) on arbitrary bytes: an error or facts that
//! are really in the bytes; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thaw::artifact::{classify, ArtifactKind};
use thaw::engine::{cwasm_facts, wasmtime_version_in_section, Target};

fuzz_target!(|data: &[u8]| {
    match classify(data) {
        Ok(ArtifactKind::Wasm) => assert!(data.starts_with(b"\0asm")),
        Ok(ArtifactKind::Precompiled(facts)) => {
            assert!(!data.starts_with(b"\0asm"));
            assert_eq!(cwasm_facts(data).as_ref(), Ok(&facts), "classify reads the same facts");
            let section = &facts.engine_section;
            assert!(!section.is_empty() && section[0] == 0, "format byte 0");
            assert!(data.windows(section.len()).any(|w| w == &section[..]), "the engine section is in the bytes");
            assert_eq!(wasmtime_version_in_section(section), facts.wasmtime_version);
            assert!(section.len() >= 2 + facts.wasmtime_version.len().min(1));
            // The loader's architecture check takes any triple.
            let _ = Target::from_triple(&facts.target_triple);
        }
        Err(reason) => {
            assert!(!reason.is_empty());
            assert!(cwasm_facts(data).is_err());
        }
    }
    // Whatever the bytes, the version reader of an engine section answers.
    let _ = wasmtime_version_in_section(data);
    match thaw::proxy_wasm::abi::declared_abi(data) {
        Ok(_) => assert!(data.starts_with(b"\0asm"), "only a Wasm module declares an ABI"),
        Err(reason) => assert!(!reason.is_empty()),
    }
});
