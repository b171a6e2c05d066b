//! Errors of the REST API and their JSON form `{"error":{"code","message"}}`.

use crate::service::ServiceError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use chat_shared::protocol::rest::{ErrorBody, ErrorDetail};
use chat_shared::protocol::ErrorCode;

/// An error answered by a REST handler.
#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    /// Contract error code (decides the status).
    pub code: ErrorCode,
    /// Safe explanation for the client.
    pub message: String,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        if self.code == ErrorCode::RateLimited {
            resp.insert_header(("Retry-After", "1"));
        }
        resp.json(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
            },
        })
    }
}

/// Turns actix's JSON/query extraction failures into contract errors.
pub fn json_error_handler(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError;
    let code = match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ErrorCode::TooLarge
        }
        _ => ErrorCode::Invalid,
    };
    ApiError::new(code, format!("bad request body: {err}")).into()
}

/// Query-string extraction failures → `invalid`.
pub fn query_error_handler(
    err: actix_web::error::QueryPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::new(ErrorCode::Invalid, format!("bad query: {err}")).into()
}

/// Path extraction failures → `not_found` (a malformed chat id names no chat).
pub fn path_error_handler(
    err: actix_web::error::PathError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::new(ErrorCode::NotFound, format!("no such resource: {err}")).into()
}
