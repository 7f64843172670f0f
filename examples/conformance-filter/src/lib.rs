//! Conformance guest: the `x-conf` request header names the proxy-wasm area one request exercises.
//! The differential suite (integration/test_conformance.py) runs it under Envoy's own Wasm filter
//! (V8) and under thaw in the same Envoy binary and compares what the client and the upstream see.
//!
//! Areas: `headers`, `pairs`, `body`, `response-body`, `local-request-headers`,
//! `local-request-body`, `local-response-headers`, `properties`, `shared-data`, `queue`,
//! `metrics`, `log`, `foreign`, `buffer-edits`.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ConfRoot { metric: 0 }) });
}}

// Raw host calls, for reporting statuses the SDK's wrappers would panic on.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_replace_header_map_value(map: i32, key: *const u8, key_len: usize, value: *const u8, value_len: usize) -> i32;
    fn proxy_set_buffer_bytes(buffer: i32, start: usize, size: usize, data: *const u8, data_len: usize) -> i32;
    fn proxy_get_header_map_value(map: i32, key: *const u8, key_len: usize, value: *mut *mut u8, value_len: *mut usize) -> i32;
}

/// Statuses of reading and replacing a header of `map` now: "get/replace".
fn map_statuses(map: i32, key: &[u8]) -> String {
    let (mut ptr, mut len) = (std::ptr::null_mut::<u8>(), 0usize);
    let v = b"late";
    // SAFETY: pointers and lengths of live locals; a returned buffer is the guest's (leaked here).
    let get = unsafe { proxy_get_header_map_value(map, key.as_ptr(), key.len(), &mut ptr, &mut len) };
    // SAFETY: as above.
    let replace = unsafe { proxy_replace_header_map_value(map, b"x-conf-late".as_ptr(), 11, v.as_ptr(), v.len()) };
    format!("{get}/{replace}")
}

/// The status of replacing request header `x-conf-late` now.
fn late_header_status() -> i32 {
    let (k, v) = (b"x-conf-late", b"1");
    // SAFETY: pointers and lengths of live local byte strings.
    unsafe { proxy_replace_header_map_value(0, k.as_ptr(), k.len(), v.as_ptr(), v.len()) }
}

/// The status of writing `data` at `start` over `size` bytes of the request body.
fn set_request_body(start: usize, size: usize, data: &[u8]) -> i32 {
    // SAFETY: pointer and length of a live slice.
    unsafe { proxy_set_buffer_bytes(0, start, size, data.as_ptr(), data.len()) }
}

struct ConfRoot {
    metric: u32,
}

impl Context for ConfRoot {
    fn on_grpc_call_response(&mut self, _token: u32, status_code: u32, size: usize) {
        let body = self.get_grpc_call_response_body(0, size).unwrap_or_default();
        let summary = format!("status={status_code} body={}", String::from_utf8_lossy(&body));
        let _ = self.set_shared_data("conf-root-grpc", Some(summary.as_bytes()), None);
    }

    fn on_http_call_response(&mut self, _token: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let status = self.get_http_call_response_header(":status").unwrap_or_default();
        let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
        let summary = format!("status={status} body_has_path={}", String::from_utf8_lossy(&body).contains("/root-call"));
        let _ = self.set_shared_data("conf-root-call", Some(summary.as_bytes()), None);
    }
}

impl RootContext for ConfRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.metric = hostcalls::define_metric(MetricType::Counter, "conf_requests").unwrap_or(0);
        self.set_tick_period(std::time::Duration::from_millis(50));
        self.register_shared_queue("conf-ready-queue");
        // A configuration of exactly "reject" is refused (the config-rejection case).
        self.get_plugin_configuration().as_deref() != Some(b"reject")
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        // Move what arrived into shared data, where a later request can see it.
        if let Ok(Some(item)) = self.dequeue_shared_queue(queue_id) {
            let _ = self.set_shared_data("conf-queue-ready", Some(&item), None);
        }
    }

    fn on_tick(&mut self) {
        // Count ticks in shared data: visible to every instance of the plugin, in both hosts.
        let (value, cas) = self.get_shared_data("conf-ticks");
        let n = value.map(|v| String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0)).unwrap_or(0);
        let _ = self.set_shared_data("conf-ticks", Some((n + 1).to_string().as_bytes()), cas);
        // Once (give or take a racing VM): an HTTP call from the root context.
        if self.get_shared_data("conf-root-call-started").0.is_none() {
            let _ = self.set_shared_data("conf-root-call-started", Some(b"1"), None);
            let headers = vec![(":method", "GET"), (":path", "/root-call"), (":authority", "upstream")];
            let _ = self.dispatch_http_call("upstream", headers, None, vec![], std::time::Duration::from_secs(5));
            let _ = self.dispatch_grpc_call("grpc", "conf.Echo", "Say", vec![], Some(b"from root"), std::time::Duration::from_secs(5));
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Conf { area: String::new(), metric: self.metric, maps: Vec::new() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Conf {
    area: String,
    metric: u32,
    /// `maps` area: statuses collected along the stream; `grpc-stream` area: what the stream said.
    maps: Vec<String>,
}

impl Context for Conf {
    fn on_grpc_stream_initial_metadata(&mut self, _token: u32, _n: u32) {
        let grpc_status_present = self.get_grpc_stream_initial_metadata().iter().any(|(k, _)| k == "content-type");
        self.maps.push(format!("initial(content-type={grpc_status_present})"));
    }

    fn on_grpc_stream_message(&mut self, _token: u32, size: usize) {
        let message = self.get_grpc_stream_message(0, size).unwrap_or_default();
        self.maps.push(format!("message({})", String::from_utf8_lossy(&message)));
    }

    fn on_grpc_stream_trailing_metadata(&mut self, _token: u32, _n: u32) {
        let status = self.get_grpc_stream_trailing_metadata().into_iter().find(|(k, _)| k == "grpc-status").map(|(_, v)| v);
        self.maps.push(format!("trailing(grpc-status={})", String::from_utf8_lossy(&status.unwrap_or_default())));
    }

    fn on_grpc_stream_close(&mut self, _token: u32, status_code: u32) {
        self.maps.push(format!("close({status_code})"));
        let summary = self.maps.join(" ");
        self.set_http_request_header("x-conf-grpc-stream", Some(&summary));
        self.resume_http_request();
    }

    fn on_grpc_call_response(&mut self, _token: u32, status_code: u32, response_size: usize) {
        let summary = if status_code == 0 {
            let body = self.get_grpc_call_response_body(0, response_size).unwrap_or_default();
            format!("status=0 body={}", String::from_utf8_lossy(&body))
        } else {
            let (code, message) = self.get_grpc_status();
            format!("status={status_code} get_status={code} message={}", message.unwrap_or_default())
        };
        self.set_http_request_header("x-conf-grpc", Some(&summary));
        self.resume_http_request();
    }

    fn on_http_call_response(&mut self, _token: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        let status = self.get_http_call_response_header(":status").unwrap_or_default();
        let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
        let summary = format!("status={status} headers={} body={}", num_headers > 0, String::from_utf8_lossy(&body));
        self.set_http_request_header("x-conf-callout-result", Some(&summary));
        self.resume_http_request();
    }
}

fn reply(ctx: &Conf, status: u32, body: String) -> Action {
    ctx.send_http_response(status, vec![("content-type", "text/plain"), ("x-conf-area", ctx.area.as_str())], Some(body.as_bytes()));
    Action::Pause
}

fn status_name(r: Result<(), Status>) -> String {
    match r {
        Ok(()) => "Ok".into(),
        Err(s) => format!("{s:?}"),
    }
}

fn property(ctx: &Conf, path: &[&str]) -> String {
    match ctx.get_property(path.to_vec()) {
        None => "-".into(),
        Some(bytes) if path == ["source", "port"] || path == ["destination", "port"] || path == ["request", "size"] => {
            format!("int:{}", bytes.len())
        }
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

impl HttpContext for Conf {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.area = self.get_http_request_header("x-conf").unwrap_or_default();
        let _ = hostcalls::increment_metric(self.metric, 1);
        match self.area.as_str() {
            "headers" => {
                self.add_http_request_header("x-conf-added", "1");
                self.set_http_request_header("x-conf-replace", Some("replaced"));
                self.set_http_request_header("x-conf-remove", None);
                let seen = format!(
                    "{} {} {}",
                    self.get_http_request_header(":method").unwrap_or_default(),
                    self.get_http_request_header(":path").unwrap_or_default(),
                    self.get_http_request_header("x-conf-multi").unwrap_or_default()
                );
                self.set_http_request_header("x-conf-seen", Some(&seen));
                Action::Continue
            }
            "pairs" => {
                let mut names: Vec<String> = self
                    .get_http_request_headers()
                    .into_iter()
                    .map(|(k, _)| k)
                    .filter(|k| k.starts_with("x-conf") || k.starts_with(':'))
                    .collect();
                names.sort();
                let mut pairs = self.get_http_request_headers();
                pairs.retain(|(k, _)| k != "x-conf-drop");
                pairs.push(("x-conf-from-pairs".into(), "yes".into()));
                let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                self.set_http_request_headers(refs);
                self.set_http_request_header("x-conf-names", Some(&names.join(",")));
                Action::Continue
            }
            "local-request-headers" => reply(self, 418, "teapot from request headers".into()),
            "metadata" => {
                // Values other filters left: dynamic metadata (set_metadata filter), route metadata,
                // filter state; raw bytes in hex, so a number's 8-byte double and a bool's byte show.
                let paths: [&[&str]; 7] = [
                    &["metadata", "filter_metadata", "conf.meta", "user"],
                    &["metadata", "filter_metadata", "conf.meta", "level"],
                    &["metadata", "filter_metadata", "conf.meta", "admin"],
                    &["metadata", "filter_metadata", "conf.meta", "missing"],
                    &["metadata", "filter_metadata", "no.such.namespace", "user"],
                    &["xds", "route_metadata", "filter_metadata", "conf.route", "owner"],
                    &["filter_state", "conf.state"],
                ];
                let body = paths
                    .iter()
                    .map(|p| {
                        let value = match self.get_property(p.to_vec()) {
                            None => "-".to_string(),
                            Some(bytes) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
                        };
                        format!("{}={value}", p.join("."))
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                reply(self, 200, body)
            }
            "properties" => {
                let body = ["request.path", "request.url_path", "request.method", "request.scheme", "request.protocol", "request.query", "plugin_root_id", "source.port", "response.code", "no.such.property"]
                    .iter()
                    .map(|p| format!("{p}={}", property(self, &p.split('.').collect::<Vec<_>>())))
                    .collect::<Vec<_>>()
                    .join("\n");
                reply(self, 200, body)
            }
            "shared-data" => {
                let (value, cas) = self.get_shared_data("conf-counter");
                let n = value.map(|v| String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0)).unwrap_or(0);
                let first = status_name(self.set_shared_data("conf-counter", Some((n + 1).to_string().as_bytes()), cas));
                let stale = status_name(self.set_shared_data("conf-counter", Some(b"stale"), cas.map(|c| c.wrapping_add(100)).or(Some(999))));
                let (after, _) = self.get_shared_data("conf-counter");
                let missing = self.get_shared_data("conf-missing").0.is_none();
                reply(self, 200, format!("before={n} set={first} stale_cas={stale} after={} missing={missing}", String::from_utf8_lossy(&after.unwrap_or_default())))
            }
            "queue" => {
                let id = self.register_shared_queue("conf-queue");
                let resolved = self.resolve_shared_queue("", "conf-queue");
                let empty = self.dequeue_shared_queue(id);
                let enq = status_name(self.enqueue_shared_queue(id, Some(b"item-1")));
                let got = self.dequeue_shared_queue(id);
                reply(
                    self,
                    200,
                    format!(
                        "resolved={} empty={:?} enqueue={enq} dequeued={:?}",
                        resolved == Some(id),
                        empty.map(|v| v.is_none()),
                        got.map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                    ),
                )
            }
            "metrics" => {
                let value = hostcalls::get_metric(self.metric);
                let bad = hostcalls::get_metric(9999);
                let gauge = hostcalls::define_metric(MetricType::Gauge, "conf_gauge");
                let gauge_set = gauge.and_then(|g| hostcalls::record_metric(g, 7).map(|_| g)).and_then(|g| hostcalls::get_metric(g));
                reply(self, 200, format!("counter_positive={} unknown={:?} gauge={:?}", value.map(|v| v > 0).unwrap_or(false), bad.err(), gauge_set))
            }
            "log" => {
                log::trace!("conf trace");
                log::info!("conf info line");
                log::warn!("conf warn line");
                let level = hostcalls::get_log_level();
                reply(self, 200, format!("level_ok={}", level.is_ok()))
            }
            "root-call-check" => {
                let (value, _) = self.get_shared_data("conf-root-call");
                let (grpc, _) = self.get_shared_data("conf-root-grpc");
                let grpc = String::from_utf8_lossy(&grpc.unwrap_or_default()).into_owned();
                reply(self, 200, format!("root_call={} root_grpc={grpc}", String::from_utf8_lossy(&value.unwrap_or_default())))
            }
            "queue-ready" => {
                let queued = match self.resolve_shared_queue("", "conf-ready-queue") {
                    Some(id) => status_name(self.enqueue_shared_queue(id, Some(b"delivered"))),
                    None => "unresolved".into(),
                };
                reply(self, 200, format!("enqueue={queued}"))
            }
            "queue-ready-check" => {
                let (value, _) = self.get_shared_data("conf-queue-ready");
                reply(self, 200, format!("seen={}", String::from_utf8_lossy(&value.unwrap_or_default())))
            }
            "ticks" => {
                let (value, _) = self.get_shared_data("conf-ticks");
                let n = value.map(|v| String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0)).unwrap_or(0);
                reply(self, 200, format!("ticked={}", n >= 3))
            }
            "foreign" => {
                let r = hostcalls::call_foreign_function("thaw_no_such_function", Some(b"args"));
                reply(self, 200, format!("foreign={:?}", r.err()))
            }
            "body" | "local-request-body" | "buffer-edits" if end_of_stream => reply(self, 400, "expected a body".into()),
            // The body changes length: the framing header must go (Envoy re-frames the request).
            "buffer-edits" => {
                self.set_http_request_header("content-length", None);
                Action::Continue
            }
            "maps" => {
                self.maps.push(format!("req-headers:req={}", map_statuses(0, b":path")));
                Action::Continue
            }
            "http-call" => {
                let headers = vec![(":method", "GET"), (":path", "/callout?from=guest"), (":authority", "upstream"), ("x-conf-callout", "1")];
                match self.dispatch_http_call("upstream", headers, Some(b"call body"), vec![], std::time::Duration::from_secs(5)) {
                    Ok(_) => Action::Pause,
                    Err(status) => reply(self, 500, format!("dispatch failed: {status:?}")),
                }
            }
            "grpc-call" | "grpc-fail" => {
                let method = if self.area == "grpc-call" { "Say" } else { "Fail" };
                let metadata: Vec<(&str, &[u8])> = vec![("x-conf-meta", b"m1")];
                match self.dispatch_grpc_call("grpc", "conf.Echo", method, metadata, Some(b"hello grpc"), std::time::Duration::from_secs(5)) {
                    Ok(_) => Action::Pause,
                    Err(status) => reply(self, 500, format!("grpc dispatch failed: {status:?}")),
                }
            }
            "grpc-stream" => {
                let metadata: Vec<(&str, &[u8])> = vec![("x-conf-meta", b"m1")];
                match self.open_grpc_stream("grpc", "conf.Echo", "Chat", metadata) {
                    Ok(token) => {
                        self.send_grpc_stream_message(token, Some(b"one"), false);
                        self.send_grpc_stream_message(token, Some(b"two"), true);
                        Action::Pause
                    }
                    Err(status) => reply(self, 500, format!("grpc stream failed: {status:?}")),
                }
            }
            "http-call-bad-cluster" => {
                let headers = vec![(":method", "GET"), (":path", "/"), (":authority", "x")];
                let result = self.dispatch_http_call("no-such-cluster", headers, None, vec![], std::time::Duration::from_secs(1));
                reply(self, 200, format!("dispatch={:?}", result.err()))
            }
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.area.as_str() {
            "body" => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = self.get_http_request_body(0, body_size).unwrap_or_default();
                let upper: Vec<u8> = body.to_ascii_uppercase();
                self.set_http_request_body(0, body_size, &upper);
                Action::Continue
            }
            "buffer-edits" => {
                if !end_of_stream {
                    return Action::Pause;
                }
                // Every set_buffer_bytes shape, each status recorded: prepend (0, 0), replace a
                // prefix (0, n), append (start >= length), and the middle (1, 1).
                let prepend = set_request_body(0, 0, b"<");
                let prefix = set_request_body(0, 2, b"[[");
                let size = self.get_http_request_body(0, body_size + 16).map(|b| b.len()).unwrap_or(0);
                let append = set_request_body(size, 0, b">");
                let middle_write = set_request_body(1, 1, b"?");
                let middle = self.get_http_request_body(1, 3).unwrap_or_default();
                let report = format!(
                    "|prepend={prepend} prefix={prefix} append={append} middle_write={middle_write} read_middle={} late_header={}",
                    String::from_utf8_lossy(&middle),
                    late_header_status()
                );
                let now = self.get_http_request_body(0, body_size + 64).map(|b| b.len()).unwrap_or(0);
                set_request_body(now, 0, report.as_bytes());
                Action::Continue
            }
            "maps" => {
                self.maps.push(format!("req-body:req={},resp={}", map_statuses(0, b":path"), map_statuses(2, b":status")));
                Action::Continue
            }
            "local-request-body" if end_of_stream => {
                let body = self.get_http_request_body(0, body_size).unwrap_or_default();
                reply(self, 413, format!("saw {} bytes", body.len()))
            }
            "local-request-body" => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.area == "trailers" {
            let seen = self.get_http_request_trailer("x-client-trailer").unwrap_or_default();
            self.set_http_request_trailer("x-client-trailer", Some(&format!("seen-{seen}")));
            self.add_http_request_trailer("x-conf-req-trailer", "added");
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.area == "trailers" {
            let seen = self.get_http_response_trailer("x-upstream-trailer").unwrap_or_default();
            self.add_http_response_trailer("x-conf-resp-trailer", &format!("{seen}-seen"));
            self.set_http_response_trailer("x-upstream-trailer", None);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match self.area.as_str() {
            "headers" | "pairs" => {
                self.set_http_response_header("x-conf-response", Some("seen"));
                let status = self.get_http_response_header(":status").unwrap_or_default();
                self.add_http_response_header("x-conf-upstream-status", &status);
                Action::Continue
            }
            "local-response-headers" => reply(self, 451, "from response headers".into()),
            "response-body" => {
                self.set_http_response_header("content-length", None);
                Action::Continue
            }
            "maps" => {
                self.maps.push(format!("resp-headers:req={},resp={}", map_statuses(0, b":path"), map_statuses(2, b":status")));
                self.set_http_response_header("content-length", None);
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.area == "maps" && end_of_stream {
            self.maps.push(format!("resp-body:req={},resp={}", map_statuses(0, b":path"), map_statuses(2, b":status")));
            let report = self.maps.join(" ");
            self.set_http_response_body(0, body_size, report.as_bytes());
            return Action::Continue;
        }
        if self.area != "response-body" {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_response_body(0, body_size).unwrap_or_default();
        let mut out = b"[".to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(b"]");
        self.set_http_response_body(0, body_size, &out);
        Action::Continue
    }
}
