//! Fault: a gateway node is killed with SIGKILL while its users are online.
//! Their peers on other nodes see them go offline once the dead node's
//! heartbeat expires — no per-user timer on the dead node is needed.

use crate::conn::Conn;
use crate::harness::Backend;
use crate::process::Gateway;
use chat_shared::domain::Role;
use chat_shared::protocol::ServerFrame;
use std::time::{Duration, Instant};

/// The contract's bound for showing a dead node's users offline.
const OFFLINE_WITHIN: Duration = Duration::from_secs(30);

fn presence(frame: &ServerFrame, who: &str) -> Option<bool> {
    match frame {
        ServerFrame::Presence { user_id, online } if user_id.as_str() == who => Some(*online),
        _ => None,
    }
}

async fn wait_presence(conn: &mut Conn, who: &str, online: bool, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let left = within.saturating_sub(started.elapsed());
        assert!(
            !left.is_zero(),
            "{who} not shown online={online} within {within:?}"
        );
        if let Some(frame) = conn
            .read(left)
            .await
            .expect("the peer's session stays open")
        {
            if presence(&frame, who) == Some(online) {
                return started.elapsed();
            }
        }
    }
}

#[tokio::test]
async fn after_kill_9_of_a_node_its_users_go_offline_for_their_peers_within_30_seconds() {
    let backend = Backend::start(false, false).await;
    // Production defaults (15 s heartbeat TTL, 5 s grace): the bound is checked
    // as an operator would run it.
    let mut doomed = Gateway::spawn(&backend, "doomed", &[]).await;
    let survivor = Gateway::spawn(&backend, "survivor", &[]).await;
    let chat = backend
        .create_chat(survivor.port, "pat-dead", "doc-alive")
        .await;
    let mut doctor = Conn::connect(survivor.port, &backend.token("doc-alive", Role::Doctor)).await;
    let mut patient = Conn::connect(doomed.port, &backend.token("pat-dead", Role::Patient)).await;
    wait_presence(&mut doctor, "pat-dead", true, Duration::from_secs(10)).await;
    patient.ping().await.unwrap();

    doomed.kill_9();
    let took = wait_presence(&mut doctor, "pat-dead", false, OFFLINE_WITHIN).await;
    println!("node killed with SIGKILL: its user shown offline to the peer after {took:?}");

    // The listing agrees, and the doctor's session never noticed anything else.
    let (status, listing) = backend
        .get(survivor.port, "/api/chats", "doc-alive", Role::Doctor)
        .await;
    assert_eq!(status, 200);
    let listed = listing["chats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == chat)
        .unwrap()
        .clone();
    assert_eq!(listed["peer"]["online"], false);
    doctor.ping().await.unwrap();
}
