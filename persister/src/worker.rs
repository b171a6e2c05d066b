//! The persister loop: read → apply → acknowledge → announce.
//!
//! An entry is acknowledged only after the store confirmed every write of its
//! batch, so a crash anywhere before that means the entry is delivered again and
//! applied again — harmlessly (see [`crate::apply`]). Entries that cannot be
//! decoded are never acknowledged: they stay pending for an operator instead of
//! vanishing.

use crate::apply::{apply_batch, unread_total, BatchOutcome};
use crate::metrics::PersisterMetrics;
use chat_shared::broker::{Broker, Envelope, EventLog, StreamEvent};
use chat_shared::protocol::ServerFrame;
use chat_shared::store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Tuning of the loop.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Most entries per read.
    pub batch_size: usize,
    /// How long one read waits for new entries.
    pub block: Duration,
    /// First retry delay after a failure (doubles up to `max_backoff`).
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            batch_size: 256,
            block: Duration::from_millis(1000),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
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
}

impl Worker {
    /// Runs until `shutdown` is cancelled. A batch in progress is finished
    /// (or abandoned unacknowledged, which is safe) before returning.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = self.settings.min_backoff;
        while !shutdown.is_cancelled() {
            let ok = tokio::select! {
                _ = shutdown.cancelled() => break,
                ok = self.step() => ok,
            };
            if ok {
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
        let entries = match self
            .log
            .read_batch(self.settings.batch_size, self.settings.block)
            .await
        {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "reading the event stream failed");
                self.metrics.errors.with_label_values(&["read"]).inc();
                return false;
            }
        };
        if entries.is_empty() {
            return true;
        }
        let mut ids = Vec::with_capacity(entries.len());
        let mut events: Vec<StreamEvent> = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry.event {
                Ok(ev) => {
                    ids.push(entry.id);
                    events.push(ev);
                }
                Err(reason) => {
                    tracing::error!(entry = %entry.id, %reason, "undecodable stream entry left pending");
                    self.metrics.errors.with_label_values(&["decode"]).inc();
                }
            }
        }
        let started = Instant::now();
        let outcome = match apply_batch(self.store.as_ref(), &events).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, events = events.len(), "applying a batch failed; it will be replayed");
                self.metrics.errors.with_label_values(&["store"]).inc();
                self.log.replay_pending();
                return false;
            }
        };
        self.metrics
            .write_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batches.inc();
        self.metrics.batch_size.observe(events.len() as f64);
        self.metrics
            .messages_written
            .inc_by(outcome.inserted as u64);
        self.metrics
            .messages_replayed
            .inc_by((outcome.messages - outcome.inserted) as u64);
        if let Err(e) = self.log.ack(&ids).await {
            // The writes are done; a later replay of these entries is harmless.
            tracing::warn!(error = %e, "acknowledging a persisted batch failed");
            self.metrics.errors.with_label_values(&["ack"]).inc();
            self.log.replay_pending();
            return false;
        }
        self.announce(&outcome).await;
        true
    }

    /// Tells each affected user their new unread count and total.
    async fn announce(&self, outcome: &BatchOutcome) {
        let mut totals = BTreeMap::new();
        for change in &outcome.unread_changes {
            let total = match totals.get(&change.user_id) {
                Some(t) => *t,
                None => match unread_total(self.store.as_ref(), &change.user_id, change.role).await
                {
                    Ok(t) => {
                        totals.insert(change.user_id.clone(), t);
                        t
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "computing an unread total failed");
                        self.metrics.errors.with_label_values(&["publish"]).inc();
                        continue;
                    }
                },
            };
            let frame = ServerFrame::Unread {
                chat_id: change.chat_id,
                count: change.count,
                total,
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
