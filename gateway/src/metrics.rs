//! Gateway metrics (prefix `chat_`). Labels are bounded: frame types and error
//! codes only — never a user id, chat id or token.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The gateway's metrics, in a per-application registry (several apps may run
/// in one test process).
#[derive(Clone)]
pub struct GatewayMetrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Open WebSocket sessions on this node.
    pub connections: IntGauge,
    /// Frames received, by type (`invalid` for unparsable ones).
    pub frames_in: IntCounterVec,
    /// Frames sent as direct replies, by type.
    pub frames_out: IntCounterVec,
    /// Messages acknowledged to senders (duplicates included).
    pub acks: IntCounter,
    /// Frames fanned out to local sessions from the broker.
    pub deliveries: IntCounter,
    /// Errors answered, by code.
    pub errors: IntCounterVec,
    /// Sessions closed, by close code.
    pub disconnects: IntCounterVec,
    /// Sends refused by the per-user rate limit.
    pub rate_limited: IntCounter,
}

impl GatewayMetrics {
    /// Creates and registers every metric.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let m = Self {
            connections: IntGauge::new("chat_connections", "Open WebSocket sessions on this node")?,
            frames_in: IntCounterVec::new(
                Opts::new("chat_frames_in_total", "WebSocket frames received, by type"),
                &["type"],
            )?,
            frames_out: IntCounterVec::new(
                Opts::new(
                    "chat_frames_out_total",
                    "WebSocket frames sent as replies, by type",
                ),
                &["type"],
            )?,
            acks: IntCounter::new(
                "chat_messages_acked_total",
                "Messages acknowledged to senders",
            )?,
            deliveries: IntCounter::new(
                "chat_deliveries_total",
                "Broker events delivered to local sessions",
            )?,
            errors: IntCounterVec::new(
                Opts::new("chat_errors_total", "Errors answered to clients, by code"),
                &["code"],
            )?,
            disconnects: IntCounterVec::new(
                Opts::new("chat_disconnects_total", "Sessions closed, by close code"),
                &["code"],
            )?,
            rate_limited: IntCounter::new(
                "chat_rate_limited_total",
                "Sends refused by the per-user rate limit",
            )?,
            registry,
        };
        m.registry.register(Box::new(m.connections.clone()))?;
        m.registry.register(Box::new(m.frames_in.clone()))?;
        m.registry.register(Box::new(m.frames_out.clone()))?;
        m.registry.register(Box::new(m.acks.clone()))?;
        m.registry.register(Box::new(m.deliveries.clone()))?;
        m.registry.register(Box::new(m.errors.clone()))?;
        m.registry.register(Box::new(m.disconnects.clone()))?;
        m.registry.register(Box::new(m.rate_limited.clone()))?;
        Ok(m)
    }
}
