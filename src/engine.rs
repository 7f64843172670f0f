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
/// Default for the most guest instances alive at once in one process, across all workers
/// (`max_live_instances`: the pooling allocator's slots).
pub const DEFAULT_MAX_LIVE_INSTANCES: u32 = 1000;

/// Settings that decide whether a `.cwasm` is compatible. Everything that goes into Wasmtime's
/// compatibility check lives here and nowhere else.
fn artifact_config(target: Target) -> Config {
    let mut config = Config::new();
    config.target(target.triple()).expect("the target triples above are known to Cranelift");
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

/// The process-wide runtime engine with the default number of instance slots.
pub fn runtime_engine() -> Result<&'static Engine, String> {
    runtime_engine_sized(DEFAULT_MAX_LIVE_INSTANCES)
}

/// The process-wide runtime engine (host architecture, pooling allocator with `max_live_instances`
/// slots, epoch ticker running). Shared by every filter config and worker; created on first use,
/// so the first config loaded sizes it (a later, different size is logged and not applied).
pub fn runtime_engine_sized(max_live_instances: u32) -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<(Result<Engine, String>, u32)> = OnceLock::new();
    let (engine, slots) = ENGINE.get_or_init(|| (new_runtime_engine(max_live_instances), max_live_instances));
    if *slots != max_live_instances {
        crate::log_at!(
            Warn,
            "thaw: the engine already has {slots} instance slots; max_live_instances {max_live_instances} applies after a restart"
        );
    }
    engine.as_ref().map_err(Clone::clone)
}

fn new_runtime_engine(max_live_instances: u32) -> Result<Engine, String> {
    {
        {
            let mut config = artifact_config(Target::host());
            let mut pooling = PoolingAllocationConfig::default();
            pooling
                .total_core_instances(max_live_instances)
                .total_memories(max_live_instances)
                .total_tables(max_live_instances)
                .max_memory_size(MAX_MEMORY_BYTES)
                // Measured (BENCHMARKS.md, micro): resetting a slot's memory by scanning for dirty
                // pages and restoring them in place (Linux 6.7+, else madvise) and batching the
                // decommits halves the cost of a fresh instance per request.
                .decommit_batch_size(32)
                .linear_memory_keep_resident(2 << 20)
                .pagemap_scan(wasmtime::Enabled::Auto);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
            let engine = Engine::new(&config).map_err(|e| format!("cannot create the Wasmtime engine: {e:#}"))?;
            start_epoch_ticker(engine.clone());
            Ok(engine)
        }
    }
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
/// Computed once per engine (it compiles a probe module).
pub fn engine_fingerprint(engine: &Engine) -> anyhow::Result<Vec<u8>> {
    static CACHE: std::sync::Mutex<Vec<(Engine, Vec<u8>)>> = std::sync::Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, fingerprint)) = cache.iter().find(|(e, _)| Engine::same(e, engine)) {
        return Ok(fingerprint.clone());
    }
    let probe = engine.precompile_module(b"\0asm\x01\0\0\0")?;
    let fingerprint = crate::artifact::cwasm_facts(&probe).map(|facts| facts.engine_section).map_err(|e| anyhow::anyhow!("{e}"))?;
    cache.push((engine.clone(), fingerprint.clone()));
    Ok(fingerprint)
}

/// Why precompiled bytes may be trusted as native code.
pub(crate) enum Trust {
    /// A signature from a trusted key verified over exactly these bytes (`VerifiedArtifact`).
    SignatureVerified,
    /// A snapshot whose seal (HMAC with thaw's snapshot key) verified, or that this process just
    /// compiled itself (`filter`, snapshots).
    SealedByThaw,
}

/// Deserializes precompiled native code: the one place thaw does.
pub(crate) fn deserialize_trusted(engine: &Engine, bytes: &[u8], _why: Trust) -> anyhow::Result<Module> {
    // SAFETY: Wasmtime requires that the bytes were produced by `Engine::precompile_module` of a
    // compatible engine and not tampered with. Callers hold a `Trust` reason: either a trusted
    // key's signature verified over exactly these bytes, or thaw produced them (sealed with its
    // snapshot key, seal verified). The bytes are in private memory that cannot change between
    // that check and this call.
    unsafe { Module::deserialize(engine, bytes) }
}
