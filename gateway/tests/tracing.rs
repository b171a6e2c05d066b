//! Tracing end to end, without a collector: an in-process OTLP/HTTP receiver
//! stands in for one, `OTEL_EXPORTER_OTLP_ENDPOINT` points at it, and one
//! message sent over a WebSocket must come back as one trace — the gateway's
//! `ws.send`, its `broker.append`, and the persister's `persister.write`,
//! linked only through the `traceparent` stored in the Redis stream entry.
//!
//! Its own test binary, because it owns the process's global subscriber: it
//! initialises telemetry (with the endpoint set) before the harness's
//! `telemetry::init` call, which is then a no-op.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

#[path = "api/helpers.rs"]
mod helpers;

use chat_shared::domain::{ChatId, Role};
use helpers::{Backend, Cluster};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A body no span may ever carry.
const BODY: &str = "confidential-body-5f3a9c";

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    attributes: HashMap<String, String>,
    /// Every string found anywhere in the span (attributes, events, links).
    strings: Vec<String>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn value_text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValueKind::StringValue(s)) => s.clone(),
        Some(AnyValueKind::IntValue(i)) => i.to_string(),
        Some(AnyValueKind::BoolValue(b)) => b.to_string(),
        Some(AnyValueKind::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn texts(kvs: &[KeyValue]) -> impl Iterator<Item = String> + '_ {
    kvs.iter()
        .flat_map(|kv| [kv.key.clone(), value_text(&kv.value)])
}

/// A minimal OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body,
/// answered with an empty (successful) export response.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (spans.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, s.clone(), r.clone()));
            }
        });
        Self {
            port,
            spans,
            requests,
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

/// Serves one keep-alive connection: request after request.
async fn serve(
    mut conn: TcpStream,
    spans: Arc<Mutex<Vec<Span>>>,
    requests: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        requests.lock().unwrap().push(request_line.clone());
        let ok = request_line.starts_with("POST /v1/traces ")
            && match ExportTraceServiceRequest::decode(body.as_slice()) {
                Ok(req) => {
                    spans.lock().unwrap().extend(flatten(&req));
                    true
                }
                Err(_) => false,
            };
        let status = if ok { "200 OK" } else { "400 Bad Request" };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        if conn.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn flatten(req: &ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let service = resource
            .iter()
            .find(|kv| kv.key == "service.name")
            .map(|kv| value_text(&kv.value))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                let mut strings: Vec<String> = texts(&s.attributes).collect();
                strings.push(s.name.clone());
                for e in &s.events {
                    strings.push(e.name.clone());
                    strings.extend(texts(&e.attributes));
                }
                for l in &s.links {
                    strings.extend(texts(&l.attributes));
                }
                if let Some(status) = &s.status {
                    strings.push(status.message.clone());
                }
                strings.extend(texts(resource));
                out.push(Span {
                    service: service.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    attributes: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), value_text(&kv.value)))
                        .collect(),
                    strings,
                });
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `tp` field of the stream entries of `chat`, by event type (`m`/`r`).
async fn stream_traceparents(cluster: &Cluster, chat: ChatId) -> Vec<(String, Option<String>)> {
    let stream = chat_shared::broker::redis::keys::Keyspace::new(1).stream_of(chat);
    let client = redis::Client::open(cluster.redis().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    reply
        .ids
        .iter()
        .map(|e| {
            (
                e.get::<String>("t").unwrap_or_default(),
                e.get::<String>("tp"),
            )
        })
        .collect()
}

/// `00-<trace id>-<span id>-<flags>`, or a panic.
fn trace_id_of(traceparent: &str) -> String {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {traceparent:?}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1].len(), 32);
    assert_eq!(parts[2].len(), 16);
    parts[1].to_owned()
}

/// Follows `parent_span_id` from `start` up to the trace's root; the names on the way.
fn ancestry(spans: &[Span], start: &Span) -> Vec<String> {
    let by_id: HashMap<&str, &Span> = spans
        .iter()
        .filter(|s| s.trace_id == start.trace_id)
        .map(|s| (s.span_id.as_str(), s))
        .collect();
    let mut names = vec![start.name.clone()];
    let mut current = start;
    while !current.parent_span_id.is_empty() {
        let Some(parent) = by_id.get(current.parent_span_id.as_str()) else {
            names.push(format!("<missing {}>", current.parent_span_id));
            break;
        };
        names.push(parent.name.clone());
        current = parent;
        assert!(names.len() < 32, "parent cycle: {names:?}");
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_message_from_the_socket_to_the_store() {
    let receiver = Receiver::start().await;
    // Before anything initialises telemetry: this binary's first (and only
    // effective) init sees the endpoint. Only this test runs in this process.
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_TRACES_SAMPLER",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
    ] {
        std::env::remove_var(var);
    }
    std::env::set_var(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{}", receiver.port),
    );
    chat_shared::telemetry::init("chat-gateway", "warn");
    assert!(chat_shared::telemetry::tracing_enabled());

    // One gateway; the persister starts after the stream has been inspected.
    let mut cluster = Cluster::start_in(Backend::Cluster, 1, false).await;
    let chat = cluster
        .create_chat("p-trace", "d-trace", "appt-trace")
        .await;
    let chat_id = chat.id.to_string();
    let patient_token = cluster.token("p-trace", Role::Patient);
    let mut patient = cluster.connect(0, "p-trace", Role::Patient).await;
    let mut doctor = cluster.connect(0, "d-trace", Role::Doctor).await;
    let message = patient.send_message(&chat_id, "cm-trace-1", BODY).await;
    doctor.expect_message(&chat_id, message.seq).await;
    doctor
        .send_json(json!({"type":"read","chat_id":chat_id,"up_to_seq":message.seq}))
        .await;
    doctor.ping().await;

    // The trace context travels inside the stream entries.
    let entries = stream_traceparents(&cluster, chat.id).await;
    let kinds: Vec<&str> = entries.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(kinds, ["m", "r"], "stream entries: {entries:?}");
    let message_trace = trace_id_of(entries[0].1.as_deref().expect("message entry has tp"));
    let read_trace = trace_id_of(entries[1].1.as_deref().expect("read entry has tp"));
    assert_ne!(message_trace, read_trace, "two frames, two traces");

    cluster.start_persister("persister-trace").await;
    let message_id = message.id.to_string();
    let spans = cluster
        .eventually("the persister's spans are exported", || {
            let receiver = &receiver;
            let message_id = message_id.clone();
            async move {
                chat_shared::telemetry::flush().await;
                let spans = receiver.spans();
                let written = spans.iter().any(|s| {
                    s.name == "persister.write" && s.attr("message_id") == Some(&message_id)
                });
                let read = spans
                    .iter()
                    .any(|s| s.name == "persister.write" && s.attr("event") == Some("read"));
                (written && read).then_some(spans)
            }
        })
        .await;

    // One trace: ws.send → broker.append → persister.write.
    let in_trace =
        |trace: &str| -> Vec<&Span> { spans.iter().filter(|s| s.trace_id == trace).collect() };
    let trace = in_trace(&message_trace);
    let named =
        |name: &str| -> Vec<&Span> { trace.iter().copied().filter(|s| s.name == name).collect() };
    // A new chat's first append asks for the store's floor (`seq_unknown`)
    // and is retried: one failed attempt, then the one that stored.
    let (sends, writes) = (named("ws.send"), named("persister.write"));
    let appends: Vec<&Span> = named("broker.append")
        .into_iter()
        .filter(|s| s.attr("error").is_none())
        .collect();
    assert!(
        named("broker.append")
            .iter()
            .all(|s| s.attr("error").is_none_or(|e| e == "seq_unknown")),
        "{trace:#?}"
    );
    assert_eq!(sends.len(), 1, "ws.send spans in the trace: {trace:#?}");
    assert_eq!(
        appends.len(),
        1,
        "broker.append spans in the trace: {trace:#?}"
    );
    assert_eq!(
        writes.len(),
        1,
        "persister.write spans in the trace: {trace:#?}"
    );
    let (send, append, write) = (sends[0], appends[0], writes[0]);
    assert_eq!(
        ancestry(&spans, write),
        ["persister.write", "broker.append", "ws.send"],
        "the persister's span hangs off the gateway's"
    );
    assert!(send.parent_span_id.is_empty(), "ws.send is the root");
    assert_eq!(
        entries[0]
            .1
            .as_deref()
            .map(|tp| tp.split('-').nth(2).unwrap_or_default()),
        Some(append.span_id.as_str()),
        "the stored traceparent names the append span"
    );

    // What the spans say.
    assert_eq!(send.attr("chat_id"), Some(chat_id.as_str()));
    assert_eq!(send.attr("user_id"), Some("p-trace"));
    assert_eq!(send.attr("role"), Some("patient"));
    assert_eq!(send.attr("outcome"), Some("ack"));
    assert_eq!(send.attr("message_id"), Some(message_id.as_str()));
    assert_eq!(append.attr("event"), Some("message"));
    assert_eq!(append.attr("seq"), Some(message.seq.to_string().as_str()));
    assert_eq!(append.attr("published"), Some("true"));
    assert_eq!(write.attr("chat_id"), Some(chat_id.as_str()));
    assert_eq!(write.attr("seq"), Some(message.seq.to_string().as_str()));
    assert_eq!(write.attr("outcome"), Some("written"));
    assert_eq!(send.service, "chat-gateway");

    // The read mark's trace: ws.read → broker.append → persister.write.
    let read_trace = in_trace(&read_trace);
    let read_write = read_trace
        .iter()
        .find(|s| s.name == "persister.write")
        .expect("persister.write in the read's trace");
    assert_eq!(
        ancestry(&spans, read_write),
        ["persister.write", "broker.append", "ws.read"]
    );
    assert_eq!(read_write.attr("event"), Some("read"));

    // Never the body, never a token — in any span, attribute or event.
    for s in &spans {
        for text in &s.strings {
            assert!(
                !text.contains(BODY),
                "span {} carries the body: {text:?}",
                s.name
            );
            assert!(
                !text.contains(&patient_token),
                "span {} carries a token",
                s.name
            );
        }
    }

    // The stand-in collector saw OTLP/HTTP protobuf posts only.
    let requests = receiver.requests.lock().unwrap().clone();
    assert!(
        requests.iter().all(|r| r.starts_with("POST /v1/traces ")),
        "{requests:?}"
    );

    // What main does before exit: flush and stop, bounded.
    chat_shared::telemetry::shutdown().await;
    drop(cluster);
}
