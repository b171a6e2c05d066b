//! Applying one batch of stream events to the store.
//!
//! Replays are harmless by construction:
//! - messages are inserted with their id as `_id` and a unique `(chat_id, seq)`,
//!   so a re-delivered message is simply not inserted again;
//! - unread counts are never incremented: they are *recomputed* as "messages from
//!   the peer above the reader's mark", so a replay cannot inflate them
//!   (guarantee 5);
//! - read marks only move forward (`max`).
//!
//! Several persister replicas may touch the same chat at once. Each chat update
//! is a compare-and-set on the chat's `rev`: a replica that lost the race re-reads
//! and recounts, so the last successful write always counted after every insert
//! that preceded it.

use chat_shared::broker::StreamEvent;
use chat_shared::domain::{ChatId, Role, UserId};
use chat_shared::protocol::Message;
use chat_shared::store::{CounterUpdate, Store, StoreError};
use std::collections::BTreeMap;

/// How often a chat update is retried when other replicas keep winning the race.
const MAX_CAS_ATTEMPTS: usize = 32;

/// A participant whose unread count is now `count` (after a change, or after
/// they read, so all their sessions can update badges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadChange {
    /// The chat.
    pub chat_id: ChatId,
    /// The participant.
    pub user_id: UserId,
    /// Their role in the chat (to find all their chats for the total).
    pub role: Role,
    /// Their unread count in this chat.
    pub count: u64,
}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Messages newly inserted (replayed ones are not counted).
    pub inserted: usize,
    /// Messages in the batch.
    pub messages: usize,
    /// Read marks in the batch.
    pub reads: usize,
    /// Events for chats the store does not know (left out; logged).
    pub orphans: usize,
    /// Unread counts to announce.
    pub unread_changes: Vec<UnreadChange>,
}

#[derive(Default)]
struct ChatBatch<'a> {
    newest: Option<&'a Message>,
    reads: BTreeMap<UserId, u64>,
}

/// Applies `events` (in stream order) to the store.
pub async fn apply_batch(
    store: &dyn Store,
    events: &[StreamEvent],
) -> Result<BatchOutcome, StoreError> {
    let messages: Vec<Message> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Message(m) => Some(m.clone()),
            StreamEvent::Read { .. } => None,
        })
        .collect();
    let mut outcome = BatchOutcome {
        messages: messages.len(),
        reads: events.len() - messages.len(),
        inserted: store.insert_messages(&messages).await?,
        ..Default::default()
    };

    let mut chats: BTreeMap<ChatId, ChatBatch<'_>> = BTreeMap::new();
    for event in events {
        let batch = chats.entry(event.chat_id()).or_default();
        match event {
            StreamEvent::Message(m) => {
                if batch.newest.is_none_or(|n| m.seq > n.seq) {
                    batch.newest = Some(m);
                }
            }
            StreamEvent::Read {
                user_id, up_to_seq, ..
            } => {
                let mark = batch.reads.entry(user_id.clone()).or_default();
                *mark = (*mark).max(*up_to_seq);
            }
        }
    }

    for (chat_id, batch) in chats {
        match apply_chat(store, chat_id, &batch).await? {
            Some(changes) => outcome.unread_changes.extend(changes),
            None => outcome.orphans += 1,
        }
    }
    Ok(outcome)
}

/// Recomputes one chat's counters; `None` if the chat does not exist.
async fn apply_chat(
    store: &dyn Store,
    chat_id: ChatId,
    batch: &ChatBatch<'_>,
) -> Result<Option<Vec<UnreadChange>>, StoreError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let Some(chat) = store.chat(chat_id).await? else {
            tracing::error!(%chat_id, "stream events for a chat the store does not know; skipped");
            return Ok(None);
        };
        let mut update = CounterUpdate {
            last_seq: chat.last_seq,
            ..Default::default()
        };
        if let Some(newest) = batch.newest.filter(|m| m.seq > chat.last_seq) {
            update.last_seq = newest.seq;
            update.last_message = Some(newest.clone());
        }
        let mut changes = Vec::new();
        for (user, role) in [
            (&chat.patient_id, Role::Patient),
            (&chat.doctor_id, Role::Doctor),
        ] {
            let peer = if role == Role::Patient {
                &chat.doctor_id
            } else {
                &chat.patient_id
            };
            let read_in_batch = batch.reads.get(user).copied();
            let mark = chat.read_seq_of(user).max(read_in_batch.unwrap_or(0));
            let unread = store.count_messages_from(chat_id, peer, mark).await?;
            update.read_seq.insert(user.to_string(), mark);
            update.unread.insert(user.to_string(), unread);
            if unread != chat.unread_of(user) || read_in_batch.is_some() {
                changes.push(UnreadChange {
                    chat_id,
                    user_id: user.clone(),
                    role,
                    count: unread,
                });
            }
        }
        if store.update_counters(chat_id, chat.rev, &update).await? {
            return Ok(Some(changes));
        }
        tracing::debug!(%chat_id, "chat changed under us; recounting");
    }
    Err(StoreError::Unavailable(format!(
        "chat {chat_id}: gave up after {MAX_CAS_ATTEMPTS} concurrent-update retries"
    )))
}

/// Total unread of `user` over all their chats in `role`.
pub async fn unread_total(store: &dyn Store, user: &UserId, role: Role) -> Result<u64, StoreError> {
    Ok(store
        .chats_of(user, role)
        .await?
        .iter()
        .map(|c| c.unread_of(user))
        .sum())
}
