//! HTTP routes. Handlers are thin: extract (authentication and parsing happen
//! in extractors and domain constructors), call the service, shape the answer.
//!
//! - [`chats`]: `/api/chats…` and `/api/unread`;
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`;
//! - [`ws`]: who may open a `/ws` session (the upgrade is [`crate::upgrade`]);
//! - [`dev`]: `/dev/*` and the demo client (only with `--dev`).

pub mod chats;
pub mod dev;
pub mod health;
pub mod ws;

use crate::error::{json_error_handler, path_error_handler, query_error_handler};
use actix_web::web;

/// Largest JSON request body accepted by the REST API.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_JSON_BYTES)
            .error_handler(json_error_handler),
    )
    .app_data(web::QueryConfig::default().error_handler(query_error_handler))
    .app_data(web::PathConfig::default().error_handler(path_error_handler))
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(health::metrics))
    .route("/ws", web::get().to(ws::plain_get))
    .route("/api/chats", web::post().to(chats::create))
    .route("/api/chats", web::get().to(chats::list))
    .route("/api/chats/{id}/messages", web::get().to(chats::history))
    .route("/api/chats/{id}/read", web::post().to(chats::read))
    .route("/api/unread", web::get().to(chats::unread));
}
