//! Events in the durable stream, as the persister reads them.

use crate::domain::{ChatId, UserId};
use crate::protocol::Message;

/// One durable event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A message was accepted.
    Message(Message),
    /// A participant read a chat up to a `seq`.
    Read {
        /// The chat.
        chat_id: ChatId,
        /// The reader.
        user_id: UserId,
        /// The mark.
        up_to_seq: u64,
    },
}

impl StreamEvent {
    /// The chat the event belongs to.
    pub fn chat_id(&self) -> ChatId {
        match self {
            StreamEvent::Message(m) => m.chat_id,
            StreamEvent::Read { chat_id, .. } => *chat_id,
        }
    }
}

/// An entry read from the stream: its id (for the acknowledgement) and the
/// event, or why it could not be decoded (such entries are never acknowledged
/// silently: they stay pending for the operator).
///
/// Both engines fill it the same way, so the persister has one code path.
#[derive(Debug, Clone)]
pub struct StreamEntry {
    /// Stream entry id.
    pub id: String,
    /// The decoded event.
    pub event: Result<StreamEvent, String>,
    /// The W3C `traceparent` of the span that appended the event
    /// ([`crate::telemetry::current_traceparent`]), when the appending gateway
    /// exported traces. Entries written without one (tracing off, or by an
    /// older version) have `None`.
    pub traceparent: Option<String>,
}
