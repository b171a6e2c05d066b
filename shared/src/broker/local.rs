//! The in-process engine for standalone mode: one gateway process is the whole
//! cluster. Appends go to a durable log table in the same redb file as the
//! embedded store (committed — on disk — before the ack), fan-out is a direct
//! call into this node's inbox, and the in-process persister consumes the log
//! through [`EventLog`] exactly as a persister consumes the Redis stream.
//!
//! One lock serialises "append, then publish", so live delivery order equals
//! `seq` order, as with the Redis scripts.

use super::template::{to_message, MessageTemplate};
use super::{
    Appended, Backlog, Broker, BrokerError, Claimed, Envelope, EventLog, Inbox, MessageDraft,
    Participants, Presence, SeqWindow, StreamEntry, StreamEvent,
};
use crate::domain::{ChatId, SessionId, UserId};
use crate::protocol::{Message, ServerFrame};
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// chat id → last assigned `seq`.
const SEQ: TableDefinition<&str, u64> = TableDefinition::new("broker_seq");
/// log position → event (JSON). Entries are deleted once persisted.
const LOG: TableDefinition<u64, &str> = TableDefinition::new("broker_log");
/// (chat id, `seq`) → log position of each message still in the log, so that
/// reading one chat's recent messages costs what that chat holds, not the
/// whole backlog (a mass reconnect is thousands of such reads). Written and
/// deleted in the same transactions as the log rows.
const LOG_BY_CHAT: TableDefinition<(&str, u64), u64> = TableDefinition::new("broker_log_by_chat");
/// "next" → next log position (survives the log being emptied).
const LOG_NEXT: TableDefinition<&str, u64> = TableDefinition::new("broker_log_next");
/// (chat id, client_msg_id) → the original message (JSON), for idempotent re-sends.
const CLIENT_MSGS: TableDefinition<(&str, &str), &str> = TableDefinition::new("broker_client_msgs");
/// log position → event that could not be persisted, with a reason.
const DEAD: TableDefinition<u64, &str> = TableDefinition::new("broker_dead_letters");

/// A log row. `tp` is the appending span's W3C `traceparent` (optional, as in
/// the Redis stream: rows written without it decode as before).
#[derive(Serialize, Deserialize)]
#[serde(tag = "t")]
enum LogEvent {
    #[serde(rename = "m")]
    Message {
        m: Message,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tp: Option<String>,
    },
    #[serde(rename = "r")]
    Read {
        c: ChatId,
        u: UserId,
        s: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tp: Option<String>,
    },
}

fn db_err(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("embedded log: {e}"))
}

/// Reads the log row at `pos` into the entry the persister sees.
fn entry(pos: u64, json: &str) -> StreamEntry {
    let (event, traceparent) = match serde_json::from_str::<LogEvent>(json) {
        Ok(LogEvent::Message { m, tp }) => (Ok(StreamEvent::Message(m)), tp),
        Ok(LogEvent::Read { c, u, s, tp }) => (
            Ok(StreamEvent::Read {
                chat_id: c,
                user_id: u,
                up_to_seq: s,
            }),
            tp,
        ),
        Err(e) => (Err(format!("bad log entry: {e}")), None),
    };
    StreamEntry {
        id: pos.to_string(),
        event,
        traceparent,
    }
}

#[derive(Default)]
struct PresenceState {
    sessions: HashMap<UserId, usize>,
    announced: HashSet<UserId>,
    candidates: Vec<(Instant, UserId)>,
}

/// The in-process broker.
pub struct LocalBroker {
    db: Arc<Database>,
    inbox: Arc<dyn Inbox>,
    subscribed: Mutex<HashSet<UserId>>,
    /// Serialises append + publish.
    append_lock: Mutex<()>,
    /// Wakes the persister when the log grows.
    appended: Notify,
    /// Last log position handed to the persister (`None`: start over).
    cursor: Mutex<Option<u64>>,
    presence: Mutex<PresenceState>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning only means a panic elsewhere while holding it; the data is plain.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalBroker {
    /// Uses the embedded database file; deliveries go to `inbox`.
    pub fn new(db: Arc<Database>, inbox: Arc<dyn Inbox>) -> Result<Self, BrokerError> {
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(SEQ).map_err(db_err)?;
        tx.open_table(LOG).map_err(db_err)?;
        tx.open_table(LOG_NEXT).map_err(db_err)?;
        tx.open_table(CLIENT_MSGS).map_err(db_err)?;
        tx.open_table(DEAD).map_err(db_err)?;
        index_log_if_unindexed(&tx)?;
        tx.commit().map_err(db_err)?;
        Ok(Self {
            db,
            inbox,
            subscribed: Mutex::new(HashSet::new()),
            append_lock: Mutex::new(()),
            appended: Notify::new(),
            cursor: Mutex::new(None),
            presence: Mutex::new(PresenceState::default()),
        })
    }

    fn deliver(&self, user: &UserId, envelope: Envelope) {
        if lock(&self.subscribed).contains(user) {
            self.inbox.deliver(user, envelope);
        }
    }

    /// Runs `f` on the blocking pool with the append lock held.
    async fn locked<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Self) -> Result<T, BrokerError> + Send + 'static,
    ) -> Result<T, BrokerError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = lock(&me.append_lock);
            f(&me)
        })
        .await
        .map_err(|e| db_err(format!("blocking task failed: {e}")))?
    }

    /// Appends one event to the log inside `tx` (and indexes a message).
    fn log(tx: &redb::WriteTransaction, event: &LogEvent) -> Result<(), BrokerError> {
        let mut next = tx.open_table(LOG_NEXT).map_err(db_err)?;
        let pos = next.get("next").map_err(db_err)?.map_or(1, |g| g.value());
        next.insert("next", pos + 1).map_err(db_err)?;
        let json =
            serde_json::to_string(event).map_err(|e| BrokerError::Protocol(e.to_string()))?;
        tx.open_table(LOG)
            .map_err(db_err)?
            .insert(pos, json.as_str())
            .map_err(db_err)?;
        if let LogEvent::Message { m, .. } = event {
            let chat = m.chat_id.to_string();
            tx.open_table(LOG_BY_CHAT)
                .map_err(db_err)?
                .insert((chat.as_str(), m.seq), pos)
                .map_err(db_err)?;
        }
        Ok(())
    }

    /// Current `seq` of a chat, or SeqUnknown / the floor.
    fn current_seq(
        tx: &redb::WriteTransaction,
        chat: ChatId,
        floor: Option<u64>,
    ) -> Result<u64, BrokerError> {
        let id = chat.to_string();
        let seqs = tx.open_table(SEQ).map_err(db_err)?;
        let current = seqs.get(id.as_str()).map_err(db_err)?.map(|g| g.value());
        current.or(floor).ok_or(BrokerError::SeqUnknown(chat))
    }
}

/// Removes the log row at `pos` (and its index entry) inside `tx`; returns the
/// row.
fn unlog(tx: &redb::WriteTransaction, pos: u64) -> Result<Option<String>, BrokerError> {
    let row = tx
        .open_table(LOG)
        .map_err(db_err)?
        .remove(pos)
        .map_err(db_err)?
        .map(|g| g.value().to_owned());
    if let Some(Ok(LogEvent::Message { m, .. })) =
        row.as_deref().map(serde_json::from_str::<LogEvent>)
    {
        let chat = m.chat_id.to_string();
        tx.open_table(LOG_BY_CHAT)
            .map_err(db_err)?
            .remove((chat.as_str(), m.seq))
            .map_err(db_err)?;
    }
    Ok(row)
}

/// Builds the by-chat index of a log written before the index existed (a data
/// directory from an older version), once, when the broker opens.
fn index_log_if_unindexed(tx: &redb::WriteTransaction) -> Result<(), BrokerError> {
    let mut index = tx.open_table(LOG_BY_CHAT).map_err(db_err)?;
    if !index.is_empty().map_err(db_err)? {
        return Ok(());
    }
    let log = tx.open_table(LOG).map_err(db_err)?;
    for row in log.iter().map_err(db_err)? {
        let (pos, json) = row.map_err(db_err)?;
        if let Ok(LogEvent::Message { m, .. }) = serde_json::from_str::<LogEvent>(json.value()) {
            let chat = m.chat_id.to_string();
            index
                .insert((chat.as_str(), m.seq), pos.value())
                .map_err(db_err)?;
        }
    }
    Ok(())
}

/// The broker handle used by the gateway (an `Arc`, because appends run on the
/// blocking pool).
#[derive(Clone)]
pub struct Local(pub Arc<LocalBroker>);

#[async_trait]
impl Broker for Local {
    async fn append_message(
        &self,
        draft: &MessageDraft,
        participants: &Participants,
        origin: SessionId,
        floor_seq: Option<u64>,
    ) -> Result<Appended, BrokerError> {
        let draft = draft.clone();
        let participants = participants.clone();
        // Fails early (before touching the log) if the message cannot be encoded.
        MessageTemplate::new(&draft)?;
        // Taken here: the blocking task below runs outside the caller's span.
        let tp = crate::telemetry::current_traceparent();
        let appended = self
            .0
            .locked(move |me| {
                let tx = me.db.begin_write().map_err(db_err)?;
                let chat = draft.chat_id.to_string();
                let key = (chat.as_str(), draft.client_msg_id.as_str());
                let dup = tx
                    .open_table(CLIENT_MSGS)
                    .map_err(db_err)?
                    .get(key)
                    .map_err(db_err)?
                    .map(|g| g.value().to_owned());
                if let Some(json) = dup {
                    let m: Message = serde_json::from_str(&json)
                        .map_err(|e| BrokerError::Protocol(e.to_string()))?;
                    return Ok(Appended::Duplicate(m));
                }
                let seq = LocalBroker::current_seq(&tx, draft.chat_id, floor_seq)? + 1;
                tx.open_table(SEQ)
                    .map_err(db_err)?
                    .insert(chat.as_str(), seq)
                    .map_err(db_err)?;
                let message = to_message(&draft, seq);
                let json = serde_json::to_string(&message)
                    .map_err(|e| BrokerError::Protocol(e.to_string()))?;
                tx.open_table(CLIENT_MSGS)
                    .map_err(db_err)?
                    .insert(key, json.as_str())
                    .map_err(db_err)?;
                LocalBroker::log(
                    &tx,
                    &LogEvent::Message {
                        m: message.clone(),
                        tp,
                    },
                )?;
                tx.commit().map_err(db_err)?;
                // Durable now; publish while still holding the lock (seq order).
                let envelope = Envelope::new(
                    Some(origin),
                    &ServerFrame::Message {
                        message: message.clone(),
                    },
                );
                me.deliver(&participants.patient, envelope.clone());
                me.deliver(&participants.doctor, envelope);
                Ok(Appended::New(message))
            })
            .await?;
        if matches!(appended, Appended::New(_)) {
            self.0.appended.notify_one();
        }
        Ok(appended)
    }

    async fn append_read(
        &self,
        chat_id: ChatId,
        reader: &UserId,
        peer: &UserId,
        up_to_seq: u64,
        floor_seq: Option<u64>,
    ) -> Result<u64, BrokerError> {
        let reader = reader.clone();
        let peer = peer.clone();
        let tp = crate::telemetry::current_traceparent();
        let mark = self
            .0
            .locked(move |me| {
                let tx = me.db.begin_write().map_err(db_err)?;
                let current = LocalBroker::current_seq(&tx, chat_id, floor_seq)?;
                let mark = up_to_seq.min(current);
                if mark == 0 {
                    return Ok(0);
                }
                LocalBroker::log(
                    &tx,
                    &LogEvent::Read {
                        c: chat_id,
                        u: reader.clone(),
                        s: mark,
                        tp,
                    },
                )?;
                tx.commit().map_err(db_err)?;
                let frame = ServerFrame::Read {
                    chat_id,
                    user_id: reader,
                    up_to_seq: mark,
                };
                me.deliver(&peer, Envelope::new(None, &frame));
                Ok(mark)
            })
            .await?;
        if mark > 0 {
            self.0.appended.notify_one();
        }
        Ok(mark)
    }

    async fn publish(&self, user: &UserId, envelope: Envelope) -> Result<(), BrokerError> {
        self.0.deliver(user, envelope);
        Ok(())
    }

    async fn recent(
        &self,
        chat_id: ChatId,
        window: SeqWindow,
    ) -> Result<Vec<Message>, BrokerError> {
        // The log holds exactly the events not yet persisted, the only
        // messages the store may not have yet; the index finds this chat's.
        let db = self.0.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read().map_err(db_err)?;
            let index = tx.open_table(LOG_BY_CHAT).map_err(db_err)?;
            let log = tx.open_table(LOG).map_err(db_err)?;
            let chat = chat_id.to_string();
            let lo = window.after.map_or(0, |a| a.saturating_add(1));
            let hi = window.before.unwrap_or(u64::MAX);
            let range = index
                .range((chat.as_str(), lo)..(chat.as_str(), hi))
                .map_err(db_err)?;
            // The first `limit` after a cursor, else the latest `limit`.
            let rows = match window.after {
                Some(_) => range.take(window.limit).collect::<Result<Vec<_>, _>>(),
                None => range.rev().take(window.limit).collect(),
            }
            .map_err(db_err)?;
            let mut positions: Vec<u64> = rows.into_iter().map(|(_, pos)| pos.value()).collect();
            if window.after.is_none() {
                positions.reverse();
            }
            let mut found = Vec::with_capacity(positions.len());
            for pos in positions {
                let Some(row) = log.get(pos).map_err(db_err)? else {
                    continue;
                };
                if let Ok(LogEvent::Message { m, .. }) =
                    serde_json::from_str::<LogEvent>(row.value())
                {
                    found.push(m);
                }
            }
            Ok(found)
        })
        .await
        .map_err(|e| db_err(format!("blocking task failed: {e}")))?
    }

    async fn subscribe(&self, user: &UserId) -> Result<(), BrokerError> {
        lock(&self.0.subscribed).insert(user.clone());
        Ok(())
    }

    async fn unsubscribe(&self, user: &UserId) -> Result<(), BrokerError> {
        if !self.0.inbox.wants(user) {
            lock(&self.0.subscribed).remove(user);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

#[async_trait]
impl EventLog for Local {
    async fn read_batch(
        &self,
        max: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntry>, BrokerError> {
        let read = |me: Arc<LocalBroker>| async move {
            tokio::task::spawn_blocking(move || {
                let after = *lock(&me.cursor);
                let tx = me.db.begin_read().map_err(db_err)?;
                let log = tx.open_table(LOG).map_err(db_err)?;
                let range = log.range(after.map_or(0, |a| a + 1)..).map_err(db_err)?;
                let mut entries = Vec::new();
                for row in range.take(max.max(1)) {
                    let (k, v) = row.map_err(db_err)?;
                    entries.push((k.value(), v.value().to_owned()));
                }
                if let Some((last, _)) = entries.last() {
                    *lock(&me.cursor) = Some(*last);
                }
                Ok::<_, BrokerError>(
                    entries
                        .into_iter()
                        .map(|(pos, json)| entry(pos, &json))
                        .collect::<Vec<_>>(),
                )
            })
            .await
            .map_err(|e| db_err(format!("blocking task failed: {e}")))?
        };
        // Register interest before looking, so an append in between is not missed.
        let notified = self.0.appended.notified();
        let entries = read(self.0.clone()).await?;
        if !entries.is_empty() {
            return Ok(entries);
        }
        let _ = tokio::time::timeout(block, notified).await;
        read(self.0.clone()).await
    }

    async fn ack(&self, ids: &[String]) -> Result<(), BrokerError> {
        let positions: Vec<u64> = ids.iter().filter_map(|i| i.parse().ok()).collect();
        let db = self.0.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_write().map_err(db_err)?;
            for p in positions {
                unlog(&tx, p)?;
            }
            tx.commit().map_err(db_err)
        })
        .await
        .map_err(|e| db_err(format!("blocking task failed: {e}")))?
    }

    fn replay_pending(&self) {
        *lock(&self.0.cursor) = None;
    }

    async fn claim_stale(
        &self,
        _min_idle: Duration,
        _max_deliveries: u64,
        _max: usize,
    ) -> Result<Claimed, BrokerError> {
        // One process, one consumer: nothing can be left behind by another.
        Ok(Claimed::default())
    }

    async fn dead_letter(&self, id: &str, reason: &str) -> Result<(), BrokerError> {
        let pos: u64 = id
            .parse()
            .map_err(|_| BrokerError::Protocol(format!("bad log position {id}")))?;
        let reason = reason.to_owned();
        let db = self.0.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_write().map_err(db_err)?;
            {
                let original = unlog(&tx, pos)?;
                let record =
                    serde_json::json!({ "entry": pos, "reason": reason, "event": original });
                tx.open_table(DEAD)
                    .map_err(db_err)?
                    .insert(pos, record.to_string().as_str())
                    .map_err(db_err)?;
            }
            tx.commit().map_err(db_err)
        })
        .await
        .map_err(|e| db_err(format!("blocking task failed: {e}")))??;
        tracing::error!(entry = %id, "log entry moved to the dead letters");
        Ok(())
    }

    async fn trim(&self) -> Result<u64, BrokerError> {
        // Acknowledged entries are deleted at once; nothing is left to trim.
        Ok(0)
    }

    async fn backlog(&self) -> Result<Backlog, BrokerError> {
        let me = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let cursor = *lock(&me.cursor);
            let tx = me.db.begin_read().map_err(db_err)?;
            let log = tx.open_table(LOG).map_err(db_err)?;
            let total = log.len().map_err(db_err)?;
            let undelivered = match cursor {
                None => total,
                Some(c) => log.range(c + 1..).map_err(db_err)?.count() as u64,
            };
            Ok(Backlog {
                pending: total - undelivered,
                undelivered,
            })
        })
        .await
        .map_err(|e| db_err(format!("blocking task failed: {e}")))?
    }
}

#[async_trait]
impl Presence for Local {
    async fn heartbeat(&self, _node: &str, _ttl: Duration) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn session_opened(&self, user: &UserId, _node: &str) -> Result<bool, BrokerError> {
        let mut p = lock(&self.0.presence);
        *p.sessions.entry(user.clone()).or_default() += 1;
        Ok(p.announced.insert(user.clone()))
    }

    async fn session_closed(
        &self,
        user: &UserId,
        _node: &str,
        grace: Duration,
    ) -> Result<(), BrokerError> {
        let mut p = lock(&self.0.presence);
        let left = match p.sessions.get_mut(user) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            p.sessions.remove(user);
            p.candidates.push((Instant::now() + grace, user.clone()));
        }
        Ok(())
    }

    async fn forget_node(&self, _node: &str, _grace: Duration) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn reap_dead_nodes(&self, _grace: Duration) -> Result<usize, BrokerError> {
        Ok(0)
    }

    async fn due_offline(&self, max: usize) -> Result<Vec<UserId>, BrokerError> {
        let mut p = lock(&self.0.presence);
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = p.candidates.drain(..).partition(|(t, _)| *t <= now);
        p.candidates = later;
        let mut offline = Vec::new();
        for (_, user) in due.into_iter().take(max) {
            if !p.sessions.contains_key(&user) && p.announced.remove(&user) {
                offline.push(user);
            }
        }
        Ok(offline)
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BrokerError> {
        let p = lock(&self.0.presence);
        Ok(users.iter().map(|u| p.sessions.contains_key(u)).collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::{ClientMsgId, MessageId, Role, Timestamp};
    use opentelemetry::trace::TracerProvider as _;
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;

    struct NoInbox;

    impl Inbox for NoInbox {
        fn deliver(&self, _user: &UserId, _envelope: Envelope) {}
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    fn broker(dir: &tempfile::TempDir) -> Local {
        let db = Arc::new(Database::create(dir.path().join("chat.redb")).unwrap());
        Local(Arc::new(LocalBroker::new(db, Arc::new(NoInbox)).unwrap()))
    }

    fn draft(chat_id: ChatId, client_msg_id: &str) -> MessageDraft {
        MessageDraft {
            id: MessageId::generate(),
            chat_id,
            sender_id: user("pat"),
            sender_role: Role::Patient,
            body: "hello".into(),
            client_msg_id: ClientMsgId::parse(client_msg_id).unwrap(),
            created_at: Timestamp::now(),
        }
    }

    #[tokio::test]
    async fn log_entries_carry_the_appending_spans_traceparent() {
        // A subscriber with the OpenTelemetry layer, for this thread only
        // (the current-thread runtime polls the appends here).
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _guard = tracing::subscriber::set_default(subscriber);

        let dir = tempfile::tempdir().unwrap();
        let local = broker(&dir);
        let chat = ChatId::generate();
        let participants = Participants {
            patient: user("pat"),
            doctor: user("doc"),
        };
        let span = tracing::info_span!("broker.append");
        let traceparent = span
            .in_scope(crate::telemetry::current_traceparent)
            .expect("a traced span has a traceparent");
        local
            .append_message(
                &draft(chat, "c1"),
                &participants,
                SessionId::generate(),
                Some(0),
            )
            .instrument(span.clone())
            .await
            .unwrap();
        local
            .append_read(chat, &participants.doctor, &participants.patient, 1, None)
            .instrument(span)
            .await
            .unwrap();
        // Outside any span: nothing to carry.
        local
            .append_message(
                &draft(chat, "c2"),
                &participants,
                SessionId::generate(),
                None,
            )
            .await
            .unwrap();

        let entries = local
            .read_batch(10, Duration::from_millis(10))
            .await
            .unwrap();
        let carried: Vec<Option<&str>> = entries.iter().map(|e| e.traceparent.as_deref()).collect();
        assert_eq!(
            carried,
            [Some(traceparent.as_str()), Some(traceparent.as_str()), None]
        );
        assert!(matches!(entries[0].event, Ok(StreamEvent::Message(_))));
        assert!(matches!(
            entries[1].event,
            Ok(StreamEvent::Read { up_to_seq: 1, .. })
        ));
    }

    #[test]
    fn rows_written_without_a_traceparent_still_decode() {
        let chat = ChatId::generate();
        let old = format!(r#"{{"t":"r","c":"{chat}","u":"doc","s":3}}"#);
        let e = entry(7, &old);
        assert_eq!(e.id, "7");
        assert_eq!(e.traceparent, None);
        assert_eq!(
            e.event,
            Ok(StreamEvent::Read {
                chat_id: chat,
                user_id: user("doc"),
                up_to_seq: 3,
            })
        );
    }

    async fn append(local: &Local, chat: ChatId, key: &str) -> u64 {
        let participants = Participants {
            patient: user("pat"),
            doctor: user("doc"),
        };
        match local
            .append_message(
                &draft(chat, key),
                &participants,
                SessionId::generate(),
                Some(0),
            )
            .await
            .unwrap()
        {
            Appended::New(m) => m.seq,
            Appended::Duplicate(m) => panic!("{key} was new, got duplicate {}", m.seq),
        }
    }

    async fn seqs(
        local: &Local,
        chat: ChatId,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> Vec<u64> {
        local
            .recent(
                chat,
                SeqWindow {
                    after,
                    before,
                    limit,
                },
            )
            .await
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m.chat_id, chat);
                m.seq
            })
            .collect()
    }

    #[tokio::test]
    async fn recent_reads_one_chats_unpersisted_messages_by_window_and_forgets_acked_ones() {
        let dir = tempfile::tempdir().unwrap();
        let local = broker(&dir);
        let (a, b) = (ChatId::generate(), ChatId::generate());
        for i in 1..=5 {
            append(&local, a, &format!("a{i}")).await;
            if i <= 3 {
                append(&local, b, &format!("b{i}")).await;
            }
        }
        assert_eq!(
            seqs(&local, a, None, None, 3).await,
            [3, 4, 5],
            "the latest 3"
        );
        assert_eq!(
            seqs(&local, a, Some(1), None, 2).await,
            [2, 3],
            "2 after seq 1"
        );
        assert_eq!(
            seqs(&local, a, None, Some(3), 10).await,
            [1, 2],
            "before seq 3"
        );
        assert_eq!(seqs(&local, b, None, None, 10).await, [1, 2, 3]);

        // The persister takes the first five log entries (a1 b1 a2 b2 a3) and
        // acknowledges them: they leave the log and the index.
        let taken = local
            .read_batch(5, Duration::from_millis(10))
            .await
            .unwrap();
        let ids: Vec<String> = taken.iter().map(|e| e.id.clone()).collect();
        local.ack(&ids).await.unwrap();
        assert_eq!(seqs(&local, a, None, None, 10).await, [4, 5]);
        assert_eq!(seqs(&local, b, None, None, 10).await, [3]);

        // A dead-lettered message (the next entry, b3) leaves them too.
        let rest = local
            .read_batch(10, Duration::from_millis(10))
            .await
            .unwrap();
        local.dead_letter(&rest[0].id, "test").await.unwrap();
        assert_eq!(seqs(&local, a, None, None, 10).await, [4, 5]);
        assert!(seqs(&local, b, None, None, 10).await.is_empty());
    }

    #[tokio::test]
    async fn a_log_without_its_index_is_indexed_when_the_broker_opens() {
        let dir = tempfile::tempdir().unwrap();
        let chat = ChatId::generate();
        {
            let local = broker(&dir);
            for i in 1..=3 {
                append(&local, chat, &format!("m{i}")).await;
            }
            // As a data directory written before the index existed.
            let tx = local.0.db.begin_write().unwrap();
            tx.delete_table(LOG_BY_CHAT).unwrap();
            tx.commit().unwrap();
        }
        let reopened = broker(&dir);
        assert_eq!(seqs(&reopened, chat, None, None, 10).await, [1, 2, 3]);
    }
}
