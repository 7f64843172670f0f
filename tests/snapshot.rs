//! Post-init snapshots through the host, with the real heavy-init guest (proxy-wasm SDK): init runs
//! once per snapshot; resumed instances keep the guest's state, metrics and tick period; stored
//! snapshots that are tampered, truncated, or made for another tenant, module, configuration or
//! engine are refused, counted and replaced; encryption at rest hides guest memory; a snapshot
//! is never taken from an instance that served a request; and an init that calls a host function
//! whose snapshot policy forbids it (shared data, queues, ...) is not snapshotted: the tenant falls
//! back to per-worker init.

mod common;

use common::FakeStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thaw::artifact::ArtifactDigest;
use thaw::config::{Config, InstancePolicy, SignedFile, SnapshotSettings, TenantConfig, TenantId};
use thaw::engine::{self, Target};
use thaw::filter::{FilterConfig, StreamFilter};
use thaw::proxy_wasm::abi::Status;
use thaw::proxy_wasm::hostcalls::{self, Snapshot};
use thaw::proxy_wasm::instance::SnapshotInit;
use thaw::proxy_wasm::{shared, Plugin};
use thaw::snapshot::{self, Binding, SealKey};
use thaw::telemetry::Metric;
use thaw::trust::signature::PrivateKey;

fn heavy_wasm() -> Vec<u8> {
    let dir =
        std::env::var_os("THAW_GUESTS").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("build/guests"));
    let path = dir.join("heavy-init-filter.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; build the guests first: ./bazel-free-build.sh build", path.display()))
}

struct Setup {
    dir: tempfile::TempDir,
    public: PathBuf,
    module: SignedFile,
    source: SignedFile,
    seal_key: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        Setup::with_guest(&heavy_wasm())
    }

    /// Tenants run `wasm` (signed, precompiled), with `wasm` itself as their snapshot source.
    fn with_guest(wasm: &[u8]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate();
        let public = dir.path().join("trusted.pub");
        std::fs::write(&public, key.public_key_pem()).unwrap();
        let cwasm = engine::compile_engine(Target::host()).unwrap().precompile_module(wasm).unwrap();
        let write_signed = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let signature = dir.path().join(format!("{name}.sig"));
            std::fs::write(&signature, key.sign(bytes)).unwrap();
            SignedFile { path, evidence: thaw::trust::Evidence::detached(signature) }
        };
        let module = write_signed("heavy.cwasm", &cwasm);
        let source = write_signed("heavy.wasm", wasm);
        let seal_key = dir.path().join("snapshot.key");
        std::fs::write(&seal_key, [42u8; 32]).unwrap();
        Setup { dir, public, module, source, seal_key }
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.dir.path().join("snapshots")
    }

    fn tenant(&self, name: &str, plugin_config: &str) -> TenantConfig {
        TenantConfig {
            id: TenantId::try_from(name).unwrap(),
            module: self.module.path.clone(),
            evidence: self.module.evidence.clone(),
            plugin_config: plugin_config.as_bytes().to_vec(),
            vm_config: Vec::new(),
            root_id: String::new(),
            instances: InstancePolicy { call_deadline_ms: 2_000, ..InstancePolicy::DEFAULT },
            snapshot_source: Some(self.source.clone()),
        }
    }

    fn load(&self, tenants: Vec<TenantConfig>, encrypt: bool, stats: &mut FakeStream) -> Arc<FilterConfig> {
        let snapshots = Some(SnapshotSettings { dir: self.snapshot_dir(), key: self.seal_key.clone(), encrypt, signed: false });
        let config = Config { snapshots, ..common::config(vec![self.public.clone()], tenants) };
        Arc::new(FilterConfig::load("snapshots", &config, stats).unwrap())
    }

    fn stored(&self, tenant: &str) -> PathBuf {
        snapshot::path_for(&self.snapshot_dir(), &TenantId::try_from(tenant).unwrap())
    }
}

/// One request; returns the guest's reply body.
fn ask(config: &Arc<FilterConfig>, tenant: &str) -> String {
    let stream = FakeStream::default();
    stream.set_request(&[("x-tenant-id", tenant)]);
    let mut filter = StreamFilter::new(Arc::clone(config));
    filter.on_request_headers(stream.clone(), true);
    filter.flush(&mut stream.clone());
    filter.on_stream_complete(stream.clone());
    let replies = stream.replies();
    assert_eq!(replies.len(), 1, "tenant {tenant}: {replies:?}");
    String::from_utf8(replies[0].body.clone()).unwrap()
}

const SMALL: &str = r#"{"entries": 50000, "marker": "SECRET-MARKER-4f1d"}"#;

#[test]
fn init_runs_once_then_every_instance_and_every_load_resumes() {
    let s = Setup::new();
    let mut stats = FakeStream::default();
    let config = s.load(vec![s.tenant("acme", SMALL)], false, &mut stats);
    let stored = s.stored("acme");
    let written = std::fs::metadata(&stored).unwrap().modified().unwrap();
    assert!(config.tenants[&TenantId::try_from("acme").unwrap()].plugin.is_resumed());
    let first = ask(&config, "acme");
    assert!(first.starts_with("table=") && first.contains("entries=50000"), "{first}");
    // Host state from init survives resume: the tick period and the metric the guest defined.
    assert!(first.contains("ticks=60000") && first.contains("metric=ok"), "{first}");
    for _ in 0..5 {
        assert_eq!(ask(&config, "acme"), first);
    }

    // A new load (a new Envoy process) resumes the stored snapshot: it is not made again.
    let again = s.load(vec![s.tenant("acme", SMALL)], false, &mut stats);
    assert_eq!(std::fs::metadata(&stored).unwrap().modified().unwrap(), written);
    assert_eq!(ask(&again, "acme"), first);
    assert_eq!(stats.records(Metric::SnapshotRefused), 0);
    // Resumed instances report as such (no cold start with init).
    let stream = FakeStream::default();
    stream.set_request(&[("x-tenant-id", "acme")]);
    let mut filter = StreamFilter::new(Arc::clone(&again));
    filter.on_request_headers(stream.clone(), true);
    assert_eq!((stream.records(Metric::SnapshotResume), stream.records(Metric::ColdStart)), (1, 0));
}

#[test]
fn a_reload_resumes_a_kept_snapshot_unless_the_snapshot_or_its_source_changed() {
    let s = Setup::new();
    let mut stats = FakeStream::default();
    let made = s.load(vec![s.tenant("acme", SMALL)], false, &mut stats);
    let expected = ask(&made, "acme");
    // Just stored: too young a stamp to keep. Resumed from the file, then kept.
    std::thread::sleep(std::time::Duration::from_millis(150));
    let first = s.load(vec![s.tenant("acme", SMALL)], false, &mut stats);
    assert_eq!(first.reused_snapshots, 0);
    let second = s.load(vec![s.tenant("acme", SMALL)], false, &mut stats);
    assert_eq!(second.reused_snapshots, 1);
    assert_eq!(ask(&second, "acme"), expected);
    // Another plugin configuration: not the kept snapshot (its binding differs: made anew).
    let other = s.load(vec![s.tenant("acme", r#"{"entries":10}"#)], false, &mut stats);
    assert_eq!(other.reused_snapshots, 0);
    drop(other);
    // The stored snapshot tampered: never the kept one; refused, counted, replaced.
    std::thread::sleep(std::time::Duration::from_millis(150));
    let third = s.load(vec![s.tenant("acme", SMALL)], false, &mut stats);
    let stored = s.stored("acme");
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&stored, &bytes).unwrap();
    let mut refused = FakeStream::default();
    let fourth = s.load(vec![s.tenant("acme", SMALL)], false, &mut refused);
    assert_eq!((fourth.reused_snapshots, refused.records(Metric::SnapshotRefused)), (0, 1));
    assert_eq!(ask(&fourth, "acme"), expected);
    drop((made, first, second, third, fourth));
}

#[test]
fn wrong_snapshots_are_refused_counted_and_replaced() {
    let s = Setup::new();
    let mut stats = FakeStream::default();
    let good = s.load(vec![s.tenant("acme", SMALL), s.tenant("globex", SMALL)], false, &mut stats);
    let expected = ask(&good, "acme");
    let stored = s.stored("acme");
    let seal_key = SealKey::load(&s.seal_key).unwrap();
    let original = std::fs::read(&stored).unwrap();
    let acme = TenantId::try_from("acme").unwrap();
    let fingerprint = engine::engine_fingerprint(engine::runtime_engine().unwrap()).unwrap();
    let source_digest = ArtifactDigest::of(&std::fs::read(&s.source.path).unwrap());
    // A real snapshot (only `snapshot::create` makes one), sealed for the wrong things.
    let source = std::fs::read(&s.source.path).unwrap();
    let created = snapshot::create(engine::runtime_engine().unwrap(), &s.tenant("acme", SMALL), &source, source_digest, None).unwrap();
    let sealed_for = |binding: Binding| snapshot::seal(&seal_key, &binding, &created, false);

    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x40;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("tampered", tampered),
        ("truncated", original[..original.len() - 100].to_vec()),
        ("other tenant", std::fs::read(s.stored("globex")).unwrap()),
        ("other module", sealed_for(Binding::new(&acme, ArtifactDigest([1; 32]), SMALL.as_bytes(), b"", &fingerprint))),
        ("other config", sealed_for(Binding::new(&acme, source_digest, b"{}", b"", &fingerprint))),
        ("other engine", sealed_for(Binding::new(&acme, source_digest, SMALL.as_bytes(), b"", b"another engine"))),
        (
            "another key",
            snapshot::seal(
                &SealKey::from_secret(&[7; 32]).unwrap(),
                &Binding::new(&acme, source_digest, SMALL.as_bytes(), b"", &fingerprint),
                &created,
                false,
            ),
        ),
    ];
    for (what, bytes) in cases {
        std::fs::write(&stored, &bytes).unwrap();
        let mut stats = FakeStream::default();
        let config = s.load(vec![s.tenant("acme", SMALL)], false, &mut stats);
        assert_eq!(stats.records(Metric::SnapshotRefused), 1, "{what}");
        // Replaced by a fresh, valid snapshot, and nothing of the bad one was used.
        assert_ne!(std::fs::read(&stored).unwrap(), bytes, "{what}");
        assert_eq!(ask(&config, "acme"), expected, "{what}");
        let mut stats = FakeStream::default();
        s.load(vec![s.tenant("acme", SMALL)], false, &mut stats);
        assert_eq!(stats.records(Metric::SnapshotRefused), 0, "{what}: the replacement must verify");
    }
}

#[test]
fn encryption_at_rest_leaves_no_plaintext_of_guest_memory() {
    let marker = b"SECRET-MARKER-4f1d";
    for encrypt in [false, true] {
        let s = Setup::new();
        let config = s.load(vec![s.tenant("acme", SMALL)], encrypt, &mut FakeStream::default());
        assert!(ask(&config, "acme").contains("marker=SECRET-MARKER-4f1d"));
        let file = std::fs::read(s.stored("acme")).unwrap();
        let found = file.windows(marker.len()).any(|w| w == marker);
        assert_eq!(found, !encrypt, "encrypt={encrypt}: marker found={found}");
        // Encrypted snapshots still resume.
        let again = s.load(vec![s.tenant("acme", SMALL)], encrypt, &mut FakeStream::default());
        assert!(ask(&again, "acme").contains("marker=SECRET-MARKER-4f1d"));
    }
}

#[test]
fn a_snapshot_is_never_taken_after_a_request() {
    let s = Setup::new();
    let wasm = heavy_wasm();
    let engine = engine::runtime_engine().unwrap();
    let wizer = wasmtime_wizer::Wizer::new();
    let (cx, instrumented) = wizer.instrument(&wasm).unwrap();
    let module = wasmtime::Module::new(engine, &instrumented).unwrap();
    let plugin = Plugin::for_snapshot(engine, &s.tenant("acme", SMALL), module, ArtifactDigest::of(&wasm), None).unwrap();
    let mut instance = plugin.instantiate().unwrap();
    let context = instance.create_http_context().unwrap();
    // The request's outcome does not matter (this plugin's init allowlist also applies to it);
    // that the instance served one does.
    let _ = instance.on_request_headers(Box::new(FakeStream::default()), context, 0, true);
    let err = instance.snapshot(&wizer, cx).expect_err("a served instance must not be snapshotted");
    assert!(err.contains("served 1 requests"), "{err}");
}

#[test]
fn a_forbidden_hostcall_during_init_falls_back_to_per_worker_init() {
    // An init that sends a local reply cannot be captured: the snapshot fails naming the call,
    // and the tenant still loads, with per-worker init.
    let wasm = wat::parse_str(
        r#"(module
          (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))
          (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
          (func (export "proxy_on_configure") (param i32 i32) (result i32)
            (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))
            (i32.const 1)))"#,
    )
    .unwrap();
    let s = Setup::new();
    let engine = engine::runtime_engine().unwrap();
    let tenant = s.tenant("odd", "");
    let err = snapshot::create(engine, &tenant, &wasm, ArtifactDigest::of(&wasm), None).expect_err("must not snapshot");
    let text = format!("{err:?}");
    assert!(matches!(err, snapshot::CreateError::Unsupported(_)) && text.contains("proxy_send_local_response"), "{text}");
}

#[test]
fn shared_data_during_init_refuses_the_snapshot_and_the_tenant_serves_from_per_worker_init() {
    // Shared data and queues are process-wide host state a snapshot does not hold: a resumed
    // instance in a new process would lack what this init writes. So the snapshot is refused,
    // naming the call, and the tenant runs its init per instance, which writes it.
    let wasm = wat::parse_str(
        r#"(module
          (import "env" "proxy_set_shared_data" (func $set (param i32 i32 i32 i32 i32) (result i32)))
          (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
          (import "env" "proxy_get_shared_data" (func $get (param i32 i32 i32 i32 i32) (result i32)))
          (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))
          (data (i32.const 16) "init-key") (data (i32.const 32) "set-by-init") (data (i32.const 48) "init-queue")
          (global $heap (mut i32) (i32.const 4096))
          (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
            (local.set $p (global.get $heap))
            (global.set $heap (i32.add (global.get $heap) (local.get $n)))
            (local.get $p))
          (func (export "proxy_on_configure") (param i32 i32) (result i32)
            (drop (call $set (i32.const 16) (i32.const 8) (i32.const 32) (i32.const 11) (i32.const 0)))
            (drop (call $register (i32.const 48) (i32.const 10) (i32.const 64)))
            (i32.const 1))
          ;; Answers every request with the value of `init-key` as the instance sees it.
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
            (drop (call $get (i32.const 16) (i32.const 8) (i32.const 100) (i32.const 104) (i32.const 108)))
            (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0) (i32.load (i32.const 100)) (i32.load (i32.const 104))
              (i32.const 0) (i32.const 0) (i32.const -1)))
            (i32.const 1)))"#,
    )
    .unwrap();
    let name = "shared-init";
    let s = Setup::with_guest(&wasm);
    let engine = engine::runtime_engine().unwrap();
    let Err(err) = snapshot::create(engine, &s.tenant(name, ""), &wasm, ArtifactDigest::of(&wasm), None) else {
        panic!("an init that sets shared data must not be snapshotted")
    };
    let text = format!("{err:?}");
    assert!(
        matches!(err, snapshot::CreateError::Unsupported(_))
            && text.contains("init called proxy_set_shared_data, which is not allowed while snapshotting"),
        "{text}"
    );
    // The refused init changed nothing: the call trapped before it wrote.
    assert_eq!(shared::get(name, b"init-key"), Err(Status::NotFound));
    assert_eq!(shared::resolve_queue(name, b"", b"init-queue"), Err(Status::NotFound));

    // Loaded with snapshots configured: no snapshot, per-worker init, and the data init set.
    let config = s.load(vec![s.tenant(name, "")], false, &mut FakeStream::default());
    assert!(!config.tenants[&TenantId::try_from(name).unwrap()].plugin.is_resumed());
    assert!(!s.stored(name).exists(), "no snapshot may be stored for it");
    assert_eq!(ask(&config, name), "set-by-init");
    assert_eq!(shared::get(name, b"init-key").map(|(value, _)| value), Ok(b"set-by-init".to_vec()));
    assert!(shared::resolve_queue(name, b"", b"init-queue").is_ok());
}

#[test]
fn every_host_function_runs_in_a_snapshotted_init_as_its_policy_says() {
    // Derived from the table: each row's function, called from `proxy_on_vm_start` of a guest
    // being snapshotted, traps naming itself exactly when its policy does not allow that init.
    let s = Setup::with_guest(&wat::parse_str("(module)").unwrap());
    let tenant = s.tenant("policies", "");
    let engine = engine::runtime_engine().unwrap();
    let create = |module: &str, name: &str, params: &[&str], results: &[&str], init: SnapshotInit| {
        let args: String = params.iter().map(|t| format!(" ({t}.const 0)")).collect();
        let call = if results.is_empty() { format!("(call $f{args})") } else { format!("(drop (call $f{args}))") };
        let wasm = wat::parse_str(format!(
            r#"(module
              (import "{module}" "{name}" (func $f (param {}) (result {})))
              (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))
              (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
              (func (export "proxy_on_vm_start") (param i32 i32) (result i32) {call} (i32.const 1)))"#,
            params.join(" "),
            results.join(" "),
        ))
        .unwrap();
        let replay = (init == SnapshotInit::ReplayingCalls).then(Default::default);
        snapshot::create(engine, &tenant, &wasm, ArtifactDigest::of(&wasm), replay)
    };
    let mut checked = 0;
    for row in hostcalls::host_functions() {
        let params: Vec<&str> = row.params.iter().map(|(_, t)| t.name()).collect();
        let results: Vec<&str> = row.results.iter().map(|t| t.name()).collect();
        for module in row.imports.modules() {
            for init in [SnapshotInit::Plain, SnapshotInit::ReplayingCalls] {
                let outcome = create(module, row.name, &params, &results, init);
                let refused = match &outcome {
                    Err(snapshot::CreateError::Unsupported(why)) => {
                        why.contains(&format!("init called {}, which is not allowed while snapshotting", row.name))
                    }
                    _ => false,
                };
                assert_eq!(
                    refused,
                    !row.snapshot.allows(init),
                    "{module}.{} ({:?}) in a {init:?} init: {outcome:?}",
                    row.name,
                    row.snapshot
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked}");
    // The shared-data and queue rows are among the forbidden ones, in every init.
    let shared_rows: Vec<_> = hostcalls::host_functions().filter(|f| f.name.contains("_shared_")).collect();
    assert_eq!(shared_rows.len(), 6);
    assert!(shared_rows.iter().all(|f| f.snapshot == Snapshot::Forbidden), "{shared_rows:?}");
    // An `env` import thaw does not implement has no row, hence no policy that allows it.
    let unknown = create("env", "proxy_not_a_real_call", &["i32"], &["i32"], SnapshotInit::ReplayingCalls);
    assert!(format!("{unknown:?}").contains("init called proxy_not_a_real_call, which is not allowed"), "{unknown:?}");
}
