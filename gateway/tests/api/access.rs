//! Identity and access rules of the contract.

use crate::helpers::{claims, upgrade_status, Backend, Client, Cluster};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chat_shared::auth::TokenSigner;
use chat_shared::domain::Role;
use chat_shared::protocol::ServerFrame;
use secrecy::SecretString;
use serde_json::json;

fn alg_none_token(sub: &str, role: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let exp = chat_shared::domain::Timestamp::now().millis() / 1000 + 600;
    let payload =
        URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{sub}","role":"{role}","exp":{exp}}}"#));
    format!("{header}.{payload}.")
}

async fn bad_missing_or_expired_tokens_get_401_before_any_upgrade(backend: Backend) {
    let cluster = Cluster::start_in(backend, 1, false).await;
    let port = cluster.nodes[0].port;
    let forged = TokenSigner::hs256(&SecretString::from("some-other-secret-some-other-secret"))
        .token_for("pat-a", Role::Patient, None, 600)
        .unwrap();
    let expired = cluster.sign(&claims("pat-a", Role::Patient, -600));
    let none = alg_none_token("pat-a", "patient");
    assert_eq!(upgrade_status(port, None, "", None).await, 401);
    for bad in [&forged, &expired, &none, &"garbage".to_string()] {
        assert_eq!(
            upgrade_status(port, Some(&format!("Bearer {bad}")), "", None).await,
            401
        );
        assert_eq!(
            upgrade_status(port, None, &format!("?access_token={bad}"), None).await,
            401
        );
        let resp = cluster
            .http
            .get(cluster.url(0, "/api/chats"))
            .bearer_auth(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let resp = cluster
        .http
        .get(cluster.url(0, "/api/unread"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

async fn the_token_may_come_from_the_access_token_query_parameter(backend: Backend) {
    let cluster = Cluster::start_in(backend, 1, false).await;
    let token = cluster.token("pat-q", Role::Patient);
    assert_eq!(
        upgrade_status(
            cluster.nodes[0].port,
            None,
            &format!("?access_token={token}"),
            None
        )
        .await,
        101
    );
}

async fn admins_services_and_unknown_roles_may_not_chat(backend: Backend) {
    let cluster = Cluster::start_in(backend, 1, false).await;
    let port = cluster.nodes[0].port;
    for role in [Role::Admin, Role::Service] {
        let token = cluster.token("someone", role);
        assert_eq!(
            upgrade_status(port, Some(&format!("Bearer {token}")), "", None).await,
            403
        );
        for path in ["/api/chats", "/api/unread"] {
            let (status, body) = cluster.get(0, path, "someone", role).await;
            assert_eq!(status, 403, "{role:?} on {path}");
            assert_eq!(body["error"]["code"], "forbidden");
        }
    }
    let unknown = cluster.sign(&chat_shared::auth::Claims {
        role: Role::Unknown,
        ..claims("x", Role::Patient, 600)
    });
    // (Role::Unknown serializes as "unknown", which is not a known role.)
    assert_eq!(
        upgrade_status(port, Some(&format!("Bearer {unknown}")), "", None).await,
        403
    );
}

async fn only_the_service_role_creates_chats(backend: Backend) {
    let cluster = Cluster::start_in(backend, 1, false).await;
    for role in [Role::Patient, Role::Doctor, Role::Admin] {
        let resp = cluster
            .http
            .post(cluster.url(0, "/api/chats"))
            .bearer_auth(cluster.token("pat-s", role))
            .json(&json!({"appointment_id":"a1","patient_id":"pat-s","doctor_id":"doc-s"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{role:?}");
    }
}

async fn a_chat_that_is_not_yours_is_indistinguishable_from_one_that_does_not_exist(
    backend: Backend,
) {
    let cluster = Cluster::start_in(backend, 1, false).await;
    let chat = cluster.create_chat("pat-o", "doc-o", "appt-o").await;
    let chat_id = chat.id.to_string();
    let missing = chat_shared::domain::ChatId::generate().to_string();
    for (who, role) in [
        ("pat-stranger", Role::Patient),
        ("doc-stranger", Role::Doctor),
        // right person, wrong role
        ("pat-o", Role::Doctor),
    ] {
        for id in [&chat_id, &missing, &"not-an-id".to_string()] {
            let (status, body) = cluster
                .get(0, &format!("/api/chats/{id}/messages"), who, role)
                .await;
            assert_eq!(status, 404, "{who} reading {id}");
            assert_eq!(body["error"]["code"], "not_found");
        }
        let mut client = cluster.connect(0, who, role).await;
        for id in [&chat_id, &missing] {
            let reply = client.try_send_message(id, "k", "let me in").await;
            assert!(
                matches!(&reply, ServerFrame::Error { code, .. } if code.as_str() == "not_found"),
                "{reply:?}"
            );
        }
        let (_, listing) = cluster.get(0, "/api/chats", who, role).await;
        assert_eq!(listing["chats"].as_array().unwrap().len(), 0);
    }
    // The owners are fine.
    let mut patient = cluster.connect(0, "pat-o", Role::Patient).await;
    patient.send_message(&chat_id, "k", "mine").await;
}

async fn websocket_upgrades_from_foreign_origins_are_refused(backend: Backend) {
    let cluster = Cluster::start_in(backend, 1, false).await;
    let port = cluster.nodes[0].port;
    let auth = format!("Bearer {}", cluster.token("pat-x", Role::Patient));
    assert_eq!(
        upgrade_status(port, Some(&auth), "", Some("http://evil.example")).await,
        403
    );
    assert_eq!(
        upgrade_status(port, Some(&auth), "", Some("http://allowed.example")).await,
        101
    );
}

async fn cors_grants_exactly_the_allowed_origins(backend: Backend) {
    let cluster = Cluster::start_in(backend, 1, false).await;
    let preflight = |origin: &'static str| {
        cluster
            .http
            .request(reqwest::Method::OPTIONS, cluster.url(0, "/api/chats"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight("http://allowed.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://allowed.example"
    );
    let evil = preflight("http://evil.example").await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
}

async fn a_token_that_expires_during_a_session_closes_it_with_4001_unless_refreshed(
    backend: Backend,
) {
    let cluster = Cluster::start_in(backend, 1, false).await;
    let port = cluster.nodes[0].port;
    let short = cluster.sign(&claims("pat-t", Role::Patient, 2));

    let mut expiring = Client::connect(port, &short).await;
    let mut refreshed = Client::connect(port, &short).await;
    let fresh = cluster.token("pat-t", Role::Patient);
    refreshed
        .send_json(json!({"type":"auth","token":fresh}))
        .await;
    // A refresh for someone else is refused and changes nothing.
    let other = cluster.token("pat-other", Role::Patient);
    refreshed
        .send_json(json!({"type":"auth","id":5,"token":other}))
        .await;
    match refreshed.reply_to(5).await {
        ServerFrame::Error { code, .. } => assert_eq!(code.as_str(), "forbidden"),
        f => panic!("{f:?}"),
    }

    assert_eq!(expiring.closed().await, crate::helpers::Closed::Code(4001));
    // The refreshed session outlived the original expiry.
    refreshed.ping().await;
    match &refreshed.hello {
        ServerFrame::Hello { user_id, .. } => assert_eq!(user_id.as_str(), "pat-t"),
        f => panic!("{f:?}"),
    }
}

crate::both_backends!(
    bad_missing_or_expired_tokens_get_401_before_any_upgrade,
    the_token_may_come_from_the_access_token_query_parameter,
    admins_services_and_unknown_roles_may_not_chat,
    only_the_service_role_creates_chats,
    a_chat_that_is_not_yours_is_indistinguishable_from_one_that_does_not_exist,
    websocket_upgrades_from_foreign_origins_are_refused,
    cors_grants_exactly_the_allowed_origins,
    a_token_that_expires_during_a_session_closes_it_with_4001_unless_refreshed,
);
