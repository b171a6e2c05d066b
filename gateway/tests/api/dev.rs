//! `--dev`: demo users, token minting and the demo client — and their absence
//! without it.

use crate::helpers::{Backend, Client, Cluster, SECRET};
use chat_gateway::dev::DevSettings;
use chat_shared::auth::TokenSigner;
use secrecy::SecretString;
use serde_json::json;

async fn without_dev_the_dev_routes_and_the_client_do_not_exist(backend: Backend) {
    let cluster = Cluster::start_in(backend, 1, false).await;
    for path in ["/dev/users", "/", "/index.html"] {
        let resp = cluster.http.get(cluster.url(0, path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
    let resp = cluster
        .http
        .post(cluster.url(0, "/dev/token"))
        .json(&json!({"sub":"x","role":"admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

async fn with_dev_demo_users_have_chats_and_can_get_tokens(backend: Backend) {
    let mut cluster = Cluster::start_in(backend, 0, false).await;
    cluster
        .start_node_with("dev", |s| {
            s.dev = Some(DevSettings {
                signer: TokenSigner::hs256(&SecretString::from(SECRET)),
            })
        })
        .await;
    let users: serde_json::Value = cluster
        .http
        .get(cluster.url(0, "/dev/users"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let users = users["users"].as_array().unwrap();
    let count = |role: &str| users.iter().filter(|u| u["role"] == role).count();
    assert!(count("doctor") >= 2 && count("patient") >= 2, "{users:?}");

    for user in users {
        let token: serde_json::Value = cluster
            .http
            .post(cluster.url(0, "/dev/token"))
            .json(&json!({"sub": user["id"], "role": user["role"], "name": user["name"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = token["token"].as_str().unwrap();
        let chats: serde_json::Value = cluster
            .http
            .get(cluster.url(0, "/api/chats"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            !chats["chats"].as_array().unwrap().is_empty(),
            "{} has a chat",
            user["id"]
        );
        let mut c = Client::connect(cluster.nodes[0].port, token).await;
        c.ping().await;
    }
    // Any role, the service included.
    let service: serde_json::Value = cluster
        .http
        .post(cluster.url(0, "/dev/token"))
        .json(&json!({"sub":"booking","role":"service"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = cluster
        .http
        .post(cluster.url(0, "/api/chats"))
        .bearer_auth(service["token"].as_str().unwrap())
        .json(&json!({"appointment_id":"a9","patient_id":"pat-cara","doctor_id":"doc-ana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the seeded chat exists");
    // The demo client is served, as text that cannot be sniffed into something else.
    let page = cluster.http.get(cluster.url(0, "/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert!(page.text().await.unwrap().contains("<html"));
    let script = cluster
        .http
        .get(cluster.url(0, "/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
}

crate::both_backends!(
    without_dev_the_dev_routes_and_the_client_do_not_exist,
    with_dev_demo_users_have_chats_and_can_get_tokens,
);
