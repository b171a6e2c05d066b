//! Redis key and channel names, in one place.
//!
//! Chats are spread over a fixed number of *shards*. Everything one append
//! touches — the chat's counter, recent window and idempotency keys, its
//! shard's event stream and its participants' channels for that shard — carries
//! the shard's hash tag (`{s3}`), so on a Redis Cluster it all lives in one
//! slot and a single script may touch it atomically (sharded pub/sub included:
//! `SPUBLISH` inside a script must stay in the script's slot). A user
//! therefore has one channel per shard and a gateway subscribes to all of them;
//! with one shard (a single Redis) that is one channel.

use crate::domain::{ChatId, ClientMsgId, UserId};

/// Entries that could not be persisted after repeated attempts, for an operator.
pub const DEAD_LETTERS: &str = "chat:events:dead";

/// The persisters' consumer group (one per shard stream).
pub const GROUP: &str = "persisters";

/// Where the agreed number of shards is recorded.
pub const SHARDS: &str = "chat:shards";

/// One shard of the keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard(pub u16);

impl Shard {
    /// Its event stream.
    pub fn stream(self) -> String {
        format!("chat:{{s{}}}:events", self.0)
    }

    /// A user's pub/sub channel on this shard.
    pub fn user_channel(self, user: &UserId) -> String {
        format!("chat:{{s{}}}:user:{user}", self.0)
    }
}

/// The key layout for a given number of shards.
#[derive(Debug, Clone, Copy)]
pub struct Keyspace {
    shards: u16,
}

impl Keyspace {
    /// A layout of `shards` shards (at least one).
    pub fn new(shards: u16) -> Self {
        Self {
            shards: shards.max(1),
        }
    }

    /// Every shard, in order.
    pub fn shards(&self) -> impl Iterator<Item = Shard> {
        (0..self.shards).map(Shard)
    }

    /// The shard a chat lives on. Chat ids are ULIDs whose low bits are
    /// random, so chats spread evenly; the mapping never changes for a given
    /// number of shards.
    pub fn shard_of(&self, chat: ChatId) -> Shard {
        Shard((u128::from(chat.as_ulid()) % u128::from(self.shards)) as u16)
    }

    /// The shard whose channel carries events addressed to a user alone
    /// (presence, unread counts, new chats): any of them would do, since the
    /// user's node subscribes to all; hashing spreads the load.
    pub fn shard_of_user(&self, user: &UserId) -> Shard {
        let h = user
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        Shard((h % u64::from(self.shards)) as u16)
    }

    /// Next-`seq` counter of a chat.
    pub fn seq(&self, chat: ChatId) -> String {
        format!("chat:{{s{}}}:{chat}:seq", self.shard_of(chat).0)
    }

    /// Recent-messages window of a chat (sorted set scored by `seq`).
    pub fn recent(&self, chat: ChatId) -> String {
        format!("chat:{{s{}}}:{chat}:recent", self.shard_of(chat).0)
    }

    /// Idempotency record of one `client_msg_id` in a chat.
    pub fn client_msg(&self, chat: ChatId, id: &ClientMsgId) -> String {
        format!("chat:{{s{}}}:{chat}:cmid:{id}", self.shard_of(chat).0)
    }

    /// The event stream of a chat's shard.
    pub fn stream_of(&self, chat: ChatId) -> String {
        self.shard_of(chat).stream()
    }

    /// Every channel of a user, one per shard.
    pub fn user_channels(&self, user: &UserId) -> Vec<String> {
        self.shards().map(|s| s.user_channel(user)).collect()
    }
}

/// The user a channel name belongs to.
pub fn user_of_channel(channel: &str) -> Option<UserId> {
    let (_, user) = channel.strip_prefix("chat:{s")?.split_once("}:user:")?;
    UserId::parse(user).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chats_keys_stream_and_channels_share_one_hash_tag() {
        let keys = Keyspace::new(16);
        let chat = ChatId::generate();
        let tag = format!("{{s{}}}", keys.shard_of(chat).0);
        let patient = UserId::parse("p1").unwrap();
        for key in [
            keys.seq(chat),
            keys.recent(chat),
            keys.stream_of(chat),
            keys.shard_of(chat).user_channel(&patient),
        ] {
            assert!(key.contains(&tag), "{key} lacks {tag}");
            assert_eq!(key.matches('{').count(), 1, "{key} has one tag");
        }
    }

    #[test]
    fn chats_spread_over_every_shard() {
        let keys = Keyspace::new(8);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            seen.insert(keys.shard_of(ChatId::generate()));
        }
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn the_user_is_read_back_from_any_of_their_channels() {
        let keys = Keyspace::new(3);
        let user = UserId::parse("doctor:42").unwrap();
        for channel in keys.user_channels(&user) {
            assert_eq!(user_of_channel(&channel), Some(user.clone()));
        }
        assert_eq!(user_of_channel("chat:user:doctor:42"), None);
    }

    #[test]
    fn one_shard_means_one_channel_per_user() {
        let user = UserId::parse("p").unwrap();
        assert_eq!(Keyspace::new(1).user_channels(&user).len(), 1);
    }
}
