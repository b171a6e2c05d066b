//! Standalone mode as a newcomer runs it: one process, no Redis, no MongoDB,
//! data in `DATA_DIR` — and a kill -9 loses no acknowledged message.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

#[path = "api/helpers.rs"]
mod helpers;

use chat_shared::auth::TokenSigner;
use chat_shared::domain::Role;
use helpers::{Client, SECRET};
use secrecy::SecretString;
use serde_json::json;
use std::process::{Child, Command, Stdio};

struct Gateway {
    child: Child,
    port: u16,
}

impl Gateway {
    async fn start(data_dir: &std::path::Path) -> Self {
        let port = chat_testkit::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_chat-gateway"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
            .env("DATA_DIR", data_dir)
            .env("JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        helpers::eventually("the gateway answers /readyz", &mut || {
            let http = http.clone();
            async move {
                let r = http
                    .get(format!("http://127.0.0.1:{port}/readyz"))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        Self { child, port }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn after_kill_9_history_unread_counts_and_seq_continue() {
    let dir = tempfile::tempdir().unwrap();
    let signer = TokenSigner::hs256(&SecretString::from(SECRET));
    let token = |sub: &str, role| signer.token_for(sub, role, None, 600).unwrap();
    let http = reqwest::Client::new();

    let gw = Gateway::start(dir.path()).await;
    let chat: serde_json::Value = http
        .post(format!("http://127.0.0.1:{}/api/chats", gw.port))
        .bearer_auth(token("booking", Role::Service))
        .json(&json!({"appointment_id":"a1","patient_id":"pat-s","doctor_id":"doc-s"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let mut doctor = Client::connect(gw.port, &token("doc-s", Role::Doctor)).await;
    let mut patient = Client::connect(gw.port, &token("pat-s", Role::Patient)).await;
    for i in 1..=3 {
        doctor
            .send_message(&chat_id, &format!("d{i}"), &format!("note {i}"))
            .await;
    }
    patient
        .send_json(json!({"type":"read","chat_id":chat_id,"up_to_seq":1}))
        .await;
    patient.ping().await;
    // Killed right after the acks: nothing acknowledged may be lost.
    gw.kill9();

    let gw = Gateway::start(dir.path()).await;
    let mut patient = Client::connect(gw.port, &token("pat-s", Role::Patient)).await;
    let page: serde_json::Value = http
        .get(format!(
            "http://127.0.0.1:{}/api/chats/{chat_id}/messages",
            gw.port
        ))
        .bearer_auth(token("pat-s", Role::Patient))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bodies: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["note 1", "note 2", "note 3"]);
    assert_eq!(patient.send_message(&chat_id, "p1", "thanks").await.seq, 4);
    let unread = helpers::eventually("unread counts restored", &mut || {
        let http = http.clone();
        let port = gw.port;
        let token = token("pat-s", Role::Patient);
        async move {
            let v: serde_json::Value = http
                .get(format!("http://127.0.0.1:{port}/api/unread"))
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["total"] == 2).then_some(v)
        }
    })
    .await;
    assert_eq!(
        unread["total"], 2,
        "seqs 2 and 3 unread after the mark at 1"
    );
}

/// `chat-gateway --healthcheck` as a container runtime calls it.
fn healthcheck(port: u16) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chat-gateway"))
        .arg("--healthcheck")
        .env_clear()
        .env("GATEWAY_ADDR", format!("0.0.0.0:{port}"))
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_healthcheck_flag_succeeds_against_a_running_gateway_and_fails_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path()).await;
    let up = healthcheck(gateway.port);
    assert!(up.status.success(), "{up:?}");
    let port = gateway.port;
    gateway.kill9();
    let down = healthcheck(port);
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("unhealthy"),
        "{down:?}"
    );
}
