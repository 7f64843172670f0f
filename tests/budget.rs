//! The process-wide memory budget (its own test binary: the budget is process-wide state).
//! Many pooled tenants on one worker with a budget for only a few instances stay within it: the
//! least recently used tenants' idle instances are evicted, and every request is still served.
//! And 10,000 tenants in one config load and serve.

mod common;

use common::FakeStream;
use std::sync::Arc;
use thaw::config::{Config, InstancePolicy, Isolation, TenantConfig};
use thaw::filter::{FilterConfig, StreamFilter, Verdict};
use thaw::proxy_wasm::host;
use thaw::telemetry::{Metric, NoStats};

/// The budget and live memory are process-wide: these tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn many_tenants_stay_within_a_small_budget() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // A guest with 1 MiB of initial memory (16 pages) that lets every request through.
    let guest = common::pass_through_guest(16);
    let pooled = InstancePolicy { isolation: Isolation::Pooled, ..InstancePolicy::DEFAULT };
    let tenants: Vec<TenantConfig> = (0..40).map(|i| guest.tenant(&format!("t{i}"), Vec::new(), pooled)).collect();
    let budget_mb = 8;
    let config = Config { memory_budget_mb: budget_mb, ..common::config(vec![guest.public.clone()], tenants) };
    let config = Arc::new(FilterConfig::load("budget", &config, &mut NoStats).unwrap());
    let stream = FakeStream::default();
    for round in 0..3 {
        for i in 0..40 {
            stream.set_request(&[("x-tenant-id", &format!("t{i}"))]);
            let mut filter = StreamFilter::new(Arc::clone(&config));
            assert_eq!(filter.on_request_headers(stream.clone(), true), Verdict::Continue, "round {round} tenant t{i}");
            filter.on_stream_complete(stream.clone());
            assert!(host::live_bytes() <= budget_mb as usize * 1024 * 1024, "live {} bytes", host::live_bytes());
        }
    }
    let count = |m: Metric| stream.metric_sum(m);
    assert!(count(Metric::InstanceEvicted) > 0, "the budget never forced an eviction");
    assert_eq!(count(Metric::InstanceRefused), 0);
    // Idle instances never exceed what the budget holds.
    assert!(count(Metric::PoolSize) <= budget_mb as i64);
}

#[test]
fn ten_thousand_tenants_load_and_serve() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // One artifact for all: it is read, verified, loaded and linked once; every tenant gets its
    // own plugin configuration, pool key and crash window.
    let guest = common::pass_through_guest(1);
    let pooled = InstancePolicy { isolation: Isolation::Pooled, ..InstancePolicy::DEFAULT };
    let tenants: Vec<TenantConfig> =
        (0..10_000).map(|i| guest.tenant(&format!("tenant-{i}"), format!("{{\"n\":{i}}}").into_bytes(), pooled)).collect();
    let config = Config { memory_budget_mb: 64, ..common::config(vec![guest.public.clone()], tenants) };
    let config = Arc::new(FilterConfig::load("many", &config, &mut NoStats).unwrap());
    assert_eq!(config.tenants.len(), 10_000);
    let stream = FakeStream::default();
    for i in (0..10_000).step_by(97) {
        stream.set_request(&[("x-tenant-id", &format!("tenant-{i}"))]);
        let mut filter = StreamFilter::new(Arc::clone(&config));
        assert_eq!(filter.on_request_headers(stream.clone(), true), Verdict::Continue, "tenant-{i}");
        filter.on_stream_complete(stream.clone());
    }
    assert!(host::live_bytes() <= 64 << 20);
}
