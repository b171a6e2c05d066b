//! The chat gateway: a stateless actix-web node holding WebSocket sessions and
//! serving the REST API. Any number of them run behind a load balancer; they
//! meet only through the broker (Redis) and the store (MongoDB).
//!
//! # Layout
//!
//! - [`configuration`]: flags/environment, validated once into [`configuration::Settings`];
//! - [`startup`]: builds the engines, the shared state and the HTTP server;
//! - [`dev`]: `--dev` demo users, chats and token minting (the client is in `web/`);
//! - [`routes`]: thin HTTP handlers (REST, health, metrics, the `/ws` upgrade);
//! - [`authn`]: bearer-token extraction and role gates (401/403 before any work);
//! - [`access`]: who may touch which chat — the one place access is decided;
//! - [`service`]: the operations behind both REST and WebSocket (send, read,
//!   history, chats, unread), written against the broker and store traits;
//! - [`upgrade`]: the WebSocket upgrade, taken below the web application (`/ws`);
//! - [`session`]: one WebSocket connection — frames on the wire, read loop, frame
//!   handlers, bounded outbound queue;
//! - [`hub`]: this node's users and their sessions; fans broker deliveries out;
//! - [`limits`]: per-user send rate and session cap;
//! - [`presence`]: who is online — heartbeats, reaping, announcements to chat peers;
//! - [`recovery`]: catching up on events missed while the broker subscription was down;
//! - [`metrics`]: Prometheus metrics;
//! - [`tls`]: optional direct TLS (`TLS_CERT_FILE`, `TLS_KEY_FILE`);
//! - [`error`]: the REST error type and its JSON form.

pub mod access;
pub mod authn;
pub mod configuration;
pub mod dev;
pub mod error;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod presence;
pub mod recovery;
pub mod routes;
pub mod service;
pub mod session;
pub mod startup;
pub mod tls;
pub mod upgrade;
