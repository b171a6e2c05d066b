//! Unread counts and read marks, including under persister replays.

use crate::helpers::{Backend, Cluster};
use chat_persister::apply::apply_batch;
use chat_shared::broker::redis::keys::Shard;
use chat_shared::broker::redis::stream::RedisEventLog;
use chat_shared::broker::{EventLog, SeqWindow};
use chat_shared::domain::Role;
use chat_shared::protocol::ServerFrame;
use chat_shared::store::mongo::MongoStore;
use chat_shared::store::Store;
use serde_json::json;
use std::time::Duration;

async fn unread_of(cluster: &Cluster, user: &str, role: Role) -> (u64, serde_json::Value) {
    let (status, body) = cluster.get(0, "/api/unread", user, role).await;
    assert_eq!(status, 200);
    (body["total"].as_u64().unwrap(), body["chats"].clone())
}

async fn unread_counts_follow_messages_and_read_marks_exactly(backend: Backend) {
    let cluster = Cluster::start_in(backend, 2, true).await;
    let chat = cluster.create_chat("pat-u1", "doc-u1", "appt-u1").await;
    let other = cluster.create_chat("pat-u1", "doc-u2", "appt-u2").await;
    let chat_id = chat.id.to_string();
    let mut patient = cluster.connect(0, "pat-u1", Role::Patient).await;
    let mut doctor = cluster.connect(1, "doc-u1", Role::Doctor).await;
    let mut doctor2 = cluster.connect(1, "doc-u2", Role::Doctor).await;

    for i in 1..=3 {
        doctor
            .send_message(&chat_id, &format!("d{i}"), &format!("note {i}"))
            .await;
    }
    doctor2
        .send_message(&other.id.to_string(), "x1", "from the other doctor")
        .await;
    // The patient's own message never counts as unread for them.
    patient.send_message(&chat_id, "p1", "thanks").await;

    // The persister announces counts as it commits (batch boundaries vary, so
    // wait for the final total rather than a particular chat's event).
    patient
        .wait_for("an unread total of 4", |f| {
            matches!(f, ServerFrame::Unread { total: 4, .. })
        })
        .await;
    // The doctor has the patient's one message unread (it may be persisted in a
    // later batch than the doctor's own messages).
    doctor
        .wait_for("the doctor's unread 1", |f| {
            matches!(f, ServerFrame::Unread { chat_id, count: 1, total: 1 } if *chat_id == chat.id)
        })
        .await;
    let (doc_total, _) = unread_of(&cluster, "doc-u1", Role::Doctor).await;
    assert_eq!(doc_total, 1);
    let (total, per_chat) = unread_of(&cluster, "pat-u1", Role::Patient).await;
    assert_eq!(total, 4);
    assert_eq!(per_chat[&chat_id], 3);
    assert_eq!(per_chat[other.id.to_string()], 1);

    // Reading up to seq 2 leaves seq 3 (the doctor's) unread; seq 4 is the patient's own.
    patient
        .send_json(json!({"type":"read","chat_id":chat_id,"up_to_seq":2}))
        .await;
    let read = doctor
        .wait_for("read receipt", |f| matches!(f, ServerFrame::Read { .. }))
        .await;
    match read {
        ServerFrame::Read {
            user_id,
            up_to_seq,
            chat_id: c,
        } => {
            assert_eq!(user_id.as_str(), "pat-u1");
            assert_eq!(up_to_seq, 2);
            assert_eq!(c, chat.id);
        }
        _ => unreachable!(),
    }
    patient
        .wait_for("unread 1 after reading", |f| {
            matches!(f, ServerFrame::Unread { chat_id, count: 1, total: 2 } if *chat_id == chat.id)
        })
        .await;

    // The same mark over REST, and a mark beyond the end is clamped.
    let resp = cluster
        .http
        .post(cluster.url(1, &format!("/api/chats/{chat_id}/read")))
        .bearer_auth(cluster.token("pat-u1", Role::Patient))
        .json(&json!({"up_to_seq": 999}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    patient
        .wait_for("unread 0", |f| {
            matches!(f, ServerFrame::Unread { chat_id, count: 0, total: 1 } if *chat_id == chat.id)
        })
        .await;
    let read = doctor
        .wait_for(
            "clamped read receipt",
            |f| matches!(f, ServerFrame::Read { up_to_seq, .. } if *up_to_seq != 2),
        )
        .await;
    assert!(matches!(read, ServerFrame::Read { up_to_seq: 4, .. }));
    let (_, listing) = cluster.get(0, "/api/chats", "pat-u1", Role::Patient).await;
    let listed = listing["chats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == chat_id)
        .unwrap()
        .clone();
    assert_eq!(listed["unread"], 0);
    assert_eq!(listed["last_seq"], 4);
    assert_eq!(listed["last_message"]["body"], "thanks");
    assert_eq!(listed["peer"]["id"], "doc-u1");
    assert_eq!(listed["peer"]["name"], "Dr doc-u1");
}

#[tokio::test]
async fn a_persister_that_dies_between_the_write_and_the_ack_is_replayed_without_duplicates_or_inflation(
) {
    let mut cluster = Cluster::start_with(1, false).await;
    let chat = cluster.create_chat("pat-r", "doc-r", "appt-r").await;
    let chat_id = chat.id.to_string();
    let mut doctor = cluster.connect(0, "doc-r", Role::Doctor).await;
    let mut patient = cluster.connect(0, "pat-r", Role::Patient).await;
    for i in 1..=5 {
        doctor
            .send_message(&chat_id, &format!("d{i}"), &format!("m{i}"))
            .await;
    }
    patient
        .send_json(json!({"type":"read","chat_id":chat_id,"up_to_seq":2}))
        .await;
    patient.ping().await;

    // A persister reads the batch and writes it to MongoDB, then "crashes"
    // before acknowledging: the entries stay pending for its consumer name.
    let store = MongoStore::connect(&cluster.mongo_settings(), Duration::from_secs(5))
        .await
        .unwrap();
    store.prepare().await.unwrap();
    {
        let log = RedisEventLog::connect(&cluster.redis_settings(), Shard(0), "crashy")
            .await
            .unwrap();
        let entries = log
            .read_batch(100, Duration::from_millis(100))
            .await
            .unwrap();
        let entries = if entries.is_empty() {
            log.read_batch(100, Duration::from_millis(500))
                .await
                .unwrap()
        } else {
            entries
        };
        assert_eq!(entries.len(), 6, "5 messages and 1 read mark");
        let events: Vec<_> = entries.into_iter().map(|e| e.event.unwrap()).collect();
        let outcome = apply_batch(&store, &events).await.unwrap();
        assert_eq!(outcome.inserted, 5);
        // ...and the same batch applied twice more (a re-delivery) changes nothing.
        assert_eq!(apply_batch(&store, &events).await.unwrap().inserted, 0);
        assert_eq!(apply_batch(&store, &events).await.unwrap().inserted, 0);
    }
    // The replica restarts under the same name and replays its pending entries.
    cluster.start_persister("crashy").await;
    doctor.send_message(&chat_id, "d6", "m6").await;

    let record = cluster
        .eventually("the sixth message persisted", || async {
            let c = store.chat(chat.id).await.unwrap().unwrap();
            (c.last_seq == 6).then_some(c)
        })
        .await;
    let all = store
        .messages(
            chat.id,
            SeqWindow {
                after: Some(0),
                before: None,
                limit: 100,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        record.unread_of(&"pat-r".parse_user()),
        4,
        "seqs 3..=6 unread"
    );
    assert_eq!(record.read_seq_of(&"pat-r".parse_user()), 2);
    assert_eq!(record.unread_of(&"doc-r".parse_user()), 0);
    let (total, _) = unread_of(&cluster, "pat-r", Role::Patient).await;
    assert_eq!(total, 4);
}

trait ParseUser {
    fn parse_user(&self) -> chat_shared::domain::UserId;
}

impl ParseUser for &str {
    fn parse_user(&self) -> chat_shared::domain::UserId {
        chat_shared::domain::UserId::parse(*self).unwrap()
    }
}

#[tokio::test]
async fn two_persister_replicas_in_one_group_store_every_message_once_and_count_exactly() {
    let mut cluster = Cluster::start_with(2, false).await;
    cluster.start_persister("replica-a").await;
    cluster.start_persister("replica-b").await;
    let chats = [
        cluster.create_chat("pat-m", "doc-m1", "a1").await,
        cluster.create_chat("pat-m", "doc-m2", "a2").await,
    ];
    let per_sender = 30u64;
    let mut tasks = Vec::new();
    for (i, chat) in chats.iter().enumerate() {
        let chat_id = chat.id.to_string();
        for (node, who, role) in [
            (0, "pat-m", Role::Patient),
            (1, chat.doctor_id.as_str(), Role::Doctor),
        ] {
            let mut c = cluster.connect(node, who, role).await;
            let chat_id = chat_id.clone();
            let who = who.to_owned();
            tasks.push(tokio::spawn(async move {
                for n in 0..per_sender {
                    c.send_message(&chat_id, &format!("{who}-{i}-{n}"), "hello")
                        .await;
                    if role == Role::Patient && n % 10 == 9 {
                        // read marks interleaved with messages
                        c.send_json(json!({"type":"read","chat_id":chat_id,"up_to_seq":n}))
                            .await;
                    }
                }
                // Frames are handled in order: after the pong, every read mark is in the stream.
                c.ping().await;
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let store = MongoStore::connect(&cluster.mongo_settings(), Duration::from_secs(5))
        .await
        .unwrap();
    for chat in &chats {
        let patient = "pat-m".parse_user();
        let final_mark = per_sender - 1;
        // Replicas apply batches concurrently and in any order; wait until the
        // store holds every message and the last mark, and the counters have
        // converged to the exact recount.
        let doctor = chat.doctor_id.clone();
        let (record, all) = cluster
            .eventually(
                "every message, the last read mark and exact counters",
                || async {
                    let c = store.chat(chat.id).await.unwrap().unwrap();
                    let all = store
                        .messages(
                            chat.id,
                            SeqWindow {
                                after: Some(0),
                                before: None,
                                limit: 1000,
                            },
                        )
                        .await
                        .unwrap();
                    let expected = all
                        .iter()
                        .filter(|m| m.sender_id != patient && m.seq > final_mark)
                        .count() as u64;
                    (all.len() as u64 == 2 * per_sender
                        && c.read_seq_of(&patient) == final_mark
                        && c.unread_of(&patient) == expected
                        && c.unread_of(&doctor)
                            == all.iter().filter(|m| m.sender_id == patient).count() as u64)
                        .then_some((c, all))
                },
            )
            .await;
        assert_eq!(
            all.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (1..=2 * per_sender).collect::<Vec<_>>(),
            "each message exactly once"
        );
        assert_eq!(
            record.last_message.as_ref().map(|m| m.seq),
            Some(2 * per_sender)
        );
    }
}

crate::both_backends!(unread_counts_follow_messages_and_read_marks_exactly,);
