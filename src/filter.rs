//! The loaded filter config ([`FilterConfig`]) and the per-stream driver ([`StreamFilter`]) that
//! turns Envoy's stream hooks into proxy-wasm callbacks on the tenant's guest.
//!
//! Fail-open / fail-closed is decided here and only here: unknown tenants per `unknown_tenant`,
//! guest failures per `on_error`.

use crate::artifact::ArtifactKind;
use crate::artifact::{ArtifactDigest, ArtifactError, VerifiedArtifact};
use crate::config::{Config, CrashLoop, OnArtifactFailure, Policy, SignedFile, SnapshotSettings, TenantConfig, TenantId, TenantSource};
use crate::engine;
use crate::load_cache::{self, InitCheck, LoadedModule, ResumedSnapshot};
use crate::log_at;
use crate::pool;
use crate::proxy_wasm::abi::AbiVersion;
use crate::proxy_wasm::{host, Action, Effect, GuestError, GuestInstance, HttpCallback, Linked, Plugin, Subject};
use crate::reply_view::ReplyView;
use crate::snapshot::{self, Binding, Refusal, SealKey};
use crate::stream::{CallResponse, Direction, HeaderKind, HttpStream, LocalReply};
use crate::telemetry::refusals;
use crate::telemetry::{Metric, StatsSink};
use crate::trust::{Evidence, Trust};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A tenant as the driver sees it: its loaded program and its crash-loop state.
pub struct Tenant {
    pub plugin: Arc<Plugin>,
    crashes: CrashTracker,
    /// The tick period the guest's init set (0: no ticks); see `timers`.
    pub tick_period_ms: u64,
    /// For a snapshotted tenant whose init makes HTTP calls: what it takes to snapshot it once
    /// they are answered (`snapshot_after_init`).
    pending_snapshot: Mutex<Option<Box<PendingSnapshot>>>,
    /// That snapshot: requests are served from it once it exists.
    snapshot_after_init: OnceLock<Arc<Plugin>>,
    /// Keep the tenant's verified module and resumed snapshot in `load_cache` while this config lives.
    _module: Arc<LoadedModule>,
    _snapshot: Option<Arc<load_cache::ResumedSnapshot>>,
}

impl Tenant {
    /// Whether requests can be served: false while the answers to its init's HTTP calls are
    /// outstanding (`proxy_wasm::init_calls`).
    pub fn is_ready(&self) -> bool {
        self.plugin.readiness.as_ref().is_none_or(|ready| ready.get().is_some())
    }

    /// The plugin requests are served from: the snapshot taken after init calls, once there.
    pub fn serving_plugin(&self) -> &Arc<Plugin> {
        self.snapshot_after_init.get().unwrap_or(&self.plugin)
    }

    /// The tenant's init calls are answered (`init_calls`): if it is to be snapshotted, take the
    /// snapshot now, replaying them, before the tenant serves its first request. Main thread.
    pub fn on_init_calls_answered(&self, transcript: &Arc<crate::proxy_wasm::init_calls::Transcript>) {
        let Some(pending) = self.pending_snapshot.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        match pending.take(Some(Arc::clone(transcript))) {
            Ok(Some(plugin)) => match plugin.instantiate() {
                // One resumed instance now: checks it, and builds its memory image.
                Ok(_) => {
                    let _ = self.snapshot_after_init.set(Arc::new(plugin));
                }
                Err(e) => log_at!(Error, "thaw: {e}; serving from per-worker init"),
            },
            Ok(None) => {}
            Err(e) => log_at!(Error, "thaw: tenant `{}`: snapshot after init calls: {e}; serving from per-worker init", self.plugin.tenant),
        }
    }
}

/// Counts a tenant's guest failures; too many within the window quarantines it.
struct CrashTracker {
    policy: CrashLoop,
    recent: Mutex<VecDeque<Instant>>,
    /// Milliseconds since `epoch()` until which the tenant is quarantined (0: not quarantined).
    quarantined_until_ms: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl CrashTracker {
    fn new(policy: CrashLoop) -> CrashTracker {
        CrashTracker { policy, recent: Mutex::new(VecDeque::new()), quarantined_until_ms: AtomicU64::new(0) }
    }

    fn is_quarantined(&self) -> bool {
        self.quarantined_until_ms.load(Ordering::Relaxed) > now_ms()
    }

    /// Records a failure; true when it puts the tenant into quarantine.
    fn record_failure(&self) -> bool {
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let window = Duration::from_millis(self.policy.window_ms);
        while recent.front().is_some_and(|t| now.duration_since(*t) > window) {
            recent.pop_front();
        }
        recent.push_back(now);
        if recent.len() >= self.policy.failures as usize && !self.is_quarantined() {
            recent.clear();
            self.quarantined_until_ms.store(now_ms() + self.policy.quarantine_ms.max(1), Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// A filter config, loaded: every tenant's artifact verified, loaded, linked, and its init run once.
pub struct FilterConfig {
    pub name: String,
    pub tenants: HashMap<TenantId, Tenant>,
    /// Tenants whose artifact was refused, with the refusal (`on_artifact_failure: disable_tenant`):
    /// their requests are answered per `on_error`.
    pub disabled: HashMap<TenantId, String>,
    pub tenant_from: TenantSource,
    pub unknown_tenant: Policy,
    pub on_error: Policy,
    pub cold_starts: Option<crate::config::ColdStartLimit>,
    /// Artifact files taken as an earlier, still live config verified them (`load_cache`).
    pub reused_files: usize,
    /// Stored snapshots taken as an earlier, still live config resumed them (`load_cache`).
    pub reused_snapshots: usize,
}

impl FilterConfig {
    /// Parses and loads a `filter_config` JSON document. The error names the field or the tenant,
    /// the file and the reason.
    pub fn load_json(name: &str, json: &[u8], stats: &mut dyn StatsSink) -> Result<FilterConfig, String> {
        let config = Config::parse(json).map_err(|e| e.to_string())?;
        FilterConfig::load(name, &config, stats)
    }

    pub fn load(name: &str, config: &Config, stats: &mut dyn StatsSink) -> Result<FilterConfig, String> {
        let load_started = Instant::now();
        let engine = engine::runtime_engine_sized(config.max_live_instances)?;
        let trust = Trust::load(&config.trust)?;
        // Tenants naming the same file share its reading and verification, files with the same
        // verified bytes share one loaded module (native code), tenants sharing an artifact and its
        // configuration share the init check; and all of it is kept across configs (`load_cache`),
        // so a reload re-does only what changed.
        let mut modules: HashMap<(PathBuf, Evidence), Arc<LoadedModule>> = HashMap::new();
        let mut prepared = load_files(engine, &trust, config);
        let (mut reused, mut snapshots_reused) = (0, 0);
        let seal_key = match &config.snapshots {
            Some(settings) => Some(SealKey::load(&settings.key).map_err(|e| format!("invalid filter_config field `snapshots.key`: {e}"))?),
            None => None,
        };
        let mut tenants = HashMap::with_capacity(config.tenants.len());
        let mut disabled = HashMap::new();
        for tenant in &config.tenants {
            let refuse = |reason: String| format!("tenant `{}`: artifact refused: {reason}", tenant.id);
            let key = (tenant.module.clone(), tenant.evidence.clone());
            let loaded = match modules.get(&key) {
                Some(loaded) => Ok(Arc::clone(loaded)),
                None => {
                    // Prepared above; a file that failed there is tried again for each tenant
                    // naming it (each gets its own refusal).
                    let (result, took) = prepared.remove(&key).unwrap_or_else(|| {
                        let started = Instant::now();
                        (load_cache::module(engine, &trust, &tenant.module, &tenant.evidence, config.allow_jit), started.elapsed())
                    });
                    result.map(|(loaded, source)| {
                        if source == load_cache::Source::Reused {
                            reused += 1;
                        } else {
                            stats.record(Metric::AotLoad, &tenant.id, took.as_micros() as i64);
                        }
                        modules.insert(key, Arc::clone(&loaded));
                        loaded
                    })
                }
            };
            // A stored snapshot an earlier live config resumed, with the tenant, its snapshot
            // source, the snapshot file and the settings as they were then, is resumed again
            // without reading anything (`load_cache`). Stamped before anything is read.
            let snapshot_key = match (&config.snapshots, &tenant.snapshot_source, &seal_key, &loaded) {
                (Some(settings), Some(source), Some(seal_key), Ok(_)) => {
                    let path = snapshot::path_for(&settings.dir, &tenant.id);
                    let signature = settings.signed.then(|| snapshot::signature_of(&path).path().to_path_buf());
                    load_cache::SnapshotKey::of(tenant, source, &trust, &path, signature.as_deref(), seal_key.fingerprint())
                }
                _ => None,
            };
            let kept_snapshot = snapshot_key.as_ref().and_then(load_cache::resumed_snapshot);
            // A snapshot source is an artifact like the module: verified under the same trust.
            let snapshot_source = match (&tenant.snapshot_source, &loaded, &kept_snapshot) {
                (Some(source), Ok(_), None) => Some(read_snapshot_source(source, &trust).map_err(|e| (e, "snapshot source"))),
                _ => None,
            }
            .transpose();
            let (loaded, snapshot_source) = match (loaded.map_err(|e| (e, "artifact")), snapshot_source) {
                (Ok(loaded), Ok(source)) => (loaded, source),
                (Err((e, what)), _) | (_, Err((e, what))) => {
                    artifact_refused(stats, &tenant.id, &e);
                    let message = format!("tenant `{}`: {what} refused: {e}", tenant.id);
                    match config.on_artifact_failure {
                        OnArtifactFailure::RejectConfig => return Err(message),
                        OnArtifactFailure::DisableTenant => {
                            log_at!(Error, "thaw: {message}; the tenant is disabled (on_artifact_failure: disable_tenant), its requests are answered per on_error");
                            if config.on_error == Policy::Allow {
                                log_at!(
                                    Warn,
                                    "thaw: tenant `{}` is disabled with on_error: allow: its requests pass unfiltered",
                                    tenant.id
                                );
                            }
                            disabled.insert(tenant.id.clone(), message);
                            continue;
                        }
                    }
                }
            };
            let mut pending_snapshot = None;
            let mut resumed_snapshot = None;
            let snapshotted = match (kept_snapshot, &config.snapshots, snapshot_source, &seal_key) {
                (Some(kept), ..) => {
                    snapshots_reused += 1;
                    let plugin = Plugin::from_linked(engine, tenant, &kept.linked, kept.digest, Some(kept.host.clone()));
                    let tick = kept.host.tick_period_ms;
                    resumed_snapshot = Some(kept);
                    Some((plugin, Some(tick)))
                }
                (None, Some(settings), Some(source), Some(seal_key)) => {
                    match resume_or_snapshot(engine, settings, seal_key, &trust, tenant, source, stats)? {
                        Ok((plugin, resumed)) => {
                            if let (Some(resumed), Some(key)) = (&resumed, snapshot_key) {
                                load_cache::keep_resumed_snapshot(key, resumed);
                            }
                            resumed_snapshot = resumed;
                            Some((plugin, None))
                        }
                        Err(pending) => {
                            pending_snapshot = Some(pending);
                            None
                        }
                    }
                }
                _ => None,
            };
            let (plugin, tick_period_ms) = match snapshotted {
                // Resumed by an earlier config: instantiated and checked then.
                Some((plugin, Some(tick))) => (plugin, tick),
                // One resumed instance now: checks the snapshot instantiates, and builds its
                // copy-on-write memory image here rather than on the first request.
                Some((plugin, None)) => {
                    let instance = plugin.instantiate().map_err(|e| e.to_string())?;
                    let tick = instance.host_snapshot().tick_period_ms;
                    (plugin, tick)
                }
                None => {
                    let link = loaded.linked(engine).map_err(|e| refuse(format!("{}: {e}", tenant.module.display())))?;
                    let mut plugin = Plugin::from_linked(engine, tenant, &link, loaded.digest, None);
                    // Run the guest's init once now, so a guest that rejects its configuration
                    // rejects the config at load, not at the first request.
                    let checked = loaded.init_check(tenant, || {
                        let (instance, calls) = plugin.instantiate_noting_calls().map_err(|e| e.to_string())?;
                        Ok::<_, String>(InitCheck { tick_period_ms: instance.host_snapshot().tick_period_ms, makes_calls: calls > 0 })
                    })?;
                    let (tick, init_calls) = (checked.tick_period_ms, checked.makes_calls);
                    if init_calls {
                        // Ready once the root instance's init calls are answered (`init_calls`);
                        // a snapshot, if configured, is taken then, before any request.
                        log_at!(Info, "thaw: tenant `{}`: its init makes HTTP calls; ready once they are answered", tenant.id);
                        plugin.readiness = Some(Default::default());
                    } else {
                        pending_snapshot = None;
                    }
                    (plugin, tick)
                }
            };
            log_at!(Debug, "thaw: tenant `{}`: loaded {} ({}, signature verified)", tenant.id, tenant.module.display(), loaded.digest);
            let crashes = CrashTracker::new(config.crash_loop);
            tenants.insert(
                tenant.id.clone(),
                Tenant {
                    plugin: Arc::new(plugin),
                    crashes,
                    tick_period_ms,
                    pending_snapshot: Mutex::new(pending_snapshot),
                    snapshot_after_init: OnceLock::new(),
                    _module: loaded,
                    _snapshot: resumed_snapshot,
                },
            );
        }
        log_at!(
            Info,
            "thaw: filter `{name}`: {} tenants loaded from {} artifact files ({} distinct), signatures verified; {reused} files as an earlier config verified them; {snapshots_reused} snapshots as resumed before; in {} ms",
            tenants.len(),
            modules.len(),
            modules.values().map(|m| m.digest).collect::<std::collections::HashSet<_>>().len(),
            load_started.elapsed().as_millis()
        );
        // Only an accepted config sets the process-wide budget.
        host::set_budget_bytes((config.memory_budget_mb as usize) << 20);
        Ok(FilterConfig {
            name: name.to_string(),
            tenants,
            disabled,
            tenant_from: config.tenant_from.clone(),
            unknown_tenant: config.unknown_tenant,
            on_error: config.on_error,
            cold_starts: config.cold_starts,
            reused_files: reused,
            reused_snapshots: snapshots_reused,
        })
    }
}

impl FilterConfig {
    /// What root contexts (`root`) need of each tenant, in tenant-name order.
    pub fn root_tenants(self: &Arc<Self>) -> Vec<crate::root::TenantRoot> {
        let mut ids: Vec<&TenantId> = self.tenants.keys().collect();
        ids.sort();
        ids.into_iter()
            .map(|id| {
                let t = &self.tenants[id];
                let (config, tenant) = (Arc::clone(self), id.clone());
                crate::root::TenantRoot {
                    id: id.clone(),
                    plugin: Arc::clone(&t.plugin),
                    tick_period_ms: t.tick_period_ms,
                    on_init_answered: Box::new(move |transcript| {
                        if let Some(t) = config.tenants.get(&tenant) {
                            t.on_init_calls_answered(transcript);
                        }
                    }),
                }
            })
            .collect()
    }
}

/// What it takes to snapshot a tenant later: its verified `.wasm` and the snapshot's binding.
/// Kept for a tenant whose init makes HTTP calls: its snapshot is taken once they are answered
/// (`Tenant::snapshot_after_init`).
pub struct PendingSnapshot {
    engine: &'static wasmtime::Engine,
    settings: SnapshotSettings,
    seal_key: SealKey,
    tenant: TenantConfig,
    wasm: Vec<u8>,
    digest: ArtifactDigest,
    binding: Binding,
}

/// What `load_cache::module` gave for a file, and how long it took.
type Prepared = (Result<(Arc<LoadedModule>, load_cache::Source), ArtifactError>, Duration);

/// Reads, verifies and loads every distinct artifact file of `config` (through `load_cache`), on
/// as many threads as there are cores (at most 4): the files are independent, and verifying
/// signatures and deserializing native code are most of a large config's load. Joined before
/// it returns; nothing is loaded that was not verified first (`load_cache::module` does both, in
/// that order, for each file).
fn load_files(engine: &'static wasmtime::Engine, trust: &Trust, config: &Config) -> HashMap<(PathBuf, Evidence), Prepared> {
    let mut seen = std::collections::HashSet::new();
    let files: Vec<&TenantConfig> = config.tenants.iter().filter(|t| seen.insert((&t.module, &t.evidence))).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4).min(files.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        while let Some(t) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
            let started = Instant::now();
            let result = load_cache::module(engine, trust, &t.module, &t.evidence, config.allow_jit);
            done.push(((t.module.clone(), t.evidence.clone()), (result, started.elapsed())));
        }
        done
    };
    if threads <= 1 {
        return work().into_iter().collect();
    }
    std::thread::scope(|scope| {
        // A helper the OS will not start leaves its share to the others (this thread included).
        let helpers: Vec<_> =
            (1..threads).filter_map(|_| std::thread::Builder::new().name("thaw-load".into()).spawn_scoped(scope, work).ok()).collect();
        let mut all: HashMap<_, _> = work().into_iter().collect();
        for helper in helpers {
            // A panic in a helper is re-raised here, on the hook's thread, whose guard catches it.
            all.extend(helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        all
    })
}

/// Reads and verifies a snapshot source, which must be a `.wasm` (snapshots are made from it).
fn read_snapshot_source(source: &SignedFile, trust: &Trust) -> Result<VerifiedArtifact, ArtifactError> {
    let artifact = VerifiedArtifact::read(&source.path, &source.evidence, trust)?;
    if crate::artifact::classify(artifact.bytes()) != Ok(ArtifactKind::Wasm) {
        return Err(ArtifactError::NotAnArtifact {
            path: source.path.clone(),
            reason: "a snapshot source must be a Wasm module (.wasm): snapshots are made from it".into(),
        });
    }
    Ok(artifact)
}

/// Counts a refused artifact: in this config's stats and in the process-wide tally that every
/// accepted config shows (`telemetry::refusals`).
fn artifact_refused(stats: &mut dyn StatsSink, tenant: &TenantId, error: &ArtifactError) {
    refusals::count(tenant, error.reason());
    if matches!(error, ArtifactError::Refused(_)) {
        stats.record(Metric::SignatureFailure, tenant, 1);
    }
}

/// A tenant's plugin resumed from a snapshot, and what `load_cache` may keep of it (`None` for a
/// snapshot made now: its file is too new to be kept).
type Resumed = (Plugin, Option<Arc<ResumedSnapshot>>);

/// A tenant's plugin resumed from its stored snapshot (with what `load_cache` keeps of it), or from
/// a snapshot made now (and stored);
/// `Err(pending)` when the guest's init cannot be snapshotted now (logged with the reason:
/// per-worker init then; `pending` can try again once its init calls are answered).
fn resume_or_snapshot(
    engine: &'static wasmtime::Engine,
    settings: &SnapshotSettings,
    seal_key: &SealKey,
    trust: &Trust,
    tenant: &TenantConfig,
    artifact: VerifiedArtifact,
    stats: &mut dyn StatsSink,
) -> Result<Result<Resumed, Box<PendingSnapshot>>, String> {
    let id = &tenant.id;
    let fingerprint = engine::engine_fingerprint(engine).map_err(|e| format!("{e:#}"))?;
    let binding = Binding::new(id, artifact.digest(), &tenant.plugin_config, &tenant.vm_config, &fingerprint);
    let path = snapshot::path_for(&settings.dir, id);
    let started = Instant::now();
    match snapshot::load(&settings.dir, seal_key, id, &binding, settings.signed.then_some(trust)) {
        Ok(unsealed) => {
            let module = crate::native::load_unsealed(engine, &unsealed)
                .map_err(|e| format!("tenant `{id}`: snapshot {}: {e:#}", path.display()))?;
            stats.record(Metric::AotLoad, id, started.elapsed().as_micros() as i64);
            log_at!(Info, "thaw: tenant `{id}`: resumed stored snapshot {} (init not run)", path.display());
            let linked = Linked::link(engine, &module, None).map_err(|e| format!("tenant `{id}`: snapshot {}: {e}", path.display()))?;
            let resumed = ResumedSnapshot { digest: artifact.digest(), linked, host: unsealed.host().clone() };
            let plugin = Plugin::from_linked(engine, tenant, &resumed.linked, resumed.digest, Some(resumed.host.clone()));
            return Ok(Ok((plugin, Some(Arc::new(resumed)))));
        }
        Err(Refusal::Missing) => {}
        Err(refusal) => {
            stats.record(Metric::SnapshotRefused, id, 1);
            log_at!(
                Warn,
                "thaw: tenant `{id}`: stored snapshot {} refused ({refusal}); nothing from it is used, making a new one",
                path.display()
            );
        }
    }
    let pending = PendingSnapshot {
        engine,
        settings: settings.clone(),
        seal_key: seal_key.clone(),
        tenant: tenant.clone(),
        wasm: artifact.bytes().to_vec(),
        digest: artifact.digest(),
        binding,
    };
    match pending.take(None)? {
        Some(plugin) => Ok(Ok((plugin, None))),
        None => Ok(Err(Box::new(pending))),
    }
}

impl PendingSnapshot {
    /// Runs init (answering its HTTP calls from `init_calls`, if given), snapshots it, seals and
    /// stores it, and loads the snapshot; `None` when init cannot be snapshotted (logged).
    fn take(&self, init_calls: Option<Arc<crate::proxy_wasm::init_calls::Transcript>>) -> Result<Option<Plugin>, String> {
        let (id, started) = (&self.tenant.id, Instant::now());
        let created = match snapshot::create(self.engine, &self.tenant, &self.wasm, self.digest, init_calls) {
            Ok(made) => made,
            Err(snapshot::CreateError::Rejected(e)) => return Err(e.to_string()),
            Err(snapshot::CreateError::Unsupported(why)) => {
                log_at!(Warn, "thaw: tenant `{id}`: cannot snapshot its init ({why}); falling back to per-worker init");
                return Ok(None);
            }
        };
        if self.settings.signed {
            // Stored snapshots must be signed (shipped from build time); this one is not.
            log_at!(
                Info,
                "thaw: tenant `{id}`: ran init once and snapshotted it in memory ({} ms; snapshots.signed: not stored)",
                started.elapsed().as_millis()
            );
        } else {
            let sealed = snapshot::seal(&self.seal_key, &self.binding, &created, self.settings.encrypt);
            match snapshot::store(&self.settings.dir, id, &sealed) {
                Ok(path) => log_at!(
                    Info,
                    "thaw: tenant `{id}`: ran init once and stored its snapshot {} ({} ms)",
                    path.display(),
                    started.elapsed().as_millis()
                ),
                Err(e) => log_at!(Warn, "thaw: tenant `{id}`: {e}; using the snapshot unstored"),
            }
        }
        let module = crate::native::load_created(self.engine, &created).map_err(|e| format!("tenant `{id}`: {e:#}"))?;
        Plugin::resumed(self.engine, &self.tenant, module, self.digest, created.host().clone()).map(Some)
    }
}

/// What Envoy should do with the stream after a hook. Each variant names the Envoy filter status it
/// becomes (`envoy::hooks` does the numbering); a variant that does not exist for a phase becomes
/// that phase's nearest stop, never a continue.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    Continue,
    /// Stop this direction altogether. Headers: StopAllIterationAndWatermark (no body or trailers
    /// move, not even into this filter, until the stream is continued: what a guest's PAUSE on
    /// headers becomes in Envoy's host). Body: StopIterationNoBuffer. Trailers: StopIteration.
    Stop,
    /// Headers: StopAllIterationAndBuffer.
    StopAllAndBuffer,
    /// Body: StopIterationAndBuffer; the guest sees the whole body so far next time.
    StopAndBuffer,
    /// Body: StopIterationAndWatermark.
    StopAndWatermark,
}

impl Verdict {
    /// Whether Envoy holds this direction (nothing of it moves on until it is continued).
    pub fn holds(self) -> bool {
        self != Verdict::Continue
    }
}

/// The status Envoy's Wasm host (proxy-wasm-cpp-host, `convertVmCallResultToFilter*Status`) makes of
/// what a guest's stream callback returned: a local reply sent during the callback stops the
/// stream; a headers PAUSE stops everything (body and trailers too) until the guest continues;
/// values beyond a phase's range are that phase's strongest stop; the rest pass through.
pub fn verdict_for(callback: HttpCallback, action: Action, replied: bool, abi: AbiVersion) -> Verdict {
    use HttpCallback as H;
    match callback {
        H::RequestHeaders | H::ResponseHeaders => match action.0 {
            _ if replied => Verdict::Stop,
            // 2 (proxy-wasm's ContinueAndEndStream) is Continue in Envoy's Wasm filter.
            0 | 2 => Verdict::Continue,
            3 if abi != AbiVersion::V0_1_0 => Verdict::StopAllAndBuffer,
            _ => Verdict::Stop,
        },
        H::RequestBody | H::ResponseBody => match action.0 {
            _ if replied => Verdict::Stop,
            0 => Verdict::Continue,
            1 => Verdict::StopAndBuffer,
            2 => Verdict::StopAndWatermark,
            _ => Verdict::Stop,
        },
        H::RequestTrailers | H::ResponseTrailers => match action.0 {
            0 if !replied => Verdict::Continue,
            _ => Verdict::Stop,
        },
    }
}

struct ActiveGuest {
    tenant: TenantId,
    plugin: Arc<Plugin>,
    instance: GuestInstance,
    context: u32,
}

/// Something that re-enters Envoy, done after the hook's borrow of the stream state is released
/// (`envoy::hooks`), so that Envoy's synchronous re-entry (a resumed body is delivered at once)
/// reaches thaw's hooks and the guest instead of a "busy" answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deferred {
    /// Envoy's local reply.
    LocalReply(LocalReply),
    /// Resume a direction the filter stopped.
    Continue(Direction),
    /// Reset the stream (`proxy_close_stream`).
    Reset,
}

/// Performs what a hook deferred, in order. A reply or a reset ends the stream (Envoy may destroy
/// the filter before it returns): nothing after it is performed.
pub fn perform<S: HttpStream>(deferred: Vec<Deferred>, stream: &mut S) {
    for action in deferred {
        match action {
            Deferred::LocalReply(reply) => {
                stream.send_local_reply(&reply);
                return;
            }
            Deferred::Continue(direction) => stream.continue_stream(direction),
            Deferred::Reset => {
                if !stream.reset() {
                    log_at!(Warn, "thaw: proxy_close_stream: this Envoy cannot reset streams from a module; replying 503");
                    stream.send_local_reply(&LocalReply::text(503, "thaw: stream closed by the filter\n", "thaw_closed"));
                }
                return;
            }
        }
    }
}

/// The state of one HTTP stream.
pub struct StreamFilter {
    config: Arc<FilterConfig>,
    active: Option<ActiveGuest>,
    /// A reply was sent (by the guest or by thaw): the request never moves on after it.
    replied: bool,
    /// The response headers reached this filter (a reply now replaces a response in flight).
    response_started: bool,
    /// The last body verdict per direction was StopAndBuffer: Envoy holds the body so far.
    buffering: [bool; 2],
    /// What re-enters Envoy, for the hook to perform once it released the stream state.
    deferred: Vec<Deferred>,
}

pub use crate::proxy_wasm::grpc::CallStreamEvent;

impl StreamFilter {
    pub fn new(config: Arc<FilterConfig>) -> StreamFilter {
        StreamFilter { config, active: None, replied: false, response_started: false, buffering: [false; 2], deferred: Vec::new() }
    }

    /// After a panic in a hook: the stream is answered 503 by the hook; nothing more of it moves,
    /// nothing deferred is performed, and the instance (possibly cut off mid-call) is dropped.
    pub fn poison(&mut self) {
        self.replied = true;
        self.deferred.clear();
        self.active = None;
    }

    /// What the last calls deferred; the caller performs it (`perform`) once it no longer holds
    /// this filter.
    pub fn take_deferred(&mut self) -> Vec<Deferred> {
        std::mem::take(&mut self.deferred)
    }

    /// Takes and performs what was deferred (for callers that cannot be re-entered, e.g. tests).
    pub fn flush<S: HttpStream>(&mut self, stream: &mut S) {
        perform(self.take_deferred(), stream);
    }

    /// Whether Envoy holds earlier body data of `direction` because the guest paused on it.
    pub fn is_buffering(&self, direction: Direction) -> bool {
        self.buffering[direction as usize]
    }

    /// The request's tenant, if it names a loaded or a disabled one.
    fn resolve_tenant<S: HttpStream>(&self, stream: &S) -> Option<TenantId> {
        let tenant = match &self.config.tenant_from {
            TenantSource::Header(name) => {
                let value = stream.header_values(HeaderKind::RequestHeaders, name.as_bytes())?.into_iter().next()?;
                TenantId::try_from(std::str::from_utf8(&value).ok()?).ok()?
            }
            TenantSource::Route => stream.route_tenant()?,
        };
        (self.config.tenants.contains_key(&tenant) || self.config.disabled.contains_key(&tenant)).then_some(tenant)
    }

    /// Queues a reply (the first one wins) as Envoy's local reply; a gRPC request gets the reply's
    /// gRPC status. A guest's own reply sent before the response started first passes the
    /// guest's response callbacks, as in Envoy's Wasm filter (`reply_view`).
    fn reply<S: HttpStream + Clone + 'static>(&mut self, stream: &S, reply: &LocalReply, from_guest: bool) -> Verdict {
        if self.replied {
            return Verdict::Stop;
        }
        self.replied = true;
        // A gRPC request (`content-type: application/grpc...`) gets a gRPC reply.
        let grpc = stream
            .header_values(HeaderKind::RequestHeaders, b"content-type")
            .and_then(|v| v.into_iter().next())
            .is_some_and(|v| crate::stream::is_grpc_content_type(&v));
        let reply = if from_guest && !self.response_started { self.through_response_callbacks(stream, reply, grpc) } else { reply.clone() };
        self.deferred.push(Deferred::LocalReply(reply.for_envoy(grpc)));
        Verdict::Stop
    }

    /// Runs the guest's response callbacks on the response Envoy will make of `reply`; returns the
    /// reply as they left it. A guest failing there is counted and its instance dropped; the
    /// reply goes out as it was.
    fn through_response_callbacks<S: HttpStream + Clone + 'static>(&mut self, stream: &S, reply: &LocalReply, grpc: bool) -> LocalReply {
        let Some(active) = self.active.as_mut() else { return reply.clone() };
        let (headers, body) = reply.as_response(grpc);
        let view = ReplyView::new(stream.clone(), headers, body);
        let body_len = view.body_len();
        let mut outcome = active.instance.on_http(
            HttpCallback::ResponseHeaders,
            Box::new(view.clone()),
            active.context,
            view.header_count(),
            body_len == 0,
        );
        if outcome.is_ok() && body_len > 0 {
            outcome = active.instance.on_http(HttpCallback::ResponseBody, Box::new(view.clone()), active.context, body_len, true);
        }
        // A second reply, a resume or a reset from here is moot: the reply is the stream's answer.
        active.instance.take_effects();
        if let Err(e) = outcome {
            let tenant = active.tenant.clone();
            log_at!(Error, "thaw: {e}");
            let mut sink = stream.clone();
            sink.record(e.kind().metric(), &tenant, 1);
            self.active = None;
            return reply.clone();
        }
        let (headers, body) = view.into_response();
        reply.with_response(&headers, body, grpc)
    }

    /// A guest failed: drop its instance (never reused), count it, and answer per `on_error`.
    fn guest_failed<S: HttpStream + Clone + 'static>(&mut self, stream: &mut S, tenant: &TenantId, error: &GuestError) -> Verdict {
        log_at!(Error, "thaw: {error}");
        self.active = None;
        stream.record(error.kind().metric(), tenant, 1);
        if let Some(t) = self.config.tenants.get(tenant) {
            if t.crashes.record_failure() {
                stream.record(Metric::Quarantine, tenant, 1);
                log_at!(
                    Error,
                    "thaw: tenant `{tenant}` quarantined for {} ms after {} failures within {} ms (crash loop)",
                    t.crashes.policy.quarantine_ms,
                    t.crashes.policy.failures,
                    t.crashes.policy.window_ms
                );
            }
        }
        self.deny_or_allow(stream)
    }

    fn deny_or_allow<S: HttpStream + Clone + 'static>(&mut self, stream: &mut S) -> Verdict {
        self.per_on_error(stream, "thaw: the tenant's filter failed; request denied\n", "thaw_guest_failure")
    }

    /// Lets the request through or denies it (503, `body`, `details`) per `on_error`.
    fn per_on_error<S: HttpStream + Clone + 'static>(&mut self, stream: &mut S, body: &str, details: &str) -> Verdict {
        match self.config.on_error {
            Policy::Allow => Verdict::Continue,
            Policy::Deny => self.reply(stream, &LocalReply::text(503, body, details), false),
        }
    }

    /// Performs (or defers) what the guest asked for during a callback. `running` is the
    /// direction of the stream callback running now (`None` outside stream callbacks, e.g. an
    /// HTTP call response, where resuming means asking Envoy to continue). Returns whether the
    /// guest resumed `running` itself.
    fn apply_effects<S: HttpStream + Clone + 'static>(&mut self, stream: &S, running: Option<Direction>, effects: Vec<Effect>) -> bool {
        let mut resumed_running = false;
        for effect in effects {
            match effect {
                Effect::LocalReply(reply) => {
                    self.reply(stream, &reply, true);
                }
                // Nothing of a replied request moves on; a replied response may (it is the reply).
                Effect::Continue(Direction::Request) if self.replied => {}
                Effect::Continue(d) if Some(d) == running => resumed_running = true,
                Effect::Continue(d) => {
                    if let Some(active) = self.active.as_mut() {
                        active.instance.set_headers_held(d, false);
                    }
                    self.deferred.push(Deferred::Continue(d));
                }
                Effect::Close => {
                    self.replied = true;
                    self.deferred.push(Deferred::Reset);
                }
            }
        }
        resumed_running
    }

    /// Runs one guest HTTP callback on the active instance and turns the outcome into a verdict.
    fn run<S: HttpStream + Clone + 'static>(
        &mut self,
        mut stream: S,
        callback: HttpCallback,
        count: usize,
        end_of_stream: bool,
    ) -> Verdict {
        let direction = match callback {
            HttpCallback::RequestHeaders | HttpCallback::RequestBody | HttpCallback::RequestTrailers => Direction::Request,
            _ => Direction::Response,
        };
        if self.replied {
            // A replied request never moves on; the response is the reply (Envoy does not pass
            // it through this filter; a guest's own reply already passed its response callbacks).
            if direction == Direction::Request {
                return Verdict::Stop;
            }
            return Verdict::Continue;
        }
        let Some(active) = self.active.as_mut() else { return Verdict::Continue };
        let abi = active.instance.abi();
        let result = active.instance.on_http(callback, Box::new(stream.clone()), active.context, count, end_of_stream);
        let effects = active.instance.take_effects();
        let tenant = active.tenant.clone();
        match result {
            Err(e) => self.guest_failed(&mut stream, &tenant, &e),
            Ok(action) => {
                let replied_before = self.replied;
                let resumed = self.apply_effects(&stream, Some(direction), effects);
                let replied_now = self.replied && !replied_before;
                let mut verdict = verdict_for(callback, action, replied_now, abi);
                if resumed && !replied_now {
                    verdict = Verdict::Continue;
                }
                if self.replied && direction == Direction::Request {
                    verdict = Verdict::Stop;
                }
                if matches!(callback, HttpCallback::RequestHeaders | HttpCallback::ResponseHeaders) {
                    if let Some(active) = self.active.as_mut() {
                        active.instance.set_headers_held(direction, verdict.holds());
                    }
                }
                verdict
            }
        }
    }

    /// An event of a call stream a gRPC call or stream started: the instance's registry of calls
    /// says what it delivers (`GuestInstance::call_stream_event`), each delivered in turn.
    pub fn on_call_stream<S: HttpStream + Clone + 'static>(&mut self, stream: S, id: u64, event: CallStreamEvent) {
        let Some(active) = self.active.as_mut() else { return };
        let deliveries = active.instance.call_stream_event(id, event);
        for delivery in deliveries {
            self.deliver(stream.clone(), |instance, s| instance.on_grpc(Subject::Stream(s), id, delivery));
        }
    }

    /// Runs a guest callback that is not one of the stream's own (a call's or a gRPC stream's
    /// event) and performs its effects; a failure answers per `on_error` (and, failing open,
    /// resumes what the guest was holding).
    fn deliver<S: HttpStream + Clone + 'static>(
        &mut self,
        mut stream: S,
        call: impl FnOnce(&mut GuestInstance, Box<dyn HttpStream>) -> Result<(), GuestError>,
    ) {
        if self.replied {
            return;
        }
        let Some(active) = self.active.as_mut() else { return };
        let held = active.instance.held_headers();
        let result = call(&mut active.instance, Box::new(stream.clone()));
        let effects = active.instance.take_effects();
        let tenant = active.tenant.clone();
        match result {
            Err(e) => {
                if self.guest_failed(&mut stream, &tenant, &e) == Verdict::Continue {
                    for d in [Direction::Request, Direction::Response] {
                        if held[d as usize] {
                            self.deferred.push(Deferred::Continue(d));
                        }
                    }
                }
            }
            Ok(()) => {
                self.apply_effects(&stream, None, effects);
            }
        }
    }

    /// The response (or failure: `None`) of an HTTP call the guest started with `proxy_http_call`.
    pub fn on_http_call_response<S: HttpStream + Clone + 'static>(&mut self, stream: S, callout_id: u64, response: Option<CallResponse>) {
        self.deliver(stream, |instance, s| instance.on_http_call_response(Subject::Stream(s), callout_id, response));
    }

    pub fn on_request_headers<S: HttpStream + Clone + 'static>(&mut self, mut stream: S, end_of_stream: bool) -> Verdict {
        let Some(tenant) = self.resolve_tenant(&stream) else {
            return match self.config.unknown_tenant {
                Policy::Allow => Verdict::Continue,
                Policy::Deny => self.reply(&stream, &LocalReply::text(403, "thaw: unknown tenant\n", "thaw_unknown_tenant"), false),
            };
        };
        let config = Arc::clone(&self.config);
        let Some(entry) = config.tenants.get(&tenant) else {
            // Disabled at load: its artifact was refused (`on_artifact_failure: disable_tenant`).
            stream.record(Metric::DisabledTenantRequest, &tenant, 1);
            return self.per_on_error(
                &mut stream,
                "thaw: the tenant's filter artifact was refused at load; request denied\n",
                "thaw_tenant_disabled",
            );
        };
        if entry.crashes.is_quarantined() {
            stream.record(Metric::QuarantinedRequest, &tenant, 1);
            return self.deny_or_allow(&mut stream);
        }
        if !entry.is_ready() {
            stream.record(Metric::TenantNotReady, &tenant, 1);
            return self.per_on_error(
                &mut stream,
                "thaw: the tenant is initializing (its init calls are unanswered); request denied\n",
                "thaw_tenant_not_ready",
            );
        }
        if let Some(limit) = self.config.cold_starts {
            if !pool::admit(&tenant, limit) {
                // Shed, never passed: with on_error allow, passing would let a flood of cold
                // tenants' requests through unfiltered.
                stream.record(Metric::ColdStartShed, &tenant, 1);
                let mut shed = LocalReply::text(503, "thaw: too many new tenants on this worker; retry\n", "thaw_cold_start_shed");
                shed.headers.push((b"retry-after".to_vec(), b"1".to_vec()));
                return self.reply(&stream, &shed, false);
            }
        }
        let plugin = Arc::clone(entry.serving_plugin());
        let started = pool::take(&plugin, &mut stream).and_then(|mut instance| {
            let context = instance.create_http_context()?;
            Ok(ActiveGuest { tenant: tenant.clone(), plugin, instance, context })
        });
        match started {
            Ok(active) => self.active = Some(active),
            Err(e) => return self.guest_failed(&mut stream, &tenant, &e),
        }
        let count = stream.header_count(HeaderKind::RequestHeaders);
        self.run(stream, HttpCallback::RequestHeaders, count, end_of_stream)
    }

    /// A body chunk of `direction` (with `end_of_stream` on the last).
    pub fn on_body<S: HttpStream + Clone + 'static>(&mut self, stream: S, direction: Direction, end_of_stream: bool) -> Verdict {
        let size = stream.body(direction).map_or(0, |b| b.len());
        let callback = match direction {
            Direction::Request => HttpCallback::RequestBody,
            Direction::Response => HttpCallback::ResponseBody,
        };
        let verdict = self.run(stream, callback, size, end_of_stream);
        self.buffering[direction as usize] = verdict == Verdict::StopAndBuffer;
        verdict
    }

    /// The trailers of `direction`.
    pub fn on_trailers<S: HttpStream + Clone + 'static>(&mut self, stream: S, direction: Direction) -> Verdict {
        let (kind, callback) = match direction {
            Direction::Request => (HeaderKind::RequestTrailers, HttpCallback::RequestTrailers),
            Direction::Response => (HeaderKind::ResponseTrailers, HttpCallback::ResponseTrailers),
        };
        let count = stream.header_count(kind);
        self.run(stream, callback, count, true)
    }

    pub fn on_response_headers<S: HttpStream + Clone + 'static>(&mut self, stream: S, end_of_stream: bool) -> Verdict {
        self.response_started = true;
        let count = stream.header_count(HeaderKind::ResponseHeaders);
        self.run(stream, HttpCallback::ResponseHeaders, count, end_of_stream)
    }

    /// The stream is done: end the guest's context; the instance goes back to the pool (pooled)
    /// or is dropped (per_request). Calls still out are forgotten (Envoy cancels them with the
    /// stream), so a pooled instance never hears of them again.
    pub fn on_stream_complete<S: HttpStream + Clone + 'static>(&mut self, mut stream: S) {
        let Some(mut active) = self.active.take() else { return };
        match active.instance.finish_http_context(Some(Box::new(stream.clone())), active.context) {
            Ok(()) => pool::give_back(&active.plugin, active.instance, &mut stream),
            Err(e) => {
                log_at!(Error, "thaw: {e}");
                stream.record(e.kind().metric(), &active.tenant, 1);
            }
        }
    }

    /// Envoy destroys the stream. If `on_stream_complete` did not run (a reset stream), the guest
    /// context is ended without a stream and the instance is dropped, never pooled.
    pub fn on_destroy(mut self) {
        if let Some(mut active) = self.active.take() {
            if let Err(e) = active.instance.finish_http_context(None, active.context) {
                log_at!(Error, "thaw: {e}");
            }
        }
    }
}
