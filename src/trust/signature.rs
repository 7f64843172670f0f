//! cosign-compatible signatures: ECDSA P-256 over the SHA-256 of the exact artifact bytes, stored as
//! base64 of the DER signature (what `cosign sign-blob --key` writes and `cosign verify-blob --key`
//! reads). Keys are PEM: SubjectPublicKeyInfo for public keys (cosign's `cosign.pub`), PKCS#8 (or
//! SEC1) for private keys.
//!
//! Written on RustCrypto's `p256`, the same primitives sigstore-rs uses for key-based verification:
//! sigstore-rs itself brings an HTTP/TLS stack and tokio into Envoy's process for what is, for
//! key-pair `sign-blob` signatures, one ECDSA verification.

use base64::Engine as _;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a key or signature could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    KeyUnreadable {
        path: PathBuf,
        reason: String,
    },
    KeyInvalid {
        path: PathBuf,
        reason: String,
    },
    SignatureUnreadable {
        path: PathBuf,
        reason: String,
    },
    SignatureMalformed {
        path: PathBuf,
        reason: String,
    },
    /// Well-formed, but no trusted key verifies it over these bytes.
    NotTrusted {
        path: PathBuf,
    },
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::KeyUnreadable { path, reason } => write!(f, "cannot read key {}: {reason}", path.display()),
            SignatureError::KeyInvalid { path, reason } => {
                write!(f, "{} is not a PEM P-256 key: {reason}", path.display())
            }
            SignatureError::SignatureUnreadable { path, reason } => {
                write!(f, "unsigned: cannot read signature {}: {reason}", path.display())
            }
            SignatureError::SignatureMalformed { path, reason } => {
                write!(f, "malformed signature {}: {reason}", path.display())
            }
            SignatureError::NotTrusted { path } => write!(
                f,
                "signature {} does not verify with any trusted key (wrong key, or the file was modified after signing)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SignatureError {}

/// One trusted public key and where it came from.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    pub path: PathBuf,
    key: VerifyingKey,
}

impl TrustedKey {
    /// The DER SubjectPublicKeyInfo of the key.
    pub fn spki_der(&self) -> Vec<u8> {
        self.key.to_public_key_der().expect("encoding a P-256 public key as SPKI").into_vec()
    }

    pub fn load(path: &Path) -> Result<TrustedKey, SignatureError> {
        let pem = std::fs::read_to_string(path).map_err(|e| SignatureError::KeyUnreadable { path: path.into(), reason: e.to_string() })?;
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| SignatureError::KeyInvalid { path: path.into(), reason: e.to_string() })?;
        Ok(TrustedKey { path: path.into(), key })
    }
}

/// The text of a signature file (base64 of a DER ECDSA signature; surrounding whitespace is
/// ignored by `parse_signature`), bounded: a signature is ~100 bytes; at most 4 KiB of whatever
/// the file is are read.
pub fn read_signature_text(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut text = Vec::new();
    std::fs::File::open(path).and_then(|f| f.take(4096).read_to_end(&mut text)).map_err(|e| e.to_string())?;
    Ok(text)
}

pub fn parse_signature(text: &[u8]) -> Result<Signature, String> {
    let trimmed = text.trim_ascii();
    let der = base64::engine::general_purpose::STANDARD.decode(trimmed).map_err(|e| format!("not base64: {e}"))?;
    Signature::from_der(&der).map_err(|_| "not a DER ECDSA P-256 signature".to_string())
}

/// Verifies `signature` over `bytes` with any of `keys`; returns the key that verified.
pub fn verify<'k>(
    keys: &'k [TrustedKey],
    bytes: &[u8],
    signature: &Signature,
    signature_path: &Path,
) -> Result<&'k TrustedKey, SignatureError> {
    verify_digest(keys, &Digest::of(bytes), signature, signature_path)
}

/// The SHA-256 of signed bytes, which ECDSA P-256 (SHA-256) signs: computed once, however many
/// keys and signature forms are tried (a hash of an 800 KiB artifact costs more than the check).
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(sha2::Sha256::digest(bytes).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// [`verify`] over the bytes' [`Digest`].
pub fn verify_digest<'k>(
    keys: &'k [TrustedKey],
    digest: &Digest,
    signature: &Signature,
    signature_path: &Path,
) -> Result<&'k TrustedKey, SignatureError> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    // Go's crypto/ecdsa (cosign) does not normalise S; both forms are the same signature.
    let normalized = signature.normalize_s().unwrap_or(*signature);
    keys.iter()
        .find(|k| k.key.verify_prehash(&digest.0, signature).is_ok() || k.key.verify_prehash(&digest.0, &normalized).is_ok())
        .ok_or_else(|| SignatureError::NotTrusted { path: signature_path.into() })
}

/// A private signing key (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY` PEM).
pub struct PrivateKey(SigningKey);

impl PrivateKey {
    pub fn load(path: &Path) -> Result<PrivateKey, SignatureError> {
        let pem = std::fs::read_to_string(path).map_err(|e| SignatureError::KeyUnreadable { path: path.into(), reason: e.to_string() })?;
        let pem = pem.trim();
        SigningKey::from_pkcs8_pem(pem)
            .or_else(|e| p256::SecretKey::from_sec1_pem(pem).map(SigningKey::from).map_err(|_| e))
            .map(PrivateKey)
            .map_err(|e| SignatureError::KeyInvalid { path: path.into(), reason: e.to_string() })
    }

    pub fn generate() -> PrivateKey {
        PrivateKey(SigningKey::random(&mut rand_core::OsRng))
    }

    /// The cosign `sign-blob` signature of `bytes`: base64 of the DER ECDSA signature, no newline.
    pub fn sign(&self, bytes: &[u8]) -> String {
        let signature: Signature = self.0.sign(bytes);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    /// The DER SubjectPublicKeyInfo of the public key.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.0.verifying_key().to_public_key_der().expect("encoding a P-256 public key as SPKI").into_vec()
    }

    pub fn to_pkcs8_pem(&self) -> String {
        self.0.to_pkcs8_pem(LineEnding::LF).expect("encoding a P-256 key as PKCS#8").to_string()
    }

    pub fn public_key_pem(&self) -> String {
        self.0.verifying_key().to_public_key_pem(LineEnding::LF).expect("encoding a P-256 public key as SPKI")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(key: &PrivateKey) -> TrustedKey {
        TrustedKey { path: "test.pub".into(), key: VerifyingKey::from_public_key_pem(&key.public_key_pem()).unwrap() }
    }

    #[test]
    fn a_signature_verifies_only_over_the_signed_bytes_and_key() {
        let key = PrivateKey::generate();
        let other = PrivateKey::generate();
        let sig = parse_signature(key.sign(b"artifact bytes").as_bytes()).unwrap();
        let p = Path::new("a.sig");
        assert!(verify(&[trusted(&key)], b"artifact bytes", &sig, p).is_ok());
        assert!(verify(&[trusted(&key)], b"artifact bytez", &sig, p).is_err());
        assert!(verify(&[trusted(&other)], b"artifact bytes", &sig, p).is_err());
        assert!(verify(&[trusted(&other), trusted(&key)], b"artifact bytes", &sig, p).is_ok());
    }

    #[test]
    fn malformed_signatures_are_named() {
        assert!(parse_signature(b"%%%").unwrap_err().contains("base64"));
        assert!(parse_signature(b"aGVsbG8=").unwrap_err().contains("DER"));
    }
}
