//! Guarantee 9: bad input gets a clear error or close code, and the session and
//! node keep serving.

use crate::helpers::{Backend, Closed, Cluster};
use chat_shared::domain::Role;
use chat_shared::protocol::ServerFrame;
use serde_json::json;

fn error_code(f: &ServerFrame) -> &'static str {
    match f {
        ServerFrame::Error { code, .. } => code.as_str(),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn malformed_and_invalid_frames_get_error_frames_and_the_session_keeps_working(
    backend: Backend,
) {
    let cluster = Cluster::start_in(backend, 1, true).await;
    let chat = cluster.create_chat("pat-b", "doc-b", "appt-b").await;
    let chat_id = chat.id.to_string();
    let mut c = cluster.connect(0, "pat-b", Role::Patient).await;

    for text in [
        "{",
        "[]",
        "null",
        r#"{"type":"launch_rockets"}"#,
        r#"{"no":"type"}"#,
    ] {
        c.send_text(text).await;
        let f = c
            .wait_for("error", |f| matches!(f, ServerFrame::Error { .. }))
            .await;
        assert_eq!(error_code(&f), "invalid", "{text}");
        c.ping().await;
    }
    let cases = [
        ("", "invalid"),
        ("   \n ", "invalid"),
        ("bell\u{7}", "invalid"),
        ("nul\u{0}", "invalid"),
    ];
    for (body, code) in cases {
        let reply = c.try_send_message(&chat_id, "k-bad", body).await;
        assert_eq!(error_code(&reply), code, "{body:?}");
    }
    let long = "x".repeat(4001);
    assert_eq!(
        error_code(&c.try_send_message(&chat_id, "k-long", &long).await),
        "too_large"
    );
    let reply = c.try_send_message("not-a-chat", "k", "hi").await;
    assert_eq!(error_code(&reply), "invalid");
    // A bad field keeps the request id on the error.
    c.send_json(
        json!({"type":"send","id":77,"chat_id":chat_id,"client_msg_id":"has space","body":"x"}),
    )
    .await;
    assert_eq!(error_code(&c.reply_to(77).await), "invalid");

    // Nothing bad was stored: the next good message is seq 1.
    let ok = c.send_message(&chat_id, "k-good", &"y".repeat(4000)).await;
    assert_eq!(ok.seq, 1);
}

async fn oversized_and_binary_frames_close_the_session_with_4008_and_the_node_keeps_serving(
    backend: Backend,
) {
    let cluster = Cluster::start_in(backend, 1, false).await;
    let chat = cluster.create_chat("pat-big", "doc-big", "appt-big").await;
    let mut c = cluster.connect(0, "pat-big", Role::Patient).await;
    c.send_text("x".repeat(64 * 1024 + 1)).await;
    assert_eq!(c.closed().await, Closed::Code(4008));

    let mut c = cluster.connect(0, "pat-big", Role::Patient).await;
    c.send_binary(vec![1, 2, 3]).await;
    assert_eq!(c.closed().await, Closed::Code(4008));

    let mut fresh = cluster.connect(0, "pat-big", Role::Patient).await;
    fresh
        .send_message(&chat.id.to_string(), "k", "still here")
        .await;
}

async fn bad_rest_input_gets_contract_errors(backend: Backend) {
    let cluster = Cluster::start_in(backend, 1, false).await;
    let chat = cluster
        .create_chat("pat-rest", "doc-rest", "appt-rest")
        .await;
    let service = cluster.token("booking", Role::Service);
    for body in [
        json!({"patient_id":"p","doctor_id":"d"}),
        json!({"appointment_id":"a","patient_id":"bad.id","doctor_id":"d"}),
        json!({"appointment_id":"a","patient_id":"same","doctor_id":"same"}),
        json!({"appointment_id":"a","patient_id":"p","doctor_id":"d","patient_name":""}),
    ] {
        let resp = cluster
            .http
            .post(cluster.url(0, "/api/chats"))
            .bearer_auth(&service)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "invalid");
    }
    let resp = cluster
        .http
        .post(cluster.url(0, "/api/chats"))
        .bearer_auth(&service)
        .header("content-type", "application/json")
        .body(format!(
            "{{\"appointment_id\":\"{}\"}}",
            "a".repeat(70 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let path = format!("/api/chats/{}/messages", chat.id);
    for q in ["?limit=0", "?limit=201", "?after_seq=-1", "?limit=abc"] {
        let (status, body) = cluster
            .get(0, &format!("{path}{q}"), "pat-rest", Role::Patient)
            .await;
        assert_eq!(status, 400, "{q}");
        assert_eq!(body["error"]["code"], "invalid");
    }
    let resp = cluster
        .http
        .post(cluster.url(0, &format!("/api/chats/{}/read", chat.id)))
        .bearer_auth(cluster.token("pat-rest", Role::Patient))
        .header("content-type", "application/json")
        .body("{\"up_to_seq\":\"three\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

crate::both_backends!(
    malformed_and_invalid_frames_get_error_frames_and_the_session_keeps_working,
    oversized_and_binary_frames_close_the_session_with_4008_and_the_node_keeps_serving,
    bad_rest_input_gets_contract_errors,
);

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame_echoing_its_code() {
    let cluster = Cluster::start_with(1, false).await;
    let mut c = cluster.connect(0, "pat-bye", Role::Patient).await;
    c.close_with(4100).await;
    assert_eq!(c.closed().await, Closed::Code(4100));
}
