//! The snapshot unseal path (`thaw::snapshot::unseal`) under a fixed key and binding: arbitrary
//! bytes are refused; a genuinely sealed snapshot (made once per process by `snapshot::create`
//! from the hostcall harness guest, sealed plain and encrypted) is accepted exactly when it is
//! unchanged, and refused when mutated, under another binding (naming the first field that
//! differs) or under another key. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use thaw::artifact::ArtifactDigest;
use thaw::config::{InstancePolicy, TenantConfig, TenantId};
use thaw::snapshot::{self, Binding, Refusal, SealKey};

const SECRET: &[u8] = b"thaw fuzz snapshot secret, 32+ bytes long";

struct Sealed {
    key: SealKey,
    binding: Binding,
    /// Plain and encrypted seals of one snapshot.
    files: [Vec<u8>; 2],
    cwasm: Vec<u8>,
}

fn sealed() -> &'static Sealed {
    static SEALED: OnceLock<Sealed> = OnceLock::new();
    SEALED.get_or_init(|| {
        let wasm = thaw_fuzz::guest("c-fuzz-hostcalls.wasm");
        let engine = thaw::engine::runtime_engine_sized(8).expect("the runtime engine");
        let tenant = TenantConfig {
            id: TenantId::try_from("fuzz").unwrap(),
            module: "c-fuzz-hostcalls.wasm".into(),
            evidence: thaw::trust::Evidence::detached("unused.sig"),
            plugin_config: b"{}".to_vec(),
            vm_config: Vec::new(),
            root_id: String::new(),
            instances: InstancePolicy::DEFAULT,
            snapshot_source: None,
        };
        let digest = ArtifactDigest::of(&wasm);
        let created = snapshot::create(engine, &tenant, &wasm, digest, None).unwrap_or_else(|_| panic!("snapshot of the harness guest"));
        let fingerprint = thaw::engine::engine_fingerprint(engine).expect("engine fingerprint");
        let binding = Binding::new(&tenant.id, digest, &tenant.plugin_config, &tenant.vm_config, &fingerprint);
        let key = SealKey::from_secret(SECRET).unwrap();
        let files = [snapshot::seal(&key, &binding, &created, false), snapshot::seal(&key, &binding, &created, true)];
        Sealed { key, binding, files, cwasm: created.cwasm().to_vec() }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = sealed();
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        // Arbitrary bytes: nobody without the key can seal.
        0 => {
            let refused = snapshot::unseal(&s.key, &s.binding, rest).err();
            assert!(refused.is_some() || s.files.iter().any(|f| f == rest), "unsealed forged bytes");
        }
        // A genuine file, mutated by (position, xor) edits, then cut or extended.
        1 => {
            let Some((&which, edits)) = rest.split_first() else { return };
            let original = &s.files[which as usize % 2];
            let mut file = original.clone();
            let mut chunks = edits.chunks_exact(5);
            for edit in &mut chunks {
                let at = u32::from_le_bytes([edit[0], edit[1], edit[2], edit[3]]) as usize;
                if !file.is_empty() {
                    let i = at % file.len();
                    file[i] ^= edit[4];
                }
            }
            match chunks.remainder() {
                [cut, ..] if cut % 2 == 0 => file.truncate(file.len().saturating_sub(*cut as usize / 2)),
                tail => file.extend_from_slice(&tail[tail.len().min(1)..]),
            }
            match snapshot::unseal(&s.key, &s.binding, &file) {
                Ok(unsealed) => {
                    assert_eq!(&file, original, "a changed snapshot was accepted");
                    assert_eq!(unsealed.cwasm(), &s.cwasm[..]);
                }
                Err(refusal) => {
                    assert_ne!(&file, original, "the genuine snapshot was refused: {refusal}");
                    assert!(matches!(refusal, Refusal::BadSeal | Refusal::Malformed(_)), "{refusal:?}");
                }
            }
        }
        // The genuine file under a binding of fuzzed fields.
        2 => {
            let mut fields = rest.split(|b| *b == b'|').map(|f| String::from_utf8_lossy(f).into_owned());
            let mut binding = s.binding.clone();
            let mut changed = None;
            for (name, slot) in [
                ("tenant", &mut binding.tenant),
                ("module", &mut binding.module_digest),
                ("configuration", &mut binding.config_digest),
                ("engine", &mut binding.engine),
            ] {
                if let Some(value) = fields.next().filter(|v| !v.is_empty()) {
                    if *slot != value && changed.is_none() {
                        changed = Some(name);
                    }
                    *slot = value;
                }
            }
            for file in &s.files {
                match (snapshot::unseal(&s.key, &binding, file), changed) {
                    (Ok(_), None) => {}
                    (Err(Refusal::WrongBinding { field }), Some(expected)) => assert_eq!(field, expected),
                    (Ok(_), Some(f)) => panic!("accepted under another {f}"),
                    (Err(r), _) => panic!("refused ({r:?}), expected the binding check to name {changed:?}"),
                }
            }
        }
        // The genuine file under a key from a fuzzed secret.
        _ => match SealKey::from_secret(rest) {
            Err(e) => assert!(rest.len() < snapshot::MIN_KEY_BYTES, "{e}"),
            Ok(key) => {
                for file in &s.files {
                    match snapshot::unseal(&key, &s.binding, file) {
                        Ok(_) => assert_eq!(rest, SECRET, "unsealed with another key"),
                        Err(r) => assert!(rest != SECRET && r == Refusal::BadSeal, "{r:?}"),
                    }
                }
            }
        },
    }
});
