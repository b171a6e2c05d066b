//! The WebSocket upgrade and the frames on the wire: what a client sees below
//! the protocol's JSON — where upgrades are accepted, which HTTP answers the
//! refusals get, control frames, and bytes that arrive with the upgrade.

use crate::helpers::{Client, Closed, Cluster, WAIT};
use chat_shared::domain::Role;
use chat_shared::protocol::ServerFrame;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

#[tokio::test]
async fn an_upgrade_to_any_other_path_is_refused_with_404_and_a_json_error() {
    let cluster = Cluster::start_with(1, false).await;
    let token = cluster.token("pat-path", Role::Patient);
    let (status, body) = refusal(&cluster, "/api/chats", Some(&token)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

/// The HTTP status and JSON body of an upgrade the server refuses. Sent with
/// reqwest (a WebSocket client's handshake reads only the head), headers as a
/// browser's upgrade request.
async fn refusal(cluster: &Cluster, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = cluster
        .http
        .get(cluster.url(0, path))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13");
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("an HTTP answer");
    let status = resp.status().as_u16();
    let body = resp.json().await.expect("a JSON error body");
    (status, body)
}

#[tokio::test]
async fn a_refused_upgrade_carries_the_contract_error_body() {
    let cluster = Cluster::start_with(1, false).await;
    let (status, body) = refusal(&cluster, "/ws?access_token=not-a-token", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn a_plain_get_of_the_websocket_endpoint_is_refused_with_400_after_the_token_checks() {
    let cluster = Cluster::start_with(1, false).await;
    let (status, body) = cluster.get(0, "/ws", "pat-plain", Role::Patient).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid");
    let resp = cluster
        .http
        .get(cluster.url(0, "/ws"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (status, _) = cluster.get(0, "/ws", "admin-plain", Role::Admin).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_ping_control_frame_is_answered_with_a_pong_carrying_its_payload() {
    let cluster = Cluster::start_with(1, false).await;
    let mut c = cluster.connect(0, "pat-ping", Role::Patient).await;
    c.send_ws(WsMessage::Ping(b"are you there".to_vec().into()))
        .await;
    loop {
        match c.next_ws().await {
            Some(WsMessage::Pong(payload)) => {
                assert_eq!(&payload[..], b"are you there");
                break;
            }
            Some(WsMessage::Text(_)) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    // The session goes on.
    c.ping().await;
}

#[tokio::test]
async fn a_message_sent_in_fragments_is_handled_as_one_frame() {
    let cluster = Cluster::start_with(1, false).await;
    let mut c = cluster.connect(0, "pat-frag", Role::Patient).await;
    let json = br#"{"type":"ping","id":41}"#;
    let (a, b) = json.split_at(10);
    c.send_ws(WsMessage::Frame(Frame::message(
        a.to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await;
    c.send_ws(WsMessage::Frame(Frame::message(
        b.to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await;
    assert!(matches!(
        c.reply_to(41).await,
        ServerFrame::Pong { id: Some(_) }
    ));
}

#[tokio::test]
async fn text_that_is_not_utf8_closes_the_session_with_1007() {
    let cluster = Cluster::start_with(1, false).await;
    let mut c = cluster.connect(0, "pat-utf8", Role::Patient).await;
    c.send_ws(WsMessage::Frame(Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        OpCode::Data(Data::Text),
        true,
    )))
    .await;
    assert_eq!(c.closed().await, Closed::Code(1007));
    // The node keeps serving.
    Client::connect(
        cluster.node(0).port,
        &cluster.token("pat-utf8", Role::Patient),
    )
    .await;
}

#[tokio::test]
async fn frames_sent_together_with_the_upgrade_request_are_not_lost() {
    let cluster = Cluster::start_with(1, false).await;
    let token = cluster.token("pat-eager", Role::Patient);
    let mut tcp = TcpStream::connect(("127.0.0.1", cluster.node(0).port))
        .await
        .unwrap();
    // One write: the upgrade request and, right behind it, a masked text frame.
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
    .into_bytes();
    let mut frame = Frame::message(
        br#"{"type":"ping","id":7}"#.to_vec(),
        OpCode::Data(Data::Text),
        true,
    );
    // Masked, as a client must (the key is applied when formatting).
    frame.header_mut().mask = Some([7, 1, 9, 3]);
    frame.format(&mut bytes).unwrap();
    tcp.write_all(&bytes).await.unwrap();

    // Read the 101 head; whatever follows it is the first WebSocket bytes.
    let mut head = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed before the upgrade response");
        head.extend_from_slice(&chunk[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).to_string();
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{text}"
    );
    let mut ws =
        WebSocketStream::from_partially_read(tcp, head[end..].to_vec(), WsRole::Client, None).await;
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WsMessage::Text(t) = msg {
            let frame: ServerFrame = serde_json::from_str(t.as_str()).unwrap();
            kinds.push(match frame {
                ServerFrame::Hello { .. } => "hello",
                ServerFrame::Pong { id: Some(_) } => "pong",
                _ => "other",
            });
        }
    }
    assert_eq!(kinds, ["hello", "pong"]);
    ws.close(None).await.unwrap();
}
