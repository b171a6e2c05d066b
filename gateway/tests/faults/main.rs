//! Fault injection: the guarantees of `shared/PROTOCOL.md` under crashes,
//! restarts, data loss, stalled clients and SIGTERM.
//!
//! Where the fault needs a real process, the gateway runs as the real
//! `chat-gateway` binary (killed with SIGKILL, sent SIGTERM, its RSS read from
//! `/proc`, its stdout/stderr captured and searched for patient data and
//! tokens). Redis and the MongoDB-wire server are real processes too (see
//! `chat-testkit`); the persister runs in this process, as in the api suite.
//! The suite does not share the api suite's harness, which builds gateways
//! in-process from `Settings`: this one only needs the binary and its
//! environment variables, as an operator does.
//!
//! - [`harness`]: the backend (Redis, MongoDB, persister), tokens, REST calls,
//!   polling and the delivery checks;
//! - [`process`]: a `chat-gateway` child process;
//! - [`conn`]: a WebSocket client that reports how a session ended instead of
//!   panicking, and a raw client that stops reading;
//! - one module per fault.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod conn;
mod harness;
mod process;

mod gateway_crash;
mod node_death;
mod redis_data_loss;
mod redis_restart;
mod sigterm_drain;
mod slow_consumer;
