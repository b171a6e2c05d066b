//! Guarantee 8: graceful drain.

use crate::helpers::{upgrade_status, Closed, Cluster};
use chat_shared::domain::Role;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_draining_node_turns_unready_closes_every_session_with_1012_and_stops() {
    let mut cluster = Cluster::start().await;
    let chat = cluster.create_chat("pat-d", "doc-d", "appt-d").await;
    let chat_id = chat.id.to_string();
    let mut clients = Vec::new();
    for i in 0..200 {
        let (who, role) = if i % 2 == 0 {
            ("pat-d", Role::Patient)
        } else {
            ("doc-d", Role::Doctor)
        };
        clients.push(cluster.connect(0, who, role).await);
    }
    let mut sender = cluster.connect(1, "pat-d", Role::Patient).await;
    let port = cluster.nodes[0].port;
    assert_eq!(
        cluster
            .http
            .get(cluster.url(0, "/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let started = Instant::now();
    cluster.drain_node(0);
    // Not ready, and no new sessions, at once.
    assert_eq!(
        cluster
            .http
            .get(cluster.url(0, "/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    let token = format!("Bearer {}", cluster.token("pat-d", Role::Patient));
    assert_eq!(upgrade_status(port, Some(&token), "", None).await, 503);

    // Sessions on the draining node keep working until their turn comes.
    let acked = clients[0]
        .send_message(&chat_id, "during-drain", "still there?")
        .await;
    let mut acked_seqs = vec![acked.seq];
    acked_seqs.push(sender.send_message(&chat_id, "other-node", "yes").await.seq);

    let mut codes = Vec::new();
    for c in clients.iter_mut() {
        codes.push(c.closed().await);
    }
    assert!(codes.iter().all(|c| *c == Closed::Code(1012)), "{codes:?}");
    assert!(cluster.node_stopped(0).await, "the node stops cleanly");
    let took = started.elapsed();
    println!("drain of 200 sessions took {took:?} (window 1 s + grace 2 s)");
    assert!(
        took < Duration::from_secs(30),
        "the node stopped (took {took:?})"
    );

    // Nothing acked was lost: the other node serves every message.
    let (_, page) = cluster
        .get(
            1,
            &format!("/api/chats/{chat_id}/messages?after_seq=0"),
            "doc-d",
            Role::Doctor,
        )
        .await;
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    for s in acked_seqs {
        assert!(seqs.contains(&s), "acked seq {s} missing from {seqs:?}");
    }
}
