//! The one Wasmtime configuration shared by the CLI (which compiles `.cwasm`) and the runtime (which
//! loads them), so an artifact built by `thaw compile` always loads into `libthaw.so` of the same
//! version. Also reads a `.cwasm`'s engine section (what compiled it, for which target, with which
//! settings) and computes this engine's, for the compatibility check.
//!
//! Neighbours: `native` is the one place that deserializes, given proof that the bytes may be
//! trusted (`artifact`, `snapshot`); this module knows nothing of artifacts or trust.

use std::sync::OnceLock;
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

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

    /// Every target thaw compiles for (what `thaw push` publishes).
    pub const ALL: [Target; 2] = [Target::X86_64, Target::Aarch64];

    /// The OCI platform (`os/architecture`) of an image manifest holding this target's `.cwasm`.
    pub fn oci_platform(self) -> &'static str {
        match self {
            Target::X86_64 => "linux/amd64",
            Target::Aarch64 => "linux/arm64",
        }
    }

    /// A target by its name, its triple or its OCI platform: `aarch64`, `arm64`,
    /// `aarch64-unknown-linux-gnu`, `linux/arm64` (and the same for x86_64).
    pub fn parse(s: &str) -> Result<Target, String> {
        let found = Target::ALL.into_iter().find(|t| s == t.triple() || s == t.oci_platform());
        match (found, s) {
            (Some(target), _) => Ok(target),
            (None, "x86_64" | "x86-64" | "amd64") => Ok(Target::X86_64),
            (None, "aarch64" | "arm64") => Ok(Target::Aarch64),
            (None, other) => Err(format!(
                "unknown target `{other}` (expected x86_64 or aarch64, a triple such as aarch64-unknown-linux-gnu, or linux/arm64)"
            )),
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
/// Freed instance slots kept for their module's next instance before a new module reuses one (see
/// `new_runtime_engine`); what they hold resident is outside `memory_budget_mb`.
pub const MAX_UNUSED_WARM_SLOTS: u32 = 16;
/// Upper bound on a guest's native stack use per call.
pub const MAX_WASM_STACK: usize = 512 * 1024;

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

/// Compiles a Wasm module ahead of time for `target`: the `.cwasm` bytes, with the engine section
/// the runtime engine of that architecture compares (same settings, cross-compiled when `target`
/// is not the host). Only compiles: `thaw compile` also checks the input is a proxy-wasm module
/// (`proxy_wasm::abi::declared_abi`) first.
pub fn compile_for(target: Target, wasm: &[u8]) -> anyhow::Result<Vec<u8>> {
    compile_engine(target)?.precompile_module(wasm)
}

/// The process-wide runtime engine with the default number of instance slots.
pub fn runtime_engine() -> Result<&'static Engine, String> {
    runtime_engine_sized(crate::config::DEFAULT_MAX_LIVE_INSTANCES)
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
                .max_memory_size(crate::config::MAX_MEMORY_BYTES)
                // Measured (BENCHMARKS.md, micro): resetting a slot's memory by scanning for dirty
                // pages and restoring them in place (Linux 6.7+, else madvise) and batching the
                // decommits halves the cost of a fresh instance per request.
                .decommit_batch_size(32)
                .linear_memory_keep_resident(2 << 20)
                // The same for the funcref table, which every instance dirties as its indirect
                // calls initialize it lazily: zeroed in place (the pages it dirtied, up to the
                // table's size) instead of decommitted and faulted in again by the next instance.
                // Measured (`cargo bench --bench micro`, paired runs): per_request from a snapshot
                // 33 -> 18 us, with init 52 -> 36 us. A 234-entry table (auth-filter) is one page.
                .table_keep_resident(64 << 10)
                .pagemap_scan(wasmtime::Enabled::Auto)
                // A freed slot keeps the pages its instance dirtied resident, up to `keep_resident`,
                // and stays affine to its module, even once that module is gone (a reload drops
                // it). Wasmtime prefers never-used slots while fewer than this many freed ones
                // wait, so with its default (100) every reload's new modules took fresh slots: the
                // soak saw Envoy's RSS still climbing after 7 minutes, toward (100 + live) x 2 MiB
                // (RELIABILITY.md, "Soak"). Few idle slots: a new module reuses the least recently
                // used one instead.
                .max_unused_warm_slots(MAX_UNUSED_WARM_SLOTS);
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

/// The Wasmtime version recorded in an engine section.
pub fn wasmtime_version_in_section(section: &[u8]) -> String {
    let mut cursor = Cursor(section);
    let _ = cursor.byte();
    let len = cursor.byte().unwrap_or(0) as usize;
    cursor.take(len).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
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
    let fingerprint = cwasm_facts(&probe).map(|facts| facts.engine_section).map_err(|e| anyhow::anyhow!("{e}"))?;
    cache.push((engine.clone(), fingerprint.clone()));
    Ok(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_named_by_name_triple_or_oci_platform() {
        for (names, target) in [
            (["x86_64", "amd64", "x86_64-unknown-linux-gnu", "linux/amd64"], Target::X86_64),
            (["aarch64", "arm64", "aarch64-unknown-linux-gnu", "linux/arm64"], Target::Aarch64),
        ] {
            for name in names {
                assert_eq!(Target::parse(name), Ok(target), "{name}");
            }
            assert_eq!(Target::from_triple(target.triple()), Some(target));
        }
        assert!(Target::parse("riscv64gc-unknown-linux-gnu").unwrap_err().contains("unknown target"));
    }

    #[test]
    fn compile_for_a_target_writes_that_target_and_the_runtime_settings_of_its_hosts() {
        let wasm = b"\0asm\x01\0\0\0";
        for target in Target::ALL {
            let facts = cwasm_facts(&compile_for(target, wasm).unwrap()).unwrap();
            assert_eq!(facts.target_triple, target.triple());
            // What the runtime engine of that architecture compares: the same shared settings.
            assert_eq!(facts.engine_section, engine_fingerprint(&compile_engine(target).unwrap()).unwrap());
        }
        let host = cwasm_facts(&compile_for(Target::host(), wasm).unwrap()).unwrap();
        assert_eq!(host.engine_section, engine_fingerprint(runtime_engine().unwrap()).unwrap());
    }
}
