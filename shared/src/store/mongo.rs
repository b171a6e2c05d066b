//! The MongoDB engine, writing the layout the contract documents:
//! `messages {_id, chat_id, seq, sender_id, sender_role, body, client_msg_id,
//! created_at: Date}` and `chats {_id, patient_id, doctor_id, appointment_ids,
//! created_at, last_message, last_seq, unread, read_seq}` (plus the names the
//! booking app gave and a `rev` for optimistic concurrency).
//!
//! Numbers are written as Int64 and read into `i64` fields (some servers hand
//! small Int64 values back as Int32); history is sorted by `seq`, never `_id`.

use super::{
    ChatRecord, ChatUpsert, CounterUpdate, NewChat, RevisedUpdate, Store, StoreError, UnreadQuery,
};
use crate::broker::SeqWindow;
use crate::config::MongoSettings;
use crate::domain::{AppointmentId, ChatId, ClientMsgId, MessageId, Role, Timestamp, UserId};
use crate::protocol::Message;
use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::future::IntoFuture;
use std::time::Duration;

const DUPLICATE_KEY: i32 = 11000;

/// The server's "operation exceeded its `maxTimeMS`" error code.
const MAX_TIME_MS_EXPIRED: i32 = 50;

/// The MongoDB store.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    timeout: Duration,
}

#[derive(Debug, Serialize, Deserialize)]
struct MessageDoc {
    #[serde(rename = "_id")]
    id: String,
    chat_id: String,
    seq: i64,
    sender_id: String,
    sender_role: Role,
    body: String,
    client_msg_id: String,
    created_at: DateTime,
}

#[derive(Debug, Deserialize)]
struct ChatDoc {
    #[serde(rename = "_id")]
    id: String,
    patient_id: String,
    doctor_id: String,
    #[serde(default)]
    patient_name: Option<String>,
    #[serde(default)]
    doctor_name: Option<String>,
    #[serde(default)]
    appointment_ids: Vec<String>,
    created_at: DateTime,
    #[serde(default)]
    last_message: Option<MessageDoc>,
    #[serde(default)]
    last_seq: i64,
    #[serde(default)]
    unread: BTreeMap<String, i64>,
    #[serde(default)]
    read_seq: BTreeMap<String, i64>,
    #[serde(default)]
    rev: i64,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl MessageDoc {
    fn from_message(m: &Message) -> Self {
        Self {
            id: m.id.to_string(),
            chat_id: m.chat_id.to_string(),
            seq: m.seq as i64,
            sender_id: m.sender_id.to_string(),
            sender_role: m.sender_role,
            body: m.body.clone(),
            client_msg_id: m.client_msg_id.to_string(),
            created_at: DateTime::from_millis(m.created_at.millis()),
        }
    }

    fn into_message(self) -> Result<Message, StoreError> {
        Ok(Message {
            seq: u64::try_from(self.seq).map_err(|e| corrupt("message seq", e))?,
            id: MessageId::parse(&self.id).map_err(|e| corrupt("message _id", e))?,
            chat_id: ChatId::parse(&self.chat_id).map_err(|e| corrupt("message chat_id", e))?,
            sender_id: UserId::parse(self.sender_id)
                .map_err(|e| corrupt("message sender_id", e))?,
            sender_role: self.sender_role,
            body: self.body,
            client_msg_id: ClientMsgId::parse(self.client_msg_id)
                .map_err(|e| corrupt("message client_msg_id", e))?,
            created_at: Timestamp::from_millis(self.created_at.timestamp_millis()),
        })
    }

    fn to_document(&self) -> Result<Document, StoreError> {
        mongodb::bson::to_document(self).map_err(|e| corrupt("message", e))
    }
}

fn counts(map: BTreeMap<String, i64>) -> BTreeMap<String, u64> {
    map.into_iter().map(|(k, v)| (k, v.max(0) as u64)).collect()
}

impl ChatDoc {
    fn into_record(self) -> Result<ChatRecord, StoreError> {
        Ok(ChatRecord {
            id: ChatId::parse(&self.id).map_err(|e| corrupt("chat _id", e))?,
            patient_id: UserId::parse(self.patient_id)
                .map_err(|e| corrupt("chat patient_id", e))?,
            doctor_id: UserId::parse(self.doctor_id).map_err(|e| corrupt("chat doctor_id", e))?,
            patient_name: self.patient_name,
            doctor_name: self.doctor_name,
            appointment_ids: self
                .appointment_ids
                .into_iter()
                .map(AppointmentId::parse)
                .collect::<Result<_, _>>()
                .map_err(|e| corrupt("chat appointment_ids", e))?,
            created_at: Timestamp::from_millis(self.created_at.timestamp_millis()),
            last_message: self
                .last_message
                .map(MessageDoc::into_message)
                .transpose()?,
            last_seq: self.last_seq.max(0) as u64,
            unread: counts(self.unread),
            read_seq: counts(self.read_seq),
            rev: self.rev.max(0) as u64,
        })
    }
}

impl MongoStore {
    /// Connects (lazily: the driver connects on first use) with `timeout` on
    /// server selection and on every operation.
    pub async fn connect(settings: &MongoSettings, timeout: Duration) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(&settings.url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("MONGODB_URL: {e}")))?;
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.app_name.get_or_insert_with(|| "chat".into());
        options.command_event_handler = Some(crate::metrics::mongo_command_handler());
        let client =
            Client::with_options(options).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            db: client.database(&settings.db),
            timeout,
        })
    }

    fn messages_coll(&self) -> Collection<MessageDoc> {
        self.db.collection("messages")
    }

    fn chats_coll(&self) -> Collection<ChatDoc> {
        self.db.collection("chats")
    }

    async fn timed<T>(
        &self,
        what: &str,
        fut: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout * 2, fut.into_future()).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(driver_error(what, &e)),
            Err(_) => Err(self.timed_out(what)),
        }
    }

    /// The error for an operation we stopped waiting for (after twice the
    /// timeout: the server's own `maxTimeMS`, where set, fires first).
    fn timed_out(&self, what: &str) -> StoreError {
        StoreError::Timeout(format!("{what}: no answer within {:?}", self.timeout * 2))
    }

    async fn find_pair(
        &self,
        patient: &UserId,
        doctor: &UserId,
    ) -> Result<Option<ChatRecord>, StoreError> {
        self.timed(
            "find chat",
            self.chats_coll()
                .find_one(doc! {"patient_id": patient.as_str(), "doctor_id": doctor.as_str()}),
        )
        .await?
        .map(ChatDoc::into_record)
        .transpose()
    }
}

/// A driver error as a store error: the server giving up on `maxTimeMS` is a
/// timeout (less work may succeed), anything else the store being unavailable.
fn driver_error(what: &str, e: &mongodb::error::Error) -> StoreError {
    use mongodb::error::ErrorKind;
    match e.kind.as_ref() {
        ErrorKind::Command(c) if c.code == MAX_TIME_MS_EXPIRED => {
            StoreError::Timeout(format!("{what}: {e}"))
        }
        _ => StoreError::Unavailable(format!("{what}: {e}")),
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => e.to_string().contains("E11000"),
    }
}

#[async_trait]
impl Store for MongoStore {
    async fn prepare(&self) -> Result<(), StoreError> {
        let unique = IndexOptions::builder().unique(true).build();
        self.timed(
            "create messages indexes",
            self.messages_coll().create_index(
                IndexModel::builder()
                    .keys(doc! {"chat_id": 1, "seq": 1})
                    .options(unique.clone())
                    .build(),
            ),
        )
        .await?;
        self.timed(
            "create messages client_msg_id index",
            self.messages_coll().create_index(
                IndexModel::builder()
                    .keys(doc! {"chat_id": 1, "client_msg_id": 1})
                    .build(),
            ),
        )
        .await?;
        self.timed(
            "create chats pair index",
            self.chats_coll().create_index(
                IndexModel::builder()
                    .keys(doc! {"patient_id": 1, "doctor_id": 1})
                    .options(unique)
                    .build(),
            ),
        )
        .await?;
        for key in ["doctor_id", "appointment_ids"] {
            self.timed(
                "create chats index",
                self.chats_coll()
                    .create_index(IndexModel::builder().keys(doc! {key: 1}).build()),
            )
            .await?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.db.run_command(doc! {"ping": 1}))
            .await
            .map(|_| ())
    }

    async fn upsert_chat(&self, new: &NewChat) -> Result<ChatUpsert, StoreError> {
        let mut set = Document::new();
        if let Some(n) = &new.patient_name {
            set.insert("patient_name", n.as_str());
        }
        if let Some(n) = &new.doctor_name {
            set.insert("doctor_name", n.as_str());
        }
        let mut update = doc! {
            "$setOnInsert": {
                "_id": new.id.to_string(),
                "created_at": DateTime::from_millis(new.created_at.millis()),
                "last_message": Bson::Null,
                "last_seq": 0_i64,
                "unread": {},
                "read_seq": {},
                "rev": 0_i64,
            },
            "$addToSet": {"appointment_ids": new.appointment_id.as_str()},
        };
        if !set.is_empty() {
            update.insert("$set", set);
        }
        let filter =
            doc! {"patient_id": new.patient_id.as_str(), "doctor_id": new.doctor_id.as_str()};
        // An upserting `update` (not `findAndModify`: nx-27017 ignores
        // `$setOnInsert` and `$addToSet` when `findAndModify` inserts). The
        // server's own answer says what happened: `upserted` = created,
        // `nModified` = 0 for a no-op (appointment already in the set, same
        // names) = unchanged. Two racing creations of the same pair: one insert
        // wins the unique index, the other fails with a duplicate key and
        // simply retries as an update.
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let r = tokio::time::timeout(
                self.timeout * 2,
                self.chats_coll()
                    .update_one(filter.clone(), update.clone())
                    .upsert(true)
                    .into_future(),
            )
            .await
            .map_err(|_| self.timed_out("upsert chat"))?;
            match r {
                Ok(result) => break result,
                Err(e) if is_duplicate_key(&e) && attempt < 3 => continue,
                Err(e) => return Err(driver_error("upsert chat", &e)),
            }
        };
        let after = self
            .find_pair(&new.patient_id, &new.doctor_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("chat vanished after upsert".into()))?;
        Ok(if result.upserted_id.is_some() {
            ChatUpsert::Created(after)
        } else if result.modified_count > 0 {
            ChatUpsert::Updated(after)
        } else {
            ChatUpsert::Unchanged(after)
        })
    }

    async fn chat(&self, id: ChatId) -> Result<Option<ChatRecord>, StoreError> {
        self.timed(
            "find chat",
            self.chats_coll().find_one(doc! {"_id": id.to_string()}),
        )
        .await?
        .map(ChatDoc::into_record)
        .transpose()
    }

    async fn chats_of(&self, user: &UserId, role: Role) -> Result<Vec<ChatRecord>, StoreError> {
        let filter = match role {
            Role::Patient => doc! {"patient_id": user.as_str()},
            Role::Doctor => doc! {"doctor_id": user.as_str()},
            _ => return Ok(Vec::new()),
        };
        let docs: Vec<ChatDoc> = self
            .timed("list chats", async {
                self.chats_coll().find(filter).await?.try_collect().await
            })
            .await?;
        docs.into_iter().map(ChatDoc::into_record).collect()
    }

    async fn messages(&self, chat: ChatId, window: SeqWindow) -> Result<Vec<Message>, StoreError> {
        // MongoDB reads `limit(0)` as "no limit" and a negative one (a
        // `usize::MAX` cast) as a single-document batch.
        if window.limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(window.limit).unwrap_or(i64::MAX);
        let mut range = Document::new();
        if let Some(a) = window.after {
            range.insert("$gt", a as i64);
        }
        if let Some(b) = window.before {
            range.insert("$lt", b as i64);
        }
        let mut filter = doc! {"chat_id": chat.to_string()};
        if !range.is_empty() {
            filter.insert("seq", range);
        }
        let ascending = window.after.is_some();
        let docs: Vec<MessageDoc> = self
            .timed("read history", async {
                self.messages_coll()
                    .find(filter)
                    .sort(doc! {"seq": if ascending { 1 } else { -1 }})
                    .limit(limit)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        let mut messages = docs
            .into_iter()
            .map(MessageDoc::into_message)
            .collect::<Result<Vec<_>, _>>()?;
        messages.sort_by_key(|m| m.seq);
        Ok(messages)
    }

    async fn message_by_client_msg_id(
        &self,
        chat: ChatId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StoreError> {
        self.timed(
            "find message by client_msg_id",
            self.messages_coll().find_one(doc! {
                "chat_id": chat.to_string(),
                "client_msg_id": client_msg_id.as_str(),
            }),
        )
        .await?
        .map(MessageDoc::into_message)
        .transpose()
    }

    async fn insert_messages(&self, messages: &[Message]) -> Result<usize, StoreError> {
        use mongodb::error::ErrorKind;
        if messages.is_empty() {
            return Ok(0);
        }
        let docs = messages
            .iter()
            .map(|m| MessageDoc::from_message(m).to_document())
            .collect::<Result<Vec<_>, _>>()?;
        let coll: Collection<Document> = self.db.collection("messages");
        let result = tokio::time::timeout(self.timeout * 2, coll.insert_many(docs).ordered(false))
            .await
            .map_err(|_| self.timed_out("insert messages"))?;
        match result {
            Ok(r) => Ok(r.inserted_ids.len()),
            Err(e) => match e.kind.as_ref() {
                // Unordered: every document without a write error was inserted.
                // Duplicates (a replay) are expected; anything else fails the batch.
                ErrorKind::InsertMany(ime) if ime.write_concern_error.is_none() => {
                    let errors = ime.write_errors.as_deref().unwrap_or_default();
                    if let Some(other) = errors.iter().find(|w| w.code != DUPLICATE_KEY) {
                        return Err(StoreError::Rejected(format!(
                            "insert messages: {}",
                            other.message
                        )));
                    }
                    Ok(messages.len() - errors.len())
                }
                _ => Err(driver_error("insert messages", &e)),
            },
        }
    }

    async fn count_messages_from(
        &self,
        chat: ChatId,
        sender: &UserId,
        above_seq: u64,
    ) -> Result<u64, StoreError> {
        self.timed(
            "count unread",
            self.messages_coll().count_documents(doc! {
                "chat_id": chat.to_string(),
                "seq": {"$gt": above_seq as i64},
                "sender_id": sender.as_str(),
            }),
        )
        .await
    }

    async fn update_counters(
        &self,
        chat: ChatId,
        expected_rev: u64,
        update: &CounterUpdate,
    ) -> Result<bool, StoreError> {
        let (filter, change) = counter_statement(chat, expected_rev, update)?;
        let r = self
            .timed(
                "update counters",
                self.chats_coll().update_one(filter, change),
            )
            .await?;
        Ok(r.matched_count == 1)
    }

    async fn chats(&self, ids: &[ChatId]) -> Result<Vec<ChatRecord>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for part in ids.chunks(MAX_IDS_PER_COMMAND) {
            found.extend(self.chats_once(part).await?);
        }
        Ok(found)
    }

    async fn count_unread(&self, queries: &[UnreadQuery]) -> Result<Vec<u64>, StoreError> {
        let mut counts = Vec::with_capacity(queries.len());
        for part in queries.chunks(MAX_UNREAD_CLAUSES) {
            counts.extend(self.count_unread_once(part).await?);
        }
        Ok(counts)
    }

    async fn update_counters_all(&self, updates: &[RevisedUpdate]) -> Result<bool, StoreError> {
        let mut all = true;
        for part in updates.chunks(MAX_IDS_PER_COMMAND) {
            all &= self.update_counters_once(part).await?;
        }
        Ok(all)
    }

    async fn unread_totals(&self, users: &[(UserId, Role)]) -> Result<Vec<u64>, StoreError> {
        let mut totals = Vec::with_capacity(users.len());
        for part in users.chunks(MAX_IDS_PER_COMMAND) {
            totals.extend(self.unread_totals_once(part).await?);
        }
        Ok(totals)
    }
}

/// Most `$or` clauses in one unread-count query (two per chat, so 128 chats):
/// each clause is one index range scan on `(chat_id, seq)` for MongoDB, so the
/// query's cost grows with the clauses; bounded, one query stays well inside
/// the operation timeout, and a 1000-event batch over up to 128 chats (the
/// usual shape: many messages per chat) still counts in one round trip.
pub const MAX_UNREAD_CLAUSES: usize = 256;

/// Most chat ids (or users, or update statements) in one command of the other
/// batch forms: a full persister batch (1000 events) fits one, and no command
/// grows past that whatever the caller passes.
pub const MAX_IDS_PER_COMMAND: usize = 1000;

/// The single-command bodies of the batch forms, each for at most
/// [`MAX_UNREAD_CLAUSES`] or [`MAX_IDS_PER_COMMAND`] items. Reads carry
/// `maxTimeMS` (the store's timeout) so that MongoDB itself abandons a query
/// the persister has given up on, instead of finishing it for nobody.
impl MongoStore {
    async fn chats_once(&self, ids: &[ChatId]) -> Result<Vec<ChatRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(ChatId::to_string).collect();
        let docs: Vec<ChatDoc> = self
            .timed("find chats", async {
                self.chats_coll()
                    .find(doc! {"_id": {"$in": ids}})
                    .batch_size(BIG_BATCH)
                    .max_time(self.timeout)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        docs.into_iter().map(ChatDoc::into_record).collect()
    }

    async fn count_unread_once(&self, queries: &[UnreadQuery]) -> Result<Vec<u64>, StoreError> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        // One query for all: the matching messages' (chat, sender, seq),
        // counted here per query — by seq too, so two queries on the same
        // (chat, sender) with different marks each get their own answer. (A
        // `$group` on a compound key would return less, but the MongoDB-wire
        // stand-in the tests use cannot group on one.) Unread messages are few
        // per reader, and the ones returned are two short strings and a number.
        let clauses: Vec<Document> = queries
            .iter()
            .map(|q| {
                doc! {
                    "chat_id": q.chat.to_string(),
                    "sender_id": q.sender.as_str(),
                    "seq": {"$gt": q.above_seq as i64},
                }
            })
            .collect();
        #[derive(serde::Deserialize)]
        struct Hit {
            chat_id: String,
            sender_id: String,
            seq: i64,
        }
        let hits: Vec<Hit> = self
            .timed("count unread", async {
                self.db
                    .collection::<Hit>("messages")
                    .find(doc! {"$or": clauses})
                    .projection(doc! {"_id": 0, "chat_id": 1, "sender_id": 1, "seq": 1})
                    .batch_size(BIG_BATCH)
                    .max_time(self.timeout)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        let mut seqs: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
        for h in &hits {
            seqs.entry((&h.chat_id, &h.sender_id))
                .or_default()
                .push(h.seq);
        }
        Ok(queries
            .iter()
            .map(|q| {
                let chat = q.chat.to_string();
                seqs.get(&(chat.as_str(), q.sender.as_str()))
                    .map_or(0, |s| {
                        s.iter().filter(|&&n| n > q.above_seq as i64).count() as u64
                    })
            })
            .collect())
    }

    async fn update_counters_once(&self, updates: &[RevisedUpdate]) -> Result<bool, StoreError> {
        if updates.is_empty() {
            return Ok(true);
        }
        // One `update` command with a statement per chat: one round trip. The
        // reply only says how many matched, so "not all" sends the caller to
        // redo them one by one.
        let statements = updates
            .iter()
            .map(|u| {
                let (q, change) = counter_statement(u.chat, u.expected_rev, &u.update)?;
                Ok(doc! {"q": q, "u": change})
            })
            .collect::<Result<Vec<Document>, StoreError>>()?;
        let reply = self
            .timed(
                "update counters",
                self.db.run_command(doc! {
                    "update": "chats",
                    "updates": statements,
                    "ordered": false,
                }),
            )
            .await?;
        if let Ok(errors) = reply.get_array("writeErrors") {
            return Err(StoreError::Rejected(format!("update counters: {errors:?}")));
        }
        let matched = reply
            .get_i32("n")
            .map(i64::from)
            .or_else(|_| reply.get_i64("n"))
            .map_err(|e| corrupt("update reply", e))?;
        Ok(matched == updates.len() as i64)
    }

    async fn unread_totals_once(&self, users: &[(UserId, Role)]) -> Result<Vec<u64>, StoreError> {
        let (mut patients, mut doctors) = (Vec::new(), Vec::new());
        for (user, role) in users {
            match role {
                Role::Patient => patients.push(user.as_str()),
                Role::Doctor => doctors.push(user.as_str()),
                _ => {}
            }
        }
        if patients.is_empty() && doctors.is_empty() {
            return Ok(vec![0; users.len()]);
        }
        #[derive(serde::Deserialize)]
        struct Counts {
            patient_id: String,
            doctor_id: String,
            #[serde(default)]
            unread: BTreeMap<String, i64>,
        }
        let filter = doc! {"$or": [
            {"patient_id": {"$in": patients}},
            {"doctor_id": {"$in": doctors}},
        ]};
        let chats: Vec<Counts> = self
            .timed("unread totals", async {
                self.db
                    .collection::<Counts>("chats")
                    .find(filter)
                    .projection(doc! {"_id": 0, "patient_id": 1, "doctor_id": 1, "unread": 1})
                    .batch_size(BIG_BATCH)
                    .max_time(self.timeout)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        Ok(users
            .iter()
            .map(|(user, role)| {
                chats
                    .iter()
                    .filter(|c| match role {
                        Role::Patient => c.patient_id == user.as_str(),
                        Role::Doctor => c.doctor_id == user.as_str(),
                        _ => false,
                    })
                    .map(|c| c.unread.get(user.as_str()).copied().unwrap_or(0).max(0) as u64)
                    .sum()
            })
            .collect())
    }
}

/// Documents per cursor batch for the persister's set reads, so a large
/// answer still comes back in one round trip.
const BIG_BATCH: u32 = 10_000;

/// The filter and change of one revision-guarded counter update.
fn counter_statement(
    chat: ChatId,
    expected_rev: u64,
    update: &CounterUpdate,
) -> Result<(Document, Document), StoreError> {
    let mut set = doc! {"last_seq": update.last_seq as i64};
    if let Some(m) = &update.last_message {
        set.insert("last_message", MessageDoc::from_message(m).to_document()?);
    }
    for (user, n) in &update.unread {
        set.insert(format!("unread.{user}"), *n as i64);
    }
    for (user, n) in &update.read_seq {
        set.insert(format!("read_seq.{user}"), *n as i64);
    }
    let filter = if expected_rev == 0 {
        // Older documents may lack `rev` entirely.
        doc! {"_id": chat.to_string(), "$or": [{"rev": 0_i64}, {"rev": {"$exists": false}}]}
    } else {
        doc! {"_id": chat.to_string(), "rev": expected_rev as i64}
    };
    Ok((filter, doc! {"$set": set, "$inc": {"rev": 1_i64}}))
}
