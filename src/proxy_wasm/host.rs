//! The host-side state of one guest instance (the `T` of its `Store<T>`): whose instance it is, the
//! context of the current guest call ([`CallContext`]: the stream or the root's callouts, the
//! phase, the call response being delivered), the calls the instance has out ([`Calls`]), the
//! effects the guest asked for during that call, and the memory accounting that enforces the
//! per-instance cap and the process-wide budget.
//!
//! A call's context is installed only by [`CallScope`], which clears it when the call ends, on
//! every exit path: nothing of one guest call is left for the next. Effects that re-enter Envoy (a
//! local reply) are queued here during a guest call and performed by the filter driver after the
//! call returns.

use super::abi::MAX_TABLE_ELEMENTS;
use super::grpc;
use crate::config::TenantId;
use crate::stream::{CallResponse, Callouts, Direction, HttpStream, LocalReply};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Something the guest asked for that the driver performs after the guest call returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    LocalReply(LocalReply),
    /// `proxy_continue_stream`: resume the stream in this direction.
    Continue(Direction),
    /// `proxy_close_stream`: reset the stream.
    Close,
}

/// Linear memory of all live instances in this process, in bytes.
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
/// The process-wide budget for `LIVE_BYTES` (`memory_budget_mb`; the last loaded config sets it).
static BUDGET_BYTES: AtomicUsize = AtomicUsize::new(usize::MAX);

pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

pub fn budget_bytes() -> usize {
    BUDGET_BYTES.load(Ordering::Relaxed)
}

pub fn set_budget_bytes(bytes: usize) {
    BUDGET_BYTES.store(bytes, Ordering::Relaxed);
}

/// Enforces one instance's memory cap and its share of the process budget; remembers which bound
/// refused a growth so a resulting trap can be told apart from others.
pub struct MemoryLimits {
    cap_bytes: usize,
    accounted: usize,
    pub cap_hit: bool,
    pub budget_hit: bool,
}

impl MemoryLimits {
    pub fn new(cap_bytes: usize) -> MemoryLimits {
        MemoryLimits { cap_bytes, accounted: 0, cap_hit: false, budget_hit: false }
    }

    /// Linear memory this instance holds.
    pub fn bytes(&self) -> usize {
        self.accounted
    }
}

impl wasmtime::ResourceLimiter for MemoryLimits {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap_bytes {
            self.cap_hit = true;
            return Ok(false);
        }
        let delta = desired.saturating_sub(current);
        let total = LIVE_BYTES.fetch_add(delta, Ordering::Relaxed) + delta;
        if total > budget_bytes() {
            LIVE_BYTES.fetch_sub(delta, Ordering::Relaxed);
            self.budget_hit = true;
            return Ok(false);
        }
        self.accounted += delta;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl Drop for MemoryLimits {
    fn drop(&mut self) {
        LIVE_BYTES.fetch_sub(self.accounted, Ordering::Relaxed);
    }
}

pub struct HostState {
    pub tenant: TenantId,
    pub plugin_config: Arc<[u8]>,
    pub vm_config: Arc<[u8]>,
    pub memory: Option<GuestMemory>,
    pub limits: MemoryLimits,
    /// The context of the guest call running now (none between calls); only `CallScope` sets it.
    call: CallContext,
    pub effects: Vec<Effect>,
    /// The guest's live context ids (its root and the stream's), for `proxy_set_effective_context`.
    pub contexts: Vec<u32>,
    /// `proxy_set_tick_period_milliseconds` (0: no ticks).
    pub tick_period_ms: u64,
    /// Metrics the guest defined, in order; a metric's id is its index + 1: (type, name).
    pub metrics: Vec<(u32, String)>,
    /// Properties the guest set during the current request (`proxy_set_property`).
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    /// The root id (`plugin_root_id`).
    pub root_id: Arc<str>,
    /// Request / response headers the filter is holding (their callback paused and the stream
    /// has not been continued): they stay readable and writable, as in Envoy's host.
    pub held_headers: [bool; 2],
    /// The HTTP and gRPC calls this instance has out, by the token the guest holds.
    pub calls: Calls,
    /// The ABI the guest declares (a few answers differ for ABI 0.1.0 guests, as in Envoy).
    pub abi: super::abi::AbiVersion,
    /// What an HTTP call made during init does (`init_calls`).
    pub init_calls: super::init_calls::InitCalls,
}

/// The calls an instance has out, stream's and root's alike: the one registry of them. Tokens are
/// numbered per instance as Envoy's host numbers them per VM (the low two bits name the kind: HTTP
/// call 0, gRPC call 1, gRPC stream 2; the rest counts) and never repeat while the instance lives:
/// a pooled instance whose earlier call was abandoned (the guest answered without waiting, or its
/// stream ended) never sees that token again, so an SDK that still remembers it cannot mistake a
/// new call for it. A gRPC call or stream also keeps what its Envoy call stream delivered so far
/// (`grpc::CallState`) until the stream ends.
#[derive(Default, Debug)]
pub struct Calls {
    /// Calls of each kind made so far.
    made: [u32; 3],
    /// Token -> the call that carries it.
    by_token: HashMap<u32, Call>,
}

/// One call out: Envoy's id of the callout or call stream that carries it, and, for a gRPC call or
/// stream whose call stream has not ended, what it delivered so far.
#[derive(Debug)]
struct Call {
    envoy_id: u64,
    grpc: Option<grpc::CallState>,
}

/// What a call token is for (its low two bits).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CallKind {
    Http = 0,
    GrpcCall = 1,
    GrpcStream = 2,
}

impl CallKind {
    /// The kind a token names; `None` for the fourth pattern, which names no call.
    pub fn of(token: u32) -> Option<CallKind> {
        [CallKind::Http, CallKind::GrpcCall, CallKind::GrpcStream].get((token & 3) as usize).copied()
    }
}

impl Calls {
    /// Registers a call of `kind` Envoy started as `envoy_id`; returns the guest's token for it.
    pub fn add(&mut self, kind: CallKind, envoy_id: u64) -> u32 {
        // The count wraps after 2^30 - 1 calls of one kind; a token still out is skipped.
        let token = loop {
            let made = &mut self.made[kind as usize];
            *made = if *made >= 0x3FFF_FFFF { 1 } else { *made + 1 };
            let token = (*made << 2) | kind as u32;
            if !self.by_token.contains_key(&token) {
                break token;
            }
        };
        let grpc = match kind {
            CallKind::Http => None,
            CallKind::GrpcCall | CallKind::GrpcStream => {
                Some(grpc::CallState { streaming: kind == CallKind::GrpcStream, ..Default::default() })
            }
        };
        self.by_token.insert(token, Call { envoy_id, grpc });
        token
    }

    /// Envoy's id of the call with `token`, if it is out.
    pub fn envoy_id(&self, token: u32) -> Option<u64> {
        self.by_token.get(&token).map(|call| call.envoy_id)
    }

    /// The token of Envoy's call `envoy_id`, if it is out.
    pub fn token(&self, envoy_id: u64) -> Option<u32> {
        self.by_token.iter().find(|(_, call)| call.envoy_id == envoy_id).map(|(t, _)| *t)
    }

    /// Feeds an event of Envoy call stream `envoy_id` into the gRPC call or stream it carries;
    /// returns what to tell the guest now (`grpc::advance`). Nothing for a call stream this
    /// instance has no gRPC call on, or one that already ended. The token stays out until the
    /// guest is told of the end (`GuestInstance::on_grpc`).
    pub fn call_stream_event(&mut self, envoy_id: u64, event: grpc::CallStreamEvent) -> Vec<grpc::Delivery> {
        for call in self.by_token.values_mut().filter(|call| call.envoy_id == envoy_id) {
            if let Some(state) = call.grpc.as_mut() {
                let (deliveries, finished) = grpc::advance(state, event);
                if finished {
                    call.grpc = None;
                }
                return deliveries;
            }
        }
        Vec::new()
    }

    /// Forgets the call with `token` (answered or cancelled).
    pub fn remove(&mut self, token: u32) {
        self.by_token.remove(&token);
    }

    /// Forgets every call still out (keeps the token counter).
    pub fn forget_all(&mut self) {
        self.by_token.clear();
    }
}

/// What a guest call is about, and so what it can reach of Envoy.
pub enum Subject {
    /// Init, context creation, `proxy_on_done` / `proxy_on_delete`, a stream's end without a
    /// stream: no stream and no callouts.
    Nothing,
    /// A stream's callback, or an answer to one of its calls: the stream, which is also where the
    /// guest's calls go.
    Stream(Box<dyn HttpStream>),
    /// A root context's event (a root instance's init, a tick, a queue notification, an answer to
    /// a root call): the filter config's callouts.
    Root(Box<dyn Callouts>),
}

/// Everything one guest call may use beyond the instance's own state: whom it is for, the phase
/// (which header maps it may touch), and the call response it is being told of. Made per call and
/// handed to it (`CallScope::install`), so no call sees another's.
pub struct CallContext {
    subject: Subject,
    phase: Phase,
    /// The HTTP call response the guest reads in `proxy_on_http_call_response`, or the gRPC
    /// response (message as body, initial and trailing metadata) in the gRPC callbacks.
    response: Option<CallResponse>,
    /// The status of the gRPC call being reported (`proxy_get_status`).
    grpc_status: Option<(u32, Vec<u8>)>,
}

impl CallContext {
    /// A call about `subject` in `phase`, told of no call response.
    pub fn new(subject: Subject, phase: Phase) -> CallContext {
        CallContext { subject, phase, response: None, grpc_status: None }
    }

    /// This call tells the guest of a call's `response` (and, for gRPC, its status).
    pub fn answering(self, response: Option<CallResponse>, grpc_status: Option<(u32, Vec<u8>)>) -> CallContext {
        CallContext { response, grpc_status, ..self }
    }

    /// What is there between calls: nothing.
    fn none() -> CallContext {
        CallContext::new(Subject::Nothing, Phase::Other)
    }
}

/// A guest call's context, installed in its store for as long as this lives. Dropping it (the
/// call returned, failed, trapped or unwound) clears the context: this is the only way to give a
/// guest call a context, so none can be left behind for the next call.
pub struct CallScope<'s> {
    store: &'s mut wasmtime::Store<HostState>,
}

impl<'s> CallScope<'s> {
    /// Installs `context` for the guest call about to run in `store` (the scope derefs to the
    /// store the call runs in).
    pub fn install(store: &'s mut wasmtime::Store<HostState>, context: CallContext) -> CallScope<'s> {
        store.data_mut().call = context;
        CallScope { store }
    }
}

impl std::ops::Deref for CallScope<'_> {
    type Target = wasmtime::Store<HostState>;
    fn deref(&self) -> &Self::Target {
        self.store
    }
}

impl std::ops::DerefMut for CallScope<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.store
    }
}

impl Drop for CallScope<'_> {
    fn drop(&mut self) {
        self.store.data_mut().call = CallContext::none();
    }
}

/// What the guest is being called for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    /// Init, context creation, `proxy_on_done` / `proxy_on_delete`: no header map is available.
    Other,
    /// `proxy_on_configure`: no header map either; ABI 0.1.0's `proxy_get_configuration` reads
    /// the plugin configuration here (the VM configuration elsewhere).
    Configure,
    /// An HTTP stream callback.
    Http(super::HttpCallback),
    /// `proxy_on_log`: every map of the stream is readable.
    Log,
    /// `proxy_on_http_call_response`: the call's response maps and body are readable.
    HttpCallResponse,
    /// `proxy_on_grpc_receive` / `_close`: the response message and metadata are readable.
    GrpcResponse,
}

impl Phase {
    /// Whether `kind` is available in this phase alone. As in Envoy's host: a map is there during
    /// the callback that delivered it, and all of them while logging (see also `held_headers`).
    pub fn has_map(self, kind: crate::stream::HeaderKind) -> bool {
        use super::HttpCallback as H;
        use crate::stream::HeaderKind as K;
        match self {
            Phase::Log => true,
            Phase::Other | Phase::Configure | Phase::HttpCallResponse | Phase::GrpcResponse => false,
            Phase::Http(cb) => matches!(
                (cb, kind),
                (H::RequestHeaders, K::RequestHeaders)
                    | (H::RequestTrailers, K::RequestTrailers)
                    | (H::ResponseHeaders, K::ResponseHeaders)
                    | (H::ResponseTrailers, K::ResponseTrailers)
            ),
        }
    }
}

impl HostState {
    pub fn new(tenant: TenantId, plugin_config: Arc<[u8]>, vm_config: Arc<[u8]>, memory_cap_bytes: usize) -> HostState {
        HostState {
            tenant,
            plugin_config,
            vm_config,
            memory: None,
            limits: MemoryLimits::new(memory_cap_bytes),
            call: CallContext::none(),
            effects: Vec::new(),
            contexts: Vec::new(),
            tick_period_ms: 0,
            metrics: Vec::new(),
            properties: HashMap::new(),
            root_id: Arc::from(""),
            held_headers: [false; 2],
            calls: Calls::default(),
            abi: super::abi::AbiVersion::V0_2_1,
            init_calls: Default::default(),
        }
    }

    /// Forgets everything about the last request (pooled reuse): nothing host-side carries over
    /// (the call context never outlives its call).
    pub fn reset_request_state(&mut self) {
        self.effects.clear();
        self.properties.clear();
        self.held_headers = [false; 2];
        // Calls still out belong to the finished stream: Envoy cancels them with it.
        self.calls.forget_all();
    }

    /// Whether header map `kind` is available in the current callback.
    pub fn has_map(&self, kind: crate::stream::HeaderKind) -> bool {
        use crate::stream::{Direction, HeaderKind as K};
        let held = match kind {
            K::RequestHeaders => self.held_headers[Direction::Request as usize],
            K::ResponseHeaders => self.held_headers[Direction::Response as usize],
            _ => false,
        };
        let phase = self.phase();
        phase.has_map(kind) || (held && !matches!(phase, Phase::Other | Phase::Configure))
    }

    /// The callback running now; decides which header maps the guest may touch.
    pub fn phase(&self) -> Phase {
        self.call.phase
    }

    /// The stream the current call is about; `None` during init, root-context calls and ends
    /// without a stream.
    pub fn stream(&self) -> Option<&dyn HttpStream> {
        match &self.call.subject {
            Subject::Stream(stream) => Some(stream.as_ref()),
            Subject::Nothing | Subject::Root(_) => None,
        }
    }

    /// The stream the current call is about, to change it (see `stream`).
    pub fn stream_mut(&mut self) -> Option<&mut (dyn HttpStream + 'static)> {
        match &mut self.call.subject {
            Subject::Stream(stream) => Some(stream.as_mut()),
            Subject::Nothing | Subject::Root(_) => None,
        }
    }

    /// Where the current call's HTTP and gRPC calls go: the stream's callouts or the root's;
    /// `None` when it has neither (init without the config's callouts, see `init_calls`).
    pub fn callouts(&mut self) -> Option<&mut dyn Callouts> {
        match &mut self.call.subject {
            Subject::Stream(stream) => Some(stream.as_mut() as &mut dyn Callouts),
            Subject::Root(callouts) => Some(callouts.as_mut()),
            Subject::Nothing => None,
        }
    }

    /// The call response the current call is told of, if any.
    pub fn call_response(&self) -> Option<&CallResponse> {
        self.call.response.as_ref()
    }

    /// The status of the gRPC call the current call reports, if any.
    pub fn grpc_status(&self) -> Option<&(u32, Vec<u8>)> {
        self.call.grpc_status.as_ref()
    }
}

/// Host-side state a guest's init left behind, restored on resume from a snapshot (and sealed into
/// its file by `snapshot`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostSnapshot {
    pub root_context_id: u32,
    /// `proxy_set_tick_period_milliseconds` during init (0: none).
    pub tick_period_ms: u64,
    /// Metrics defined during init, in definition order: (type, name).
    pub metrics: Vec<(u32, String)>,
}

/// The guest exports the host needs on every hostcall, looked up once after instantiation.
#[derive(Clone)]
pub struct GuestMemory {
    pub memory: wasmtime::Memory,
    /// `proxy_on_memory_allocate` or, for older guests, `malloc`.
    pub allocate: wasmtime::TypedFunc<i32, i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Callouts that cannot call (the trait's defaults).
    struct NoCallouts;
    impl Callouts for NoCallouts {}

    #[test]
    fn a_call_context_is_cleared_however_the_call_ends() {
        let engine = wasmtime::Engine::default();
        let tenant = TenantId::try_from("t").unwrap();
        let mut store = wasmtime::Store::new(&engine, HostState::new(tenant, Arc::from(&b""[..]), Arc::from(&b""[..]), 1 << 20));
        let root = || {
            CallContext::new(Subject::Root(Box::new(NoCallouts)), Phase::HttpCallResponse)
                .answering(Some(CallResponse::default()), Some((5, b"no".to_vec())))
        };
        {
            let mut scope = CallScope::install(&mut store, root());
            assert!(scope.data_mut().callouts().is_some());
            assert_eq!(scope.data().phase(), Phase::HttpCallResponse);
            assert!(scope.data().call_response().is_some() && scope.data().grpc_status().is_some());
        }
        let cleared = |state: &mut HostState| {
            state.callouts().is_none() && state.phase() == Phase::Other && state.call_response().is_none() && state.grpc_status().is_none()
        };
        assert!(cleared(store.data_mut()));
        // A panic inside the call unwinds through the scope: the context is cleared all the same.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _scope = CallScope::install(&mut store, root());
            panic!("a host bug mid-call");
        }));
        assert!(unwound.is_err());
        assert!(cleared(store.data_mut()));
    }
}
