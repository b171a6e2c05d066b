//! Who is calling: bearer tokens from the `Authorization` header (or, for the
//! WebSocket upgrade only, the `access_token` query parameter, because browsers
//! cannot set headers on WebSocket requests), and the role gates.
//!
//! Failures happen before any work: 401 for a missing/bad/expired token, 403 for
//! a role that may not use the endpoint.

use crate::error::ApiError;
use crate::startup::AppState;
use actix_web::dev::{Payload, RequestHead};
use actix_web::{web, FromRequest, HttpRequest};
use chat_shared::auth::{AuthError, Identity, TokenVerifier};
use chat_shared::domain::Role;
use chat_shared::protocol::ErrorCode;
use std::future::{ready, Ready};

/// Reads the bearer token of a request; `allow_query` also accepts `?access_token=`.
pub fn bearer_token(req: &RequestHead, allow_query: bool) -> Option<String> {
    if let Some(h) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let h = h.to_str().ok()?;
        let (scheme, token) = h.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    if allow_query {
        return web::Query::<std::collections::HashMap<String, String>>::from_query(
            req.uri.query().unwrap_or_default(),
        )
        .ok()
        .and_then(|q| q.get("access_token").cloned());
    }
    None
}

/// Verifies the request's token.
pub fn authenticate(req: &HttpRequest, allow_query: bool) -> Result<Identity, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "application state missing"))?;
    verify(&state.verifier, req.head(), allow_query)
}

/// Verifies the token of a request head (also used before the WebSocket
/// upgrade, where there is no `HttpRequest`).
pub fn verify(
    verifier: &TokenVerifier,
    head: &RequestHead,
    allow_query: bool,
) -> Result<Identity, ApiError> {
    let token = bearer_token(head, allow_query).ok_or_else(|| unauthorized(AuthError::Missing))?;
    verifier.verify(&token).map_err(unauthorized)
}

fn unauthorized(e: AuthError) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, e.to_string())
}

/// A patient or doctor (the only roles that chat).
pub struct Participant(pub Identity);

impl FromRequest for Participant {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req, false).and_then(|id| {
            if id.role.is_participant() {
                Ok(Participant(id))
            } else {
                Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("role {} may not use chats", id.role),
                ))
            }
        }))
    }
}

/// The booking app (`service` role): may only create chats.
pub struct ServiceCaller(pub Identity);

impl FromRequest for ServiceCaller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req, false).and_then(|id| {
            if id.role == Role::Service {
                Ok(ServiceCaller(id))
            } else {
                Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "only the service role may create chats",
                ))
            }
        }))
    }
}
