//! Instance slots (Wasmtime's pooling allocator, `max_live_instances`) running out is a clean,
//! counted refusal answered per `on_error`, never a crash; its own test binary, as the engine and
//! its slots are process-wide.

mod common;

use std::sync::Arc;
use thaw::config::{Config, InstancePolicy, Policy, TenantId, TenantSource, DEFAULT_CRASH_LOOP, DEFAULT_MEMORY_BUDGET_MB};
use thaw::filter::{FilterConfig, StreamFilter, Verdict};
use thaw::stream::{Callouts, HeaderKind, HeaderPair, HttpStream, LocalReply};
use thaw::telemetry::{Metric, NoStats, StatsSink};

#[derive(Clone, Default)]
struct Stream(std::rc::Rc<std::cell::RefCell<(Vec<Metric>, Vec<u32>)>>);

impl StatsSink for Stream {
    fn record(&mut self, metric: Metric, _: &TenantId, _: i64) {
        self.0.borrow_mut().0.push(metric);
    }
}

impl Callouts for Stream {}

impl HttpStream for Stream {
    fn header_values(&self, _: HeaderKind, key: &[u8]) -> Option<Vec<Vec<u8>>> {
        Some(if key == b"x-tenant-id" { vec![b"t".to_vec()] } else { vec![] })
    }
    fn headers(&self, _: HeaderKind) -> Option<Vec<HeaderPair>> {
        Some(vec![(b"x-tenant-id".to_vec(), b"t".to_vec())])
    }
    fn set_header(&mut self, _: HeaderKind, _: &[u8], _: Option<&[u8]>) -> bool {
        true
    }
    fn add_header(&mut self, _: HeaderKind, _: &[u8], _: &[u8]) -> bool {
        true
    }
    fn send_local_reply(&mut self, reply: &LocalReply) {
        self.0.borrow_mut().1.push(reply.status);
    }
    fn route_tenant(&self) -> Option<TenantId> {
        None
    }
}

#[test]
fn running_out_of_instance_slots_is_a_counted_refusal() {
    let guest = common::pass_through_guest(1);
    let config = Config {
        trust: thaw::config::TrustSettings::keys(vec![guest.public.clone()]),
        on_artifact_failure: Default::default(),
        tenant_from: TenantSource::Header("x-tenant-id".into()),
        unknown_tenant: Policy::Deny,
        on_error: Policy::Deny,
        allow_jit: false,
        memory_budget_mb: DEFAULT_MEMORY_BUDGET_MB,
        max_live_instances: 3,
        crash_loop: DEFAULT_CRASH_LOOP,
        snapshots: None,
        tenants: vec![guest.tenant("t", Vec::new(), InstancePolicy::DEFAULT)],
    };
    let config = Arc::new(FilterConfig::load("slots", &config, &mut NoStats).unwrap());
    // Three streams in flight hold the three slots; the fourth finds none.
    let stream = Stream::default();
    let mut held: Vec<StreamFilter> = Vec::new();
    for _ in 0..3 {
        let mut filter = StreamFilter::new(Arc::clone(&config));
        assert_eq!(filter.on_request_headers(stream.clone(), true), Verdict::Continue);
        held.push(filter);
    }
    let mut fourth = StreamFilter::new(Arc::clone(&config));
    assert_eq!(fourth.on_request_headers(stream.clone(), true), Verdict::Stop);
    fourth.flush(&mut stream.clone());
    assert_eq!(stream.0.borrow().1, vec![503]);
    assert!(stream.0.borrow().0.contains(&Metric::InstanceRefused));
    // Slots come back when streams end: the next request is served.
    for mut f in held.drain(..) {
        f.on_stream_complete(stream.clone());
    }
    let mut again = StreamFilter::new(Arc::clone(&config));
    assert_eq!(again.on_request_headers(stream.clone(), true), Verdict::Continue);
}
