//! gRPC calls (`proxy_grpc_call`) on Envoy's HTTP/2 stream callouts: the request framed as one gRPC
//! message (1-byte flag, 4-byte big-endian length), the response deframed, its status taken from
//! `grpc-status` / `grpc-message` (trailers, or headers for trailers-only responses).

use crate::stream::{CallResponse, HeaderPair};

/// An event of an Envoy call stream (what gRPC calls and streams ride on).
#[derive(Debug)]
pub enum CallStreamEvent {
    Headers(Vec<HeaderPair>),
    Data(Vec<u8>),
    Trailers(Vec<HeaderPair>),
    Complete,
    Reset,
}

/// What a gRPC call or stream tells the guest.
#[derive(Debug)]
pub enum Delivery {
    /// A unary call's outcome: its status and response (message as body).
    CallDone((u32, Vec<u8>), CallResponse),
    /// A stream's initial metadata.
    InitialMetadata(Vec<HeaderPair>),
    /// A stream's next message.
    Message(Vec<u8>),
    /// A stream's trailing metadata.
    TrailingMetadata(Vec<HeaderPair>),
    /// A stream's end, with its status.
    Close(u32, Vec<u8>),
}

/// Feeds one call-stream event into `state`; returns what to tell the guest now and whether the
/// call is over. A call's response is collected and reported at the end; a stream's metadata and
/// messages are delivered as they come, as Envoy's host does.
pub fn advance(state: &mut CallState, event: CallStreamEvent) -> (Vec<Delivery>, bool) {
    let mut out = Vec::new();
    match event {
        CallStreamEvent::Headers(h) => {
            if state.streaming {
                out.push(Delivery::InitialMetadata(h.clone()));
            }
            state.headers = h;
        }
        CallStreamEvent::Data(d) => {
            state.body.extend(d);
            while state.streaming {
                match state.pop_message() {
                    Some(message) => out.push(Delivery::Message(message)),
                    None => break,
                }
            }
        }
        CallStreamEvent::Trailers(t) => {
            if state.streaming {
                out.push(Delivery::TrailingMetadata(t.clone()));
            }
            state.trailers = t;
        }
        CallStreamEvent::Complete | CallStreamEvent::Reset => {
            let (code, message) = match event {
                CallStreamEvent::Reset => (14, b"upstream reset".to_vec()),
                _ => status(&state.headers, &state.trailers),
            };
            if state.streaming {
                out.push(Delivery::Close(code, message));
            } else {
                let body = state.pop_message().unwrap_or_default();
                let response =
                    CallResponse { headers: std::mem::take(&mut state.headers), body, trailers: std::mem::take(&mut state.trailers) };
                out.push(Delivery::CallDone((code, message), response));
            }
            return (out, true);
        }
    }
    (out, false)
}

/// A gRPC request as HTTP/2 headers and a framed body.
pub fn request(service: &[u8], method: &[u8], metadata: &[HeaderPair], message: &[u8], authority: &[u8]) -> (Vec<HeaderPair>, Vec<u8>) {
    let mut path = b"/".to_vec();
    path.extend_from_slice(service);
    path.push(b'/');
    path.extend_from_slice(method);
    let mut headers = vec![
        (b":method".to_vec(), b"POST".to_vec()),
        (b":path".to_vec(), path),
        (b":authority".to_vec(), authority.to_vec()),
        (b"content-type".to_vec(), b"application/grpc".to_vec()),
        (b"te".to_vec(), b"trailers".to_vec()),
    ];
    headers.extend(metadata.iter().cloned());
    (headers, frame(message))
}

pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The first message of a framed gRPC body, if complete.
pub fn first_message(body: &[u8]) -> Option<&[u8]> {
    let header = body.get(..5)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    body.get(5..5usize.checked_add(len)?)
}

/// The status of a finished call: `grpc-status` (and `grpc-message`) from the trailers or, for a
/// trailers-only response, the headers; UNKNOWN (2) when neither says.
pub fn status(headers: &[HeaderPair], trailers: &[HeaderPair]) -> (u32, Vec<u8>) {
    let find = |name: &[u8]| trailers.iter().chain(headers).find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let code = find(b"grpc-status").and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()).unwrap_or(2);
    (code, find(b"grpc-message").unwrap_or_default())
}

/// A gRPC call or stream in flight: what the response stream delivered so far.
#[derive(Default, Debug)]
pub struct CallState {
    /// A stream (`proxy_grpc_stream`): messages are delivered as they complete.
    pub streaming: bool,
    pub headers: Vec<HeaderPair>,
    pub body: Vec<u8>,
    pub trailers: Vec<HeaderPair>,
}

impl CallState {
    /// Takes the first complete message off the received bytes, if there is one.
    pub fn pop_message(&mut self) -> Option<Vec<u8>> {
        let message = first_message(&self.body)?.to_vec();
        self.body.drain(..5 + message.len());
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips_and_status_prefers_trailers() {
        let framed = frame(b"hello");
        assert_eq!(framed, b"\0\0\0\0\x05hello");
        assert_eq!(first_message(&framed), Some(&b"hello"[..]));
        assert_eq!(first_message(&framed[..6]), None);
        let mut state = CallState { body: [frame(b"a"), frame(b"bc"), frame(b"d")[..3].to_vec()].concat(), ..Default::default() };
        assert_eq!(state.pop_message().as_deref(), Some(&b"a"[..]));
        assert_eq!(state.pop_message().as_deref(), Some(&b"bc"[..]));
        assert_eq!(state.pop_message(), None);
        let h = vec![(b"grpc-status".to_vec(), b"5".to_vec())];
        let t = vec![(b"grpc-status".to_vec(), b"0".to_vec())];
        assert_eq!(status(&h, &t).0, 0);
        assert_eq!(status(&h, &[]).0, 5);
        assert_eq!(status(&[], &[]).0, 2);
        let (headers, _) = request(b"pkg.Svc", b"Do", &[], b"", b"grpc");
        assert!(headers.contains(&(b":path".to_vec(), b"/pkg.Svc/Do".to_vec())));
    }
}
