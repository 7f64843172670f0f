//! The trusted-root parser through thaw's own entry point, `Trust::load`, with a fuzzed
//! `trusted_root.json` (written to a scratch file, as the config names a path): an error naming
//! `trust.trusted_root`, or a trust that still refuses evidence over other bytes and accepts the
//! fuzz-only key's genuine bundle; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use thaw::config::{IdentitySettings, SubjectMatch, TrustSettings};
use thaw::trust::{key_bundle, EvidenceKind, Trust};
use thaw_fuzz::{fuzz_key, fuzz_public_key, scratch, ARTIFACT, OTHER_ARTIFACT};

fuzz_target!(|data: &[u8]| {
    let root = scratch().join("trusted_root.json");
    std::fs::write(&root, data).expect("writing the scratch trusted root");
    let mut settings = TrustSettings::keys(vec![fuzz_public_key()]);
    settings.trusted_root = Some(root);
    settings.identities = vec![IdentitySettings { issuer: "https://issuer".into(), subject: SubjectMatch::Exact("ci@thaw".into()) }];
    match Trust::load(&settings) {
        Err(e) => assert!(e.contains("trust.trusted_root"), "{e}"),
        Ok(trust) => {
            let bundle = key_bundle(fuzz_key(), ARTIFACT);
            let origin = Path::new("genuine.sigstore.json");
            // A key bundle carries no timestamp or log entry: whatever the root, the key decides.
            if let Err(r) = trust.verify_signature_text(ARTIFACT, EvidenceKind::Bundle, bundle.as_bytes(), origin) {
                assert!(!r.message.is_empty());
            }
            assert!(trust.verify_signature_text(OTHER_ARTIFACT, EvidenceKind::Bundle, bundle.as_bytes(), origin).is_err());
        }
    }
});
