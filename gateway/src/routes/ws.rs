//! `GET /ws`: authenticate, check the role and origin, then upgrade.

use crate::authn::authenticate;
use crate::error::ApiError;
use crate::session;
use crate::startup::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chat_shared::protocol::ErrorCode;

/// Upgrades to a WebSocket session. Every refusal is an HTTP status before the
/// upgrade: 401 bad token, 403 role or origin, 503 draining.
pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if state.draining.is_cancelled() {
        return Err(ApiError::new(ErrorCode::Unavailable, "node is draining"));
    }
    let identity = authenticate(&req, true)?;
    if !identity.role.is_participant() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("role {} may not chat", identity.role),
        ));
    }
    if !origin_allowed(&req, &state.allowed_origins) {
        return Err(ApiError::new(ErrorCode::Forbidden, "origin not allowed"));
    }
    if state.hub.session_count(&identity.user_id) >= state.max_sessions_per_user {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many sessions for this user",
        ));
    }
    let (response, socket, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::new(ErrorCode::Invalid, format!("not a WebSocket upgrade: {e}")))?;
    actix_web::rt::spawn(session::run(state, identity, socket, stream));
    Ok(response)
}

/// With `ALLOWED_ORIGINS` set, a browser's `Origin` must be in it (this is what
/// stops cross-site WebSocket hijacking). Non-browser clients send no `Origin`.
fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match req.headers().get(actix_web::http::header::ORIGIN) {
        None => true,
        Some(o) => o
            .to_str()
            .map(|o| {
                allowed
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(o.trim_end_matches('/')))
            })
            .unwrap_or(false),
    }
}
