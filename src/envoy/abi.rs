//! The Envoy 1.40 dynamic-module ABI, declared by hand (Envoy's `abi.h` and Rust SDK are not
//! vendorable here). Types, status numbers, and the table of Envoy callbacks thaw uses.
//!
//! Envoy matches hooks by NAME only, so every signature here was checked against Envoy's header
//! (see ARCHITECTURE.md, "Envoy ABI"). Callbacks are resolved with `dlsym` at program init rather
//! than linked: the same rlib is also linked into the `thaw` CLI and the tests, where no Envoy
//! symbols exist, and a missing callback then fails module load with its name instead of a
//! `dlopen` error.

use std::ffi::{c_void, CStr};

/// The ABI version thaw was written against (`envoy_dynamic_module_on_program_init`).
pub const ABI_VERSION: &CStr = c"v0.2.0";

/// Envoy-owned bytes, valid until the hook returns (`envoy_dynamic_module_type_envoy_buffer`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

/// Module-owned bytes lent to Envoy for one call (`envoy_dynamic_module_type_module_buffer`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer { ptr: bytes.as_ptr(), length: bytes.len() }
    }
    pub const NULL: ModuleBuffer = ModuleBuffer { ptr: std::ptr::null(), length: 0 };
}

/// `envoy_dynamic_module_type_envoy_http_header` and `..._module_http_header` (same layout).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HttpHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

/// Envoy's per-filter-config pointer (CE).
pub type ConfigEnvoyPtr = *mut c_void;
/// thaw's per-filter-config pointer (CM).
pub type ConfigModulePtr = *const c_void;
/// Envoy's per-stream pointer (FE).
pub type FilterEnvoyPtr = *mut c_void;
/// thaw's per-stream pointer (FM).
pub type FilterModulePtr = *const c_void;
/// thaw's per-route config pointer.
pub type RouteConfigModulePtr = *const c_void;

pub mod header_type {
    pub const REQUEST_HEADER: u32 = 0;
    pub const REQUEST_TRAILER: u32 = 1;
    pub const RESPONSE_HEADER: u32 = 2;
    pub const RESPONSE_TRAILER: u32 = 3;
}

/// `envoy_dynamic_module_type_metrics_result_Success`.
pub const METRICS_SUCCESS: u32 = 0;

pub mod headers_status {
    pub const CONTINUE: u32 = 0;
    /// Not used by thaw (a guest's PAUSE stops the whole direction); the native benchmark module
    /// that shares these declarations uses it.
    #[allow(dead_code)]
    pub const STOP_ITERATION: u32 = 1;
    pub const STOP_ALL_ITERATION_AND_BUFFER: u32 = 3;
    pub const STOP_ALL_ITERATION_AND_WATERMARK: u32 = 4;
}

pub mod body_status {
    pub const CONTINUE: u32 = 0;
    pub const STOP_ITERATION_AND_BUFFER: u32 = 1;
    pub const STOP_ITERATION_AND_WATERMARK: u32 = 2;
    pub const STOP_ITERATION_NO_BUFFER: u32 = 3;
}

pub mod trailers_status {
    pub const CONTINUE: u32 = 0;
    pub const STOP_ITERATION: u32 = 1;
}

/// `envoy_dynamic_module_type_http_body_type`.
pub mod body_type {
    pub const RECEIVED_REQUEST_BODY: u32 = 0;
    pub const BUFFERED_REQUEST_BODY: u32 = 1;
    pub const RECEIVED_RESPONSE_BODY: u32 = 2;
    pub const BUFFERED_RESPONSE_BODY: u32 = 3;
}

/// `envoy_dynamic_module_type_http_callout_init_result`.
pub mod callout_init {
    pub const SUCCESS: u32 = 0;
    pub const MISSING_REQUIRED_HEADERS: u32 = 1;
    pub const CLUSTER_NOT_FOUND: u32 = 2;
}

/// `envoy_dynamic_module_type_http_callout_result_Success`.
pub const CALLOUT_SUCCESS: u32 = 0;

/// `envoy_dynamic_module_type_http_filter_stream_reset_reason_LocalReset`.
pub const RESET_LOCAL: u32 = 0;

/// Looks up `envoy_dynamic_module_callback_<name>` in the process (Envoy's executable exports them).
fn lookup(name: &str) -> *mut c_void {
    let symbol = format!("envoy_dynamic_module_callback_{name}\0");
    // SAFETY: `symbol` is NUL-terminated; dlsym with RTLD_DEFAULT only reads it.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, symbol.as_ptr().cast()) }
}

macro_rules! callbacks {
    (
        required { $( $field:ident : fn($($arg:ty),*) $(-> $ret:ty)? ;)* }
        optional { $( $opt:ident : fn($($oarg:ty),*) $(-> $oret:ty)? ;)* }
    ) => {
        /// Envoy callbacks thaw calls, resolved by name at program init. Optional ones may be
        /// missing in some Envoy builds; the features that need them answer UNIMPLEMENTED then.
        pub struct Callbacks {
            $( pub $field: unsafe extern "C" fn($($arg),*) $(-> $ret)?, )*
            $( pub $opt: Option<unsafe extern "C" fn($($oarg),*) $(-> $oret)?>, )*
        }

        impl Callbacks {
            pub fn resolve() -> Result<Callbacks, String> {
                Ok(Callbacks {
                    $( $field: {
                        let symbol = lookup(stringify!($field));
                        if symbol.is_null() {
                            return Err(format!("Envoy does not export envoy_dynamic_module_callback_{}", stringify!($field)));
                        }
                        // SAFETY: the symbol is Envoy's callback of this name, whose C signature is
                        // the one declared for this field (checked against Envoy's abi.h).
                        unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) $(-> $ret)?>(symbol) }
                    }, )*
                    $( $opt: {
                        let symbol = lookup(stringify!($opt));
                        // SAFETY: as above, when present.
                        (!symbol.is_null()).then(|| unsafe {
                            std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($oarg),*) $(-> $oret)?>(symbol)
                        })
                    }, )*
                })
            }
        }
    };
}

callbacks! {
  required {
    log: fn(u32, ModuleBuffer);
    log_enabled: fn(u32) -> bool;
    http_get_header: fn(FilterEnvoyPtr, u32, ModuleBuffer, *mut EnvoyBuffer, usize, *mut usize) -> bool;
    http_get_headers_size: fn(FilterEnvoyPtr, u32) -> usize;
    http_get_headers: fn(FilterEnvoyPtr, u32, *mut HttpHeader) -> bool;
    http_set_header: fn(FilterEnvoyPtr, u32, ModuleBuffer, ModuleBuffer) -> bool;
    http_add_header: fn(FilterEnvoyPtr, u32, ModuleBuffer, ModuleBuffer) -> bool;
    http_send_response: fn(FilterEnvoyPtr, u32, *mut HttpHeader, usize, ModuleBuffer, ModuleBuffer);
    get_most_specific_route_config: fn(FilterEnvoyPtr) -> RouteConfigModulePtr;
    http_filter_config_define_counter: fn(ConfigEnvoyPtr, ModuleBuffer, *const ModuleBuffer, usize, *mut usize) -> u32;
    http_filter_config_define_gauge: fn(ConfigEnvoyPtr, ModuleBuffer, *const ModuleBuffer, usize, *mut usize) -> u32;
    http_filter_config_define_histogram: fn(ConfigEnvoyPtr, ModuleBuffer, *const ModuleBuffer, usize, *mut usize) -> u32;
    http_filter_increment_counter: fn(FilterEnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32;
    http_filter_increment_gauge: fn(FilterEnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32;
    http_filter_decrement_gauge: fn(FilterEnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32;
    http_filter_set_gauge: fn(FilterEnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32;
    http_filter_record_histogram_value: fn(FilterEnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32;
    http_filter_config_increment_counter: fn(ConfigEnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32;
    http_filter_config_record_histogram_value: fn(ConfigEnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32;
    http_filter_config_set_gauge: fn(ConfigEnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32;
    http_get_body_size: fn(FilterEnvoyPtr, u32) -> usize;
    http_get_body_chunks_size: fn(FilterEnvoyPtr, u32) -> usize;
    http_get_body_chunks: fn(FilterEnvoyPtr, u32, *mut EnvoyBuffer) -> bool;
    http_append_body: fn(FilterEnvoyPtr, u32, ModuleBuffer) -> bool;
    http_drain_body: fn(FilterEnvoyPtr, u32, usize) -> bool;
    http_filter_continue_decoding: fn(FilterEnvoyPtr);
    http_filter_continue_encoding: fn(FilterEnvoyPtr);
    http_filter_get_attribute_string: fn(FilterEnvoyPtr, u32, *mut EnvoyBuffer) -> bool;
    http_filter_get_attribute_int: fn(FilterEnvoyPtr, u32, *mut u64) -> bool;
    http_filter_get_attribute_bool: fn(FilterEnvoyPtr, u32, *mut bool) -> bool;
    http_filter_http_callout: fn(FilterEnvoyPtr, *mut u64, ModuleBuffer, *mut HttpHeader, usize, ModuleBuffer, u64) -> u32;
  }
  optional {
    http_filter_reset_stream: fn(FilterEnvoyPtr, u32, ModuleBuffer);
    http_filter_config_scheduler_new: fn(ConfigEnvoyPtr) -> *mut c_void;
    http_filter_config_scheduler_commit: fn(*mut c_void, u64);
    http_filter_config_scheduler_delete: fn(*mut c_void);
    http_filter_config_http_callout: fn(ConfigEnvoyPtr, *mut u64, ModuleBuffer, *mut HttpHeader, usize, ModuleBuffer, u64) -> u32;
    http_filter_start_http_stream: fn(FilterEnvoyPtr, *mut u64, ModuleBuffer, *mut HttpHeader, usize, ModuleBuffer, bool, u64) -> u32;
    http_filter_reset_http_stream: fn(FilterEnvoyPtr, u64);
    http_stream_send_data: fn(FilterEnvoyPtr, u64, ModuleBuffer, bool) -> bool;
    http_filter_config_start_http_stream: fn(ConfigEnvoyPtr, *mut u64, ModuleBuffer, *mut HttpHeader, usize, ModuleBuffer, bool, u64) -> u32;
    http_filter_config_stream_send_data: fn(ConfigEnvoyPtr, u64, ModuleBuffer, bool) -> bool;
    http_filter_config_reset_http_stream: fn(ConfigEnvoyPtr, u64);
    http_get_metadata_string: fn(FilterEnvoyPtr, u32, ModuleBuffer, ModuleBuffer, *mut EnvoyBuffer) -> bool;
    http_get_metadata_number: fn(FilterEnvoyPtr, u32, ModuleBuffer, ModuleBuffer, *mut f64) -> bool;
    http_get_metadata_bool: fn(FilterEnvoyPtr, u32, ModuleBuffer, ModuleBuffer, *mut bool) -> bool;
    http_get_filter_state_bytes: fn(FilterEnvoyPtr, ModuleBuffer, *mut EnvoyBuffer) -> bool;
  }
}
