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
    pub const STOP_ITERATION: u32 = 1;
}

pub mod body_status {
    pub const CONTINUE: u32 = 0;
}

pub mod trailers_status {
    pub const CONTINUE: u32 = 0;
}

macro_rules! callbacks {
    ($( $field:ident : fn($($arg:ty),*) $(-> $ret:ty)? ;)*) => {
        /// Envoy callbacks thaw calls, resolved by name at program init.
        pub struct Callbacks {
            $( pub $field: unsafe extern "C" fn($($arg),*) $(-> $ret)?, )*
        }

        impl Callbacks {
            /// Looks every callback up in the process (Envoy's executable exports them).
            pub fn resolve() -> Result<Callbacks, String> {
                Ok(Callbacks {
                    $( $field: {
                        let name = concat!("envoy_dynamic_module_callback_", stringify!($field), "\0");
                        // SAFETY: `name` is NUL-terminated; dlsym with RTLD_DEFAULT only reads it.
                        let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr().cast()) };
                        if symbol.is_null() {
                            return Err(format!("Envoy does not export {}", name.trim_end_matches('\0')));
                        }
                        // SAFETY: the symbol is Envoy's callback of this name, whose C signature is
                        // the one declared for this field (checked against Envoy's abi.h).
                        unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) $(-> $ret)?>(symbol) }
                    }, )*
                })
            }
        }
    };
}

callbacks! {
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
    http_filter_record_histogram_value: fn(FilterEnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32;
    http_filter_config_increment_counter: fn(ConfigEnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32;
    http_filter_config_record_histogram_value: fn(ConfigEnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32;
}
