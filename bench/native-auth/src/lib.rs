//! Benchmark baseline ("native"): the example auth filter's check written directly against Envoy's
//! dynamic-module ABI, no Wasm: the physical bound for any filter in this position.
//!
//! Config (`filter_config` as a StringValue): `token=subject;token=subject;...`. A missing, malformed
//! or unknown `authorization: Bearer <token>` gets a 403; a known one sets `x-auth-subject`.
//! Uses thaw's own hand-declared ABI (`src/envoy/abi.rs`), so the declaration lives in one place.

#[path = "../../../src/envoy/abi.rs"]
#[allow(dead_code)]
mod abi;

use abi::{Callbacks, ConfigEnvoyPtr, ConfigModulePtr, EnvoyBuffer, FilterEnvoyPtr, FilterModulePtr, HttpHeader, ModuleBuffer};
use std::collections::HashMap;
use std::ffi::c_char;
use std::sync::OnceLock;

static CALLBACKS: OnceLock<Callbacks> = OnceLock::new();

struct Config {
    tokens: HashMap<Vec<u8>, Vec<u8>>,
}

unsafe fn bytes<'a>(b: EnvoyBuffer) -> &'a [u8] {
    if b.ptr.is_null() {
        &[]
    } else {
        // SAFETY: Envoy-owned buffer valid for the hook.
        unsafe { std::slice::from_raw_parts(b.ptr, b.length) }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    match Callbacks::resolve() {
        Ok(cb) => {
            let _ = CALLBACKS.set(cb);
            abi::ABI_VERSION.as_ptr()
        }
        Err(_) => std::ptr::null(),
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(_ce: ConfigEnvoyPtr, _name: EnvoyBuffer, config: EnvoyBuffer) -> ConfigModulePtr {
    // SAFETY: Envoy's buffer for this hook.
    let text = String::from_utf8_lossy(unsafe { bytes(config) }).into_owned();
    let tokens = text
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(t, s)| (t.trim().as_bytes().to_vec(), s.trim().as_bytes().to_vec()))
        .collect();
    Box::into_raw(Box::new(Config { tokens })) as ConfigModulePtr
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ConfigModulePtr) {
    // SAFETY: from Box::into_raw above, destroyed once.
    drop(unsafe { Box::from_raw(config as *mut Config) });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(config: ConfigModulePtr, _fe: FilterEnvoyPtr) -> FilterModulePtr {
    config
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(fe: FilterEnvoyPtr, fm: FilterModulePtr, _eos: bool) -> u32 {
    let cb = CALLBACKS.get().expect("resolved at program init");
    // SAFETY: `fm` is the config pointer (alive while filters exist).
    let config = unsafe { &*(fm as *const Config) };
    let mut out = EnvoyBuffer { ptr: std::ptr::null(), length: 0 };
    let mut count = 0usize;
    let key = b"authorization";
    // SAFETY: live stream; out-pointers are locals.
    let found = unsafe { (cb.http_get_header)(fe, abi::header_type::REQUEST_HEADER, ModuleBuffer::of(key), &mut out, 0, &mut count) };
    // SAFETY: Envoy's buffer for this hook.
    let value = if found && count > 0 { unsafe { bytes(out) } } else { &[] };
    let subject = value.strip_prefix(b"Bearer ").and_then(|t| config.tokens.get(t.trim_ascii()));
    match subject {
        Some(subject) => {
            // SAFETY: live stream; buffers borrowed for the call.
            unsafe {
                (cb.http_set_header)(fe, abi::header_type::REQUEST_HEADER, ModuleBuffer::of(b"x-auth-subject"), ModuleBuffer::of(subject))
            };
            abi::headers_status::CONTINUE
        }
        None => {
            let body = b"forbidden\n";
            // SAFETY: live stream; buffers borrowed for the call.
            unsafe {
                (cb.http_send_response)(fe, 403, std::ptr::null_mut::<HttpHeader>(), 0, ModuleBuffer::of(body), ModuleBuffer::of(b"native_auth"))
            };
            abi::headers_status::STOP_ITERATION
        }
    }
}

macro_rules! continue_hooks {
    ($($name:ident($($arg:ty),*) -> $ret:ty = $value:expr;)*) => {
        $( #[no_mangle] pub extern "C" fn $name(_: FilterEnvoyPtr, _: FilterModulePtr $(, _: $arg)*) -> $ret { $value } )*
    };
}

continue_hooks! {
    envoy_dynamic_module_on_http_filter_request_body(bool) -> u32 = 0;
    envoy_dynamic_module_on_http_filter_request_trailers() -> u32 = 0;
    envoy_dynamic_module_on_http_filter_response_headers(bool) -> u32 = 0;
    envoy_dynamic_module_on_http_filter_response_body(bool) -> u32 = 0;
    envoy_dynamic_module_on_http_filter_response_trailers() -> u32 = 0;
    envoy_dynamic_module_on_http_filter_stream_complete() -> () = ();
    envoy_dynamic_module_on_http_filter_http_callout_done(u64, u32, *const HttpHeader, usize, *const EnvoyBuffer, usize) -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_headers(u64, *const HttpHeader, usize, bool) -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_data(u64, *const EnvoyBuffer, usize, bool) -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_trailers(u64, *const HttpHeader, usize) -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_complete(u64) -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_reset(u64, u32) -> () = ();
    envoy_dynamic_module_on_http_filter_scheduled(u64) -> () = ();
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark() -> () = ();
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark() -> () = ();
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_fm: FilterModulePtr) {}
