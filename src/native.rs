//! Native code: the one path from trusted bytes to a loaded `Module`, and the one `unsafe`
//! deserialize call in thaw.
//!
//! A `.cwasm` or a snapshot is native code; Wasmtime may only deserialize bytes its own
//! `precompile_module` produced, untampered. The proof of that is a value only the verifying code
//! can make, because their fields are private to their modules: a [`VerifiedArtifact`] (its
//! signature verified under the trust, by `artifact`), an [`Unsealed`] snapshot (its seal and
//! binding verified, by `snapshot`), or a [`Created`] snapshot (compiled by this process, by
//! `snapshot::create`). Outside `envoy`, the crate denies `unsafe_code`, so nothing else can
//! deserialize.
//!
//! No code outside those modules can forge a proof (each of these fails to compile):
//! ```compile_fail
//! let forged = thaw::snapshot::Unsealed { cwasm: b"native code".to_vec(), host: Default::default() };
//! ```
//! ```compile_fail
//! let forged = thaw::snapshot::Created { cwasm: b"native code".to_vec(), host: Default::default() };
//! ```
//! ```compile_fail
//! let forged = thaw::artifact::VerifiedArtifact {
//!     path: "a.cwasm".into(),
//!     bytes: b"native code".to_vec(),
//!     digest: thaw::artifact::ArtifactDigest([0; 32]),
//!     verified: unimplemented!(),
//! };
//! ```

use crate::artifact::{classify, ArtifactError, ArtifactKind, VerifiedArtifact};
use crate::engine::{self, Target};
use crate::snapshot::{Created, Unsealed};
use wasmtime::{Engine, Module};

/// Proof that bytes may be deserialized as native code, and the bytes.
enum Proof<'a> {
    Verified(&'a VerifiedArtifact),
    Unsealed(&'a Unsealed),
    Created(&'a Created),
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, proof: Proof<'_>) -> anyhow::Result<Module> {
    let bytes = match proof {
        Proof::Verified(artifact) => artifact.bytes(),
        Proof::Unsealed(snapshot) => snapshot.cwasm(),
        Proof::Created(snapshot) => snapshot.cwasm(),
    };
    // SAFETY: Wasmtime requires bytes produced by `Engine::precompile_module` of a compatible
    // engine, untampered. Each proof says so of exactly these bytes, which are in this process's
    // private memory and cannot change between the check and this call: a trusted signature over
    // them (`VerifiedArtifact::read`), a verified seal by thaw's snapshot key (`snapshot::unseal`),
    // or this process compiled them (`snapshot::create`). Compatibility: `load_artifact` compares
    // the engine section first; snapshots are bound to this engine's fingerprint.
    unsafe { Module::deserialize(engine, bytes) }
}

/// A verified artifact as a `Module` for `engine`: deserializes a compatible `.cwasm`, or compiles
/// a `.wasm` when `allow_jit`. Returns the module and whether it was JIT-compiled.
pub fn load_artifact(engine: &Engine, artifact: &VerifiedArtifact, allow_jit: bool) -> Result<(Module, bool), ArtifactError> {
    let path = || artifact.path().to_path_buf();
    let failed = |e: anyhow::Error| ArtifactError::LoadFailed { path: path(), reason: format!("{e:#}") };
    match classify(artifact.bytes()).map_err(|reason| ArtifactError::NotAnArtifact { path: path(), reason })? {
        ArtifactKind::Wasm if allow_jit => Module::new(engine, artifact.bytes()).map(|m| (m, true)).map_err(failed),
        ArtifactKind::Wasm => Err(ArtifactError::JitNotAllowed { path: path() }),
        ArtifactKind::Precompiled(facts) => {
            let host = Target::host();
            if Target::from_triple(&facts.target_triple) != Some(host) {
                return Err(ArtifactError::WrongArchitecture { path: path(), found: facts.target_triple, host: host.name() });
            }
            let ours = engine::engine_fingerprint(engine).map_err(failed)?;
            if facts.engine_section != ours {
                let ours = engine::wasmtime_version_in_section(&ours);
                let reason = if facts.wasmtime_version != ours {
                    format!("Wasmtime {} artifact, this host runs Wasmtime {ours}", facts.wasmtime_version)
                } else {
                    "same Wasmtime version, different engine settings (compile it with this version's `thaw compile`)".into()
                };
                return Err(ArtifactError::WrongEngine { path: path(), reason });
            }
            deserialize(engine, Proof::Verified(artifact)).map(|m| (m, false)).map_err(failed)
        }
    }
}

/// A stored snapshot whose seal and binding verified.
pub fn load_unsealed(engine: &Engine, snapshot: &Unsealed) -> anyhow::Result<Module> {
    deserialize(engine, Proof::Unsealed(snapshot))
}

/// A snapshot this process just made.
pub fn load_created(engine: &Engine, snapshot: &Created) -> anyhow::Result<Module> {
    deserialize(engine, Proof::Created(snapshot))
}
