//! The process-wide memory budget (its own test binary: the budget is process-wide state).
//! Many pooled tenants on one worker with a budget for only a few instances stay within it: the
//! least recently used tenants' idle instances are evicted, and every request is still served.
//! And 10,000 tenants in one config load and serve.

mod common;

use std::sync::Arc;
use thaw::config::{Config, InstancePolicy, Isolation, Policy, TenantConfig, TenantId, TenantSource, DEFAULT_CRASH_LOOP};
use thaw::filter::{FilterConfig, StreamFilter, Verdict};
use thaw::proxy_wasm::host;
use thaw::stream::{Callouts, HeaderKind, HeaderPair, HttpStream, LocalReply};
use thaw::telemetry::{Metric, NoStats, StatsSink};

/// The stream's request headers, and the metrics recorded on it.
type Seen = (Vec<HeaderPair>, Vec<(Metric, i64)>);

#[derive(Clone)]
struct Stream(std::rc::Rc<std::cell::RefCell<Seen>>);

impl StatsSink for Stream {
    fn record(&mut self, metric: Metric, _: &TenantId, value: i64) {
        self.0.borrow_mut().1.push((metric, value));
    }
}

impl Callouts for Stream {}

impl HttpStream for Stream {
    fn header_values(&self, _: HeaderKind, key: &[u8]) -> Option<Vec<Vec<u8>>> {
        Some(self.0.borrow().0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect())
    }
    fn headers(&self, _: HeaderKind) -> Option<Vec<HeaderPair>> {
        Some(self.0.borrow().0.clone())
    }
    fn set_header(&mut self, _: HeaderKind, _: &[u8], _: Option<&[u8]>) -> bool {
        true
    }
    fn add_header(&mut self, _: HeaderKind, _: &[u8], _: &[u8]) -> bool {
        true
    }
    fn send_local_reply(&mut self, _: &LocalReply) {}
    fn route_tenant(&self) -> Option<TenantId> {
        None
    }
}

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
    let config = Config {
        trust: thaw::config::TrustSettings::keys(vec![guest.public.clone()]),
        on_artifact_failure: Default::default(),
        tenant_from: TenantSource::Header("x-tenant-id".into()),
        unknown_tenant: Policy::Deny,
        on_error: Policy::Deny,
        allow_jit: false,
        memory_budget_mb: budget_mb,
        max_live_instances: thaw::config::DEFAULT_MAX_LIVE_INSTANCES,
        crash_loop: DEFAULT_CRASH_LOOP,
        snapshots: None,
        tenants,
    };
    let config = Arc::new(FilterConfig::load("budget", &config, &mut NoStats).unwrap());
    let stream = Stream(Default::default());
    for round in 0..3 {
        for i in 0..40 {
            stream.0.borrow_mut().0 = vec![(b"x-tenant-id".to_vec(), format!("t{i}").into_bytes())];
            let mut filter = StreamFilter::new(Arc::clone(&config));
            assert_eq!(filter.on_request_headers(stream.clone(), true), Verdict::Continue, "round {round} tenant t{i}");
            filter.on_stream_complete(stream.clone());
            assert!(host::live_bytes() <= budget_mb as usize * 1024 * 1024, "live {} bytes", host::live_bytes());
        }
    }
    let metrics = &stream.0.borrow().1;
    let count = |m: Metric| metrics.iter().filter(|(x, _)| *x == m).map(|(_, v)| v).sum::<i64>();
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
    let config = Config {
        trust: thaw::config::TrustSettings::keys(vec![guest.public.clone()]),
        on_artifact_failure: Default::default(),
        tenant_from: TenantSource::Header("x-tenant-id".into()),
        unknown_tenant: Policy::Deny,
        on_error: Policy::Deny,
        allow_jit: false,
        memory_budget_mb: 64,
        max_live_instances: thaw::config::DEFAULT_MAX_LIVE_INSTANCES,
        crash_loop: DEFAULT_CRASH_LOOP,
        snapshots: None,
        tenants,
    };
    let config = Arc::new(FilterConfig::load("many", &config, &mut NoStats).unwrap());
    assert_eq!(config.tenants.len(), 10_000);
    let stream = Stream(Default::default());
    for i in (0..10_000).step_by(97) {
        stream.0.borrow_mut().0 = vec![(b"x-tenant-id".to_vec(), format!("tenant-{i}").into_bytes())];
        let mut filter = StreamFilter::new(Arc::clone(&config));
        assert_eq!(filter.on_request_headers(stream.clone(), true), Verdict::Continue, "tenant-{i}");
        filter.on_stream_complete(stream.clone());
    }
    assert!(host::live_bytes() <= 64 << 20);
}
