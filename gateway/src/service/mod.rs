//! The operations behind both the REST API and the WebSocket frames, written
//! against the [`Broker`] and [`Store`] traits so that every engine runs the
//! same logic.
//!
//! - [`messages`]: send (→ where a message is published), read marks, typing, history;
//! - [`chats`]: chat creation by the booking app, listings, unread summaries.

pub mod chats;
pub mod messages;

use crate::access::{Access, AccessError};
use chat_shared::broker::{Broker, BrokerError, Presence};
use chat_shared::protocol::ErrorCode;
use chat_shared::store::{Store, StoreError};
use std::sync::Arc;

/// Why an operation failed, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No such chat, or not yours.
    #[error("chat not found")]
    NotFound,
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// The broker or store is unreachable; nothing was stored.
    #[error("temporarily unavailable, try again")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ServiceError {
    /// The contract error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::NotFound => ErrorCode::NotFound,
            ServiceError::Invalid(_) => ErrorCode::Invalid,
            ServiceError::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

impl From<BrokerError> for ServiceError {
    fn from(e: BrokerError) -> Self {
        tracing::warn!(error = %e, "broker call failed");
        ServiceError::Unavailable(Box::new(e))
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "store call failed");
        ServiceError::Unavailable(Box::new(e))
    }
}

impl From<AccessError> for ServiceError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::NotFound => ServiceError::NotFound,
            AccessError::Store(s) => s.into(),
        }
    }
}

/// Everything the operations need; cheap to share.
pub struct ChatService {
    /// The broker engine.
    pub broker: Arc<dyn Broker>,
    /// The store engine.
    pub store: Arc<dyn Store>,
    /// Access decisions.
    pub access: Access,
    /// Who is online (for `peer.online`).
    pub presence: Arc<dyn Presence>,
}
