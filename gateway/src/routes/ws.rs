//! `/ws`: who may open a WebSocket session. The upgrade itself happens below
//! the web application, in [`crate::upgrade`]; a `GET /ws` that is not an
//! upgrade request reaches the route here and gets the same answers.

use crate::authn::verify;
use crate::error::ApiError;
use crate::startup::AppState;
use actix_web::dev::RequestHead;
use actix_web::{web, HttpRequest};
use chat_shared::auth::Identity;
use chat_shared::protocol::ErrorCode;

/// Decides whether a request may open a session. Every refusal is an HTTP
/// status before the upgrade: 503 draining, 401 bad token, 403 role or origin,
/// 429 too many sessions.
pub fn admit(head: &RequestHead, state: &AppState) -> Result<Identity, ApiError> {
    if state.draining.is_cancelled() {
        return Err(ApiError::new(ErrorCode::Unavailable, "node is draining"));
    }
    let identity = verify(&state.verifier, head, true)?;
    if !identity.role.is_participant() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("role {} may not chat", identity.role),
        ));
    }
    if !origin_allowed(head, &state.allowed_origins) {
        return Err(ApiError::new(ErrorCode::Forbidden, "origin not allowed"));
    }
    if state.hub.session_count(&identity.user_id) >= state.max_sessions_per_user {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many sessions for this user",
        ));
    }
    Ok(identity)
}

/// The error for a request to `/ws` that is not a WebSocket upgrade.
pub fn not_an_upgrade(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Invalid,
        format!("not a WebSocket upgrade: {why}"),
    )
}

/// `GET /ws` without `Upgrade: websocket`: the admission answer if it is a
/// refusal, else 400.
pub async fn plain_get(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<actix_web::HttpResponse, ApiError> {
    admit(req.head(), &state)?;
    Err(not_an_upgrade("no Upgrade: websocket header"))
}

/// With `ALLOWED_ORIGINS` set, a browser's `Origin` must be in it (this is what
/// stops cross-site WebSocket hijacking). Non-browser clients send no `Origin`.
fn origin_allowed(head: &RequestHead, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match head.headers().get(actix_web::http::header::ORIGIN) {
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
