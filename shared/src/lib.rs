//! Shared building blocks of the chat system: the wire contract, the domain
//! types that guard it, authentication, configuration, logging, and the two
//! interfaces everything else is written against — the broker and the store.
//!
//! # Layout
//!
//! - [`domain`]: identifiers, message bodies, roles, timestamps — parsed once at the edge;
//! - [`protocol`]: every WebSocket frame and REST body of `PROTOCOL.md`;
//! - [`auth`]: JWT verification with a pinned algorithm (and HS256 signing for dev/tests);
//! - [`config`]: environment/flag groups validated into typed settings;
//! - [`telemetry`]: logging setup;
//! - [`metrics`]: Redis and MongoDB command metrics (process-wide);
//! - [`probe`]: `--healthcheck` for shell-less container images;
//! - [`broker`]: append-with-`seq`, publish/subscribe, recent window, consumer group —
//!   the [`broker::Broker`] and [`broker::EventLog`] traits and the Redis engine;
//! - [`store`]: chats, history and counters — the [`store::Store`] trait and the MongoDB engine.

pub mod auth;
pub mod broker;
pub mod config;
pub mod domain;
pub mod metrics;
pub mod probe;
pub mod protocol;
pub mod store;
pub mod telemetry;
