//! The hostcall surface: the harness guest (`examples/c/c-fuzz-hostcalls.c`), compiled with thaw's
//! engine, signed with the fuzz-only key and loaded through the real load path
//! (`FilterConfig::load_json`: verify, check the engine, deserialize, link, init), replays a
//! fuzzer-chosen hostcall script in every callback of a stream the filter (`StreamFilter`) drives
//! over a fake Envoy stream (`thaw_fuzz::stream::FuzzStream`), in a fuzzer-chosen order of
//! phases, with answers to the calls it started.
//!
//! Input: two control bytes (tenant and phases, see `Phases`), then the script, which the guest
//! reads from the request header `x-fuzz-script`.
//!
//! What must hold: no panic anywhere (libFuzzer aborts on one, caught or not); the guest never
//! fails, as it never traps on its own (a host that turns a guest's mistake into a trap, answers
//! OK with a buffer outside memory or a malformed header map, or overruns is caught this way); at
//! most one local reply, and a request callback that replied answers Stop; no instance refused;
//! a per-request tenant's instance memory is all released when its stream ends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use thaw::filter::{CallStreamEvent, FilterConfig, StreamFilter, Verdict};
use thaw::stream::{CallResponse, Direction, HeaderPair};
use thaw::telemetry::{LogLevel, LogSink, Metric, NoStats};
use thaw_fuzz::stream::FuzzStream;

/// Metrics that say a guest failed or an instance could not be had.
const FAILURES: [Metric; 7] = [
    Metric::GuestTrap,
    Metric::DeadlineExceeded,
    Metric::MemoryCapHit,
    Metric::StackOverflow,
    Metric::InstanceRefused,
    Metric::Quarantine,
    Metric::QuarantinedRequest,
];

fn config() -> &'static Arc<FilterConfig> {
    static CONFIG: OnceLock<Arc<FilterConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        // thaw's own errors only: the harness makes the host warn on purpose (unimplemented
        // imports, ...) and write guest stdout/stderr (`wasm [tenant] ...` lines) by the thousand.
        thaw::telemetry::install_log_sink(LogSink {
            log: |level, message| {
                if level >= LogLevel::Error && message.starts_with("thaw") {
                    eprintln!("[thaw][{level:?}] {message}")
                }
            },
            lowest_enabled: || LogLevel::Error,
        });
        let wasm = thaw_fuzz::guest("c-fuzz-hostcalls.wasm");
        let cwasm = thaw::engine::compile_for(thaw::engine::Target::host(), &wasm).expect("compiling the harness guest");
        let dir = thaw_fuzz::scratch();
        let (module, signature) = (dir.join("c-fuzz-hostcalls.cwasm"), dir.join("c-fuzz-hostcalls.cwasm.sig"));
        std::fs::write(&module, &cwasm).unwrap();
        std::fs::write(&signature, thaw_fuzz::fuzz_key().sign(&cwasm)).unwrap();
        let tenant = |isolation: &str| {
            serde_json_like(&[
                ("module", module.display().to_string()),
                ("signature", signature.display().to_string()),
                ("isolation", isolation.into()),
                ("plugin_config", "fuzz plugin configuration".into()),
            ])
        };
        let json = format!(
            r#"{{"trusted_keys": ["{key}"], "tenant_from": {{"header": "x-tenant"}}, "max_live_instances": 16,
                "tenants": {{"fresh": {fresh}, "pooled": {pooled}}}}}"#,
            key = thaw_fuzz::fuzz_public_key().display(),
            fresh = tenant("per_request").replace('}', r#", "call_deadline_ms": 60000}"#),
            pooled = tenant("pooled").replace('}', r#", "call_deadline_ms": 60000, "max_instances": 1}"#),
        );
        Arc::new(FilterConfig::load_json("fuzz", json.as_bytes(), &mut NoStats).expect("loading the harness guest"))
    })
}

/// A flat JSON object of strings (paths and names here need no escaping).
fn serde_json_like(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!(r#""{k}": "{v}""#)).collect();
    format!("{{{}}}", body.join(", "))
}

/// One step of the stream: a filter callback, as Envoy would call it.
type Step<'a> = &'a dyn Fn(&mut StreamFilter, &FuzzStream) -> Option<Verdict>;

/// What the two control bytes choose.
struct Phases(u16);

impl Phases {
    fn bit(&self, i: u32) -> bool {
        self.0 >> i & 1 == 1
    }
}

fn pair(k: &str, v: &[u8]) -> HeaderPair {
    (k.as_bytes().to_vec(), v.to_vec())
}

/// Runs one stream through the filter as the control bits say; returns it, with what it saw.
fn drive(phases: &Phases, script: &[u8]) -> FuzzStream {
    let config = config();
    let pooled = phases.bit(0);
    let mut request = vec![
        pair(":method", b"POST"),
        pair(":path", b"/fuzz"),
        pair(":scheme", b"http"),
        pair(":authority", b"fuzz"),
        pair("x-tenant", if pooled { b"pooled" } else { b"fresh" }),
        pair("x-fuzz-script", script),
    ];
    if phases.bit(11) {
        request.push(pair("content-type", b"application/grpc"));
    }
    let maps = [
        request,
        vec![pair("x-request-trailer", b"1")],
        vec![pair(":status", b"200"), pair("content-type", b"text/plain")],
        vec![pair("x-response-trailer", b"1")],
    ];
    let mut stream = FuzzStream::new(maps, [b"request body".to_vec(), b"response body".to_vec()]);
    let mut filter = StreamFilter::new(Arc::clone(config));

    // One step of the stream, as Envoy would call it, and what must hold after it.
    let step = |filter: &mut StreamFilter, stream: &mut FuzzStream, request_side: bool, verdict: Option<Verdict>| {
        let before = stream.replies();
        filter.flush(stream);
        let after = stream.replies();
        assert!(after <= 1, "{after} local replies on one stream");
        if let (true, Some(v)) = (request_side && after > before, verdict) {
            assert_eq!(v, Verdict::Stop, "a request callback that replied must stop the request");
        }
        // Envoy ends the stream after a reply or a reset.
        after == 0 && !stream.is_reset()
    };

    let eos = phases.bit(1);
    let v = filter.on_request_headers(stream.clone(), eos);
    let mut live = step(&mut filter, &mut stream, true, Some(v));
    let order: [(u32, Step, bool); 5] = [
        (2, &|f: &mut StreamFilter, s: &FuzzStream| Some(f.on_body(s.clone(), Direction::Request, !phases.bit(3))), true),
        (3, &|f: &mut StreamFilter, s: &FuzzStream| Some(f.on_trailers(s.clone(), Direction::Request)), true),
        (4, &|f: &mut StreamFilter, s: &FuzzStream| Some(f.on_response_headers(s.clone(), !phases.bit(5) && !phases.bit(6))), false),
        (5, &|f: &mut StreamFilter, s: &FuzzStream| Some(f.on_body(s.clone(), Direction::Response, !phases.bit(6))), false),
        (6, &|f: &mut StreamFilter, s: &FuzzStream| Some(f.on_trailers(s.clone(), Direction::Response)), false),
    ];
    let mut answered = 0;
    for (i, (bit, run, request_side)) in order.iter().enumerate() {
        if !live {
            break;
        }
        if i < 2 && eos {
            continue;
        }
        if phases.bit(*bit) {
            let v = run(&mut filter, &stream);
            live = step(&mut filter, &mut stream, *request_side, v);
        }
        // Answer the calls started so far, between phases, as Envoy delivers them.
        if live && phases.bit(7 + (i as u32 % 2)) {
            let (calls, streams) = {
                let s = stream.0.borrow();
                (s.http_calls[answered.min(s.http_calls.len())..].to_vec(), s.call_streams.clone())
            };
            answered += calls.len();
            for id in calls {
                let response = phases.bit(9).then(|| CallResponse {
                    headers: vec![pair(":status", b"200"), pair("x-answer", &id.to_le_bytes())],
                    body: script.iter().rev().take(64).copied().collect(),
                    trailers: vec![pair("x-trailer", b"t")],
                });
                filter.on_http_call_response(stream.clone(), id, response);
                live = step(&mut filter, &mut stream, false, None);
                if !live {
                    break;
                }
            }
            for id in streams {
                if !live {
                    break;
                }
                let events = if phases.bit(10) {
                    vec![CallStreamEvent::Reset]
                } else {
                    // One gRPC message (uncompressed flag, length, bytes), then the status.
                    let message: Vec<u8> = script.iter().take(32).copied().collect();
                    let mut frame = vec![0];
                    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
                    frame.extend_from_slice(&message);
                    vec![
                        CallStreamEvent::Headers(vec![pair(":status", b"200"), pair("content-type", b"application/grpc")]),
                        CallStreamEvent::Data(frame),
                        CallStreamEvent::Trailers(vec![pair("grpc-status", b"0")]),
                        CallStreamEvent::Complete,
                    ]
                };
                for event in events {
                    filter.on_call_stream(stream.clone(), id, event);
                    live = step(&mut filter, &mut stream, false, None);
                    if !live {
                        break;
                    }
                }
            }
        }
    }
    if !stream.is_reset() && !phases.bit(12) {
        filter.on_stream_complete(stream.clone());
        filter.flush(&mut stream);
    }
    filter.on_destroy();
    stream
}

fuzz_target!(|data: &[u8]| {
    let Some((control, script)) = data.split_first_chunk::<2>() else { return };
    let phases = Phases(u16::from_le_bytes(*control));
    let live_before = thaw::proxy_wasm::host::live_bytes();
    let stream = drive(&phases, script);
    for metric in FAILURES {
        assert_eq!(stream.metric(metric), 0, "{metric:?}: the harness guest failed or had no instance (see the log above)");
    }
    if !phases.bit(0) {
        assert_eq!(thaw::proxy_wasm::host::live_bytes(), live_before, "a per-request instance's memory outlived its stream");
    }
    assert!(thaw::proxy_wasm::host::live_bytes() <= thaw::proxy_wasm::host::budget_bytes());
});
