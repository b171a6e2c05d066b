//! Frames a client sends, and the one place they are parsed.
//!
//! Parsing happens in two steps: serde reads the JSON shape into loosely typed
//! `Raw` variants, then each field is turned into its domain type. The split
//! keeps the request `id` available for the `error` reply even when a field is
//! bad, so a client can always tell which request failed.

use super::rest::ErrorCode;
use crate::domain::{ChatId, ClientMsgId, MessageBody};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Frames larger than this are refused with close code 4008 (guarantee 9).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// At most this many chats in one `sync` frame.
pub const MAX_SYNC_CHATS: usize = 1000;

/// The optional request id a client attaches to a frame; echoed on the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// A number.
    Number(i64),
    /// A short string.
    Text(String),
}

/// A validated client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Send a message.
    Send {
        /// Request id.
        id: Option<RequestId>,
        /// Target chat.
        chat_id: ChatId,
        /// Idempotency key.
        client_msg_id: ClientMsgId,
        /// Validated text.
        body: MessageBody,
    },
    /// Mark messages read.
    Read {
        /// Request id.
        id: Option<RequestId>,
        /// The chat.
        chat_id: ChatId,
        /// Everything up to this `seq` has been read.
        up_to_seq: u64,
    },
    /// Typing started or stopped.
    Typing {
        /// Request id.
        id: Option<RequestId>,
        /// The chat.
        chat_id: ChatId,
        /// Started (true) or stopped.
        active: bool,
    },
    /// Ask for everything after the given `seq` per chat.
    Sync {
        /// Request id.
        id: Option<RequestId>,
        /// Last seen `seq` per chat.
        chats: Vec<(ChatId, u64)>,
    },
    /// Replace the session's token.
    Auth {
        /// Request id.
        id: Option<RequestId>,
        /// The fresh token (verified by the session, not here).
        token: String,
    },
    /// Liveness check.
    Ping {
        /// Request id.
        id: Option<RequestId>,
    },
}

/// Why a frame was refused; carries the request id when one could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct FrameError {
    /// The request id, if the frame had a readable one.
    pub id: Option<RequestId>,
    /// `invalid` or `too_large`.
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Raw {
    Send {
        #[serde(default)]
        id: Option<RequestId>,
        chat_id: String,
        client_msg_id: String,
        body: String,
    },
    Read {
        #[serde(default)]
        id: Option<RequestId>,
        chat_id: String,
        up_to_seq: u64,
    },
    Typing {
        #[serde(default)]
        id: Option<RequestId>,
        chat_id: String,
        active: bool,
    },
    Sync {
        #[serde(default)]
        id: Option<RequestId>,
        chats: BTreeMap<String, u64>,
    },
    Auth {
        #[serde(default)]
        id: Option<RequestId>,
        token: String,
    },
    Ping {
        #[serde(default)]
        id: Option<RequestId>,
    },
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<RequestId>,
}

impl ClientFrame {
    /// Parses one text frame. `max_chars` is `MAX_MESSAGE_CHARS`.
    pub fn parse(text: &str, max_chars: usize) -> Result<Self, FrameError> {
        if text.len() > MAX_FRAME_BYTES {
            return Err(FrameError {
                id: None,
                code: ErrorCode::TooLarge,
                message: format!("frame is larger than {MAX_FRAME_BYTES} bytes"),
            });
        }
        let raw: Raw = serde_json::from_str(text).map_err(|e| {
            let id = serde_json::from_str::<IdOnly>(text).ok().and_then(|r| r.id);
            FrameError {
                id,
                code: ErrorCode::Invalid,
                message: format!("malformed frame: {e}"),
            }
        })?;
        Self::from_raw(raw, max_chars)
    }

    fn from_raw(raw: Raw, max_chars: usize) -> Result<Self, FrameError> {
        fn invalid(id: &Option<RequestId>, message: impl ToString) -> FrameError {
            FrameError {
                id: id.clone(),
                code: ErrorCode::Invalid,
                message: message.to_string(),
            }
        }
        Ok(match raw {
            Raw::Send {
                id,
                chat_id,
                client_msg_id,
                body,
            } => {
                let chat_id = ChatId::parse(&chat_id).map_err(|e| invalid(&id, e))?;
                let client_msg_id =
                    ClientMsgId::parse(client_msg_id).map_err(|e| invalid(&id, e))?;
                let body = MessageBody::parse(body, max_chars).map_err(|e| {
                    let code = match e {
                        crate::domain::BodyError::TooLong { .. } => ErrorCode::TooLarge,
                        _ => ErrorCode::Invalid,
                    };
                    FrameError {
                        id: id.clone(),
                        code,
                        message: e.to_string(),
                    }
                })?;
                ClientFrame::Send {
                    id,
                    chat_id,
                    client_msg_id,
                    body,
                }
            }
            Raw::Read {
                id,
                chat_id,
                up_to_seq,
            } => ClientFrame::Read {
                chat_id: ChatId::parse(&chat_id).map_err(|e| invalid(&id, e))?,
                id,
                up_to_seq,
            },
            Raw::Typing {
                id,
                chat_id,
                active,
            } => ClientFrame::Typing {
                chat_id: ChatId::parse(&chat_id).map_err(|e| invalid(&id, e))?,
                id,
                active,
            },
            Raw::Sync { id, chats } => {
                if chats.len() > MAX_SYNC_CHATS {
                    return Err(invalid(
                        &id,
                        format!("sync names more than {MAX_SYNC_CHATS} chats"),
                    ));
                }
                let chats = chats
                    .into_iter()
                    .map(|(k, v)| ChatId::parse(&k).map(|c| (c, v)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid(&id, e))?;
                ClientFrame::Sync { id, chats }
            }
            Raw::Auth { id, token } => ClientFrame::Auth { id, token },
            Raw::Ping { id } => ClientFrame::Ping { id },
        })
    }

    /// The frame's type name, a bounded metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Send { .. } => "send",
            ClientFrame::Read { .. } => "read",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::Sync { .. } => "sync",
            ClientFrame::Auth { .. } => "auth",
            ClientFrame::Ping { .. } => "ping",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CHAT: &str = "01JDGZ8W4Q6X3N9Y2V5T7R1M0K";

    #[test]
    fn parses_a_send_frame_into_domain_types() {
        let text = format!(
            r#"{{"type":"send","id":7,"chat_id":"{CHAT}","client_msg_id":"c-1","body":"hi"}}"#
        );
        let frame = ClientFrame::parse(&text, 4000).unwrap();
        match frame {
            ClientFrame::Send {
                id, chat_id, body, ..
            } => {
                assert_eq!(id, Some(RequestId::Number(7)));
                assert_eq!(chat_id.to_string(), CHAT);
                assert_eq!(body.as_str(), "hi");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_bad_field_keeps_the_request_id_for_the_error_reply() {
        let text = r#"{"type":"send","id":"r1","chat_id":"nope","client_msg_id":"c","body":"x"}"#;
        let err = ClientFrame::parse(text, 4000).unwrap_err();
        assert_eq!(err.id, Some(RequestId::Text("r1".into())));
        assert_eq!(err.code, ErrorCode::Invalid);
    }

    #[test]
    fn a_missing_field_keeps_the_request_id_too() {
        let err = ClientFrame::parse(r#"{"type":"send","id":3}"#, 4000).unwrap_err();
        assert_eq!(err.id, Some(RequestId::Number(3)));
    }

    #[test]
    fn unknown_types_and_malformed_json_are_invalid() {
        for text in [r#"{"type":"launch"}"#, "{", "[]", "null", r#"{"id":1}"#] {
            let err = ClientFrame::parse(text, 4000).unwrap_err();
            assert_eq!(err.code, ErrorCode::Invalid, "{text}");
        }
    }

    #[test]
    fn oversized_frames_and_bodies_are_too_large() {
        let big = "x".repeat(MAX_FRAME_BYTES + 1);
        assert_eq!(
            ClientFrame::parse(&big, 4000).unwrap_err().code,
            ErrorCode::TooLarge
        );
        let text = format!(
            r#"{{"type":"send","chat_id":"{CHAT}","client_msg_id":"c","body":"{}"}}"#,
            "y".repeat(11)
        );
        assert_eq!(
            ClientFrame::parse(&text, 10).unwrap_err().code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn sync_frames_parse_every_chat() {
        let text = format!(r#"{{"type":"sync","chats":{{"{CHAT}":12}}}}"#);
        match ClientFrame::parse(&text, 4000).unwrap() {
            ClientFrame::Sync { chats, .. } => {
                assert_eq!(chats.len(), 1);
                assert_eq!(chats[0].1, 12);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn negative_or_fractional_seqs_are_invalid() {
        for seq in ["-1", "1.5", "\"3\""] {
            let text = format!(r#"{{"type":"read","chat_id":"{CHAT}","up_to_seq":{seq}}}"#);
            assert!(ClientFrame::parse(&text, 4000).is_err(), "{seq}");
        }
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = ClientFrame::parse(&s, 4000);
        }

        #[test]
        fn parsing_arbitrary_json_objects_never_panics(
            t in prop_oneof![Just("send".to_string()), Just("read".to_string()), Just("typing".to_string()), Just("sync".to_string()), Just("auth".to_string()), Just("ping".to_string()), "[a-z]{1,6}"],
            chat in prop_oneof![Just(CHAT.to_string()), "\\PC{0,30}"],
            body in "\\PC{0,40}",
            seq in any::<i64>(),
        ) {
            let v = serde_json::json!({"type": t, "chat_id": chat, "client_msg_id": "c", "body": body, "up_to_seq": seq, "active": true, "token": "t", "chats": {chat.clone(): seq}});
            let _ = ClientFrame::parse(&v.to_string(), 4000);
        }
    }
}
