//! Per-worker, per-tenant pools of idle guest instances.
//!
//! Each Envoy worker thread owns its pools (`thread_local!`, no lock on the request path); only the
//! `Plugin` (engine, module, `InstancePre`) is shared across workers. An instance serves one stream
//! at a time and only ever its own tenant: pools are keyed by the plugin's unique id, which also
//! keeps a reloaded config from reusing instances of the old one. Failed instances are never
//! returned. Isolation modes, retirement and budgets arrive with the pools issue.

use crate::proxy_wasm::{GuestError, GuestInstance, Plugin};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// Idle instances kept per tenant per worker.
pub const MAX_IDLE_PER_TENANT: usize = 8;

struct TenantPool {
    plugin: Weak<Plugin>,
    idle: Vec<GuestInstance>,
}

thread_local! {
    static POOLS: RefCell<HashMap<u64, TenantPool>> = RefCell::new(HashMap::new());
}

/// An idle instance of `plugin` from this worker's pool, or a freshly initialized one.
pub fn take(plugin: &Arc<Plugin>) -> Result<GuestInstance, GuestError> {
    let pooled = POOLS.with(|pools| pools.borrow_mut().get_mut(&plugin.uid).and_then(|p| p.idle.pop()));
    match pooled {
        Some(instance) => Ok(instance),
        None => plugin.instantiate(),
    }
}

/// Returns a healthy instance to this worker's pool (dropped if the pool is full or it failed).
pub fn give_back(plugin: &Arc<Plugin>, instance: GuestInstance) {
    if !instance.is_healthy() {
        return;
    }
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        if !pools.contains_key(&plugin.uid) {
            // A new plugin on this worker: forget pools of plugins whose config is gone.
            pools.retain(|_, p| p.plugin.strong_count() > 0);
        }
        let pool = pools
            .entry(plugin.uid)
            .or_insert_with(|| TenantPool { plugin: Arc::downgrade(plugin), idle: Vec::new() });
        if pool.idle.len() < MAX_IDLE_PER_TENANT {
            pool.idle.push(instance);
        }
    });
}
