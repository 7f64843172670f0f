//! The safe face of one Envoy HTTP stream, as the filter driver and the proxy-wasm host see it.
//!
//! `envoy::callbacks::EnvoyStream` implements it over Envoy's callbacks; host tests implement it
//! with a fake. Nothing behind this trait touches raw pointers.

use crate::config::TenantId;

/// The four header maps of an HTTP stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HeaderKind {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
}

/// Whose metadata (`envoy_dynamic_module_type_metadata_source`, Envoy's `abi.h` order).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MetadataSource {
    Dynamic = 0,
    Route = 1,
    Cluster = 2,
    Host = 3,
}

/// A metadata value, typed as Envoy holds it (`google.protobuf.Value`).
#[derive(Clone, PartialEq, Debug)]
pub enum MetadataValue {
    String(Vec<u8>),
    Number(f64),
    Bool(bool),
}

impl MetadataValue {
    /// As Envoy's Wasm host serializes it: a string raw, a number as an 8-byte little-endian
    /// double (always a double, as protobuf holds it), a bool as one byte.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            MetadataValue::String(s) => s.clone(),
            MetadataValue::Number(n) => n.to_le_bytes().to_vec(),
            MetadataValue::Bool(b) => vec![*b as u8],
        }
    }
}

pub type HeaderPair = (Vec<u8>, Vec<u8>);

/// Which way data flows: the request (decoding) or the response (encoding).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Direction {
    Request,
    Response,
}

/// Why Envoy did not start an HTTP call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CallError {
    /// No such cluster, or the headers lack `:method`, `:path` or a host.
    BadRequest,
    /// Envoy could not start it (or this stream cannot make calls).
    Unavailable,
}

/// An HTTP call's response as the guest reads it in `proxy_on_http_call_response`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallResponse {
    pub headers: Vec<HeaderPair>,
    pub body: Vec<u8>,
    pub trailers: Vec<HeaderPair>,
}

/// The calls a guest makes through Envoy: HTTP callouts, and call streams (what gRPC calls and
/// streams ride on). A stream makes them through its own callouts (every `HttpStream` is one), a
/// root context (init of a root instance, a tick, a queue notification) through the filter
/// config's (`envoy::callbacks::ConfigCaller`); the host sees this one interface either way. The
/// defaults are a side that cannot make calls.
pub trait Callouts {
    /// Starts an HTTP call to `cluster` through Envoy; returns Envoy's callout id. The response
    /// arrives later (`StreamFilter::on_http_call_response`, `RootContexts::on_http_call_response`).
    fn http_call(&mut self, _cluster: &[u8], _headers: &[HeaderPair], _body: &[u8], _timeout_ms: u64) -> Result<u64, CallError> {
        Err(CallError::Unavailable)
    }
    /// Starts an HTTP stream to `cluster` through Envoy (gRPC calls and streams ride on these);
    /// returns its id. A unary gRPC call sends everything at once (`end_stream`). Its events
    /// arrive later (`StreamFilter::on_call_stream`, `RootContexts::on_call_stream`).
    fn start_call_stream(
        &mut self,
        _cluster: &[u8],
        _headers: &[HeaderPair],
        _body: &[u8],
        _end_stream: bool,
        _timeout_ms: u64,
    ) -> Result<u64, CallError> {
        Err(CallError::Unavailable)
    }
    /// Sends more request data on a call stream.
    fn send_call_stream(&mut self, _id: u64, _data: &[u8], _end_stream: bool) -> bool {
        false
    }
    /// Resets a stream `start_call_stream` started.
    fn reset_call_stream(&mut self, _id: u64) {}
}

/// How Envoy holds an attribute (`envoy_dynamic_module_type_attribute_id` values are typed).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AttributeKind {
    Bytes,
    Int,
    Bool,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AttributeValue {
    Bytes(Vec<u8>),
    Int(u64),
    Bool(bool),
}

/// A local reply: the response Envoy sends instead of forwarding the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<HeaderPair>,
    pub body: Vec<u8>,
    /// Envoy's response code details (shows in access logs as `%RESPONSE_CODE_DETAILS%`).
    pub details: Vec<u8>,
    /// The gRPC status a gRPC client sees (`None`: derived from `status`, as Envoy does).
    pub grpc_status: Option<u32>,
}

/// An Envoy stream is also where the request's metrics are recorded, and where the calls its guest
/// makes go (`Callouts`).
pub trait HttpStream: crate::telemetry::StatsSink + Callouts {
    /// Every value of header `key` in `kind`; `None` when that map is not available (yet).
    fn header_values(&self, kind: HeaderKind, key: &[u8]) -> Option<Vec<Vec<u8>>>;
    /// All pairs of `kind` in order; `None` when that map is not available (yet).
    fn headers(&self, kind: HeaderKind) -> Option<Vec<HeaderPair>>;
    /// Number of pairs in `kind` (0 when not available).
    fn header_count(&self, kind: HeaderKind) -> usize {
        self.headers(kind).map_or(0, |h| h.len())
    }
    /// Replaces every value of `key` with `value`, or removes `key` when `value` is `None`.
    fn set_header(&mut self, kind: HeaderKind, key: &[u8], value: Option<&[u8]>) -> bool;
    /// Adds a value to `key`, keeping existing ones.
    fn add_header(&mut self, kind: HeaderKind, key: &[u8], value: &[u8]) -> bool;
    /// Envoy's local reply (`sendLocalReply`): Envoy skips this filter's response hooks for it.
    /// For a gRPC request Envoy's dynamic-module ABI always passes gRPC status 0 (OK): callers
    /// put the real one in a `grpc-status` header (`LocalReply::for_envoy`).
    fn send_local_reply(&mut self, reply: &LocalReply);

    /// The tenant named by the matched route's per-route config, if any.
    fn route_tenant(&self) -> Option<TenantId>;

    /// The body the guest sees in this call: in a body callback, what Envoy delivered (all of it
    /// so far while the filter buffers); otherwise what Envoy has buffered. `None`: no body here.
    fn body(&self, _direction: Direction) -> Option<Vec<u8>> {
        None
    }
    /// Replaces that body with `data`.
    fn set_body(&mut self, _direction: Direction, _data: &[u8]) -> bool {
        false
    }
    /// Resumes a stream the filter stopped.
    fn continue_stream(&mut self, _direction: Direction) {}
    /// Resets the stream; false when this Envoy cannot.
    fn reset(&mut self) -> bool {
        false
    }
    /// An Envoy attribute (`request.path`, `source.address`, ...) by its dynamic-module id.
    fn attribute(&self, _id: u32, _kind: AttributeKind) -> Option<AttributeValue> {
        None
    }
    /// One metadata value: `key` in namespace `namespace` of `source`'s metadata.
    fn metadata(&self, _source: MetadataSource, _namespace: &[u8], _key: &[u8]) -> Option<MetadataValue> {
        None
    }
    /// A filter-state object's bytes.
    fn filter_state(&self, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

impl LocalReply {
    /// A plain-text reply generated by thaw itself (not by a guest).
    pub fn text(status: u32, body: &str, details: &str) -> LocalReply {
        LocalReply {
            status,
            headers: vec![(b"content-type".to_vec(), b"text/plain".to_vec())],
            body: body.as_bytes().to_vec(),
            details: details.as_bytes().to_vec(),
            grpc_status: None,
        }
    }

    /// The gRPC status a gRPC client gets: the reply's own, or the one Envoy derives from the HTTP
    /// status (`Grpc::Utility::httpToGrpcStatus`).
    pub fn effective_grpc_status(&self) -> u32 {
        self.grpc_status.unwrap_or(match self.status {
            400 => 13,                   // INTERNAL
            401 => 16,                   // UNAUTHENTICATED
            403 => 7,                    // PERMISSION_DENIED
            404 => 12,                   // UNIMPLEMENTED
            429 | 502 | 503 | 504 => 14, // UNAVAILABLE
            _ => 2,                      // UNKNOWN
        })
    }

    /// The response Envoy's `sendLocalReply` makes of this reply (what a guest's response
    /// callbacks see of its own local reply in Envoy's Wasm filter): `:status`, the reply's
    /// headers, and a body with its `content-length` and `content-type: text/plain` unless the
    /// reply set one.
    /// For a gRPC request (`grpc`), a trailers-only response: HTTP 200, `application/grpc`, the
    /// gRPC status and the body (percent-encoded, without a final newline) as `grpc-message`.
    pub fn as_response(&self, grpc: bool) -> (Vec<HeaderPair>, Vec<u8>) {
        let mut headers: Vec<HeaderPair> = self.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
        let set = |headers: &mut Vec<HeaderPair>, key: &[u8], value: Vec<u8>| {
            headers.retain(|(k, _)| k != key);
            headers.push((key.to_vec(), value));
        };
        if grpc {
            set(&mut headers, b":status", b"200".to_vec());
            set(&mut headers, b"content-type", b"application/grpc".to_vec());
            self.add_grpc_status(&mut headers);
            let message = self.body.strip_suffix(b"\n").unwrap_or(&self.body);
            if !message.is_empty() {
                set(&mut headers, b"grpc-message", percent_encode(message));
            }
            headers.retain(|(k, _)| k != b"content-length");
            return (headers, Vec::new());
        }
        set(&mut headers, b":status", self.status.to_string().into_bytes());
        if !self.body.is_empty() {
            set(&mut headers, b"content-length", self.body.len().to_string().into_bytes());
            if !headers.iter().any(|(k, _)| k == b"content-type") {
                headers.push((b"content-type".to_vec(), b"text/plain".to_vec()));
            }
        }
        (headers, self.body.clone())
    }

    /// This reply after a guest's response callbacks changed its response (`as_response`): the
    /// status and headers they left (what Envoy sets itself is left to Envoy), and the body.
    pub fn with_response(&self, headers: &[HeaderPair], body: Vec<u8>, grpc: bool) -> LocalReply {
        let status = headers
            .iter()
            .find(|(k, _)| k == b":status")
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
            .filter(|s| (200..600).contains(s));
        let envoys: &[&[u8]] =
            if grpc { &[b":status", b"content-type", b"content-length", b"grpc-message"] } else { &[b":status", b"content-length"] };
        let mut reply = self.clone();
        if !grpc {
            reply.status = status.unwrap_or(self.status);
            reply.body = body;
        }
        reply.headers = headers.iter().filter(|(k, _)| !envoys.contains(&k.as_slice())).cloned().collect();
        reply
    }

    /// The reply for Envoy's `sendLocalReply`: for a gRPC request, its gRPC status as a header
    /// (Envoy keeps a `grpc-status` the filter set, and otherwise writes the 0 the ABI passes).
    pub fn for_envoy(&self, grpc: bool) -> LocalReply {
        let mut reply = self.clone();
        if grpc {
            self.add_grpc_status(&mut reply.headers);
        }
        reply
    }

    /// Adds `grpc-status` (the effective one) to `headers` unless they carry one already.
    fn add_grpc_status(&self, headers: &mut Vec<HeaderPair>) {
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(b"grpc-status")) {
            headers.push((b"grpc-status".to_vec(), self.effective_grpc_status().to_string().into_bytes()));
        }
    }

    /// What a request gets when thaw itself fails (a host bug), always fail-closed.
    pub fn internal_error() -> LocalReply {
        LocalReply::text(503, "thaw: internal error; request denied\n", "thaw_internal_error")
    }
}

/// Percent-encodes a `grpc-message` as gRPC (and Envoy's `PercentEncoding::encode`) do: bytes
/// outside printable ASCII, and `%`, become `%XX`.
fn percent_encode(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    for &b in message {
        if (b' '..=b'~').contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// Whether request headers make a gRPC request (Envoy's `Grpc::Common::isGrpcRequestHeaders`:
/// `content-type` is `application/grpc`, optionally with a `+suffix` or `;parameters`).
pub fn is_grpc_content_type(content_type: &[u8]) -> bool {
    let Some(rest) = content_type.strip_prefix(b"application/grpc") else { return false };
    rest.is_empty() || rest[0] == b'+' || rest[0] == b';'
}
