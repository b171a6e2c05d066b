//! The backend every fault test runs against: a real `redis-server` (which the
//! test may kill, restart, or wipe), a MongoDB-wire server, an in-process
//! persister; plus tokens and the REST calls the checks need.

use chat_shared::auth::TokenSigner;
use chat_shared::broker::SeqWindow;
use chat_shared::config::{MongoSettings, RedisSettings};
use chat_shared::domain::{ChatId, Role};
use chat_shared::protocol::Message;
use chat_shared::store::mongo::MongoStore;
use chat_shared::store::Store;
use chat_testkit::{MongoServer, RedisServer};
use secrecy::SecretString;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The HS256 secret of every gateway in this suite.
pub const SECRET: &str = "faults-secret-faults-secret-0123";

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `check` until it returns `Some`, or panics after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, check: &mut F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    chat_testkit::eventually(WAIT, what, check).await
}

/// Redis + MongoDB (+ persister), and everything needed to talk to gateways.
pub struct Backend {
    /// The Redis server: tests kill, restart and wipe it.
    pub redis: RedisServer,
    /// The MongoDB server.
    pub mongo: MongoServer,
    /// HTTP client for REST calls.
    pub http: reqwest::Client,
    signer: TokenSigner,
    /// Every token handed out, so logs can be searched for them.
    issued: Mutex<Vec<String>>,
    persister: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    store: tokio::sync::OnceCell<MongoStore>,
}

impl Backend {
    /// Starts Redis (with `aof`: `appendonly yes`, `appendfsync always`) and
    /// MongoDB; with `persister`, also a persister replica in this process.
    pub async fn start(aof: bool, persister: bool) -> Self {
        chat_shared::telemetry::init("warn");
        let mut backend = Self {
            redis: RedisServer::start_with(aof),
            mongo: MongoServer::start(),
            http: reqwest::Client::new(),
            signer: TokenSigner::hs256(&SecretString::from(SECRET)),
            issued: Mutex::new(Vec::new()),
            persister: None,
            store: tokio::sync::OnceCell::new(),
        };
        if persister {
            backend.start_persister().await;
        }
        backend
    }

    fn redis_settings(&self) -> RedisSettings {
        RedisSettings {
            url: self.redis.url(),
            cluster_nodes: Vec::new(),
            shards: 1,
            timeout: Duration::from_secs(2),
            pubsub_connections: 2,
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(500),
        }
    }

    /// MongoDB settings (the gateways get the same URL and database).
    pub fn mongo_settings(&self) -> MongoSettings {
        MongoSettings {
            url: self.mongo.url().to_owned(),
            db: self.mongo.db().to_owned(),
        }
    }

    async fn start_persister(&mut self) {
        let settings = chat_persister::configuration::Settings {
            redis: self.redis_settings(),
            mongo: self.mongo_settings(),
            mongo_timeout: Duration::from_secs(5),
            consumer: "faults-persister".into(),
            addr: "127.0.0.1:0".parse().expect("addr"),
            worker: chat_persister::worker::WorkerSettings {
                block: Duration::from_millis(200),
                ..Default::default()
            },
        };
        let shutdown = CancellationToken::new();
        let app = chat_persister::startup::Application::build(settings, shutdown.clone())
            .await
            .expect("persister starts");
        let task = tokio::spawn(async move {
            let _ = app.run_until_stopped().await;
        });
        self.persister = Some((shutdown, task));
    }

    /// A valid token (remembered for log checks).
    pub fn token(&self, sub: &str, role: Role) -> String {
        let t = self
            .signer
            .token_for(sub, role, Some(&format!("Name of {sub}")), 3600)
            .expect("sign");
        self.issued.lock().unwrap().push(t.clone());
        t
    }

    /// Every token handed out so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }

    /// Creates the chat of a pair through gateway `port`, as the booking app does.
    pub async fn create_chat(&self, port: u16, patient: &str, doctor: &str) -> String {
        let resp = self
            .http
            .post(format!("http://127.0.0.1:{port}/api/chats"))
            .bearer_auth(self.token("booking-app", Role::Service))
            .json(&json!({
                "appointment_id": format!("appt-{patient}-{doctor}"),
                "patient_id": patient,
                "doctor_id": doctor,
            }))
            .send()
            .await
            .expect("create chat");
        assert!(resp.status().is_success(), "create chat: {}", resp.status());
        let chat: Value = resp.json().await.expect("chat json");
        chat["id"].as_str().expect("chat id").to_owned()
    }

    /// GET `path` on gateway `port` as `sub`/`role`: status and JSON body.
    pub async fn get(&self, port: u16, path: &str, sub: &str, role: Role) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .bearer_auth(self.token(sub, role))
            .send()
            .await
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The whole history of a chat through gateway `port`, paging with `after_seq`.
    pub async fn history(&self, port: u16, chat: &str, sub: &str, role: Role) -> Vec<Message> {
        let token = self.token(sub, role);
        let mut all: Vec<Message> = Vec::new();
        loop {
            let after = all.last().map_or(0, |m| m.seq);
            let resp = self
                .http
                .get(format!(
                    "http://127.0.0.1:{port}/api/chats/{chat}/messages?after_seq={after}&limit=200"
                ))
                .bearer_auth(&token)
                .send()
                .await
                .expect("history");
            assert_eq!(resp.status(), 200, "history of {chat} on port {port}");
            let page: Value = resp.json().await.expect("history json");
            let messages: Vec<Message> =
                serde_json::from_value(page["messages"].clone()).expect("messages");
            let more = page["has_more"].as_bool().unwrap_or(false);
            all.extend(messages);
            if !more {
                return all;
            }
        }
    }

    async fn store(&self) -> &MongoStore {
        self.store
            .get_or_init(|| async {
                MongoStore::connect(&self.mongo_settings(), Duration::from_secs(5))
                    .await
                    .expect("mongo connects")
            })
            .await
    }

    /// The messages of a chat in MongoDB, ascending by `seq`.
    pub async fn stored(&self, chat: &str) -> Vec<Message> {
        let id = ChatId::parse(chat).expect("chat id");
        self.store()
            .await
            .messages(
                id,
                SeqWindow {
                    after: Some(0),
                    before: None,
                    limit: 100_000,
                },
            )
            .await
            .expect("stored messages")
    }

    /// The chat's `last_seq` in MongoDB.
    pub async fn stored_last_seq(&self, chat: &str) -> u64 {
        let id = ChatId::parse(chat).expect("chat id");
        self.store()
            .await
            .chat(id)
            .await
            .expect("stored chat")
            .map_or(0, |c| c.last_seq)
    }

    /// How many keys Redis holds (`DBSIZE`), over a raw connection.
    pub async fn redis_dbsize(&self) -> u64 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.redis.port()))
            .await
            .expect("redis connects");
        s.write_all(b"DBSIZE\r\n").await.expect("DBSIZE");
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.expect("DBSIZE reply");
        let reply = String::from_utf8_lossy(&buf[..n]);
        reply
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap_or_else(|_| panic!("DBSIZE reply {reply:?}"))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some((shutdown, _)) = &self.persister {
            shutdown.cancel();
        }
    }
}

/// Asserts that `seqs` (in arrival order) are exactly `1..=head`, each once,
/// ascending.
pub fn assert_exactly_once_in_order(what: &str, seqs: &[u64], head: u64) {
    let want: Vec<u64> = (1..=head).collect();
    assert_eq!(
        seqs, want,
        "{what}: every seq 1..={head} exactly once, in order"
    );
}

/// Asserts that `seqs` (in any order) hold every one of `1..=head` exactly once.
pub fn assert_exactly_once(what: &str, seqs: &[u64], head: u64) {
    let set: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(
        set.len(),
        seqs.len(),
        "{what}: a seq was delivered twice: {seqs:?}"
    );
    assert_eq!(
        set,
        (1..=head).collect::<BTreeSet<u64>>(),
        "{what}: every seq 1..={head} (arrival order {seqs:?})"
    );
}

/// Asserts that `history` is `1..=head` and holds every `acked` message as acked,
/// and each `client_msg_id` once.
pub fn assert_history_holds(what: &str, history: &[Message], acked: &[Message], head: u64) {
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    assert_exactly_once_in_order(what, &seqs, head);
    for a in acked {
        let found = history.iter().find(|m| m.seq == a.seq);
        assert_eq!(
            found,
            Some(a),
            "{what}: acked message seq {} missing or altered",
            a.seq
        );
    }
    let keys: BTreeSet<&str> = history.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(
        keys.len(),
        history.len(),
        "{what}: a client_msg_id was stored twice"
    );
}

/// Asserts that no captured log contains patient data or a token.
pub fn assert_logs_clean(logs: &[(String, String)], bodies: &[&str], tokens: &[String]) {
    for (node, log) in logs {
        assert!(!log.is_empty(), "{node}: no log captured (RUST_LOG=debug)");
        for b in bodies {
            assert!(
                !log.contains(b),
                "{node}: log contains patient data {b:?}:\n{}",
                excerpt(log, b)
            );
        }
        for t in tokens {
            // The signature alone identifies the token; so would the whole of it.
            let sig = t.rsplit('.').next().unwrap_or(t);
            assert!(
                !log.contains(sig),
                "{node}: log contains a token:\n{}",
                excerpt(log, sig)
            );
        }
    }
}

fn excerpt(log: &str, needle: &str) -> String {
    log.lines()
        .filter(|l| l.contains(needle))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n")
}
