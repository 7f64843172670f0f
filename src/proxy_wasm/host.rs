//! The host-side state of one guest instance (the `T` of its `Store<T>`): whose instance it is, the
//! stream bound to the current call, and the effects the guest asked for during that call.
//!
//! Effects that re-enter Envoy (a local reply) are queued here during a guest call and performed by
//! the filter driver after the call returns.

use super::memory::GuestMemory;
use crate::config::TenantId;
use crate::stream::{HttpStream, LocalReply};
use std::sync::Arc;

/// Something the guest asked for that the driver performs after the guest call returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    LocalReply(LocalReply),
}

pub struct HostState {
    pub tenant: TenantId,
    pub plugin_config: Arc<[u8]>,
    pub vm_config: Arc<[u8]>,
    pub memory: Option<GuestMemory>,
    /// The stream the current guest call is about; `None` during init and root-context calls.
    pub stream: Option<Box<dyn HttpStream>>,
    pub effects: Vec<Effect>,
    /// The context the guest last made effective (`proxy_set_effective_context`).
    pub effective_context: u32,
}

impl HostState {
    pub fn new(tenant: TenantId, plugin_config: Arc<[u8]>, vm_config: Arc<[u8]>) -> HostState {
        HostState {
            tenant,
            plugin_config,
            vm_config,
            memory: None,
            stream: None,
            effects: Vec::new(),
            effective_context: 0,
        }
    }
}
