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
//!
//! A batch costs MongoDB four round trips in the usual case: insert the
//! messages, read the batch's chats, count the unread messages of every
//! participant, update every chat — each a single command up to a bounded
//! size (128 chats for the count, 1000 for the others; beyond that a few
//! commands, so no single one grows with the batch). Only when another
//! replica won a race on some chat does the batch fall back to chat-by-chat.

use chat_shared::broker::StreamEvent;
use chat_shared::domain::{ChatId, Role, UserId};
use chat_shared::protocol::Message;
use chat_shared::store::{
    ChatRecord, CounterUpdate, RevisedUpdate, Store, StoreError, UnreadQuery,
};
use std::collections::{BTreeMap, BTreeSet};

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

    let ids: Vec<ChatId> = chats.keys().copied().collect();
    let records = store.chats(&ids).await?;
    outcome.orphans = ids.len() - records.len();
    if outcome.orphans > 0 {
        let known: BTreeSet<ChatId> = records.iter().map(|r| r.id).collect();
        for id in ids.iter().filter(|id| !known.contains(id)) {
            tracing::error!(chat_id = %id, "stream events for a chat the store does not know; skipped");
        }
    }
    let plans: Vec<Plan> = records
        .iter()
        .filter_map(|chat| Some(Plan::new(chat, chats.get(&chat.id)?)))
        .collect();
    let queries: Vec<UnreadQuery> = plans.iter().flat_map(Plan::queries).collect();
    let counts = store.count_unread(&queries).await?;
    let mut counts = counts.into_iter();
    let mut updates = Vec::with_capacity(plans.len());
    let mut changes = Vec::new();
    for plan in &plans {
        let (Some(patient), Some(doctor)) = (counts.next(), counts.next()) else {
            return Err(StoreError::Corrupt(
                "fewer unread counts than asked for".into(),
            ));
        };
        let (update, chat_changes) = plan.finish(patient, doctor);
        updates.push(update);
        changes.extend(chat_changes);
    }
    if store.update_counters_all(&updates).await? {
        outcome.unread_changes = changes;
        return Ok(outcome);
    }
    // Another replica changed some chat meanwhile: redo them one by one
    // (recounting a chat that was updated is harmless).
    tracing::debug!(
        chats = plans.len(),
        "a chat changed under us; recounting chat by chat"
    );
    outcome.orphans = 0;
    for (chat_id, batch) in chats {
        match apply_chat(store, chat_id, &batch).await? {
            Some(changes) => outcome.unread_changes.extend(changes),
            None => outcome.orphans += 1,
        }
    }
    Ok(outcome)
}

/// One chat's update, computed from its record and the batch, waiting for the
/// participants' unread counts.
struct Plan<'a> {
    chat: &'a ChatRecord,
    update: CounterUpdate,
    /// Read marks after the batch (patient, doctor), and whether the batch moved them.
    marks: [(u64, bool); 2],
}

impl<'a> Plan<'a> {
    fn new(chat: &'a ChatRecord, batch: &ChatBatch<'_>) -> Self {
        let mut update = CounterUpdate {
            last_seq: chat.last_seq,
            ..Default::default()
        };
        if let Some(newest) = batch.newest.filter(|m| m.seq > chat.last_seq) {
            update.last_seq = newest.seq;
            update.last_message = Some(newest.clone());
        }
        let mark = |user: &UserId| {
            let read_in_batch = batch.reads.get(user).copied();
            (
                chat.read_seq_of(user).max(read_in_batch.unwrap_or(0)),
                read_in_batch.is_some(),
            )
        };
        Self {
            marks: [mark(&chat.patient_id), mark(&chat.doctor_id)],
            chat,
            update,
        }
    }

    /// The patient's unread (the doctor's messages), then the doctor's.
    fn queries(&self) -> [UnreadQuery; 2] {
        [
            UnreadQuery {
                chat: self.chat.id,
                sender: self.chat.doctor_id.clone(),
                above_seq: self.marks[0].0,
            },
            UnreadQuery {
                chat: self.chat.id,
                sender: self.chat.patient_id.clone(),
                above_seq: self.marks[1].0,
            },
        ]
    }

    fn finish(
        &self,
        patient_unread: u64,
        doctor_unread: u64,
    ) -> (RevisedUpdate, Vec<UnreadChange>) {
        let mut update = self.update.clone();
        let mut changes = Vec::new();
        for ((user, role), ((mark, read_in_batch), unread)) in [
            (&self.chat.patient_id, Role::Patient),
            (&self.chat.doctor_id, Role::Doctor),
        ]
        .into_iter()
        .zip(self.marks.into_iter().zip([patient_unread, doctor_unread]))
        {
            update.read_seq.insert(user.to_string(), mark);
            update.unread.insert(user.to_string(), unread);
            if unread != self.chat.unread_of(user) || read_in_batch {
                changes.push(UnreadChange {
                    chat_id: self.chat.id,
                    user_id: user.clone(),
                    role,
                    count: unread,
                });
            }
        }
        (
            RevisedUpdate {
                chat: self.chat.id,
                expected_rev: self.chat.rev,
                update,
            },
            changes,
        )
    }
}

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
        let plan = Plan::new(&chat, batch);
        let counts = store.count_unread(&plan.queries()).await?;
        let (Some(&patient), Some(&doctor)) = (counts.first(), counts.get(1)) else {
            return Err(StoreError::Corrupt(
                "fewer unread counts than asked for".into(),
            ));
        };
        let (u, changes) = plan.finish(patient, doctor);
        if store
            .update_counters(u.chat, u.expected_rev, &u.update)
            .await?
        {
            return Ok(Some(changes));
        }
        tracing::debug!(%chat_id, "chat changed under us; recounting");
    }
    Err(StoreError::Unavailable(format!(
        "chat {chat_id}: gave up after {MAX_CAS_ATTEMPTS} concurrent-update retries"
    )))
}
