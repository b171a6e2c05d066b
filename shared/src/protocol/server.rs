//! Frames the server sends.

use super::client::RequestId;
use super::model::{Chat, Message};
use super::rest::ErrorCode;
use crate::domain::{ChatId, Role, SessionId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

/// Every server → client frame. Serialized once per event and the bytes shared
/// by all recipients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of every session.
    Hello {
        /// Who the token says you are.
        user_id: UserId,
        /// Your role.
        role: Role,
        /// The gateway node serving you.
        node: String,
        /// This session.
        session_id: SessionId,
        /// The node's clock.
        server_time: Timestamp,
    },
    /// Your `send` was stored durably.
    Ack {
        /// Your request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The stored message (the original one on a re-send).
        message: Message,
    },
    /// A request failed.
    Error {
        /// Your request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Machine-readable code.
        code: ErrorCode,
        /// Explanation.
        message: String,
        /// With `rate_limited`: how long to wait before retrying.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// A new message in one of your chats.
    Message {
        /// The message.
        message: Message,
    },
    /// The peer read up to a `seq`.
    Read {
        /// The chat.
        chat_id: ChatId,
        /// Who read.
        user_id: UserId,
        /// Up to which `seq`.
        up_to_seq: u64,
    },
    /// The peer started or stopped typing.
    Typing {
        /// The chat.
        chat_id: ChatId,
        /// Who types.
        user_id: UserId,
        /// Started or stopped.
        active: bool,
    },
    /// Your unread count changed.
    Unread {
        /// The chat.
        chat_id: ChatId,
        /// Unread in that chat.
        count: u64,
        /// Unread over all your chats.
        total: u64,
    },
    /// A chat peer came online or went offline.
    Presence {
        /// Who.
        user_id: UserId,
        /// Online now?
        online: bool,
    },
    /// A chat was created or changed.
    Chat {
        /// The chat, from your point of view.
        chat: Chat,
    },
    /// All messages asked for by `sync` have been sent.
    Synced {
        /// Your request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// Answer to `ping`.
    Pong {
        /// Your request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
}

impl ServerFrame {
    /// JSON text of the frame. Serializing these types cannot fail (no maps with
    /// non-string keys, no custom serializers that error).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            tracing::error!(error = %e, "server frame failed to serialize");
            String::from(r#"{"type":"error","code":"unavailable","message":"internal error"}"#)
        })
    }

    /// The frame's type name, a bounded metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::Hello { .. } => "hello",
            ServerFrame::Ack { .. } => "ack",
            ServerFrame::Error { .. } => "error",
            ServerFrame::Message { .. } => "message",
            ServerFrame::Read { .. } => "read",
            ServerFrame::Typing { .. } => "typing",
            ServerFrame::Unread { .. } => "unread",
            ServerFrame::Presence { .. } => "presence",
            ServerFrame::Chat { .. } => "chat",
            ServerFrame::Synced { .. } => "synced",
            ServerFrame::Pong { .. } => "pong",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClientMsgId, MessageId};

    fn message() -> Message {
        Message {
            seq: 3,
            id: MessageId::generate(),
            chat_id: ChatId::generate(),
            sender_id: UserId::parse("p1").unwrap(),
            sender_role: Role::Patient,
            body: "hello <b>".into(),
            client_msg_id: ClientMsgId::parse("c1").unwrap(),
            created_at: Timestamp::from_millis(1_764_155_777_123),
        }
    }

    #[test]
    fn every_frame_round_trips_through_json() {
        let frames = vec![
            ServerFrame::Hello {
                user_id: UserId::parse("u").unwrap(),
                role: Role::Doctor,
                node: "n1".into(),
                session_id: SessionId::generate(),
                server_time: Timestamp::now(),
            },
            ServerFrame::Ack {
                id: Some(RequestId::Number(1)),
                message: message(),
            },
            ServerFrame::Error {
                id: None,
                code: ErrorCode::NotFound,
                message: "no such chat".into(),
                retry_after_ms: None,
            },
            ServerFrame::Error {
                id: Some(RequestId::Number(2)),
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
                retry_after_ms: Some(250),
            },
            ServerFrame::Message { message: message() },
            ServerFrame::Read {
                chat_id: ChatId::generate(),
                user_id: UserId::parse("d").unwrap(),
                up_to_seq: 4,
            },
            ServerFrame::Typing {
                chat_id: ChatId::generate(),
                user_id: UserId::parse("d").unwrap(),
                active: true,
            },
            ServerFrame::Unread {
                chat_id: ChatId::generate(),
                count: 2,
                total: 5,
            },
            ServerFrame::Presence {
                user_id: UserId::parse("d").unwrap(),
                online: false,
            },
            ServerFrame::Synced { id: None },
            ServerFrame::Pong {
                id: Some(RequestId::Text("x".into())),
            },
        ];
        for f in frames {
            let json = f.to_json();
            let back: ServerFrame = serde_json::from_str(&json).unwrap();
            assert_eq!(back, f, "{json}");
        }
    }

    #[test]
    fn message_frames_have_the_contract_shape() {
        let m = message();
        let v: serde_json::Value =
            serde_json::from_str(&ServerFrame::Message { message: m.clone() }.to_json()).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["message"]["seq"], 3);
        assert_eq!(v["message"]["sender_role"], "patient");
        assert_eq!(v["message"]["created_at"], "2025-11-26T11:16:17.123Z");
        assert_eq!(v["message"]["id"], m.id.to_string());
    }
}
