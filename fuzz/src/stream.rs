//! `FuzzStream`: the fake Envoy stream the hostcall target drives the filter over. Unlike
//! `thaw::memory_stream::MemoryStream` (a dry run's: no body, no calls), it has everything a guest
//! can reach through the host: four header maps, both bodies, attributes, metadata, filter state,
//! HTTP callouts and call streams that Envoy "started" (recorded, so the target can answer them),
//! resets; local replies and metrics recorded. Clones share one state, as handles of one Envoy
//! stream do.

use std::cell::RefCell;
use std::rc::Rc;
use thaw::config::TenantId;
use thaw::stream::{
    AttributeKind, AttributeValue, CallError, Callouts, Direction, HeaderKind, HeaderPair, HttpStream, LocalReply, MetadataSource,
    MetadataValue,
};
use thaw::telemetry::{Metric, StatsSink};

#[derive(Default)]
pub struct State {
    /// Request headers, request trailers, response headers, response trailers.
    pub maps: [Vec<HeaderPair>; 4],
    pub bodies: [Vec<u8>; 2],
    pub replies: Vec<LocalReply>,
    pub metrics: Vec<(Metric, i64)>,
    /// Envoy ids of the HTTP callouts started, in order.
    pub http_calls: Vec<u64>,
    /// Envoy ids of the call streams started and not reset.
    pub call_streams: Vec<u64>,
    pub next_id: u64,
    pub reset: bool,
    pub continued: [u32; 2],
}

#[derive(Clone, Default)]
pub struct FuzzStream(pub Rc<RefCell<State>>);

fn index(kind: HeaderKind) -> usize {
    match kind {
        HeaderKind::RequestHeaders => 0,
        HeaderKind::RequestTrailers => 1,
        HeaderKind::ResponseHeaders => 2,
        HeaderKind::ResponseTrailers => 3,
    }
}

impl FuzzStream {
    pub fn new(maps: [Vec<HeaderPair>; 4], bodies: [Vec<u8>; 2]) -> FuzzStream {
        FuzzStream(Rc::new(RefCell::new(State { maps, bodies, next_id: 1, ..State::default() })))
    }

    /// The sum of what was recorded for `metric`.
    pub fn metric(&self, metric: Metric) -> i64 {
        self.0.borrow().metrics.iter().filter(|(m, _)| *m == metric).map(|(_, v)| v).sum()
    }

    pub fn replies(&self) -> usize {
        self.0.borrow().replies.len()
    }

    pub fn is_reset(&self) -> bool {
        self.0.borrow().reset
    }
}

impl StatsSink for FuzzStream {
    fn record(&mut self, metric: Metric, _tenant: &TenantId, value: i64) {
        self.0.borrow_mut().metrics.push((metric, value));
    }
}

/// Envoy starts every call but to the cluster `nope` (no such cluster).
impl Callouts for FuzzStream {
    fn http_call(&mut self, cluster: &[u8], _headers: &[HeaderPair], _body: &[u8], _timeout_ms: u64) -> Result<u64, CallError> {
        if cluster == b"nope" {
            return Err(CallError::BadRequest);
        }
        let mut s = self.0.borrow_mut();
        let id = s.next_id;
        s.next_id += 1;
        s.http_calls.push(id);
        Ok(id)
    }

    fn start_call_stream(&mut self, cluster: &[u8], _h: &[HeaderPair], _b: &[u8], _end: bool, _t: u64) -> Result<u64, CallError> {
        if cluster == b"nope" {
            return Err(CallError::BadRequest);
        }
        let mut s = self.0.borrow_mut();
        let id = s.next_id;
        s.next_id += 1;
        s.call_streams.push(id);
        Ok(id)
    }

    fn send_call_stream(&mut self, id: u64, _data: &[u8], _end_stream: bool) -> bool {
        self.0.borrow().call_streams.contains(&id)
    }

    fn reset_call_stream(&mut self, id: u64) {
        self.0.borrow_mut().call_streams.retain(|c| *c != id);
    }
}

impl HttpStream for FuzzStream {
    fn header_values(&self, kind: HeaderKind, key: &[u8]) -> Option<Vec<Vec<u8>>> {
        let s = self.0.borrow();
        Some(s.maps[index(kind)].iter().filter(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.clone()).collect())
    }

    fn headers(&self, kind: HeaderKind) -> Option<Vec<HeaderPair>> {
        Some(self.0.borrow().maps[index(kind)].clone())
    }

    fn set_header(&mut self, kind: HeaderKind, key: &[u8], value: Option<&[u8]>) -> bool {
        let mut s = self.0.borrow_mut();
        let map = &mut s.maps[index(kind)];
        map.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        if let Some(v) = value {
            map.push((key.to_ascii_lowercase(), v.to_vec()));
        }
        true
    }

    fn add_header(&mut self, kind: HeaderKind, key: &[u8], value: &[u8]) -> bool {
        self.0.borrow_mut().maps[index(kind)].push((key.to_ascii_lowercase(), value.to_vec()));
        true
    }

    fn send_local_reply(&mut self, reply: &LocalReply) {
        self.0.borrow_mut().replies.push(reply.clone());
    }

    fn route_tenant(&self) -> Option<TenantId> {
        None
    }

    fn body(&self, direction: Direction) -> Option<Vec<u8>> {
        Some(self.0.borrow().bodies[direction as usize].clone())
    }

    fn set_body(&mut self, direction: Direction, data: &[u8]) -> bool {
        self.0.borrow_mut().bodies[direction as usize] = data.to_vec();
        true
    }

    fn continue_stream(&mut self, direction: Direction) {
        self.0.borrow_mut().continued[direction as usize] += 1;
    }

    fn reset(&mut self) -> bool {
        self.0.borrow_mut().reset = true;
        true
    }

    fn attribute(&self, id: u32, kind: AttributeKind) -> Option<AttributeValue> {
        (id % 5 != 4).then(|| match kind {
            AttributeKind::Bytes => AttributeValue::Bytes(format!("attribute-{id}").into_bytes()),
            AttributeKind::Int => AttributeValue::Int(u64::from(id) * 1000 + 7),
            AttributeKind::Bool => AttributeValue::Bool(id.is_multiple_of(2)),
        })
    }

    fn metadata(&self, source: MetadataSource, _namespace: &[u8], key: &[u8]) -> Option<MetadataValue> {
        match key.first().copied().unwrap_or(0) % 4 {
            0 => None,
            1 => Some(MetadataValue::String(key.to_vec())),
            2 => Some(MetadataValue::Number(source as u8 as f64 + 0.5)),
            _ => Some(MetadataValue::Bool(true)),
        }
    }

    fn filter_state(&self, key: &[u8]) -> Option<Vec<u8>> {
        (!key.is_empty()).then(|| [b"state:".as_slice(), key].concat())
    }
}
