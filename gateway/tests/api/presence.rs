//! Presence: chat peers learn who is online, across nodes, without storms.

use crate::helpers::{Backend, Cluster};
use chat_shared::domain::Role;
use chat_shared::protocol::ServerFrame;
use std::time::Duration;

fn presence_of(f: &ServerFrame, who: &str) -> Option<bool> {
    match f {
        ServerFrame::Presence { user_id, online } if user_id.as_str() == who => Some(*online),
        _ => None,
    }
}

async fn peers_on_other_nodes_learn_when_a_user_comes_online_and_goes_offline(backend: Backend) {
    let cluster = Cluster::start_in(backend, 2, true).await;
    let chat = cluster.create_chat("pat-pr", "doc-pr", "a").await;
    let mut doctor = cluster.connect(1, "doc-pr", Role::Doctor).await;
    let (_, listing) = cluster.get(1, "/api/chats", "doc-pr", Role::Doctor).await;
    assert_eq!(listing["chats"][0]["peer"]["online"], false);

    let patient = cluster.connect(0, "pat-pr", Role::Patient).await;
    doctor
        .wait_for("online", |f| presence_of(f, "pat-pr") == Some(true))
        .await;
    let (_, listing) = cluster.get(1, "/api/chats", "doc-pr", Role::Doctor).await;
    assert_eq!(listing["chats"][0]["id"], chat.id.to_string());
    assert_eq!(listing["chats"][0]["peer"]["online"], true);
    // A second device changes nothing for the peer.
    let second = cluster.connect(1, "pat-pr", Role::Patient).await;
    drop(patient);
    drop(second);
    doctor
        .wait_for("offline", |f| presence_of(f, "pat-pr") == Some(false))
        .await;
    let frames = doctor.drain().await;
    assert!(
        frames.iter().all(|f| presence_of(f, "pat-pr").is_none()),
        "one offline event, no flapping: {frames:?}"
    );
    let (_, listing) = cluster.get(0, "/api/chats", "doc-pr", Role::Doctor).await;
    assert_eq!(listing["chats"][0]["peer"]["online"], false);
}

#[tokio::test]
async fn a_user_hopping_between_nodes_within_the_grace_period_causes_no_presence_traffic() {
    let mut cluster = Cluster::start_with(1, true).await;
    cluster
        .start_node_with("slow-grace", |s| s.presence.grace = Duration::from_secs(1))
        .await;
    let chat = cluster.create_chat("pat-hop", "doc-hop", "a").await;
    let mut doctor = cluster.connect(0, "doc-hop", Role::Doctor).await;
    let mut patient = cluster.connect(1, "pat-hop", Role::Patient).await;
    doctor
        .wait_for("online", |f| presence_of(f, "pat-hop") == Some(true))
        .await;
    // The patient's node goes away; they reconnect to the other node at once.
    drop(patient);
    patient = cluster.connect(0, "pat-hop", Role::Patient).await;
    // Well past the grace period, then a message as a marker: everything
    // published before it has been delivered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    patient
        .send_message(&chat.id.to_string(), "marker", "still here")
        .await;
    doctor.expect_message(&chat.id.to_string(), 1).await;
    let frames = doctor.drain().await;
    assert!(
        frames.iter().all(|f| presence_of(f, "pat-hop").is_none()),
        "no offline/online flap: {frames:?}"
    );
}

crate::both_backends!(peers_on_other_nodes_learn_when_a_user_comes_online_and_goes_offline,);
