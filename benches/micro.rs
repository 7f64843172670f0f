//! In-process micro-benchmarks (scenario 6 of BENCHMARKS.md): signature check, deserialize,
//! instantiate (fresh with init, and resumed from a snapshot), and one `proxy_on_request_headers`
//! call through the host, per guest artifact. Prints a markdown table of medians with their
//! spread (p10-p90) over repeated samples. Run: `cargo bench --bench micro` (guests in
//! build/guests or $THAW_GUESTS).
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::time::Instant;
use thaw::artifact::{ArtifactDigest, VerifiedArtifact};
use thaw::config::{InstancePolicy, TenantConfig, TenantId};
use thaw::engine::{self, Target};
use thaw::proxy_wasm::Plugin;
use thaw::stream::{Callouts, HeaderKind, HeaderPair, HttpStream, LocalReply};
use thaw::telemetry::{Metric, StatsSink};
use thaw::trust::signature::{self, PrivateKey, TrustedKey};
use thaw::trust::{Evidence, Trust};

#[derive(Clone)]
struct Stream(Vec<HeaderPair>);

impl StatsSink for Stream {
    fn record(&mut self, _: Metric, _: &TenantId, _: i64) {}
}

impl Callouts for Stream {}

impl HttpStream for Stream {
    fn header_values(&self, _: HeaderKind, key: &[u8]) -> Option<Vec<Vec<u8>>> {
        Some(self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect())
    }
    fn headers(&self, _: HeaderKind) -> Option<Vec<HeaderPair>> {
        Some(self.0.clone())
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

/// Median and p10-p90 of `samples` runs of `f`, each timing `inner` iterations, in microseconds.
fn measure(samples: usize, inner: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    let mut per_op: Vec<f64> = (0..samples)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..inner {
                f();
            }
            started.elapsed().as_secs_f64() * 1e6 / inner as f64
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    let at = |q: f64| per_op[((per_op.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

fn cell((median, low, high): (f64, f64, f64)) -> String {
    format!("{median:.2} ({low:.2}-{high:.2})")
}

fn stream_for_request() -> Stream {
    Stream(vec![(b"authorization".to_vec(), b"Bearer s3cret".to_vec()), (b":path".to_vec(), b"/".to_vec())])
}

/// One request on a fresh instance of `plugin`, as `per_request` serves it: instantiate (or
/// resume), create the HTTP context, `proxy_on_request_headers`, end the context, drop.
#[inline(never)]
fn one_request(plugin: &Plugin) {
    let mut instance = plugin.instantiate().unwrap();
    let context = instance.create_http_context().unwrap();
    instance.on_request_headers(Box::new(stream_for_request()), context, 2, true).unwrap();
    instance.finish_http_context(None, context).unwrap();
}

/// One request on `instance`, reused, as `pooled` serves it: create the HTTP context,
/// `proxy_on_request_headers`, end the context.
#[inline(never)]
fn reused_request(instance: &mut thaw::proxy_wasm::GuestInstance) {
    let context = instance.create_http_context().unwrap();
    instance.on_request_headers(Box::new(stream_for_request()), context, 2, true).unwrap();
    instance.take_effects();
    instance.finish_http_context(None, context).unwrap();
}

fn main() {
    let guests = std::env::var_os("THAW_GUESTS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("build/guests"));
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate();
    let public = dir.path().join("k.pub");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let keys = vec![TrustedKey::load(&public).unwrap()];
    // `THAW_MICRO_PER_REQUEST_ONLY=N`: only N requests of auth-filter, served as
    // `THAW_MICRO_MODE` says (`resumed`, the default: per_request from the snapshot; `fresh`:
    // per_request with init; `reused`: one instance, as pooled), then exit. For
    // `valgrind --tool=callgrind --toggle-collect='micro::one_request*' --toggle-collect='micro::reused_request*'`
    // (instructions per request, a figure that does not drift with machine load; bench.py
    // reports it) and for `perf record`.
    let only_per_request = std::env::var("THAW_MICRO_PER_REQUEST_ONLY").ok().and_then(|n| n.parse::<usize>().ok());
    let mode = std::env::var("THAW_MICRO_MODE").unwrap_or_else(|_| "resumed".into());
    // Under valgrind the reservation for the default slots cannot be made (run it with
    // RUST_BACKTRACE=0: with two slots, allocation waits on the decommit batch through an error).
    let runtime = if only_per_request.is_some() { engine::runtime_engine_sized(2) } else { engine::runtime_engine() }.unwrap();
    let compile = engine::compile_engine(Target::host()).unwrap();
    println!("| guest | .wasm | .cwasm | signature check (us) | deserialize (us) | instantiate + init (us) | resume from snapshot (us) | on_request_headers (us) | per_request: fresh + request + drop (us) | same, resumed from snapshot (us) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (guest, plugin_config) in [("auth-filter", r#"{"tokens":{"s3cret":"alice"}}"#), ("heavy-init-filter", r#"{"entries":100000}"#)] {
        let wasm = std::fs::read(guests.join(format!("{guest}.wasm"))).expect("guest .wasm (run ./bazel-free-build.sh build)");
        let cwasm = compile.precompile_module(&wasm).unwrap();
        let path = dir.path().join(format!("{guest}.cwasm"));
        std::fs::write(&path, &cwasm).unwrap();
        let sig_path = dir.path().join(format!("{guest}.sig"));
        std::fs::write(&sig_path, key.sign(&cwasm)).unwrap();
        let sig = signature::parse_signature(&signature::read_signature_text(&sig_path).unwrap()).unwrap();

        let verify = measure(30, 10, || {
            signature::verify(&keys, &cwasm, &sig, &sig_path).unwrap();
        });
        let trust = Trust::load(&thaw::config::TrustSettings::keys(vec![public.clone()])).unwrap();
        let artifact = VerifiedArtifact::read(&path, &Evidence::detached(&sig_path), &trust).unwrap();
        let deserialize = measure(30, 10, || {
            thaw::native::load_artifact(runtime, &artifact, false).unwrap();
        });
        let tenant = TenantConfig {
            id: TenantId::try_from(guest).unwrap(),
            module: path.clone(),
            evidence: thaw::trust::Evidence::detached(sig_path.clone()),
            plugin_config: plugin_config.as_bytes().to_vec(),
            vm_config: Vec::new(),
            root_id: String::new(),
            instances: InstancePolicy { call_deadline_ms: 10_000, ..InstancePolicy::DEFAULT },
            snapshot_source: None,
        };
        let (module, _) = thaw::native::load_artifact(runtime, &artifact, false).unwrap();
        let plugin = Plugin::new(runtime, &tenant, module, ArtifactDigest::of(&cwasm)).unwrap();
        let fresh = measure(30, 5, || drop(plugin.instantiate().unwrap()));
        let snapshot = thaw::snapshot::create(runtime, &tenant, &wasm, ArtifactDigest::of(&wasm), None).unwrap();
        let snap_module = thaw::native::load_created(runtime, &snapshot).unwrap();
        let resumed = Plugin::resumed(runtime, &tenant, snap_module, ArtifactDigest::of(&wasm), snapshot.host().clone()).unwrap();
        let resume = measure(30, 50, || drop(resumed.instantiate().unwrap()));
        if let Some(n) = only_per_request {
            match mode.as_str() {
                "fresh" => (0..n).for_each(|_| one_request(&plugin)),
                "reused" => {
                    let mut instance = plugin.instantiate().unwrap();
                    (0..n).for_each(|_| reused_request(&mut instance));
                }
                _ => (0..n).for_each(|_| one_request(&resumed)),
            }
            return;
        }
        let per_request = |plugin: &Plugin| measure(30, 50, || one_request(plugin));
        let fresh_request = per_request(&plugin);
        let resumed_request = per_request(&resumed);
        let mut instance = plugin.instantiate().unwrap();
        let call = measure(30, 200, || reused_request(&mut instance));
        println!(
            "| {guest} | {} KiB | {} KiB | {} | {} | {} | {} | {} | {} | {} |",
            wasm.len() / 1024,
            cwasm.len() / 1024,
            cell(verify),
            cell(deserialize),
            cell(fresh),
            cell(resume),
            cell(call),
            cell(fresh_request),
            cell(resumed_request)
        );
    }
}
