//! Safe wrappers over Envoy's callbacks: logging, [`EnvoyStream`], the `HttpStream` (and so the
//! `Callouts`) of a real Envoy stream, and [`ConfigCaller`], the filter config's `Callouts`, which
//! root contexts use.

use super::abi::{self, Callbacks, ConfigEnvoyPtr, EnvoyBuffer, FilterEnvoyPtr, HttpHeader, ModuleBuffer};
use crate::config::{RouteConfig, TenantId};
use crate::stream::{
    AttributeKind, AttributeValue, CallError, Callouts, Direction, HeaderKind, HeaderPair, HttpStream, LocalReply, MetadataSource,
    MetadataValue,
};
use crate::telemetry::{LogLevel, Metric, MetricKind, StatsSink};
use std::sync::OnceLock;

static CALLBACKS: OnceLock<Callbacks> = OnceLock::new();

/// Resolves Envoy's callbacks; called once from program init inside Envoy.
pub fn init() -> Result<&'static Callbacks, String> {
    if let Some(cb) = CALLBACKS.get() {
        return Ok(cb);
    }
    let resolved = Callbacks::resolve()?;
    let cb = CALLBACKS.get_or_init(|| resolved);
    crate::telemetry::install_log_sink(crate::telemetry::LogSink { log, lowest_enabled: lowest_enabled_level });
    Ok(cb)
}

/// The callbacks, once resolved (i.e. when running inside Envoy).
pub fn resolved() -> Option<&'static Callbacks> {
    CALLBACKS.get()
}

/// Logs through Envoy (the telemetry log sink, installed by `init`).
fn log(level: LogLevel, message: &str) {
    let Some(cb) = resolved() else { return };
    // SAFETY: `log` takes a borrowed buffer for the duration of the call; `message` outlives it.
    unsafe { (cb.log)(level as u32, ModuleBuffer::of(message.as_bytes())) };
}

/// The lowest level Envoy's `dynamic_modules` logger has enabled.
fn lowest_enabled_level() -> LogLevel {
    let Some(cb) = resolved() else { return LogLevel::Critical };
    // SAFETY: `log_enabled` takes a level by value and has no other preconditions.
    LogLevel::ALL.into_iter().find(|l| unsafe { (cb.log_enabled)(*l as u32) }).unwrap_or(LogLevel::Critical)
}

fn header_type(kind: HeaderKind) -> u32 {
    match kind {
        HeaderKind::RequestHeaders => abi::header_type::REQUEST_HEADER,
        HeaderKind::RequestTrailers => abi::header_type::REQUEST_TRAILER,
        HeaderKind::ResponseHeaders => abi::header_type::RESPONSE_HEADER,
        HeaderKind::ResponseTrailers => abi::header_type::RESPONSE_TRAILER,
    }
}

/// Copies Envoy-owned bytes.
///
/// SAFETY (for callers): `ptr` must be NULL or point to `len` readable bytes for this call.
unsafe fn copy(ptr: *const u8, len: usize) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: guaranteed by the caller (Envoy-owned buffer valid during the current hook).
    unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
}

/// Envoy's callouts need a `host` header; proxy-wasm guests name the authority `:authority`.
fn callout_headers(headers: &[HeaderPair]) -> Vec<HeaderPair> {
    let mut headers = headers.to_vec();
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(b"host")) {
        if let Some((_, authority)) = headers.iter().find(|(k, _)| k == b":authority").cloned() {
            headers.push((b"host".to_vec(), authority));
        }
    }
    headers.retain(|(k, _)| k != b":authority");
    headers
}

/// Header structs pointing into `headers` (which must outlive their use).
fn raw_headers(headers: &[HeaderPair]) -> Vec<HttpHeader> {
    headers
        .iter()
        .map(|(k, v)| HttpHeader { key_ptr: k.as_ptr(), key_length: k.len(), value_ptr: v.as_ptr(), value_length: v.len() })
        .collect()
}

/// Starts a callout or call stream: prepares the headers, lets `start` make the Envoy call with
/// (id out-pointer, cluster, headers, header count), and turns Envoy's answer into a result.
fn start_callout(
    cluster: &[u8],
    headers: &[HeaderPair],
    start: impl FnOnce(*mut u64, ModuleBuffer, *mut HttpHeader, usize) -> u32,
) -> Result<u64, CallError> {
    let headers = callout_headers(headers);
    let mut raw = raw_headers(&headers);
    let mut id = 0u64;
    // `raw` points into `headers`, both alive until `start` returns.
    match start(&mut id, ModuleBuffer::of(cluster), raw.as_mut_ptr(), raw.len()) {
        abi::callout_init::SUCCESS => Ok(id),
        abi::callout_init::MISSING_REQUIRED_HEADERS | abi::callout_init::CLUSTER_NOT_FOUND => Err(CallError::BadRequest),
        _ => Err(CallError::Unavailable),
    }
}

/// A root context's calls: the filter config's own HTTP callouts and call streams (main thread).
pub struct ConfigCaller {
    pub(super) ce: ConfigEnvoyPtr,
    pub(super) cb: &'static Callbacks,
}

impl Callouts for ConfigCaller {
    fn http_call(&mut self, cluster: &[u8], headers: &[HeaderPair], body: &[u8], timeout_ms: u64) -> Result<u64, CallError> {
        let callout = self.cb.http_filter_config_http_callout.ok_or(CallError::Unavailable)?;
        // SAFETY: `ce` is the config pointer of the running config-level hook (main thread); the
        // pointers `start_callout` passes are valid for the call.
        start_callout(cluster, headers, |id, c, h, n| unsafe { callout(self.ce, id, c, h, n, ModuleBuffer::of(body), timeout_ms) })
    }

    fn start_call_stream(
        &mut self,
        cluster: &[u8],
        headers: &[HeaderPair],
        body: &[u8],
        end_stream: bool,
        timeout_ms: u64,
    ) -> Result<u64, CallError> {
        let start = self.cb.http_filter_config_start_http_stream.ok_or(CallError::Unavailable)?;
        // SAFETY: as in `http_call`.
        start_callout(cluster, headers, |id, c, h, n| unsafe {
            start(self.ce, id, c, h, n, ModuleBuffer::of(body), end_stream, timeout_ms)
        })
    }

    fn send_call_stream(&mut self, id: u64, data: &[u8], end_stream: bool) -> bool {
        let Some(send) = self.cb.http_filter_config_stream_send_data else { return false };
        // SAFETY: main thread; `id` names a stream this config started; `data` borrowed for the call.
        unsafe { send(self.ce, id, ModuleBuffer::of(data), end_stream) }
    }

    fn reset_call_stream(&mut self, id: u64) {
        if let Some(reset) = self.cb.http_filter_config_reset_http_stream {
            // SAFETY: main thread; `id` names a stream this config started.
            unsafe { reset(self.ce, id) }
        }
    }
}

/// Envoy's ids of thaw's metrics in one filter config (defined at config creation).
#[derive(Clone, Copy, Debug)]
pub struct MetricIds([usize; Metric::ALL.len()]);

impl MetricIds {
    /// Defines every metric of `telemetry::Metric` with Envoy, with its labels. Only possible
    /// during config creation (Envoy freezes definitions afterwards).
    pub(super) fn define(cb: &Callbacks, ce: ConfigEnvoyPtr) -> Result<MetricIds, String> {
        let mut ids = [0usize; Metric::ALL.len()];
        for metric in Metric::ALL {
            let label: Vec<ModuleBuffer> = metric.labels().iter().map(|l| ModuleBuffer::of(l.as_bytes())).collect();
            let define = match metric.kind() {
                MetricKind::Counter => cb.http_filter_config_define_counter,
                MetricKind::Gauge => cb.http_filter_config_define_gauge,
                MetricKind::Histogram => cb.http_filter_config_define_histogram,
            };
            let name = ModuleBuffer::of(metric.name().as_bytes());
            // SAFETY: `ce` is the config pointer of the running config hook; the name and label
            // buffers are borrowed for the call; `ids[i]` is a valid out-pointer.
            let result = unsafe { define(ce, name, label.as_ptr(), label.len(), &mut ids[metric.index()]) };
            if result != abi::METRICS_SUCCESS {
                return Err(format!("Envoy refused to define metric {} (result {result})", metric.name()));
            }
        }
        Ok(MetricIds(ids))
    }
}

/// Records metrics during config creation (main thread), through the config pointer.
pub struct ConfigStats {
    pub(super) ce: ConfigEnvoyPtr,
    pub(super) cb: &'static Callbacks,
    pub(super) ids: MetricIds,
}

impl StatsSink for ConfigStats {
    fn record(&mut self, metric: Metric, tenant: &TenantId, value: i64) {
        let tenant_label = [ModuleBuffer::of(tenant.as_str().as_bytes())];
        let label = &tenant_label[..metric.labels().len().min(1)]; // none for unlabelled metrics
        let id = self.ids.0[metric.index()];
        let record = match metric.kind() {
            MetricKind::Counter => self.cb.http_filter_config_increment_counter,
            MetricKind::Histogram => self.cb.http_filter_config_record_histogram_value,
            MetricKind::Gauge => return, // no gauge moves at config creation
        };
        // SAFETY: `ce` is the config pointer of the running config hook; `id` was defined on it
        // with as many labels as `label` holds (none or the tenant); the buffer is borrowed for
        // the call.
        unsafe { record(self.ce, id, label.as_ptr(), label.len(), value.max(0) as u64) };
    }

    fn set_labelled(&mut self, metric: Metric, tenant: &TenantId, second: &str, value: u64) {
        if metric.kind() != MetricKind::Gauge || metric.labels().len() != 2 {
            return;
        }
        let labels = [ModuleBuffer::of(tenant.as_str().as_bytes()), ModuleBuffer::of(second.as_bytes())];
        let id = self.ids.0[metric.index()];
        // SAFETY: main thread; `ce` is a live config's pointer (the one being created, or one in
        // hooks' LIVE_CONFIGS, not yet destroyed); `id` was defined on it with two labels; the
        // label buffers are borrowed for the call.
        unsafe { (self.cb.http_filter_config_set_gauge)(self.ce, id, labels.as_ptr(), labels.len(), value) };
    }
}

/// Envoy's config-level scheduler: `commit(event)` from any thread makes Envoy call
/// `on_http_filter_config_scheduled(event)` on the main thread. Deleted when dropped.
pub struct ConfigScheduler {
    ptr: *mut std::ffi::c_void,
    commit: unsafe extern "C" fn(*mut std::ffi::c_void, u64),
    delete: unsafe extern "C" fn(*mut std::ffi::c_void),
}

// SAFETY: Envoy documents the scheduler's commit as callable from any thread; the pointer is only
// handed to commit and, once, to delete.
unsafe impl Send for ConfigScheduler {}
// SAFETY: as above; commit takes the pointer by value and needs no exclusive access.
unsafe impl Sync for ConfigScheduler {}

impl ConfigScheduler {
    /// A scheduler for the config being created; `None` when this Envoy has none.
    pub(super) fn new(cb: &Callbacks, ce: ConfigEnvoyPtr) -> Option<ConfigScheduler> {
        let (new, commit, delete) =
            (cb.http_filter_config_scheduler_new?, cb.http_filter_config_scheduler_commit?, cb.http_filter_config_scheduler_delete?);
        // SAFETY: `ce` is the config pointer of the running config hook.
        let ptr = unsafe { new(ce) };
        (!ptr.is_null()).then_some(ConfigScheduler { ptr, commit, delete })
    }

    pub fn commit(&self, event: u64) {
        // SAFETY: `ptr` is live until drop, and commit may be called from any thread.
        unsafe { (self.commit)(self.ptr, event) }
    }
}

impl Drop for ConfigScheduler {
    fn drop(&mut self) {
        // SAFETY: created by scheduler_new, deleted exactly once, after every committer is gone
        // (the ticker thread holds an Arc and is joined before the last one drops).
        unsafe { (self.delete)(self.ptr) }
    }
}

/// One Envoy HTTP stream, valid for the duration of the hook that created it. Not `Copy`, and its
/// pointer is private: only `hooks` makes one, from the pointer Envoy passed to the running hook.
#[derive(Clone)]
pub struct EnvoyStream {
    fe: FilterEnvoyPtr,
    cb: &'static Callbacks,
    ids: MetricIds,
    /// Set in a body hook: that direction's body is the data Envoy just delivered ("received"),
    /// after what Envoy buffered when the filter buffers (`BodyHook::buffering`).
    body_hook: Option<BodyHook>,
}

#[derive(Clone, Copy)]
struct BodyHook {
    direction: Direction,
    buffering: bool,
}

impl EnvoyStream {
    /// Wraps the stream pointer Envoy passed to the current hook.
    pub(super) fn new(fe: FilterEnvoyPtr, cb: &'static Callbacks, ids: MetricIds) -> EnvoyStream {
        EnvoyStream { fe, cb, ids, body_hook: None }
    }

    /// The same stream, inside the body hook of `direction`; `buffering` when the filter stopped
    /// this direction with StopIterationAndBuffer before (Envoy then holds the earlier data).
    pub(super) fn in_body_hook(self, direction: Direction, buffering: bool) -> EnvoyStream {
        EnvoyStream { body_hook: Some(BodyHook { direction, buffering }), ..self }
    }

    /// The Envoy body buffers that make up what the guest sees as the body, in order.
    fn body_types(&self, direction: Direction) -> &'static [u32] {
        use abi::body_type::*;
        let hook = self.body_hook.filter(|h| h.direction == direction);
        match (direction, hook.map(|h| h.buffering)) {
            (Direction::Request, Some(true)) => &[BUFFERED_REQUEST_BODY, RECEIVED_REQUEST_BODY],
            (Direction::Request, Some(false)) => &[RECEIVED_REQUEST_BODY],
            (Direction::Request, None) => &[BUFFERED_REQUEST_BODY],
            (Direction::Response, Some(true)) => &[BUFFERED_RESPONSE_BODY, RECEIVED_RESPONSE_BODY],
            (Direction::Response, Some(false)) => &[RECEIVED_RESPONSE_BODY],
            (Direction::Response, None) => &[BUFFERED_RESPONSE_BODY],
        }
    }

    fn read_body(&self, t: u32) -> Option<Vec<u8>> {
        // SAFETY: live stream.
        let count = unsafe { (self.cb.http_get_body_chunks_size)(self.fe, t) };
        let mut chunks = vec![EnvoyBuffer { ptr: std::ptr::null(), length: 0 }; count];
        // SAFETY: `chunks` has room for the `count` chunks Envoy reported just now.
        if !unsafe { (self.cb.http_get_body_chunks)(self.fe, t, chunks.as_mut_ptr()) } {
            return None;
        }
        let mut body = Vec::with_capacity(chunks.iter().map(|c| c.length).sum());
        for chunk in &chunks {
            // SAFETY: Envoy filled each chunk with a buffer valid until the hook returns.
            body.extend(unsafe { copy(chunk.ptr, chunk.length) });
        }
        Some(body)
    }
}

impl StatsSink for EnvoyStream {
    fn record(&mut self, metric: Metric, tenant: &TenantId, value: i64) {
        let tenant_label = [ModuleBuffer::of(tenant.as_str().as_bytes())];
        let label = &tenant_label[..metric.labels().len().min(1)]; // none for unlabelled metrics
        let id = self.ids.0[metric.index()];
        let (record, amount) = match metric.kind() {
            MetricKind::Counter => (self.cb.http_filter_increment_counter, value.max(0) as u64),
            MetricKind::Histogram => (self.cb.http_filter_record_histogram_value, value.max(0) as u64),
            MetricKind::Gauge if value >= 0 => (self.cb.http_filter_increment_gauge, value as u64),
            MetricKind::Gauge => (self.cb.http_filter_decrement_gauge, value.unsigned_abs()),
        };
        // SAFETY: live stream of the current hook; `id` was defined on this stream's config with
        // as many labels as `label` holds (none or the tenant); the buffer is borrowed for the call.
        unsafe { record(self.fe, id, label.as_ptr(), label.len(), amount) };
    }

    fn record_guest(&mut self, metric: Metric, tenant: &TenantId, name: &str, value: i64) {
        let labels = [ModuleBuffer::of(tenant.as_str().as_bytes()), ModuleBuffer::of(name.as_bytes())];
        let id = self.ids.0[metric.index()];
        let record = match metric.kind() {
            MetricKind::Counter => self.cb.http_filter_increment_counter,
            MetricKind::Gauge => self.cb.http_filter_set_gauge,
            MetricKind::Histogram => self.cb.http_filter_record_histogram_value,
        };
        // SAFETY: live stream; `id` was defined with the labels (tenant, name); buffers borrowed.
        unsafe { record(self.fe, id, labels.as_ptr(), labels.len(), value.max(0) as u64) };
    }
}

/// A stream's guest calls go through the stream's own callouts.
impl Callouts for EnvoyStream {
    fn http_call(&mut self, cluster: &[u8], headers: &[HeaderPair], body: &[u8], timeout_ms: u64) -> Result<u64, CallError> {
        let callout = self.cb.http_filter_http_callout;
        // SAFETY: live stream; the pointers `start_callout` passes are valid for the call.
        start_callout(cluster, headers, |id, c, h, n| unsafe { callout(self.fe, id, c, h, n, ModuleBuffer::of(body), timeout_ms) })
    }

    fn start_call_stream(
        &mut self,
        cluster: &[u8],
        headers: &[HeaderPair],
        body: &[u8],
        end_stream: bool,
        timeout_ms: u64,
    ) -> Result<u64, CallError> {
        let start = self.cb.http_filter_start_http_stream.ok_or(CallError::Unavailable)?;
        // SAFETY: live stream; the pointers `start_callout` passes are valid for the call.
        start_callout(cluster, headers, |id, c, h, n| unsafe {
            start(self.fe, id, c, h, n, ModuleBuffer::of(body), end_stream, timeout_ms)
        })
    }

    fn send_call_stream(&mut self, id: u64, data: &[u8], end_stream: bool) -> bool {
        let Some(send) = self.cb.http_stream_send_data else { return false };
        // SAFETY: live stream; `id` names a stream this filter started; `data` borrowed for the call.
        unsafe { send(self.fe, id, ModuleBuffer::of(data), end_stream) }
    }

    fn reset_call_stream(&mut self, id: u64) {
        if let Some(reset) = self.cb.http_filter_reset_http_stream {
            // SAFETY: live stream; `id` names a stream this filter started.
            unsafe { reset(self.fe, id) }
        }
    }
}

impl HttpStream for EnvoyStream {
    fn header_values(&self, kind: HeaderKind, key: &[u8]) -> Option<Vec<Vec<u8>>> {
        let mut out = EnvoyBuffer { ptr: std::ptr::null(), length: 0 };
        let mut count = 0usize;
        // SAFETY: `fe` is the live stream of the current hook; out-pointers are valid locals; `key`
        // is borrowed for the call.
        let found = unsafe { (self.cb.http_get_header)(self.fe, header_type(kind), ModuleBuffer::of(key), &mut out, 0, &mut count) };
        if !found || count == 0 {
            return Some(Vec::new());
        }
        // SAFETY: Envoy filled `out` with a buffer valid until the hook returns.
        let mut values = vec![unsafe { copy(out.ptr, out.length) }];
        for index in 1..count {
            // SAFETY: as above, for the value at `index` < `count`.
            unsafe {
                (self.cb.http_get_header)(self.fe, header_type(kind), ModuleBuffer::of(key), &mut out, index, std::ptr::null_mut());
                values.push(copy(out.ptr, out.length));
            }
        }
        Some(values)
    }

    fn header_count(&self, kind: HeaderKind) -> usize {
        // SAFETY: `fe` is the live stream of the current hook.
        unsafe { (self.cb.http_get_headers_size)(self.fe, header_type(kind)) }
    }

    fn headers(&self, kind: HeaderKind) -> Option<Vec<HeaderPair>> {
        let size = self.header_count(kind);
        let empty = HttpHeader { key_ptr: std::ptr::null(), key_length: 0, value_ptr: std::ptr::null(), value_length: 0 };
        let mut raw = vec![empty; size];
        // SAFETY: `raw` has room for the `size` entries Envoy reported for this map just now.
        if !unsafe { (self.cb.http_get_headers)(self.fe, header_type(kind), raw.as_mut_ptr()) } {
            return None;
        }
        // SAFETY: Envoy filled each entry with buffers valid until the hook returns.
        Some(raw.iter().map(|h| unsafe { (copy(h.key_ptr, h.key_length), copy(h.value_ptr, h.value_length)) }).collect())
    }

    fn set_header(&mut self, kind: HeaderKind, key: &[u8], value: Option<&[u8]>) -> bool {
        // NULL removes the header; so does an empty value in Envoy 1.40 (see `add_header`).
        let value = value.map_or(ModuleBuffer::NULL, ModuleBuffer::of);
        // SAFETY: live stream; buffers borrowed for the call; a NULL value removes the header.
        unsafe { (self.cb.http_set_header)(self.fe, header_type(kind), ModuleBuffer::of(key), value) }
    }

    fn add_header(&mut self, kind: HeaderKind, key: &[u8], value: &[u8]) -> bool {
        if value.is_empty() {
            // Envoy 1.40's dynamic-module ABI cannot hold an empty header value: `http_add_header`
            // refuses one and `http_set_header` removes the header. Envoy's Wasm host adds it and
            // answers OK; thaw answers OK too (a guest SDK treats a failure as fatal) and the
            // header is not added (CONFORMANCE.md, documented differences).
            return true;
        }
        // SAFETY: live stream; buffers borrowed for the call.
        unsafe { (self.cb.http_add_header)(self.fe, header_type(kind), ModuleBuffer::of(key), ModuleBuffer::of(value)) }
    }

    fn send_local_reply(&mut self, reply: &LocalReply) {
        let mut headers = raw_headers(&reply.headers);
        // SAFETY: live stream; `headers`, body and details are borrowed for the call. Envoy may
        // re-enter thaw (local-reply hook) before returning; replies are deferred until the hook
        // released the stream state (see hooks.rs), so no borrow is held across this call.
        unsafe {
            (self.cb.http_send_response)(
                self.fe,
                reply.status,
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(&reply.body),
                ModuleBuffer::of(&reply.details),
            )
        }
    }

    fn body(&self, direction: Direction) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        let mut available = false;
        for &t in self.body_types(direction) {
            if let Some(part) = self.read_body(t) {
                available = true;
                body.extend(part);
            }
        }
        available.then_some(body)
    }

    fn set_body(&mut self, direction: Direction, data: &[u8]) -> bool {
        let types = self.body_types(direction);
        // SAFETY: live stream; `data` is borrowed for the call.
        unsafe {
            for &t in types {
                let size = (self.cb.http_get_body_size)(self.fe, t);
                if size > 0 && !(self.cb.http_drain_body)(self.fe, t, size) {
                    return false;
                }
            }
            // Into the data of this call (the last part): what Envoy passes on when the filter continues.
            data.is_empty() || (self.cb.http_append_body)(self.fe, types[types.len() - 1], ModuleBuffer::of(data))
        }
    }

    fn continue_stream(&mut self, direction: Direction) {
        // SAFETY: live stream.
        unsafe {
            match direction {
                Direction::Request => (self.cb.http_filter_continue_decoding)(self.fe),
                Direction::Response => (self.cb.http_filter_continue_encoding)(self.fe),
            }
        }
    }

    fn reset(&mut self) -> bool {
        let Some(reset) = self.cb.http_filter_reset_stream else { return false };
        // SAFETY: live stream; the details buffer is borrowed for the call.
        unsafe { reset(self.fe, abi::RESET_LOCAL, ModuleBuffer::of(b"thaw_guest_closed_stream")) };
        true
    }

    fn attribute(&self, id: u32, kind: AttributeKind) -> Option<AttributeValue> {
        // SAFETY (all three): live stream; out-pointers are valid locals.
        match kind {
            AttributeKind::Bytes => {
                let mut out = EnvoyBuffer { ptr: std::ptr::null(), length: 0 };
                // SAFETY: see above; Envoy's buffer is valid until the hook returns.
                unsafe { (self.cb.http_filter_get_attribute_string)(self.fe, id, &mut out) }
                    .then(|| AttributeValue::Bytes(unsafe { copy(out.ptr, out.length) }))
            }
            AttributeKind::Int => {
                let mut out = 0u64;
                // SAFETY: see above.
                unsafe { (self.cb.http_filter_get_attribute_int)(self.fe, id, &mut out) }.then_some(AttributeValue::Int(out))
            }
            AttributeKind::Bool => {
                let mut out = false;
                // SAFETY: see above.
                unsafe { (self.cb.http_filter_get_attribute_bool)(self.fe, id, &mut out) }.then_some(AttributeValue::Bool(out))
            }
        }
    }

    fn metadata(&self, source: MetadataSource, namespace: &[u8], key: &[u8]) -> Option<MetadataValue> {
        let (ns, key, source) = (ModuleBuffer::of(namespace), ModuleBuffer::of(key), source as u32);
        if let Some(get) = self.cb.http_get_metadata_string {
            let mut out = EnvoyBuffer { ptr: std::ptr::null(), length: 0 };
            // SAFETY: live stream; buffers borrowed for the call; Envoy's answer is valid until
            // the hook returns and copied at once.
            if unsafe { get(self.fe, source, ns, key, &mut out) } {
                // SAFETY: as above.
                return Some(MetadataValue::String(unsafe { copy(out.ptr, out.length) }));
            }
        }
        if let Some(get) = self.cb.http_get_metadata_number {
            let mut out = 0f64;
            // SAFETY: live stream; buffers borrowed for the call; `out` is a valid local.
            if unsafe { get(self.fe, source, ns, key, &mut out) } {
                return Some(MetadataValue::Number(out));
            }
        }
        if let Some(get) = self.cb.http_get_metadata_bool {
            let mut out = false;
            // SAFETY: as above.
            if unsafe { get(self.fe, source, ns, key, &mut out) } {
                return Some(MetadataValue::Bool(out));
            }
        }
        None
    }

    fn filter_state(&self, key: &[u8]) -> Option<Vec<u8>> {
        let get = self.cb.http_get_filter_state_bytes?;
        let mut out = EnvoyBuffer { ptr: std::ptr::null(), length: 0 };
        // SAFETY: live stream; the key is borrowed for the call; Envoy's buffer is valid until the
        // hook returns and copied at once.
        unsafe { get(self.fe, ModuleBuffer::of(key), &mut out) }.then(|| unsafe { copy(out.ptr, out.length) })
    }

    fn route_tenant(&self) -> Option<TenantId> {
        // SAFETY: live stream.
        let ptr = unsafe { (self.cb.get_most_specific_route_config)(self.fe) };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: Envoy hands back the pointer thaw's per-route config hook returned: a leaked
        // `Box<RouteConfig>` that Envoy keeps alive while the route (and so this stream) uses it.
        Some(unsafe { &*ptr.cast::<RouteConfig>() }.tenant.clone())
    }
}
