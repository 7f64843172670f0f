//! An HTTP stream held in memory: the `HttpStream` of a request that never went through Envoy.
//!
//! `thaw check` (`dry_run`) drives the filter over one of these to show what a tenant's guest does
//! with a request: the four header maps are plain lists, the local reply Envoy would send is
//! recorded instead of sent, metrics are kept by name. It has no body, no HTTP calls and no
//! attributes (the trait's defaults). Clones share one state, as the filter driver hands the
//! stream to the guest and keeps it too.

use crate::config::TenantId;
use crate::stream::{HeaderKind, HeaderPair, HttpStream, LocalReply};
use crate::telemetry::{Metric, StatsSink};
use std::cell::RefCell;
use std::rc::Rc;

#[derive(Default)]
struct State {
    /// Request headers, request trailers, response headers, response trailers (`HeaderKind` order).
    maps: [Vec<HeaderPair>; 4],
    replies: Vec<LocalReply>,
    metrics: Vec<(Metric, TenantId, i64)>,
    route_tenant: Option<TenantId>,
}

/// One request in memory. Header names are kept lower-case, as Envoy keeps them.
#[derive(Clone, Default)]
pub struct MemoryStream(Rc<RefCell<State>>);

fn index(kind: HeaderKind) -> usize {
    match kind {
        HeaderKind::RequestHeaders => 0,
        HeaderKind::RequestTrailers => 1,
        HeaderKind::ResponseHeaders => 2,
        HeaderKind::ResponseTrailers => 3,
    }
}

impl MemoryStream {
    /// A request with these headers (in order), routed to `route_tenant` if given.
    pub fn request(headers: &[HeaderPair], route_tenant: Option<TenantId>) -> MemoryStream {
        let stream = MemoryStream::default();
        {
            let mut state = stream.0.borrow_mut();
            state.maps[0] = headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
            state.route_tenant = route_tenant;
        }
        stream
    }

    /// The pairs of `kind` as they are now.
    pub fn header_map(&self, kind: HeaderKind) -> Vec<HeaderPair> {
        self.0.borrow().maps[index(kind)].clone()
    }

    /// The local replies sent, in order (Envoy sends the first; the filter sends at most one).
    pub fn replies(&self) -> Vec<LocalReply> {
        self.0.borrow().replies.clone()
    }

    /// What was recorded for `metric`, summed over tenants.
    pub fn metric(&self, metric: Metric) -> i64 {
        self.0.borrow().metrics.iter().filter(|(m, _, _)| *m == metric).map(|(_, _, v)| v).sum()
    }
}

impl StatsSink for MemoryStream {
    fn record(&mut self, metric: Metric, tenant: &TenantId, value: i64) {
        self.0.borrow_mut().metrics.push((metric, tenant.clone(), value));
    }
}

/// A dry run has no Envoy to call out through: every call answers `Unavailable` (the trait's
/// defaults), as a stream without callouts does.
impl crate::stream::Callouts for MemoryStream {}

impl HttpStream for MemoryStream {
    fn header_values(&self, kind: HeaderKind, key: &[u8]) -> Option<Vec<Vec<u8>>> {
        let state = self.0.borrow();
        Some(state.maps[index(kind)].iter().filter(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.clone()).collect())
    }

    fn headers(&self, kind: HeaderKind) -> Option<Vec<HeaderPair>> {
        Some(self.header_map(kind))
    }

    fn set_header(&mut self, kind: HeaderKind, key: &[u8], value: Option<&[u8]>) -> bool {
        let mut state = self.0.borrow_mut();
        let map = &mut state.maps[index(kind)];
        let key = key.to_ascii_lowercase();
        match (map.iter().position(|(k, _)| *k == key), value) {
            // Replaced where it stood, as Envoy's `setCopy` does; other values of the key go.
            (Some(first), Some(value)) => {
                map[first].1 = value.to_vec();
                let mut position = 0;
                map.retain(|(k, _)| {
                    let keep = *k != key || position == first;
                    position += 1;
                    keep
                });
            }
            (None, Some(value)) => map.push((key, value.to_vec())),
            (_, None) => map.retain(|(k, _)| *k != key),
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
        self.0.borrow().route_tenant.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(k: &str, v: &str) -> HeaderPair {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn headers_are_set_in_place_added_and_removed_case_insensitively() {
        let mut stream = MemoryStream::request(&[pair("A", "1"), pair("b", "2"), pair("a", "3")], None);
        assert_eq!(stream.header_values(HeaderKind::RequestHeaders, b"a"), Some(vec![b"1".to_vec(), b"3".to_vec()]));
        stream.set_header(HeaderKind::RequestHeaders, b"a", Some(b"9"));
        assert_eq!(stream.header_map(HeaderKind::RequestHeaders), vec![pair("a", "9"), pair("b", "2")]);
        stream.add_header(HeaderKind::RequestHeaders, b"C", b"4");
        stream.set_header(HeaderKind::RequestHeaders, b"b", None);
        assert_eq!(stream.header_map(HeaderKind::RequestHeaders), vec![pair("a", "9"), pair("c", "4")]);
        assert_eq!(stream.header_map(HeaderKind::ResponseHeaders), vec![]);
    }

    #[test]
    fn clones_share_the_request_and_its_replies() {
        let stream = MemoryStream::request(&[], None);
        let mut clone = stream.clone();
        clone.send_local_reply(&LocalReply::text(403, "no\n", "test"));
        assert_eq!(stream.replies().len(), 1);
    }
}
