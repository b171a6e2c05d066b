//! Micro-benchmarks of the per-frame protocol work on the hot path: parsing a
//! client frame, serializing a server frame, and rendering a message from its
//! pre-serialized template once the broker assigned its `seq`.
//!
//! Run: `cargo bench -p chat-shared --bench protocol` (add `-- --quick` for a
//! short run). Figures: `loadtest/README.md`, "Micro-benchmarks".

use chat_shared::broker::template::{to_message, MessageTemplate};
use chat_shared::broker::MessageDraft;
use chat_shared::domain::{ChatId, ClientMsgId, MessageId, Role, SessionId, Timestamp, UserId};
use chat_shared::protocol::{ClientFrame, RequestId, ServerFrame};
use criterion::{Criterion, Throughput};
use std::hint::black_box;

/// `MAX_MESSAGE_CHARS` default.
const MAX_CHARS: usize = 4000;

/// A typical chat line (~100 characters, one escaped quote, some non-ASCII).
const BODY: &str = "Guten Tag, Frau Doktor! Ich habe seit gestern \"leichte\" Kopfschmerzen und etwas Fieber (38,2 °C).";

fn draft() -> MessageDraft {
    MessageDraft {
        id: MessageId::generate(),
        chat_id: ChatId::generate(),
        sender_id: UserId::parse("patient-000123").expect("a valid user id"),
        sender_role: Role::Patient,
        body: BODY.to_owned(),
        client_msg_id: ClientMsgId::parse("c-0000000042").expect("a valid client message id"),
        created_at: Timestamp::now(),
    }
}

fn client_frame_parse(c: &mut Criterion) {
    let chat = ChatId::generate();
    let send = serde_json::json!({
        "type": "send", "id": 7, "chat_id": chat.to_string(),
        "client_msg_id": "c-0000000042", "body": BODY,
    })
    .to_string();
    let sync_chats: serde_json::Map<String, serde_json::Value> = (0..10u64)
        .map(|i| {
            (
                ChatId::generate().to_string(),
                serde_json::Value::from(i * 17),
            )
        })
        .collect();
    let sync = serde_json::json!({ "type": "sync", "id": "s1", "chats": sync_chats }).to_string();
    let ping = r#"{"type":"ping","id":1}"#.to_owned();
    let invalid = r#"{"type":"send","id":3,"chat_id":"nope","client_msg_id":"c","body":"x"}"#;

    let mut g = c.benchmark_group("client_frame_parse");
    for (name, text) in [
        ("send", send.as_str()),
        ("sync_10_chats", sync.as_str()),
        ("ping", ping.as_str()),
        ("invalid_chat_id", invalid),
    ] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let parsed = ClientFrame::parse(black_box(text), MAX_CHARS);
                black_box(parsed.is_ok())
            })
        });
    }
    g.finish();
}

fn server_frame_serialize(c: &mut Criterion) {
    let message = to_message(&draft(), 42);
    let ack = ServerFrame::Ack {
        id: Some(RequestId::Number(7)),
        message: message.clone(),
    };
    let event = ServerFrame::Message { message };
    let hello = ServerFrame::Hello {
        user_id: UserId::parse("patient-000123").expect("a valid user id"),
        role: Role::Patient,
        node: "gw-1".to_owned(),
        session_id: SessionId::generate(),
        server_time: Timestamp::now(),
    };
    let pong = ServerFrame::Pong {
        id: Some(RequestId::Number(1)),
    };

    let mut g = c.benchmark_group("server_frame_serialize");
    for (name, frame) in [
        ("ack", &ack),
        ("message", &event),
        ("hello", &hello),
        ("pong", &pong),
    ] {
        g.throughput(Throughput::Bytes(frame.to_json().len() as u64));
        g.bench_function(name, |b| b.iter(|| black_box(black_box(frame).to_json())));
    }
    g.finish();
}

fn message_template(c: &mut Criterion) {
    let draft = draft();
    let template = MessageTemplate::new(&draft).expect("a message serializes");
    let mut g = c.benchmark_group("message_template");
    g.throughput(Throughput::Bytes(template.render(42).len() as u64));
    g.bench_function("new", |b| {
        b.iter(|| black_box(MessageTemplate::new(black_box(&draft)).is_ok()))
    });
    g.bench_function("render", |b| {
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            black_box(template.render(black_box(seq)))
        })
    });
    // What rendering saves: serializing the whole message once `seq` is known.
    g.bench_function("serialize_whole_message", |b| {
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            black_box(serde_json::to_string(&to_message(black_box(&draft), seq)).ok())
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    client_frame_parse(&mut c);
    server_frame_serialize(&mut c);
    message_template(&mut c);
    c.final_summary();
}
