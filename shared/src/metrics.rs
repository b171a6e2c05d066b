//! Metrics of the shared engines: Redis commands and MongoDB commands.
//!
//! They describe the process's connections rather than one component, so they
//! live in the process-wide default registry (which every `/metrics` endpoint
//! renders next to its own, see [`crate::telemetry::render_metrics`]). Labels
//! are bounded: a fixed operation name, or the MongoDB command name.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use std::sync::LazyLock;
use std::time::Duration;

/// Buckets for store and broker round trips: 100 µs … 5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Redis operations, as labelled (exported from the start, at zero).
pub const REDIS_OPS: &[&str] = &[
    "append",
    "wait",
    "publish",
    "recent",
    "ping",
    "presence",
    "subscribe",
    "stream",
];

/// MongoDB commands the store issues (others appear when first used).
const MONGO_COMMANDS: &[&str] = &[
    "insert",
    "update",
    "find",
    "aggregate",
    "createIndexes",
    "ping",
];

/// Redis command latency and failures.
pub struct RedisMetrics {
    /// `chat_redis_command_seconds{op}`.
    pub seconds: HistogramVec,
    /// `chat_redis_errors_total{op}`.
    pub errors: IntCounterVec,
    /// `chat_pubsub_reconnects_total`.
    pub pubsub_reconnects: prometheus::IntCounter,
}

/// MongoDB command counts, failures and latency (from the driver's command
/// monitoring, so every round trip is counted, whoever issued it).
pub struct MongoMetrics {
    /// `chat_mongo_commands_total{command}`.
    pub commands: IntCounterVec,
    /// `chat_mongo_errors_total{command}`.
    pub errors: IntCounterVec,
    /// `chat_mongo_command_seconds{command}`.
    pub seconds: HistogramVec,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Registration only fails for a duplicate name, i.e. a bug caught by the
    // metric tests; the metric still works unregistered.
    if let Err(e) = prometheus::default_registry().register(Box::new(c.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    c
}

fn histogram(name: &str, help: &str, label: &str) -> HistogramVec {
    register(
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
            &[label],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}")),
    )
}

fn counter(name: &str, help: &str, label: &str) -> IntCounterVec {
    register(
        IntCounterVec::new(Opts::new(name, help), &[label])
            .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}")),
    )
}

/// The process's Redis metrics.
pub static REDIS: LazyLock<RedisMetrics> = LazyLock::new(|| {
    let m = RedisMetrics {
        seconds: histogram(
            "chat_redis_command_seconds",
            "Redis command latency, by operation",
            "op",
        ),
        errors: counter(
            "chat_redis_errors_total",
            "Failed or timed-out Redis commands, by operation",
            "op",
        ),
        pubsub_reconnects: register(
            prometheus::IntCounter::new(
                "chat_pubsub_reconnects_total",
                "Pub/sub connections re-established after a loss",
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
        ),
    };
    for op in REDIS_OPS {
        m.errors.with_label_values(&[op]);
        m.seconds.with_label_values(&[op]);
    }
    m
});

/// The process's MongoDB metrics.
pub static MONGO: LazyLock<MongoMetrics> = LazyLock::new(|| {
    let m = MongoMetrics {
        commands: counter(
            "chat_mongo_commands_total",
            "MongoDB commands sent (round trips), by command",
            "command",
        ),
        errors: counter(
            "chat_mongo_errors_total",
            "Failed MongoDB commands, by command",
            "command",
        ),
        seconds: histogram(
            "chat_mongo_command_seconds",
            "MongoDB command latency including the network, by command",
            "command",
        ),
    };
    for c in MONGO_COMMANDS {
        m.commands.with_label_values(&[c]);
        m.errors.with_label_values(&[c]);
    }
    m
});

impl RedisMetrics {
    /// Records one operation's outcome.
    pub fn observe(&self, op: &str, took: Duration, ok: bool) {
        self.seconds
            .with_label_values(&[op])
            .observe(took.as_secs_f64());
        if !ok {
            self.errors.with_label_values(&[op]).inc();
        }
    }
}

/// The driver's command monitoring, feeding [`MONGO`].
pub fn mongo_command_handler() -> mongodb::event::EventHandler<mongodb::event::command::CommandEvent>
{
    use mongodb::event::command::CommandEvent;
    mongodb::event::EventHandler::callback(|event: CommandEvent| match event {
        CommandEvent::Started(e) => {
            MONGO.commands.with_label_values(&[&e.command_name]).inc();
        }
        CommandEvent::Succeeded(e) => {
            MONGO
                .seconds
                .with_label_values(&[&e.command_name])
                .observe(e.duration.as_secs_f64());
        }
        CommandEvent::Failed(e) => {
            MONGO.errors.with_label_values(&[&e.command_name]).inc();
            MONGO
                .seconds
                .with_label_values(&[&e.command_name])
                .observe(e.duration.as_secs_f64());
        }
        _ => {}
    })
}

/// Makes sure the engine metrics are registered (exported at zero before any use).
pub fn init() {
    LazyLock::force(&REDIS);
    LazyLock::force(&MONGO);
}
