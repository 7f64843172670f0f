//! The loaded filter config ([`FilterConfig`]) and the per-stream driver ([`StreamFilter`]) that
//! turns Envoy's stream hooks into proxy-wasm callbacks on the tenant's guest.
//!
//! Fail-open / fail-closed is decided here and only here: unknown tenants per `unknown_tenant`,
//! guest failures per `on_error`.

use crate::artifact::signature::TrustedKey;
use crate::artifact::{ArtifactDigest, ArtifactError, VerifiedArtifact};
use crate::artifact::ArtifactKind;
use crate::config::{Config, CrashLoop, Policy, SignedFile, SnapshotSettings, TenantConfig, TenantId, TenantSource};
use crate::snapshot::{self, Binding, Refusal, SealKey};
use crate::engine;
use crate::log_at;
use crate::pool;
use crate::proxy_wasm::{host, Action, Effect, GuestError, GuestInstance, HttpCallback, Linked, Plugin};
use crate::proxy_wasm::grpc;
use crate::stream::{CallResponse, Direction, HeaderKind, HttpStream, LocalReply};
use crate::telemetry::{Metric, StatsSink};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::Module;

/// A tenant as the driver sees it: its loaded program and its crash-loop state.
pub struct Tenant {
    pub plugin: Arc<Plugin>,
    crashes: CrashTracker,
    /// The tick period the guest's init set (0: no ticks); see `timers`.
    pub tick_period_ms: u64,
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
    pub tenant_from: TenantSource,
    pub unknown_tenant: Policy,
    pub on_error: Policy,
}

impl FilterConfig {
    /// Parses and loads a `filter_config` JSON document. The error names the field or the tenant,
    /// the file and the reason.
    pub fn load_json(name: &str, json: &[u8], stats: &mut dyn StatsSink) -> Result<FilterConfig, String> {
        let config = Config::parse(json).map_err(|e| e.to_string())?;
        FilterConfig::load(name, &config, stats)
    }

    pub fn load(name: &str, config: &Config, stats: &mut dyn StatsSink) -> Result<FilterConfig, String> {
        let engine = engine::runtime_engine_sized(config.max_live_instances)?;
        host::set_budget_bytes((config.memory_budget_mb as usize) << 20);
        let keys = config
            .trusted_keys
            .iter()
            .map(|path| TrustedKey::load(path))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("invalid filter_config field `trusted_keys`: {e}"))?;
        // Tenants naming the same file share its reading and verification; files with the same
        // verified bytes share one loaded Module (native code); tenants sharing an artifact and its
        // configuration share the init check.
        let mut modules: HashMap<(PathBuf, PathBuf), (ArtifactDigest, Module)> = HashMap::new();
        let mut by_digest: HashMap<ArtifactDigest, Module> = HashMap::new();
        let mut linked: HashMap<ArtifactDigest, Linked> = HashMap::new();
        // Init-check results: the tick period the guest's init set.
        let mut init_checked: HashMap<(ArtifactDigest, Vec<u8>, Vec<u8>), u64> = HashMap::new();
        let seal_key = match &config.snapshots {
            Some(settings) => Some(SealKey::load(&settings.key).map_err(|e| format!("invalid filter_config field `snapshots.key`: {e}"))?),
            None => None,
        };
        let mut tenants = HashMap::with_capacity(config.tenants.len());
        for tenant in &config.tenants {
            let refuse = |reason: String| format!("tenant `{}`: artifact refused: {reason}", tenant.id);
            let key = (tenant.module.clone(), tenant.signature.clone());
            let (digest, module) = match modules.get(&key) {
                Some(loaded) => loaded.clone(),
                None => {
                    let started = Instant::now();
                    let artifact = VerifiedArtifact::read(&tenant.module, &tenant.signature, &keys).map_err(|e| {
                        if matches!(e, ArtifactError::Signature(_)) {
                            stats.record(Metric::SignatureFailure, &tenant.id, 1);
                        }
                        refuse(e.to_string())
                    })?;
                    let module = match by_digest.get(&artifact.digest()) {
                        Some(module) => module.clone(),
                        None => {
                            let (module, jit) = artifact.load(engine, config.allow_jit).map_err(|e| refuse(e.to_string()))?;
                            if jit {
                                log_at!(Warn, "thaw: tenant `{}`: {} is plain Wasm, JIT-compiled at config load (allow_jit)", tenant.id, tenant.module.display());
                            }
                            by_digest.insert(artifact.digest(), module.clone());
                            module
                        }
                    };
                    stats.record(Metric::AotLoad, &tenant.id, started.elapsed().as_micros() as i64);
                    modules.insert(key, (artifact.digest(), module.clone()));
                    (artifact.digest(), module)
                }
            };
            let snapshotted = match (&config.snapshots, &tenant.snapshot_source, &seal_key) {
                (Some(settings), Some(source), Some(seal_key)) => {
                    resume_or_snapshot(engine, settings, seal_key, tenant, source, &keys, stats)?
                }
                _ => None,
            };
            let (plugin, tick_period_ms) = match snapshotted {
                // One resumed instance now: checks the snapshot instantiates, and builds its
                // copy-on-write memory image here rather than on the first request.
                Some(plugin) => {
                    let instance = plugin.instantiate().map_err(|e| e.to_string())?;
                    let tick = instance.host_snapshot().tick_period_ms;
                    (plugin, tick)
                }
                None => {
                    let link = match linked.get(&digest) {
                        Some(l) => l.clone(),
                        None => {
                            let l = Linked::link(engine, &module, false).map_err(|e| refuse(format!("{}: {e}", tenant.module.display())))?;
                            linked.insert(digest, l.clone());
                            l
                        }
                    };
                    let plugin = Plugin::from_linked(engine, tenant, &link, digest, None);
                    // Run the guest's init once now, so a guest that rejects its configuration
                    // rejects the config at load, not at the first request.
                    let init_key = (digest, tenant.plugin_config.clone(), tenant.vm_config.clone());
                    let tick = match init_checked.get(&init_key) {
                        Some(tick) => *tick,
                        None => {
                            let tick = plugin.instantiate().map_err(|e| e.to_string())?.host_snapshot().tick_period_ms;
                            init_checked.insert(init_key, tick);
                            tick
                        }
                    };
                    (plugin, tick)
                }
            };
            log_at!(Debug, "thaw: tenant `{}`: loaded {} ({digest}, signature verified)", tenant.id, tenant.module.display());
            let crashes = CrashTracker::new(config.crash_loop);
            tenants.insert(tenant.id.clone(), Tenant { plugin: Arc::new(plugin), crashes, tick_period_ms });
        }
        log_at!(
            Info,
            "thaw: filter `{name}`: {} tenants loaded from {} artifact files ({} distinct), signatures verified",
            tenants.len(),
            modules.len(),
            by_digest.len()
        );
        Ok(FilterConfig {
            name: name.to_string(),
            tenants,
            tenant_from: config.tenant_from.clone(),
            unknown_tenant: config.unknown_tenant,
            on_error: config.on_error,
        })
    }
}

/// A tenant's plugin resumed from its stored snapshot, or from a snapshot made now (and stored);
/// `None` when the guest cannot be snapshotted (logged with the reason: per-worker init then).
fn resume_or_snapshot(
    engine: &wasmtime::Engine,
    settings: &SnapshotSettings,
    seal_key: &SealKey,
    tenant: &TenantConfig,
    source: &SignedFile,
    keys: &[TrustedKey],
    stats: &mut dyn StatsSink,
) -> Result<Option<Plugin>, String> {
    let id = &tenant.id;
    let refuse = |reason: String| format!("tenant `{id}`: snapshot source refused: {reason}");
    let artifact = VerifiedArtifact::read(&source.path, &source.signature, keys).map_err(|e| {
        if matches!(e, ArtifactError::Signature(_)) {
            stats.record(Metric::SignatureFailure, id, 1);
        }
        refuse(e.to_string())
    })?;
    if crate::artifact::classify(artifact.bytes()) != Ok(ArtifactKind::Wasm) {
        return Err(refuse(format!("{} is not a Wasm module (snapshots are made from the .wasm)", source.path.display())));
    }
    let fingerprint = engine::engine_fingerprint(engine).map_err(|e| format!("{e:#}"))?;
    let binding = Binding::new(id, artifact.digest(), &tenant.plugin_config, &tenant.vm_config, &fingerprint);
    let path = snapshot::path_for(&settings.dir, id);
    let started = Instant::now();
    match snapshot::load(&settings.dir, seal_key, id, &binding) {
        Ok(unsealed) => {
            let module = engine::deserialize_trusted(engine, &unsealed.cwasm, engine::Trust::SealedByThaw)
                .map_err(|e| format!("tenant `{id}`: snapshot {}: {e:#}", path.display()))?;
            stats.record(Metric::AotLoad, id, started.elapsed().as_micros() as i64);
            log_at!(Info, "thaw: tenant `{id}`: resumed stored snapshot {} (init not run)", path.display());
            return Plugin::resumed(engine, tenant, module, artifact.digest(), unsealed.host).map(Some);
        }
        Err(Refusal::Missing) => {}
        Err(refusal) => {
            stats.record(Metric::SnapshotRefused, id, 1);
            log_at!(Warn, "thaw: tenant `{id}`: stored snapshot {} refused ({refusal}); nothing from it is used, replacing it", path.display());
        }
    }
    let (cwasm, host) = match snapshot::create(engine, tenant, artifact.bytes(), artifact.digest()) {
        Ok(made) => made,
        Err(snapshot::CreateError::Rejected(e)) => return Err(e.to_string()),
        Err(snapshot::CreateError::Unsupported(why)) => {
            log_at!(Warn, "thaw: tenant `{id}`: cannot snapshot its init ({why}); falling back to per-worker init");
            return Ok(None);
        }
    };
    let sealed = snapshot::seal(seal_key, &binding, &host, &cwasm, settings.encrypt);
    match snapshot::store(&settings.dir, id, &sealed) {
        Ok(path) => log_at!(Info, "thaw: tenant `{id}`: ran init once and stored its snapshot {} ({} ms)", path.display(), started.elapsed().as_millis()),
        Err(e) => log_at!(Warn, "thaw: tenant `{id}`: {e}; using the snapshot unstored"),
    }
    let module = engine::deserialize_trusted(engine, &cwasm, engine::Trust::SealedByThaw).map_err(|e| format!("tenant `{id}`: {e:#}"))?;
    Plugin::resumed(engine, tenant, module, artifact.digest(), host).map(Some)
}

/// What Envoy should do with the stream after a hook.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    Continue,
    /// Stop iterating (headers, trailers), or stop without buffering (body).
    Stop,
    /// Body only: stop and buffer; the guest sees the whole body so far next time.
    StopAndBuffer,
}

struct ActiveGuest {
    tenant: TenantId,
    plugin: Arc<Plugin>,
    instance: GuestInstance,
    context: u32,
}

/// The state of one HTTP stream.
pub struct StreamFilter {
    config: Arc<FilterConfig>,
    active: Option<ActiveGuest>,
    /// A local reply was sent: the guest sees nothing of the response.
    replied: bool,
    /// The last body verdict per direction was StopAndBuffer: Envoy holds the body so far.
    buffering: [bool; 2],
    /// gRPC calls in flight, by Envoy call-stream id.
    grpc_calls: HashMap<u64, grpc::CallState>,
}

pub use crate::proxy_wasm::grpc::CallStreamEvent;

impl StreamFilter {
    pub fn new(config: Arc<FilterConfig>) -> StreamFilter {
        StreamFilter { config, active: None, replied: false, buffering: [false; 2], grpc_calls: HashMap::new() }
    }

    /// Whether Envoy holds earlier body data of `direction` because the guest paused on it.
    pub fn is_buffering(&self, direction: Direction) -> bool {
        self.buffering[direction as usize]
    }

    fn resolve_tenant<S: HttpStream>(&self, stream: &S) -> Option<TenantId> {
        let tenant = match &self.config.tenant_from {
            TenantSource::Header(name) => {
                let value = stream.header_values(HeaderKind::RequestHeaders, name.as_bytes())?.into_iter().next()?;
                TenantId::try_from(std::str::from_utf8(&value).ok()?).ok()?
            }
            TenantSource::Route => stream.route_tenant()?,
        };
        self.config.tenants.contains_key(&tenant).then_some(tenant)
    }

    fn reply<S: HttpStream>(&mut self, stream: &mut S, reply: &LocalReply) -> Verdict {
        self.replied = true;
        stream.send_local_reply(reply);
        Verdict::Stop
    }

    /// A guest failed: drop its instance (never reused), count it, and answer per `on_error`.
    fn guest_failed<S: HttpStream>(&mut self, stream: &mut S, tenant: &TenantId, error: &GuestError) -> Verdict {
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

    fn deny_or_allow<S: HttpStream>(&mut self, stream: &mut S) -> Verdict {
        match self.config.on_error {
            Policy::Allow => Verdict::Continue,
            Policy::Deny => self.reply(
                stream,
                &LocalReply::text(503, "thaw: the tenant's filter failed; request denied\n", "thaw_guest_failure"),
            ),
        }
    }

    /// Performs what the guest asked for during a callback of `direction`, and returns the
    /// verdict: the guest's own (`verdict`), unless it replied locally (Stop) or resumed this
    /// very direction (Continue).
    /// `direction` is that of the stream callback running now (`None` outside stream callbacks,
    /// e.g. an HTTP call response, where resuming means asking Envoy to continue).
    fn apply_effects<S: HttpStream>(&mut self, stream: &mut S, direction: Option<Direction>, effects: Vec<Effect>, mut verdict: Verdict) -> Verdict {
        for effect in effects {
            match effect {
                Effect::LocalReply(reply) if !self.replied => verdict = self.reply(stream, &reply),
                Effect::LocalReply(_) => {}
                Effect::Continue(d) if Some(d) == direction && !self.replied => verdict = Verdict::Continue,
                Effect::Continue(_) if self.replied => {}
                Effect::Continue(d) => {
                    if let Some(active) = self.active.as_mut() {
                        active.instance.set_headers_held(d, false);
                    }
                    stream.continue_stream(d);
                }
                Effect::GrpcStarted { id, stream: streaming } => {
                    self.grpc_calls.insert(id, grpc::CallState { streaming, ..Default::default() });
                }
                Effect::GrpcCancelled(id) => {
                    self.grpc_calls.remove(&id);
                }
                Effect::Close => {
                    if !stream.reset() {
                        log_at!(Warn, "thaw: proxy_close_stream: this Envoy cannot reset streams from a module; replying 503");
                        verdict = self.reply(stream, &LocalReply::text(503, "thaw: stream closed by the filter\n", "thaw_closed"));
                    }
                }
            }
        }
        verdict
    }

    /// Runs one guest HTTP callback on the active instance and turns the outcome into a verdict.
    fn run<S: HttpStream + Clone + 'static>(&mut self, mut stream: S, callback: HttpCallback, count: usize, end_of_stream: bool) -> Verdict {
        if self.replied {
            return Verdict::Continue;
        }
        let Some(active) = self.active.as_mut() else { return Verdict::Continue };
        let result = active.instance.on_http(callback, Box::new(stream.clone()), active.context, count, end_of_stream);
        let effects = active.instance.take_effects();
        let tenant = active.tenant.clone();
        let (direction, paused) = match callback {
            HttpCallback::RequestHeaders | HttpCallback::RequestTrailers => (Direction::Request, Verdict::Stop),
            HttpCallback::RequestBody => (Direction::Request, Verdict::StopAndBuffer),
            HttpCallback::ResponseHeaders | HttpCallback::ResponseTrailers => (Direction::Response, Verdict::Stop),
            HttpCallback::ResponseBody => (Direction::Response, Verdict::StopAndBuffer),
        };
        match result {
            Err(e) => self.guest_failed(&mut stream, &tenant, &e),
            Ok(action) => {
                let verdict = if action == Action::Pause { paused } else { Verdict::Continue };
                let verdict = self.apply_effects(&mut stream, Some(direction), effects, verdict);
                if matches!(callback, HttpCallback::RequestHeaders | HttpCallback::ResponseHeaders) {
                    if let Some(active) = self.active.as_mut() {
                        active.instance.set_headers_held(direction, verdict != Verdict::Continue);
                    }
                }
                verdict
            }
        }
    }

    /// An event of a call stream a gRPC call or stream started (see `grpc::advance`).
    pub fn on_call_stream<S: HttpStream + Clone + 'static>(&mut self, stream: S, id: u64, event: CallStreamEvent) {
        let Some(state) = self.grpc_calls.get_mut(&id) else { return };
        let Ok(token) = u32::try_from(id) else { return };
        let (deliveries, finished) = grpc::advance(state, event);
        if finished {
            self.grpc_calls.remove(&id);
        }
        for delivery in deliveries {
            self.deliver(stream.clone(), |instance, s| instance.on_grpc(Some(s), None, token, delivery));
        }
    }

    /// Runs a guest callback that is not one of the stream's own (a call's or a gRPC stream's
    /// event) and performs its effects; a failure answers per `on_error`.
    fn deliver<S: HttpStream + Clone + 'static>(
        &mut self,
        mut stream: S,
        call: impl FnOnce(&mut GuestInstance, Box<dyn HttpStream>) -> Result<(), GuestError>,
    ) {
        if self.replied {
            return;
        }
        let Some(active) = self.active.as_mut() else { return };
        let result = call(&mut active.instance, Box::new(stream.clone()));
        let effects = active.instance.take_effects();
        let tenant = active.tenant.clone();
        match result {
            Err(e) => {
                self.guest_failed(&mut stream, &tenant, &e);
            }
            Ok(()) => {
                self.apply_effects(&mut stream, None, effects, Verdict::Continue);
            }
        }
    }

    /// The response (or failure: `None`) of an HTTP call the guest started with `proxy_http_call`.
    pub fn on_http_call_response<S: HttpStream + Clone + 'static>(&mut self, stream: S, callout_id: u64, response: Option<CallResponse>) {
        let Ok(token) = u32::try_from(callout_id) else { return };
        self.deliver(stream, |instance, s| instance.on_http_call_response(Some(s), None, token, response));
    }

    pub fn on_request_headers<S: HttpStream + Clone + 'static>(&mut self, mut stream: S, end_of_stream: bool) -> Verdict {
        let Some(tenant) = self.resolve_tenant(&stream) else {
            return match self.config.unknown_tenant {
                Policy::Allow => Verdict::Continue,
                Policy::Deny => self.reply(&mut stream, &LocalReply::text(403, "thaw: unknown tenant\n", "thaw_unknown_tenant")),
            };
        };
        let config = Arc::clone(&self.config);
        let entry = &config.tenants[&tenant];
        if entry.crashes.is_quarantined() {
            stream.record(Metric::QuarantinedRequest, &tenant, 1);
            return self.deny_or_allow(&mut stream);
        }
        let plugin = Arc::clone(&entry.plugin);
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
        let count = stream.header_count(HeaderKind::ResponseHeaders);
        self.run(stream, HttpCallback::ResponseHeaders, count, end_of_stream)
    }

    /// The stream is done: end the guest's context; the instance goes back to the pool (pooled)
    /// or is dropped (per_request).
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
