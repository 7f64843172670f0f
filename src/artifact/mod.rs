//! Tenant artifacts: reading them, checking their signatures, telling what they are, and the only
//! path from bytes on disk to a loaded `Module`.
//!
//! Trust rule: an artifact's bytes are read once into private memory, its signature (or Sigstore
//! bundle, and attestation) is verified over exactly those bytes under the configured `trust`, and
//! only a [`VerifiedArtifact`] (which only [`VerifiedArtifact::read`] makes) can be compiled or
//! deserialized. Neighbours: `signature` (detached cosign signatures), `crate::trust` (the policy
//! and Sigstore bundles), `engine` (the one deserialize call).

pub mod signature;

use crate::engine::{self, Target};
use crate::trust::{Evidence, Reason, Refusal, Trust, Verified};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use wasmtime::{Engine, Module};

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

/// Facts read from a `.cwasm`'s ELF header and `.wasmtime.engine` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CwasmFacts {
    /// Wasmtime major version that compiled it.
    pub wasmtime_version: String,
    /// Target triple it was compiled for.
    pub target_triple: String,
    /// The raw engine section: equal to this host's iff every compatibility setting matches.
    pub engine_section: Vec<u8>,
}

/// Reads the facts of a Wasmtime precompiled module without loading it.
pub fn cwasm_facts(bytes: &[u8]) -> Result<CwasmFacts, String> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(bytes).map_err(|e| format!("not a Wasmtime precompiled module (ELF: {e})"))?;
    let section = file.section_by_name(".wasmtime.engine").ok_or("not a Wasmtime precompiled module (no .wasmtime.engine section)")?;
    let data = section.data().map_err(|e| format!("unreadable engine section: {e}"))?;
    // Layout (wasmtime engine/serialization.rs): format byte 0, u8 length + version string, then a
    // postcard record whose first field is the target triple (varint length + bytes).
    let mut cursor = Cursor(data);
    if cursor.byte()? != 0 {
        return Err("unknown engine section format".into());
    }
    let version_len = cursor.byte()? as usize;
    let version = cursor.take(version_len)?;
    let triple_len = cursor.varint()?;
    let triple = cursor.take(triple_len)?;
    Ok(CwasmFacts {
        wasmtime_version: String::from_utf8_lossy(version).into_owned(),
        target_triple: String::from_utf8_lossy(triple).into_owned(),
        engine_section: data.to_vec(),
    })
}

/// A cursor over untrusted bytes that never indexes out of bounds.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated engine section".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn varint(&mut self) -> Result<usize, String> {
        let mut value = 0usize;
        for shift in (0..35).step_by(7) {
            let b = self.byte()?;
            value |= ((b & 0x7f) as usize) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("bad varint in engine section".into())
    }
}

/// The proxy-wasm ABI version a `.wasm` declares (an exported function named
/// `proxy_abi_version_<x>_<y>_<z>`), read from its export section without compiling it. A module
/// that declares none is refused with Envoy's own words: Envoy's Wasm filter will not run it.
pub fn declared_abi(wasm: &[u8]) -> Result<crate::proxy_wasm::abi::AbiVersion, String> {
    use crate::proxy_wasm::abi::{AbiVersion, MISSING_ABI_VERSION};
    let mut functions = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| format!("not a valid Wasm module: {e}"))? {
            wasmparser::Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export.map_err(|e| format!("not a valid Wasm module: {e}"))?;
                    if export.kind == wasmparser::ExternalKind::Func {
                        functions.push(export.name);
                    }
                }
            }
            wasmparser::Payload::CodeSectionStart { .. } => break,
            _ => {}
        }
    }
    AbiVersion::declared(functions.into_iter()).ok_or_else(|| MISSING_ABI_VERSION.to_string())
}

pub fn classify(bytes: &[u8]) -> Result<ArtifactKind, String> {
    if bytes.starts_with(b"\0asm") {
        return Ok(ArtifactKind::Wasm);
    }
    cwasm_facts(bytes).map(ArtifactKind::Precompiled)
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

    /// Turns verified bytes into a `Module` for `engine`: deserializes a compatible `.cwasm`, or
    /// compiles a `.wasm` when `allow_jit`. Returns the module and whether it was JIT-compiled.
    pub fn load(&self, engine: &Engine, allow_jit: bool) -> Result<(Module, bool), ArtifactError> {
        let path = || self.path.clone();
        match classify(&self.bytes).map_err(|reason| ArtifactError::NotAnArtifact { path: path(), reason })? {
            ArtifactKind::Wasm if allow_jit => Module::new(engine, &self.bytes)
                .map(|m| (m, true))
                .map_err(|e| ArtifactError::LoadFailed { path: path(), reason: format!("{e:#}") }),
            ArtifactKind::Wasm => Err(ArtifactError::JitNotAllowed { path: path() }),
            ArtifactKind::Precompiled(facts) => {
                let host = Target::host();
                if Target::from_triple(&facts.target_triple) != Some(host) {
                    return Err(ArtifactError::WrongArchitecture { path: path(), found: facts.target_triple, host: host.name() });
                }
                let ours =
                    engine::engine_fingerprint(engine).map_err(|e| ArtifactError::LoadFailed { path: path(), reason: format!("{e:#}") })?;
                if facts.engine_section != ours {
                    let ours = wasmtime_version_in_section(&ours);
                    let reason = if facts.wasmtime_version != ours {
                        format!("Wasmtime {} artifact, this host runs Wasmtime {ours}", facts.wasmtime_version)
                    } else {
                        "same Wasmtime version, different engine settings (compile it with this version's `thaw compile`)".into()
                    };
                    return Err(ArtifactError::WrongEngine { path: path(), reason });
                }
                engine::deserialize_trusted(engine, &self.bytes, engine::Trust::SignatureVerified)
                    .map(|m| (m, false))
                    .map_err(|e| ArtifactError::LoadFailed { path: path(), reason: format!("{e:#}") })
            }
        }
    }
}

/// The Wasmtime version recorded in an engine section.
fn wasmtime_version_in_section(section: &[u8]) -> String {
    let mut cursor = Cursor(section);
    let _ = cursor.byte();
    let len = cursor.byte().unwrap_or(0) as usize;
    cursor.take(len).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
