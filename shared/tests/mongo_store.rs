//! Black-box tests of the MongoDB store engine against a real MongoDB-wire
//! server (`MONGODB_URL`, or an nx-27017 process started per test).

#![allow(clippy::unwrap_used)]
#![allow(missing_docs)]

use chat_shared::broker::SeqWindow;
use chat_shared::config::MongoSettings;
use chat_shared::domain::{AppointmentId, ChatId, ClientMsgId, MessageId, Role, Timestamp, UserId};
use chat_shared::protocol::{DisplayName, Message};
use chat_shared::store::mongo::MongoStore;
use chat_shared::store::{ChatRecord, ChatUpsert, CounterUpdate, NewChat, Store};
use chat_testkit::eventually;
use chat_testkit::MongoServer;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------- helpers

fn mongo_settings(server: &MongoServer) -> MongoSettings {
    MongoSettings {
        url: server.url().to_owned(),
        db: server.db().to_owned(),
    }
}

/// A prepared store on a fresh database. The server answers as soon as it
/// listens, but give a slow start-up a chance before failing.
async fn store(server: &MongoServer) -> MongoStore {
    let store = MongoStore::connect(&mongo_settings(server), Duration::from_secs(5))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the store answers ping",
        || async { store.ping().await.ok() },
    )
    .await;
    store.prepare().await.unwrap();
    store
}

/// The raw collection, to check what the store wrote.
async fn raw(server: &MongoServer, collection: &str) -> mongodb::Collection<Document> {
    mongodb::Client::with_uri_str(server.url())
        .await
        .unwrap()
        .database(server.db())
        .collection(collection)
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn appointment(id: &str) -> AppointmentId {
    AppointmentId::parse(id).unwrap()
}

fn new_chat(patient: &str, doctor: &str, appointment_id: &str) -> NewChat {
    NewChat {
        id: ChatId::generate(),
        appointment_id: appointment(appointment_id),
        patient_id: user(patient),
        doctor_id: user(doctor),
        patient_name: Some(DisplayName::parse("Pat Patient").unwrap()),
        doctor_name: Some(DisplayName::parse("Dr. Doc").unwrap()),
        created_at: Timestamp::from_millis(1_764_155_777_123),
    }
}

/// Message `seq` of `chat`; odd seqs from the patient, even from the doctor.
fn message(chat: ChatId, seq: u64) -> Message {
    let (sender, role) = if seq % 2 == 1 {
        ("patient-1", Role::Patient)
    } else {
        ("doctor-1", Role::Doctor)
    };
    Message {
        seq,
        id: MessageId::generate(),
        chat_id: chat,
        sender_id: user(sender),
        sender_role: role,
        body: format!("message {seq} — ünïcode \"quoted\""),
        client_msg_id: ClientMsgId::parse(format!("cm-{seq}")).unwrap(),
        // Distinct, non-round milliseconds.
        created_at: Timestamp::from_millis(1_764_155_777_000 + seq as i64 * 7 + 1),
    }
}

fn window(after: Option<u64>, before: Option<u64>, limit: usize) -> SeqWindow {
    SeqWindow {
        after,
        before,
        limit,
    }
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

fn ids(records: &[ChatRecord]) -> Vec<ChatId> {
    let mut v: Vec<ChatId> = records.iter().map(|r| r.id).collect();
    v.sort();
    v
}

fn int(v: Option<&Bson>) -> i64 {
    match v {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        other => panic!("not an integer: {other:?}"),
    }
}

// ---------------------------------------------------------------- prepare

#[tokio::test]
async fn prepare_is_idempotent_and_makes_chat_seq_and_patient_doctor_pairs_unique() {
    let server = MongoServer::start();
    let store = store(&server).await;
    store.prepare().await.unwrap();
    store.prepare().await.unwrap();

    let chat = ChatId::generate();
    assert_eq!(store.insert_messages(&[message(chat, 1)]).await.unwrap(), 1);
    // Same (chat_id, seq), different id: the unique index refuses it.
    assert_eq!(store.insert_messages(&[message(chat, 1)]).await.unwrap(), 0);
    assert_eq!(
        raw(&server, "messages")
            .await
            .count_documents(doc! {"chat_id": chat.to_string()})
            .await
            .unwrap(),
        1
    );

    // One chat per (patient, doctor) pair, whoever writes.
    let chats = raw(&server, "chats").await;
    let pair = |id: &str| doc! {"_id": id, "patient_id": "patient-1", "doctor_id": "doctor-1"};
    chats.insert_one(pair("chat-a")).await.unwrap();
    let second = chats.insert_one(pair("chat-b")).await;
    let err = second.expect_err("a second chat for the same pair was stored");
    assert!(
        matches!(
            err.kind.as_ref(),
            ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000
        ),
        "not a duplicate key error: {err}"
    );
}

// ---------------------------------------------------------------- chats

#[tokio::test]
async fn upserting_a_new_pair_creates_the_chat_with_empty_counters() {
    let server = MongoServer::start();
    let store = store(&server).await;
    let new = new_chat("patient-1", "doctor-1", "appt-1");

    let created = store.upsert_chat(&new).await.unwrap();
    let ChatUpsert::Created(record) = created else {
        panic!("expected Created, got {created:?}")
    };
    assert_eq!(
        record,
        ChatRecord {
            id: new.id,
            patient_id: new.patient_id.clone(),
            doctor_id: new.doctor_id.clone(),
            patient_name: Some("Pat Patient".into()),
            doctor_name: Some("Dr. Doc".into()),
            appointment_ids: vec![appointment("appt-1")],
            created_at: new.created_at,
            last_message: None,
            last_seq: 0,
            unread: BTreeMap::new(),
            read_seq: BTreeMap::new(),
            rev: 0,
        }
    );
    assert_eq!(store.chat(new.id).await.unwrap(), Some(record));
    assert_eq!(store.chat(ChatId::generate()).await.unwrap(), None);
}

#[tokio::test]
async fn upserting_the_same_request_again_leaves_the_chat_unchanged() {
    let server = MongoServer::start();
    let store = store(&server).await;
    let new = new_chat("patient-1", "doctor-1", "appt-1");
    let created = store.upsert_chat(&new).await.unwrap().record().clone();

    // The booking app retries: same request, though the gateway generated a new id.
    let retry = NewChat {
        id: ChatId::generate(),
        ..new.clone()
    };
    let again = store.upsert_chat(&retry).await.unwrap();
    assert_eq!(again, ChatUpsert::Unchanged(created.clone()));
    let again = store.upsert_chat(&new).await.unwrap();
    assert_eq!(again, ChatUpsert::Unchanged(created));
}

#[tokio::test]
async fn a_new_appointment_for_the_same_pair_updates_the_one_chat() {
    let server = MongoServer::start();
    let store = store(&server).await;
    let first = store
        .upsert_chat(&new_chat("patient-1", "doctor-1", "appt-1"))
        .await
        .unwrap()
        .record()
        .clone();

    let mut second = new_chat("patient-1", "doctor-1", "appt-2");
    second.doctor_name = Some(DisplayName::parse("Dr. Renamed").unwrap());
    let updated = store.upsert_chat(&second).await.unwrap();
    let ChatUpsert::Updated(record) = updated else {
        panic!("expected Updated, got {updated:?}")
    };
    assert_eq!(record.id, first.id);
    assert_eq!(
        record.appointment_ids,
        vec![appointment("appt-1"), appointment("appt-2")]
    );
    assert_eq!(record.doctor_name.as_deref(), Some("Dr. Renamed"));
    assert_eq!(record.created_at, first.created_at);
    assert_eq!(store.chat(first.id).await.unwrap(), Some(record));

    // An older appointment again changes nothing.
    let replay = store
        .upsert_chat(&NewChat {
            doctor_name: Some(DisplayName::parse("Dr. Renamed").unwrap()),
            ..new_chat("patient-1", "doctor-1", "appt-1")
        })
        .await
        .unwrap();
    assert!(matches!(replay, ChatUpsert::Unchanged(_)), "{replay:?}");
    assert_eq!(replay.record().appointment_ids.len(), 2);
}

#[tokio::test]
async fn a_different_pair_gets_a_different_chat() {
    let server = MongoServer::start();
    let store = store(&server).await;
    let a = store
        .upsert_chat(&new_chat("patient-1", "doctor-1", "appt-1"))
        .await
        .unwrap();
    let b = store
        .upsert_chat(&new_chat("patient-1", "doctor-2", "appt-2"))
        .await
        .unwrap();
    let c = store
        .upsert_chat(&new_chat("patient-2", "doctor-1", "appt-3"))
        .await
        .unwrap();
    for r in [&a, &b, &c] {
        assert!(matches!(r, ChatUpsert::Created(_)), "{r:?}");
    }
    let mut all = vec![a.record().id, b.record().id, c.record().id];
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 3);
    assert_eq!(b.record().doctor_id, user("doctor-2"));
    assert_eq!(b.record().appointment_ids, vec![appointment("appt-2")]);
}

#[tokio::test]
async fn concurrent_upserts_of_the_same_pair_yield_one_chat() {
    const TASKS: usize = 5;
    let server = MongoServer::start();
    let store = Arc::new(store(&server).await);

    let handles: Vec<_> = (0..TASKS)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .upsert_chat(&new_chat("patient-1", "doctor-1", &format!("appt-{i}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    let created = results
        .iter()
        .filter(|r| matches!(r, ChatUpsert::Created(_)))
        .count();
    assert_eq!(created, 1, "{results:?}");
    let chat_id = results[0].record().id;
    assert!(
        results.iter().all(|r| r.record().id == chat_id),
        "{results:?}"
    );

    let listed = store
        .chats_of(&user("patient-1"), Role::Patient)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let mut appointments: Vec<String> = listed[0]
        .appointment_ids
        .iter()
        .map(|a| a.to_string())
        .collect();
    appointments.sort();
    let expected: Vec<String> = (0..TASKS).map(|i| format!("appt-{i}")).collect();
    assert_eq!(appointments, expected);
    assert_eq!(
        raw(&server, "chats")
            .await
            .count_documents(doc! {})
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn chats_of_lists_a_user_by_role_only() {
    let server = MongoServer::start();
    let store = store(&server).await;
    let a = store
        .upsert_chat(&new_chat("patient-1", "doctor-1", "a1"))
        .await
        .unwrap();
    let b = store
        .upsert_chat(&new_chat("patient-1", "doctor-2", "a2"))
        .await
        .unwrap();
    let c = store
        .upsert_chat(&new_chat("patient-2", "doctor-1", "a3"))
        .await
        .unwrap();
    // A user who is a patient in one chat and a doctor in another.
    let d = store
        .upsert_chat(&new_chat("both-1", "doctor-1", "a4"))
        .await
        .unwrap();
    let e = store
        .upsert_chat(&new_chat("patient-3", "both-1", "a5"))
        .await
        .unwrap();

    let of = |u: &'static str, role| {
        let store = store.clone();
        async move { ids(&store.chats_of(&user(u), role).await.unwrap()) }
    };
    let sorted = |mut v: Vec<ChatId>| {
        v.sort();
        v
    };
    assert_eq!(
        of("patient-1", Role::Patient).await,
        sorted(vec![a.record().id, b.record().id])
    );
    assert_eq!(of("patient-1", Role::Doctor).await, vec![]);
    assert_eq!(
        of("doctor-1", Role::Doctor).await,
        sorted(vec![a.record().id, c.record().id, d.record().id])
    );
    assert_eq!(of("doctor-1", Role::Patient).await, vec![]);
    assert_eq!(of("both-1", Role::Patient).await, vec![d.record().id]);
    assert_eq!(of("both-1", Role::Doctor).await, vec![e.record().id]);
    assert_eq!(of("doctor-1", Role::Admin).await, vec![]);
    assert_eq!(of("nobody", Role::Patient).await, vec![]);
}

// ---------------------------------------------------------------- messages

#[tokio::test]
async fn inserting_messages_counts_only_new_ones_and_stores_each_once() {
    let server = MongoServer::start();
    let store = store(&server).await;
    let chat = ChatId::generate();
    let batch: Vec<Message> = (1..=10).map(|s| message(chat, s)).collect();

    assert_eq!(store.insert_messages(&batch).await.unwrap(), 10);
    // A persister replay of the same batch.
    assert_eq!(store.insert_messages(&batch).await.unwrap(), 0);
    // Partly overlapping: 8..=10 again plus 11, 12.
    let mut overlap = batch[7..].to_vec();
    overlap.extend((11..=12).map(|s| message(chat, s)));
    assert_eq!(store.insert_messages(&overlap).await.unwrap(), 2);
    assert_eq!(store.insert_messages(&[]).await.unwrap(), 0);

    let coll = raw(&server, "messages").await;
    assert_eq!(
        coll.count_documents(doc! {"chat_id": chat.to_string()})
            .await
            .unwrap(),
        12
    );
    for m in &batch {
        assert_eq!(
            coll.count_documents(doc! {"_id": m.id.to_string()})
                .await
                .unwrap(),
            1
        );
    }
    let all = store.messages(chat, window(None, None, 100)).await.unwrap();
    let mut expected = batch.clone();
    expected.extend(overlap[3..].iter().cloned());
    assert_eq!(all, expected);
}

#[tokio::test]
async fn history_is_ascending_and_respects_after_before_and_limit() {
    let server = MongoServer::start();
    let store = store(&server).await;
    let chat = ChatId::generate();
    let all: Vec<Message> = (1..=12).map(|s| message(chat, s)).collect();
    // Stored out of order, in two batches, next to another chat's messages.
    let mut reversed = all.clone();
    reversed.reverse();
    store.insert_messages(&reversed[..6]).await.unwrap();
    let other = ChatId::generate();
    store
        .insert_messages(&(1..=5).map(|s| message(other, s)).collect::<Vec<_>>())
        .await
        .unwrap();
    store.insert_messages(&reversed[6..]).await.unwrap();

    let history = |w| {
        let store = store.clone();
        async move { store.messages(chat, w).await.unwrap() }
    };
    let range = |r: std::ops::RangeInclusive<u64>| r.collect::<Vec<u64>>();

    assert_eq!(history(window(None, None, 100)).await, all);
    // after=N: the first `limit` above N.
    assert_eq!(seqs(&history(window(Some(3), None, 4)).await), range(4..=7));
    assert_eq!(
        seqs(&history(window(Some(10), None, 4)).await),
        range(11..=12)
    );
    assert!(history(window(Some(12), None, 4)).await.is_empty());
    // before=N: the newest `limit` below N.
    assert_eq!(seqs(&history(window(None, Some(6), 3)).await), range(3..=5));
    assert_eq!(
        seqs(&history(window(None, Some(3), 10)).await),
        range(1..=2)
    );
    // Neither: the newest `limit`.
    assert_eq!(seqs(&history(window(None, None, 4)).await), range(9..=12));
    // Both bounds: from the `after` end.
    assert_eq!(
        seqs(&history(window(Some(2), Some(9), 3)).await),
        range(3..=5)
    );
    assert_eq!(
        seqs(&history(window(Some(2), Some(6), 10)).await),
        range(3..=5)
    );
    // Whole messages round-trip.
    assert_eq!(history(window(Some(3), None, 4)).await, all[3..7].to_vec());
    // Another chat, and an unknown one.
    assert_eq!(
        seqs(
            &store
                .messages(other, window(None, None, 100))
                .await
                .unwrap()
        ),
        range(1..=5)
    );
    assert!(store
        .messages(ChatId::generate(), window(None, None, 100))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn history_returns_nothing_for_a_zero_limit_and_everything_for_a_huge_one() {
    let server = MongoServer::start();
    let store = store(&server).await;
    let chat = ChatId::generate();
    store
        .insert_messages(&(1..=3).map(|s| message(chat, s)).collect::<Vec<_>>())
        .await
        .unwrap();
    for (after, before) in [(None, None), (Some(1), None), (None, Some(3))] {
        let none = store
            .messages(chat, window(after, before, 0))
            .await
            .unwrap();
        assert!(none.is_empty(), "limit 0 gave {none:?}");
    }
    // "No limit" as callers naturally spell it.
    for (after, before, expected) in [
        (None, None, vec![1, 2, 3]),
        (Some(1), None, vec![2, 3]),
        (None, Some(3), vec![1, 2]),
    ] {
        let all = store
            .messages(chat, window(after, before, usize::MAX))
            .await
            .unwrap();
        assert_eq!(seqs(&all), expected);
    }
}

#[tokio::test]
async fn count_messages_from_counts_only_the_senders_messages_above_the_seq() {
    let server = MongoServer::start();
    let store = store(&server).await;
    let chat = ChatId::generate();
    let other = ChatId::generate();
    // Patient wrote 1,3,5,7,9; doctor wrote 2,4,6,8,10.
    store
        .insert_messages(&(1..=10).map(|s| message(chat, s)).collect::<Vec<_>>())
        .await
        .unwrap();
    store
        .insert_messages(&(1..=20).map(|s| message(other, s)).collect::<Vec<_>>())
        .await
        .unwrap();
    let patient = user("patient-1");
    let doctor = user("doctor-1");

    assert_eq!(
        store.count_messages_from(chat, &patient, 0).await.unwrap(),
        5
    );
    assert_eq!(
        store.count_messages_from(chat, &patient, 4).await.unwrap(),
        3
    );
    assert_eq!(
        store.count_messages_from(chat, &patient, 5).await.unwrap(),
        2
    );
    assert_eq!(
        store.count_messages_from(chat, &doctor, 4).await.unwrap(),
        3
    );
    assert_eq!(
        store.count_messages_from(chat, &doctor, 10).await.unwrap(),
        0
    );
    assert_eq!(
        store
            .count_messages_from(chat, &user("stranger"), 0)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn the_batch_forms_answer_more_than_one_commands_worth_in_order() {
    use chat_shared::store::mongo::{MAX_IDS_PER_COMMAND, MAX_UNREAD_CLAUSES};
    use chat_shared::store::{RevisedUpdate, UnreadQuery};
    let server = MongoServer::start();
    let store = store(&server).await;
    let a = store
        .upsert_chat(&new_chat("patient-1", "doctor-1", "appt-1"))
        .await
        .unwrap()
        .record()
        .clone();
    let b = store
        .upsert_chat(&new_chat("patient-2", "doctor-1", "appt-2"))
        .await
        .unwrap()
        .record()
        .clone();
    // Both chats: patient-1 wrote the odd seqs 1..=9, doctor-1 the even ones.
    for chat in [a.id, b.id] {
        store
            .insert_messages(&(1..=10).map(|s| message(chat, s)).collect::<Vec<_>>())
            .await
            .unwrap();
    }

    // Unread counts: more queries than one `$or` may hold, each answered in place.
    let queries: Vec<UnreadQuery> = (0..MAX_UNREAD_CLAUSES + 7)
        .map(|i| UnreadQuery {
            chat: if i % 3 == 0 { b.id } else { a.id },
            sender: user(if i % 2 == 0 { "patient-1" } else { "doctor-1" }),
            above_seq: (i % 11) as u64,
        })
        .collect();
    let expected: Vec<u64> = queries
        .iter()
        .map(|q| {
            let odd = q.sender.as_str() == "patient-1";
            (q.above_seq + 1..=10)
                .filter(|s| (s % 2 == 1) == odd)
                .count() as u64
        })
        .collect();
    assert_eq!(store.count_unread(&queries).await.unwrap(), expected);

    // Chats: more ids than one `$in` takes, the known ones found wherever they are.
    let mut wanted: Vec<ChatId> = (0..MAX_IDS_PER_COMMAND + 5)
        .map(|_| ChatId::generate())
        .collect();
    wanted[3] = a.id;
    wanted[MAX_IDS_PER_COMMAND + 2] = b.id;
    let mut both = vec![a.id, b.id];
    both.sort();
    assert_eq!(ids(&store.chats(&wanted).await.unwrap()), both);

    // Counter updates split over two commands: all apply.
    let update = |chat: &ChatRecord, n: u64| RevisedUpdate {
        chat: chat.id,
        expected_rev: chat.rev,
        update: CounterUpdate {
            last_seq: 10,
            last_message: None,
            unread: BTreeMap::from([("doctor-1".to_owned(), n)]),
            read_seq: BTreeMap::new(),
        },
    };
    let mut updates = vec![update(&a, 3)];
    // Chats nobody has: they match nothing, so "not all applied" is the answer.
    updates.extend((0..MAX_IDS_PER_COMMAND).map(|_| RevisedUpdate {
        chat: ChatId::generate(),
        ..update(&a, 0)
    }));
    updates.push(update(&b, 4));
    assert!(!store.update_counters_all(&updates).await.unwrap());
    assert_eq!(store.chat(a.id).await.unwrap().unwrap().last_seq, 10);
    assert_eq!(store.chat(b.id).await.unwrap().unwrap().last_seq, 10);

    // Totals: more users than one command takes, each summed over their chats.
    let mut users: Vec<(UserId, Role)> = (0..MAX_IDS_PER_COMMAND + 5)
        .map(|i| (user(&format!("stranger-{i}")), Role::Patient))
        .collect();
    users.push((user("doctor-1"), Role::Doctor));
    let totals = store.unread_totals(&users).await.unwrap();
    assert_eq!(totals.len(), users.len());
    assert_eq!(totals.last(), Some(&7));
    assert!(totals[..users.len() - 1].iter().all(|&t| t == 0));
}

// ---------------------------------------------------------------- counters

#[tokio::test]
async fn update_counters_applies_with_the_current_rev_and_refuses_a_stale_one() {
    let server = MongoServer::start();
    let store = store(&server).await;
    let new = new_chat("patient-1", "doctor-1", "appt-1");
    let chat = store.upsert_chat(&new).await.unwrap().record().clone();
    assert_eq!(chat.rev, 0);
    let m3 = message(chat.id, 3);

    let first = CounterUpdate {
        last_seq: 3,
        last_message: Some(m3.clone()),
        unread: BTreeMap::from([("doctor-1".to_owned(), 2)]),
        read_seq: BTreeMap::from([("patient-1".to_owned(), 3)]),
    };
    assert!(store.update_counters(chat.id, 0, &first).await.unwrap());
    let after_first = store.chat(chat.id).await.unwrap().unwrap();
    assert_eq!(after_first.rev, 1);
    assert_eq!(after_first.last_seq, 3);
    assert_eq!(after_first.last_message, Some(m3.clone()));
    assert_eq!(after_first.unread_of(&user("doctor-1")), 2);
    assert_eq!(after_first.unread_of(&user("patient-1")), 0);
    assert_eq!(after_first.read_seq_of(&user("patient-1")), 3);
    // The registry part is untouched.
    assert_eq!(after_first.appointment_ids, chat.appointment_ids);
    assert_eq!(after_first.created_at, chat.created_at);

    // Another replica computed from rev 0 too: refused, nothing changes.
    let stale = CounterUpdate {
        last_seq: 99,
        last_message: Some(message(chat.id, 99)),
        unread: BTreeMap::from([("doctor-1".to_owned(), 50)]),
        read_seq: BTreeMap::new(),
    };
    assert!(!store.update_counters(chat.id, 0, &stale).await.unwrap());
    assert!(!store.update_counters(chat.id, 7, &stale).await.unwrap());
    assert_eq!(store.chat(chat.id).await.unwrap().unwrap(), after_first);

    // The next update from rev 1: other users' entries and an unchanged
    // last_message are kept.
    let second = CounterUpdate {
        last_seq: 4,
        last_message: None,
        unread: BTreeMap::from([("patient-1".to_owned(), 1)]),
        read_seq: BTreeMap::from([("doctor-1".to_owned(), 3)]),
    };
    assert!(store.update_counters(chat.id, 1, &second).await.unwrap());
    let after_second = store.chat(chat.id).await.unwrap().unwrap();
    assert_eq!(after_second.rev, 2);
    assert_eq!(after_second.last_seq, 4);
    assert_eq!(after_second.last_message, Some(m3));
    assert_eq!(
        after_second.unread,
        BTreeMap::from([("doctor-1".to_owned(), 2), ("patient-1".to_owned(), 1)])
    );
    assert_eq!(
        after_second.read_seq,
        BTreeMap::from([("doctor-1".to_owned(), 3), ("patient-1".to_owned(), 3)])
    );
    // The listing shows the same counters.
    let listed = store
        .chats_of(&user("doctor-1"), Role::Doctor)
        .await
        .unwrap();
    assert_eq!(listed, vec![after_second]);

    // A chat that does not exist is never "updated".
    assert!(!store
        .update_counters(ChatId::generate(), 0, &second)
        .await
        .unwrap());
}

#[tokio::test]
async fn unread_counts_survive_a_later_upsert_of_the_chat() {
    let server = MongoServer::start();
    let store = store(&server).await;
    let chat = store
        .upsert_chat(&new_chat("patient-1", "doctor-1", "appt-1"))
        .await
        .unwrap()
        .record()
        .clone();
    let update = CounterUpdate {
        last_seq: 5,
        last_message: Some(message(chat.id, 5)),
        unread: BTreeMap::from([("doctor-1".to_owned(), 5)]),
        read_seq: BTreeMap::new(),
    };
    assert!(store.update_counters(chat.id, 0, &update).await.unwrap());

    let again = store
        .upsert_chat(&new_chat("patient-1", "doctor-1", "appt-2"))
        .await
        .unwrap();
    let record = again.record();
    assert!(matches!(again, ChatUpsert::Updated(_)), "{again:?}");
    assert_eq!(record.last_seq, 5);
    assert_eq!(record.last_message, update.last_message);
    assert_eq!(record.unread_of(&user("doctor-1")), 5);
    assert_eq!(record.rev, 1);
}

// ---------------------------------------------------------------- timestamps and layout

#[tokio::test]
async fn timestamps_round_trip_with_millisecond_precision() {
    let server = MongoServer::start();
    let store = store(&server).await;
    let mut new = new_chat("patient-1", "doctor-1", "appt-1");
    new.created_at = Timestamp::from_millis(1_764_155_777_123);
    let chat = store.upsert_chat(&new).await.unwrap().record().clone();
    assert_eq!(chat.created_at, new.created_at);
    assert_eq!(
        store
            .chat(chat.id)
            .await
            .unwrap()
            .unwrap()
            .created_at
            .to_rfc3339(),
        "2025-11-26T11:16:17.123Z"
    );

    let mut m = message(chat.id, 1);
    m.created_at = Timestamp::from_millis(1_764_155_777_999);
    let mut m2 = message(chat.id, 2);
    m2.created_at = Timestamp::from_millis(1_764_155_778_001);
    store
        .insert_messages(&[m.clone(), m2.clone()])
        .await
        .unwrap();
    let back = store
        .messages(chat.id, window(None, None, 10))
        .await
        .unwrap();
    assert_eq!(
        back.iter().map(|m| m.created_at).collect::<Vec<_>>(),
        vec![m.created_at, m2.created_at]
    );

    let update = CounterUpdate {
        last_seq: 2,
        last_message: Some(m2.clone()),
        ..Default::default()
    };
    assert!(store.update_counters(chat.id, 0, &update).await.unwrap());
    let last = store
        .chat(chat.id)
        .await
        .unwrap()
        .unwrap()
        .last_message
        .unwrap();
    assert_eq!(last.created_at, m2.created_at);
    assert_eq!(last, m2);
}

#[tokio::test]
async fn stored_documents_follow_the_documented_layout() {
    let server = MongoServer::start();
    let store = store(&server).await;
    let new = new_chat("patient-1", "doctor-1", "appt-1");
    let chat = store.upsert_chat(&new).await.unwrap().record().clone();
    let m = message(chat.id, 1);
    store
        .insert_messages(std::slice::from_ref(&m))
        .await
        .unwrap();

    let stored = raw(&server, "messages")
        .await
        .find_one(doc! {"_id": m.id.to_string()})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_str("chat_id").unwrap(), chat.id.to_string());
    assert_eq!(int(stored.get("seq")), 1);
    assert_eq!(stored.get_str("sender_id").unwrap(), "patient-1");
    assert_eq!(stored.get_str("sender_role").unwrap(), "patient");
    assert_eq!(stored.get_str("body").unwrap(), m.body);
    assert_eq!(stored.get_str("client_msg_id").unwrap(), "cm-1");
    assert_eq!(
        stored
            .get_datetime("created_at")
            .unwrap()
            .timestamp_millis(),
        m.created_at.millis()
    );

    let stored = raw(&server, "chats")
        .await
        .find_one(doc! {"_id": chat.id.to_string()})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_str("patient_id").unwrap(), "patient-1");
    assert_eq!(stored.get_str("doctor_id").unwrap(), "doctor-1");
    assert_eq!(
        stored.get_array("appointment_ids").unwrap(),
        &vec![Bson::String("appt-1".into())]
    );
    assert_eq!(
        stored
            .get_datetime("created_at")
            .unwrap()
            .timestamp_millis(),
        new.created_at.millis()
    );
    assert_eq!(stored.get("last_message"), Some(&Bson::Null));
    assert_eq!(int(stored.get("last_seq")), 0);
    assert!(stored.get_document("unread").unwrap().is_empty());
    assert!(stored.get_document("read_seq").unwrap().is_empty());
}
