//! The proxy-wasm 0.2.1 host: what a guest filter sees of the proxy.
//!
//! [`Plugin`] is a tenant's loaded program (module linked against the host functions, shared by
//! every worker); [`GuestInstance`] is one live instance of it with its own store, driven through
//! the proxy-wasm callbacks, each guest call with its own context (`host::CallContext`: the
//! stream or the root's callouts, the phase, the call response), installed for that call only.
//! The calls an instance has out, stream's and root's alike, are in one registry (`host::Calls`).
//! Hostcalls live in [`hostcalls`], guest memory access in [`memory`],
//! the header-map codec in [`header_map`], numbers and limits in [`abi`], property paths in
//! [`properties`], process-wide shared data and queues in [`shared`].

pub mod abi;
pub mod grpc;
pub mod header_map;
pub mod host;
pub mod hostcalls;
pub mod init_calls;
pub mod instance;
pub mod memory;
pub mod properties;
pub mod shared;

pub use abi::Action;
pub use host::{Effect, Subject};
pub use instance::{FailureKind, GuestError, GuestInstance, HttpCallback, Linked, Plugin};
