//! Shared by the host tests: [`FakeStream`], the one fake of the safe `HttpStream` interface (an
//! Envoy stream without Envoy), [`SignedGuest`], a real, signed artifact on disk with no
//! particular guest logic, and [`config`], the filter config the tests start from.
#![allow(dead_code)]

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use thaw::config::{Config, InstancePolicy, Policy, TenantConfig, TenantId, TenantSource, TrustSettings};
use thaw::engine::{self, Target};
use thaw::stream::{Callouts, HeaderKind, HeaderPair, HttpStream, LocalReply};
use thaw::telemetry::{Metric, StatsSink};
use thaw::trust::signature::PrivateKey;

/// What a [`FakeStream`] holds and saw.
#[derive(Default)]
pub struct Seen {
    /// The request headers (the only header map this stream has).
    pub request: Vec<HeaderPair>,
    /// The local replies sent on it, in order.
    pub replies: Vec<LocalReply>,
    /// Every metric recorded on it: (metric, tenant, value).
    pub metrics: Vec<(Metric, String, i64)>,
}

/// A fake Envoy stream: request headers in a Vec (case-insensitive keys, as Envoy's), no other
/// header map, no body, no route tenant, no callouts; local replies and metrics recorded. Clones
/// share one state, as handles of one Envoy stream do. A host bug on demand: it "panics" when asked
/// for header `x-panic`.
#[derive(Clone, Default)]
pub struct FakeStream(pub Rc<RefCell<Seen>>);

impl FakeStream {
    /// A stream whose request has `headers`.
    pub fn with(headers: &[(&str, &str)]) -> FakeStream {
        let fake = FakeStream::default();
        fake.set_request(headers);
        fake
    }

    /// Replaces the request headers (a next request on the same fake).
    pub fn set_request(&self, headers: &[(&str, &str)]) {
        self.0.borrow_mut().request = headers.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
    }

    /// The first value of request header `key` (exact name).
    pub fn header(&self, key: &str) -> Option<String> {
        self.0.borrow().request.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| String::from_utf8_lossy(v).into())
    }

    pub fn replies(&self) -> Vec<LocalReply> {
        self.0.borrow().replies.clone()
    }

    /// The status of each local reply, in order.
    pub fn reply_statuses(&self) -> Vec<u32> {
        self.0.borrow().replies.iter().map(|r| r.status).collect()
    }

    /// Sum of what was recorded for `metric` and `tenant`.
    pub fn metric(&self, metric: Metric, tenant: &str) -> i64 {
        self.0.borrow().metrics.iter().filter(|(m, t, _)| *m == metric && t == tenant).map(|(_, _, v)| v).sum()
    }

    /// Sum of what was recorded for `metric`, any tenant.
    pub fn metric_sum(&self, metric: Metric) -> i64 {
        self.0.borrow().metrics.iter().filter(|(m, _, _)| *m == metric).map(|(_, _, v)| v).sum()
    }

    /// How many times `metric` was recorded, any tenant, any value.
    pub fn records(&self, metric: Metric) -> usize {
        self.0.borrow().metrics.iter().filter(|(m, _, _)| *m == metric).count()
    }

    /// How many times `metric` was recorded for `tenant`.
    pub fn records_for(&self, metric: Metric, tenant: &str) -> usize {
        self.0.borrow().metrics.iter().filter(|(m, t, _)| *m == metric && t == tenant).count()
    }
}

impl StatsSink for FakeStream {
    fn record(&mut self, metric: Metric, tenant: &TenantId, value: i64) {
        self.0.borrow_mut().metrics.push((metric, tenant.to_string(), value));
    }
}

/// No callouts: every call is `CallError::Unavailable` (the trait's defaults).
impl Callouts for FakeStream {}

impl HttpStream for FakeStream {
    fn header_values(&self, kind: HeaderKind, key: &[u8]) -> Option<Vec<Vec<u8>>> {
        assert!(key != b"x-panic", "the fake stream panics when asked for x-panic");
        (kind == HeaderKind::RequestHeaders)
            .then(|| self.0.borrow().request.iter().filter(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.clone()).collect())
    }

    fn headers(&self, kind: HeaderKind) -> Option<Vec<HeaderPair>> {
        (kind == HeaderKind::RequestHeaders).then(|| self.0.borrow().request.clone())
    }

    fn set_header(&mut self, kind: HeaderKind, key: &[u8], value: Option<&[u8]>) -> bool {
        if kind != HeaderKind::RequestHeaders {
            return false;
        }
        let mut seen = self.0.borrow_mut();
        seen.request.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        if let Some(v) = value {
            seen.request.push((key.to_vec(), v.to_vec()));
        }
        true
    }

    fn add_header(&mut self, kind: HeaderKind, key: &[u8], value: &[u8]) -> bool {
        if kind != HeaderKind::RequestHeaders {
            return false;
        }
        self.0.borrow_mut().request.push((key.to_vec(), value.to_vec()));
        true
    }

    fn send_local_reply(&mut self, reply: &LocalReply) {
        self.0.borrow_mut().replies.push(reply.clone());
    }

    fn route_tenant(&self) -> Option<TenantId> {
        None
    }
}

/// The filter config the host tests start from (each overrides what it tests): `tenants` under
/// `keys`, the tenant named by `x-tenant-id`, unknown tenants and guest failures denied, the
/// default budget, slots and crash loop, no cold-start limit, no snapshots.
pub fn config(keys: Vec<PathBuf>, tenants: Vec<TenantConfig>) -> Config {
    Config {
        trust: TrustSettings::keys(keys),
        on_artifact_failure: Default::default(),
        tenant_from: TenantSource::Header("x-tenant-id".into()),
        unknown_tenant: Policy::Deny,
        on_error: Policy::Deny,
        allow_jit: false,
        memory_budget_mb: thaw::config::DEFAULT_MEMORY_BUDGET_MB,
        max_live_instances: thaw::config::DEFAULT_MAX_LIVE_INSTANCES,
        crash_loop: thaw::config::DEFAULT_CRASH_LOOP,
        cold_starts: None,
        snapshots: None,
        tenants,
    }
}

/// A pass-through guest compiled with thaw's engine and signed, with its trusted public key.
pub struct SignedGuest {
    pub dir: tempfile::TempDir,
    pub public: PathBuf,
    pub module: PathBuf,
    pub signature: PathBuf,
}

/// A guest with `pages` pages of initial memory that lets every request through.
pub fn pass_through_guest(pages: u32) -> SignedGuest {
    let wasm = wat::parse_str(format!(
        r#"(module (memory (export "memory") {pages}) (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
             (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0)))"#
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate();
    let public = dir.path().join("k.pub");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let cwasm = engine::compile_engine(Target::host()).unwrap().precompile_module(&wasm).unwrap();
    let module = dir.path().join("m.cwasm");
    let signature = dir.path().join("m.cwasm.sig");
    std::fs::write(&module, &cwasm).unwrap();
    std::fs::write(&signature, key.sign(&cwasm)).unwrap();
    SignedGuest { dir, public, module, signature }
}

impl SignedGuest {
    /// Tenant `name` running this guest.
    pub fn tenant(&self, name: &str, plugin_config: Vec<u8>, instances: InstancePolicy) -> TenantConfig {
        TenantConfig {
            id: TenantId::try_from(name).unwrap(),
            module: self.module.clone(),
            evidence: thaw::trust::Evidence::detached(self.signature.clone()),
            plugin_config,
            vm_config: Vec::new(),
            root_id: String::new(),
            instances,
            snapshot_source: None,
        }
    }
}
