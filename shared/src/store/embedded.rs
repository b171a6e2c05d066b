//! The embedded engine: a [`redb`] database file in `DATA_DIR` (pure Rust,
//! ACID, crash-safe: a commit is on disk when it returns).
//!
//! Standalone mode keeps everything in this one file: the [`Store`] tables
//! below, and the in-process broker's durable log
//! ([`crate::broker::local::LocalBroker`]) beside them. redb calls block on
//! disk I/O, so every operation runs on tokio's blocking pool.

use super::{ChatRecord, ChatUpsert, CounterUpdate, NewChat, Store, StoreError};
use crate::broker::SeqWindow;
use crate::domain::{ChatId, ClientMsgId, Role, UserId};
use crate::protocol::Message;
use async_trait::async_trait;
use redb::{Database, MultimapTableDefinition, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// chat id → chat record (JSON).
const CHATS: TableDefinition<&str, &str> = TableDefinition::new("chats");
/// (patient, doctor) → chat id: one chat per pair.
const PAIRS: TableDefinition<(&str, &str), &str> = TableDefinition::new("chat_pairs");
/// user → their chat ids.
const USER_CHATS: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("user_chats");
/// (chat id, seq) → message (JSON).
const MESSAGES: TableDefinition<(&str, u64), &str> = TableDefinition::new("messages");
/// (chat id, client_msg_id) → seq.
const CLIENT_MSG_IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("client_msg_ids");
/// message id → (): a message is stored once even if replayed under another seq.
const MESSAGE_IDS: TableDefinition<&str, ()> = TableDefinition::new("message_ids");

/// Any redb failure: the disk is the store, so all of them are "unavailable".
fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// The embedded store.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/chat.redb` and its tables.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| db_err(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join("chat.redb");
        let db = Database::create(&path).map_err(|e| db_err(format!("{}: {e}", path.display())))?;
        let store = Self { db: Arc::new(db) };
        store.create_tables()?;
        Ok(store)
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(CHATS).map_err(db_err)?;
        tx.open_table(PAIRS).map_err(db_err)?;
        tx.open_multimap_table(USER_CHATS).map_err(db_err)?;
        tx.open_table(MESSAGES).map_err(db_err)?;
        tx.open_table(MESSAGE_IDS).map_err(db_err)?;
        tx.open_table(CLIENT_MSG_IDS).map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    /// The database file, shared with the in-process broker's log.
    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| db_err(format!("blocking task failed: {e}")))?
    }
}

fn decode_chat(json: &str) -> Result<ChatRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| corrupt("chat record", e))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| corrupt("encoding", e))
}

fn read_chat(db: &Database, id: &str) -> Result<Option<ChatRecord>, StoreError> {
    let tx = db.begin_read().map_err(db_err)?;
    let chats = tx.open_table(CHATS).map_err(db_err)?;
    let found = chats.get(id).map_err(db_err)?;
    found.map(|g| decode_chat(g.value())).transpose()
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn prepare(&self) -> Result<(), StoreError> {
        let s = self.clone();
        self.blocking(move |_| s.create_tables()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db| db.begin_read().map(|_| ()).map_err(db_err))
            .await
    }

    async fn upsert_chat(&self, new: &NewChat) -> Result<ChatUpsert, StoreError> {
        let new = new.clone();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(db_err)?;
            let outcome = {
                let mut chats = tx.open_table(CHATS).map_err(db_err)?;
                let mut pairs = tx.open_table(PAIRS).map_err(db_err)?;
                let pair = (new.patient_id.as_str(), new.doctor_id.as_str());
                let existing = pairs
                    .get(pair)
                    .map_err(db_err)?
                    .map(|g| g.value().to_owned());
                match existing {
                    Some(id) => {
                        let json = chats
                            .get(id.as_str())
                            .map_err(db_err)?
                            .map(|g| g.value().to_owned())
                            .ok_or_else(|| corrupt("chat pair", "points to no chat"))?;
                        let mut record = decode_chat(&json)?;
                        let before = record.clone();
                        if !record.appointment_ids.contains(&new.appointment_id) {
                            record.appointment_ids.push(new.appointment_id.clone());
                        }
                        if let Some(n) = &new.patient_name {
                            record.patient_name = Some(n.as_str().to_owned());
                        }
                        if let Some(n) = &new.doctor_name {
                            record.doctor_name = Some(n.as_str().to_owned());
                        }
                        if record == before {
                            ChatUpsert::Unchanged(record)
                        } else {
                            chats
                                .insert(id.as_str(), encode(&record)?.as_str())
                                .map_err(db_err)?;
                            ChatUpsert::Updated(record)
                        }
                    }
                    None => {
                        let record = ChatRecord {
                            id: new.id,
                            patient_id: new.patient_id.clone(),
                            doctor_id: new.doctor_id.clone(),
                            patient_name: new.patient_name.as_ref().map(|n| n.as_str().to_owned()),
                            doctor_name: new.doctor_name.as_ref().map(|n| n.as_str().to_owned()),
                            appointment_ids: vec![new.appointment_id.clone()],
                            created_at: new.created_at,
                            last_message: None,
                            last_seq: 0,
                            unread: BTreeMap::new(),
                            read_seq: BTreeMap::new(),
                            rev: 0,
                        };
                        let id = record.id.to_string();
                        chats
                            .insert(id.as_str(), encode(&record)?.as_str())
                            .map_err(db_err)?;
                        pairs.insert(pair, id.as_str()).map_err(db_err)?;
                        let mut users = tx.open_multimap_table(USER_CHATS).map_err(db_err)?;
                        users
                            .insert(new.patient_id.as_str(), id.as_str())
                            .map_err(db_err)?;
                        users
                            .insert(new.doctor_id.as_str(), id.as_str())
                            .map_err(db_err)?;
                        ChatUpsert::Created(record)
                    }
                }
            };
            tx.commit().map_err(db_err)?;
            Ok(outcome)
        })
        .await
    }

    async fn chat(&self, id: ChatId) -> Result<Option<ChatRecord>, StoreError> {
        self.blocking(move |db| read_chat(db, &id.to_string()))
            .await
    }

    async fn chats_of(&self, user: &UserId, role: Role) -> Result<Vec<ChatRecord>, StoreError> {
        let user = user.clone();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(db_err)?;
            let users = tx.open_multimap_table(USER_CHATS).map_err(db_err)?;
            let chats = tx.open_table(CHATS).map_err(db_err)?;
            let mut out = Vec::new();
            for id in users.get(user.as_str()).map_err(db_err)? {
                let id = id.map_err(db_err)?;
                let Some(json) = chats.get(id.value()).map_err(db_err)? else {
                    continue;
                };
                let record = decode_chat(json.value())?;
                if record.role_of(&user) == Some(role) {
                    out.push(record);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn messages(&self, chat: ChatId, window: SeqWindow) -> Result<Vec<Message>, StoreError> {
        self.blocking(move |db| {
            let id = chat.to_string();
            let lo = window.after.map_or(0, |a| a.saturating_add(1));
            let hi = window.before.map_or(u64::MAX, |b| b.saturating_sub(1));
            if window.limit == 0 || lo > hi {
                return Ok(Vec::new());
            }
            let tx = db.begin_read().map_err(db_err)?;
            let messages = tx.open_table(MESSAGES).map_err(db_err)?;
            let range = messages
                .range((id.as_str(), lo)..=(id.as_str(), hi))
                .map_err(db_err)?;
            let rows: Vec<String> = if window.after.is_some() {
                range
                    .take(window.limit)
                    .map(|r| r.map(|(_, v)| v.value().to_owned()).map_err(db_err))
                    .collect::<Result<_, _>>()?
            } else {
                let mut newest: Vec<String> = range
                    .rev()
                    .take(window.limit)
                    .map(|r| r.map(|(_, v)| v.value().to_owned()).map_err(db_err))
                    .collect::<Result<_, _>>()?;
                newest.reverse();
                newest
            };
            rows.iter()
                .map(|j| serde_json::from_str(j).map_err(|e| corrupt("message", e)))
                .collect()
        })
        .await
    }

    async fn message_by_client_msg_id(
        &self,
        chat: ChatId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StoreError> {
        let cmid = client_msg_id.clone();
        self.blocking(move |db| {
            let id = chat.to_string();
            let tx = db.begin_read().map_err(db_err)?;
            let seq = tx
                .open_table(CLIENT_MSG_IDS)
                .map_err(db_err)?
                .get((id.as_str(), cmid.as_str()))
                .map_err(db_err)?
                .map(|g| g.value());
            let Some(seq) = seq else { return Ok(None) };
            let messages = tx.open_table(MESSAGES).map_err(db_err)?;
            let json = messages.get((id.as_str(), seq)).map_err(db_err)?;
            json.map(|g| serde_json::from_str(g.value()).map_err(|e| corrupt("message", e)))
                .transpose()
        })
        .await
    }

    async fn insert_messages(&self, messages: &[Message]) -> Result<usize, StoreError> {
        if messages.is_empty() {
            return Ok(0);
        }
        let messages = messages.to_vec();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(db_err)?;
            let mut inserted = 0;
            {
                let mut table = tx.open_table(MESSAGES).map_err(db_err)?;
                let mut ids = tx.open_table(MESSAGE_IDS).map_err(db_err)?;
                let mut cmids = tx.open_table(CLIENT_MSG_IDS).map_err(db_err)?;
                for m in &messages {
                    let chat = m.chat_id.to_string();
                    let id = m.id.to_string();
                    if ids.get(id.as_str()).map_err(db_err)?.is_some()
                        || table.get((chat.as_str(), m.seq)).map_err(db_err)?.is_some()
                    {
                        continue;
                    }
                    table
                        .insert((chat.as_str(), m.seq), encode(m)?.as_str())
                        .map_err(db_err)?;
                    ids.insert(id.as_str(), ()).map_err(db_err)?;
                    cmids
                        .insert((chat.as_str(), m.client_msg_id.as_str()), m.seq)
                        .map_err(db_err)?;
                    inserted += 1;
                }
            }
            tx.commit().map_err(db_err)?;
            Ok(inserted)
        })
        .await
    }

    async fn count_messages_from(
        &self,
        chat: ChatId,
        sender: &UserId,
        above_seq: u64,
    ) -> Result<u64, StoreError> {
        let sender = sender.clone();
        self.blocking(move |db| {
            let id = chat.to_string();
            let tx = db.begin_read().map_err(db_err)?;
            let table = tx.open_table(MESSAGES).map_err(db_err)?;
            let mut n = 0;
            for row in table
                .range((id.as_str(), above_seq.saturating_add(1))..=(id.as_str(), u64::MAX))
                .map_err(db_err)?
            {
                let (_, v) = row.map_err(db_err)?;
                let m: Message =
                    serde_json::from_str(v.value()).map_err(|e| corrupt("message", e))?;
                if m.sender_id == sender {
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    async fn update_counters(
        &self,
        chat: ChatId,
        expected_rev: u64,
        update: &CounterUpdate,
    ) -> Result<bool, StoreError> {
        let update = update.clone();
        self.blocking(move |db| {
            let id = chat.to_string();
            let tx = db.begin_write().map_err(db_err)?;
            let applied = {
                let mut chats = tx.open_table(CHATS).map_err(db_err)?;
                let json = chats
                    .get(id.as_str())
                    .map_err(db_err)?
                    .map(|g| g.value().to_owned());
                match json {
                    None => false,
                    Some(json) => {
                        let mut record = decode_chat(&json)?;
                        if record.rev != expected_rev {
                            false
                        } else {
                            record.last_seq = update.last_seq;
                            if let Some(m) = &update.last_message {
                                record.last_message = Some(m.clone());
                            }
                            record.unread.extend(update.unread.clone());
                            record.read_seq.extend(update.read_seq.clone());
                            record.rev += 1;
                            chats
                                .insert(id.as_str(), encode(&record)?.as_str())
                                .map_err(db_err)?;
                            true
                        }
                    }
                }
            };
            tx.commit().map_err(db_err)?;
            Ok(applied)
        })
        .await
    }
}
