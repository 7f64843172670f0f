//! The cryptography `sigstore-verify` runs on, given as RustCrypto: SHA-2 and ECDSA P-256/P-384
//! verification (DER signatures, as in X.509 certificates, bundles, timestamps and log entries).
//!
//! Why by hand: `sigstore-crypto`'s only built-in provider is aws-lc-rs, which links C into Envoy's
//! process; its `CryptoProvider` trait exists for exactly this. Only the schemes a Sigstore trust
//! domain uses for ECDSA are served (Fulcio and TSA chains: P-384/SHA-384 and P-256/SHA-256; Rekor
//! v1 and cosign keys: P-256); anything else (RSA, Ed25519, ML-DSA) is refused with its name.

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::signature::Verifier as _;
use sha2::{Digest, Sha256, Sha384, Sha512};
use sigstore_crypto::provider::{CryptoProvider, HashContext};
use sigstore_crypto::{Error, Result, SigningScheme};
use sigstore_types::HashAlgorithm;

#[derive(Debug)]
pub struct RustCrypto;

/// Installs [`RustCrypto`] as `sigstore-crypto`'s provider (once per process; later calls are
/// no-ops). Called before any bundle is verified.
pub fn install() {
    static PROVIDER: RustCrypto = RustCrypto;
    let _ = sigstore_crypto::provider::install_default_provider(&PROVIDER);
}

struct Hasher<D: Digest + Send>(D);

impl<D: Digest + Send> HashContext for Hasher<D> {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finalize(self: Box<Self>) -> Vec<u8> {
        self.0.finalize().to_vec()
    }
}

fn unsupported(scheme: SigningScheme) -> Error {
    Error::UnsupportedAlgorithm(format!("{} signatures are not supported by thaw (ECDSA P-256 and P-384 only)", scheme.name()))
}

fn invalid(scheme: SigningScheme) -> Error {
    Error::Verification(format!("{} signature invalid", scheme.name()))
}

/// The digest of `data` that `scheme` signs.
fn digest_for(scheme: SigningScheme, data: &[u8]) -> Result<Vec<u8>> {
    Ok(match scheme.hash_algorithm() {
        Some(HashAlgorithm::Sha2256) => Sha256::digest(data).to_vec(),
        Some(HashAlgorithm::Sha2384) => Sha384::digest(data).to_vec(),
        Some(HashAlgorithm::Sha2512) => Sha512::digest(data).to_vec(),
        _ => return Err(unsupported(scheme)),
    })
}

impl CryptoProvider for RustCrypto {
    fn hash(&self, algorithm: HashAlgorithm) -> Result<Box<dyn HashContext>> {
        Ok(match algorithm {
            HashAlgorithm::Sha2256 => Box::new(Hasher(Sha256::new())),
            HashAlgorithm::Sha2384 => Box::new(Hasher(Sha384::new())),
            HashAlgorithm::Sha2512 => Box::new(Hasher(Sha512::new())),
            #[allow(unreachable_patterns)]
            other => return Err(Error::UnsupportedAlgorithm(format!("cannot compute {other} digests"))),
        })
    }

    fn verify_raw(&self, scheme: SigningScheme, key: &[u8], data: &[u8], signature: &[u8]) -> Result<()> {
        match scheme {
            // The common case verifies the message directly; the others hash as the scheme says.
            SigningScheme::EcdsaP256Sha256 => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key).map_err(|_| invalid(scheme))?;
                let sig = p256::ecdsa::DerSignature::from_bytes(signature).map_err(|_| invalid(scheme))?;
                key.verify(data, &sig).map_err(|_| invalid(scheme))
            }
            _ => self.verify_prehashed(scheme, key, &digest_for(scheme, data)?, signature),
        }
    }

    fn verify_prehashed(&self, scheme: SigningScheme, key: &[u8], digest: &[u8], signature: &[u8]) -> Result<()> {
        // sigstore-crypto checks this too; p256/p384 would silently truncate a longer input.
        if scheme.hash_algorithm().map(|h| h.digest_size()) != Some(digest.len()) {
            return Err(invalid(scheme));
        }
        match scheme {
            SigningScheme::EcdsaP256Sha256 | SigningScheme::EcdsaP256Sha384 => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key).map_err(|_| invalid(scheme))?;
                let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| invalid(scheme))?;
                key.verify_prehash(digest, &sig).map_err(|_| invalid(scheme))
            }
            SigningScheme::EcdsaP384Sha256 | SigningScheme::EcdsaP384Sha384 => {
                let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(key).map_err(|_| invalid(scheme))?;
                let sig = p384::ecdsa::Signature::from_der(signature).map_err(|_| invalid(scheme))?;
                key.verify_prehash(digest, &sig).map_err(|_| invalid(scheme))
            }
            other => Err(unsupported(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;

    #[test]
    fn p256_signatures_verify_over_their_message_only() {
        let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let public = key.verifying_key().to_encoded_point(false);
        let sig: p256::ecdsa::Signature = key.sign(b"message");
        let der = sig.to_der();
        let p = RustCrypto;
        assert!(p.verify_raw(SigningScheme::EcdsaP256Sha256, public.as_bytes(), b"message", der.as_bytes()).is_ok());
        assert!(p.verify_raw(SigningScheme::EcdsaP256Sha256, public.as_bytes(), b"messagf", der.as_bytes()).is_err());
        let digest = Sha256::digest(b"message");
        assert!(p.verify_prehashed(SigningScheme::EcdsaP256Sha256, public.as_bytes(), &digest, der.as_bytes()).is_ok());
        assert!(p.verify_raw(SigningScheme::Ed25519, public.as_bytes(), b"message", der.as_bytes()).is_err());
    }

    #[test]
    fn p384_signatures_verify() {
        let key = p384::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let public = key.verifying_key().to_encoded_point(false);
        let sig: p384::ecdsa::Signature = key.sign(b"chain");
        let der = sig.to_der();
        let p = RustCrypto;
        assert!(p.verify_raw(SigningScheme::EcdsaP384Sha384, public.as_bytes(), b"chain", der.as_bytes()).is_ok());
        assert!(p.verify_raw(SigningScheme::EcdsaP384Sha384, public.as_bytes(), b"chaim", der.as_bytes()).is_err());
    }
}
