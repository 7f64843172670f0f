//! thaw: per-tenant proxy-wasm security filters for Envoy, from signed AOT-compiled artifacts, on Wasmtime.
//!
//! Map (see ARCHITECTURE.md): Envoy loads this cdylib and calls the hooks in [`envoy`]; the filter
//! config is parsed by [`config`] and loaded by [`filter`] (artifacts verified by [`artifact`] under
//! [`trust`], deserialized by [`native`]); each request is driven by [`filter::StreamFilter`], which
//! runs the tenant's guest through the proxy-wasm host in [`proxy_wasm`], taking instances from
//! [`pool`]. The `thaw` CLI (the binary: `src/cli.rs`, and `src/oci` for registries, kept out of
//! this library so no HTTP or TLS code is linked into Envoy's process) builds artifacts with the
//! same engine settings ([`engine`]).
//!
//! `unsafe` has two homes, fenced by the compiler: the Envoy FFI layer ([`envoy`]) and the one
//! deserialize call ([`native`]). Everywhere else it is a compile error, and every unsafe block
//! carries its `// SAFETY:` reasoning (clippy's `undocumented_unsafe_blocks`).
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod artifact;
pub mod config;
pub mod dry_run;
pub mod engine;
#[allow(unsafe_code)]
pub mod envoy;
pub mod filter;
pub mod load_cache;
pub mod memory_stream;
pub mod native;
pub mod pool;
pub mod proxy_wasm;
pub mod reply_view;
pub mod root;
pub mod snapshot;
pub mod stream;
pub mod telemetry;
pub mod trust;
