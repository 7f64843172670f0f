//! Tenant artifacts: reading them once, checking what vouches for them, and telling what they are.
//!
//! Trust rule: an artifact's bytes are read once into private memory, its signature (or Sigstore
//! bundle, and attestation) is verified over exactly those bytes under the configured `trust`, and
//! only a [`VerifiedArtifact`] (which only [`VerifiedArtifact::read`] makes) can be compiled or
//! deserialized (`crate::native`). Files thaw writes (artifacts, signatures, snapshots, a
//! rendered listener) go through [`write_atomically`]. Neighbours: `crate::trust` (the policy, detached cosign
//! signatures and Sigstore bundles), `crate::engine` (the engine section of a `.cwasm`).

use crate::engine::CwasmFacts;
use crate::trust::{Evidence, Reason, Refusal, Trust, Verified};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

/// SHA-256 of an artifact's bytes, the identity under which it is pooled, logged and snapshotted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ArtifactDigest(pub [u8; 32]);

impl ArtifactDigest {
    pub fn of(bytes: &[u8]) -> ArtifactDigest {
        ArtifactDigest(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for ArtifactDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// What a file holds, judged from its bytes alone (no code is loaded to find out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactKind {
    /// A Wasm binary module (`.wasm`): compiled at load only when `allow_jit` is set.
    Wasm,
    /// A Wasmtime precompiled module (`.cwasm`).
    Precompiled(CwasmFacts),
}

pub fn classify(bytes: &[u8]) -> Result<ArtifactKind, String> {
    if bytes.starts_with(b"\0asm") {
        return Ok(ArtifactKind::Wasm);
    }
    crate::engine::cwasm_facts(bytes).map(ArtifactKind::Precompiled)
}

/// Why an artifact was refused. Every variant names the file; the caller adds the tenant.
#[derive(Debug)]
pub enum ArtifactError {
    Unreadable {
        path: PathBuf,
        reason: String,
    },
    /// Refused by the trust policy (signature, identity, window, provenance, digest).
    Refused(Refusal),
    NotAnArtifact {
        path: PathBuf,
        reason: String,
    },
    JitNotAllowed {
        path: PathBuf,
    },
    WrongArchitecture {
        path: PathBuf,
        found: String,
        host: &'static str,
    },
    WrongEngine {
        path: PathBuf,
        reason: String,
    },
    LoadFailed {
        path: PathBuf,
        reason: String,
    },
}

impl fmt::Display for ArtifactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactError::Unreadable { path, reason } => write!(f, "cannot read artifact {}: {reason}", path.display()),
            ArtifactError::Refused(r) => r.fmt(f),
            ArtifactError::NotAnArtifact { path, reason } => write!(f, "{} is not a Wasm artifact: {reason}", path.display()),
            ArtifactError::JitNotAllowed { path } => {
                write!(f, "{} is a plain .wasm module; compile it with `thaw compile` or set allow_jit: true", path.display())
            }
            ArtifactError::WrongArchitecture { path, found, host } => {
                write!(f, "{} was compiled for {found}, this host is {host} (wrong architecture)", path.display())
            }
            ArtifactError::WrongEngine { path, reason } => {
                write!(f, "{} was compiled by an incompatible engine: {reason}", path.display())
            }
            ArtifactError::LoadFailed { path, reason } => write!(f, "cannot load {}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for ArtifactError {}

impl ArtifactError {
    /// The `reason` label under which this refusal is counted.
    pub fn reason(&self) -> Reason {
        match self {
            ArtifactError::Unreadable { .. } => Reason::Unreadable,
            ArtifactError::Refused(r) => r.reason,
            _ => Reason::Incompatible,
        }
    }
}

/// Artifact bytes whose evidence verified under the trust policy. The only input to [`Self::load`].
pub struct VerifiedArtifact {
    path: PathBuf,
    bytes: Vec<u8>,
    digest: ArtifactDigest,
    verified: Verified,
}

impl VerifiedArtifact {
    /// Reads `path` once and verifies `evidence` over those bytes under `trust`.
    pub fn read(path: &Path, evidence: &Evidence, trust: &Trust) -> Result<VerifiedArtifact, ArtifactError> {
        let bytes = std::fs::read(path).map_err(|e| ArtifactError::Unreadable { path: path.into(), reason: e.to_string() })?;
        let verified = trust.verify(&bytes, evidence).map_err(ArtifactError::Refused)?;
        let digest = ArtifactDigest::of(&bytes);
        Ok(VerifiedArtifact { path: path.into(), bytes, digest, verified })
    }

    pub fn digest(&self) -> ArtifactDigest {
        self.digest
    }

    /// Who signed, and when (as verified).
    pub fn verified(&self) -> &Verified {
        &self.verified
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The verified bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Writes `bytes` to `path` so a reader (a running Envoy) never sees a half-written file: a
/// temporary file in the same directory, fsync, rename over `path`, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{self, cwasm_facts, Target};

    #[test]
    fn the_engine_section_of_a_compiled_module_names_version_and_target() {
        let engine = engine::compile_engine(Target::Aarch64).unwrap();
        let bytes = engine.precompile_module(b"\0asm\x01\0\0\0").unwrap();
        let facts = cwasm_facts(&bytes).unwrap();
        assert_eq!(facts.wasmtime_version, engine::WASMTIME_MAJOR);
        assert_eq!(facts.target_triple, "aarch64-unknown-linux-gnu");
        assert!(matches!(classify(&bytes), Ok(ArtifactKind::Precompiled(_))));
        assert_eq!(classify(b"\0asm\x01\0\0\0"), Ok(ArtifactKind::Wasm));
        assert!(classify(b"garbage").is_err());
        assert!(cwasm_facts(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn the_cli_and_the_runtime_engines_are_compatible() {
        let compile = engine::compile_engine(Target::host()).unwrap();
        let runtime = engine::runtime_engine().unwrap();
        assert_eq!(engine::engine_fingerprint(&compile).unwrap(), engine::engine_fingerprint(runtime).unwrap());
    }
}
