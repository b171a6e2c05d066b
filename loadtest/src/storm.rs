//! `storm`: N clients (N/2 patient–doctor pairs) drop at once, messages arrive
//! in their chats while they are away and while they come back, and all of them
//! reconnect and `sync` at once.
//!
//! Each chat also has a *writer*: a second session of the patient that stays
//! connected and sends `gap` messages while the clients are away and `live`
//! more as soon as the reconnect starts (those race the `sync`). A client has
//! resynced when it got `synced` and every `seq` up to the writer's last ack.
//! It must receive every `seq` above the one it had seen before dropping,
//! exactly once: the report counts misses and duplicates (both must be 0) and,
//! for information, arrivals after a higher `seq`.

use crate::client::{self, Ws};
use crate::error::{Error, Result};
use crate::stats::{Errors, Latency, LatencySummary};
use crate::target::Target;
use chat_shared::domain::ChatId;
use chat_shared::protocol::ServerFrame;
use futures_util::SinkExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// What to run.
#[derive(Debug, Clone)]
pub struct StormOptions {
    /// Clients (rounded up to an even number: patient and doctor of each chat).
    pub clients: usize,
    /// Messages per chat sent while the clients are away.
    pub gap_messages: u32,
    /// Messages per chat sent while they reconnect (racing their `sync`).
    pub live_messages: u32,
    /// Connection attempts in flight at once (initial connect only; the
    /// reconnect is all at once).
    pub concurrency: usize,
    /// How long the reconnect may take before clients count as not resynced.
    pub timeout: Duration,
    /// Prefix of the user ids.
    pub prefix: String,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    /// Clients.
    pub clients: usize,
    /// Chats.
    pub chats: usize,
    /// Clients that reconnected (`hello` received).
    pub reconnected: u64,
    /// Clients that got `synced` and every message up to the last one.
    pub resynced: u64,
    /// Reconnect start → last client resynced, ms (`None` if not all did).
    pub time_to_all_resynced_ms: Option<f64>,
    /// Reconnect start → each client resynced.
    pub resync_latency: LatencySummary,
    /// Messages the clients should have received after reconnecting.
    pub expected: u64,
    /// Distinct messages they received.
    pub received: u64,
    /// Expected but never received (must be 0).
    pub missed: u64,
    /// Received more than once (must be 0).
    pub duplicates: u64,
    /// Received after a higher `seq`: a live message that reached the session
    /// before the gateway processed its `sync` precedes the replayed older ones
    /// (informational; clients order by `seq`).
    pub out_of_order: u64,
    /// Up to 10 clients that missed something: who, what they had seen, the
    /// arrival order of the `seq`s they received and which ones never came.
    pub missed_examples: Vec<String>,
    /// Failures, total.
    pub errors: u64,
    /// Errors by kind.
    pub error_kinds: BTreeMap<String, u64>,
}

/// Phases the coordinator moves every client through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Connected,
    Drop,
    Reconnect,
    Stop,
}

#[derive(Default)]
struct Tally {
    connected: AtomicUsize,
    dropped: AtomicUsize,
    reconnected: AtomicU64,
    resynced: AtomicU64,
    expected: AtomicU64,
    received: AtomicU64,
    missed: AtomicU64,
    duplicates: AtomicU64,
    out_of_order: AtomicU64,
    failed: AtomicUsize,
    examples: std::sync::Mutex<Vec<String>>,
}

/// Runs the scenario; nothing outlives `deadline`.
pub async fn run(target: &Target, opts: &StormOptions, deadline: Instant) -> Result<StormReport> {
    let pairs = opts.clients.div_ceil(2).max(1);
    let (users, chats) = crate::chat::setup_pairs(target, pairs, &opts.prefix).await?;
    let tokens = Arc::new(target.tokens(&users).await?);
    let errors = Arc::new(Errors::new());
    let tally = Arc::new(Tally::default());
    // Per chat: the seq every client has seen before dropping, and the writer's last ack.
    let baseline: Arc<Vec<AtomicU64>> = Arc::new((0..pairs).map(|_| AtomicU64::new(0)).collect());
    let last: Arc<Vec<AtomicU64>> = Arc::new((0..pairs).map(|_| AtomicU64::new(0)).collect());
    let (phase_tx, phase_rx) = watch::channel(Phase::Connected);
    let storm_start: Arc<std::sync::OnceLock<Instant>> = Arc::new(std::sync::OnceLock::new());

    // The writers: one extra patient session per chat, connected first.
    let mut writers = Vec::with_capacity(pairs);
    for (i, chat) in chats.iter().enumerate() {
        let ws = target.connect(i + 1, i, &tokens[2 * i]).await?;
        writers.push(Writer {
            ws,
            chat: *chat,
            cmid: format!("{}-w{i}", opts.prefix),
            k: 0,
            last_seq: 0,
        });
    }
    // Baseline: one message per chat, so every client has something to sync from.
    for (i, w) in writers.iter_mut().enumerate() {
        let seq = w.send_acked().await?;
        baseline[i].store(seq, Ordering::Relaxed);
    }

    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut clients = Vec::with_capacity(users.len());
    for (u, chat) in (0..users.len()).map(|u| (u, chats[u / 2])) {
        let c = ClientCtx {
            target: target.clone(),
            u,
            chat,
            tokens: tokens.clone(),
            baseline: baseline.clone(),
            last: last.clone(),
            tally: tally.clone(),
            errors: errors.clone(),
            permits: permits.clone(),
            phase: phase_rx.clone(),
            storm_start: storm_start.clone(),
        };
        clients.push(tokio::spawn(c.run()));
    }
    let n = users.len();
    let reached = |count: &AtomicUsize| {
        count.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed) >= n
    };
    while !reached(&tally.connected) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if tally.failed.load(Ordering::Relaxed) > 0 {
        let _ = phase_tx.send(Phase::Stop);
        return Err(Error::new(format!(
            "storm: {} clients could not connect: {:?}",
            tally.failed.load(Ordering::Relaxed),
            errors.snapshot()
        )));
    }
    let _ = phase_tx.send(Phase::Drop);
    while !reached(&tally.dropped) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gap = opts.gap_messages;
    let sent = futures_util::future::join_all(writers.iter_mut().map(|w| async move {
        for _ in 0..gap {
            w.send_acked().await?;
        }
        Ok::<(), Error>(())
    }))
    .await;
    sent.into_iter().collect::<Result<Vec<()>>>()?;
    let _ = storm_start.set(Instant::now());
    let _ = phase_tx.send(Phase::Reconnect);
    let live = opts.live_messages;
    let last_ref = &last;
    let sent =
        futures_util::future::join_all(writers.iter_mut().enumerate().map(|(i, w)| async move {
            let mut seq = w.last_seq;
            for _ in 0..live {
                seq = w.send_acked().await?;
            }
            last_ref[i].store(seq, Ordering::Relaxed);
            Ok::<(), Error>(())
        }))
        .await;
    sent.into_iter().collect::<Result<Vec<()>>>()?;
    let until = (Instant::now() + opts.timeout).min(deadline);
    let mut resync = Latency::new();
    let mut all_done = true;
    for c in clients {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c).await {
            Ok(Ok(Some(d))) => resync.record(d),
            Ok(_) => all_done = false,
            Err(_) => {
                all_done = false;
                let _ = phase_tx.send(Phase::Stop);
            }
        }
    }
    let _ = phase_tx.send(Phase::Stop);
    for mut w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(2), w.ws.close(None)).await;
    }
    let resync = resync.summary();
    let missed_examples = match tally.examples.lock() {
        Ok(v) => v.clone(),
        Err(p) => p.into_inner().clone(),
    };
    Ok(StormReport {
        clients: n,
        chats: pairs,
        reconnected: tally.reconnected.load(Ordering::Relaxed),
        resynced: tally.resynced.load(Ordering::Relaxed),
        time_to_all_resynced_ms: (all_done && resync.count as usize == n).then_some(resync.max_ms),
        resync_latency: resync,
        expected: tally.expected.load(Ordering::Relaxed),
        received: tally.received.load(Ordering::Relaxed),
        missed: tally.missed.load(Ordering::Relaxed),
        duplicates: tally.duplicates.load(Ordering::Relaxed),
        out_of_order: tally.out_of_order.load(Ordering::Relaxed),
        missed_examples,
        errors: errors.total(),
        error_kinds: errors.snapshot(),
    })
}

/// The extra session that writes into a chat (closed-loop: waits for each ack).
struct Writer {
    ws: Ws,
    chat: ChatId,
    cmid: String,
    k: u32,
    last_seq: u64,
}

impl Writer {
    async fn send_acked(&mut self) -> Result<u64> {
        self.k += 1;
        let frame = serde_json::json!({
            "type": "send",
            "id": self.k,
            "chat_id": self.chat,
            "client_msg_id": format!("{}-{}", self.cmid, self.k),
            "body": format!("storm {}", self.k),
        });
        self.ws
            .send(client::text(&frame))
            .await
            .map_err(|e| Error::new(format!("storm writer: {e}")))?;
        let wait = async {
            loop {
                match client::next_frame(&mut self.ws).await? {
                    Some(ServerFrame::Ack { message, .. }) => return Ok(message.seq),
                    Some(ServerFrame::Error { code, message, .. }) => {
                        return Err(Error::new(format!(
                            "storm writer: send refused: {}: {message}",
                            code.as_str()
                        )))
                    }
                    _ => continue,
                }
            }
        };
        let seq = tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .map_err(|_| Error::new("storm writer: no ack within 10 s"))??;
        self.last_seq = seq;
        Ok(seq)
    }
}

/// Resolves once the coordinator reached `phase` (or is gone).
async fn reach(rx: &mut watch::Receiver<Phase>, phase: Phase) {
    let _ = rx.wait_for(|p| *p >= phase).await;
}

struct ClientCtx {
    target: Target,
    u: usize,
    chat: ChatId,
    tokens: Arc<Vec<String>>,
    baseline: Arc<Vec<AtomicU64>>,
    last: Arc<Vec<AtomicU64>>,
    tally: Arc<Tally>,
    errors: Arc<Errors>,
    permits: Arc<Semaphore>,
    phase: watch::Receiver<Phase>,
    storm_start: Arc<std::sync::OnceLock<Instant>>,
}

impl ClientCtx {
    /// Returns the time from the reconnect start to resynced, if it resynced.
    async fn run(mut self) -> Option<Duration> {
        let pair = self.u / 2;
        let node = pair + self.u % 2;
        let token = &self.tokens[self.u];
        let first = {
            let _permit = self.permits.acquire().await.ok()?;
            self.target.connect(node, self.u, token).await
        };
        let mut ws = match first {
            Ok(ws) => ws,
            Err(e) => return self.fail(e),
        };
        self.tally.connected.fetch_add(1, Ordering::Relaxed);
        // Connected: read (and ignore) until told to drop.
        loop {
            let r = tokio::select! {
                _ = reach(&mut self.phase, Phase::Drop) => break,
                r = client::next_frame(&mut ws) => r,
            };
            if let Err(e) = r {
                return self.fail(e);
            }
        }
        if *self.phase.borrow() == Phase::Stop {
            return None;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
        drop(ws);
        self.tally.dropped.fetch_add(1, Ordering::Relaxed);
        reach(&mut self.phase, Phase::Reconnect).await;
        if *self.phase.borrow() == Phase::Stop {
            return None;
        }
        let start = *self.storm_start.get()?;
        // Reconnect on the *other* node of the pair, as after a node loss.
        let mut ws = match self.target.connect(node + 1, self.u, token).await {
            Ok(ws) => ws,
            Err(e) => return self.fail(e),
        };
        self.tally.reconnected.fetch_add(1, Ordering::Relaxed);
        let seen = self.baseline[pair].load(Ordering::Relaxed);
        let sync = serde_json::json!({
            "type": "sync",
            "id": "storm",
            "chats": { self.chat.to_string(): seen },
        });
        if let Err(e) = ws.send(client::text(&sync)).await {
            return self.fail(Error::new(format!("sync: {e}")));
        }
        let mut got: HashMap<u64, u32> = HashMap::new();
        let mut arrivals: Vec<u64> = Vec::new();
        let mut max_seen = seen;
        let mut synced = false;
        let mut done_at = None;
        loop {
            let target_seq = self.last[pair].load(Ordering::Relaxed);
            if synced && target_seq > 0 && max_seen >= target_seq {
                done_at = Some(start.elapsed());
                break;
            }
            let frame = tokio::select! {
                _ = reach(&mut self.phase, Phase::Stop) => break,
                // Poll again soon: the writer's last seq may not be known yet.
                _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                f = client::next_frame(&mut ws) => f,
            };
            match frame {
                Ok(Some(ServerFrame::Message { message })) if message.chat_id == self.chat => {
                    let seq = message.seq;
                    if seq <= seen {
                        // Already seen before dropping: a duplicate.
                        self.tally.duplicates.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if seq < max_seen {
                        self.tally.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    max_seen = max_seen.max(seq);
                    *got.entry(seq).or_insert(0) += 1;
                    if arrivals.len() < 64 {
                        arrivals.push(seq);
                    }
                }
                Ok(Some(ServerFrame::Synced { .. })) => synced = true,
                Ok(Some(ServerFrame::Error { code, .. })) => {
                    self.errors.add(format!("error frame: {}", code.as_str()));
                }
                Ok(_) => {}
                Err(e) => {
                    self.errors.add(e.to_string());
                    break;
                }
            }
        }
        // Account for what should have arrived.
        let final_seq = self.last[pair].load(Ordering::Relaxed).max(max_seen);
        let expected = final_seq.saturating_sub(seen);
        let received = got.len() as u64;
        let dups: u64 = got.values().map(|&c| u64::from(c.saturating_sub(1))).sum();
        self.tally.expected.fetch_add(expected, Ordering::Relaxed);
        self.tally.received.fetch_add(received, Ordering::Relaxed);
        let missed = expected.saturating_sub(received);
        self.tally.missed.fetch_add(missed, Ordering::Relaxed);
        if missed > 0 {
            let absent: Vec<u64> = (seen + 1..=final_seq)
                .filter(|q| !got.contains_key(q))
                .take(16)
                .collect();
            let mut ex = match self.tally.examples.lock() {
                Ok(v) => v,
                Err(p) => p.into_inner(),
            };
            if ex.len() < 10 {
                ex.push(format!(
                    "client {} chat {}: had seen {seen}, received {arrivals:?}, never got {absent:?}",
                    self.u, self.chat
                ));
            }
        }
        self.tally.duplicates.fetch_add(dups, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        if done_at.is_some() {
            self.tally.resynced.fetch_add(1, Ordering::Relaxed);
        }
        done_at
    }

    fn fail(&self, e: Error) -> Option<Duration> {
        self.tally.failed.fetch_add(1, Ordering::Relaxed);
        self.errors.add(e.to_string());
        None
    }
}
