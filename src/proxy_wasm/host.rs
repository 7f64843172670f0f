//! The host-side state of one guest instance (the `T` of its `Store<T>`): whose instance it is, the
//! stream bound to the current call, the effects the guest asked for during that call, and the
//! memory accounting that enforces the per-instance cap and the process-wide budget.
//!
//! Effects that re-enter Envoy (a local reply) are queued here during a guest call and performed by
//! the filter driver after the call returns.

use super::abi::MAX_TABLE_ELEMENTS;
use crate::config::TenantId;
use crate::stream::{Direction, HttpStream, LocalReply};
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
    /// `proxy_grpc_call` (a unary call) or `proxy_grpc_stream` (`stream: true`) started Envoy call
    /// stream `id`.
    GrpcStarted {
        id: u64,
        stream: bool,
    },
    /// `proxy_grpc_cancel` of Envoy call stream `id`.
    GrpcCancelled(u64),
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
    /// The stream the current guest call is about; `None` during init and root-context calls.
    pub stream: Option<Box<dyn HttpStream>>,
    /// During root-context calls (ticks, queue notifications): what the root may ask of Envoy.
    pub root_host: Option<Box<dyn crate::stream::RootHost>>,
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
    /// The callback running now; decides which header maps the guest may touch.
    pub phase: Phase,
    /// The HTTP call response the guest reads in `proxy_on_http_call_response`, or the gRPC
    /// response (message as body, initial and trailing metadata) in the gRPC callbacks.
    pub call_response: Option<crate::stream::CallResponse>,
    /// The status of the last gRPC call (`proxy_get_status`).
    pub grpc_status: Option<(u32, Vec<u8>)>,
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

/// The calls an instance has out. Tokens are numbered per instance as Envoy's host numbers them
/// per VM (the low two bits name the kind: HTTP call 0, gRPC call 1, gRPC stream 2; the rest
/// counts) and never repeat while the instance lives: a pooled instance whose earlier call was
/// abandoned (the guest answered without waiting, or its stream ended) never sees that token
/// again, so an SDK that still remembers it cannot mistake a new call for it.
#[derive(Default, Debug)]
pub struct Calls {
    /// Calls of each kind made so far.
    made: [u32; 3],
    /// Token -> Envoy's id of the callout or call stream that carries it.
    by_token: HashMap<u32, u64>,
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
        self.by_token.insert(token, envoy_id);
        token
    }

    /// Envoy's id of the call with `token`, if it is out.
    pub fn envoy_id(&self, token: u32) -> Option<u64> {
        self.by_token.get(&token).copied()
    }

    /// The token of Envoy's call `envoy_id`, if it is out.
    pub fn token(&self, envoy_id: u64) -> Option<u32> {
        self.by_token.iter().find(|(_, id)| **id == envoy_id).map(|(t, _)| *t)
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
            stream: None,
            root_host: None,
            effects: Vec::new(),
            contexts: Vec::new(),
            tick_period_ms: 0,
            metrics: Vec::new(),
            properties: HashMap::new(),
            root_id: Arc::from(""),
            phase: Phase::Other,
            call_response: None,
            grpc_status: None,
            held_headers: [false; 2],
            calls: Calls::default(),
            abi: super::abi::AbiVersion::V0_2_1,
            init_calls: Default::default(),
        }
    }

    /// Forgets everything about the last request (pooled reuse): nothing host-side carries over.
    pub fn reset_request_state(&mut self) {
        self.stream = None;
        self.effects.clear();
        self.properties.clear();
        self.call_response = None;
        self.grpc_status = None;
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
        self.phase.has_map(kind) || (held && !matches!(self.phase, Phase::Other | Phase::Configure))
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
