//! Clients for sessions that are expected to break.
//!
//! [`Conn`] speaks the contract like the api suite's `Client`, but a session
//! that ends (close frame, reset, killed server) is a value, not a panic, and
//! every `message` event it ever received is kept in arrival order, so a test
//! can check exactly-once, in-order delivery across crashes and resumes.
//!
//! [`Stalled`] upgrades by hand over a socket with a tiny receive buffer and
//! then never reads: the slowest possible consumer.

use crate::harness::WAIT;
use chat_shared::protocol::{ErrorCode, Message, RequestId, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Close frame with this code.
    Code(u16),
    /// The connection dropped without a close frame.
    Dropped,
}

/// Tries to upgrade with a bearer token: the HTTP status of a refusal, or 101.
pub async fn upgrade_status(port: u16, token: &str) -> u16 {
    let mut req = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected upgrade failure: {e}"),
    }
}

/// A WebSocket session that may break at any time.
pub struct Conn {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The node named in `hello`.
    pub node: String,
    /// Every `message` event received, in arrival order.
    pub received: Vec<Message>,
    next_id: u64,
    ended: Option<Closed>,
}

impl Conn {
    /// Connects with a bearer token and reads the `hello`.
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
            node: String::new(),
            received: Vec::new(),
            next_id: 0,
            ended: None,
        };
        match c.read(WAIT).await {
            Ok(Some(ServerFrame::Hello { node, .. })) => c.node = node,
            other => panic!("expected hello, got {other:?}"),
        }
        c
    }

    /// How the session ended, if it did.
    pub fn ended(&self) -> Option<Closed> {
        self.ended
    }

    /// Reads one frame: `Ok(None)` if none arrived within `within`. `message`
    /// events are recorded in [`Conn::received`] as they pass.
    pub async fn read(&mut self, within: Duration) -> Result<Option<ServerFrame>, Closed> {
        if let Some(c) = &self.ended {
            return Err(*c);
        }
        let deadline = Instant::now() + within;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(n) => n,
            };
            let ended = match next {
                None | Some(Err(_)) => Closed::Dropped,
                Some(Ok(WsMessage::Text(t))) => {
                    let frame: ServerFrame = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("bad server frame {t}: {e}"));
                    if let ServerFrame::Message { message } = &frame {
                        self.received.push(message.clone());
                    }
                    return Ok(Some(frame));
                }
                Some(Ok(WsMessage::Close(Some(f)))) => Closed::Code(u16::from(f.code)),
                Some(Ok(WsMessage::Close(None))) => Closed::Code(u16::from(CloseCode::Status)),
                Some(Ok(_)) => continue,
            };
            self.ended = Some(ended);
            return Err(ended);
        }
    }

    /// Sends a JSON frame.
    pub async fn send_json(&mut self, v: Value) -> Result<(), Closed> {
        if let Some(c) = &self.ended {
            return Err(*c);
        }
        if self
            .ws
            .send(WsMessage::Text(v.to_string().into()))
            .await
            .is_err()
        {
            self.ended = Some(Closed::Dropped);
            return Err(Closed::Dropped);
        }
        Ok(())
    }

    /// Sends `frame` with a fresh request id and returns the reply carrying it
    /// (`ack`, `error`, `pong` or `synced`). Panics if none comes within [`WAIT`].
    pub async fn request(&mut self, mut frame: Value) -> Result<ServerFrame, Closed> {
        self.next_id += 1;
        let id = self.next_id;
        frame["id"] = json!(id);
        self.send_json(frame).await?;
        let want = RequestId::Number(id as i64);
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no reply to request {id} within {WAIT:?}");
            match self.read(left).await? {
                Some(
                    f @ (ServerFrame::Ack { id: Some(_), .. }
                    | ServerFrame::Error { id: Some(_), .. }
                    | ServerFrame::Pong { id: Some(_) }
                    | ServerFrame::Synced { id: Some(_) }),
                ) if reply_id(&f) == Some(&want) => return Ok(f),
                _ => continue,
            }
        }
    }

    /// Sends a message; the `ack` or `error` reply.
    pub async fn send_message(
        &mut self,
        chat: &str,
        client_msg_id: &str,
        body: &str,
    ) -> Result<ServerFrame, Closed> {
        self.request(
            json!({"type":"send","chat_id":chat,"client_msg_id":client_msg_id,"body":body}),
        )
        .await
    }

    /// Sends until acked, retrying the same `client_msg_id` while the broker is
    /// `unavailable` (what a client does during an outage). Panics on any other
    /// refusal or if no ack comes within [`WAIT`].
    pub async fn send_until_acked(
        &mut self,
        chat: &str,
        client_msg_id: &str,
        body: &str,
    ) -> Message {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.send_message(chat, client_msg_id, body).await {
                Ok(ServerFrame::Ack { message, .. }) => return message,
                Ok(ServerFrame::Error {
                    code: ErrorCode::Unavailable,
                    ..
                }) => {}
                other => panic!("send {client_msg_id}: {other:?}"),
            }
            assert!(
                Instant::now() < deadline,
                "send {client_msg_id} not acked within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `sync` of one chat after `after`; returns once `synced` arrived.
    pub async fn sync(&mut self, chat: &str, after: u64) -> Result<(), Closed> {
        match self
            .request(json!({"type":"sync","chats":{ chat: after }}))
            .await?
        {
            ServerFrame::Synced { .. } => Ok(()),
            other => panic!("sync answered {other:?}"),
        }
    }

    /// A ping round trip: everything queued before it has then been received.
    pub async fn ping(&mut self) -> Result<(), Closed> {
        match self.request(json!({"type":"ping"})).await? {
            ServerFrame::Pong { .. } => Ok(()),
            other => panic!("ping answered {other:?}"),
        }
    }

    /// Reads until a `message` with this `seq` in this chat has been received.
    /// Panics if it does not come within [`WAIT`].
    pub async fn wait_for_seq(&mut self, chat: &str, seq: u64) -> Result<(), Closed> {
        let deadline = Instant::now() + WAIT;
        while !self.has(chat, seq) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "seq {seq} of {chat} not received within {WAIT:?}"
            );
            self.read(left).await?;
        }
        Ok(())
    }

    /// Reads until the session ends; panics if it is still open after `within`.
    pub async fn closed_within(&mut self, within: Duration) -> Closed {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "session still open after {within:?}");
            if let Err(c) = self.read(left).await {
                return c;
            }
        }
    }

    /// Whether a `message` with this `seq` in this chat was received.
    pub fn has(&self, chat: &str, seq: u64) -> bool {
        self.received
            .iter()
            .any(|m| m.seq == seq && m.chat_id.to_string() == chat)
    }

    /// The `seq`s received in `chat`, in arrival order.
    pub fn seqs(&self, chat: &str) -> Vec<u64> {
        self.received
            .iter()
            .filter(|m| m.chat_id.to_string() == chat)
            .map(|m| m.seq)
            .collect()
    }
}

fn reply_id(f: &ServerFrame) -> Option<&RequestId> {
    match f {
        ServerFrame::Ack { id, .. }
        | ServerFrame::Error { id, .. }
        | ServerFrame::Pong { id }
        | ServerFrame::Synced { id } => id.as_ref(),
        _ => None,
    }
}

/// A client that upgrades and then never reads a byte.
pub struct Stalled {
    stream: TcpStream,
    /// The client's local port (to find the connection in `/proc/net/tcp`).
    pub local_port: u16,
}

impl Stalled {
    /// Upgrades by hand over a socket whose receive buffer is as small as the
    /// kernel allows, reading the 101 response byte by byte (so no frame byte
    /// is consumed), then stops reading.
    pub async fn connect(port: u16, token: &str) -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut stream = socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .expect("connect");
        let local_port = stream.local_addr().expect("local addr").port();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("upgrade request");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
                .await
                .expect("upgrade response in time")
                .expect("upgrade response");
            assert_eq!(n, 1, "connection closed during upgrade");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        Self { stream, local_port }
    }

    /// Starts reading at last: every frame the server managed to queue, then
    /// how the session ended (close code, or dropped without a close frame).
    pub async fn read_to_end(self) -> (usize, Closed) {
        let mut ws = WebSocketStream::from_raw_socket(self.stream, WsRole::Client, None).await;
        let mut frames = 0;
        let deadline = Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, ws.next())
                .await
                .expect("stalled session still open after reading everything");
            match next {
                None | Some(Err(_)) => return (frames, Closed::Dropped),
                Some(Ok(WsMessage::Close(Some(f)))) => {
                    return (frames, Closed::Code(u16::from(f.code)))
                }
                Some(Ok(WsMessage::Close(None))) => {
                    return (frames, Closed::Code(u16::from(CloseCode::Status)))
                }
                Some(Ok(_)) => frames += 1,
            }
        }
    }
}

/// TCP state of the server side of a loopback connection (`/proc/net/tcp`
/// `st` field: 1 = ESTABLISHED), or `None` once the socket is gone.
pub fn server_socket_state(server_port: u16, client_port: u16) -> Option<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port_of = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 3 && port_of(f[1]) == Some(server_port) && port_of(f[2]) == Some(client_port))
            .then(|| u8::from_str_radix(f[3], 16).expect("tcp state"))
    })
}
