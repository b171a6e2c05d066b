//! What is being loaded: the gateway nodes, how tokens are obtained, how chats
//! are created, and which loopback source address each connection uses.

use crate::client::{self, Ws};
use crate::error::{Context, Error, Result};
use chat_shared::auth::TokenSigner;
use chat_shared::domain::Role;
use chat_shared::protocol::Chat;
use futures_util::{stream, StreamExt, TryStreamExt};
use secrecy::SecretString;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// How long minted tokens live (longer than any run: `--max-duration` caps runs).
const TOKEN_TTL_SECS: i64 = 6 * 3600;

/// Concurrent HTTP calls when minting dev tokens or creating chats.
const HTTP_CONCURRENCY: usize = 32;

/// Where tokens come from.
#[derive(Clone)]
pub enum TokenSource {
    /// Minted locally with the gateways' HS256 `JWT_SECRET`.
    Secret(TokenSigner),
    /// Asked from a `--dev` gateway (`POST /dev/token`).
    Dev,
}

impl TokenSource {
    /// Local HS256 minting with this secret.
    pub fn secret(secret: &str) -> Self {
        TokenSource::Secret(TokenSigner::hs256(&SecretString::from(secret.to_owned())))
    }
}

/// The gateway nodes under load and how to talk to them.
#[derive(Clone)]
pub struct Target {
    gateways: Vec<String>,
    tokens: TokenSource,
    sources: Vec<IpAddr>,
    http: reqwest::Client,
}

impl Target {
    /// `gateways` are `host:port`; `source_ips` loopback source addresses
    /// (127.0.0.2, 127.0.0.3, …) are used round-robin when the gateways are on
    /// loopback (0: let the kernel choose).
    pub fn new(gateways: Vec<String>, tokens: TokenSource, source_ips: u8) -> Result<Self> {
        if gateways.is_empty() {
            return Err(Error::new("at least one gateway address is needed"));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        let all_loopback = gateways.iter().all(|g| {
            let host = g.rsplit_once(':').map_or(g.as_str(), |(h, _)| h);
            host == "localhost"
                || host
                    .trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        let sources = if all_loopback {
            (0..source_ips)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i.saturating_add(2))))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            gateways,
            tokens,
            sources,
            http,
        })
    }

    /// The gateway nodes.
    pub fn gateways(&self) -> &[String] {
        &self.gateways
    }

    /// The `host:port` of node `i % nodes`.
    pub fn node(&self, i: usize) -> &str {
        &self.gateways[i % self.gateways.len()]
    }

    /// A token for `sub` with `role`.
    pub async fn token(&self, sub: &str, role: Role) -> Result<String> {
        match &self.tokens {
            TokenSource::Secret(signer) => signer
                .token_for(sub, role, None, TOKEN_TTL_SECS)
                .context("signing a token"),
            TokenSource::Dev => {
                #[derive(serde::Deserialize)]
                struct TokenResponse {
                    token: String,
                }
                let url = format!("http://{}/dev/token", self.gateways[0]);
                let resp = self
                    .http
                    .post(&url)
                    .json(&serde_json::json!({ "sub": sub, "role": role }))
                    .send()
                    .await
                    .context("POST /dev/token")?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(Error::new(format!(
                        "POST /dev/token answered {status} (is the gateway running with --dev?)"
                    )));
                }
                let body: TokenResponse = resp.json().await.context("POST /dev/token body")?;
                Ok(body.token)
            }
        }
    }

    /// Tokens for many users, a few HTTP calls at a time in dev mode.
    pub async fn tokens(&self, users: &[(String, Role)]) -> Result<Vec<String>> {
        stream::iter(users.iter().map(|(sub, role)| self.token(sub, *role)))
            .buffered(HTTP_CONCURRENCY)
            .try_collect()
            .await
    }

    /// Creates (or finds: the call is idempotent) the chat of a patient and a
    /// doctor, as the booking app does, with a `service` token.
    pub async fn create_chat(
        &self,
        service_token: &str,
        patient: &str,
        doctor: &str,
        appointment: &str,
    ) -> Result<Chat> {
        let url = format!("http://{}/api/chats", self.gateways[0]);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(service_token)
            .json(&serde_json::json!({
                "appointment_id": appointment,
                "patient_id": patient,
                "doctor_id": doctor,
            }))
            .send()
            .await
            .context("POST /api/chats")?;
        let status = resp.status();
        if status.as_u16() != 200 && status.as_u16() != 201 {
            let text = resp.text().await.unwrap_or_default();
            return Err(Error::new(format!(
                "POST /api/chats answered {status}: {}",
                text.chars().take(200).collect::<String>()
            )));
        }
        resp.json().await.context("POST /api/chats body")
    }

    /// Creates the chats of many `(patient, doctor)` pairs (appointment ids are
    /// derived from the pair), a few at a time, in order.
    pub async fn create_chats(&self, pairs: &[(String, String)]) -> Result<Vec<Chat>> {
        let service = self.token("loadtest-booking", Role::Service).await?;
        let service = &service;
        stream::iter(pairs.iter().map(|(p, d)| async move {
            self.create_chat(service, p, d, &format!("appt-{p}-{d}"))
                .await
        }))
        .buffered(HTTP_CONCURRENCY)
        .try_collect()
        .await
    }

    /// Messages the gateways accepted but their in-process persister has not
    /// written yet (standalone mode: the embedded log's backlog, which every
    /// `sync` scans), summed over the nodes from their `/metrics`; `None` when
    /// a node runs no in-process persister (cluster mode), so there is nothing
    /// to wait for.
    pub async fn unpersisted(&self) -> Result<Option<u64>> {
        let mut total = 0u64;
        for gw in &self.gateways {
            let url = format!("http://{gw}/metrics");
            let text = self
                .http
                .get(&url)
                .send()
                .await
                .context("GET /metrics")?
                .text()
                .await
                .context("GET /metrics body")?;
            let value = |name: &str| {
                text.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == name).then(|| v.trim().parse::<f64>().ok()).flatten()
                })
            };
            let (Some(accepted), Some(written)) = (
                value("chat_messages_accepted_total"),
                value("chat_persister_messages_written_total"),
            ) else {
                return Ok(None);
            };
            total += (accepted - written).max(0.0) as u64;
        }
        Ok(Some(total))
    }

    /// Opens a WebSocket session on node `node % nodes` from the source address
    /// picked by `conn_index`, and waits for its `hello`.
    pub async fn connect(&self, node: usize, conn_index: usize, token: &str) -> Result<Ws> {
        let source = if self.sources.is_empty() {
            None
        } else {
            Some(self.sources[conn_index % self.sources.len()])
        };
        client::connect(self.node(node), source, token).await
    }
}
