//! Persister metrics (prefix `chat_persister_`), registered in a per-instance
//! registry so several persisters can live in one test process.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

/// The persister's metrics.
#[derive(Clone)]
pub struct PersisterMetrics {
    /// Batches applied.
    pub batches: IntCounter,
    /// Events per batch.
    pub batch_size: Histogram,
    /// Seconds to apply a batch to the store.
    pub write_seconds: Histogram,
    /// Messages newly written.
    pub messages_written: IntCounter,
    /// Messages seen again in a replay (not written twice).
    pub messages_replayed: IntCounter,
    /// Failures by stage (`read`, `store`, `ack`, `publish`, `decode`).
    pub errors: IntCounterVec,
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
        };
        registry.register(Box::new(m.batches.clone()))?;
        registry.register(Box::new(m.batch_size.clone()))?;
        registry.register(Box::new(m.write_seconds.clone()))?;
        registry.register(Box::new(m.messages_written.clone()))?;
        registry.register(Box::new(m.messages_replayed.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        Ok(m)
    }
}
