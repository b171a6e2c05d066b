//! Redis key and channel names, in one place.
//!
//! Per-chat keys carry the chat id as a hash tag (`{…}`) so that a chat's
//! counter, recent window and idempotency keys live in one Redis Cluster slot
//! and a single script may touch them all.

use crate::domain::{ChatId, ClientMsgId, UserId};

/// The durable event stream the persisters consume.
pub const STREAM: &str = "chat:events";

/// Entries that could not be persisted after repeated attempts, for an operator.
pub const DEAD_LETTERS: &str = "chat:events:dead";

/// The persisters' consumer group.
pub const GROUP: &str = "persisters";

/// Next-`seq` counter of a chat.
pub fn seq(chat: ChatId) -> String {
    format!("chat:{{{chat}}}:seq")
}

/// Recent-messages window of a chat (sorted set scored by `seq`).
pub fn recent(chat: ChatId) -> String {
    format!("chat:{{{chat}}}:recent")
}

/// Idempotency record of one `client_msg_id` in a chat.
pub fn client_msg(chat: ChatId, id: &ClientMsgId) -> String {
    format!("chat:{{{chat}}}:cmid:{id}")
}

/// Pub/sub channel of a user.
pub fn user_channel(user: &UserId) -> String {
    format!("chat:user:{user}")
}

/// The user a channel name belongs to.
pub fn user_of_channel(channel: &str) -> Option<UserId> {
    UserId::parse(channel.strip_prefix("chat:user:")?).ok()
}
