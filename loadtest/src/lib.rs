//! `chat-loadtest`: a load generator that speaks the chat contract (`PROTOCOL.md`).
//!
//! Three scenarios, each callable from this library (the integration test runs
//! them tiny against a real gateway) and from the `chat-loadtest` binary:
//!
//! - [`idle`]: open many authenticated WebSocket sessions, hold them, and read
//!   the gateway processes' RSS before and after — bytes per idle connection;
//! - [`chat`]: patient–doctor pairs spread over the gateway nodes send at a fixed
//!   total rate, open-loop (every send is scheduled; its latency is measured
//!   from the *scheduled* time, so a slow server cannot hide behind the
//!   generator waiting — no coordinated omission); ack and end-to-end delivery
//!   latency go into HDR histograms;
//! - [`storm`]: many clients drop at once, messages arrive while they are away,
//!   and all of them reconnect and `sync` at once: time until everyone is
//!   resynced and how many messages were missed (must be 0).
//!
//! Layout: [`target`] (gateways, tokens, chat creation, source-address
//! spreading), [`client`] (one WebSocket connection), [`stats`] (histograms,
//! error tallies), [`rss`] (`/proc/<pid>/status`), [`report`] (tables and JSON),
//! [`error`].

pub mod chat;
pub mod client;
pub mod error;
pub mod idle;
pub mod report;
pub mod rss;
pub mod stats;
pub mod storm;
pub mod target;

pub use error::{Error, Result};
pub use target::{Target, TokenSource};
