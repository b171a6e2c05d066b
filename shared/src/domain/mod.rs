//! Domain types that parse untrusted input once, at the edge.
//!
//! Every value here has a private field and a `parse` constructor: once a
//! `ChatId` or a `MessageBody` exists, the rules it stands for have been checked,
//! so the gateway and persister core never re-validate (or forget to).

mod body;
mod ids;
mod role;
mod timestamp;

pub use body::{BodyError, MessageBody, DEFAULT_MAX_MESSAGE_CHARS};
pub use ids::{AppointmentId, ChatId, ClientMsgId, IdError, MessageId, SessionId, UserId};
pub use role::Role;
pub use timestamp::Timestamp;
