//! Trust: who may sign tenant artifacts, and the one check every artifact, snapshot source and
//! shipped snapshot passes before thaw deserializes anything from it.
//!
//! The cryptography of Sigstore bundles (certificate chains, RFC 3161 timestamps, transparency-log
//! inclusion proofs, checkpoints and signed entry timestamps, DSSE envelopes) is `sigstore-verify`'s,
//! on RustCrypto (`crypto`). This module is the policy layer on top, written here because it is
//! thaw's own: which keys (with rotation windows checked against verified times), which keyless
//! identities (issuer plus exact subject or regex), whether a log entry is required, and what a
//! build-provenance attestation must say (`provenance`). Detached cosign signatures
//! (`signature`) remain as the shorthand for key-pair signing without a bundle.
//!
//! Every refusal carries a [`Reason`], the label under which it is counted in Envoy's stats.

pub mod crypto;
pub mod provenance;
pub mod signature;

pub use crate::config::{Evidence, SignatureFile};
use crate::config::{IdentitySettings, SubjectMatch, TrustSettings};
use base64::Engine as _;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use signature::TrustedKey;
use sigstore_types::bundle::{SignatureContent, VerificationMaterialContent};
use sigstore_types::{Bundle, DerPublicKey};
use sigstore_verify::{PublicKeyVerificationPolicy, VerificationPolicy, VerificationResult, Verifier};
use std::fmt;
use std::path::{Path, PathBuf};

/// The largest bundle or signature file read (a real one is a few KiB).
const MAX_EVIDENCE_BYTES: u64 = 1 << 20;

/// Why an artifact was refused: the `reason` label of `wasm_artifact_refused`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The artifact or its evidence could not be read.
    Unreadable,
    /// No valid signature by a trusted key or a certificate of a trusted CA (also: a required log
    /// entry missing, a malformed bundle).
    Signature,
    /// A keyless signature by a certificate whose identity or issuer no rule allows.
    Identity,
    /// Signed by a trusted key, but not within the key's validity window (or with no verified time
    /// to check the window against).
    RotationWindow,
    /// The build-provenance attestation is missing, of the wrong type, or from a builder not allowed.
    Provenance,
    /// The signature, bundle or attestation is about other bytes than these.
    Digest,
    /// Verified, but not a module this host can load (wrong architecture or engine, not Wasm).
    Incompatible,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::Unreadable,
        Reason::Signature,
        Reason::Identity,
        Reason::RotationWindow,
        Reason::Provenance,
        Reason::Digest,
        Reason::Incompatible,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Unreadable => "unreadable",
            Reason::Signature => "signature",
            Reason::Identity => "identity",
            Reason::RotationWindow => "rotation_window",
            Reason::Provenance => "provenance",
            Reason::Digest => "digest",
            Reason::Incompatible => "incompatible",
        }
    }
}

/// A refusal: its reason and a message that names the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Refusal {
        Refusal { reason, message: message.into() }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (reason: {})", self.message, self.reason.label())
    }
}

impl std::error::Error for Refusal {}

/// Who signed, as verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    Key { path: PathBuf, hint: String },
    Identity { subject: String, issuer: String },
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Key { path, hint } => write!(f, "key {} (hint {hint})", path.display()),
            Signer::Identity { subject, issuer } => write!(f, "certificate identity {subject} (issuer {issuer})"),
        }
    }
}

/// The two forms of evidence over an artifact's bytes (as `SignatureFile`, without a path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvidenceKind {
    /// base64 DER ECDSA, as `cosign sign-blob --key --output-signature` writes.
    Detached,
    /// A Sigstore bundle (`application/vnd.dev.sigstore.bundle.v0.3+json`).
    Bundle,
}

/// What a successful check established.
#[derive(Clone, Debug)]
pub struct Verified {
    pub signer: Signer,
    /// Authenticated times of the signature (RFC 3161 timestamps, log integrated times).
    pub verified_times: Vec<Timestamp>,
    /// Whether a transparency-log entry was verified (inclusion proof and checkpoint).
    pub logged: bool,
    /// The builder of a verified provenance attestation.
    pub builder: Option<String>,
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "signer: {}\nverified time: ", self.signer)?;
        match self.verified_times.iter().min() {
            Some(t) => write!(f, "{t}")?,
            None => f.write_str("none (no signed timestamp or log entry)")?,
        }
        write!(f, "\ntransparency log: {}", if self.logged { "entry verified" } else { "no entry" })?;
        if let Some(b) = &self.builder {
            write!(f, "\nprovenance: SLSA v1, builder {b}")?;
        }
        Ok(())
    }
}

/// A trusted key and the window in which its signatures count.
struct WindowedKey {
    key: TrustedKey,
    der: DerPublicKey,
    hint: String,
    not_before: Option<Timestamp>,
    not_after: Option<Timestamp>,
}

impl WindowedKey {
    fn signer(&self) -> Signer {
        Signer::Key { path: self.key.path.clone(), hint: self.hint.clone() }
    }

    fn has_window(&self) -> bool {
        self.not_before.is_some() || self.not_after.is_some()
    }

    fn contains(&self, t: Timestamp) -> bool {
        self.not_before.is_none_or(|nb| t >= nb) && self.not_after.is_none_or(|na| t <= na)
    }

    fn window(&self) -> String {
        let show = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
        format!("[{}, {}]", show(self.not_before), show(self.not_after))
    }

    /// Whether `times` satisfy this key's window: a key without one accepts any (even none, as
    /// cosign does); a key with one needs at least one verified time, and every one inside it.
    fn check(&self, times: &[Timestamp]) -> Result<(), Refusal> {
        if !self.has_window() {
            return Ok(());
        }
        if times.is_empty() {
            return Err(Refusal::new(
                Reason::RotationWindow,
                format!(
                    "signed by {} whose validity window {} needs a verified signing time (a signed timestamp or a log entry); the signature carries none",
                    self.key.path.display(),
                    self.window()
                ),
            ));
        }
        match times.iter().find(|t| !self.contains(**t)) {
            None => Ok(()),
            Some(t) => Err(Refusal::new(
                Reason::RotationWindow,
                format!("signed by {} at {t}, outside its validity window {}", self.key.path.display(), self.window()),
            )),
        }
    }
}

/// The loaded trust policy (see README, "Trust").
pub struct Trust {
    keys: Vec<WindowedKey>,
    identities: Vec<IdentitySettings>,
    verifier: Verifier,
    /// SCTs are verified when the trusted root lists CT logs (a public-good root does); a private
    /// root without CT logs (the tests') cannot have them.
    verify_sct: bool,
    has_root: bool,
    require_tlog: bool,
    builder_ids: Option<Vec<String>>,
    /// SHA-256 over everything above that decides a verdict (see [`Trust::fingerprint`]).
    fingerprint: [u8; 32],
}

impl Trust {
    /// Loads keys and the trusted root; the error names the field.
    pub fn load(settings: &TrustSettings) -> Result<Trust, String> {
        crypto::install();
        let mut keys = Vec::with_capacity(settings.keys.len());
        // Every input of a verdict, each length-prefixed: the keys' material and windows, the
        // identities, the trusted root's bytes, the flags and the builders.
        let mut fingerprint = Sha256::new();
        let mut feed = |part: &[u8]| {
            fingerprint.update((part.len() as u64).to_le_bytes());
            fingerprint.update(part);
        };
        for (i, k) in settings.keys.iter().enumerate() {
            let field = format!("{}[{i}].key", settings.keys_field);
            let key = TrustedKey::load(&k.path).map_err(|e| format!("invalid filter_config field `{field}`: {e}"))?;
            let der = DerPublicKey::new(key.spki_der());
            let hint = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(der.as_bytes()));
            feed(der.as_bytes());
            feed(format!("{:?} {:?}", k.not_before, k.not_after).as_bytes());
            keys.push(WindowedKey { key, der, hint, not_before: k.not_before, not_after: k.not_after });
        }
        let (root, has_root) = match &settings.trusted_root {
            Some(path) => {
                let text = read_bounded(path).map_err(|e| format!("invalid filter_config field `trust.trusted_root`: {e}"))?;
                feed(&text);
                let text =
                    String::from_utf8(text).map_err(|_| "invalid filter_config field `trust.trusted_root`: not UTF-8 JSON".to_string())?;
                let root = sigstore_trust_root::TrustedRoot::from_json(&text)
                    .map_err(|e| format!("invalid filter_config field `trust.trusted_root`: {}: {e}", path.display()))?;
                (root, true)
            }
            None => (empty_root(), false),
        };
        for identity in &settings.identities {
            let subject = match &identity.subject {
                SubjectMatch::Exact(s) => format!("exact {s}"),
                SubjectMatch::Regex(r) => format!("regex {}", r.as_str()),
            };
            feed(identity.issuer.as_bytes());
            feed(subject.as_bytes());
        }
        feed(
            format!(
                "root {has_root} tlog {} builders {:?}",
                settings.require_transparency_log,
                settings.provenance.as_ref().map(|p| &p.builder_ids)
            )
            .as_bytes(),
        );
        let verify_sct = !root.ctlogs.is_empty();
        let verifier = Verifier::new(&root).map_err(|e| format!("invalid filter_config field `trust.trusted_root`: {e}"))?;
        Ok(Trust {
            keys,
            identities: settings.identities.clone(),
            verifier,
            verify_sct,
            has_root,
            require_tlog: settings.require_transparency_log,
            builder_ids: settings.provenance.as_ref().map(|p| p.builder_ids.clone()),
            fingerprint: fingerprint.finalize().into(),
        })
    }

    /// Identifies this policy by everything that decides its verdicts (keys and their windows,
    /// identities, the trusted root's bytes, the transparency-log and provenance requirements).
    /// Verdicts depend only on the bytes, the evidence and these (windows are checked against
    /// the signature's verified times, never the clock), so two policies with the same
    /// fingerprint give the same verdict: `load_cache` reuses verifications under it.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Checks `evidence` for `bytes` (read once by the caller; nothing else is read but the evidence).
    pub fn verify(&self, bytes: &[u8], evidence: &Evidence) -> Result<Verified, Refusal> {
        let mut verified = self.verify_signature(bytes, &evidence.signature)?;
        match (&self.builder_ids, &evidence.attestation) {
            (Some(_), None) => {
                return Err(Refusal::new(Reason::Provenance, "trust.provenance requires an attestation, none is configured"))
            }
            (Some(builders), Some(path)) => verified.builder = Some(self.verify_provenance(bytes, path, builders)?),
            (None, _) => {}
        }
        Ok(verified)
    }

    /// Checks a signature or bundle of `bytes`, without provenance (a shipped snapshot's: its
    /// seal binds it to a source whose provenance was checked).
    pub fn verify_signature(&self, bytes: &[u8], signature: &SignatureFile) -> Result<Verified, Refusal> {
        let path = signature.path();
        let text = match signature {
            SignatureFile::Detached(_) => signature::read_signature_text(path)
                .map_err(|reason| signature::SignatureError::SignatureUnreadable { path: path.into(), reason }.to_string()),
            SignatureFile::Bundle(_) => read_bounded(path).map_err(|e| format!("unsigned: {e}")),
        }
        .map_err(|message| Refusal::new(Reason::Unreadable, message))?;
        let kind = match signature {
            SignatureFile::Detached(_) => EvidenceKind::Detached,
            SignatureFile::Bundle(_) => EvidenceKind::Bundle,
        };
        self.verify_signature_text(bytes, kind, &text, path)
    }

    /// Checks evidence already in memory (`text` is what its file would hold, `origin` names where
    /// it came from in messages): a detached signature or bundle pulled from a registry, or a
    /// cosign image signature over its simple-signing payload.
    pub fn verify_signature_text(&self, bytes: &[u8], kind: EvidenceKind, text: &[u8], origin: &Path) -> Result<Verified, Refusal> {
        match kind {
            EvidenceKind::Detached if self.require_tlog => Err(Refusal::new(
                Reason::Signature,
                format!("{} is a detached signature: it carries no log entry, and trust.require_transparency_log is set", origin.display()),
            )),
            EvidenceKind::Detached => {
                let sig = signature::parse_signature(text).map_err(|reason| {
                    Refusal::new(
                        Reason::Signature,
                        signature::SignatureError::SignatureMalformed { path: origin.into(), reason }.to_string(),
                    )
                })?;
                self.untimed_key_signature(&signature::Digest::of(bytes), &sig, origin, || {
                    signature::SignatureError::NotTrusted { path: origin.into() }.to_string()
                })
            }
            EvidenceKind::Bundle => {
                let bundle: Bundle = serde_json::from_slice(text)
                    .map_err(|e| Refusal::new(Reason::Signature, format!("{} is not a Sigstore bundle: {e}", origin.display())))?;
                if !matches!(bundle.content, SignatureContent::MessageSignature(_)) {
                    return Err(Refusal::new(
                        Reason::Signature,
                        format!("{} holds an attestation (DSSE), not a signature of the artifact", origin.display()),
                    ));
                }
                self.verify_bundle(bytes, &bundle, origin)
            }
        }
    }

    /// A build-provenance attestation of `bytes`: a DSSE bundle verified under this same trust, whose
    /// in-toto statement names `bytes`' SHA-256, is SLSA provenance v1, by an allowed builder.
    pub fn verify_provenance(&self, bytes: &[u8], path: &Path, builders: &[String]) -> Result<String, Refusal> {
        let text = read_bounded(path).map_err(|e| Refusal::new(Reason::Unreadable, format!("unsigned: {e}")))?;
        self.verify_provenance_text(bytes, &text, path, builders)
    }

    /// `verify_provenance` of an attestation already in memory (`origin` names where it came
    /// from: a registry referrer).
    pub fn verify_provenance_text(&self, bytes: &[u8], text: &[u8], path: &Path, builders: &[String]) -> Result<String, Refusal> {
        let bundle: Bundle = serde_json::from_slice(text)
            .map_err(|e| Refusal::new(Reason::Signature, format!("{} is not a Sigstore bundle: {e}", path.display())))?;
        let SignatureContent::DsseEnvelope(envelope) = &bundle.content else {
            return Err(Refusal::new(Reason::Provenance, format!("{} is not an attestation (no DSSE envelope)", path.display())));
        };
        // The signature first (under the same trust; sigstore-verify also binds the subject),
        // then what the statement says.
        self.verify_bundle(bytes, &bundle, path)?;
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let statement = provenance::Statement::parse(&envelope.payload_type, envelope.payload.as_bytes())
            .map_err(|e| Refusal::new(Reason::Provenance, format!("{}: {e}", path.display())))?;
        if !statement.names_sha256(&digest) {
            return Err(Refusal::new(
                Reason::Digest,
                format!("{}: the attestation's subjects do not include this artifact's sha256 {}", path.display(), hex(&digest)),
            ));
        }
        let builder = statement.slsa_v1_builder().map_err(|e| Refusal::new(Reason::Provenance, format!("{}: {e}", path.display())))?;
        if !builders.iter().any(|b| b == builder) {
            return Err(Refusal::new(
                Reason::Provenance,
                format!("{}: built by `{builder}`, not an allowed builder ({})", path.display(), builders.join(", ")),
            ));
        }
        Ok(builder.to_string())
    }

    /// A key signature over the bytes whose digest is `signed` that carries no verified time (a
    /// detached signature, an untimed key bundle): the first trusted key that verifies it and
    /// whose window admits that.
    fn untimed_key_signature(
        &self,
        signed: &signature::Digest,
        sig: &p256::ecdsa::Signature,
        path: &Path,
        not_trusted: impl FnOnce() -> String,
    ) -> Result<Verified, Refusal> {
        let signers: Vec<&WindowedKey> =
            self.keys.iter().filter(|k| signature::verify_digest(std::slice::from_ref(&k.key), signed, sig, path).is_ok()).collect();
        if signers.is_empty() {
            return Err(Refusal::new(Reason::Signature, not_trusted()));
        }
        let k = self.first_in_window(&signers, &[])?;
        Ok(Verified { signer: k.signer(), verified_times: Vec::new(), logged: false, builder: None })
    }

    /// The first of `signers` whose window admits `times`, or the refusal of the first.
    fn first_in_window<'k>(&self, signers: &[&'k WindowedKey], times: &[Timestamp]) -> Result<&'k WindowedKey, Refusal> {
        let mut first_refusal = None;
        for k in signers {
            match k.check(times) {
                Ok(()) => return Ok(k),
                Err(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        Err(first_refusal.expect("signers is not empty"))
    }

    fn verify_bundle(&self, bytes: &[u8], bundle: &Bundle, path: &Path) -> Result<Verified, Refusal> {
        let logged = !bundle.verification_material.tlog_entries.is_empty();
        if self.require_tlog && !logged {
            return Err(Refusal::new(
                Reason::Signature,
                format!("{} has no transparency-log entry, and trust.require_transparency_log is set", path.display()),
            ));
        }
        if self.require_tlog && bundle.verification_material.tlog_entries.iter().any(|e| e.inclusion_proof.is_none()) {
            return Err(Refusal::new(
                Reason::Signature,
                format!("{} has a log entry without an inclusion proof, and trust.require_transparency_log is set", path.display()),
            ));
        }
        if logged && !self.has_root {
            return Err(Refusal::new(
                Reason::Signature,
                format!("{} has a transparency-log entry; verifying it needs trust.trusted_root", path.display()),
            ));
        }
        let timestamped = !bundle.verification_material.timestamp_verification_data.rfc3161_timestamps.is_empty();
        if timestamped && !self.has_root {
            return Err(Refusal::new(
                Reason::Signature,
                format!("{} has signed timestamps; verifying them needs trust.trusted_root (its timestamp authorities)", path.display()),
            ));
        }
        let at = |e: sigstore_verify::Error| refusal_of(path, e);
        match &bundle.verification_material.content {
            VerificationMaterialContent::PublicKey(_) => {
                if self.keys.is_empty() {
                    return Err(Refusal::new(
                        Reason::Signature,
                        format!("{} is signed with a key, and no trust.keys are configured", path.display()),
                    ));
                }
                if !logged && !timestamped {
                    return self.verify_untimed_key_bundle(bytes, bundle, path);
                }
                let mut first_error = None;
                let mut signers = Vec::new();
                let mut times = Vec::new();
                for k in &self.keys {
                    let mut policy = PublicKeyVerificationPolicy::new(k.der.clone());
                    if !logged {
                        policy = policy.skip_tlog_unsafe();
                    }
                    match self.verifier.verify(bytes, bundle, &policy) {
                        Ok(result) => {
                            times = result.verified_timestamps().to_vec();
                            signers.push(k);
                        }
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                if signers.is_empty() {
                    let e = first_error.expect("keys is not empty");
                    // Any key's failure other than "wrong key" is the bundle's, and says more.
                    return Err(match at(e) {
                        r if r.reason == Reason::Signature => {
                            Refusal::new(Reason::Signature, format!("{}: no trusted key verifies it ({})", path.display(), r.message))
                        }
                        r => r,
                    });
                }
                let k = self.first_in_window(&signers, &times)?;
                Ok(Verified { signer: k.signer(), verified_times: times, logged, builder: None })
            }
            _ => {
                if self.identities.is_empty() {
                    return Err(Refusal::new(
                        Reason::Identity,
                        format!("{} is signed keyless (a certificate), and no trust.identities are configured", path.display()),
                    ));
                }
                if !logged && !timestamped {
                    return Err(Refusal::new(
                        Reason::Signature,
                        format!(
                            "{} is signed keyless but carries no signed timestamp or log entry: no verified time to check its short-lived certificate against",
                            path.display()
                        ),
                    ));
                }
                let mut policy = VerificationPolicy::any_identity();
                if !self.verify_sct {
                    policy = policy.skip_sct();
                }
                if !logged {
                    policy = policy.skip_tlog_unsafe();
                }
                let result = self.verifier.verify(bytes, bundle, &policy).map_err(at)?;
                let signer = self.allowed_identity(&result, path)?;
                Ok(Verified {
                    signer,
                    verified_times: result.verified_timestamps().to_vec(),
                    logged: result.tlog_verified() && logged,
                    builder: None,
                })
            }
        }
    }

    /// A key-signed bundle with neither a timestamp nor a log entry (`cosign sign-blob --key
    /// --tlog-upload=false`, `thaw sign --bundle`). Verified here because `sigstore-verify` refuses
    /// bundles without a verified time; it is the detached signature's check, on the bundle's
    /// signature (over the artifact, or over a DSSE envelope's PAE) and its message digest.
    fn verify_untimed_key_bundle(&self, bytes: &[u8], bundle: &Bundle, path: &Path) -> Result<Verified, Refusal> {
        let malformed = |why: &str| Refusal::new(Reason::Signature, format!("{}: {why}", path.display()));
        // The digest of what is signed, computed once: compared with the bundle's, then checked.
        let (signed, signature) = match &bundle.content {
            SignatureContent::MessageSignature(m) => {
                let digest = signature::Digest::of(bytes);
                if let Some(d) = &m.message_digest {
                    if d.algorithm != sigstore_types::HashAlgorithm::Sha2256 {
                        return Err(malformed("message digest is not SHA2_256"));
                    }
                    if d.digest.as_bytes() != digest.as_bytes() {
                        return Err(Refusal::new(
                            Reason::Digest,
                            format!("{}: the bundle's message digest is not this artifact's", path.display()),
                        ));
                    }
                }
                (digest, m.signature.as_bytes())
            }
            SignatureContent::DsseEnvelope(envelope) => (signature::Digest::of(&envelope.pae()), envelope.signature.sig.as_bytes()),
            #[allow(unreachable_patterns)]
            _ => return Err(malformed("unsupported bundle content")),
        };
        let signature = p256::ecdsa::Signature::from_der(signature).map_err(|_| malformed("not a DER ECDSA P-256 signature"))?;
        self.untimed_key_signature(&signed, &signature, path, || {
            format!("{}: no trusted key verifies it (wrong key, or the file was modified after signing)", path.display())
        })
    }

    /// The certificate's identity, if a configured rule allows it.
    fn allowed_identity(&self, result: &VerificationResult, path: &Path) -> Result<Signer, Refusal> {
        if !result.certificate_verified() {
            return Err(Refusal::new(Reason::Identity, format!("{}: the certificate chain was not verified", path.display())));
        }
        let (Some(subject), Some(issuer)) = (result.identity(), result.issuer()) else {
            return Err(Refusal::new(
                Reason::Identity,
                format!("{}: the certificate names no identity (SAN) or no issuer", path.display()),
            ));
        };
        let (subject, issuer) = (subject.as_str().to_string(), issuer.to_string());
        let allowed = self.identities.iter().any(|rule| {
            rule.issuer == issuer
                && match &rule.subject {
                    SubjectMatch::Exact(s) => *s == subject,
                    SubjectMatch::Regex(r) => r.is_match(&subject),
                }
        });
        if !allowed {
            return Err(Refusal::new(
                Reason::Identity,
                format!("{}: signed by `{subject}` (issuer `{issuer}`), which no trust.identities rule allows", path.display()),
            ));
        }
        Ok(Signer::Identity { subject, issuer })
    }
}

/// The reason of a `sigstore-verify` failure.
fn refusal_of(path: &Path, e: sigstore_verify::Error) -> Refusal {
    use sigstore_verify::Error as E;
    let reason = match &e {
        E::ArtifactMismatch(_) => Reason::Digest,
        E::IdentityMismatch { .. } | E::IssuerMismatch { .. } | E::Certificate(_) => Reason::Identity,
        _ => Reason::Signature,
    };
    Refusal::new(reason, format!("{}: {e}", path.display()))
}

/// A trusted root with nothing in it: key-signed bundles without timestamps or log entries need no
/// more (what cosign accepts with `--trusted-root` of just the media type).
fn empty_root() -> sigstore_trust_root::TrustedRoot {
    sigstore_trust_root::TrustedRoot::from_json(r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#)
        .expect("the empty trusted root parses")
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_EVIDENCE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_EVIDENCE_BYTES {
        return Err(format!("{} is larger than {} bytes", path.display(), MAX_EVIDENCE_BYTES));
    }
    Ok(bytes)
}

/// A v0.3 Sigstore bundle of `bytes` signed with `key`: what `cosign sign-blob --key
/// --new-bundle-format --tlog-upload=false` writes (a key hint, the SHA-256 message digest and the
/// DER ECDSA signature; no timestamp or log entry, as offline signing can have none).
pub fn key_bundle(key: &signature::PrivateKey, bytes: &[u8]) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let bundle = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": { "publicKey": { "hint": b64(&Sha256::digest(key.public_key_der())) } },
        "messageSignature": {
            "messageDigest": { "algorithm": "SHA2_256", "digest": b64(&Sha256::digest(bytes)) },
            "signature": key.sign(bytes),
        }
    });
    bundle.to_string()
}

/// Reads and parses a Sigstore bundle.
pub fn read_bundle(path: &Path) -> Result<Bundle, Refusal> {
    let bytes = read_bounded(path).map_err(|e| Refusal::new(Reason::Unreadable, format!("unsigned: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| Refusal::new(Reason::Signature, format!("{} is not a Sigstore bundle: {e}", path.display())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeySettings;
    use signature::PrivateKey;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    struct TestSigner {
        dir: tempfile::TempDir,
        key: PrivateKey,
        public: PathBuf,
    }

    fn signer() -> TestSigner {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate();
        let public = dir.path().join("k.pub");
        std::fs::write(&public, key.public_key_pem()).unwrap();
        TestSigner { dir, key, public }
    }

    fn trust(keys: Vec<KeySettings>) -> Trust {
        let mut settings = TrustSettings::keys(Vec::new());
        settings.keys = keys;
        Trust::load(&settings).unwrap()
    }

    #[test]
    fn a_windowed_key_needs_every_verified_time_inside_its_window() {
        let s = signer();
        let k = WindowedKey {
            key: TrustedKey::load(&s.public).unwrap(),
            der: DerPublicKey::new(s.key.public_key_der()),
            hint: String::new(),
            not_before: Some(t("2027-01-01T00:00:00Z")),
            not_after: Some(t("2027-02-01T00:00:00Z")),
        };
        assert!(k.check(&[t("2027-01-15T00:00:00Z")]).is_ok());
        assert!(k.check(&[t("2027-01-01T00:00:00Z"), t("2027-02-01T00:00:00Z")]).is_ok());
        assert_eq!(k.check(&[t("2026-12-31T23:59:59Z")]).unwrap_err().reason, Reason::RotationWindow);
        assert_eq!(k.check(&[t("2027-01-15T00:00:00Z"), t("2027-03-01T00:00:00Z")]).unwrap_err().reason, Reason::RotationWindow);
        let none = k.check(&[]).unwrap_err();
        assert_eq!(none.reason, Reason::RotationWindow);
        assert!(none.message.contains("needs a verified signing time"), "{none}");
        let open = WindowedKey { not_before: None, not_after: None, ..k };
        assert!(open.check(&[]).is_ok());
    }

    #[test]
    fn untimed_bundles_and_signatures_satisfy_only_keys_without_a_window() {
        let s = signer();
        let bytes = b"artifact bytes";
        let bundle = s.dir.path().join("a.sigstore.json");
        std::fs::write(&bundle, key_bundle(&s.key, bytes)).unwrap();
        let sig = s.dir.path().join("a.sig");
        std::fs::write(&sig, s.key.sign(bytes)).unwrap();
        let open = trust(vec![KeySettings { path: s.public.clone(), not_before: None, not_after: None }]);
        let windowed = trust(vec![KeySettings { path: s.public.clone(), not_before: Some(t("2020-01-01T00:00:00Z")), not_after: None }]);
        for evidence in [Evidence { signature: SignatureFile::Bundle(bundle.clone()), attestation: None }, Evidence::detached(&sig)] {
            let verified = open.verify(bytes, &evidence).unwrap();
            assert!(matches!(verified.signer, Signer::Key { .. }));
            assert_eq!(windowed.verify(bytes, &evidence).unwrap_err().reason, Reason::RotationWindow);
        }
        let other = trust(vec![KeySettings { path: signer().public, not_before: None, not_after: None }]);
        let in_bundle = Evidence { signature: SignatureFile::Bundle(bundle), attestation: None };
        assert_eq!(other.verify(bytes, &in_bundle).unwrap_err().reason, Reason::Signature);
        assert_eq!(open.verify(b"other bytes", &in_bundle).unwrap_err().reason, Reason::Digest);
        let missing = Evidence::detached(s.dir.path().join("missing.sig"));
        assert_eq!(open.verify(bytes, &missing).unwrap_err().reason, Reason::Unreadable);
    }
}
