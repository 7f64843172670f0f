//! Enforcement guest ("ask the auth service, then decide"), for `integration/test_enforcement*.py`.
//!
//! Request headers choose the behaviour of each request:
//! - `x-decide-phase`: where the decision is taken: `request-headers`, `request-body` (at end of
//!   stream), `request-trailers`, `call-response` / `grpc-response` (when the callout answers),
//!   `response-headers`, `response-body` (at end of stream). Absent or unknown: no decision,
//!   unless a callout (http, grpc) is made: then its answer decides.
//! - `x-decide`: `allow` or `deny`. With a callout the auth service echoes it back and its answer
//!   is the verdict (anything but a 200 / OK answer of `allow` denies).
//! - `x-decide-call`: `none`, `http` (cluster `auth`), `grpc` (cluster `grpc`, `auth.Decider/Check`),
//!   `http-abandon` (an HTTP call nobody waits for). A real callout is made from the request headers
//!   (Pause until it answers), or from the response headers for the response phases.
//! - `x-auth-delay-ms`: passed to the auth service on the callout (it answers after that long).
//! - `x-decide-status` (default 403), `x-decide-grpc-status` (a number, or `none` = -1, the
//!   default), `x-decide-message` (default `denied by decision-filter at <phase>`): the denial.
//!
//! Allowing in the request headers or at the callout adds the request headers `x-decision: allowed`
//! and `x-decision-empty: ""` (an empty value; a host refusing it is reported in
//! `x-decision-empty-failed: <status>`). Every response (the guest's own local replies included)
//! gets `x-decision-saw-response: 1` in `on_http_response_headers`.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::*;
use proxy_wasm::types::*;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(DecisionRoot) });
}}

// The SDK's wrappers panic on a non-OK status and pass no gRPC status: these are called directly.
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_add_header_map_value(map_type: u32, key_data: *const u8, key_size: usize, value_data: *const u8, value_size: usize) -> u32;
}

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    None,
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    CallResponse,
    ResponseHeaders,
    ResponseBody,
}

impl Phase {
    fn parse(value: Option<&str>) -> Phase {
        match value {
            Some("request-headers") => Phase::RequestHeaders,
            Some("request-body") => Phase::RequestBody,
            Some("request-trailers") => Phase::RequestTrailers,
            Some("call-response") | Some("grpc-response") => Phase::CallResponse,
            Some("response-headers") => Phase::ResponseHeaders,
            Some("response-body") => Phase::ResponseBody,
            _ => Phase::None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Phase::None => "none",
            Phase::RequestHeaders => "request-headers",
            Phase::RequestBody => "request-body",
            Phase::RequestTrailers => "request-trailers",
            Phase::CallResponse => "call-response",
            Phase::ResponseHeaders => "response-headers",
            Phase::ResponseBody => "response-body",
        }
    }

    fn is_response_side(self) -> bool {
        matches!(self, Phase::ResponseHeaders | Phase::ResponseBody)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Call {
    None,
    Http,
    Grpc,
    HttpAbandon,
}

struct DecisionRoot;

impl Context for DecisionRoot {}

impl RootContext for DecisionRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Decision {
            phase: Phase::None,
            call: Call::None,
            wants_allow: true,
            call_verdict: None,
            delay_ms: String::from("0"),
            deny_status: 403,
            deny_grpc_status: -1,
            deny_message: None,
            abandoned_token: None,
            replied: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Decision {
    phase: Phase,
    call: Call,
    /// `x-decide: allow`.
    wants_allow: bool,
    /// The auth service's answer (true = allow), once it came.
    call_verdict: Option<bool>,
    delay_ms: String,
    deny_status: u32,
    deny_grpc_status: i32,
    deny_message: Option<String>,
    /// The token of an `http-abandon` call: its answer, if it comes, is ignored.
    abandoned_token: Option<u32>,
    /// This guest sent a local reply (its own reply then passes the response callbacks).
    replied: bool,
}

fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

impl Decision {
    fn read_request_choices(&mut self) {
        let header = |name: &str| hostcalls::get_map_value(MapType::HttpRequestHeaders, name).ok().flatten();
        self.phase = Phase::parse(header("x-decide-phase").as_deref());
        self.wants_allow = header("x-decide").as_deref() != Some("deny");
        self.call = match header("x-decide-call").as_deref() {
            Some("http") => Call::Http,
            Some("grpc") => Call::Grpc,
            Some("http-abandon") => Call::HttpAbandon,
            _ => Call::None,
        };
        self.delay_ms = header("x-auth-delay-ms").unwrap_or_else(|| "0".into());
        self.deny_status = header("x-decide-status").and_then(|s| s.parse().ok()).unwrap_or(403);
        self.deny_grpc_status = header("x-decide-grpc-status").and_then(|s| s.parse().ok()).unwrap_or(-1);
        self.deny_message = header("x-decide-message");
    }

    fn allowed(&self) -> bool {
        self.call_verdict.unwrap_or(self.wants_allow)
    }

    fn verdict_word(&self) -> &'static str {
        if self.wants_allow {
            "allow"
        } else {
            "deny"
        }
    }

    /// Starts the callout `call` (HTTP or gRPC); its token.
    fn dispatch(&mut self, call: Call) -> Result<u32, Status> {
        match call {
            Call::Grpc => {
                let metadata: Vec<(&str, &[u8])> = vec![("x-auth-delay-ms", self.delay_ms.as_bytes())];
                self.dispatch_grpc_call("grpc", "auth.Decider", "Check", metadata, Some(self.verdict_word().as_bytes()), CALL_TIMEOUT)
            }
            _ => {
                let headers = vec![
                    (":method", "GET"),
                    (":path", "/check"),
                    (":authority", "auth"),
                    ("x-auth-delay-ms", self.delay_ms.as_str()),
                    ("x-auth-verdict", self.verdict_word()),
                ];
                self.dispatch_http_call("auth", headers, None, vec![], CALL_TIMEOUT)
            }
        }
    }

    fn deny(&mut self, at: Phase) {
        self.replied = true;
        let body = self.deny_message.clone().unwrap_or_else(|| format!("denied by decision-filter at {}", at.name()));
        let headers = serialize_pairs(&[("content-type", "text/plain"), ("x-decision", "denied")]);
        let status = unsafe {
            proxy_send_local_response(self.deny_status, std::ptr::null(), 0, body.as_ptr(), body.len(), headers.as_ptr(), headers.len(), self.deny_grpc_status)
        };
        if status != 0 {
            log::warn!("decision-filter: proxy_send_local_response answered {status}");
        }
    }

    /// Makes this request's callout and pauses until it answers (or fails the request).
    fn pause_for_callout(&mut self) -> Action {
        if let Err(status) = self.dispatch(self.call) {
            self.fail("call dispatch failed", status);
        }
        Action::Pause
    }

    fn fail(&mut self, what: &str, status: Status) {
        self.replied = true;
        self.send_http_response(500, vec![("x-decision", "error")], Some(format!("{what}: {status:?}").as_bytes()));
    }

    fn add_allowed_request_headers(&self) {
        self.add_http_request_header("x-decision", "allowed");
        let (name, value) = ("x-decision-empty", "");
        let status = unsafe {
            proxy_add_header_map_value(MapType::HttpRequestHeaders as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len())
        };
        if status != 0 {
            self.add_http_request_header("x-decision-empty-failed", &status.to_string());
        }
    }

    /// A decision in a request callback that holds the request headers.
    fn decide_with_request_headers(&mut self) -> Action {
        if self.allowed() {
            self.add_allowed_request_headers();
            Action::Continue
        } else {
            self.deny(self.phase);
            Action::Pause
        }
    }

    /// A decision at the end of the request body or at the trailers.
    fn decide_late_in_request(&mut self, at: Phase) -> Action {
        if self.allowed() {
            Action::Continue
        } else {
            self.deny(at);
            Action::Pause
        }
    }

    fn on_callout_answer(&mut self, allow: bool) {
        self.call_verdict = Some(allow);
        match self.phase {
            Phase::ResponseHeaders => {
                if allow {
                    self.add_http_response_header("x-decision", "allowed");
                    self.resume_http_response();
                } else {
                    self.deny(Phase::ResponseHeaders);
                }
            }
            Phase::ResponseBody => self.resume_http_response(),
            Phase::RequestBody | Phase::RequestTrailers => self.resume_http_request(),
            _ => {
                if allow {
                    self.add_allowed_request_headers();
                    self.resume_http_request();
                } else {
                    self.deny(Phase::CallResponse);
                }
            }
        }
    }

    fn waits_for_callout(&self) -> bool {
        matches!(self.call, Call::Http | Call::Grpc)
    }
}

impl Context for Decision {
    fn on_http_call_response(&mut self, token: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        if self.abandoned_token == Some(token) || self.replied {
            return;
        }
        let status = self.get_http_call_response_header(":status").unwrap_or_default();
        let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
        self.on_callout_answer(status == "200" && body == b"allow");
    }

    fn on_grpc_call_response(&mut self, _token: u32, status_code: u32, response_size: usize) {
        if self.replied {
            return;
        }
        let body = if status_code == 0 { self.get_grpc_call_response_body(0, response_size).unwrap_or_default() } else { Vec::new() };
        self.on_callout_answer(body == b"allow");
    }
}

impl HttpContext for Decision {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.read_request_choices();
        if self.call == Call::HttpAbandon {
            match self.dispatch(Call::HttpAbandon) {
                Ok(token) => self.abandoned_token = Some(token),
                Err(status) => {
                    self.fail("abandoned call dispatch failed", status);
                    return Action::Pause;
                }
            }
        }
        if self.waits_for_callout() && !self.phase.is_response_side() {
            return self.pause_for_callout();
        }
        match self.phase {
            Phase::RequestHeaders | Phase::CallResponse => self.decide_with_request_headers(),
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
        if self.replied {
            return Action::Pause;
        }
        match self.phase {
            // The request trailers decide: hold the body until then (or decide at its end without trailers).
            Phase::RequestBody | Phase::RequestTrailers if !end_of_stream => Action::Pause,
            Phase::RequestBody | Phase::RequestTrailers => self.decide_late_in_request(Phase::RequestBody),
            _ => Action::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.replied {
            return Action::Pause;
        }
        match self.phase {
            // The body ends with the trailers: a body-phase decision is taken here too.
            Phase::RequestBody | Phase::RequestTrailers => self.decide_late_in_request(self.phase),
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.add_http_response_header("x-decision-saw-response", "1");
        if self.replied {
            return Action::Continue;
        }
        if self.waits_for_callout() && self.phase.is_response_side() {
            return self.pause_for_callout();
        }
        match self.phase {
            Phase::ResponseHeaders if self.allowed() => {
                self.add_http_response_header("x-decision", "allowed");
                Action::Continue
            }
            Phase::ResponseHeaders => {
                self.deny(Phase::ResponseHeaders);
                Action::Pause
            }
            _ => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
        if self.replied || self.phase != Phase::ResponseBody {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        if self.allowed() {
            Action::Continue
        } else {
            self.deny(Phase::ResponseBody);
            Action::Pause
        }
    }
}
