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
//!
//! Only the reconnect is all at once. The set-up (connecting the writers and
//! the clients, the writers' sends) is bounded — `concurrency` connection
//! attempts and `send_concurrency` unacknowledged sends in flight — so that
//! with thousands of chats it costs the gateway a steady queue instead of one
//! burst that pushes every ack past its timeout. Each phase's duration is
//! reported, so a slow run says where its time went.

use crate::client::{self, Ws};
use crate::error::{Error, Result};
use crate::stats::{Errors, Latency, LatencySummary};
use crate::target::Target;
use chat_shared::domain::ChatId;
use chat_shared::protocol::ServerFrame;
use futures_util::{stream, SinkExt, StreamExt, TryStreamExt};
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
    /// Connection attempts in flight at once while setting up (writers and
    /// clients). The reconnect itself is all at once: that is the storm.
    pub concurrency: usize,
    /// Writer sends waiting for their ack at once (baseline, gap and live
    /// messages), so the gateway sees a bounded queue of appends rather than
    /// one per chat at the same instant.
    pub send_concurrency: usize,
    /// How long one writer send may wait for its ack before the run fails.
    pub ack_timeout: Duration,
    /// How long the reconnect may take before clients count as not resynced.
    pub timeout: Duration,
    /// Before the reconnect, wait (up to `timeout`) until the gateways'
    /// in-process persister has written every accepted message. The
    /// standalone gateway's `sync` scans its whole unpersisted log, so a
    /// backlog left by the set-up (thousands of messages) would otherwise be
    /// part of what the storm measures; see `loadtest/README.md`.
    pub drain_backlog: bool,
    /// Prefix of the user ids.
    pub prefix: String,
}

/// How long one set-up phase took (so a slow or failed run says where its
/// time went).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseTime {
    /// What the phase does.
    pub phase: &'static str,
    /// Its duration, ms.
    pub ms: f64,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    /// Clients.
    pub clients: usize,
    /// Chats.
    pub chats: usize,
    /// Set-up phases in order, with their durations.
    pub phases: Vec<PhaseTime>,
    /// Clients that reconnected (`hello` received).
    pub reconnected: u64,
    /// Clients that got `synced` and every message up to the last one.
    pub resynced: u64,
    /// Reconnect start → last client reconnected (`hello`), ms (`None` if not
    /// all did).
    pub time_to_all_reconnected_ms: Option<f64>,
    /// Reconnect start → every writer's live messages acked, ms (a client
    /// cannot count as resynced before its chat's last ack is known).
    pub time_to_live_acked_ms: f64,
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
    /// Latest `hello` after the reconnect start, µs after it.
    last_hello_us: AtomicU64,
    resynced: AtomicU64,
    expected: AtomicU64,
    received: AtomicU64,
    missed: AtomicU64,
    duplicates: AtomicU64,
    out_of_order: AtomicU64,
    failed: AtomicUsize,
    examples: std::sync::Mutex<Vec<String>>,
}

/// Times the set-up phases and names the one that failed.
struct Phases {
    done: Vec<PhaseTime>,
    current: &'static str,
    started: Instant,
}

impl Phases {
    fn new() -> Self {
        Self {
            done: Vec::new(),
            current: "",
            started: Instant::now(),
        }
    }

    /// Starts `phase` (progress goes to stderr, so a long run can be followed).
    fn start(&mut self, phase: &'static str) {
        self.current = phase;
        self.started = Instant::now();
    }

    /// Ends the current phase, recording its duration.
    fn end(&mut self) {
        let ms = ms(self.started.elapsed());
        eprintln!("storm: {} took {ms:.0} ms", self.current);
        self.done.push(PhaseTime {
            phase: self.current,
            ms,
        });
    }

    /// An error saying which phase failed, after how long, and what came before.
    fn failed(&self, e: Error) -> Error {
        let before: Vec<String> = self
            .done
            .iter()
            .map(|p| format!("{} {:.0} ms", p.phase, p.ms))
            .collect();
        Error::new(format!(
            "storm: {} failed after {:.0} ms (before it: {}): {e}",
            self.current,
            ms(self.started.elapsed()),
            if before.is_empty() {
                "nothing".to_owned()
            } else {
                before.join(", ")
            }
        ))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the scenario; nothing outlives `deadline`.
pub async fn run(target: &Target, opts: &StormOptions, deadline: Instant) -> Result<StormReport> {
    let pairs = opts.clients.div_ceil(2).max(1);
    let connect_limit = opts.concurrency.max(1);
    let send_limit = opts.send_concurrency.max(1);
    let mut phases = Phases::new();

    phases.start("create chats");
    let (users, chats) = crate::chat::setup_pairs(target, pairs, &opts.prefix)
        .await
        .map_err(|e| phases.failed(e))?;
    phases.end();
    phases.start("tokens");
    let tokens = Arc::new(target.tokens(&users).await.map_err(|e| phases.failed(e))?);
    phases.end();
    let errors = Arc::new(Errors::new());
    let tally = Arc::new(Tally::default());
    // Per chat: the seq every client has seen before dropping, and the
    // writer's last ack (published once it is known, so clients wait on it
    // instead of polling).
    let baseline: Arc<Vec<AtomicU64>> = Arc::new((0..pairs).map(|_| AtomicU64::new(0)).collect());
    let last: Arc<Vec<watch::Sender<u64>>> =
        Arc::new((0..pairs).map(|_| watch::Sender::new(0)).collect());
    let (phase_tx, phase_rx) = watch::channel(Phase::Connected);
    let storm_start: Arc<std::sync::OnceLock<Instant>> = Arc::new(std::sync::OnceLock::new());

    // The writers: one extra patient session per chat, connected first.
    phases.start("connect writers");
    let mut writers: Vec<Writer> = stream::iter(chats.iter().enumerate())
        .map(|(i, chat)| {
            let tokens = &tokens;
            async move {
                let ws = target.connect(i + 1, i, &tokens[2 * i]).await?;
                Ok::<_, Error>(Writer {
                    ws,
                    index: i,
                    chat: *chat,
                    cmid: format!("{}-w{i}", opts.prefix),
                    k: 0,
                    last_seq: 0,
                    ack_timeout: opts.ack_timeout,
                })
            }
        })
        .buffered(connect_limit)
        .try_collect()
        .await
        .map_err(|e| phases.failed(e))?;
    phases.end();
    // Baseline: one message per chat, so every client has something to sync from.
    phases.start("baseline messages");
    send_all(&mut writers, 1, send_limit, |_, _| {})
        .await
        .map_err(|e| phases.failed(e))?;
    for (i, w) in writers.iter().enumerate() {
        baseline[i].store(w.last_seq, Ordering::Relaxed);
    }
    phases.end();

    phases.start("connect clients");
    let permits = Arc::new(Semaphore::new(connect_limit));
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
    let failed = tally.failed.load(Ordering::Relaxed);
    let connected = tally.connected.load(Ordering::Relaxed);
    if failed > 0 || connected < n {
        let _ = phase_tx.send(Phase::Stop);
        return Err(phases.failed(Error::new(format!(
            "{connected} of {n} clients connected, {failed} could not: {:?}",
            errors.snapshot()
        ))));
    }
    phases.end();
    phases.start("drop clients");
    let _ = phase_tx.send(Phase::Drop);
    while !reached(&tally.dropped) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    phases.end();
    phases.start("gap messages");
    let gap = send_all(&mut writers, opts.gap_messages, send_limit, |_, _| {}).await;
    if let Err(e) = gap {
        let _ = phase_tx.send(Phase::Stop);
        return Err(phases.failed(e));
    }
    phases.end();

    if opts.drain_backlog {
        phases.start("wait for persister");
        let until = Instant::now() + opts.timeout;
        loop {
            match target.unpersisted().await {
                Ok(Some(0)) | Ok(None) => break,
                Ok(Some(_)) if Instant::now() < until && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Some(left)) => {
                    eprintln!("storm: {left} messages still unpersisted; reconnecting anyway");
                    break;
                }
                Err(e) => {
                    eprintln!("storm: could not read the backlog ({e}); reconnecting anyway");
                    break;
                }
            }
        }
        phases.end();
    }

    let start = Instant::now();
    let _ = storm_start.set(start);
    let _ = phase_tx.send(Phase::Reconnect);
    let last_ref = &last;
    let live = send_all(&mut writers, opts.live_messages, send_limit, |i, seq| {
        last_ref[i].send_replace(seq);
    })
    .await;
    let live_acked = start.elapsed();
    if let Err(e) = live {
        let _ = phase_tx.send(Phase::Stop);
        return Err(Error::new(format!(
            "storm: live messages failed {:.0} ms after the reconnect started: {e}",
            ms(live_acked)
        )));
    }
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
    let reconnected = tally.reconnected.load(Ordering::Relaxed);
    Ok(StormReport {
        clients: n,
        chats: pairs,
        phases: phases.done,
        reconnected,
        resynced: tally.resynced.load(Ordering::Relaxed),
        time_to_all_reconnected_ms: (reconnected as usize == n)
            .then(|| tally.last_hello_us.load(Ordering::Relaxed) as f64 / 1000.0),
        time_to_live_acked_ms: ms(live_acked),
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

/// Has every writer send `count` messages (each waiting for its ack), at most
/// `limit` writers at a time; `acked(writer index, last seq)` is called as each
/// writer finishes (also when `count` is 0, with the seq it had).
async fn send_all(
    writers: &mut [Writer],
    count: u32,
    limit: usize,
    acked: impl Fn(usize, u64),
) -> Result<()> {
    let acked = &acked;
    stream::iter(writers.iter_mut())
        .map(|w| async move {
            for _ in 0..count {
                w.send_acked().await?;
            }
            acked(w.index, w.last_seq);
            Ok::<(), Error>(())
        })
        .buffer_unordered(limit)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

/// The extra session that writes into a chat (closed-loop: waits for each ack).
struct Writer {
    ws: Ws,
    index: usize,
    chat: ChatId,
    cmid: String,
    k: u32,
    last_seq: u64,
    ack_timeout: Duration,
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
            .map_err(|e| Error::new(format!("storm writer {}: {e}", self.index)))?;
        let index = self.index;
        let wait = async {
            loop {
                match client::next_frame(&mut self.ws).await? {
                    Some(ServerFrame::Ack { message, .. }) => return Ok(message.seq),
                    Some(ServerFrame::Error { code, message, .. }) => {
                        return Err(Error::new(format!(
                            "storm writer {index}: send refused: {}: {message}",
                            code.as_str()
                        )))
                    }
                    _ => continue,
                }
            }
        };
        let seq = tokio::time::timeout(self.ack_timeout, wait)
            .await
            .map_err(|_| {
                Error::new(format!(
                    "storm writer {index}: no ack within {:.1} s (message {} of chat {}; raise --ack-timeout or lower --send-concurrency)",
                    self.ack_timeout.as_secs_f64(),
                    self.k,
                    self.chat
                ))
            })??;
        self.last_seq = seq;
        Ok(seq)
    }
}

/// Resolves once the coordinator reached `phase` (or is gone).
async fn reach(rx: &mut watch::Receiver<Phase>, phase: Phase) {
    let _ = rx.wait_for(|p| *p >= phase).await;
}

/// What one client received after reconnecting: the basis of the miss,
/// duplicate and order accounting, kept apart from the networking so the
/// rules can be tested.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `seq` the client had seen before dropping (and synced from).
    seen: u64,
    /// How often each `seq` above `seen` arrived.
    counts: HashMap<u64, u32>,
    /// Arrivals of `seq`s the client had already seen before dropping.
    stale: u64,
    /// Arrivals after a higher `seq`.
    out_of_order: u64,
    /// Highest `seq` received (or `seen`).
    max_seen: u64,
    /// The first 64 arrivals, in order (for the report of a miss).
    arrivals: Vec<u64>,
}

/// The accounting of one client against the chat's last `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounting {
    /// `seq`s the client should have received: `seen + 1 ..= last`.
    pub expected: u64,
    /// Distinct expected `seq`s that arrived.
    pub received: u64,
    /// Expected `seq`s that never arrived.
    pub missed: u64,
    /// Extra arrivals: repeats, and `seq`s already seen before dropping.
    pub duplicates: u64,
    /// Arrivals after a higher `seq` (informational).
    pub out_of_order: u64,
    /// The first 16 missing `seq`s.
    pub absent: Vec<u64>,
}

impl Received {
    /// A client that had seen everything up to `seen`.
    pub fn new(seen: u64) -> Self {
        Self {
            seen,
            counts: HashMap::new(),
            stale: 0,
            out_of_order: 0,
            max_seen: seen,
            arrivals: Vec::new(),
        }
    }

    /// One `message` of the client's chat arrived.
    pub fn record(&mut self, seq: u64) {
        if seq <= self.seen {
            self.stale += 1;
            return;
        }
        if seq < self.max_seen {
            self.out_of_order += 1;
        }
        self.max_seen = self.max_seen.max(seq);
        *self.counts.entry(seq).or_insert(0) += 1;
        if self.arrivals.len() < 64 {
            self.arrivals.push(seq);
        }
    }

    /// The highest `seq` received so far (or the one seen before dropping).
    pub fn max_seen(&self) -> u64 {
        self.max_seen
    }

    /// The arrivals so far, in order (at most the first 64).
    pub fn arrivals(&self) -> &[u64] {
        &self.arrivals
    }

    /// Accounts against `last`, the chat's last acked `seq` (anything received
    /// above it counts as expected too: it exists).
    pub fn account(&self, last: u64) -> Accounting {
        let last = last.max(self.max_seen);
        let expected = last.saturating_sub(self.seen);
        let received = self.counts.len() as u64;
        let repeats: u64 = self
            .counts
            .values()
            .map(|&c| u64::from(c.saturating_sub(1)))
            .sum();
        Accounting {
            expected,
            received,
            missed: expected.saturating_sub(received),
            duplicates: repeats + self.stale,
            out_of_order: self.out_of_order,
            absent: (self.seen + 1..=last)
                .filter(|q| !self.counts.contains_key(q))
                .take(16)
                .collect(),
        }
    }
}

struct ClientCtx {
    target: Target,
    u: usize,
    chat: ChatId,
    tokens: Arc<Vec<String>>,
    baseline: Arc<Vec<AtomicU64>>,
    last: Arc<Vec<watch::Sender<u64>>>,
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
        let hello_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.tally
            .last_hello_us
            .fetch_max(hello_us, Ordering::Relaxed);
        let seen = self.baseline[pair].load(Ordering::Relaxed);
        let sync = serde_json::json!({
            "type": "sync",
            "id": "storm",
            "chats": { self.chat.to_string(): seen },
        });
        if let Err(e) = ws.send(client::text(&sync)).await {
            return self.fail(Error::new(format!("sync: {e}")));
        }
        let mut last_rx = self.last[pair].subscribe();
        let mut got = Received::new(seen);
        let mut synced = false;
        let mut done_at = None;
        loop {
            // 0 until the writer's live messages are all acked.
            let target_seq = *last_rx.borrow_and_update();
            if synced && target_seq > 0 && got.max_seen() >= target_seq {
                done_at = Some(start.elapsed());
                break;
            }
            let frame = tokio::select! {
                _ = reach(&mut self.phase, Phase::Stop) => break,
                // The writer's last seq became known: check again.
                changed = last_rx.changed(), if target_seq == 0 => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
                f = client::next_frame(&mut ws) => f,
            };
            match frame {
                Ok(Some(ServerFrame::Message { message })) if message.chat_id == self.chat => {
                    got.record(message.seq);
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
        // Account for what should have arrived (a client that gave up early
        // counts what it never got as missed).
        let acc = got.account(*self.last[pair].borrow());
        self.tally
            .expected
            .fetch_add(acc.expected, Ordering::Relaxed);
        self.tally
            .received
            .fetch_add(acc.received, Ordering::Relaxed);
        self.tally.missed.fetch_add(acc.missed, Ordering::Relaxed);
        self.tally
            .duplicates
            .fetch_add(acc.duplicates, Ordering::Relaxed);
        self.tally
            .out_of_order
            .fetch_add(acc.out_of_order, Ordering::Relaxed);
        if acc.missed > 0 {
            let mut ex = match self.tally.examples.lock() {
                Ok(v) => v,
                Err(p) => p.into_inner(),
            };
            if ex.len() < 10 {
                ex.push(format!(
                    "client {} chat {}: had seen {seen}, received {:?}, never got {:?}",
                    self.u,
                    self.chat,
                    got.arrivals(),
                    acc.absent
                ));
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_once_is_no_miss_and_no_duplicate() {
        let mut r = Received::new(1);
        for seq in [2, 3, 4] {
            r.record(seq);
        }
        let a = r.account(4);
        assert_eq!(a.expected, 3);
        assert_eq!(a.received, 3);
        assert_eq!(a.missed, 0);
        assert_eq!(a.duplicates, 0);
        assert_eq!(a.out_of_order, 0);
        assert!(a.absent.is_empty());
    }

    #[test]
    fn a_seq_that_never_came_is_a_miss_and_named() {
        let mut r = Received::new(1);
        for seq in [2, 4] {
            r.record(seq);
        }
        let a = r.account(4);
        assert_eq!(a.expected, 3);
        assert_eq!(a.received, 2);
        assert_eq!(a.missed, 1);
        assert_eq!(a.absent, vec![3]);
    }

    #[test]
    fn nothing_received_misses_everything_up_to_the_last_ack() {
        // A client that gave up (timeout, disconnect) still owes every seq.
        let a = Received::new(5).account(9);
        assert_eq!(a.expected, 4);
        assert_eq!(a.missed, 4);
        assert_eq!(a.absent, vec![6, 7, 8, 9]);
    }

    #[test]
    fn repeats_and_already_seen_seqs_are_duplicates_not_receipts() {
        let mut r = Received::new(2);
        for seq in [2, 3, 3, 4, 1] {
            r.record(seq);
        }
        let a = r.account(4);
        assert_eq!(a.received, 2);
        assert_eq!(a.missed, 0);
        // one repeat of 3, plus 2 and 1 seen before dropping
        assert_eq!(a.duplicates, 3);
    }

    #[test]
    fn a_live_message_before_the_replay_is_out_of_order_but_not_missed() {
        let mut r = Received::new(1);
        for seq in [4, 2, 3] {
            r.record(seq);
        }
        let a = r.account(4);
        assert_eq!(a.out_of_order, 2);
        assert_eq!(a.missed, 0);
        assert_eq!(r.arrivals(), &[4, 2, 3]);
    }

    #[test]
    fn a_seq_above_the_known_last_one_still_counts_as_expected() {
        // The writer's last ack is not known yet (0) but 3 arrived: 2 and 3
        // exist, so 2 is owed.
        let mut r = Received::new(1);
        r.record(3);
        let a = r.account(0);
        assert_eq!(a.expected, 2);
        assert_eq!(a.missed, 1);
        assert_eq!(a.absent, vec![2]);
    }
}
