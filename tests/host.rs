//! The proxy-wasm host driven without Envoy, through the shared fake of the safe `HttpStream`
//! interface (`common::FakeStream`): the real auth filter (proxy-wasm SDK) end to end through the
//! filter driver, and hand-shaped hostile guests (wild pointers and lengths, traps, endless loops,
//! rejected configs). Artifacts are real: compiled with thaw's engine, signed, written to disk, verified, loaded.

mod common;

use common::FakeStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thaw::config::{Config, InstancePolicy, Isolation, Policy, TenantConfig, TenantId, DEFAULT_CRASH_LOOP};
use thaw::engine::{self, Target};
use thaw::filter::{FilterConfig, StreamFilter, Verdict};
use thaw::pool;
use thaw::telemetry::{Metric, NoStats};
use thaw::trust::signature::PrivateKey;

/// A work directory with a trusted key; artifacts compiled and signed into it.
struct Workspace {
    dir: tempfile::TempDir,
    key: PrivateKey,
    public: PathBuf,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate();
        let public = dir.path().join("trusted.pub.pem");
        std::fs::write(&public, key.public_key_pem()).unwrap();
        Workspace { dir, key, public }
    }

    fn tenant(&self, name: &str, wasm: &[u8], plugin_config: &str) -> TenantConfig {
        let cwasm = engine::compile_engine(Target::host()).unwrap().precompile_module(wasm).unwrap();
        let module = self.dir.path().join(format!("{name}.cwasm"));
        let signature = self.dir.path().join(format!("{name}.cwasm.sig"));
        std::fs::write(&module, &cwasm).unwrap();
        std::fs::write(&signature, self.key.sign(&cwasm)).unwrap();
        TenantConfig {
            id: TenantId::try_from(name).unwrap(),
            module,
            evidence: thaw::trust::Evidence::detached(signature),
            plugin_config: plugin_config.as_bytes().to_vec(),
            vm_config: Vec::new(),
            root_id: String::new(),
            instances: InstancePolicy::DEFAULT,
            snapshot_source: None,
        }
    }

    fn load(&self, tenants: Vec<TenantConfig>, on_error: Policy) -> Result<Arc<FilterConfig>, String> {
        let config = Config { on_error, ..common::config(vec![self.public.clone()], tenants) };
        FilterConfig::load("test", &config, &mut NoStats).map(Arc::new)
    }
}

fn auth_filter_wasm() -> Vec<u8> {
    let dir =
        std::env::var_os("THAW_GUESTS").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("build/guests"));
    let path = dir.join("auth-filter.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; build the example guests first: ./bazel-free-build.sh build", path.display()))
}

/// Runs one request through the driver: request headers, then stream completion.
fn serve(config: &Arc<FilterConfig>, stream: &FakeStream) -> Verdict {
    let mut filter = StreamFilter::new(Arc::clone(config));
    let verdict = filter.on_request_headers(stream.clone(), true);
    filter.flush(&mut stream.clone());
    filter.on_stream_complete(stream.clone());
    verdict
}

#[test]
fn the_auth_filter_runs_through_the_host() {
    let ws = Workspace::new();
    let tenant = ws.tenant("acme", &auth_filter_wasm(), r#"{"tokens":{"s3cret":"alice"}}"#);
    let config = ws.load(vec![tenant], Policy::Deny).unwrap();

    let ok = FakeStream::with(&[("x-tenant-id", "acme"), ("authorization", "Bearer s3cret"), ("x-auth-subject", "mallory")]);
    assert_eq!(serve(&config, &ok), Verdict::Continue);
    assert_eq!(ok.header("x-auth-subject").as_deref(), Some("alice"));
    assert!(ok.replies().is_empty());

    for headers in [vec![("x-tenant-id", "acme")], vec![("x-tenant-id", "acme"), ("authorization", "Bearer nope")]] {
        let denied = FakeStream::with(&headers);
        assert_eq!(serve(&config, &denied), Verdict::Stop);
        let replies = denied.replies();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].status, 403);
        assert!(String::from_utf8_lossy(&replies[0].body).starts_with("forbidden"));
    }

    let unknown = FakeStream::with(&[("x-tenant-id", "globex"), ("authorization", "Bearer s3cret")]);
    assert_eq!(serve(&config, &unknown), Verdict::Stop);
    assert_eq!(unknown.replies()[0].status, 403);
}

/// Allocator and memory every hand-shaped guest needs.
const GUEST_PRELUDE: &str = r#"
  (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
"#;

fn guest(body: &str) -> Vec<u8> {
    guest_with_imports("", body)
}

/// A hand-shaped guest with host imports (they come first in a module).
fn guest_with_imports(imports: &str, body: &str) -> Vec<u8> {
    wat::parse_str(format!("(module {imports} {GUEST_PRELUDE} {body})")).unwrap()
}

#[test]
fn hostile_pointers_and_lengths_get_status_codes_not_host_faults() {
    let wasm = wat::parse_str(format!(
        r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $setpairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_not_in_the_abi" (func $unknown (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  {GUEST_PRELUDE}
  (data (i32.const 16) ":path")
  (data (i32.const 32) "survived")
  (data (i32.const 48) "\ff\ff\ff\ff garbage")
  (func $expect (param $got i32) (param $want i32)
    (if (i32.ne (local.get $got) (local.get $want)) (then unreachable)))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ;; a log message far outside memory, and one whose end wraps past it
    (call $expect (call $log (i32.const 2) (i32.const 0xFFFFFFF0) (i32.const 100)) (i32.const 6))
    (call $expect (call $log (i32.const 2) (i32.const 65530) (i32.const 100)) (i32.const 6))
    ;; a header key outside memory; result pointers outside memory
    (call $expect (call $get (i32.const 0) (i32.const 0xFFFF0000) (i32.const 10) (i32.const 200) (i32.const 204)) (i32.const 6))
    (call $expect (call $get (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 0xFFFFFFFC) (i32.const 204)) (i32.const 6))
    ;; an unknown map type; a local reply whose headers claim 2 GiB (past memory, as Envoy's host)
    (call $expect (call $pairs (i32.const 99) (i32.const 200) (i32.const 204)) (i32.const 2))
    (call $expect (call $reply (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                               (i32.const 0) (i32.const 0x7FFFFFFF) (i32.const -1)) (i32.const 6))
    ;; the VM configuration copied to a wild pointer; the plugin configuration outside
    ;; proxy_on_configure is not there (Envoy's host: NOT_FOUND)
    (call $expect (call $buf (i32.const 6) (i32.const 0) (i32.const 10) (i32.const 0xFFFFFFFF) (i32.const 204)) (i32.const 6))
    (call $expect (call $buf (i32.const 7) (i32.const 0) (i32.const 10) (i32.const 200) (i32.const 204)) (i32.const 1))
    ;; an import no host provides: a stub answers UNIMPLEMENTED
    (call $expect (call $unknown (i32.const 7)) (i32.const 12))
    ;; WASI fd_write with its iovec table outside memory: EFAULT
    (call $expect (call $fd_write (i32.const 1) (i32.const 0xFFFFFF00) (i32.const 4) (i32.const 200)) (i32.const 21))
    ;; after all that, a good call still works
    (call $expect (call $get (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 200) (i32.const 204)) (i32.const 0))
    (call $expect (i32.load (i32.const 204)) (i32.const 1))
    (call $expect (i32.load8_u (i32.load (i32.const 200))) (i32.const 0x2f))
    ;; a garbage serialized map reads as an empty one (Envoy's host): the map is cleared, OK
    (call $expect (call $setpairs (i32.const 0) (i32.const 48) (i32.const 12)) (i32.const 0))
    (call $expect (call $get (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 200) (i32.const 204)) (i32.const 1))
    (drop (call $reply (i32.const 299) (i32.const 0) (i32.const 0) (i32.const 32) (i32.const 8)
                       (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))
)"#
    ))
    .unwrap();
    let ws = Workspace::new();
    let config = ws.load(vec![ws.tenant("hostile", &wasm, "plugin config")], Policy::Deny).unwrap();
    let stream = FakeStream::with(&[("x-tenant-id", "hostile"), (":path", "/")]);
    assert_eq!(serve(&config, &stream), Verdict::Stop);
    let replies = stream.replies();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!((replies[0].status, replies[0].body.as_slice()), (299, &b"survived"[..]), "a hostcall answered wrongly");
}

#[test]
fn a_trapping_guest_fails_closed_or_open_as_configured() {
    let trap = guest(r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)"#);
    let ws = Workspace::new();
    let closed = ws.load(vec![ws.tenant("t", &trap, "")], Policy::Deny).unwrap();
    let stream = FakeStream::with(&[("x-tenant-id", "t")]);
    assert_eq!(serve(&closed, &stream), Verdict::Stop);
    assert_eq!(stream.replies()[0].status, 503);
    // Every request gets a fresh answer: the failed instance is never reused.
    let again = FakeStream::with(&[("x-tenant-id", "t")]);
    assert_eq!(serve(&closed, &again), Verdict::Stop);
    assert_eq!(again.replies()[0].status, 503);

    let open = ws.load(vec![ws.tenant("t", &trap, "")], Policy::Allow).unwrap();
    let stream = FakeStream::with(&[("x-tenant-id", "t")]);
    assert_eq!(serve(&open, &stream), Verdict::Continue);
    assert!(stream.replies().is_empty());
}

#[test]
fn a_pooled_instance_that_fails_is_taken_off_the_pool_gauge_at_the_next_miss() {
    // Traps on the second request an instance serves.
    let second_traps = guest(
        r#"(global $n (mut i32) (i32.const 0))
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (global.set $n (i32.add (global.get $n) (i32.const 1)))
             (if (i32.eq (global.get $n) (i32.const 2)) (then unreachable))
             (i32.const 0))"#,
    );
    let ws = Workspace::new();
    let config = ws.load(vec![pooled(ws.tenant("t", &second_traps, ""))], Policy::Deny).unwrap();
    let stream = FakeStream::with(&[("x-tenant-id", "t")]);
    assert_eq!(serve(&config, &stream), Verdict::Continue); // a fresh instance, given back
    assert_eq!(stream.metric(Metric::PoolSize, "t"), 1);
    assert_eq!(serve(&config, &stream), Verdict::Stop); // the pooled one traps and is dropped
    assert_eq!(stream.metric(Metric::PoolSize, "t"), 1, "an instance out serving a request still counts");
    assert_eq!(serve(&config, &stream), Verdict::Continue); // a miss: the gauge is set right, then a fresh one comes back
    assert_eq!((stream.metric(Metric::PoolSize, "t"), stream.records_for(Metric::PoolSize, "t")), (1, 3));
    assert_eq!(stream.metric(Metric::PoolMiss, "t"), 2);
}

#[test]
fn an_endless_loop_is_cut_at_the_deadline() {
    let spin = guest(r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (loop br 0) (i32.const 0))"#);
    let ws = Workspace::new();
    let config = ws.load(vec![ws.tenant("spin", &spin, "")], Policy::Deny).unwrap();
    let stream = FakeStream::with(&[("x-tenant-id", "spin")]);
    let started = Instant::now();
    assert_eq!(serve(&config, &stream), Verdict::Stop);
    let took = started.elapsed();
    assert_eq!(stream.replies()[0].status, 503);
    assert!(took < Duration::from_millis(500), "a 10 ms deadline took {took:?}");
}

#[test]
fn emscripten_style_guests_get_main_after_initialize_and_pthread_equal() {
    // `_initialize` sets 1, `main(0, 0)` makes it 12 only when called after it (Envoy's order);
    // the request replies 200 + that, after checking `pthread_equal`.
    let wasm = wat::parse_str(format!(
        r#"(module
  (import "env" "pthread_equal" (func $eq (param i32 i32) (result i32)))
  (import "env" "emscripten_notify_memory_growth" (func $grew (param i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  {GUEST_PRELUDE}
  (global $g (mut i32) (i32.const 0))
  (func (export "_initialize") (global.set $g (i32.const 1)))
  (func (export "main") (param i32 i32) (result i32)
    (global.set $g (i32.add (i32.mul (global.get $g) (i32.const 10)) (i32.const 2))) (i32.const 0))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $grew (i32.const 0))
    (if (i32.ne (call $eq (i32.const 3) (i32.const 3)) (i32.const 1)) (then unreachable))
    (if (i32.ne (call $eq (i32.const 3) (i32.const 4)) (i32.const 0)) (then unreachable))
    (drop (call $reply (i32.add (i32.const 200) (global.get $g)) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                       (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1)))"#
    ))
    .unwrap();
    let ws = Workspace::new();
    let config = ws.load(vec![ws.tenant("emcc", &wasm, "")], Policy::Deny).unwrap();
    let stream = FakeStream::with(&[("x-tenant-id", "emcc")]);
    assert_eq!(serve(&config, &stream), Verdict::Stop);
    assert_eq!(stream.replies()[0].status, 212, "main must run once, after _initialize");
}

#[test]
fn a_guest_that_rejects_its_configuration_rejects_the_config() {
    let reject = guest(r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 0))"#);
    let ws = Workspace::new();
    let err = ws.load(vec![ws.tenant("picky", &reject, "{}")], Policy::Deny).err().expect("config must be rejected");
    assert!(err.contains("tenant `picky`") && err.contains("proxy_on_configure"), "{err}");
}

#[test]
fn a_guest_declaring_no_abi_version_is_refused_at_load_with_envoys_reason() {
    let wasm = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024)))"#,
    )
    .unwrap();
    let ws = Workspace::new();
    let err = ws.load(vec![ws.tenant("old", &wasm, "")], Policy::Deny).err().expect("must be refused");
    assert!(err.contains("tenant `old`") && err.contains("Missing or unknown Proxy-Wasm ABI version"), "{err}");
}

#[test]
fn a_guest_without_an_allocator_is_refused_at_load() {
    let wasm = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")))"#).unwrap();
    let ws = Workspace::new();
    let err = ws.load(vec![ws.tenant("bare", &wasm, "")], Policy::Deny).err().expect("must be refused");
    assert!(err.contains("tenant `bare`") && err.contains("proxy_on_memory_allocate"), "{err}");
}

fn pooled(mut tenant: TenantConfig) -> TenantConfig {
    tenant.instances.isolation = Isolation::Pooled;
    tenant
}

#[test]
fn pooled_instances_are_reused_and_per_request_ones_never() {
    let ws = Workspace::new();
    let wasm = auth_filter_wasm();
    let tokens = r#"{"tokens":{"s3cret":"alice"}}"#;
    let config = ws.load(vec![pooled(ws.tenant("pooled", &wasm, tokens)), ws.tenant("fresh", &wasm, tokens)], Policy::Deny).unwrap();
    let plugin = |name: &str| Arc::clone(&config.tenants[&TenantId::try_from(name).unwrap()].plugin);

    let stream = FakeStream::with(&[("x-tenant-id", "pooled"), ("authorization", "Bearer s3cret")]);
    for _ in 0..3 {
        assert_eq!(serve(&config, &stream), Verdict::Continue);
    }
    assert_eq!(stream.metric(Metric::PoolMiss, "pooled"), 1);
    assert_eq!(stream.metric(Metric::PoolHit, "pooled"), 2);
    assert_eq!(stream.metric(Metric::PoolSize, "pooled"), 1);
    // The gauge moved once, when the first instance came back: a request served from the pool
    // takes and returns its instance, which leaves the gauge where it was.
    assert_eq!(stream.records_for(Metric::PoolSize, "pooled"), 1);
    assert_eq!(thaw::pool::idle_count(&plugin("pooled")), 1);

    let stream = FakeStream::with(&[("x-tenant-id", "fresh"), ("authorization", "Bearer s3cret")]);
    for _ in 0..3 {
        assert_eq!(serve(&config, &stream), Verdict::Continue);
    }
    assert_eq!(stream.metric(Metric::PoolHit, "fresh"), 0);
    assert_eq!(thaw::pool::idle_count(&plugin("fresh")), 0);
    // Every per_request instance was made fresh: three cold starts recorded.
    assert_eq!(stream.0.borrow().metrics.iter().filter(|(m, t, _)| *m == Metric::ColdStart && t == "fresh").count(), 3);
}

#[test]
fn an_instance_that_saw_a_host_panic_is_failed_never_pooled_and_the_request_denied() {
    // The guest asks for header `x-panic`; the (fake) host panics in the middle of that call.
    let wasm = guest_with_imports(
        r#"(import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 16) "x-panic")
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (call $get (i32.const 0) (i32.const 16) (i32.const 7) (i32.const 200) (i32.const 204)))
             (i32.const 0))"#,
    );
    let ws = Workspace::new();
    let config = ws.load(vec![pooled(ws.tenant("buggy", &wasm, ""))], Policy::Deny).unwrap();
    let plugin = Arc::clone(&config.tenants[&TenantId::try_from("buggy").unwrap()].plugin);
    let stream = FakeStream::with(&[("x-tenant-id", "buggy")]);
    assert_eq!(serve(&config, &stream), Verdict::Stop, "a host panic in a guest call fails closed");
    assert_eq!(stream.replies()[0].status, 503);
    assert_eq!(stream.metric(Metric::GuestTrap, "buggy"), 1);
    assert_eq!(pool::idle_count(&plugin), 0, "the instance that saw the panic must not be pooled");
}

#[test]
fn fd_write_with_iovecs_repeating_all_of_memory_is_bounded() {
    // 100,000 iovecs, each the whole 64 KiB page: 6.5 GB "written" from 64 KiB of memory. The
    // host keeps at most MAX_FD_WRITE_BYTES and answers at once.
    let wasm = guest_with_imports(
        r#"(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (local $i i32)
             ;; the iovec table in the upper part of the page: 1,000 entries {ptr 0, len 65536}
             (loop $fill
               (i32.store (i32.add (i32.const 32768) (i32.mul (local.get $i) (i32.const 8))) (i32.const 0))
               (i32.store (i32.add (i32.const 32772) (i32.mul (local.get $i) (i32.const 8))) (i32.const 65536))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $fill (i32.lt_u (local.get $i) (i32.const 1000))))
             ;; 100 calls of 1,000 iovecs each
             (local.set $i (i32.const 0))
             (loop $write
               (if (i32.ne (call $fd_write (i32.const 1) (i32.const 32768) (i32.const 1000) (i32.const 16)) (i32.const 0)) (then unreachable))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $write (i32.lt_u (local.get $i) (i32.const 100))))
             (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))
             (i32.const 1))"#,
    );
    let ws = Workspace::new();
    let mut tenant = ws.tenant("chatty", &wasm, "");
    tenant.instances.call_deadline_ms = 10_000;
    let config = ws.load(vec![tenant], Policy::Deny).unwrap();
    let stream = FakeStream::with(&[("x-tenant-id", "chatty")]);
    let started = Instant::now();
    serve(&config, &stream);
    assert_eq!(stream.replies()[0].status, 200, "fd_write answered an error or the guest failed");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn pooled_instances_retire_after_max_requests() {
    let ws = Workspace::new();
    let mut tenant = pooled(ws.tenant("short", &auth_filter_wasm(), r#"{"tokens":{"s3cret":"alice"}}"#));
    tenant.instances.max_requests = 2;
    let config = ws.load(vec![tenant], Policy::Deny).unwrap();
    let stream = FakeStream::with(&[("x-tenant-id", "short"), ("authorization", "Bearer s3cret")]);
    for _ in 0..6 {
        assert_eq!(serve(&config, &stream), Verdict::Continue);
    }
    // Six requests, two per instance: three instances made, each reused once.
    assert_eq!(stream.metric(Metric::PoolMiss, "short"), 3);
    assert_eq!(stream.metric(Metric::PoolHit, "short"), 3);
}

#[test]
fn the_sweep_retires_idle_instances_and_forgets_the_pools_of_dropped_configs() {
    let ws = Workspace::new();
    let tokens = r#"{"tokens":{"s3cret":"alice"}}"#;
    let mut idle = pooled(ws.tenant("idle", &auth_filter_wasm(), tokens));
    idle.instances.idle_timeout_ms = 50;
    let config = ws.load(vec![idle, pooled(ws.tenant("busy", &auth_filter_wasm(), tokens))], Policy::Deny).unwrap();
    let plugin = |name: &str| Arc::clone(&config.tenants[&TenantId::try_from(name).unwrap()].plugin);
    let request = |tenant: &str| FakeStream::with(&[("x-tenant-id", tenant), ("authorization", "Bearer s3cret")]);
    let idle_stream = request("idle");
    assert_eq!(serve(&config, &idle_stream), Verdict::Continue);
    assert_eq!(pool::idle_count(&plugin("idle")), 1);
    assert_eq!(serve(&config, &request("busy")), Verdict::Continue);
    // Nobody asks for `idle` again: its instance is retired by a sweep, on another tenant's
    // request after the sweep interval (1 s), and the tenant's gauge goes back to 0.
    std::thread::sleep(Duration::from_millis(1100));
    let busy_stream = request("busy");
    assert_eq!(serve(&config, &busy_stream), Verdict::Continue);
    assert_eq!(pool::idle_count(&plugin("idle")), 0);
    assert_eq!(pool::idle_count(&plugin("busy")), 1);
    assert_eq!(busy_stream.metric(Metric::PoolSize, "idle"), -1);
    assert_eq!(pool::pool_count(), 2, "`idle` was served lately: its pool stays, empty");

    // The config goes: a sweep under the next config forgets both of its pools (and drops
    // `busy`'s idle instance), looking at no plugin of its own to find them.
    drop(config);
    let next = ws.load(vec![pooled(ws.tenant("next", &auth_filter_wasm(), tokens))], Policy::Deny).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(serve(&next, &request("next")), Verdict::Continue);
    assert_eq!(pool::pool_count(), 1, "only `next`'s pool is left");
}

#[test]
fn a_guest_growing_past_its_memory_cap_is_stopped_and_counted() {
    let hog = guest(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
             unreachable)"#,
    );
    let ws = Workspace::new();
    let mut tenant = ws.tenant("hog", &hog, "");
    tenant.instances.memory_limit_mb = 4;
    let config = ws.load(vec![tenant], Policy::Deny).unwrap();
    let stream = FakeStream::with(&[("x-tenant-id", "hog")]);
    assert_eq!(serve(&config, &stream), Verdict::Stop);
    assert_eq!(stream.replies()[0].status, 503);
    assert_eq!(stream.metric(Metric::MemoryCapHit, "hog"), 1);
}

#[test]
fn endless_recursion_is_a_counted_stack_overflow() {
    let deep = guest(
        r#"(func $down (param i32) (result i32) (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $down (i32.const 0)))"#,
    );
    let ws = Workspace::new();
    let config = ws.load(vec![ws.tenant("deep", &deep, "")], Policy::Deny).unwrap();
    let stream = FakeStream::with(&[("x-tenant-id", "deep")]);
    assert_eq!(serve(&config, &stream), Verdict::Stop);
    assert_eq!(stream.replies()[0].status, 503);
    assert_eq!(stream.metric(Metric::StackOverflow, "deep"), 1);
}

#[test]
fn a_crash_looping_tenant_is_quarantined_and_others_keep_serving() {
    let trap = guest(r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)"#);
    let ws = Workspace::new();
    let config = ws
        .load(vec![ws.tenant("crashy", &trap, ""), ws.tenant("fine", &auth_filter_wasm(), r#"{"tokens":{"t":"u"}}"#)], Policy::Deny)
        .unwrap();
    let stream = FakeStream::with(&[("x-tenant-id", "crashy")]);
    for _ in 0..DEFAULT_CRASH_LOOP.failures + 3 {
        assert_eq!(serve(&config, &stream), Verdict::Stop);
    }
    assert_eq!(stream.metric(Metric::GuestTrap, "crashy"), DEFAULT_CRASH_LOOP.failures as i64);
    assert_eq!(stream.metric(Metric::Quarantine, "crashy"), 1);
    assert_eq!(stream.metric(Metric::QuarantinedRequest, "crashy"), 3);
    assert!(stream.replies().iter().all(|r| r.status == 503));
    let other = FakeStream::with(&[("x-tenant-id", "fine"), ("authorization", "Bearer t")]);
    assert_eq!(serve(&config, &other), Verdict::Continue);
}

#[test]
fn older_guests_with_malloc_start_and_abi_0_2_0_run() {
    // An ABI 0.2.0 command-style guest (as AssemblyScript and older SDKs emit): `malloc` instead of
    // `proxy_on_memory_allocate`, `_start` instead of `_initialize`. `_start` sets a global the
    // request reads back; reading a header makes the host allocate through `malloc`.
    let wasm = wat::parse_str(
        r#"(module
          (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
          (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (global $heap (mut i32) (i32.const 4096))
          (global $started (mut i32) (i32.const 0))
          (data (i32.const 16) "x-probe")
          (func (export "proxy_abi_version_0_2_0"))
          (func (export "malloc") (param $n i32) (result i32)
            (local $p i32) (local.set $p (global.get $heap))
            (global.set $heap (i32.add (global.get $heap) (local.get $n))) (local.get $p))
          (func (export "_start") (global.set $started (i32.const 1)))
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
            (if (i32.ne (global.get $started) (i32.const 1)) (then unreachable))
            (if (i32.ne (call $get (i32.const 0) (i32.const 16) (i32.const 7) (i32.const 200) (i32.const 204)) (i32.const 0)) (then unreachable))
            ;; reply with the header value the host copied into malloc'd memory
            (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0) (i32.load (i32.const 200)) (i32.load (i32.const 204))
                               (i32.const 0) (i32.const 0) (i32.const -1)))
            (i32.const 1)))"#,
    )
    .unwrap();
    let ws = Workspace::new();
    let config = ws.load(vec![ws.tenant("old", &wasm, "")], Policy::Deny).unwrap();
    let stream = FakeStream::with(&[("x-tenant-id", "old"), ("x-probe", "via-malloc")]);
    assert_eq!(serve(&config, &stream), Verdict::Stop);
    let replies = stream.replies();
    assert_eq!((replies[0].status, replies[0].body.as_slice()), (200, &b"via-malloc"[..]), "{replies:?}");
}

#[test]
fn past_the_cold_start_rate_new_tenants_are_shed_and_served_ones_are_not() {
    let ws = Workspace::new();
    let guest = guest("(func (export \"proxy_on_request_headers\") (param i32 i32 i32) (result i32) (i32.const 0))");
    let tenants = (0..4).map(|i| ws.tenant(&format!("t{i}"), &guest, "")).collect();
    // on_error allow: a shed request must still never pass unfiltered.
    let mut config = Arc::try_unwrap(ws.load(tenants, Policy::Allow).unwrap()).ok().unwrap();
    config.cold_starts = Some(thaw::config::ColdStartLimit { per_second: 1, burst: 2 });
    let config = Arc::new(config);
    let request = |tenant: &str| {
        let stream = FakeStream::with(&[("x-tenant-id", tenant)]);
        let verdict = serve(&config, &stream);
        (verdict, stream)
    };
    assert_eq!(request("t0").0, Verdict::Continue);
    assert_eq!(request("t1").0, Verdict::Continue);
    let (verdict, shed) = request("t2");
    assert_eq!(verdict, Verdict::Stop);
    let reply = &shed.replies()[0];
    assert_eq!(reply.status, 503);
    assert!(reply.headers.iter().any(|(k, v)| k == b"retry-after" && v == b"1"), "{reply:?}");
    assert_eq!(shed.metric(Metric::ColdStartShed, "t2"), 1);
    // Tenants this worker served are not cold: never shed, whatever the bucket holds.
    for _ in 0..10 {
        assert_eq!(request("t0").0, Verdict::Continue);
        assert_eq!(request("t1").0, Verdict::Continue);
    }
    // The bucket refills at per_second.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(request("t2").0, Verdict::Continue);
    assert_eq!(request("t3").0, Verdict::Stop);
}
