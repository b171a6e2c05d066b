//! Per-user limits: send rate and concurrent sessions.

use crate::helpers::{upgrade_status, Backend, Cluster};
use chat_shared::domain::Role;
use chat_shared::protocol::ServerFrame;
use std::num::NonZeroU32;

async fn sending_faster_than_the_rate_is_refused_with_a_retry_hint_and_stores_nothing(
    backend: Backend,
) {
    let mut cluster = Cluster::start_in(backend, 0, false).await;
    cluster
        .start_node_with("limited", |s| {
            s.send_rate = NonZeroU32::new(1).unwrap();
            s.send_burst = NonZeroU32::new(3).unwrap();
        })
        .await;
    let chat = cluster.create_chat("pat-rl", "doc-rl", "a").await;
    let chat_id = chat.id.to_string();
    let mut c = cluster.connect(0, "pat-rl", Role::Patient).await;
    for i in 1..=3 {
        assert_eq!(
            c.send_message(&chat_id, &format!("k{i}"), "hi").await.seq,
            i
        );
    }
    let wait = match c.try_send_message(&chat_id, "k4", "too fast").await {
        ServerFrame::Error {
            code,
            retry_after_ms: Some(ms),
            ..
        } => {
            assert_eq!(code.as_str(), "rate_limited");
            assert!(ms > 0);
            ms
        }
        other => panic!("expected rate_limited, got {other:?}"),
    };
    // Honour the hint: the retry is accepted and gets the next seq (the refused
    // send consumed nothing).
    tokio::time::sleep(std::time::Duration::from_millis(wait + 50)).await;
    assert_eq!(c.send_message(&chat_id, "k4", "now").await.seq, 4);
    // Other users are not affected.
    let mut doctor = cluster.connect(0, "doc-rl", Role::Doctor).await;
    assert_eq!(doctor.send_message(&chat_id, "d1", "fine").await.seq, 5);
}

async fn a_user_may_not_open_more_sessions_than_the_cap(backend: Backend) {
    let mut cluster = Cluster::start_in(backend, 0, false).await;
    cluster
        .start_node_with("capped", |s| s.max_sessions_per_user = 2)
        .await;
    let _a = cluster.connect(0, "pat-cap", Role::Patient).await;
    let _b = cluster.connect(0, "pat-cap", Role::Patient).await;
    let token = format!("Bearer {}", cluster.token("pat-cap", Role::Patient));
    assert_eq!(
        upgrade_status(cluster.nodes[0].port, Some(&token), "", None).await,
        429
    );
    // someone else is fine
    let _other = cluster.connect(0, "doc-cap", Role::Doctor).await;
}

crate::both_backends!(
    sending_faster_than_the_rate_is_refused_with_a_retry_hint_and_stores_nothing,
    a_user_may_not_open_more_sessions_than_the_cap,
);
