//! The persister: consumes the durable event stream and writes messages, chats'
//! counters and read marks to the store, idempotently, then tells users their
//! new unread counts.
//!
//! # Layout
//!
//! - [`apply`]: the batch logic — insert messages, recompute counters per chat
//!   with optimistic concurrency; written against the `Store` trait only;
//! - [`worker`]: the loop — read a batch, apply, acknowledge, publish `unread`;
//!   back-off and cancellation;
//! - [`batch_limit`]: how many events go to the store at once (less after a
//!   batch timed out, so a replay cannot time out for ever);
//! - [`metrics`]: Prometheus metrics of the loop;
//! - [`configuration`]: flags/environment, validated once;
//! - [`startup`]: wires engines, the worker and the small HTTP server
//!   (`/healthz`, `/readyz`, `/metrics`).

pub mod apply;
pub mod batch_limit;
pub mod configuration;
pub mod metrics;
pub mod startup;
pub mod worker;
