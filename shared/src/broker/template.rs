//! A message serialized before its `seq` is known.
//!
//! The broker assigns `seq` atomically with the append (in Redis, inside a Lua
//! script). To avoid decoding and re-encoding JSON inside the script, the gateway
//! serializes the message with `seq` as the first field and splits the text
//! there: the script only concatenates `{"seq":` + seq + rest.

use super::{BrokerError, MessageDraft};
use crate::protocol::Message;

/// The JSON text that precedes the `seq` digits.
pub const SEQ_PREFIX: &str = r#"{"seq":"#;

/// The part of a message's JSON after the `seq` digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageTemplate {
    /// Everything after the digits, starting with `,"id":`.
    pub rest: String,
}

impl MessageTemplate {
    /// Builds the template for a draft. `seq` is the first field of `Message`,
    /// so the JSON starts with the prefix followed by the digit 0 (a unit test
    /// guards this); anything else is refused rather than appended broken.
    pub fn new(draft: &MessageDraft) -> Result<Self, BrokerError> {
        let json = serde_json::to_string(&to_message(draft, 0))
            .map_err(|e| BrokerError::Protocol(format!("serializing a message: {e}")))?;
        let rest = json
            .strip_prefix(SEQ_PREFIX)
            .and_then(|r| r.strip_prefix('0'))
            .ok_or_else(|| BrokerError::Protocol("message JSON does not start with seq".into()))?;
        Ok(Self {
            rest: rest.to_owned(),
        })
    }

    /// The full JSON for a given `seq` (what the script produces).
    pub fn render(&self, seq: u64) -> String {
        format!("{SEQ_PREFIX}{seq}{}", self.rest)
    }
}

/// The message a draft becomes once it has a `seq`.
pub fn to_message(draft: &MessageDraft, seq: u64) -> Message {
    Message {
        seq,
        id: draft.id,
        chat_id: draft.chat_id,
        sender_id: draft.sender_id.clone(),
        sender_role: draft.sender_role,
        body: draft.body.clone(),
        client_msg_id: draft.client_msg_id.clone(),
        created_at: draft.created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;

    #[test]
    fn rendering_equals_serializing_the_final_message() {
        let draft = MessageDraft {
            id: MessageId::generate(),
            chat_id: ChatId::generate(),
            sender_id: UserId::parse("p1").unwrap(),
            sender_role: Role::Patient,
            body: "quote \" and {\"seq\":1} and ünïcode".into(),
            client_msg_id: ClientMsgId::parse("c-9").unwrap(),
            created_at: Timestamp::now(),
        };
        let t = MessageTemplate::new(&draft).unwrap();
        assert!(t.rest.starts_with(",\"id\":"));
        for seq in [1, 42, u64::MAX] {
            let rendered = t.render(seq);
            let parsed: Message = serde_json::from_str(&rendered).unwrap();
            assert_eq!(parsed, to_message(&draft, seq));
        }
    }
}
