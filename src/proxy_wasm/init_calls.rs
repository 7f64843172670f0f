//! HTTP calls a guest makes during its init (`proxy_on_vm_start`, `proxy_on_configure`), such as a
//! WAF fetching its rules. Envoy's Wasm filter sends them and delivers the answers to the root
//! context later. thaw runs init in every fresh instance, so it cannot send a guest's init calls
//! once per instance; instead:
//!
//! - at config load, the init check notes that the guest's init makes calls (`Noted`); nothing is
//!   sent, and the tenant is not ready;
//! - on Envoy's main thread, the tenant's root instance runs init with the filter config's
//!   callouts at hand (`root`), so its calls are sent and their answers delivered to it, each
//!   recorded; when no init call is left unanswered, the [`Transcript`] is complete and the tenant
//!   is ready;
//! - every later instance replays it (`Replay`): its init's calls are answered from the transcript
//!   in the order the root instance made them, and the answers are delivered, in the order they
//!   arrived, before the instance serves anything. A guest whose calls differ from the recorded
//!   ones gets INTERNAL_FAILURE for them (logged).
//!
//! Requests that arrive before the tenant is ready are answered per `on_error`, counted
//! (`wasm_tenant_not_ready_total`).

use crate::stream::{CallResponse, HeaderPair};
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

/// One HTTP call as the guest made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRequest {
    pub cluster: Vec<u8>,
    pub headers: Vec<HeaderPair>,
    pub body: Vec<u8>,
}

impl CallRequest {
    /// Whether `other` asks the same thing: same cluster, method, path and authority.
    pub fn same_call(&self, other: &CallRequest) -> bool {
        let pseudo = |r: &CallRequest, name: &[u8]| r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        self.cluster == other.cluster && [&b":method"[..], b":path", b":authority"].iter().all(|n| pseudo(self, n) == pseudo(other, n))
    }
}

/// The calls a tenant's root instance made during init, with their answers (`None`: the call
/// failed), in the order made, and the order in which the answers arrived.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transcript {
    pub calls: Vec<(CallRequest, Option<CallResponse>)>,
    pub arrival: Vec<usize>,
}

/// A tenant's transcript, once its init calls are all answered (shared by its plugin and driver).
pub type Readiness = Arc<OnceLock<Arc<Transcript>>>;

/// Envoy-side ids of replayed calls: never a real callout id (those count up from 1).
pub const REPLAY_ID_BASE: u64 = 1 << 63;

/// What a call made during init does in this instance.
#[derive(Debug, Default)]
pub enum InitCalls {
    /// Nothing can receive an answer (a snapshot's init): INTERNAL_FAILURE.
    #[default]
    Refused,
    /// The load-time init check: calls are counted, not sent; the instance is then discarded.
    Noted(usize),
    /// Answered from the tenant's transcript.
    Replay(Replay),
}

#[derive(Debug)]
pub struct Replay {
    transcript: Arc<Transcript>,
    /// Calls made so far (the next one must be `transcript.calls[made]`).
    made: usize,
}

impl Replay {
    pub fn new(transcript: Arc<Transcript>) -> Replay {
        Replay { transcript, made: 0 }
    }

    /// The id a call made now gets, if it is the one the transcript has next: the same cluster,
    /// `:method`, `:path` and `:authority` (other headers, such as a fresh request id, may differ).
    pub fn make(&mut self, request: &CallRequest) -> Option<u64> {
        let (recorded, _) = self.transcript.calls.get(self.made)?;
        if !recorded.same_call(request) {
            return None;
        }
        self.made += 1;
        Some(REPLAY_ID_BASE + (self.made - 1) as u64)
    }

    /// The answers to deliver, in arrival order: (the call's id, its answer).
    pub fn answers(&self) -> VecDeque<(u64, Option<CallResponse>)> {
        self.transcript.arrival.iter().map(|&i| (REPLAY_ID_BASE + i as u64, self.transcript.calls[i].1.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_answers_only_the_recorded_calls_in_order() {
        let call = |path: &str| CallRequest {
            cluster: b"rules".to_vec(),
            headers: vec![(b":path".to_vec(), path.as_bytes().to_vec())],
            body: vec![],
        };
        let transcript =
            Arc::new(Transcript { calls: vec![(call("/a"), None), (call("/b"), Some(CallResponse::default()))], arrival: vec![1, 0] });
        let mut replay = Replay::new(transcript);
        assert_eq!(replay.make(&call("/b")), None, "out of order");
        assert_eq!(replay.make(&call("/a")), Some(REPLAY_ID_BASE));
        assert_eq!(replay.make(&call("/b")), Some(REPLAY_ID_BASE + 1));
        assert_eq!(replay.make(&call("/c")), None, "beyond the transcript");
        let answers: Vec<u64> = replay.answers().into_iter().map(|(id, _)| id).collect();
        assert_eq!(answers, vec![REPLAY_ID_BASE + 1, REPLAY_ID_BASE]);
    }
}
