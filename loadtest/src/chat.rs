//! `chat`: P patient–doctor pairs across the gateway nodes send at a fixed total
//! rate for a fixed time, open-loop.
//!
//! Each of the 2·P users sends every `2P/R` seconds, the users staggered by
//! `1/R`, so the whole run is one evenly spaced schedule of R sends per second.
//! A send is never held back waiting for an earlier ack, and its body carries
//! its *scheduled* time (µs since the run's epoch on this process's monotonic
//! clock): when the generator falls behind, the delay counts as latency instead
//! of disappearing (no coordinated omission). Ack latency is scheduled time →
//! `ack` received by the sender; delivery latency is scheduled time → `message`
//! received by the peer, on the same clock. The patient of pair `i` is on node
//! `i`, the doctor on node `i + 1`, so with several nodes every message crosses
//! the broker.

use crate::client::{self, Ws};
use crate::error::{Error, Result};
use crate::idle::{sleep_capped, stopped};
use crate::stats::{Errors, Latency, LatencySummary};
use crate::target::Target;
use chat_shared::domain::{ChatId, Role};
use chat_shared::protocol::{Message, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What to run.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Patient–doctor pairs (one chat each).
    pub pairs: usize,
    /// Total sends per second over all users.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// After sending, wait at most this long for outstanding acks and deliveries.
    pub drain: Duration,
    /// Prefix of the user ids.
    pub prefix: String,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    /// Pairs.
    pub pairs: usize,
    /// Gateway nodes.
    pub nodes: usize,
    /// Asked-for sends per second.
    pub target_rate: f64,
    /// Sending time, seconds.
    pub duration_seconds: f64,
    /// Send frames written.
    pub sent: u64,
    /// `ack` frames received.
    pub acked: u64,
    /// `message` frames received by the peer of the sender.
    pub delivered: u64,
    /// Acks per second of sending time.
    pub acks_per_second: f64,
    /// Deliveries per second of sending time.
    pub delivered_per_second: f64,
    /// Scheduled send → ack.
    pub ack_latency: LatencySummary,
    /// Scheduled send → peer's receipt.
    pub delivery_latency: LatencySummary,
    /// Worst lag of a send behind its schedule (the generator's own delay), ms.
    pub max_send_lag_ms: f64,
    /// `error` frames and failures, total.
    pub errors: u64,
    /// Sessions that ended before the run did.
    pub disconnects: u64,
    /// Errors by kind.
    pub error_kinds: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    delivered: AtomicU64,
    disconnects: AtomicU64,
    max_lag_us: AtomicU64,
}

/// One side of one chat.
struct User {
    index: usize,
    chat: ChatId,
    ws: Ws,
}

/// Runs the scenario; nothing outlives `deadline`.
pub async fn run(target: &Target, opts: &ChatOptions, deadline: Instant) -> Result<ChatReport> {
    if opts.pairs == 0 || opts.rate <= 0.0 || !opts.rate.is_finite() {
        return Err(Error::new("chat: pairs and rate must be positive"));
    }
    let (users, chats) = setup_pairs(target, opts.pairs, &opts.prefix).await?;
    let tokens = target.tokens(&users).await?;
    let mut sessions = Vec::with_capacity(users.len());
    for (u, token) in tokens.iter().enumerate() {
        let (pair, side) = (u / 2, u % 2);
        let ws = target.connect(pair + side, u, token).await?;
        sessions.push(User {
            index: u,
            chat: chats[pair],
            ws,
        });
    }

    let n_users = sessions.len();
    let period = Duration::from_secs_f64(n_users as f64 / opts.rate);
    let epoch = Instant::now();
    let start = epoch + Duration::from_millis(200);
    let end = start + opts.duration;
    if end > deadline {
        return Err(Error::new(
            "chat: --duration does not fit in --max-duration",
        ));
    }
    let counters = Arc::new(Counters::default());
    let errors = Arc::new(Errors::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = Vec::with_capacity(n_users);
    let mut writers = Vec::with_capacity(n_users);
    for user in sessions {
        let (sink, stream) = user.ws.split();
        let first = start + Duration::from_secs_f64(user.index as f64 / opts.rate);
        writers.push(tokio::spawn(write_loop(
            sink,
            user.chat,
            format!("{}-{}", opts.prefix, user.index),
            Schedule {
                epoch,
                first,
                period,
                end,
            },
            counters.clone(),
            errors.clone(),
            stop_rx.clone(),
        )));
        readers.push(tokio::spawn(read_loop(
            stream,
            users[user.index].0.clone(),
            epoch,
            counters.clone(),
            errors.clone(),
            stop_rx.clone(),
        )));
    }

    sleep_capped(end.saturating_duration_since(Instant::now()), deadline).await;
    // Drain: every send answered (ack or error) and every ack delivered.
    let drain_until = (Instant::now() + opts.drain).min(deadline);
    loop {
        let sent = counters.sent.load(Ordering::Relaxed);
        let acked = counters.acked.load(Ordering::Relaxed);
        let answered = acked + counters.refused.load(Ordering::Relaxed);
        let delivered = counters.delivered.load(Ordering::Relaxed);
        if (answered >= sent && delivered >= acked) || Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let mut ack_latency = Latency::new();
    let mut delivery_latency = Latency::new();
    for r in readers {
        if let Ok(Ok((a, d))) = tokio::time::timeout(Duration::from_secs(5), r).await {
            ack_latency.merge(&a);
            delivery_latency.merge(&d);
        }
    }
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
    }

    let secs = opts.duration.as_secs_f64().max(1e-9);
    let acked = counters.acked.load(Ordering::Relaxed);
    let delivered = counters.delivered.load(Ordering::Relaxed);
    Ok(ChatReport {
        pairs: opts.pairs,
        nodes: target.gateways().len(),
        target_rate: opts.rate,
        duration_seconds: opts.duration.as_secs_f64(),
        sent: counters.sent.load(Ordering::Relaxed),
        acked,
        delivered,
        acks_per_second: acked as f64 / secs,
        delivered_per_second: delivered as f64 / secs,
        ack_latency: ack_latency.summary(),
        delivery_latency: delivery_latency.summary(),
        max_send_lag_ms: counters.max_lag_us.load(Ordering::Relaxed) as f64 / 1000.0,
        errors: errors.total(),
        disconnects: counters.disconnects.load(Ordering::Relaxed),
        error_kinds: errors.snapshot(),
    })
}

/// The users (`2·pairs`: patient of pair i at `2i`, doctor at `2i + 1`) and the
/// chat of each pair, created through the API.
pub(crate) async fn setup_pairs(
    target: &Target,
    pairs: usize,
    prefix: &str,
) -> Result<(Vec<(String, Role)>, Vec<ChatId>)> {
    let mut users = Vec::with_capacity(pairs * 2);
    let mut pair_ids = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let (p, d) = (format!("{prefix}-p{i}"), format!("{prefix}-d{i}"));
        users.push((p.clone(), Role::Patient));
        users.push((d.clone(), Role::Doctor));
        pair_ids.push((p, d));
    }
    let chats = target.create_chats(&pair_ids).await?;
    Ok((users, chats.into_iter().map(|c| c.id).collect()))
}

#[derive(Clone, Copy)]
struct Schedule {
    epoch: Instant,
    first: Instant,
    period: Duration,
    end: Instant,
}

type Sink = futures_util::stream::SplitSink<Ws, tokio_tungstenite::tungstenite::Message>;
type Stream = futures_util::stream::SplitStream<Ws>;

async fn write_loop(
    mut sink: Sink,
    chat: ChatId,
    id_prefix: String,
    s: Schedule,
    counters: Arc<Counters>,
    errors: Arc<Errors>,
    mut stop: watch::Receiver<bool>,
) {
    let mut k: u32 = 0;
    loop {
        let at = s.first + s.period * k;
        if at >= s.end || *stop.borrow() {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let lag = Instant::now().saturating_duration_since(at);
        counters
            .max_lag_us
            .fetch_max(lag.as_micros() as u64, Ordering::Relaxed);
        let scheduled_us = at.duration_since(s.epoch).as_micros();
        let frame = serde_json::json!({
            "type": "send",
            "id": k,
            "chat_id": chat,
            "client_msg_id": format!("{id_prefix}-{k}"),
            "body": format!("lt {scheduled_us}"),
        });
        if let Err(e) = sink.send(client::text(&frame)).await {
            errors.add(format!("send: {e}"));
            break;
        }
        counters.sent.fetch_add(1, Ordering::Relaxed);
        k += 1;
    }
    stopped(&mut stop).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
}

/// The scheduled time carried in a body written by [`write_loop`].
fn scheduled_at(epoch: Instant, m: &Message) -> Option<Instant> {
    let us: u64 = m.body.strip_prefix("lt ")?.parse().ok()?;
    Some(epoch + Duration::from_micros(us))
}

async fn read_loop(
    mut stream: Stream,
    me: String,
    epoch: Instant,
    counters: Arc<Counters>,
    errors: Arc<Errors>,
    mut stop: watch::Receiver<bool>,
) -> (Latency, Latency) {
    let mut acks = Latency::new();
    let mut deliveries = Latency::new();
    loop {
        let msg = tokio::select! {
            _ = stopped(&mut stop) => break,
            m = stream.next() => m,
        };
        let frame = match msg {
            Some(Ok(m)) => client::classify(m),
            Some(Err(e)) => Err(Error::new(format!("session: {e}"))),
            None => Err(Error::new("session: closed")),
        };
        let now = Instant::now();
        match frame {
            Ok(Some(ServerFrame::Ack { message, .. })) => {
                counters.acked.fetch_add(1, Ordering::Relaxed);
                if let Some(at) = scheduled_at(epoch, &message) {
                    acks.record(now.saturating_duration_since(at));
                }
            }
            Ok(Some(ServerFrame::Message { message })) => {
                if message.sender_id.as_str() != me {
                    if let Some(at) = scheduled_at(epoch, &message) {
                        counters.delivered.fetch_add(1, Ordering::Relaxed);
                        deliveries.record(now.saturating_duration_since(at));
                    }
                }
            }
            Ok(Some(ServerFrame::Error { code, .. })) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                errors.add(format!("error frame: {}", code.as_str()));
            }
            Ok(_) => {}
            Err(e) => {
                if !*stop.borrow() {
                    counters.disconnects.fetch_add(1, Ordering::Relaxed);
                    errors.add(e.to_string());
                }
                break;
            }
        }
    }
    (acks, deliveries)
}
