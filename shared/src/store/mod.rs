//! The store: the chat registry, message history and unread counters.
//!
//! The gateway reads it (chat membership, listings, history); the persister
//! writes it (messages, counters); chat creation writes the registry directly.
//! MongoDB is the production engine ([`mongo::MongoStore`]); an embedded one
//! ([`embedded::EmbeddedStore`], a redb file) serves standalone mode. Every write is a single-document operation that is
//! safe to repeat, because the engines do not all isolate transactions.
//!
//! The persister works in batches, so the trait also has batch forms
//! ([`Store::chats`], [`Store::count_unread`], [`Store::update_counters_all`],
//! [`Store::unread_totals`]) that MongoDB answers in one round trip each up to
//! a bounded size (bigger inputs take a few more, so no single command grows
//! without limit); their default bodies loop over the single forms, which is
//! right for an embedded engine with no round trips to save.

pub mod embedded;
pub mod mongo;
mod record;

use crate::broker::SeqWindow;
use crate::domain::{ChatId, ClientMsgId, Role, UserId};
use crate::protocol::Message;
use async_trait::async_trait;
pub use record::{ChatRecord, ChatUpsert, CounterUpdate, NewChat};

/// "How many messages did `sender` write in `chat` above `above_seq`": the
/// unread count of `sender`'s peer whose read mark is `above_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadQuery {
    /// The chat.
    pub chat: ChatId,
    /// The peer whose messages count.
    pub sender: UserId,
    /// The reader's mark.
    pub above_seq: u64,
}

/// A counter update guarded by the chat's revision (optimistic concurrency).
#[derive(Debug, Clone)]
pub struct RevisedUpdate {
    /// The chat.
    pub chat: ChatId,
    /// The revision the update was computed from.
    pub expected_rev: u64,
    /// The new values.
    pub update: CounterUpdate,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is unreachable (or refused the connection, or failed it).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer within the operation timeout. Unlike
    /// [`StoreError::Unavailable`], a smaller operation may well succeed now:
    /// the persister retries a batch that timed out in smaller pieces.
    #[error("store timed out: {0}")]
    Timeout(String),
    /// A document could not be read (a bug, or a foreign writer).
    #[error("store data error: {0}")]
    Corrupt(String),
    /// The store refused this data (retrying the same write will not help).
    #[error("store refused the write: {0}")]
    Rejected(String),
}

impl StoreError {
    /// Whether retrying later may succeed (the store is down or slow), as
    /// opposed to a problem with the data itself.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }

    /// Whether the operation ran out of time (as opposed to failing outright):
    /// the one failure that retrying with less work can cure.
    pub fn is_timeout(&self) -> bool {
        matches!(self, StoreError::Timeout(_))
    }
}

/// The storage interface.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates indexes and anything else the engine needs; idempotent.
    async fn prepare(&self) -> Result<(), StoreError>;

    /// Whether the store answers now.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates the chat of a (patient, doctor) pair, or adds the appointment to
    /// the existing one. Safe to repeat and to race.
    async fn upsert_chat(&self, new: &NewChat) -> Result<ChatUpsert, StoreError>;

    /// One chat.
    async fn chat(&self, id: ChatId) -> Result<Option<ChatRecord>, StoreError>;

    /// Every chat in which `user` takes part in `role`.
    async fn chats_of(&self, user: &UserId, role: Role) -> Result<Vec<ChatRecord>, StoreError>;

    /// Stored messages of a chat in a window, ascending by `seq`.
    async fn messages(&self, chat: ChatId, window: SeqWindow) -> Result<Vec<Message>, StoreError>;

    /// The stored message with this `client_msg_id` in `chat`, if any (lets a
    /// re-send be answered with the original even after the broker lost its
    /// idempotency records).
    async fn message_by_client_msg_id(
        &self,
        chat: ChatId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StoreError>;

    /// Inserts messages, ignoring ones already stored (same id or same
    /// `(chat_id, seq)`); returns how many were new.
    async fn insert_messages(&self, messages: &[Message]) -> Result<usize, StoreError>;

    /// How many messages `sender` wrote in `chat` with `seq` above `above_seq`.
    async fn count_messages_from(
        &self,
        chat: ChatId,
        sender: &UserId,
        above_seq: u64,
    ) -> Result<u64, StoreError>;

    /// Applies `update` if the chat's revision is still `expected_rev`
    /// (optimistic concurrency); returns whether it was applied.
    async fn update_counters(
        &self,
        chat: ChatId,
        expected_rev: u64,
        update: &CounterUpdate,
    ) -> Result<bool, StoreError>;

    /// Several chats at once; ids the store does not know are simply absent.
    async fn chats(&self, ids: &[ChatId]) -> Result<Vec<ChatRecord>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.extend(self.chat(*id).await?);
        }
        Ok(found)
    }

    /// Answers each query, in order.
    async fn count_unread(&self, queries: &[UnreadQuery]) -> Result<Vec<u64>, StoreError> {
        let mut counts = Vec::with_capacity(queries.len());
        for q in queries {
            counts.push(
                self.count_messages_from(q.chat, &q.sender, q.above_seq)
                    .await?,
            );
        }
        Ok(counts)
    }

    /// Applies every update whose chat still has its expected revision;
    /// returns whether all of them applied. When not, the caller cannot tell
    /// which did and redoes them one by one (a redo recounts: harmless).
    async fn update_counters_all(&self, updates: &[RevisedUpdate]) -> Result<bool, StoreError> {
        let mut all = true;
        for u in updates {
            all &= self
                .update_counters(u.chat, u.expected_rev, &u.update)
                .await?;
        }
        Ok(all)
    }

    /// Each user's unread count summed over all their chats, in order.
    async fn unread_totals(&self, users: &[(UserId, Role)]) -> Result<Vec<u64>, StoreError> {
        let mut totals = Vec::with_capacity(users.len());
        for (user, role) in users {
            totals.push(
                self.chats_of(user, *role)
                    .await?
                    .iter()
                    .map(|c| c.unread_of(user))
                    .sum(),
            );
        }
        Ok(totals)
    }
}
