//! Evidence parsers through thaw's own entry point, `Trust::verify_signature_text`: fuzzed text as
//! a Sigstore bundle (and, by the first byte, as a detached cosign signature or a provenance
//! attestation, `Trust::verify_provenance_text`) over fixed bytes, under two trusts: the fuzz-only
//! key alone, and that key plus the public-good Sigstore trusted root with a keyless identity.
//! Evidence is refused with a reason, or accepted for those bytes only (the same text over other
//! bytes is refused); never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;
use thaw::config::{IdentitySettings, SubjectMatch, TrustSettings};
use thaw::trust::{EvidenceKind, Signer, Trust};
use thaw_fuzz::{fixtures, fuzz_public_key, ARTIFACT, OTHER_ARTIFACT};

fn trusts() -> &'static [Trust; 2] {
    static TRUSTS: OnceLock<[Trust; 2]> = OnceLock::new();
    TRUSTS.get_or_init(|| {
        let keys = TrustSettings::keys(vec![fuzz_public_key()]);
        let mut keyless = keys.clone();
        keyless.trusted_root = Some(fixtures().join("trusted_root.json"));
        keyless.identities = vec![IdentitySettings {
            issuer: "https://token.actions.githubusercontent.com".into(),
            subject: SubjectMatch::Exact("https://github.com/thaw/thaw/.github/workflows/release.yml@refs/heads/main".into()),
        }];
        [Trust::load(&keys).expect("key trust"), Trust::load(&keyless).expect("keyless trust")]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, text)) = data.split_first() else { return };
    let trust = &trusts()[(selector & 1) as usize];
    let origin = Path::new("fuzzed.sigstore.json");
    if selector & 6 == 6 {
        let builders = ["https://github.com/thaw/builder".to_string()];
        if let Ok(builder) = trust.verify_provenance_text(ARTIFACT, text, origin, &builders) {
            assert_eq!(builder, builders[0]);
            assert!(trust.verify_provenance_text(OTHER_ARTIFACT, text, origin, &builders).is_err(), "provenance about other bytes");
        }
        return;
    }
    let kind = if selector & 6 == 2 { EvidenceKind::Detached } else { EvidenceKind::Bundle };
    match trust.verify_signature_text(ARTIFACT, kind, text, origin) {
        Ok(verified) => {
            match &verified.signer {
                Signer::Key { path, .. } => assert_eq!(path, &fuzz_public_key()),
                Signer::Identity { issuer, .. } => assert_eq!(issuer, "https://token.actions.githubusercontent.com"),
            }
            let other = trust.verify_signature_text(OTHER_ARTIFACT, kind, text, origin);
            assert!(other.is_err(), "evidence for {ARTIFACT:?} also verified other bytes");
        }
        Err(refusal) => assert!(!refusal.message.is_empty()),
    }
});
