//! Black-box tests of the cluster path: real Redis, real MongoDB wire server,
//! gateways and persister as `main` builds them, driven over WebSocket and HTTP.
//! One binary, one module per feature.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod access;
mod bad_input;
mod chats;
mod dev;
mod drain;
mod helpers;
mod limits;
mod messaging;
mod metrics;
mod persistence;
mod presence;
mod redis_cluster;
mod unread;
mod upgrade;
