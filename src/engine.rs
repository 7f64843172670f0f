//! The one Wasmtime configuration shared by the CLI (which compiles `.cwasm`) and the runtime (which
//! loads them), so an artifact built by `thaw compile` always loads into `libthaw.so` of the same
//! version. Also owns the one `unsafe` deserialization call and the engine-compatibility check.
//!
//! Neighbours: `artifact` decides *whether* bytes may be deserialized (signature first); this module
//! only knows *how*.

use std::sync::OnceLock;
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Module, OptLevel, PoolingAllocationConfig};

/// CPU architectures thaw compiles for. Compiling with an explicit target (never the host's
/// detected CPU features) keeps a `.cwasm` loadable on every host of that architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    X86_64,
    Aarch64,
}

impl Target {
    pub fn host() -> Target {
        if cfg!(target_arch = "aarch64") {
            Target::Aarch64
        } else {
            Target::X86_64
        }
    }

    pub fn triple(self) -> &'static str {
        match self {
            Target::X86_64 => "x86_64-unknown-linux-gnu",
            Target::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::X86_64 => "x86_64",
            Target::Aarch64 => "aarch64",
        }
    }

    pub fn parse(s: &str) -> Result<Target, String> {
        match s {
            "x86_64" | "x86-64" | "amd64" => Ok(Target::X86_64),
            "aarch64" | "arm64" => Ok(Target::Aarch64),
            other => Err(format!("unknown target `{other}` (expected x86_64 or aarch64)")),
        }
    }

    /// The architecture a target triple names, if thaw supports it.
    pub fn from_triple(triple: &str) -> Option<Target> {
        match triple.split('-').next()? {
            "x86_64" => Some(Target::X86_64),
            "aarch64" => Some(Target::Aarch64),
            _ => None,
        }
    }
}

/// The Wasmtime major version thaw is built on (artifacts record it; see Cargo.toml's pin).
pub const WASMTIME_MAJOR: &str = "40";

/// How often the epoch ticker advances the engine's epoch: the granularity of guest CPU deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Upper bound on a guest's native stack use per call.
pub const MAX_WASM_STACK: usize = 512 * 1024;
/// Largest linear memory any guest instance may grow to (the per-instance memory cap).
pub const MAX_MEMORY_BYTES: usize = 128 * 1024 * 1024;
/// Most guest instances (memories, tables) alive at once in one process, across all workers.
pub const MAX_LIVE_INSTANCES: u32 = 1000;

/// Settings that decide whether a `.cwasm` is compatible. Everything that goes into Wasmtime's
/// compatibility check lives here and nowhere else.
fn artifact_config(target: Target) -> Config {
    let mut config = Config::new();
    config
        .target(target.triple())
        .expect("the target triples above are known to Cranelift");
    config.cranelift_opt_level(OptLevel::Speed);
    // CPU deadlines per guest call (see proxy_wasm::instance): part of the compiled code.
    config.epoch_interruption(true);
    config.memory_init_cow(true);
    config.max_wasm_stack(MAX_WASM_STACK);
    config
}

/// The engine `thaw compile` uses for `target`.
pub fn compile_engine(target: Target) -> anyhow::Result<Engine> {
    Engine::new(&artifact_config(target))
}

/// The process-wide runtime engine (host architecture, pooling allocator, epoch ticker running).
/// Shared by every filter config and worker; created on first use.
pub fn runtime_engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = artifact_config(Target::host());
            let mut pooling = PoolingAllocationConfig::default();
            pooling
                .total_core_instances(MAX_LIVE_INSTANCES)
                .total_memories(MAX_LIVE_INSTANCES)
                .total_tables(MAX_LIVE_INSTANCES)
                .max_memory_size(MAX_MEMORY_BYTES);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
            let engine = Engine::new(&config).map_err(|e| format!("cannot create the Wasmtime engine: {e:#}"))?;
            start_epoch_ticker(engine.clone());
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn start_epoch_ticker(engine: Engine) {
    std::thread::Builder::new()
        .name("thaw-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
        })
        .expect("spawning the epoch ticker thread");
}

/// The `.wasmtime.engine` section an engine writes into every artifact it compiles: its version,
/// target triple and every setting that must match for an artifact to load.
pub fn engine_fingerprint(engine: &Engine) -> anyhow::Result<Vec<u8>> {
    let probe = engine.precompile_module(b"\0asm\x01\0\0\0")?;
    crate::artifact::cwasm_facts(&probe)
        .map(|facts| facts.engine_section)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Deserializes precompiled native code.
///
/// Only `artifact::VerifiedArtifact` can reach this: its bytes passed signature verification.
pub(crate) fn deserialize_verified(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Module> {
    // SAFETY: Wasmtime requires that the bytes were produced by `Engine::precompile_module` of a
    // compatible engine and not tampered with. The caller (artifact::VerifiedArtifact::load) only
    // passes bytes whose signature from a trusted key verified over exactly these bytes, held in
    // private memory that cannot change between verification and this call.
    unsafe { Module::deserialize(engine, bytes) }
}
