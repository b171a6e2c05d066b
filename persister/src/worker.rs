//! The persister loop: read → apply → acknowledge → announce, plus the chores
//! that keep the stream healthy: taking over dead replicas' entries, parking
//! poison entries in the dead-letter stream, and trimming what is persisted.
//!
//! An entry is acknowledged only after the store confirmed every write of its
//! batch, so a crash anywhere before that means the entry is delivered again and
//! applied again — harmlessly (see [`crate::apply`]).
//!
//! Failures are told apart: a store that is down or slow (transient) is
//! retried with back-off for as long as it takes, with the stream buffering;
//! data the store refuses (or an entry that cannot even be decoded) is isolated
//! entry by entry, and an entry that keeps failing is moved to the dead-letter
//! stream after `max_deliveries` attempts instead of blocking everything behind it.
//! A batch the store could not finish in time is replayed in smaller pieces
//! (see [`crate::batch_limit`]), each acknowledged as soon as it is written.

use crate::apply::{apply_batch, BatchOutcome};
use crate::batch_limit::BatchLimit;
use crate::metrics::PersisterMetrics;
use chat_shared::broker::{Broker, Envelope, EventLog, StreamEntry, StreamEvent};
use chat_shared::domain::{Role, UserId};
use chat_shared::protocol::ServerFrame;
use chat_shared::store::{Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Default most entries per batch.
pub const DEFAULT_BATCH_SIZE: usize = 1000;

/// Default wait for a batch to fill, in milliseconds.
pub const DEFAULT_LINGER_MS: u64 = 50;

/// Tuning of the loop.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Most entries per read.
    pub batch_size: usize,
    /// How long one read waits for new entries.
    pub block: Duration,
    /// After a read that did not fill a batch, how long to let more entries
    /// arrive before writing: trades a little persistence latency (never ack
    /// latency) for fewer, larger MongoDB round trips under load.
    pub linger: Duration,
    /// First retry delay after a failure (doubles up to `max_backoff`).
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Entries another consumer has held unacknowledged this long are taken over.
    pub claim_idle: Duration,
    /// How often to look for such entries.
    pub claim_every: Duration,
    /// Attempts before an entry goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// How often to trim persisted entries from the stream.
    pub trim_every: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_SIZE,
            block: Duration::from_millis(1000),
            linger: Duration::from_millis(DEFAULT_LINGER_MS),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            claim_idle: Duration::from_secs(30),
            claim_every: Duration::from_secs(5),
            max_deliveries: 5,
            trim_every: Duration::from_secs(10),
        }
    }
}

/// One persister worker.
pub struct Worker {
    /// Where events come from.
    pub log: Arc<dyn EventLog>,
    /// Where they go.
    pub store: Arc<dyn Store>,
    /// Where `unread` announcements go.
    pub broker: Arc<dyn Broker>,
    /// Metrics.
    pub metrics: PersisterMetrics,
    /// Tuning.
    pub settings: WorkerSettings,
    /// Failed attempts per entry whose data the store refused.
    pub attempts: Mutex<HashMap<String, u64>>,
    /// This worker's last backlog reading (pending, undelivered): the gauges
    /// are the sum over every shard's worker, so each adds its change.
    backlog: Mutex<(i64, i64)>,
    /// Most events per store write: the batch size, less after a timeout.
    limit: BatchLimit,
}

impl Worker {
    /// A worker with no failure history.
    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn Store>,
        broker: Arc<dyn Broker>,
        metrics: PersisterMetrics,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            limit: BatchLimit::new(settings.batch_size),
            log,
            store,
            broker,
            metrics,
            settings,
            attempts: Mutex::new(HashMap::new()),
            backlog: Mutex::new((0, 0)),
        }
    }

    /// Runs until `shutdown` is cancelled. A batch in progress is finished
    /// (never cut in the middle) before returning.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = self.settings.min_backoff;
        let mut next_claim = Instant::now() + self.settings.claim_every;
        let mut next_trim = Instant::now() + self.settings.trim_every;
        while !shutdown.is_cancelled() {
            if Instant::now() >= next_claim {
                next_claim = Instant::now() + self.settings.claim_every;
                self.claim().await;
            }
            if Instant::now() >= next_trim {
                next_trim = Instant::now() + self.settings.trim_every;
                self.trim().await;
            }
            if self.step().await {
                backoff = self.settings.min_backoff;
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(self.settings.max_backoff);
            }
        }
        tracing::info!("persister worker stopped");
    }

    /// One read/apply/ack round; `false` after a failure (the caller backs off).
    pub async fn step(&self) -> bool {
        match self
            .log
            .read_batch(self.settings.batch_size, self.settings.block)
            .await
        {
            Ok(entries) => {
                let entries = self.fill(entries).await;
                self.process(entries).await
            }
            Err(e) => {
                // The read may have been delivered to us after we stopped
                // waiting: re-read our own pending entries next time.
                tracing::warn!(error = %e, "reading the event stream failed");
                self.metrics.errors.with_label_values(&["read"]).inc();
                self.log.replay_pending();
                false
            }
        }
    }

    /// Lets a partial batch fill for [`WorkerSettings::linger`]: one more
    /// (non-waiting) read. A failure there only means the batch stays smaller.
    async fn fill(&self, mut entries: Vec<StreamEntry>) -> Vec<StreamEntry> {
        let room = self.settings.batch_size.saturating_sub(entries.len());
        if entries.is_empty() || room == 0 || self.settings.linger.is_zero() {
            return entries;
        }
        tokio::time::sleep(self.settings.linger).await;
        // `BLOCK 0` would wait forever: the shortest real wait instead.
        match self.log.read_batch(room, Duration::from_millis(1)).await {
            Ok(more) => entries.extend(more),
            Err(e) => {
                tracing::debug!(error = %e, "topping up a batch failed");
                self.log.replay_pending();
            }
        }
        entries
    }

    /// Takes over entries a dead replica left behind, and applies them.
    pub async fn claim(&self) {
        let claimed = match self
            .log
            .claim_stale(
                self.settings.claim_idle,
                self.settings.max_deliveries,
                self.settings.batch_size,
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "claiming stale entries failed");
                self.metrics.errors.with_label_values(&["claim"]).inc();
                return;
            }
        };
        self.metrics
            .dead_letters
            .inc_by(claimed.dead_lettered as u64);
        if !claimed.entries.is_empty() {
            tracing::info!(
                entries = claimed.entries.len(),
                "took over a dead consumer's entries"
            );
            self.metrics.claimed.inc_by(claimed.entries.len() as u64);
            self.process(claimed.entries).await;
        }
    }

    /// Trims persisted entries and refreshes the backlog gauges.
    pub async fn trim(&self) {
        match self.log.trim().await {
            Ok(n) => self.metrics.trimmed.inc_by(n),
            Err(e) => {
                tracing::warn!(error = %e, "trimming the stream failed");
                self.metrics.errors.with_label_values(&["trim"]).inc();
            }
        }
        if let Ok(b) = self.log.backlog().await {
            let now = (b.pending as i64, b.undelivered as i64);
            let mut last = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
            self.metrics.pending.add(now.0 - last.0);
            self.metrics.undelivered.add(now.1 - last.1);
            *last = now;
        }
    }

    /// Applies and acknowledges a set of entries, at most [`BatchLimit::get`]
    /// at a time; `false` if the caller should back off.
    async fn process(&self, entries: Vec<StreamEntry>) -> bool {
        if entries.is_empty() {
            return true;
        }
        let mut ids = Vec::with_capacity(entries.len());
        let mut events: Vec<StreamEvent> = Vec::with_capacity(entries.len());
        // One `persister.write` span per traced event (with its index), in the
        // sender's trace, open while its piece is written, acknowledged and
        // announced (isolation included; a replay gets new spans).
        let mut spans = Vec::new();
        for entry in entries {
            match entry.event {
                Ok(ev) => {
                    if let Some(tp) = &entry.traceparent {
                        spans.push((events.len(), write_span(&ev, &entry.id, tp)));
                    }
                    ids.push(entry.id);
                    events.push(ev);
                }
                Err(reason) => {
                    // Can never succeed: park it for an operator right away.
                    self.metrics.errors.with_label_values(&["decode"]).inc();
                    if self.log.dead_letter(&entry.id, &reason).await.is_ok() {
                        self.metrics.dead_letters.inc();
                    }
                }
            }
        }
        let limit = self.limit.get();
        let mut all_done = true;
        let mut start = 0;
        while start < events.len() {
            let end = (start + limit).min(events.len());
            let piece = start..end;
            let in_piece = |i: &usize| piece.contains(i);
            for (_, span) in spans.iter().filter(|(i, _)| in_piece(i)) {
                span.record("batch", piece.len());
            }
            let written = self
                .write(&ids[piece.clone()], &events[piece.clone()])
                .await;
            // After a stop, the rest is replayed too: same outcome for its spans.
            let until = if written.stop { events.len() } else { end };
            for (_, span) in spans.iter().filter(|(i, _)| (start..until).contains(i)) {
                span.record("outcome", written.outcome);
                if !written.settled {
                    span.record("otel.status_code", "ERROR");
                }
            }
            all_done &= written.settled;
            if written.stop {
                return false;
            }
            start = end;
        }
        if all_done && self.limit.succeeded() {
            tracing::info!(
                batch_size = self.settings.batch_size,
                "split batches written; back to full batches"
            );
        }
        all_done
    }

    /// Applies and acknowledges one piece of a batch.
    async fn write(&self, ids: &[String], events: &[StreamEvent]) -> Written {
        let started = Instant::now();
        match apply_batch(self.store.as_ref(), events).await {
            Ok(outcome) => {
                self.record(&outcome, events.len(), started);
                let acked = self.finish(ids, &outcome).await;
                Written::new(acked, "written", !acked)
            }
            Err(e) if e.is_timeout() => {
                let next = self.limit.timed_out(events.len());
                tracing::warn!(error = %e, events = events.len(), next_size = next,
                    "the store timed out on a batch; it will be replayed in smaller pieces");
                self.metrics.errors.with_label_values(&["store"]).inc();
                if next < events.len() {
                    self.metrics.batch_splits.inc();
                }
                self.log.replay_pending();
                Written::new(false, "store_timeout", true)
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, events = events.len(), "store unavailable; the batch will be replayed");
                self.metrics.errors.with_label_values(&["store"]).inc();
                self.log.replay_pending();
                Written::new(false, "store_unavailable", true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the store refused part of a batch; isolating entries");
                self.metrics.errors.with_label_values(&["rejected"]).inc();
                let settled = self.isolate(ids.to_vec(), events.to_vec()).await;
                Written::new(settled, "isolated", false)
            }
        }
    }

    /// Applies entries one by one so one bad entry cannot hold the rest back.
    async fn isolate(&self, ids: Vec<String>, events: Vec<StreamEvent>) -> bool {
        let mut all_ok = true;
        for (id, event) in ids.into_iter().zip(events) {
            let started = Instant::now();
            match apply_batch(self.store.as_ref(), std::slice::from_ref(&event)).await {
                Ok(outcome) => {
                    self.record(&outcome, 1, started);
                    self.finish(std::slice::from_ref(&id), &outcome).await;
                }
                Err(e) if e.is_transient() => {
                    self.log.replay_pending();
                    return false;
                }
                Err(e) => {
                    all_ok &= self.failed_attempt(&id, &e).await;
                }
            }
        }
        if !all_ok {
            self.log.replay_pending();
        }
        all_ok
    }

    /// Counts a refused attempt; at the limit the entry is dead-lettered.
    /// Returns whether the entry is settled (dead-lettered).
    async fn failed_attempt(&self, id: &str, error: &StoreError) -> bool {
        let n = {
            let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
            let n = attempts.entry(id.to_owned()).or_default();
            *n += 1;
            *n
        };
        if n < self.settings.max_deliveries {
            tracing::warn!(entry = %id, attempt = n, error = %error, "entry refused by the store; will retry");
            return false;
        }
        match self
            .log
            .dead_letter(id, &format!("refused {n} times: {error}"))
            .await
        {
            Ok(()) => {
                self.metrics.dead_letters.inc();
                self.forget_attempts(&[id.to_owned()]);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "dead-lettering failed");
                false
            }
        }
    }

    fn forget_attempts(&self, ids: &[String]) {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        if !attempts.is_empty() {
            for id in ids {
                attempts.remove(id);
            }
        }
    }

    fn record(&self, outcome: &BatchOutcome, events: usize, started: Instant) {
        self.metrics
            .write_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batches.inc();
        self.metrics.batch_size.observe(events as f64);
        self.metrics
            .messages_written
            .inc_by(outcome.inserted as u64);
        self.metrics
            .messages_replayed
            .inc_by((outcome.messages - outcome.inserted) as u64);
    }

    /// Acknowledges persisted entries and announces unread counts.
    async fn finish(&self, ids: &[String], outcome: &BatchOutcome) -> bool {
        self.forget_attempts(ids);
        if let Err(e) = self.log.ack(ids).await {
            // The writes are done; a later replay of these entries is harmless.
            tracing::warn!(error = %e, "acknowledging a persisted batch failed");
            self.metrics.errors.with_label_values(&["ack"]).inc();
            self.log.replay_pending();
            return false;
        }
        self.announce(outcome).await;
        true
    }

    /// Tells each affected user their new unread count and total (the totals
    /// of every affected user in one store query).
    async fn announce(&self, outcome: &BatchOutcome) {
        if outcome.unread_changes.is_empty() {
            return;
        }
        let users: Vec<(UserId, Role)> = outcome
            .unread_changes
            .iter()
            .map(|c| (c.user_id.clone(), c.role))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        let totals: BTreeMap<UserId, u64> = match self.store.unread_totals(&users).await {
            Ok(totals) => users.into_iter().map(|(u, _)| u).zip(totals).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "computing unread totals failed");
                self.metrics.errors.with_label_values(&["publish"]).inc();
                return;
            }
        };
        for change in &outcome.unread_changes {
            let frame = ServerFrame::Unread {
                chat_id: change.chat_id,
                count: change.count,
                total: totals.get(&change.user_id).copied().unwrap_or(change.count),
            };
            if let Err(e) = self
                .broker
                .publish(&change.user_id, Envelope::new(None, &frame))
                .await
            {
                tracing::warn!(error = %e, "publishing an unread count failed");
                self.metrics.errors.with_label_values(&["publish"]).inc();
            }
        }
    }
}

/// What became of one piece of a batch handed to the store.
struct Written {
    /// Every entry of the piece is written and acknowledged (or dead-lettered).
    settled: bool,
    /// The `outcome` recorded on its events' spans.
    outcome: &'static str,
    /// The store is down or slow (or the acknowledgement failed): leave the
    /// rest of the batch for the replay instead of trying it now.
    stop: bool,
}

impl Written {
    fn new(settled: bool, outcome: &'static str, stop: bool) -> Self {
        Self {
            settled,
            outcome,
            stop,
        }
    }
}

/// A `persister.write` span for one event, whose parent is the span that
/// appended it (its `traceparent`, carried in the stream entry). Ids and
/// numbers only, never the body.
fn write_span(event: &StreamEvent, entry: &str, traceparent: &str) -> tracing::Span {
    use tracing::field::Empty;
    let span = match event {
        StreamEvent::Message(m) => tracing::info_span!(
            "persister.write",
            otel.kind = "consumer",
            event = "message",
            chat_id = %m.chat_id,
            seq = m.seq,
            message_id = %m.id,
            entry,
            batch = Empty,
            outcome = Empty,
            otel.status_code = Empty,
        ),
        StreamEvent::Read {
            chat_id, up_to_seq, ..
        } => tracing::info_span!(
            "persister.write",
            otel.kind = "consumer",
            event = "read",
            chat_id = %chat_id,
            seq = *up_to_seq,
            message_id = Empty,
            entry,
            batch = Empty,
            outcome = Empty,
            otel.status_code = Empty,
        ),
    };
    chat_shared::telemetry::set_remote_parent(&span, traceparent);
    span
}
