//! The wire contract (`PROTOCOL.md`): every frame and REST body, as types.
//!
//! - [`client`]: frames a client sends, parsed once into validated commands;
//! - [`server`]: frames the server sends;
//! - [`model`]: the `Message` and `Chat` objects both of them carry;
//! - [`rest`]: request and response bodies of the HTTP API, and error codes.

pub mod client;
pub mod model;
pub mod rest;
pub mod server;

pub use client::{ClientFrame, FrameError, RequestId, MAX_FRAME_BYTES, MAX_SYNC_CHATS};
pub use model::{Chat, DisplayName, Message, Peer};
pub use rest::ErrorCode;
pub use server::ServerFrame;
