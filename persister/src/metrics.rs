//! Persister metrics (prefix `chat_persister_`), registered in a per-instance
//! registry so several persisters can live in one test process.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Stages labelled in `chat_persister_errors_total`, exported from the start at zero.
const STAGES: &[&str] = &[
    "read", "claim", "trim", "decode", "store", "rejected", "ack", "publish",
];

/// The persister's metrics.
#[derive(Clone)]
pub struct PersisterMetrics {
    /// Batches applied.
    pub batches: IntCounter,
    /// Events per batch.
    pub batch_size: Histogram,
    /// Batches that timed out and are being replayed in smaller pieces.
    pub batch_splits: IntCounter,
    /// Seconds to apply a batch to the store.
    pub write_seconds: Histogram,
    /// Messages newly written.
    pub messages_written: IntCounter,
    /// Messages seen again in a replay (not written twice).
    pub messages_replayed: IntCounter,
    /// Failures by stage (`read`, `store`, `rejected`, `ack`, `publish`, `decode`, `claim`, `trim`).
    pub errors: IntCounterVec,
    /// Entries moved to the dead-letter stream.
    pub dead_letters: IntCounter,
    /// Entries taken over from dead consumers.
    pub claimed: IntCounter,
    /// Entries trimmed from the stream after being persisted.
    pub trimmed: IntCounter,
    /// Entries delivered to a persister but not yet acknowledged.
    pub pending: IntGauge,
    /// Entries in the stream not yet delivered to any persister.
    pub undelivered: IntGauge,
}

impl PersisterMetrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            batches: IntCounter::new(
                "chat_persister_batches_total",
                "Batches applied to the store",
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new("chat_persister_batch_size", "Events per applied batch")
                    .buckets(vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0]),
            )?,
            batch_splits: IntCounter::new(
                "chat_persister_batch_splits_total",
                "Batches that timed out in the store and are replayed in halves",
            )?,
            write_seconds: Histogram::with_opts(HistogramOpts::new(
                "chat_persister_write_seconds",
                "Time to apply one batch to the store",
            ))?,
            messages_written: IntCounter::new(
                "chat_persister_messages_written_total",
                "Messages inserted into the store",
            )?,
            messages_replayed: IntCounter::new(
                "chat_persister_messages_replayed_total",
                "Messages delivered again that were already stored",
            )?,
            errors: IntCounterVec::new(
                Opts::new("chat_persister_errors_total", "Persister failures by stage"),
                &["stage"],
            )?,
            dead_letters: IntCounter::new(
                "chat_persister_dead_letters_total",
                "Stream entries moved to the dead-letter stream",
            )?,
            claimed: IntCounter::new(
                "chat_persister_claimed_total",
                "Stream entries taken over from dead consumers",
            )?,
            trimmed: IntCounter::new(
                "chat_persister_trimmed_total",
                "Persisted stream entries trimmed",
            )?,
            pending: IntGauge::new(
                "chat_persister_pending",
                "Stream entries delivered but not yet acknowledged",
            )?,
            undelivered: IntGauge::new(
                "chat_persister_stream_lag",
                "Stream entries not yet delivered to any persister",
            )?,
        };
        for stage in STAGES {
            m.errors.with_label_values(&[stage]);
        }
        registry.register(Box::new(m.batches.clone()))?;
        registry.register(Box::new(m.batch_size.clone()))?;
        registry.register(Box::new(m.batch_splits.clone()))?;
        registry.register(Box::new(m.write_seconds.clone()))?;
        registry.register(Box::new(m.messages_written.clone()))?;
        registry.register(Box::new(m.messages_replayed.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.claimed.clone()))?;
        registry.register(Box::new(m.trimmed.clone()))?;
        registry.register(Box::new(m.pending.clone()))?;
        registry.register(Box::new(m.undelivered.clone()))?;
        Ok(m)
    }
}
