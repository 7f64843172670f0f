//! A guest's own local reply, as its response callbacks see it. In Envoy's Wasm filter the reply
//! a guest sends passes the filter's encoder, so the guest's `proxy_on_response_headers` (and
//! `_body`) run on it. Envoy's dynamic-module ABI never runs a module's response hooks on a
//! response the module itself sent (local reply or encoded), so thaw makes the response Envoy will
//! send (`LocalReply::as_response`), lets the guest's response callbacks read and change it here,
//! and sends what they leave.

use crate::config::TenantId;
use crate::stream::{
    AttributeKind, AttributeValue, CallError, Callouts, Direction, HeaderKind, HeaderPair, HttpStream, MetadataSource, MetadataValue,
};
use crate::telemetry::{Metric, StatsSink};
use std::cell::RefCell;
use std::rc::Rc;

/// The reply's response headers and body, shared by the views handed to the guest.
#[derive(Default)]
struct Response {
    headers: Vec<HeaderPair>,
    body: Vec<u8>,
}

/// The stream during a guest's response callbacks on its own reply: response headers and body
/// are the reply's; everything else is the real stream's.
#[derive(Clone)]
pub struct ReplyView<S> {
    inner: S,
    response: Rc<RefCell<Response>>,
}

impl<S: HttpStream + Clone> ReplyView<S> {
    pub fn new(inner: S, headers: Vec<HeaderPair>, body: Vec<u8>) -> ReplyView<S> {
        ReplyView { inner, response: Rc::new(RefCell::new(Response { headers, body })) }
    }

    /// The response as the guest left it.
    pub fn into_response(self) -> (Vec<HeaderPair>, Vec<u8>) {
        let response = std::mem::take(&mut *self.response.borrow_mut());
        (response.headers, response.body)
    }

    pub fn header_count(&self) -> usize {
        self.response.borrow().headers.len()
    }

    pub fn body_len(&self) -> usize {
        self.response.borrow().body.len()
    }
}

impl<S: HttpStream> StatsSink for ReplyView<S> {
    fn record(&mut self, metric: Metric, tenant: &TenantId, value: i64) {
        self.inner.record(metric, tenant, value)
    }

    fn record_guest(&mut self, metric: Metric, tenant: &TenantId, name: &str, value: i64) {
        self.inner.record_guest(metric, tenant, name, value)
    }
}

impl<S: HttpStream> HttpStream for ReplyView<S> {
    fn header_values(&self, kind: HeaderKind, key: &[u8]) -> Option<Vec<Vec<u8>>> {
        if kind != HeaderKind::ResponseHeaders {
            return self.inner.header_values(kind, key);
        }
        let response = self.response.borrow();
        Some(response.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.clone()).collect())
    }

    fn headers(&self, kind: HeaderKind) -> Option<Vec<HeaderPair>> {
        match kind {
            HeaderKind::ResponseHeaders => Some(self.response.borrow().headers.clone()),
            // A reply has no trailers (a gRPC reply is trailers-only: its status is in the headers).
            HeaderKind::ResponseTrailers => None,
            _ => self.inner.headers(kind),
        }
    }

    fn set_header(&mut self, kind: HeaderKind, key: &[u8], value: Option<&[u8]>) -> bool {
        if kind != HeaderKind::ResponseHeaders {
            return self.inner.set_header(kind, key, value);
        }
        let mut response = self.response.borrow_mut();
        let key = key.to_ascii_lowercase();
        let at = response.headers.iter().position(|(k, _)| *k == key);
        response.headers.retain(|(k, _)| *k != key);
        if let Some(value) = value {
            let at = at.unwrap_or(response.headers.len()).min(response.headers.len());
            response.headers.insert(at, (key, value.to_vec()));
        }
        true
    }

    fn add_header(&mut self, kind: HeaderKind, key: &[u8], value: &[u8]) -> bool {
        if kind != HeaderKind::ResponseHeaders {
            return self.inner.add_header(kind, key, value);
        }
        self.response.borrow_mut().headers.push((key.to_ascii_lowercase(), value.to_vec()));
        true
    }

    fn send_local_reply(&mut self, _reply: &crate::stream::LocalReply) {
        // Never reached: the driver sends at most one reply per stream.
    }

    fn route_tenant(&self) -> Option<TenantId> {
        self.inner.route_tenant()
    }

    fn body(&self, direction: Direction) -> Option<Vec<u8>> {
        match direction {
            Direction::Response => Some(self.response.borrow().body.clone()),
            Direction::Request => self.inner.body(direction),
        }
    }

    fn set_body(&mut self, direction: Direction, data: &[u8]) -> bool {
        match direction {
            Direction::Response => {
                self.response.borrow_mut().body = data.to_vec();
                true
            }
            Direction::Request => self.inner.set_body(direction, data),
        }
    }

    fn attribute(&self, id: u32, kind: AttributeKind) -> Option<AttributeValue> {
        self.inner.attribute(id, kind)
    }

    fn metadata(&self, source: MetadataSource, namespace: &[u8], key: &[u8]) -> Option<MetadataValue> {
        self.inner.metadata(source, namespace, key)
    }

    fn filter_state(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.filter_state(key)
    }
}

/// Calls made while the reply's response callbacks run are the real stream's.
impl<S: HttpStream> Callouts for ReplyView<S> {
    fn http_call(&mut self, cluster: &[u8], headers: &[HeaderPair], body: &[u8], timeout_ms: u64) -> Result<u64, CallError> {
        self.inner.http_call(cluster, headers, body, timeout_ms)
    }

    fn start_call_stream(
        &mut self,
        cluster: &[u8],
        headers: &[HeaderPair],
        body: &[u8],
        end_stream: bool,
        timeout_ms: u64,
    ) -> Result<u64, CallError> {
        self.inner.start_call_stream(cluster, headers, body, end_stream, timeout_ms)
    }

    fn send_call_stream(&mut self, id: u64, data: &[u8], end_stream: bool) -> bool {
        self.inner.send_call_stream(id, data, end_stream)
    }

    fn reset_call_stream(&mut self, id: u64) {
        self.inner.reset_call_stream(id)
    }
}
