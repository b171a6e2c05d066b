//! Micro-benchmark of the hub's fan-out: one broker event delivered to N local
//! sessions of a user (the `message` frame's chat and `seq` are read once, then
//! the shared bytes are queued on every session). Only `Hub::deliver` is timed;
//! the queues are drained outside the measurement.
//!
//! Run: `cargo bench -p chat-gateway --bench fanout` (add `-- --quick` for a
//! short run). Figures: `loadtest/README.md`, "Micro-benchmarks".

use chat_gateway::hub::{Hub, SessionHandle};
use chat_gateway::metrics::GatewayMetrics;
use chat_gateway::session::outbound::{queue, QueueReceiver};
use chat_shared::broker::template::to_message;
use chat_shared::broker::{Envelope, Inbox, MessageDraft};
use chat_shared::domain::{ChatId, ClientMsgId, MessageId, Role, SessionId, Timestamp, UserId};
use chat_shared::protocol::ServerFrame;
use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A `message` event as the broker hands it to the hub.
fn message_event() -> Envelope {
    let draft = MessageDraft {
        id: MessageId::generate(),
        chat_id: ChatId::generate(),
        sender_id: UserId::parse("doctor-000042").expect("a valid user id"),
        sender_role: Role::Doctor,
        body: "Bitte messen Sie heute Abend noch einmal Fieber und melden Sie sich morgen früh."
            .into(),
        client_msg_id: ClientMsgId::parse("c-0000000007").expect("a valid client message id"),
        created_at: Timestamp::now(),
    };
    Envelope::new(
        None,
        &ServerFrame::Message {
            message: to_message(&draft, 42),
        },
    )
}

/// A hub holding `n` sessions of one user, and their queues' receiving ends.
fn hub_with_sessions(user: &UserId, n: usize) -> (Hub, Vec<QueueReceiver>) {
    let hub = Hub::new(GatewayMetrics::new().expect("metrics register"));
    let receivers = (0..n)
        .map(|_| {
            let (tx, rx) = queue(256);
            hub.register(
                user,
                SessionHandle {
                    id: SessionId::generate(),
                    outbound: tx,
                    slow: CancellationToken::new(),
                    role: Role::Patient,
                },
            );
            rx
        })
        .collect();
    (hub, receivers)
}

fn fan_out(c: &mut Criterion) {
    let user = UserId::parse("patient-000123").expect("a valid user id");
    let event = message_event();
    let mut g = c.benchmark_group("hub_fan_out");
    for n in [1usize, 10, 100, 1000] {
        let (hub, mut receivers) = hub_with_sessions(&user, n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("message_event", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let envelope = event.clone();
                    let start = Instant::now();
                    hub.deliver(black_box(&user), envelope);
                    timed += start.elapsed();
                    for rx in &mut receivers {
                        while let Ok(item) = rx.try_recv() {
                            black_box(item);
                        }
                    }
                }
                timed
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    fan_out(&mut c);
    c.final_summary();
}
