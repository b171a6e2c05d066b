//! What travels on a user's pub/sub channel: a serialized server frame plus the
//! session that caused it.
//!
//! Wire form: `<origin session id or "-">\n<frame JSON>`. The frame is
//! serialized once by the publisher and forwarded byte for byte to every local
//! session, so fan-out never re-encodes.

use crate::domain::SessionId;
use crate::protocol::ServerFrame;
use bytes::Bytes;

/// A frame addressed to a user, with the session to skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The session that caused the event (gets an `ack` instead), if any.
    pub origin: Option<SessionId>,
    /// The frame's JSON text.
    pub frame: Bytes,
}

impl Envelope {
    /// Serializes `frame` once.
    pub fn new(origin: Option<SessionId>, frame: &ServerFrame) -> Self {
        Self {
            origin,
            frame: Bytes::from(frame.to_json()),
        }
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let origin = self.origin.map(|s| s.to_string());
        let origin = origin.as_deref().unwrap_or("-");
        let mut out = Vec::with_capacity(origin.len() + 1 + self.frame.len());
        out.extend_from_slice(origin.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&self.frame);
        out
    }

    /// The prefix a publisher puts before a frame (for scripts that build the frame).
    pub fn prefix(origin: Option<SessionId>) -> String {
        match origin {
            Some(s) => format!("{s}\n"),
            None => "-\n".to_owned(),
        }
    }

    /// Reads the wire form; `None` if it is not one.
    pub fn decode(payload: Bytes) -> Option<Self> {
        let nl = payload.iter().position(|&b| b == b'\n')?;
        let origin = match &payload[..nl] {
            b"-" => None,
            raw => Some(SessionId::parse(std::str::from_utf8(raw).ok()?).ok()?),
        };
        Some(Self {
            origin,
            frame: payload.slice(nl + 1..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_origin() {
        let frame = ServerFrame::Pong { id: None };
        for origin in [None, Some(SessionId::generate())] {
            let e = Envelope::new(origin, &frame);
            let back = Envelope::decode(Bytes::from(e.encode())).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn refuses_garbage() {
        assert!(Envelope::decode(Bytes::from_static(b"no newline")).is_none());
        assert!(Envelope::decode(Bytes::from_static(b"bad-origin\n{}")).is_none());
    }
}
