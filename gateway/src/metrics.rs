//! Gateway metrics (prefix `chat_`, catalogue in `deploy/README.md`). Labels
//! are bounded: frame types, close codes and error codes only — never a user
//! id, chat id or token. Each application has its own registry (tests run
//! several nodes in one process); the Redis and MongoDB command metrics are
//! process-wide ([`chat_shared::metrics`]).

use chat_shared::protocol::ErrorCode;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Buckets for in-node latencies: 250 µs … 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Close codes this node uses or sees, exported from the start at zero.
const CLOSE_CODES: &[&str] = &[
    "1000", "1001", "1006", "1008", "1011", "1012", "1013", "4001", "4003", "4008",
];

/// Error codes of the contract, exported from the start at zero.
const ERROR_CODES: &[ErrorCode] = &[
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::Invalid,
    ErrorCode::TooLarge,
    ErrorCode::RateLimited,
    ErrorCode::Unavailable,
];

/// The gateway's metrics (names in `deploy/README.md`; labels are bounded:
/// never a user id, chat id or token).
#[derive(Clone)]
pub struct GatewayMetrics {
    /// Where they are registered (rendered by `/metrics`).
    pub registry: Registry,
    /// `chat_connections`.
    pub connections: IntGauge,
    /// `chat_connects_total`.
    pub connects: IntCounter,
    /// `chat_disconnects_total{code}`.
    pub disconnects: IntCounterVec,
    /// `chat_frames_in_total{type}`.
    pub frames_in: IntCounterVec,
    /// `chat_frames_out_total{type}`.
    pub frames_out: IntCounterVec,
    /// `chat_send_ack_seconds`.
    pub send_ack: Histogram,
    /// `chat_delivery_seconds`.
    pub delivery: Histogram,
    /// `chat_messages_accepted_total`.
    pub accepted: IntCounter,
    /// `chat_messages_delivered_total`.
    pub delivered: IntCounter,
    /// `chat_messages_refused_total{code}`.
    pub refused: IntCounterVec,
    /// `chat_errors_total{code}`.
    pub errors: IntCounterVec,
    /// `chat_slow_consumer_disconnects_total`.
    pub slow_consumers: IntCounter,
    /// `chat_rate_limited_total`.
    pub rate_limited: IntCounter,
    /// `chat_online_users`.
    pub online_users: IntGauge,
    /// `chat_ready`.
    pub ready: IntGauge,
}

impl GatewayMetrics {
    /// Creates and registers every metric.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let latency = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
        };
        let m = Self {
            connections: IntGauge::new("chat_connections", "Open WebSocket sessions on this node")?,
            connects: IntCounter::new("chat_connects_total", "WebSocket upgrades accepted")?,
            disconnects: IntCounterVec::new(
                Opts::new("chat_disconnects_total", "Sessions closed, by close code"),
                &["code"],
            )?,
            frames_in: IntCounterVec::new(
                Opts::new("chat_frames_in_total", "Client frames received, by type"),
                &["type"],
            )?,
            frames_out: IntCounterVec::new(
                Opts::new(
                    "chat_frames_out_total",
                    "Server frames sent as replies, by type",
                ),
                &["type"],
            )?,
            send_ack: latency(
                "chat_send_ack_seconds",
                "Send frame received to ack queued to the sender",
            )?,
            delivery: latency(
                "chat_delivery_seconds",
                "Message accepted (created_at) to handed to a recipient session on this node",
            )?,
            accepted: IntCounter::new(
                "chat_messages_accepted_total",
                "Messages accepted and acknowledged to senders",
            )?,
            delivered: IntCounter::new(
                "chat_messages_delivered_total",
                "Message events handed to local sessions",
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "chat_messages_refused_total",
                    "Sends refused, by error code",
                ),
                &["code"],
            )?,
            errors: IntCounterVec::new(
                Opts::new("chat_errors_total", "Error frames sent, by code"),
                &["code"],
            )?,
            slow_consumers: IntCounter::new(
                "chat_slow_consumer_disconnects_total",
                "Sessions closed with 1013 because their queue filled",
            )?,
            rate_limited: IntCounter::new(
                "chat_rate_limited_total",
                "Sends refused by the per-user rate limit",
            )?,
            online_users: IntGauge::new(
                "chat_online_users",
                "Distinct users with at least one session on this node",
            )?,
            ready: IntGauge::new("chat_ready", "1 when /readyz answers 200")?,
            registry,
        };
        m.registry.register(Box::new(m.connections.clone()))?;
        m.registry.register(Box::new(m.connects.clone()))?;
        m.registry.register(Box::new(m.disconnects.clone()))?;
        m.registry.register(Box::new(m.frames_in.clone()))?;
        m.registry.register(Box::new(m.frames_out.clone()))?;
        m.registry.register(Box::new(m.send_ack.clone()))?;
        m.registry.register(Box::new(m.delivery.clone()))?;
        m.registry.register(Box::new(m.accepted.clone()))?;
        m.registry.register(Box::new(m.delivered.clone()))?;
        m.registry.register(Box::new(m.refused.clone()))?;
        m.registry.register(Box::new(m.errors.clone()))?;
        m.registry.register(Box::new(m.slow_consumers.clone()))?;
        m.registry.register(Box::new(m.rate_limited.clone()))?;
        m.registry.register(Box::new(m.online_users.clone()))?;
        m.registry.register(Box::new(m.ready.clone()))?;
        for code in CLOSE_CODES {
            m.disconnects.with_label_values(&[code]);
        }
        for code in ERROR_CODES {
            m.refused.with_label_values(&[code.as_str()]);
            m.errors.with_label_values(&[code.as_str()]);
        }
        Ok(m)
    }
}
