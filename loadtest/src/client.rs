//! One WebSocket session: connect from a chosen source address, wait for
//! `hello`, and read server frames.

use crate::error::{Context, Error, Result};
use chat_shared::protocol::ServerFrame;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// An open session.
pub type Ws = WebSocketStream<TcpStream>;

/// How long a connection (TCP, upgrade and `hello`) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to `ws://{addr}/ws` with the token in `access_token`, binding the
/// local end to `source` when given (so that many connections do not exhaust
/// one address's ephemeral ports), and waits for the `hello` frame.
pub async fn connect(addr: &str, source: Option<IpAddr>, token: &str) -> Result<Ws> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(addr, source, token))
        .await
        .map_err(|_| Error::new("connect: timed out"))?
}

async fn connect_inner(addr: &str, source: Option<IpAddr>, token: &str) -> Result<Ws> {
    let remote = tokio::net::lookup_host(addr)
        .await
        .context("connect: resolving the gateway")?
        .next()
        .ok_or_else(|| Error::new(format!("connect: {addr} resolves to nothing")))?;
    let socket = if remote.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("connect: socket")?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .context("connect: bind")?;
    }
    let stream = socket.connect(remote).await.context("connect: tcp")?;
    stream.set_nodelay(true).context("connect: nodelay")?;
    let url = format!("ws://{addr}/ws?access_token={token}");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| Error::new(format!("connect: upgrade: {}", describe(&e))))?;
    loop {
        match next_frame(&mut ws).await? {
            Some(ServerFrame::Hello { .. }) => return Ok(ws),
            Some(other) => {
                return Err(Error::new(format!(
                    "connect: first frame was `{}`, not hello",
                    other.kind()
                )))
            }
            None => continue,
        }
    }
}

/// A short description of a WebSocket error (for an HTTP refusal, its status).
fn describe(e: &tokio_tungstenite::tungstenite::Error) -> String {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => format!("HTTP {}", resp.status()),
        other => other.to_string(),
    }
}

/// Reads the next message: `Ok(Some(frame))` for a server frame,
/// `Ok(None)` for anything that is not one (ping, pong, unparsable text), and
/// an error when the session ended (with the close code when there was one).
pub async fn next_frame(ws: &mut Ws) -> Result<Option<ServerFrame>> {
    use futures_util::StreamExt;
    match ws.next().await {
        Some(Ok(msg)) => classify(msg),
        Some(Err(e)) => Err(Error::new(format!("session: {}", describe(&e)))),
        None => Err(Error::new("session: closed")),
    }
}

/// Turns one WebSocket message into a server frame (see [`next_frame`]).
pub fn classify(msg: WsMessage) -> Result<Option<ServerFrame>> {
    match msg {
        WsMessage::Text(text) => Ok(serde_json::from_str(text.as_str()).ok()),
        WsMessage::Close(frame) => Err(Error::new(match frame {
            Some(f) => format!("session: closed with {}", u16::from(f.code)),
            None => "session: closed".to_owned(),
        })),
        _ => Ok(None),
    }
}

/// A text frame from a JSON value.
pub fn text(value: &serde_json::Value) -> WsMessage {
    WsMessage::text(value.to_string())
}
