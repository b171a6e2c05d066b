//! HTTP API bodies and the error vocabulary shared with WebSocket `error` frames.

use super::model::{Chat, DisplayName, Message};
use crate::domain::{AppointmentId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every error code of the contract, with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 401: missing, bad or expired token.
    Unauthorized,
    /// 403: the role may not do this.
    Forbidden,
    /// 404: no such thing, or not yours (indistinguishable on purpose).
    NotFound,
    /// 400: malformed input.
    Invalid,
    /// 413: a frame or body over its limit.
    TooLarge,
    /// 429: slow down (with a retry hint).
    RateLimited,
    /// 503: a dependency (broker, store) is unreachable or the node is draining.
    Unavailable,
}

impl ErrorCode {
    /// The HTTP status the REST API answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Invalid => 400,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
        }
    }

    /// The wire name, also used as a bounded metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Invalid => "invalid",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// `{"error":{"code","message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation; never contains message bodies or tokens.
    pub message: String,
}

/// `POST /api/chats` body, sent by the booking app when an appointment is booked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateChatRequest {
    /// The appointment that was booked.
    pub appointment_id: AppointmentId,
    /// The patient who booked it.
    pub patient_id: UserId,
    /// The doctor it was booked with.
    pub doctor_id: UserId,
    /// Shown to the doctor.
    #[serde(default)]
    pub patient_name: Option<DisplayName>,
    /// Shown to the patient.
    #[serde(default)]
    pub doctor_name: Option<DisplayName>,
}

/// `GET /api/chats` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatList {
    /// Most recent activity first.
    pub chats: Vec<Chat>,
}

/// `GET /api/chats/{id}/messages` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// Only messages with a higher `seq` (paging forward).
    pub after_seq: Option<u64>,
    /// Only messages with a lower `seq` (paging backward).
    pub before_seq: Option<u64>,
    /// Page size: default 50, at most 200.
    pub limit: Option<u32>,
}

/// `GET /api/chats/{id}/messages` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagePage {
    /// Ascending `seq`.
    pub messages: Vec<Message>,
    /// Whether more messages lie beyond this page in the direction of travel.
    pub has_more: bool,
}

/// `POST /api/chats/{id}/read` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadRequest {
    /// Everything up to and including this `seq` has been read.
    pub up_to_seq: u64,
}

/// `GET /api/unread` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnreadSummary {
    /// Sum over all chats.
    pub total: u64,
    /// Per chat id (chats with zero unread included).
    pub chats: BTreeMap<String, u64>,
}
