//! The `envoy_dynamic_module_on_*` hooks Envoy calls. Each is a thin shim: turn raw pointers into
//! safe values, run the safe code under a panic guard, turn the result back. A panic never
//! crosses into Envoy: it is logged and the hook fails closed (config rejected, request denied).
//!
//! Re-entrancy: Envoy may call back into thaw while thaw is inside a callback (sending a local
//! reply runs Envoy's encoder path). The per-stream state lives in a `RefCell` and every hook takes
//! it with `try_borrow_mut`, so a re-entrant hook sees "busy" instead of an aliased `&mut`.
// Envoy's hooks are `extern "C"` entry points: their pointer arguments come from Envoy, valid as
// its ABI documents for the call, and they cannot be `unsafe fn` in that ABI. Each dereference has
// its SAFETY note.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use super::abi::{self, ConfigEnvoyPtr, ConfigModulePtr, EnvoyBuffer, FilterEnvoyPtr, FilterModulePtr, HttpHeader};
use super::callbacks::{self, ConfigCaller, ConfigScheduler, ConfigStats, EnvoyStream, MetricIds};
use crate::config::RouteConfig;
use crate::filter::{CallStreamEvent, FilterConfig, StreamFilter, Verdict};
use crate::log_at;
use crate::root::RootContexts;
use crate::stream::{Direction, HttpStream, LocalReply};
use crate::telemetry::StatsSink as _;
use std::cell::RefCell;
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Runs `f`, turning a panic into a log line and `fail`.
fn guard<R>(hook: &'static str, fail: impl FnOnce() -> R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log_at!(Critical, "thaw: panic in {hook} ({what}); failing closed");
            fail()
        }
    }
}

/// Bytes of an Envoy buffer for the duration of the hook.
///
/// SAFETY (for callers): the buffer is one Envoy passed to the current hook.
unsafe fn bytes<'a>(b: EnvoyBuffer) -> &'a [u8] {
    if b.ptr.is_null() || b.length == 0 {
        return &[];
    }
    // SAFETY: Envoy guarantees `length` readable bytes at `ptr` until the hook returns.
    unsafe { std::slice::from_raw_parts(b.ptr, b.length) }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    guard("program_init", std::ptr::null, || match callbacks::init() {
        Ok(_) => abi::ABI_VERSION.as_ptr(),
        Err(e) => {
            eprintln!("thaw: cannot load into this Envoy: {e}");
            std::ptr::null()
        }
    })
}

/// thaw's per-filter-config state behind Envoy's config pointer (CM). Field order is drop order:
/// the root contexts (ticker thread, queue notifiers) go before the scheduler they commit to.
struct LoadedConfig {
    /// Envoy's pointer for this config, valid until `config_destroy` (see [`LIVE_CONFIGS`]).
    envoy: ConfigEnvoyPtr,
    filter: Arc<FilterConfig>,
    metrics: MetricIds,
    roots: Option<RootContexts>,
    _scheduler: Option<Arc<ConfigScheduler>>,
}

/// The configs Envoy has accepted and not yet destroyed (Envoy's config pointer, as an address,
/// and its metric ids). Only the main thread creates and destroys configs.
static LIVE_CONFIGS: std::sync::Mutex<Vec<(usize, MetricIds)>> = std::sync::Mutex::new(Vec::new());

/// Sets the `wasm_artifact_refused` gauges of `creating` (the config being created) and of every
/// live config to the process-wide tally, so a refusal is visible in `/stats/prometheus` at once,
/// even when the config that refused it was rejected. Main thread.
fn publish_refusals(creating: &mut ConfigStats) {
    let refusals = crate::telemetry::refusals::all();
    let live = LIVE_CONFIGS.lock().unwrap_or_else(|p| p.into_inner());
    let others = live.iter().map(|(ce, ids)| ConfigStats { ce: *ce as ConfigEnvoyPtr, cb: creating.cb, ids: *ids });
    for mut stats in others {
        for (tenant, reason, count) in &refusals {
            stats.set_labelled(crate::telemetry::Metric::ArtifactRefused, tenant, reason.label(), *count);
        }
    }
    for (tenant, reason, count) in &refusals {
        creating.set_labelled(crate::telemetry::Metric::ArtifactRefused, tenant, reason.label(), *count);
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ConfigModulePtr {
    guard("http_filter_config_new", std::ptr::null, || {
        // SAFETY: both buffers were passed to this hook by Envoy.
        let (name, config) = unsafe { (bytes(name), bytes(config)) };
        let name = String::from_utf8_lossy(name);
        let loaded = callbacks::init().and_then(|cb| {
            let metrics = MetricIds::define(cb, config_envoy)?;
            let mut stats = ConfigStats { ce: config_envoy, cb, ids: metrics };
            let loaded = FilterConfig::load_json(&name, config, &mut stats);
            // Refusals of every load so far, this one's included, shown by every config still
            // serving, whether this one is accepted or not.
            publish_refusals(&mut stats);
            let filter = Arc::new(loaded?);
            let scheduler = ConfigScheduler::new(cb, config_envoy).map(Arc::new);
            let roots = scheduler.as_ref().map(|s| {
                let s = Arc::clone(s);
                RootContexts::start(filter.root_tenants(), Arc::new(move |event| s.commit(event)))
            });
            if scheduler.is_none() {
                log_at!(Warn, "thaw: this Envoy has no config scheduler: proxy_on_tick and proxy_on_queue_ready will not be called");
            }
            // Accepted: from here on Envoy destroys it through config_destroy, which unregisters it.
            LIVE_CONFIGS.lock().unwrap_or_else(|p| p.into_inner()).push((config_envoy as usize, metrics));
            Ok(LoadedConfig { envoy: config_envoy, filter, metrics, roots, _scheduler: scheduler })
        });
        match loaded {
            Ok(loaded) => Box::into_raw(Box::new(loaded)) as ConfigModulePtr,
            Err(e) => {
                log_at!(Error, "thaw: filter `{name}`: rejected config: {e}");
                std::ptr::null()
            }
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ConfigModulePtr) {
    guard(
        "http_filter_config_destroy",
        || (),
        || {
            if !config.is_null() {
                // SAFETY: `config` came from Box::into_raw in config_new and Envoy destroys it once.
                let loaded = unsafe { Box::from_raw(config as *mut LoadedConfig) };
                LIVE_CONFIGS.lock().unwrap_or_else(|p| p.into_inner()).retain(|(ce, _)| *ce != loaded.envoy as usize);
                drop(loaded);
            }
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(name: EnvoyBuffer, config: EnvoyBuffer) -> *const c_void {
    guard("http_filter_per_route_config_new", std::ptr::null, || {
        // SAFETY: both buffers were passed to this hook by Envoy.
        let (name, config) = unsafe { (bytes(name), bytes(config)) };
        match RouteConfig::parse(config) {
            Ok(route) => Box::into_raw(Box::new(route)) as *const c_void,
            Err(e) => {
                log_at!(Error, "thaw: filter `{}`: rejected per-route config: {e}", String::from_utf8_lossy(name));
                std::ptr::null()
            }
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(config: *const c_void) {
    guard(
        "http_filter_per_route_config_destroy",
        || (),
        || {
            if !config.is_null() {
                // SAFETY: `config` came from Box::into_raw in per_route_config_new; destroyed once.
                drop(unsafe { Box::from_raw(config as *mut RouteConfig) });
            }
        },
    )
}

/// thaw's per-stream state behind Envoy's stream pointer (FM).
struct StreamState {
    filter: RefCell<StreamFilter>,
    metrics: MetricIds,
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(config: ConfigModulePtr, _fe: FilterEnvoyPtr) -> FilterModulePtr {
    guard("http_filter_new", std::ptr::null, || {
        // SAFETY: `config` is the live pointer config_new returned; Envoy keeps it alive for the
        // filter's lifetime.
        let config = unsafe { &*(config as *const LoadedConfig) };
        let state = StreamState { filter: RefCell::new(StreamFilter::new(Arc::clone(&config.filter))), metrics: config.metrics };
        Box::into_raw(Box::new(state)) as FilterModulePtr
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(fm: FilterModulePtr) {
    guard(
        "http_filter_destroy",
        || (),
        || {
            if !fm.is_null() {
                // SAFETY: `fm` came from Box::into_raw in http_filter_new; Envoy destroys it once,
                // after every other hook of the stream.
                let state = unsafe { Box::from_raw(fm as *mut StreamState) };
                state.filter.into_inner().on_destroy();
            }
        },
    )
}

/// Runs a stream hook with the stream's state and a handle to the Envoy stream. A panic fails
/// closed: the stream's filter is poisoned (its instance dropped, nothing more of the stream
/// moves) and the stream gets a 503. A re-entrant call (state busy: nothing thaw does should
/// cause one) gets `busy`, a stop. What the filter deferred (replies, resumes, resets: they
/// re-enter Envoy, which may call thaw's hooks back at once, or end the stream) is performed once
/// the state is released, and the state is not touched after that.
fn with_stream<R>(
    hook: &'static str,
    fe: FilterEnvoyPtr,
    fm: FilterModulePtr,
    busy: R,
    fail: R,
    f: impl FnOnce(&mut StreamFilter, EnvoyStream) -> R,
) -> R {
    let Some(cb) = callbacks::resolved() else { return fail };
    // SAFETY: `fm` is the live pointer http_filter_new returned; Envoy calls stream hooks on the
    // stream's one worker thread only, and destroys it after every other hook (possibly during
    // `perform` below, which is why `state` is not used after it).
    let state = unsafe { &*(fm as *const StreamState) };
    let mut stream = EnvoyStream::new(fe, cb, state.metrics);
    let ran = guard(
        hook,
        || None,
        || match state.filter.try_borrow_mut() {
            Ok(mut filter) => {
                let result = f(&mut filter, stream.clone());
                Some(Ok((result, filter.take_deferred())))
            }
            Err(_) => Some(Err(())),
        },
    );
    match ran {
        Some(Ok((result, deferred))) => {
            guard(hook, || (), || crate::filter::perform(deferred, &mut stream));
            result
        }
        Some(Err(())) => {
            log_at!(Error, "thaw: {hook} re-entered while the stream was busy; stopping it");
            busy
        }
        None => {
            if let Ok(mut filter) = state.filter.try_borrow_mut() {
                filter.poison();
            }
            stream.send_local_reply(&LocalReply::internal_error());
            fail
        }
    }
}

/// Envoy's status numbers for a verdict, per phase (`Verdict` documents the mapping).
fn headers_status(v: Verdict) -> u32 {
    use abi::headers_status::*;
    match v {
        Verdict::Continue => CONTINUE,
        Verdict::StopAllAndBuffer => STOP_ALL_ITERATION_AND_BUFFER,
        Verdict::Stop | Verdict::StopAndBuffer | Verdict::StopAndWatermark => STOP_ALL_ITERATION_AND_WATERMARK,
    }
}

fn body_status(v: Verdict) -> u32 {
    use abi::body_status::*;
    match v {
        Verdict::Continue => CONTINUE,
        Verdict::StopAndBuffer => STOP_ITERATION_AND_BUFFER,
        Verdict::StopAndWatermark => STOP_ITERATION_AND_WATERMARK,
        Verdict::Stop | Verdict::StopAllAndBuffer => STOP_ITERATION_NO_BUFFER,
    }
}

fn trailers_status(v: Verdict) -> u32 {
    match v {
        Verdict::Continue => abi::trailers_status::CONTINUE,
        _ => abi::trailers_status::STOP_ITERATION,
    }
}

const STOP: u32 = abi::headers_status::STOP_ALL_ITERATION_AND_WATERMARK;

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(fe: FilterEnvoyPtr, fm: FilterModulePtr, end_of_stream: bool) -> u32 {
    with_stream("request_headers", fe, fm, STOP, STOP, |f, s| headers_status(f.on_request_headers(s, end_of_stream)))
}

const BODY_STOP: u32 = abi::body_status::STOP_ITERATION_NO_BUFFER;
const TRAILERS_STOP: u32 = abi::trailers_status::STOP_ITERATION;

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(fe: FilterEnvoyPtr, fm: FilterModulePtr, end_of_stream: bool) -> u32 {
    with_stream("request_body", fe, fm, BODY_STOP, BODY_STOP, |f, s| {
        let buffering = f.is_buffering(Direction::Request);
        body_status(f.on_body(s.in_body_hook(Direction::Request, buffering), Direction::Request, end_of_stream))
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(fe: FilterEnvoyPtr, fm: FilterModulePtr) -> u32 {
    with_stream("request_trailers", fe, fm, TRAILERS_STOP, TRAILERS_STOP, |f, s| trailers_status(f.on_trailers(s, Direction::Request)))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    fe: FilterEnvoyPtr,
    fm: FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    with_stream("response_headers", fe, fm, STOP, STOP, |f, s| headers_status(f.on_response_headers(s, end_of_stream)))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(fe: FilterEnvoyPtr, fm: FilterModulePtr, end_of_stream: bool) -> u32 {
    with_stream("response_body", fe, fm, BODY_STOP, BODY_STOP, |f, s| {
        let buffering = f.is_buffering(Direction::Response);
        body_status(f.on_body(s.in_body_hook(Direction::Response, buffering), Direction::Response, end_of_stream))
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(fe: FilterEnvoyPtr, fm: FilterModulePtr) -> u32 {
    with_stream("response_trailers", fe, fm, TRAILERS_STOP, TRAILERS_STOP, |f, s| trailers_status(f.on_trailers(s, Direction::Response)))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(fe: FilterEnvoyPtr, fm: FilterModulePtr) {
    with_stream("stream_complete", fe, fm, (), (), |f, s| f.on_stream_complete(s))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(ce: ConfigEnvoyPtr, cm: ConfigModulePtr, event_id: u64) {
    with_roots("http_filter_config_scheduled", ce, cm, |roots, stats, callouts| roots.run(event_id, stats, callouts))
}

/// Runs `f` on a config's root contexts (if it has them) with the config's stats and its callouts,
/// under the hook's panic guard. Config-level hooks run on the main thread, the only thread that
/// touches `roots`.
fn with_roots(
    hook: &'static str,
    ce: ConfigEnvoyPtr,
    cm: ConfigModulePtr,
    f: impl FnOnce(&RootContexts, &mut ConfigStats, &dyn Fn() -> Box<dyn crate::stream::Callouts>),
) {
    guard(
        hook,
        || (),
        || {
            let Some(cb) = callbacks::resolved() else { return };
            // SAFETY: `cm` is the live pointer config_new returned; this runs on the main thread.
            let config = unsafe { &*(cm as *const LoadedConfig) };
            if let Some(roots) = &config.roots {
                let callouts = || Box::new(ConfigCaller { ce, cb }) as Box<dyn crate::stream::Callouts>;
                f(roots, &mut ConfigStats { ce, cb, ids: config.metrics }, &callouts);
            }
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    ce: ConfigEnvoyPtr,
    cm: ConfigModulePtr,
    callout_id: u64,
    result: u32,
    headers: *const HttpHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    with_roots("http_filter_config_http_callout_done", ce, cm, |roots, stats, callouts| {
        // SAFETY: the arrays Envoy passed to this hook, valid for its duration.
        let response = unsafe { call_response(result, headers, headers_size, body_chunks, body_chunks_size) };
        roots.on_http_call_response(callout_id, response, stats, callouts)
    })
}

/// A config-level call-stream event (a root instance's gRPC call or stream), main thread.
fn config_call_stream_event(hook: &'static str, ce: ConfigEnvoyPtr, cm: ConfigModulePtr, stream_id: u64, event: CallStreamEvent) {
    with_roots(hook, ce, cm, |roots, stats, callouts| roots.on_call_stream(stream_id, event, stats, callouts))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    ce: ConfigEnvoyPtr,
    cm: ConfigModulePtr,
    stream_id: u64,
    headers: *const HttpHeader,
    headers_size: usize,
    _end_stream: bool,
) {
    // SAFETY: the headers Envoy passed to this hook.
    let headers = unsafe { header_pairs(headers, headers_size) };
    config_call_stream_event("http_filter_config_http_stream_headers", ce, cm, stream_id, CallStreamEvent::Headers(headers))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    ce: ConfigEnvoyPtr,
    cm: ConfigModulePtr,
    stream_id: u64,
    data: *const EnvoyBuffer,
    data_count: usize,
    _end_stream: bool,
) {
    // SAFETY: the buffers Envoy passed to this hook.
    let data = unsafe { chunks_bytes(data, data_count) };
    config_call_stream_event("http_filter_config_http_stream_data", ce, cm, stream_id, CallStreamEvent::Data(data))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    ce: ConfigEnvoyPtr,
    cm: ConfigModulePtr,
    stream_id: u64,
    trailers: *const HttpHeader,
    trailers_size: usize,
) {
    // SAFETY: the trailers Envoy passed to this hook.
    let trailers = unsafe { header_pairs(trailers, trailers_size) };
    config_call_stream_event("http_filter_config_http_stream_trailers", ce, cm, stream_id, CallStreamEvent::Trailers(trailers))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(ce: ConfigEnvoyPtr, cm: ConfigModulePtr, stream_id: u64) {
    config_call_stream_event("http_filter_config_http_stream_complete", ce, cm, stream_id, CallStreamEvent::Complete)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    ce: ConfigEnvoyPtr,
    cm: ConfigModulePtr,
    stream_id: u64,
    _reason: u32,
) {
    config_call_stream_event("http_filter_config_http_stream_reset", ce, cm, stream_id, CallStreamEvent::Reset)
}

/// An HTTP callout's response as Envoy handed it to a hook (`None` unless it succeeded).
///
/// SAFETY (for callers): the pointers and counts are those Envoy passed to the current hook.
unsafe fn call_response(
    result: u32,
    headers: *const HttpHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) -> Option<crate::stream::CallResponse> {
    if result != abi::CALLOUT_SUCCESS {
        return None;
    }
    Some(crate::stream::CallResponse {
        // SAFETY: the headers and chunks Envoy passed to this hook (either may be NULL with a zero
        // count), each buffer valid for the hook.
        headers: unsafe { header_pairs(headers, headers_size) },
        // SAFETY: as above, for the body chunks.
        body: unsafe { chunks_bytes(body_chunks, body_chunks_size) },
        trailers: Vec::new(),
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    fe: FilterEnvoyPtr,
    fm: FilterModulePtr,
    callout_id: u64,
    result: u32,
    headers: *const HttpHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    with_stream("http_callout_done", fe, fm, (), (), |f, s| {
        // SAFETY: the arrays Envoy passed to this hook.
        let response = unsafe { call_response(result, headers, headers_size, body_chunks, body_chunks_size) };
        f.on_http_call_response(s, callout_id, response)
    })
}

/// A slice over `n` Envoy-owned items.
///
/// SAFETY (for callers): `ptr` points to `n` valid items for the current hook, or `n` is 0.
unsafe fn slice<'a, T>(ptr: *const T, n: usize) -> &'a [T] {
    if ptr.is_null() || n == 0 {
        &[]
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(ptr, n) }
    }
}

/// Copies `n` Envoy headers.
///
/// SAFETY (for callers): `ptr` and `n` are what Envoy passed to the current hook.
unsafe fn header_pairs(ptr: *const HttpHeader, n: usize) -> Vec<crate::stream::HeaderPair> {
    let buffer = |ptr, length| EnvoyBuffer { ptr, length };
    // SAFETY: guaranteed by the caller; each header's buffers are valid for the hook.
    unsafe { slice(ptr, n) }
        .iter()
        .map(|h| unsafe { (bytes(buffer(h.key_ptr, h.key_length)).to_vec(), bytes(buffer(h.value_ptr, h.value_length)).to_vec()) })
        .collect()
}

/// Concatenates `n` Envoy buffers.
///
/// SAFETY (for callers): `ptr` and `n` are what Envoy passed to the current hook.
unsafe fn chunks_bytes(ptr: *const EnvoyBuffer, n: usize) -> Vec<u8> {
    // SAFETY: guaranteed by the caller; each buffer is valid for the hook.
    unsafe { slice(ptr, n) }.iter().flat_map(|b| unsafe { bytes(*b) }.iter().copied()).collect()
}

fn call_stream_event(hook: &'static str, fe: FilterEnvoyPtr, fm: FilterModulePtr, stream_id: u64, event: CallStreamEvent) {
    with_stream(hook, fe, fm, (), (), |f, s| f.on_call_stream(s, stream_id, event))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    fe: FilterEnvoyPtr,
    fm: FilterModulePtr,
    stream_id: u64,
    headers: *const HttpHeader,
    headers_size: usize,
    _end_stream: bool,
) {
    // SAFETY: the headers Envoy passed to this hook.
    let headers = unsafe { header_pairs(headers, headers_size) };
    call_stream_event("http_stream_headers", fe, fm, stream_id, CallStreamEvent::Headers(headers))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    fe: FilterEnvoyPtr,
    fm: FilterModulePtr,
    stream_id: u64,
    data: *const EnvoyBuffer,
    data_count: usize,
    _end_stream: bool,
) {
    // SAFETY: the buffers Envoy passed to this hook, each valid for it.
    let data = unsafe { chunks_bytes(data, data_count) };
    call_stream_event("http_stream_data", fe, fm, stream_id, CallStreamEvent::Data(data))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    fe: FilterEnvoyPtr,
    fm: FilterModulePtr,
    stream_id: u64,
    trailers: *const HttpHeader,
    trailers_size: usize,
) {
    // SAFETY: the trailers Envoy passed to this hook.
    let trailers = unsafe { header_pairs(trailers, trailers_size) };
    call_stream_event("http_stream_trailers", fe, fm, stream_id, CallStreamEvent::Trailers(trailers))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(fe: FilterEnvoyPtr, fm: FilterModulePtr, stream_id: u64) {
    call_stream_event("http_stream_complete", fe, fm, stream_id, CallStreamEvent::Complete)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    fe: FilterEnvoyPtr,
    fm: FilterModulePtr,
    stream_id: u64,
    _reason: u32,
) {
    call_stream_event("http_stream_reset", fe, fm, stream_id, CallStreamEvent::Reset)
}

// Hooks Envoy requires but thaw does not use (per-stream scheduling, watermarks): each is a no-op;
// nothing thaw starts can trigger them.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(_fe: FilterEnvoyPtr, _fm: FilterModulePtr, _event_id: u64) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
) {
}
