//! Chat creation by the booking app, listings and history paging.

use crate::helpers::{Backend, Cluster};
use chat_shared::domain::Role;
use chat_shared::protocol::ServerFrame;
use serde_json::json;

async fn booking_an_appointment_creates_one_chat_per_pair_idempotently(backend: Backend) {
    let cluster = Cluster::start_in(backend, 2, true).await;
    let mut patient = cluster.connect(1, "pat-c", Role::Patient).await;
    let mut doctor = cluster.connect(0, "doc-c", Role::Doctor).await;
    let service = cluster.token("booking", Role::Service);
    let post = |appt: &str| {
        cluster
            .http
            .post(cluster.url(0, "/api/chats"))
            .bearer_auth(&service)
            .json(&json!({"appointment_id":appt,"patient_id":"pat-c","doctor_id":"doc-c","patient_name":"Ann","doctor_name":"Dr Bo"}))
            .send()
    };
    let first = post("appt-1").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = post("appt-1").await.unwrap();
    assert_eq!(again.status(), 200);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["appointment_ids"], json!(["appt-1"]));
    let second = post("appt-2").await.unwrap();
    assert_eq!(second.status(), 200);
    let second: serde_json::Value = second.json().await.unwrap();
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["appointment_ids"], json!(["appt-1", "appt-2"]));
    assert_eq!(first["last_seq"], 0);
    assert!(first["last_message"].is_null());
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'));

    // Both participants were told, from their own point of view.
    let chat_event = patient
        .wait_for("chat event", |f| matches!(f, ServerFrame::Chat { .. }))
        .await;
    match chat_event {
        ServerFrame::Chat { chat } => {
            assert_eq!(chat.id.to_string(), first["id"].as_str().unwrap());
            assert_eq!(chat.peer.id.as_str(), "doc-c");
            assert_eq!(chat.peer.name, "Dr Bo");
            assert_eq!(chat.peer.role, Role::Doctor);
        }
        _ => unreachable!(),
    }
    match doctor
        .wait_for("chat event", |f| matches!(f, ServerFrame::Chat { .. }))
        .await
    {
        ServerFrame::Chat { chat } => assert_eq!(chat.peer.name, "Ann"),
        _ => unreachable!(),
    }
}

async fn listings_put_the_most_recent_activity_first(backend: Backend) {
    let cluster = Cluster::start_in(backend, 2, true).await;
    let old = cluster.create_chat("pat-l", "doc-l1", "a1").await;
    // Creation times have millisecond resolution: make sure they differ.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let newer = cluster.create_chat("pat-l", "doc-l2", "a2").await;
    let (_, listing) = cluster.get(0, "/api/chats", "pat-l", Role::Patient).await;
    let ids: Vec<&str> = listing["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [newer.id.to_string(), old.id.to_string()]);

    let mut doctor = cluster.connect(1, "doc-l1", Role::Doctor).await;
    doctor.send_message(&old.id.to_string(), "k", "bump").await;
    let ids = cluster
        .eventually("the bumped chat listed first", || async {
            let (_, listing) = cluster.get(0, "/api/chats", "pat-l", Role::Patient).await;
            let ids: Vec<String> = listing["chats"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned())
                .collect();
            (ids[0] == old.id.to_string()).then_some(ids)
        })
        .await;
    assert_eq!(ids, [old.id.to_string(), newer.id.to_string()]);
    let (_, doctors) = cluster.get(0, "/api/chats", "doc-l1", Role::Doctor).await;
    assert_eq!(doctors["chats"].as_array().unwrap().len(), 1);
}

async fn history_pages_forward_and_backward_in_ascending_order(backend: Backend) {
    let cluster = Cluster::start_in(backend, 2, true).await;
    let chat = cluster.create_chat("pat-h", "doc-h", "a").await;
    let chat_id = chat.id.to_string();
    let mut patient = cluster.connect(0, "pat-h", Role::Patient).await;
    for i in 1..=12 {
        patient
            .send_message(&chat_id, &format!("k{i}"), &format!("m{i}"))
            .await;
    }
    let seqs = |v: &serde_json::Value| -> Vec<u64> {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };
    let path = format!("/api/chats/{chat_id}/messages");
    let get = |q: String| {
        let path = path.clone();
        let cluster = &cluster;
        async move {
            cluster
                .get(1, &format!("{path}{q}"), "doc-h", Role::Doctor)
                .await
                .1
        }
    };
    let latest = get("?limit=5".into()).await;
    assert_eq!(seqs(&latest), [8, 9, 10, 11, 12]);
    assert_eq!(latest["has_more"], true);
    let before = get("?before_seq=8&limit=5".into()).await;
    assert_eq!(seqs(&before), [3, 4, 5, 6, 7]);
    let first = get("?before_seq=3&limit=5".into()).await;
    assert_eq!(seqs(&first), [1, 2]);
    assert_eq!(first["has_more"], false);
    let after = get("?after_seq=10".into()).await;
    assert_eq!(seqs(&after), [11, 12]);
    assert_eq!(after["has_more"], false);
    let window = get("?after_seq=2&before_seq=6".into()).await;
    assert_eq!(seqs(&window), [3, 4, 5]);
    let all = get("".into()).await;
    assert_eq!(seqs(&all), (1..=12).collect::<Vec<_>>());
    assert_eq!(all["messages"][0]["body"], "m1");
}

crate::both_backends!(
    booking_an_appointment_creates_one_chat_per_pair_idempotently,
    listings_put_the_most_recent_activity_first,
    history_pages_forward_and_backward_in_ascending_order,
);
