//! Objects carried inside frames and REST bodies.

use crate::domain::{AppointmentId, ChatId, ClientMsgId, MessageId, Role, Timestamp, UserId};
use serde::{Deserialize, Serialize};

/// A stored message.
///
/// `seq` is deliberately the first field: the broker appends a message as a JSON
/// template whose only unknown is the `seq` it assigns (see `broker::template`),
/// and keeping it first makes that template a plain prefix/suffix split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Position in the chat: 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// Time-ordered unique id.
    pub id: MessageId,
    /// The chat it belongs to.
    pub chat_id: ChatId,
    /// Who wrote it.
    pub sender_id: UserId,
    /// Patient or doctor.
    pub sender_role: Role,
    /// The text (validated when it was sent).
    pub body: String,
    /// The sender's idempotency key.
    pub client_msg_id: ClientMsgId,
    /// When the gateway accepted it.
    pub created_at: Timestamp,
}

/// The other participant of a chat, from the caller's point of view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Their user id.
    pub id: UserId,
    /// Display name given by the booking app (their id when it gave none).
    pub name: String,
    /// Patient or doctor.
    pub role: Role,
    /// Whether any session of theirs is connected to any node.
    pub online: bool,
}

/// A chat as one participant sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    /// Chat id.
    pub id: ChatId,
    /// The patient.
    pub patient_id: UserId,
    /// The doctor.
    pub doctor_id: UserId,
    /// Every appointment this chat serves, oldest first.
    pub appointment_ids: Vec<AppointmentId>,
    /// When the booking app created it.
    pub created_at: Timestamp,
    /// The newest message, if any.
    pub last_message: Option<Message>,
    /// The newest `seq` (0 when empty).
    pub last_seq: u64,
    /// Messages from the peer the caller has not read.
    pub unread: u64,
    /// The other participant.
    pub peer: Peer,
}

/// A person's display name as given by the booking app: 1–100 characters, no
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

impl DisplayName {
    /// Parses untrusted input.
    pub fn parse(s: impl Into<String>) -> Result<Self, &'static str> {
        let s = s.into();
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err("name must not be empty");
        }
        if trimmed.chars().count() > 100 {
            return Err("name is longer than 100 characters");
        }
        if trimmed.chars().any(char::is_control) {
            return Err("name contains a control character");
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DisplayName {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<DisplayName> for String {
    fn from(n: DisplayName) -> String {
        n.0
    }
}
