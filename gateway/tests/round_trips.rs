//! The persister writes a backlog in a handful of MongoDB round trips,
//! whatever its size. Its own test binary: the count comes from the driver's
//! command monitoring, which is process-wide, so no other test may talk to
//! MongoDB meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

#[path = "api/helpers.rs"]
mod helpers;

use chat_shared::domain::{Role, UserId};
use helpers::Cluster;

/// MongoDB commands issued by this process so far (the driver's command
/// monitoring feeds `chat_mongo_commands_total`), by command.
fn mongo_commands(command: &str) -> u64 {
    chat_shared::metrics::MONGO
        .commands
        .with_label_values(&[command])
        .get()
}

#[tokio::test]
async fn a_backlog_is_written_in_a_handful_of_round_trips_whatever_its_size() {
    let mut cluster = Cluster::start_with(1, false).await;
    // A backlog: 20 chats, 20 messages each from both sides, and read marks,
    // appended while no persister runs.
    let mut chats = Vec::new();
    // Sessions stay open until the count is taken: a user going offline makes
    // the gateway look up their chats (to tell peers), which is not the
    // persister's doing.
    let mut sessions = Vec::new();
    for c in 0..20 {
        let (p, d) = (format!("pat-rt{c}"), format!("doc-rt{c}"));
        let chat = cluster.create_chat(&p, &d, "a").await;
        let mut patient = cluster.connect(0, &p, Role::Patient).await;
        let mut doctor = cluster.connect(0, &d, Role::Doctor).await;
        let id = chat.id.to_string();
        for i in 0..10 {
            patient.send_message(&id, &format!("p{i}"), "x").await;
            doctor.send_message(&id, &format!("d{i}"), "x").await;
        }
        patient
            .send_json(serde_json::json!({"type": "read", "chat_id": id, "up_to_seq": 4}))
            .await;
        patient.ping().await;
        chats.push((chat.id, UserId::parse(p).unwrap()));
        sessions.push((patient, doctor));
    }

    // Counted from here: only the persister talks to MongoDB (the checks below
    // use a client without command monitoring).
    let counted = ["insert", "find", "update", "aggregate"];
    let before: u64 = counted.iter().map(|c| mongo_commands(c)).sum();
    let before_each: Vec<u64> = counted.iter().map(|c| mongo_commands(c)).collect();
    cluster.start_persister("batcher").await;
    let plain = mongodb::Client::with_uri_str(cluster.mongo_settings().url)
        .await
        .unwrap()
        .database(&cluster.mongo_settings().db);
    let chats_coll = plain.collection::<mongodb::bson::Document>("chats");
    cluster
        .eventually("every chat's counters written", || {
            let chats_coll = chats_coll.clone();
            async move {
                let done = chats_coll
                    .count_documents(mongodb::bson::doc! {"last_seq": 20_i64})
                    .await
                    .ok()?;
                (done == 20).then_some(())
            }
        })
        .await;
    // Unread exact for the patient: the doctor's 10 messages all lie above
    // mark 4 except those at seq ≤ 4 (seqs 2 and 4).
    for (chat, patient) in &chats {
        let doc = chats_coll
            .find_one(mongodb::bson::doc! {"_id": chat.to_string()})
            .await
            .unwrap()
            .unwrap();
        let unread = doc.get_document("unread").unwrap();
        let n = unread.get(patient.as_str()).unwrap();
        assert_eq!(n.as_i64().or(n.as_i32().map(i64::from)), Some(8));
    }
    let after: u64 = counted.iter().map(|c| mongo_commands(c)).sum();
    drop(sessions);
    // 400 messages + 20 read marks: insert, read the chats, count unread,
    // update the chats, read the totals — once per batch, and the backlog
    // fits one batch (two if a read splits it).
    let round_trips = after - before;
    eprintln!("{round_trips} MongoDB round trips for 400 messages and 20 read marks");
    for (c, b) in counted.iter().zip(before_each) {
        eprintln!("  {c}: {}", mongo_commands(c) - b);
    }
    assert!(
        round_trips <= 10,
        "{round_trips} MongoDB round trips for a 420-event backlog"
    );
}
