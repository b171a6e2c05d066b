//! Real-time delivery, ordering, idempotency and read-your-writes.

use crate::helpers::{Backend, Cluster};
use chat_shared::domain::Role;
use chat_shared::protocol::ServerFrame;
use serde_json::json;
use std::collections::BTreeSet;

async fn a_patient_on_node_a_and_a_doctor_on_node_b_chat_both_ways(backend: Backend) {
    let cluster = Cluster::start_in(backend, 2, true).await;
    let chat = cluster.create_chat("pat-1", "doc-1", "appt-1").await;
    let chat_id = chat.id.to_string();
    let mut patient = cluster.connect(0, "pat-1", Role::Patient).await;
    let mut doctor = cluster.connect(1, "doc-1", Role::Doctor).await;

    let sent = patient.send_message(&chat_id, "m1", "Hello doctor").await;
    assert_eq!(sent.seq, 1);
    assert_eq!(sent.sender_role, Role::Patient);
    let got = doctor.expect_message(&chat_id, 1).await;
    assert_eq!(got, sent);

    let reply = doctor
        .send_message(&chat_id, "m2", "Hello, how can I help?")
        .await;
    assert_eq!(reply.seq, 2);
    assert_eq!(patient.expect_message(&chat_id, 2).await, reply);
}

async fn every_device_of_both_participants_gets_the_message_except_the_sending_session(
    backend: Backend,
) {
    let cluster = Cluster::start_in(backend, 2, true).await;
    let chat = cluster.create_chat("pat-2", "doc-2", "appt-2").await;
    let chat_id = chat.id.to_string();
    let mut phone = cluster.connect(0, "pat-2", Role::Patient).await;
    let mut laptop = cluster.connect(1, "pat-2", Role::Patient).await;
    let mut doctor_a = cluster.connect(0, "doc-2", Role::Doctor).await;
    let mut doctor_b = cluster.connect(1, "doc-2", Role::Doctor).await;

    let sent = phone.send_message(&chat_id, "m1", "from my phone").await;
    assert_eq!(laptop.expect_message(&chat_id, 1).await, sent);
    assert_eq!(doctor_a.expect_message(&chat_id, 1).await, sent);
    assert_eq!(doctor_b.expect_message(&chat_id, 1).await, sent);
    // The sender got the ack, and no echo of its own message.
    let rest = phone.drain().await;
    assert!(
        !rest
            .iter()
            .any(|f| matches!(f, ServerFrame::Message { .. })),
        "sending session got its own message: {rest:?}"
    );
}

#[tokio::test]
async fn resending_the_same_client_msg_id_returns_the_original_and_delivers_once() {
    let mut cluster = Cluster::start().await;
    let chat = cluster.create_chat("pat-3", "doc-3", "appt-3").await;
    let chat_id = chat.id.to_string();
    let mut patient = cluster.connect(0, "pat-3", Role::Patient).await;
    let mut doctor = cluster.connect(1, "doc-3", Role::Doctor).await;

    let first = patient
        .send_message(&chat_id, "same-key", "only once")
        .await;
    // a retry after a lost ack, even with a different body, from another node
    let mut other_device = cluster.connect(1, "pat-3", Role::Patient).await;
    let again = other_device
        .send_message(&chat_id, "same-key", "only once!")
        .await;
    assert_eq!(again, first);
    let next = patient.send_message(&chat_id, "next-key", "second").await;
    assert_eq!(next.seq, 2, "the duplicate did not consume a seq");

    doctor.expect_message(&chat_id, 1).await;
    doctor.expect_message(&chat_id, 2).await;
    let rest = doctor.drain().await;
    assert!(
        !rest
            .iter()
            .any(|f| matches!(f, ServerFrame::Message { .. })),
        "duplicate delivered: {rest:?}"
    );

    // MongoDB ends with each message exactly once.
    let chat_path = format!("/api/chats/{chat_id}/messages");
    cluster.stop_persisters().await;
    cluster.start_persister("persister-1").await;
    let mongo = chat_shared::store::mongo::MongoStore::connect(
        &cluster.mongo_settings(),
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    use chat_shared::store::Store;
    let stored = cluster
        .eventually("both messages persisted", || async {
            let m = mongo
                .messages(
                    chat.id,
                    chat_shared::broker::SeqWindow {
                        after: Some(0),
                        before: None,
                        limit: 10,
                    },
                )
                .await
                .unwrap();
            (m.len() == 2).then_some(m)
        })
        .await;
    assert_eq!(stored[0], first);
    let (status, page) = cluster.get(1, &chat_path, "pat-3", Role::Patient).await;
    assert_eq!(status, 200);
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
}

async fn concurrent_senders_on_both_nodes_get_contiguous_seqs_without_gaps_or_duplicates(
    backend: Backend,
) {
    let cluster = Cluster::start_in(backend, 2, true).await;
    let chat = cluster.create_chat("pat-4", "doc-4", "appt-4").await;
    let chat_id = chat.id.to_string();
    let per_client = 25;
    let mut tasks = Vec::new();
    for (node, who, role) in [
        (0, "pat-4", Role::Patient),
        (1, "pat-4", Role::Patient),
        (0, "doc-4", Role::Doctor),
        (1, "doc-4", Role::Doctor),
    ] {
        let mut client = cluster.connect(node, who, role).await;
        let chat_id = chat_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..per_client {
                let m = client
                    .send_message(&chat_id, &format!("{who}-{node}-{i}"), &format!("msg {i}"))
                    .await;
                seqs.push(m.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one sender's seqs increase"
        );
        all.extend(seqs);
    }
    let set: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(set.len(), all.len(), "no duplicate seq");
    assert_eq!(set, (1..=4 * per_client as u64).collect(), "no gap");

    // History (from any node) agrees.
    let (_, page) = cluster
        .get(
            1,
            &format!("/api/chats/{chat_id}/messages?after_seq=0&limit=200"),
            "doc-4",
            Role::Doctor,
        )
        .await;
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
}

async fn history_on_another_node_includes_messages_the_persister_has_not_written(backend: Backend) {
    let cluster = Cluster::start_in(backend, 2, false).await;
    let chat = cluster.create_chat("pat-5", "doc-5", "appt-5").await;
    let chat_id = chat.id.to_string();
    let mut patient = cluster.connect(0, "pat-5", Role::Patient).await;
    for i in 1..=3 {
        patient
            .send_message(&chat_id, &format!("k{i}"), &format!("m{i}"))
            .await;
    }
    let (status, page) = cluster
        .get(
            1,
            &format!("/api/chats/{chat_id}/messages"),
            "doc-5",
            Role::Doctor,
        )
        .await;
    assert_eq!(status, 200);
    let bodies: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["m1", "m2", "m3"]);
    assert_eq!(page["has_more"], false);
    // …and so does `sync` on the other node.
    let mut doctor = cluster.connect(1, "doc-5", Role::Doctor).await;
    doctor
        .send_json(json!({"type":"sync","id":9,"chats":{chat_id.clone(): 1}}))
        .await;
    assert_eq!(doctor.expect_message(&chat_id, 2).await.body, "m2");
    assert_eq!(doctor.expect_message(&chat_id, 3).await.body, "m3");
    assert!(matches!(
        doctor.reply_to(9).await,
        ServerFrame::Synced { .. }
    ));
}

async fn typing_reaches_the_peer_at_most_once_per_interval_and_stop_always_passes(
    backend: Backend,
) {
    let cluster = Cluster::start_in(backend, 2, true).await;
    let chat = cluster.create_chat("pat-6", "doc-6", "appt-6").await;
    let chat_id = chat.id.to_string();
    let mut patient = cluster.connect(0, "pat-6", Role::Patient).await;
    let mut doctor = cluster.connect(1, "doc-6", Role::Doctor).await;
    for _ in 0..3 {
        patient
            .send_json(json!({"type":"typing","chat_id":chat_id,"active":true}))
            .await;
    }
    patient
        .send_json(json!({"type":"typing","chat_id":chat_id,"active":false}))
        .await;
    // A message after the typing frames: everything before it has been delivered.
    patient
        .send_message(&chat_id, "after-typing", "done typing")
        .await;
    doctor.expect_message(&chat_id, 1).await;
    let typing: Vec<bool> = doctor
        .drain()
        .await
        .into_iter()
        .filter_map(|f| match f {
            ServerFrame::Typing {
                active, user_id, ..
            } => {
                assert_eq!(user_id.as_str(), "pat-6");
                Some(active)
            }
            _ => None,
        })
        .collect();
    assert_eq!(typing, [true, false]);
    // The patient (the typer) never hears their own typing.
    let own = patient.drain().await;
    assert!(!own.iter().any(|f| matches!(f, ServerFrame::Typing { .. })));
}

#[tokio::test]
async fn delivery_latency_across_nodes_is_measured() {
    // Not an assertion on time (timed assertions are flaky): it measures and
    // prints cross-node delivery latency so the figure can be reported.
    let cluster = Cluster::start().await;
    let chat = cluster.create_chat("pat-7", "doc-7", "appt-7").await;
    let chat_id = chat.id.to_string();
    let mut patient = cluster.connect(0, "pat-7", Role::Patient).await;
    let mut doctor = cluster.connect(1, "doc-7", Role::Doctor).await;
    let mut samples = Vec::new();
    for i in 0..200u64 {
        let started = std::time::Instant::now();
        let id = patient.request_id();
        patient
            .send_json(json!({"type":"send","id":id,"chat_id":chat_id,"client_msg_id":format!("lat-{i}"),"body":"ping"}))
            .await;
        doctor.expect_message(&chat_id, i + 1).await;
        samples.push(started.elapsed());
        patient.reply_to(id).await;
    }
    samples.sort();
    let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "cross-node delivery latency over {} messages: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        p(0.5),
        p(0.9),
        p(0.99),
        samples[samples.len() - 1]
    );
    assert_eq!(samples.len(), 200);
}

crate::both_backends!(
    a_patient_on_node_a_and_a_doctor_on_node_b_chat_both_ways,
    every_device_of_both_participants_gets_the_message_except_the_sending_session,
    concurrent_senders_on_both_nodes_get_contiguous_seqs_without_gaps_or_duplicates,
    history_on_another_node_includes_messages_the_persister_has_not_written,
    typing_reaches_the_peer_at_most_once_per_interval_and_stop_always_passes,
);
