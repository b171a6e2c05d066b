//! The test cluster: a real `redis-server`, a real MongoDB-wire server, gateway
//! nodes and a persister built exactly as `main` builds them, on random ports;
//! and a WebSocket client that speaks the contract.

use chat_gateway::configuration::{Mode, Settings};
use chat_gateway::startup::Application;
use chat_shared::auth::{Claims, TokenSigner};
use chat_shared::config::{AuthArgs, MongoSettings, RedisSettings};
use chat_shared::domain::{Role, Timestamp};
use chat_shared::protocol::{Chat, Message, ServerFrame};
use chat_testkit::{MongoServer, RedisCluster, RedisServer};
use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// The HS256 secret every test cluster uses.
pub const SECRET: &str = "test-secret-test-secret-test-secret";

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// One gateway node.
pub struct Node {
    /// Its port.
    pub port: u16,
    draining: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A running persister.
pub struct PersisterHandle {
    /// Its HTTP port (`/healthz`, `/readyz`, `/metrics`).
    pub port: u16,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Which engines the nodes under test run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Redis + MongoDB, persister replicas in-process.
    Cluster,
    /// One standalone node: in-process broker and persister, embedded store.
    Standalone,
    /// A three-master Redis Cluster (sharded pub/sub, sharded streams) + MongoDB.
    RedisCluster,
}

/// Event stream shards on the test Redis Cluster: more than masters, so a
/// master serves several and persisters run several workers.
pub const REDIS_CLUSTER_SHARDS: u16 = 4;

enum Servers {
    Cluster {
        redis: RedisServer,
        mongo: MongoServer,
    },
    RedisCluster {
        redis: RedisCluster,
        mongo: MongoServer,
    },
    Standalone {
        data_dir: tempfile::TempDir,
    },
}

/// The system under test: servers plus gateway nodes (+ persisters). In
/// standalone mode there is one node, and every node index means that node.
pub struct Cluster {
    servers: Servers,
    /// Gateway nodes.
    pub nodes: Vec<Node>,
    /// Running persister replicas.
    pub persisters: Vec<PersisterHandle>,
    /// HTTP client.
    pub http: reqwest::Client,
    signer: TokenSigner,
}

impl Cluster {
    /// Two gateways and a persister.
    pub async fn start() -> Self {
        Self::start_with(2, true).await
    }

    /// `nodes` gateways, with or without a persister.
    pub async fn start_with(nodes: usize, persister: bool) -> Self {
        Self::start_in(Backend::Cluster, nodes, persister).await
    }

    /// The same on a given backend (standalone: at most one node, and its
    /// persister always runs in-process).
    pub async fn start_in(backend: Backend, nodes: usize, persister: bool) -> Self {
        chat_shared::telemetry::init("chat-gateway", "warn");
        let servers = match backend {
            Backend::Cluster => Servers::Cluster {
                redis: RedisServer::start(),
                mongo: MongoServer::start(),
            },
            Backend::Standalone => Servers::Standalone {
                data_dir: tempfile::tempdir().expect("data dir"),
            },
            Backend::RedisCluster => Servers::RedisCluster {
                redis: RedisCluster::start(),
                mongo: MongoServer::start(),
            },
        };
        let (nodes, persister) = match backend {
            Backend::Cluster | Backend::RedisCluster => (nodes, persister),
            Backend::Standalone => (nodes.min(1), false),
        };
        let mut cluster = Self {
            servers,
            nodes: Vec::new(),
            persisters: Vec::new(),
            http: reqwest::Client::new(),
            signer: TokenSigner::hs256(&SecretString::from(SECRET)),
        };
        for i in 0..nodes {
            cluster.start_node(&format!("node-{i}")).await;
        }
        if persister {
            cluster.start_persister("persister-0").await;
        }
        cluster
    }

    /// The Redis server (single-Redis tests).
    pub fn redis(&self) -> &RedisServer {
        match &self.servers {
            Servers::Cluster { redis, .. } => redis,
            _ => panic!("a single-Redis test ran on another backend"),
        }
    }

    /// The Redis Cluster (Redis Cluster tests).
    pub fn redis_cluster(&self) -> &RedisCluster {
        match &self.servers {
            Servers::RedisCluster { redis, .. } => redis,
            _ => panic!("a Redis Cluster test ran on another backend"),
        }
    }

    /// The MongoDB server (cluster-mode tests).
    pub fn mongo(&self) -> &MongoServer {
        match &self.servers {
            Servers::Cluster { mongo, .. } | Servers::RedisCluster { mongo, .. } => mongo,
            Servers::Standalone { .. } => panic!("a cluster-only test ran in standalone mode"),
        }
    }

    /// The node's engines, per backend.
    fn mode(&self) -> Mode {
        match &self.servers {
            Servers::Cluster { .. } | Servers::RedisCluster { .. } => Mode::Cluster {
                redis: self.redis_settings(),
                mongo: self.mongo_settings(),
                mongo_timeout: Duration::from_secs(5),
            },
            Servers::Standalone { data_dir } => Mode::Standalone {
                data_dir: data_dir.path().to_owned(),
            },
        }
    }

    /// Redis settings of this cluster.
    pub fn redis_settings(&self) -> RedisSettings {
        if let Servers::RedisCluster { redis, .. } = &self.servers {
            let nodes: Vec<String> = redis.nodes().iter().map(RedisServer::url).collect();
            return RedisSettings {
                url: nodes[0].clone(),
                cluster_nodes: nodes,
                shards: REDIS_CLUSTER_SHARDS,
                timeout: Duration::from_secs(2),
                pubsub_connections: 2,
                wait_replicas: 0,
                wait_timeout: Duration::from_millis(500),
            };
        }
        RedisSettings {
            url: self.redis().url(),
            cluster_nodes: Vec::new(),
            shards: 1,
            timeout: Duration::from_secs(2),
            pubsub_connections: 2,
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(500),
        }
    }

    /// MongoDB settings of this cluster.
    pub fn mongo_settings(&self) -> MongoSettings {
        MongoSettings {
            url: self.mongo().url().to_owned(),
            db: self.mongo().db().to_owned(),
        }
    }

    /// Starts another gateway node.
    pub async fn start_node(&mut self, name: &str) -> usize {
        self.start_node_with(name, |_| {}).await
    }

    /// Starts another gateway node with adjusted settings.
    pub async fn start_node_with(
        &mut self,
        name: &str,
        adjust: impl FnOnce(&mut Settings),
    ) -> usize {
        let auth = AuthArgs {
            jwt_secret: Some(SECRET.into()),
            ..Default::default()
        }
        .validate(None)
        .expect("auth settings");
        let mut settings = Settings {
            addr: "127.0.0.1:0".parse().expect("addr"),
            mode: self.mode(),
            auth,
            allowed_origins: vec!["http://allowed.example".into()],
            node_id: name.into(),
            max_message_chars: 4000,
            session_queue: 256,
            drain: Duration::from_secs(1),
            send_rate: NonZeroU32::new(200).expect("rate"),
            send_burst: NonZeroU32::new(400).expect("burst"),
            max_sessions_per_user: 300,
            presence: chat_gateway::presence::PresenceSettings {
                ttl: Duration::from_secs(2),
                grace: Duration::from_millis(200),
                tick: Duration::from_millis(100),
            },
            dev: None,
            tls: None,
        };
        adjust(&mut settings);
        let draining = CancellationToken::new();
        let app = Application::build(settings, draining.clone())
            .await
            .expect("gateway starts");
        let port = app.port();
        let task = tokio::spawn(app.run_until_stopped());
        self.nodes.push(Node {
            port,
            draining,
            task: Some(task),
        });
        self.nodes.len() - 1
    }

    /// Starts draining node `i` (what SIGTERM does).
    pub fn drain_node(&self, i: usize) {
        self.nodes[i].draining.cancel();
    }

    /// Waits until node `i` has stopped; returns whether it stopped cleanly.
    pub async fn node_stopped(&mut self, i: usize) -> bool {
        match self.nodes[i].task.take() {
            Some(t) => matches!(t.await, Ok(Ok(()))),
            None => true,
        }
    }

    /// Starts a persister replica with consumer name `consumer`.
    pub async fn start_persister(&mut self, consumer: &str) {
        self.start_persister_with(consumer, |_| {}).await
    }

    /// Starts a persister replica with adjusted settings.
    pub async fn start_persister_with(
        &mut self,
        consumer: &str,
        adjust: impl FnOnce(&mut chat_persister::configuration::Settings),
    ) {
        let mut settings = chat_persister::configuration::Settings {
            redis: self.redis_settings(),
            mongo: self.mongo_settings(),
            mongo_timeout: Duration::from_secs(5),
            consumer: consumer.into(),
            addr: "127.0.0.1:0".parse().expect("addr"),
            worker: chat_persister::worker::WorkerSettings {
                block: Duration::from_millis(200),
                ..Default::default()
            },
        };
        adjust(&mut settings);
        let shutdown = CancellationToken::new();
        let app = chat_persister::startup::Application::build(settings, shutdown.clone())
            .await
            .expect("persister starts");
        let port = app.port();
        let task = tokio::spawn(async move {
            let _ = app.run_until_stopped().await;
        });
        self.persisters.push(PersisterHandle {
            port,
            shutdown,
            task,
        });
    }

    /// Stops every persister replica and waits for them.
    pub async fn stop_persisters(&mut self) {
        for p in self.persisters.drain(..) {
            p.shutdown.cancel();
            let _ = p.task.await;
        }
    }

    /// Node `i` (in standalone mode every index means the one node).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i % self.nodes.len()]
    }

    /// `http://127.0.0.1:PORT/path` on node `i`.
    pub fn url(&self, node: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.node(node).port, path)
    }

    /// A valid token.
    pub fn token(&self, sub: &str, role: Role) -> String {
        self.signer
            .token_for(sub, role, Some(&format!("Name of {sub}")), 3600)
            .expect("sign")
    }

    /// A token with explicit claims.
    pub fn sign(&self, claims: &Claims) -> String {
        self.signer.sign(claims).expect("sign")
    }

    /// Creates (or finds) the chat of a pair as the booking app would.
    pub async fn create_chat(&self, patient: &str, doctor: &str, appointment: &str) -> Chat {
        let resp = self
            .http
            .post(self.url(0, "/api/chats"))
            .bearer_auth(self.token("booking-app", Role::Service))
            .json(&json!({
                "appointment_id": appointment,
                "patient_id": patient,
                "doctor_id": doctor,
                "patient_name": format!("Patient {patient}"),
                "doctor_name": format!("Dr {doctor}"),
            }))
            .send()
            .await
            .expect("create chat");
        assert!(resp.status().is_success(), "create chat: {}", resp.status());
        resp.json().await.expect("chat json")
    }

    /// GET `path` on node `i` as `sub`/`role`, returning status and JSON.
    pub async fn get(&self, node: usize, path: &str, sub: &str, role: Role) -> (u16, Value) {
        let resp = self
            .http
            .get(self.url(node, path))
            .bearer_auth(self.token(sub, role))
            .send()
            .await
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Connects `sub` as `role` to node `i` and reads the `hello`.
    pub async fn connect(&self, node: usize, sub: &str, role: Role) -> Client {
        Client::connect(self.node(node).port, &self.token(sub, role)).await
    }

    /// Polls `check` until it returns `Some`, or panics after [`WAIT`].
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        eventually(what, &mut check).await
    }
}

/// Runs a behaviour test body against both backends: `name::cluster` and
/// `name::standalone` (same test body, two harnesses).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn cluster() {
                    super::$name($crate::helpers::Backend::Cluster).await
                }
                #[tokio::test]
                async fn standalone() {
                    super::$name($crate::helpers::Backend::Standalone).await
                }
                #[tokio::test]
                async fn redis_cluster() {
                    super::$name($crate::helpers::Backend::RedisCluster).await
                }
            }
        )*
    };
}

/// Polls `check` until it returns `Some`, or panics after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, check: &mut F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    chat_testkit::eventually(WAIT, what, check).await
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.draining.cancel();
        }
        for p in &self.persisters {
            p.shutdown.cancel();
        }
    }
}

/// A WebSocket client speaking the contract. Frames that arrive while the test
/// waits for something else are kept, in order, for later `recv` calls.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    buffered: VecDeque<ServerFrame>,
    /// The `hello` frame.
    pub hello: ServerFrame,
    next_id: u64,
}

/// How a connection attempt or a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// Close frame with this code.
    Code(u16),
    /// The connection dropped without a close frame.
    Dropped,
}

impl Client {
    /// Connects with a token in the `Authorization` header.
    pub async fn connect(port: u16, token: &str) -> Self {
        let mut req = format!("ws://127.0.0.1:{port}/ws")
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket upgrade");
        let mut c = Self {
            ws,
            buffered: VecDeque::new(),
            hello: ServerFrame::Pong { id: None },
            next_id: 0,
        };
        c.hello = c.recv().await;
        assert!(
            matches!(c.hello, ServerFrame::Hello { .. }),
            "first frame: {:?}",
            c.hello
        );
        c
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(WsMessage::Text(text.into().into()))
            .await
            .expect("ws send");
    }

    /// Sends a close frame with `code`.
    pub async fn close_with(&mut self, code: u16) {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        self.ws
            .send(WsMessage::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "bye".into(),
            })))
            .await
            .expect("ws close");
    }

    /// Sends any WebSocket message (control frames, raw frames).
    pub async fn send_ws(&mut self, message: WsMessage) {
        self.ws.send(message).await.expect("ws send");
    }

    /// The next WebSocket message of any kind, as it arrived (`None`: the
    /// connection ended).
    pub async fn next_ws(&mut self) -> Option<WsMessage> {
        match tokio::time::timeout(WAIT, self.ws.next()).await {
            Err(_) => panic!("no websocket message within {WAIT:?}"),
            Ok(next) => next.and_then(Result::ok),
        }
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, data: Vec<u8>) {
        self.ws
            .send(WsMessage::Binary(data.into()))
            .await
            .expect("ws send");
    }

    /// Sends a JSON frame.
    pub async fn send_json(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    async fn read_one(&mut self, within: Duration) -> Result<ServerFrame, Closed> {
        loop {
            let msg = match tokio::time::timeout(within, self.ws.next()).await {
                Err(_) => panic!("no frame within {within:?}"),
                Ok(None) => return Err(Closed::Dropped),
                Ok(Some(Err(_))) => return Err(Closed::Dropped),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                WsMessage::Text(t) => {
                    return Ok(serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("bad server frame {t}: {e}")))
                }
                WsMessage::Close(Some(f)) => return Err(Closed::Code(u16::from(f.code))),
                WsMessage::Close(None) => return Err(Closed::Code(u16::from(CloseCode::Status))),
                _ => continue,
            }
        }
    }

    /// The next frame (buffered ones first).
    pub async fn recv(&mut self) -> ServerFrame {
        if let Some(f) = self.buffered.pop_front() {
            return f;
        }
        self.read_one(WAIT).await.expect("session closed")
    }

    /// The first frame matching `pred`, keeping the others for later.
    pub async fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&ServerFrame) -> bool,
    ) -> ServerFrame {
        if let Some(pos) = self.buffered.iter().position(&pred) {
            return self.buffered.remove(pos).expect("buffered");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}");
            let f = self
                .read_one(left)
                .await
                .unwrap_or_else(|c| panic!("session closed ({c:?}) waiting for {what}"));
            if pred(&f) {
                return f;
            }
            self.buffered.push_back(f);
        }
    }

    /// Waits until the server closes the session; returns how.
    pub async fn closed(&mut self) -> Closed {
        loop {
            match self.read_one(WAIT).await {
                Ok(_) => continue,
                Err(c) => return c,
            }
        }
    }

    /// A fresh request id.
    pub fn request_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends a message and returns the acked message (or panics on error).
    pub async fn send_message(&mut self, chat: &str, client_msg_id: &str, body: &str) -> Message {
        match self.try_send_message(chat, client_msg_id, body).await {
            ServerFrame::Ack { message, .. } => message,
            other => panic!("send refused: {other:?}"),
        }
    }

    /// Sends a message; returns the `ack` or `error` reply.
    pub async fn try_send_message(
        &mut self,
        chat: &str,
        client_msg_id: &str,
        body: &str,
    ) -> ServerFrame {
        let id = self.request_id();
        self.send_json(
            json!({"type":"send","id":id,"chat_id":chat,"client_msg_id":client_msg_id,"body":body}),
        )
        .await;
        self.reply_to(id).await
    }

    /// The `ack`/`error`/`pong`/`synced` reply carrying request id `id`.
    pub async fn reply_to(&mut self, id: u64) -> ServerFrame {
        let want = chat_shared::protocol::RequestId::Number(id as i64);
        self.wait_for("reply", move |f| match f {
            ServerFrame::Ack { id: Some(i), .. }
            | ServerFrame::Error { id: Some(i), .. }
            | ServerFrame::Pong { id: Some(i) }
            | ServerFrame::Synced { id: Some(i) } => *i == want,
            _ => false,
        })
        .await
    }

    /// Round-trips a ping: proves the session still serves.
    pub async fn ping(&mut self) {
        let id = self.request_id();
        self.send_json(json!({"type":"ping","id":id})).await;
        assert!(matches!(self.reply_to(id).await, ServerFrame::Pong { .. }));
    }

    /// Waits for a `message` event with this `seq` in this chat.
    pub async fn expect_message(&mut self, chat: &str, seq: u64) -> Message {
        let chat = chat.to_owned();
        match self
            .wait_for("message event", move |f| {
                matches!(f, ServerFrame::Message { message } if message.chat_id.to_string() == chat && message.seq == seq)
            })
            .await
        {
            ServerFrame::Message { message } => message,
            _ => unreachable!(),
        }
    }

    /// Frames received so far and not yet consumed, after a ping round trip
    /// (which flushes everything the server queued before it).
    pub async fn drain(&mut self) -> Vec<ServerFrame> {
        self.ping().await;
        self.buffered.drain(..).collect()
    }
}

/// Tries to upgrade with optional headers; returns the HTTP status of a refusal
/// or 101 on success.
pub async fn upgrade_status(
    port: u16,
    auth: Option<&str>,
    query: &str,
    origin: Option<&str>,
) -> u16 {
    let mut req = format!("ws://127.0.0.1:{port}/ws{query}")
        .into_client_request()
        .expect("request");
    if let Some(a) = auth {
        req.headers_mut()
            .insert("authorization", a.parse().expect("header"));
    }
    if let Some(o) = origin {
        req.headers_mut()
            .insert("origin", o.parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected upgrade failure: {e}"),
    }
}

/// Claims expiring `secs` from now.
pub fn claims(sub: &str, role: Role, secs: i64) -> Claims {
    Claims {
        sub: sub.into(),
        role,
        exp: (Timestamp::now().millis() / 1000 + secs).max(0) as u64,
        name: None,
        iss: None,
        aud: None,
    }
}
