//! Everything that touches Envoy's raw pointers: the hand-declared ABI ([`abi`]), the exported hooks
//! ([`hooks`]: thin shims that guard panics and call safe code), and safe wrappers over Envoy's
//! callbacks ([`callbacks`]). No other module of the crate uses `unsafe` for Envoy.

pub mod abi;
pub mod callbacks;
pub mod hooks;
