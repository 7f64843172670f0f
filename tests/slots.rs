//! Instance slots (Wasmtime's pooling allocator, `max_live_instances`) running out is a clean,
//! counted refusal answered per `on_error`, never a crash; its own test binary, as the engine and
//! its slots are process-wide.

use std::sync::Arc;
use thaw::artifact::signature::PrivateKey;
use thaw::config::{Config, InstancePolicy, Policy, TenantConfig, TenantId, TenantSource, DEFAULT_CRASH_LOOP, DEFAULT_MEMORY_BUDGET_MB};
use thaw::engine::{self, Target};
use thaw::filter::{FilterConfig, StreamFilter, Verdict};
use thaw::stream::{HeaderKind, HeaderPair, HttpStream, LocalReply};
use thaw::telemetry::{Metric, NoStats, StatsSink};

#[derive(Clone, Default)]
struct Stream(std::rc::Rc<std::cell::RefCell<(Vec<Metric>, Vec<u32>)>>);

impl StatsSink for Stream {
    fn record(&mut self, metric: Metric, _: &TenantId, _: i64) {
        self.0.borrow_mut().0.push(metric);
    }
}

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
    let wasm = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
             (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate();
    let public = dir.path().join("k.pub");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let cwasm = engine::compile_engine(Target::host()).unwrap().precompile_module(&wasm).unwrap();
    let module = dir.path().join("m.cwasm");
    std::fs::write(&module, &cwasm).unwrap();
    std::fs::write(dir.path().join("m.cwasm.sig"), key.sign(&cwasm)).unwrap();
    let config = Config {
        trusted_keys: vec![public],
        tenant_from: TenantSource::Header("x-tenant-id".into()),
        unknown_tenant: Policy::Deny,
        on_error: Policy::Deny,
        allow_jit: false,
        memory_budget_mb: DEFAULT_MEMORY_BUDGET_MB,
        max_live_instances: 3,
        crash_loop: DEFAULT_CRASH_LOOP,
        snapshots: None,
        tenants: vec![TenantConfig {
            id: TenantId::try_from("t").unwrap(),
            module: module.clone(),
            signature: dir.path().join("m.cwasm.sig"),
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            root_id: String::new(),
            instances: InstancePolicy::DEFAULT,
            snapshot_source: None,
        }],
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
    assert_eq!(stream.0.borrow().1, vec![503]);
    assert!(stream.0.borrow().0.contains(&Metric::InstanceRefused));
    // Slots come back when streams end: the next request is served.
    for mut f in held.drain(..) {
        f.on_stream_complete(stream.clone());
    }
    let mut again = StreamFilter::new(Arc::clone(&config));
    assert_eq!(again.on_request_headers(stream.clone(), true), Verdict::Continue);
}
