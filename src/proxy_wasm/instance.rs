//! A tenant's program ([`Plugin`]) and its live instances ([`GuestInstance`]): instantiation, the
//! init sequence (`_initialize`, root context, `proxy_on_vm_start`, `proxy_on_configure`), and each
//! proxy-wasm callback run under a CPU deadline. A trap, a deadline overrun or a memory-cap hit
//! marks the instance failed; the driver then drops it and answers per `on_error`.

use super::abi::{self, AbiVersion, Action};
use super::host::{CallContext, CallScope, Effect, HostState, Phase, Subject};
use super::host::{GuestMemory, HostSnapshot};
use super::hostcalls;
use crate::artifact::ArtifactDigest;
use crate::config::{InstancePolicy, TenantConfig, TenantId};
use crate::engine::EPOCH_TICK;
use crate::stream::{Callouts, HttpStream};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Engine, ExternType, Instance, InstancePre, Module, ModuleExport, Store, TypedFunc};

/// A tenant's loaded program, shared (read-only) by every worker.
pub struct Plugin {
    pub tenant: TenantId,
    pub digest: ArtifactDigest,
    /// Unique per loaded plugin: pools key on it, so a config reload never reuses old instances.
    pub uid: u64,
    engine: Engine,
    pre: InstancePre<HostState>,
    plugin_config: Arc<[u8]>,
    vm_config: Arc<[u8]>,
    deadline_ticks: u64,
    root_id: Arc<str>,
    pub policy: InstancePolicy,
    /// Linear memory a fresh instance starts with (what instantiating one will take).
    pub initial_memory_bytes: usize,
    /// Set when the module is a post-init snapshot: instances resume it instead of running init.
    resume: Option<HostSnapshot>,
    /// The ABI the guest declares.
    pub abi: AbiVersion,
    shape: ExportShape,
    /// The guest's callbacks, resolved once per module (shared with every tenant of the module).
    callbacks: Arc<Callbacks>,
    /// Set when the guest's init makes HTTP calls: ready once the root instance recorded them
    /// all with their answers (`init_calls`).
    pub readiness: Option<super::init_calls::Readiness>,
    _counted: CountedDrop,
}

static PLUGINS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many [`Plugin`]s the process has dropped (their configs gone). Workers look for pools of
/// gone plugins only when this moved, so a sweep need not touch every plugin it pools for.
pub fn plugins_dropped() -> u64 {
    PLUGINS_DROPPED.load(Ordering::Acquire)
}

/// Counts its plugin's drop in [`PLUGINS_DROPPED`].
struct CountedDrop;

impl Drop for CountedDrop {
    fn drop(&mut self) {
        PLUGINS_DROPPED.fetch_add(1, Ordering::Release);
    }
}

/// A module linked against the host functions, ready to instantiate (shared by every tenant of
/// the same artifact).
#[derive(Clone)]
pub struct Linked {
    pre: InstancePre<HostState>,
    /// Linear memory a fresh instance starts with.
    initial_memory_bytes: usize,
    /// The ABI the module declares.
    abi: AbiVersion,
    /// What the module's exports say about how Envoy's host drives it.
    shape: ExportShape,
    /// Where the module's callbacks are among its exports.
    callbacks: Arc<Callbacks>,
}

/// How a guest is started and called, from its exports (once per module).
#[derive(Clone, Copy, Debug, Default)]
struct ExportShape {
    /// Exports `_initialize` (a reactor); else `_start` is called if exported.
    initialize: bool,
    /// Exports `main(i32, i32) -> i32`, called after `_initialize` (Emscripten reactors).
    main: bool,
    /// `proxy_on_request_headers` / `_response_headers` take two parameters (ABI 0.1.0 guests).
    request_headers_abi010: bool,
    response_headers_abi010: bool,
}

impl ExportShape {
    fn of(module: &Module) -> ExportShape {
        let func = |name: &str| match module.get_export(name) {
            Some(ExternType::Func(ty)) => Some(ty),
            _ => None,
        };
        let two_params = |name: &str| func(name).is_some_and(|ty| ty.params().len() == 2);
        let main = func("main").is_some_and(|ty| i32_func(&ty, &[2], 1));
        ExportShape {
            initialize: func("_initialize").is_some(),
            main,
            request_headers_abi010: two_params("proxy_on_request_headers"),
            response_headers_abi010: two_params("proxy_on_response_headers"),
        }
    }
}

impl Linked {
    /// Links `module`, refusing modules whose imports thaw cannot provide or that lack the exports
    /// every proxy-wasm guest has. `snapshot_init`: the module's init is being snapshotted, and
    /// hostcalls whose `hostcalls::Snapshot` policy does not allow it trap, naming themselves.
    pub fn link(engine: &Engine, module: &Module, snapshot_init: Option<SnapshotInit>) -> Result<Linked, String> {
        let functions = module.exports().filter(|e| matches!(e.ty(), ExternType::Func(_))).map(|e| e.name());
        let abi = AbiVersion::declared(functions).ok_or_else(|| abi::MISSING_ABI_VERSION.to_string())?;
        check_export_types(module)?;
        let shape = ExportShape::of(module);
        if module.get_export("proxy_on_memory_allocate").is_none() && module.get_export("malloc").is_none() {
            return Err("the module exports neither `proxy_on_memory_allocate` nor `malloc`".into());
        }
        let initial_memory_bytes = match module.get_export("memory") {
            Some(ExternType::Memory(m)) => (m.minimum() as usize).saturating_mul(m.page_size() as usize),
            Some(_) => return Err("the module's `memory` export is not a memory".into()),
            None => return Err("the module exports no `memory`".into()),
        };
        let mut linker = hostcalls::linker(engine, snapshot_init).map_err(|e| format!("host functions: {e:#}"))?;
        hostcalls::add_stubs_for_unknown_imports(&mut linker, module, snapshot_init)?;
        let pre = linker.instantiate_pre(module).map_err(|e| format!("cannot link the module: {e:#}"))?;
        let callbacks = Arc::new(Callbacks::of(module));
        Ok(Linked { pre, initial_memory_bytes, abi, shape, callbacks })
    }
}

/// What kind of snapshotted init a module is linked for; each host function's
/// `hostcalls::Snapshot` policy says whether it may be called in it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SnapshotInit {
    /// The functions whose policy is `Allowed`.
    Plain,
    /// Also HTTP calls, answered from the tenant's recorded init calls, and reading their answers.
    ReplayingCalls,
}

/// How a guest failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A trap (unreachable, out-of-bounds access, `proc_exit`, a failed hostcall invariant, ...).
    Trap,
    /// The call ran past its CPU deadline.
    Deadline,
    /// The guest tried to grow its memory past its cap.
    MemoryCap,
    /// The guest overflowed its stack bound.
    StackOverflow,
    /// No instance could be created: memory budget or instance slots exhausted.
    Refused,
}

impl FailureKind {
    pub fn metric(self) -> crate::telemetry::Metric {
        use crate::telemetry::Metric;
        match self {
            FailureKind::Trap => Metric::GuestTrap,
            FailureKind::Deadline => Metric::DeadlineExceeded,
            FailureKind::MemoryCap => Metric::MemoryCapHit,
            FailureKind::StackOverflow => Metric::StackOverflow,
            FailureKind::Refused => Metric::InstanceRefused,
        }
    }
}

/// Why a guest could not serve.
#[derive(Debug, Clone)]
pub enum GuestError {
    /// The guest trapped, overran its deadline, hit its memory cap, or no instance could be made.
    Failed { tenant: TenantId, hook: &'static str, kind: FailureKind, reason: String },
    /// `proxy_on_vm_start` or `proxy_on_configure` returned false.
    Rejected { tenant: TenantId, hook: &'static str },
}

impl GuestError {
    pub fn kind(&self) -> FailureKind {
        match self {
            GuestError::Failed { kind, .. } => *kind,
            GuestError::Rejected { .. } => FailureKind::Trap,
        }
    }
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestError::Failed { tenant, hook, kind, reason } => {
                write!(f, "tenant `{tenant}`: guest failed in {hook} ({kind:?}): {reason}")
            }
            GuestError::Rejected { tenant, hook } => {
                write!(f, "tenant `{tenant}`: the guest rejected its configuration ({hook} returned false)")
            }
        }
    }
}

impl std::error::Error for GuestError {}

impl Plugin {
    /// Links `module` against the host functions. Refuses modules whose imports thaw cannot
    /// provide or that lack the exports every proxy-wasm guest has.
    pub fn new(engine: &Engine, tenant: &TenantConfig, module: Module, digest: ArtifactDigest) -> Result<Plugin, String> {
        Plugin::build(engine, tenant, module, digest, None, None)
    }

    /// A plugin whose module is a post-init snapshot: instances skip init and get `host` restored.
    pub fn resumed(
        engine: &Engine,
        tenant: &TenantConfig,
        module: Module,
        digest: ArtifactDigest,
        host: HostSnapshot,
    ) -> Result<Plugin, String> {
        Plugin::build(engine, tenant, module, digest, Some(host), None)
    }

    /// A plugin whose init is to be snapshotted: only hostcalls whose `hostcalls::Snapshot` policy
    /// allows it run (any other traps, naming itself).
    /// With `replay` (the tenant's recorded init calls), init's HTTP calls are answered from it.
    pub fn for_snapshot(
        engine: &Engine,
        tenant: &TenantConfig,
        module: Module,
        digest: ArtifactDigest,
        replay: Option<Arc<super::init_calls::Transcript>>,
    ) -> Result<Plugin, String> {
        let init = if replay.is_some() { SnapshotInit::ReplayingCalls } else { SnapshotInit::Plain };
        let mut plugin = Plugin::build(engine, tenant, module, digest, None, Some(init))?;
        plugin.readiness = replay.map(|t| Arc::new(std::sync::OnceLock::from(t)));
        Ok(plugin)
    }

    /// Whether instances resume a snapshot (no init) rather than run init.
    pub fn is_resumed(&self) -> bool {
        self.resume.is_some()
    }

    fn build(
        engine: &Engine,
        tenant: &TenantConfig,
        module: Module,
        digest: ArtifactDigest,
        resume: Option<HostSnapshot>,
        snapshot_init: Option<SnapshotInit>,
    ) -> Result<Plugin, String> {
        let linked = Linked::link(engine, &module, snapshot_init)?;
        Ok(Plugin::from_linked(engine, tenant, &linked, digest, resume))
    }

    /// A tenant's plugin from an already linked module (tenants sharing an artifact share it).
    pub fn from_linked(
        engine: &Engine,
        tenant: &TenantConfig,
        linked: &Linked,
        digest: ArtifactDigest,
        resume: Option<HostSnapshot>,
    ) -> Plugin {
        static NEXT_UID: AtomicU64 = AtomicU64::new(1);
        let tick_ms = EPOCH_TICK.as_millis().max(1) as u64;
        Plugin {
            tenant: tenant.id.clone(),
            digest,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            engine: engine.clone(),
            pre: linked.pre.clone(),
            plugin_config: tenant.plugin_config.as_slice().into(),
            vm_config: tenant.vm_config.as_slice().into(),
            // One extra tick: the first may end at once (the ticker does not start with the call).
            deadline_ticks: tenant.instances.call_deadline_ms.div_ceil(tick_ms) + 1,
            root_id: tenant.root_id.as_str().into(),
            policy: tenant.instances,
            initial_memory_bytes: linked.initial_memory_bytes,
            resume,
            abi: linked.abi,
            shape: linked.shape,
            callbacks: Arc::clone(&linked.callbacks),
            readiness: None,
            _counted: CountedDrop,
        }
    }

    /// A fresh, initialized instance: instantiated, `_initialize`d, root context created,
    /// `proxy_on_vm_start` and `proxy_on_configure` run; if init makes HTTP calls, their recorded
    /// answers delivered (`init_calls`).
    pub fn instantiate(&self) -> Result<GuestInstance, GuestError> {
        use super::init_calls::{InitCalls, Replay};
        let init_calls = match &self.readiness {
            None => InitCalls::Refused,
            Some(ready) => match ready.get() {
                Some(transcript) => InitCalls::Replay(Replay::new(Arc::clone(transcript))),
                None => {
                    let reason = "its init's HTTP calls are not answered yet".to_string();
                    return Err(GuestError::Failed {
                        tenant: self.tenant.clone(),
                        hook: "instantiate",
                        kind: FailureKind::Refused,
                        reason,
                    });
                }
            },
        };
        self.instantiate_with(init_calls, None)
    }

    /// The load-time init check: an instance whose init's HTTP calls are counted, not sent;
    /// returns it and how many calls its init made.
    pub fn instantiate_noting_calls(&self) -> Result<(GuestInstance, usize), GuestError> {
        let mut instance = self.instantiate_with(super::init_calls::InitCalls::Noted(0), None)?;
        let noted = match std::mem::take(&mut instance.store.data_mut().init_calls) {
            super::init_calls::InitCalls::Noted(n) => n,
            _ => 0,
        };
        Ok((instance, noted))
    }

    /// A root instance on Envoy's main thread: its init's calls go through `callouts` (each init
    /// call gets the filter config's callouts from it) and are answered later, as in Envoy's Wasm
    /// filter.
    pub fn instantiate_as_root(&self, callouts: &dyn Fn() -> Box<dyn Callouts>) -> Result<GuestInstance, GuestError> {
        self.instantiate_with(super::init_calls::InitCalls::Refused, Some(callouts))
    }

    fn instantiate_with(
        &self,
        init_calls: super::init_calls::InitCalls,
        root_callouts: Option<&dyn Fn() -> Box<dyn Callouts>>,
    ) -> Result<GuestInstance, GuestError> {
        let cap = (self.policy.memory_limit_mb as usize) << 20;
        let mut state = HostState::new(self.tenant.clone(), self.plugin_config.clone(), self.vm_config.clone(), cap);
        state.root_id = self.root_id.clone();
        state.abi = self.abi;
        state.init_calls = init_calls;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // With epoch interruption, the deadline must be set before instantiation runs any code.
        store.set_epoch_deadline(self.deadline_ticks);
        let instance = match self.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => {
                let kind = classify(&e, &store.data().limits);
                // Not a trap and not a cap: the memory budget or the instance slots ran out.
                let kind =
                    if kind == FailureKind::Trap && e.downcast_ref::<wasmtime::Trap>().is_none() { FailureKind::Refused } else { kind };
                return Err(GuestError::Failed { tenant: self.tenant.clone(), hook: "instantiate", kind, reason: format!("{e:#}") });
            }
        };
        let failed = |e: wasmtime::Error| GuestError::Failed {
            tenant: self.tenant.clone(),
            hook: "instantiate",
            kind: FailureKind::Trap,
            reason: format!("{e:#}"),
        };
        let exports = Exports::new(&mut store, instance, &self.callbacks).map_err(failed)?;
        let memory = instance.get_memory(&mut store, "memory").ok_or_else(|| failed(wasmtime::Error::msg("no memory")))?;
        store.data_mut().memory = Some(GuestMemory { memory, allocate: exports.allocate.clone() });
        let mut guest = GuestInstance {
            store,
            instance,
            exports,
            shape: self.shape,
            tenant: self.tenant.clone(),
            deadline_ticks: self.deadline_ticks,
            root_context_id: ROOT_CONTEXT_ID,
            next_context_id: ROOT_CONTEXT_ID + 1,
            failed: false,
            created: Instant::now(),
            last_used: Instant::now(),
            requests: 0,
        };
        match &self.resume {
            Some(host) => guest.restore(host),
            None => guest.start(root_callouts)?,
        }
        Ok(guest)
    }
}

/// The proxy-wasm HTTP stream callbacks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HttpCallback {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
}

impl HttpCallback {
    pub fn export_name(self) -> &'static str {
        match self {
            HttpCallback::RequestHeaders => "proxy_on_request_headers",
            HttpCallback::RequestBody => "proxy_on_request_body",
            HttpCallback::RequestTrailers => "proxy_on_request_trailers",
            HttpCallback::ResponseHeaders => "proxy_on_response_headers",
            HttpCallback::ResponseBody => "proxy_on_response_body",
            HttpCallback::ResponseTrailers => "proxy_on_response_trailers",
        }
    }
}

/// What a failed guest call was, from the error and the memory bounds' flags.
fn classify(error: &wasmtime::Error, limits: &super::host::MemoryLimits) -> FailureKind {
    if limits.cap_hit {
        return FailureKind::MemoryCap;
    }
    if limits.budget_hit {
        return FailureKind::Refused;
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => FailureKind::Deadline,
        Some(wasmtime::Trap::StackOverflow) => FailureKind::StackOverflow,
        _ => FailureKind::Trap,
    }
}

/// The root context of every instance (one plugin per instance).
const ROOT_CONTEXT_ID: u32 = 1;

/// An instance's callbacks: the module's [`Callbacks`], each made callable in this instance on
/// first use.
struct Exports {
    instance: Instance,
    allocate: TypedFunc<i32, i32>,
    callbacks: Callbacks,
}

impl Exports {
    fn new(store: &mut Store<HostState>, instance: Instance, callbacks: &Callbacks) -> wasmtime::Result<Exports> {
        let mut callbacks = callbacks.clone();
        let allocate = callbacks.allocate.func(&instance, store)?.ok_or_else(|| wasmtime::Error::msg("no allocator export"))?.clone();
        Ok(Exports { instance, allocate, callbacks })
    }
}

/// The guest's callbacks, all optional but the allocator. Found among the module's exports once
/// per module (an index each, no name lookup per instance) and their types checked once per module
/// (`check_export_types`, at link); in an instance each is made callable on first use only (a
/// request calls a handful of the twenty-odd), so a fresh instance per request pays for what it
/// calls, and nothing for what the guest does not export.
#[derive(Clone)]
struct Callbacks {
    /// `proxy_on_memory_allocate`, else `malloc`.
    allocate: Lazy<i32, i32>,
    initialize: Lazy<(), ()>,
    on_context_create: Lazy<(i32, i32), ()>,
    on_vm_start: Lazy<(i32, i32), i32>,
    on_configure: Lazy<(i32, i32), i32>,
    start: Lazy<(), ()>,
    /// `main(argc, argv)`, which Envoy's host calls after `_initialize` when a reactor exports it
    /// (Emscripten-built C++ SDK guests).
    main: Lazy<(i32, i32), i32>,
    /// The headers callbacks take `(context, headers, end_of_stream)`, or `(context, headers)`
    /// for ABI 0.1.0 guests (`abi010`), as Envoy's host calls them.
    on_request_headers: Lazy<(i32, i32, i32), i32>,
    on_request_headers_abi010: Lazy<(i32, i32), i32>,
    on_request_body: Lazy<(i32, i32, i32), i32>,
    on_request_trailers: Lazy<(i32, i32), i32>,
    on_response_headers: Lazy<(i32, i32, i32), i32>,
    on_response_headers_abi010: Lazy<(i32, i32), i32>,
    on_response_body: Lazy<(i32, i32, i32), i32>,
    on_response_trailers: Lazy<(i32, i32), i32>,
    on_http_call_response: Lazy<(i32, i32, i32, i32, i32), ()>,
    on_tick: Lazy<i32, ()>,
    on_grpc_receive: Lazy<(i32, i32, i32), ()>,
    on_grpc_initial_metadata: Lazy<(i32, i32, i32), ()>,
    on_grpc_trailing_metadata: Lazy<(i32, i32, i32), ()>,
    on_grpc_close: Lazy<(i32, i32, i32), ()>,
    on_queue_ready: Lazy<(i32, i32), ()>,
    on_done: Lazy<i32, i32>,
    on_log: Lazy<i32, ()>,
    on_delete: Lazy<i32, ()>,
}

impl Callbacks {
    fn of(module: &Module) -> Callbacks {
        let allocate = Lazy::new(module, "proxy_on_memory_allocate");
        Callbacks {
            allocate: if allocate.is_exported() { allocate } else { Lazy::new(module, "malloc") },
            initialize: Lazy::new(module, "_initialize"),
            on_context_create: Lazy::new(module, "proxy_on_context_create"),
            on_vm_start: Lazy::new(module, "proxy_on_vm_start"),
            on_configure: Lazy::new(module, "proxy_on_configure"),
            start: Lazy::new(module, "_start"),
            main: Lazy::new(module, "main"),
            on_request_headers: Lazy::new(module, "proxy_on_request_headers"),
            on_request_headers_abi010: Lazy::new(module, "proxy_on_request_headers"),
            on_request_body: Lazy::new(module, "proxy_on_request_body"),
            on_request_trailers: Lazy::new(module, "proxy_on_request_trailers"),
            on_response_headers: Lazy::new(module, "proxy_on_response_headers"),
            on_response_headers_abi010: Lazy::new(module, "proxy_on_response_headers"),
            on_response_body: Lazy::new(module, "proxy_on_response_body"),
            on_response_trailers: Lazy::new(module, "proxy_on_response_trailers"),
            on_http_call_response: Lazy::new(module, "proxy_on_http_call_response"),
            on_tick: Lazy::new(module, "proxy_on_tick"),
            on_grpc_receive: Lazy::new(module, "proxy_on_grpc_receive"),
            on_grpc_initial_metadata: Lazy::new(module, "proxy_on_grpc_receive_initial_metadata"),
            on_grpc_trailing_metadata: Lazy::new(module, "proxy_on_grpc_receive_trailing_metadata"),
            on_grpc_close: Lazy::new(module, "proxy_on_grpc_close"),
            on_queue_ready: Lazy::new(module, "proxy_on_queue_ready"),
            on_done: Lazy::new(module, "proxy_on_done"),
            on_log: Lazy::new(module, "proxy_on_log"),
            on_delete: Lazy::new(module, "proxy_on_delete"),
        }
    }

    /// Whether the guest exports the stream callback.
    fn exports(&self, callback: HttpCallback, abi010: bool) -> bool {
        match callback {
            HttpCallback::RequestHeaders if abi010 => self.on_request_headers_abi010.is_exported(),
            HttpCallback::RequestHeaders => self.on_request_headers.is_exported(),
            HttpCallback::RequestBody => self.on_request_body.is_exported(),
            HttpCallback::RequestTrailers => self.on_request_trailers.is_exported(),
            HttpCallback::ResponseHeaders if abi010 => self.on_response_headers_abi010.is_exported(),
            HttpCallback::ResponseHeaders => self.on_response_headers.is_exported(),
            HttpCallback::ResponseBody => self.on_response_body.is_exported(),
            HttpCallback::ResponseTrailers => self.on_response_trailers.is_exported(),
        }
    }
}

/// One optional guest export: where it is among the module's exports (`None`: not exported, or
/// not a function), and, in an instance, the function made callable (type-checked) on first use.
struct Lazy<P, R> {
    name: &'static str,
    export: Option<ModuleExport>,
    func: Option<TypedFunc<P, R>>,
}

/// A module's `Lazy` is cloned into each instance before any use, so the clone starts unresolved.
impl<P, R> Clone for Lazy<P, R> {
    fn clone(&self) -> Lazy<P, R> {
        Lazy { name: self.name, export: self.export, func: None }
    }
}

impl<P: wasmtime::WasmParams, R: wasmtime::WasmResults> Lazy<P, R> {
    fn new(module: &Module, name: &'static str) -> Lazy<P, R> {
        let export = match module.get_export(name) {
            Some(ExternType::Func(_)) => module.get_export_index(name),
            _ => None,
        };
        Lazy { name, export, func: None }
    }

    fn is_exported(&self) -> bool {
        self.export.is_some()
    }

    /// The export in `instance`, made callable on first use; `None` when the guest has none.
    fn func(&mut self, instance: &Instance, store: &mut Store<HostState>) -> wasmtime::Result<Option<&TypedFunc<P, R>>> {
        let Some(export) = &self.export else { return Ok(None) };
        if self.func.is_none() {
            let context = || format!("export `{}`", self.name);
            let func = instance
                .get_module_export(&mut *store, export)
                .and_then(wasmtime::Extern::into_func)
                .ok_or_else(|| wasmtime::Error::msg("not a function of this instance").context(context()))?;
            self.func = Some(func.typed(&*store).map_err(|e| e.context(context()))?);
        }
        Ok(self.func.as_ref())
    }

    /// Calls the export with `args`, or answers `absent` when the guest has none.
    fn call_or(&mut self, instance: &Instance, store: &mut Store<HostState>, args: P, absent: R) -> wasmtime::Result<R> {
        match self.func(instance, store)? {
            Some(f) => f.call(store, args),
            None => Ok(absent),
        }
    }
}

/// The export types Envoy's host calls, as (name, params, results); every value is an i32.
/// `proxy_on_request_headers` / `_response_headers` take 3 params, or 2 for ABI 0.1.0 guests.
const CALLBACK_TYPES: &[(&str, &[usize], usize)] = &[
    ("proxy_on_memory_allocate", &[1], 1),
    ("malloc", &[1], 1),
    ("_initialize", &[0], 0),
    ("_start", &[0], 0),
    ("proxy_on_context_create", &[2], 0),
    ("proxy_on_vm_start", &[2], 1),
    ("proxy_on_configure", &[2], 1),
    ("proxy_on_request_headers", &[3, 2], 1),
    ("proxy_on_request_body", &[3], 1),
    ("proxy_on_request_trailers", &[2], 1),
    ("proxy_on_response_headers", &[3, 2], 1),
    ("proxy_on_response_body", &[3], 1),
    ("proxy_on_response_trailers", &[2], 1),
    ("proxy_on_http_call_response", &[5], 0),
    ("proxy_on_tick", &[1], 0),
    ("proxy_on_grpc_receive", &[3], 0),
    ("proxy_on_grpc_receive_initial_metadata", &[3], 0),
    ("proxy_on_grpc_receive_trailing_metadata", &[3], 0),
    ("proxy_on_grpc_close", &[3], 0),
    ("proxy_on_queue_ready", &[2], 0),
    ("proxy_on_done", &[1], 1),
    ("proxy_on_log", &[1], 0),
    ("proxy_on_delete", &[1], 0),
];

/// Refuses a module whose callbacks have types Envoy's host would not call (once per module; the
/// instances then look them up lazily). `main` is called only when it is `(i32, i32) -> i32`.
fn check_export_types(module: &Module) -> Result<(), String> {
    for (name, params, results) in CALLBACK_TYPES {
        let Some(export) = module.get_export(name) else { continue };
        let ExternType::Func(ty) = export else { return Err(format!("export `{name}` is not a function")) };
        if !i32_func(&ty, params, *results) {
            return Err(format!("export `{name}` has the wrong type ({ty})"));
        }
    }
    Ok(())
}

/// Whether `ty` takes one of `params` i32s and gives `results` i32s.
fn i32_func(ty: &wasmtime::FuncType, params: &[usize], results: usize) -> bool {
    ty.params().chain(ty.results()).all(|t| matches!(t, wasmtime::ValType::I32))
        && params.contains(&ty.params().len())
        && ty.results().len() == results
}

/// One live instance of a tenant's guest. Serves one stream at a time.
pub struct GuestInstance {
    store: Store<HostState>,
    instance: Instance,
    exports: Exports,
    shape: ExportShape,
    tenant: TenantId,
    deadline_ticks: u64,
    root_context_id: u32,
    next_context_id: u32,
    failed: bool,
    created: Instant,
    last_used: Instant,
    requests: u64,
}

impl GuestInstance {
    /// Whether a pooled instance is due for retirement under `policy` at `now`.
    pub fn is_retired(&self, policy: &InstancePolicy, now: Instant) -> bool {
        self.retirement_due(policy).is_some_and(|due| due <= now)
    }

    /// The moment the instance is due for retirement under `policy` if it is not used again:
    /// its creation if it failed or served `max_requests`, else the earlier of `max_age_ms` after
    /// its creation and `idle_timeout_ms` after its last use; `None`: never.
    pub fn retirement_due(&self, policy: &InstancePolicy) -> Option<Instant> {
        if self.failed || self.requests >= policy.max_requests {
            return Some(self.created);
        }
        let by_age = self.created.checked_add(Duration::from_millis(policy.max_age_ms));
        let by_idleness = self.last_used.checked_add(Duration::from_millis(policy.idle_timeout_ms));
        by_age.into_iter().chain(by_idleness).min()
    }

    /// Clears host-side request state before the instance serves another request.
    pub fn reset_for_reuse(&mut self) {
        self.store.data_mut().reset_request_state();
        self.last_used = Instant::now();
    }

    /// Runs one guest call under the deadline, with `context` installed for its hostcalls for
    /// exactly the call (`CallScope`: cleared however the call ends).
    fn call<R>(
        &mut self,
        hook: &'static str,
        context: CallContext,
        f: impl FnOnce(&Instance, &mut Callbacks, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, GuestError> {
        if self.failed {
            let reason = "instance already failed".into();
            return Err(GuestError::Failed { tenant: self.tenant.clone(), hook, kind: FailureKind::Trap, reason });
        }
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = {
            let mut store = CallScope::install(&mut self.store, context);
            // A panic in host code during the call (a thaw bug) unwinds through the guest's frames:
            // the instance may be cut off mid-call, so it is failed, never reused.
            let exports = &mut self.exports;
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&exports.instance, &mut exports.callbacks, &mut store)))
                .unwrap_or_else(|panic| {
                    let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
                    Err(wasmtime::Error::msg(format!("host panic during the call: {}", what.unwrap_or_default())))
                })
        };
        result.map_err(|e| {
            self.failed = true;
            let kind = classify(&e, &self.store.data().limits);
            let reason = match kind {
                FailureKind::Deadline => "CPU deadline exceeded".to_string(),
                FailureKind::MemoryCap => format!("memory cap exceeded: {e:#}"),
                _ => format!("{e:#}"),
            };
            GuestError::Failed { tenant: self.tenant.clone(), hook, kind, reason }
        })
    }

    /// The init sequence. A root instance's init calls (`root_callouts`) go through the filter
    /// config's callouts; any other instance's init has none (`init_calls`).
    fn start(&mut self, root_callouts: Option<&dyn Fn() -> Box<dyn Callouts>>) -> Result<(), GuestError> {
        let init = |phase: Phase| match root_callouts {
            Some(callouts) => CallContext::new(Subject::Root(callouts()), phase),
            None => CallContext::new(Subject::Nothing, phase),
        };
        let root = self.root_context_id as i32;
        self.store.data_mut().contexts = vec![self.root_context_id];
        let vm_len = self.store.data().vm_config.len() as i32;
        let plugin_len = self.store.data().plugin_config.len() as i32;
        // Reactor guests export `_initialize`; command-style guests `_start` (as Envoy's host).
        let ExportShape { initialize, main, .. } = self.shape;
        self.call("_initialize", init(Phase::Other), |i, c, s| {
            if !initialize {
                return c.start.call_or(i, s, (), ());
            }
            c.initialize.call_or(i, &mut *s, (), ())?;
            if main {
                c.main.call_or(i, s, (0, 0), 0)?;
            }
            Ok(())
        })?;
        self.call("proxy_on_context_create", init(Phase::Other), |i, c, s| c.on_context_create.call_or(i, s, (root, 0), ()))?;
        let vm_ok = self.call("proxy_on_vm_start", init(Phase::Other), |i, c, s| c.on_vm_start.call_or(i, s, (root, vm_len), 1))?;
        if vm_ok == 0 {
            self.failed = true;
            return Err(GuestError::Rejected { tenant: self.tenant.clone(), hook: "proxy_on_vm_start" });
        }
        let configured =
            self.call("proxy_on_configure", init(Phase::Configure), |i, c, s| c.on_configure.call_or(i, s, (root, plugin_len), 1))?;
        if configured == 0 {
            self.failed = true;
            return Err(GuestError::Rejected { tenant: self.tenant.clone(), hook: "proxy_on_configure" });
        }
        self.replay_init_calls()?;
        // Nothing from init may leak into the first request.
        self.store.data_mut().effects.clear();
        Ok(())
    }

    /// Delivers the recorded answers to the HTTP calls init made (`init_calls::Replay`), in the
    /// order they reached the tenant's root instance.
    fn replay_init_calls(&mut self) -> Result<(), GuestError> {
        let super::init_calls::InitCalls::Replay(replay) = &self.store.data().init_calls else { return Ok(()) };
        for (id, answer) in replay.answers() {
            self.on_http_call_response(Subject::Nothing, id, answer)?;
        }
        self.store.data_mut().init_calls = super::init_calls::InitCalls::Refused;
        Ok(())
    }

    /// Restores the host state a snapshot recorded, instead of running init.
    fn restore(&mut self, host: &HostSnapshot) {
        self.root_context_id = host.root_context_id;
        self.next_context_id = host.root_context_id + 1;
        let state = self.store.data_mut();
        state.contexts = vec![host.root_context_id];
        state.tick_period_ms = host.tick_period_ms;
        state.metrics = host.metrics.clone();
    }

    /// The host state this instance's init left behind.
    pub fn host_snapshot(&self) -> HostSnapshot {
        let state = self.store.data();
        HostSnapshot { root_context_id: self.root_context_id, tick_period_ms: state.tick_period_ms, metrics: state.metrics.clone() }
    }

    /// Captures this instance's post-init memories and globals into a new module with `wizer`.
    /// Refused for an instance that has served any request: a snapshot never holds request data.
    pub fn snapshot(
        mut self,
        wizer: &wasmtime_wizer::Wizer,
        cx: wasmtime_wizer::ModuleContext<'_>,
    ) -> Result<(Vec<u8>, HostSnapshot), String> {
        if self.requests > 0 {
            return Err(format!("this instance has served {} requests; snapshots are taken only before any request", self.requests));
        }
        let host = self.host_snapshot();
        let mut source = SnapshotSource { store: &mut self.store, instance: self.instance, missing: None };
        let wasm = block_on(wizer.snapshot(cx, &mut source)).map_err(|e| format!("{e:#}"))?;
        if let Some(missing) = source.missing {
            return Err(missing);
        }
        Ok((wasm, host))
    }

    /// Creates an HTTP context under the root context; returns its id.
    pub fn create_http_context(&mut self) -> Result<u32, GuestError> {
        self.requests += 1;
        let id = self.next_context_id;
        self.next_context_id = self.next_context_id.checked_add(1).unwrap_or(ROOT_CONTEXT_ID + 1);
        let root = self.root_context_id as i32;
        self.store.data_mut().contexts.push(id);
        self.call("proxy_on_context_create", CallContext::new(Subject::Nothing, Phase::Other), |i, c, s| {
            c.on_context_create.call_or(i, s, (id as i32, root), ())
        })?;
        Ok(id)
    }

    /// Runs one HTTP stream callback for `context`: headers (`count` = number of headers), body
    /// (`count` = body size so far) or trailers (`count` = number of trailers).
    pub fn on_http(
        &mut self,
        callback: HttpCallback,
        stream: Box<dyn HttpStream>,
        context: u32,
        count: usize,
        end_of_stream: bool,
    ) -> Result<Action, GuestError> {
        let (id, n, eos) = (context as i32, count as i32, end_of_stream as i32);
        let abi010 = match callback {
            HttpCallback::RequestHeaders => self.shape.request_headers_abi010,
            HttpCallback::ResponseHeaders => self.shape.response_headers_abi010,
            _ => false,
        };
        if !self.failed && !self.exports.callbacks.exports(callback, abi010) {
            // A callback the guest does not export answers Continue (0), as Envoy's host: no call.
            return Ok(Action::from(0));
        }
        self.call(callback.export_name(), CallContext::new(Subject::Stream(stream), Phase::Http(callback)), |i, c, s| match callback {
            HttpCallback::RequestHeaders if abi010 => c.on_request_headers_abi010.call_or(i, s, (id, n), 0),
            HttpCallback::RequestHeaders => c.on_request_headers.call_or(i, s, (id, n, eos), 0),
            HttpCallback::RequestBody => c.on_request_body.call_or(i, s, (id, n, eos), 0),
            HttpCallback::RequestTrailers => c.on_request_trailers.call_or(i, s, (id, n), 0),
            HttpCallback::ResponseHeaders if abi010 => c.on_response_headers_abi010.call_or(i, s, (id, n), 0),
            HttpCallback::ResponseHeaders => c.on_response_headers.call_or(i, s, (id, n, eos), 0),
            HttpCallback::ResponseBody => c.on_response_body.call_or(i, s, (id, n, eos), 0),
            HttpCallback::ResponseTrailers => c.on_response_trailers.call_or(i, s, (id, n), 0),
        })
        .map(Action::from)
    }

    /// `proxy_on_http_call_response` for the call `token` (on the root context, as Envoy's host:
    /// the SDK routes it to the HTTP context that made the call). `None`: the call failed.
    /// `subject` is the calling request's stream, or a root context's callouts (`Nothing` for an
    /// init call's recorded answer). `envoy_id` is Envoy's callout id; a call the instance no
    /// longer has out (abandoned with an earlier stream) is not reported.
    pub fn on_http_call_response(
        &mut self,
        subject: Subject,
        envoy_id: u64,
        response: Option<crate::stream::CallResponse>,
    ) -> Result<(), GuestError> {
        let Some(token) = self.store.data().calls.token(envoy_id) else { return Ok(()) };
        self.store.data_mut().calls.remove(token);
        let counts = response.as_ref().map_or((0, 0, 0), |r| (r.headers.len(), r.body.len(), r.trailers.len()));
        let args = (self.root_context_id as i32, token as i32, counts.0 as i32, counts.1 as i32, counts.2 as i32);
        let context = CallContext::new(subject, Phase::HttpCallResponse).answering(response, None);
        self.call("proxy_on_http_call_response", context, |i, c, s| c.on_http_call_response.call_or(i, s, args, ()))
    }

    /// An event of Envoy call stream `envoy_id`: what the gRPC call or stream it carries (in this
    /// instance's one registry of calls, `host::Calls`) now has to tell the guest, each to be
    /// delivered with `on_grpc`. Nothing when this instance has no gRPC call on it.
    pub fn call_stream_event(&mut self, envoy_id: u64, event: super::grpc::CallStreamEvent) -> Vec<super::grpc::Delivery> {
        self.store.data_mut().calls.call_stream_event(envoy_id, event)
    }

    /// Tells the guest what a gRPC call or stream delivered. A unary call reports as Envoy does:
    /// status OK delivers the message with `proxy_on_grpc_receive`, any other status
    /// `proxy_on_grpc_close`; a stream delivers initial metadata, each message, trailing metadata
    /// and the close. `subject` is the calling request's stream or a root context's callouts.
    pub fn on_grpc(&mut self, subject: Subject, envoy_id: u64, delivery: super::grpc::Delivery) -> Result<(), GuestError> {
        use super::grpc::Delivery as D;
        use crate::stream::CallResponse;
        let Some(token) = self.store.data().calls.token(envoy_id) else { return Ok(()) };
        if matches!(delivery, D::CallDone(..) | D::Close(..)) {
            self.store.data_mut().calls.remove(token);
        }
        let (root_id, token) = (self.root_context_id as i32, token as i32);
        // The export to call, the response to hold for it, the gRPC status to report, its size.
        type Delivered = (&'static str, CallResponse, Option<(u32, Vec<u8>)>, i32);
        let (export, response, status, n): Delivered = match delivery {
            D::CallDone((0, message), response) => {
                let n = response.body.len() as i32;
                ("proxy_on_grpc_receive", response, Some((0, message)), n)
            }
            D::CallDone((code, message), response) => ("proxy_on_grpc_close", response, Some((code, message)), code as i32),
            D::InitialMetadata(headers) => {
                let n = headers.len() as i32;
                ("proxy_on_grpc_receive_initial_metadata", CallResponse { headers, ..Default::default() }, None, n)
            }
            D::Message(body) => {
                let n = body.len() as i32;
                ("proxy_on_grpc_receive", CallResponse { body, ..Default::default() }, None, n)
            }
            D::TrailingMetadata(trailers) => {
                let n = trailers.len() as i32;
                ("proxy_on_grpc_receive_trailing_metadata", CallResponse { trailers, ..Default::default() }, None, n)
            }
            D::Close(code, message) => ("proxy_on_grpc_close", CallResponse::default(), Some((code, message)), code as i32),
        };
        let context = CallContext::new(subject, Phase::GrpcResponse).answering(Some(response), status);
        self.call(export, context, |i, c, s| {
            let f = match export {
                "proxy_on_grpc_receive_initial_metadata" => &mut c.on_grpc_initial_metadata,
                "proxy_on_grpc_receive" => &mut c.on_grpc_receive,
                "proxy_on_grpc_receive_trailing_metadata" => &mut c.on_grpc_trailing_metadata,
                _ => &mut c.on_grpc_close,
            };
            f.call_or(i, s, (root_id, token, n), ())
        })
    }

    /// `proxy_on_tick` on the root context; returns the tick period the guest wants now. Its
    /// calls go through `callouts` (the filter config's).
    pub fn on_tick(&mut self, callouts: Box<dyn Callouts>) -> Result<u64, GuestError> {
        let root = self.root_context_id as i32;
        let context = CallContext::new(Subject::Root(callouts), Phase::Other);
        let result = self.call("proxy_on_tick", context, |i, c, s| c.on_tick.call_or(i, s, root, ()));
        self.store.data_mut().effects.clear();
        result.map(|()| self.store.data().tick_period_ms)
    }

    /// `proxy_on_queue_ready` on the root context for queue `queue`; its calls go through
    /// `callouts`.
    pub fn on_queue_ready(&mut self, callouts: Box<dyn Callouts>, queue: u32) -> Result<(), GuestError> {
        let args = (self.root_context_id as i32, queue as i32);
        let context = CallContext::new(Subject::Root(callouts), Phase::Other);
        let result = self.call("proxy_on_queue_ready", context, |i, c, s| c.on_queue_ready.call_or(i, s, args, ()));
        self.store.data_mut().effects.clear();
        result
    }

    /// The ABI the guest declares.
    pub fn abi(&self) -> AbiVersion {
        self.store.data().abi
    }

    /// Whether the filter holds the request's and the response's headers (paused, not continued).
    pub fn held_headers(&self) -> [bool; 2] {
        self.store.data().held_headers
    }

    /// Records whether the filter holds `direction`'s headers (paused, not yet continued).
    pub fn set_headers_held(&mut self, direction: crate::stream::Direction, held: bool) {
        self.store.data_mut().held_headers[direction as usize] = held;
    }

    /// `proxy_on_request_headers` (kept for callers that drive only headers).
    pub fn on_request_headers(
        &mut self,
        stream: Box<dyn HttpStream>,
        context: u32,
        num_headers: usize,
        end_of_stream: bool,
    ) -> Result<Action, GuestError> {
        self.on_http(HttpCallback::RequestHeaders, stream, context, num_headers, end_of_stream)
    }

    /// The tenant's name, root id and VM id as the guest sees them in properties.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Ends an HTTP context: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`, as Envoy does.
    pub fn finish_http_context(&mut self, stream: Option<Box<dyn HttpStream>>, context: u32) -> Result<(), GuestError> {
        let id = context as i32;
        let nothing = |phase| CallContext::new(Subject::Nothing, phase);
        self.call("proxy_on_done", nothing(Phase::Other), |i, c, s| c.on_done.call_or(i, s, id, 1))?;
        let log = match stream {
            Some(stream) => CallContext::new(Subject::Stream(stream), Phase::Log),
            None => nothing(Phase::Log),
        };
        self.call("proxy_on_log", log, |i, c, s| c.on_log.call_or(i, s, id, ()))?;
        self.call("proxy_on_delete", nothing(Phase::Other), |i, c, s| c.on_delete.call_or(i, s, id, ()))?;
        self.store.data_mut().contexts.retain(|c| *c != context);
        self.store.data_mut().effects.clear();
        Ok(())
    }

    /// The effects the guest asked for during the last calls, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.store.data_mut().effects)
    }
}

/// The instance state `wasmtime-wizer` reads. Values are read synchronously and handed back as
/// ready futures (the trait is async for other runtimes); a missing export is remembered as an
/// error instead of panicking.
struct SnapshotSource<'a> {
    store: &'a mut Store<HostState>,
    instance: Instance,
    missing: Option<String>,
}

impl wasmtime_wizer::InstanceState for SnapshotSource<'_> {
    fn global_get(&mut self, name: &str) -> impl std::future::Future<Output = wasmtime_wizer::SnapshotVal> + Send {
        use wasmtime_wizer::SnapshotVal;
        let value = match self.instance.get_global(&mut *self.store, name).map(|g| g.get(&mut *self.store)) {
            Some(wasmtime::Val::I32(x)) => SnapshotVal::I32(x),
            Some(wasmtime::Val::I64(x)) => SnapshotVal::I64(x),
            Some(wasmtime::Val::F32(x)) => SnapshotVal::F32(x),
            Some(wasmtime::Val::F64(x)) => SnapshotVal::F64(x),
            Some(wasmtime::Val::V128(x)) => SnapshotVal::V128(x.as_u128()),
            _ => {
                self.missing = Some(format!("global `{name}` is missing or not a number"));
                SnapshotVal::I32(0)
            }
        };
        std::future::ready(value)
    }

    fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) -> impl std::future::Future<Output = ()> + Send {
        match self.instance.get_memory(&mut *self.store, name) {
            Some(memory) => contents(memory.data(&*self.store)),
            None => {
                self.missing = Some(format!("memory `{name}` is missing"));
                contents(&[]);
            }
        }
        std::future::ready(())
    }
}

/// Drives a future whose every await is already ready (see `SnapshotSource`) to completion.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
    }
}
