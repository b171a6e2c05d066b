//! The broker: ordered, durable append of chat events, fan-out to users, and a
//! short recent-history window for read-your-writes.
//!
//! Gateways and persisters talk to [`Broker`] and [`EventLog`] only; Redis is
//! one engine ([`redis::RedisBroker`]), an in-process one ([`local::Local`],
//! durable in the embedded store's file) serves standalone mode.
//! The split mirrors the two halves of the system:
//!
//! - [`Broker`] is the gateway's side: `append_message` assigns the next `seq`,
//!   writes the event to the durable stream, keeps it in the recent window and
//!   publishes it to both participants — atomically, so that live delivery
//!   order equals `seq` order and an ack always means "in the stream";
//! - [`EventLog`] is the persister's side: read the stream in batches as one
//!   member of a consumer group, acknowledge after the store confirmed.
//!
//! Deliveries to this node's users come back through an [`Inbox`] handed to the
//! engine at construction; the engine never blocks on it. [`Presence`] tracks
//! who is online across nodes.

pub mod envelope;
pub mod event;
pub mod local;
mod presence;
pub mod redis;
pub mod template;

use crate::domain::{ChatId, ClientMsgId, MessageId, Role, SessionId, Timestamp, UserId};
use crate::protocol::Message;
use async_trait::async_trait;
pub use envelope::Envelope;
pub use event::{StreamEntry, StreamEvent};
pub use presence::Presence;
use std::time::Duration;

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker could not be reached or timed out; the operation may not have happened.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The chat's `seq` counter is missing (new chat, or the broker lost its data):
    /// retry with the store's `last_seq` as the floor.
    #[error("sequence counter for chat {0} is unknown")]
    SeqUnknown(ChatId),
    /// The broker answered with something we cannot read (a bug or a foreign writer).
    #[error("broker protocol error: {0}")]
    Protocol(String),
}

/// The two participants of a chat; fixed for its lifetime, so safe to cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Participants {
    /// The patient.
    pub patient: UserId,
    /// The doctor.
    pub doctor: UserId,
}

impl Participants {
    /// Whether `user` is one of the two.
    pub fn contains(&self, user: &UserId) -> bool {
        &self.patient == user || &self.doctor == user
    }

    /// The other participant, if `user` is one of them.
    pub fn peer_of(&self, user: &UserId) -> Option<&UserId> {
        if &self.patient == user {
            Some(&self.doctor)
        } else if &self.doctor == user {
            Some(&self.patient)
        } else {
            None
        }
    }
}

/// Everything about a new message except its `seq`, which the broker assigns.
#[derive(Debug, Clone)]
pub struct MessageDraft {
    /// Pre-generated message id.
    pub id: MessageId,
    /// The chat.
    pub chat_id: ChatId,
    /// Sender.
    pub sender_id: UserId,
    /// Sender's role.
    pub sender_role: Role,
    /// Validated text.
    pub body: String,
    /// Idempotency key.
    pub client_msg_id: ClientMsgId,
    /// Acceptance time.
    pub created_at: Timestamp,
}

/// Result of [`Broker::append_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored now with a fresh `seq`, and published.
    New(Message),
    /// The `client_msg_id` was seen before: the original message, nothing stored again.
    Duplicate(Message),
}

impl Appended {
    /// The message either way.
    pub fn message(&self) -> &Message {
        match self {
            Appended::New(m) | Appended::Duplicate(m) => m,
        }
    }
}

/// A range of `seq` in one chat, for history reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqWindow {
    /// Exclusive lower bound.
    pub after: Option<u64>,
    /// Exclusive upper bound.
    pub before: Option<u64>,
    /// At most this many; taken from the `after` end when `after` is set,
    /// otherwise from the `before` (newest) end. Results are always ascending.
    pub limit: usize,
}

/// Receives events published to users held by this node. Called on the broker's
/// reader task: implementations must not block (use `try_send`).
pub trait Inbox: Send + Sync + 'static {
    /// One event for one user.
    fn deliver(&self, user: &UserId, envelope: Envelope);
    /// Whether `user` still has sessions here. Checked by the engine just before
    /// it unsubscribes, so a quick disconnect/reconnect cannot race an
    /// unsubscribe past a fresh subscribe.
    fn wants(&self, _user: &UserId) -> bool {
        false
    }
    /// The subscription was lost and re-established. `since` is when it was
    /// lost: events published after it may not have arrived, and the inbox
    /// should catch up on them (from the recent window).
    fn resubscribed(&self, _since: Timestamp) {}
}

/// The gateway's view of the broker.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Assigns the next `seq`, appends the message to the durable stream and the
    /// recent window, and publishes it to both participants with `origin` so the
    /// sending session can be skipped — all or nothing. A repeated
    /// `client_msg_id` returns the original message and does nothing else.
    /// `floor_seq` initialises a missing counter (after [`BrokerError::SeqUnknown`]).
    async fn append_message(
        &self,
        draft: &MessageDraft,
        participants: &Participants,
        origin: SessionId,
        floor_seq: Option<u64>,
    ) -> Result<Appended, BrokerError>;

    /// Appends a read mark to the durable stream (clamped to the chat's current
    /// `seq`) and publishes a `read` event to the peer. Returns the clamped mark
    /// (0 means nothing to mark, and nothing was appended). `floor_seq` as for
    /// [`Broker::append_message`].
    async fn append_read(
        &self,
        chat_id: ChatId,
        reader: &UserId,
        peer: &UserId,
        up_to_seq: u64,
        floor_seq: Option<u64>,
    ) -> Result<u64, BrokerError>;

    /// Publishes an ephemeral event (typing, unread, chat, presence) to a user.
    async fn publish(&self, user: &UserId, envelope: Envelope) -> Result<(), BrokerError>;

    /// Messages of `chat_id` still in the recent window, ascending.
    async fn recent(&self, chat_id: ChatId, window: SeqWindow)
        -> Result<Vec<Message>, BrokerError>;

    /// Starts delivering `user`'s events to this node's inbox.
    async fn subscribe(&self, user: &UserId) -> Result<(), BrokerError>;

    /// Stops delivering `user`'s events here.
    async fn unsubscribe(&self, user: &UserId) -> Result<(), BrokerError>;

    /// Whether the broker answers now (for `/readyz`).
    async fn ping(&self) -> Result<(), BrokerError>;
}

/// The persister's view of the broker: one member of a consumer group.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Entries this consumer received before but never acknowledged (after a crash),
    /// then new ones; waits up to `block` when there are none.
    async fn read_batch(
        &self,
        max: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntry>, BrokerError>;

    /// Marks entries as persisted.
    async fn ack(&self, ids: &[String]) -> Result<(), BrokerError>;

    /// Makes the next read start again with this consumer's unacknowledged
    /// entries (after a batch could not be persisted).
    fn replay_pending(&self);

    /// Takes over entries that other consumers (dead replicas) received but
    /// have not acknowledged for `min_idle`, so a crash loses nothing. Entries
    /// already delivered `max_deliveries` times are not retried again: they go
    /// to the dead-letter stream (and are acknowledged) instead of blocking the
    /// stream; their number is reported.
    async fn claim_stale(
        &self,
        min_idle: Duration,
        max_deliveries: u64,
        max: usize,
    ) -> Result<Claimed, BrokerError>;

    /// Moves one entry to the dead-letter stream with a reason, and acknowledges it.
    async fn dead_letter(&self, id: &str, reason: &str) -> Result<(), BrokerError>;

    /// Drops entries every consumer has acknowledged; never an entry that is
    /// pending or not yet delivered. Returns how many were removed.
    async fn trim(&self) -> Result<u64, BrokerError>;

    /// How far behind the group is.
    async fn backlog(&self) -> Result<Backlog, BrokerError>;
}

/// Result of [`EventLog::claim_stale`].
#[derive(Debug, Default)]
pub struct Claimed {
    /// Entries now owned by this consumer, to apply like a normal batch.
    pub entries: Vec<StreamEntry>,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: usize,
}

/// Size of the group's backlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Delivered but not yet acknowledged.
    pub pending: u64,
    /// In the stream but not yet delivered to any consumer.
    pub undelivered: u64,
}
