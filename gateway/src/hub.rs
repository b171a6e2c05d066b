//! This node's users and their sessions.
//!
//! The hub is the broker's [`Inbox`]: every event published to a user held here
//! arrives once (one subscription per user per node, however many devices) and
//! is copied — as shared bytes, never re-serialized — into each of that user's
//! session queues. Queues are bounded; a full queue marks the session as a slow
//! consumer, which then closes with 1013 instead of making the node buffer
//! without bound (guarantee 7). The hub never blocks the broker's reader.

use crate::metrics::GatewayMetrics;
use crate::session::outbound::{Outbound, QueueSender};
use bytestring::ByteString;
use chat_shared::broker::{Envelope, Inbox};
use chat_shared::domain::{ChatId, Role, SessionId, Timestamp, UserId};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the hub keeps per session.
#[derive(Clone)]
pub struct SessionHandle {
    /// The session.
    pub id: SessionId,
    /// Its outbound queue.
    pub outbound: QueueSender,
    /// Cancelled when the queue overflowed: the session must close with 1013.
    pub slow: CancellationToken,
    /// The user's role (to find their chats when catching up).
    pub role: Role,
}

/// This node's sessions by user.
pub struct Hub {
    // A std mutex: held for a few pointer copies, never across an await.
    users: Mutex<HashMap<UserId, Vec<SessionHandle>>>,
    metrics: GatewayMetrics,
    /// Set when the broker subscription was lost and restored: the earliest
    /// moment from which events may be missing (see [`crate::recovery`]).
    catch_up: tokio::sync::watch::Sender<Option<Timestamp>>,
}

impl Hub {
    /// An empty hub.
    pub fn new(metrics: GatewayMetrics) -> Self {
        Self {
            users: Mutex::new(HashMap::new()),
            metrics,
            catch_up: tokio::sync::watch::channel(None).0,
        }
    }

    /// Catch-up requests (a moment from which events may be missing).
    pub fn catch_up_requests(&self) -> tokio::sync::watch::Receiver<Option<Timestamp>> {
        self.catch_up.subscribe()
    }

    /// Every user with a session here, with their role.
    pub fn local_users(&self) -> Vec<(UserId, Role)> {
        self.users()
            .iter()
            .filter_map(|(u, s)| s.first().map(|h| (u.clone(), h.role)))
            .collect()
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Vec<SessionHandle>>> {
        // A poisoned lock only means another thread panicked mid-update of a
        // Vec push/retain; the map itself is still consistent enough to serve.
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a session; returns true if it is the user's first on this node.
    pub fn register(&self, user: &UserId, handle: SessionHandle) -> bool {
        let mut users = self.users();
        // Most users have one session: no room for four until a second one.
        let sessions = users
            .entry(user.clone())
            .or_insert_with(|| Vec::with_capacity(1));
        sessions.push(handle);
        sessions.len() == 1
    }

    /// Removes a session; returns true if it was the user's last on this node.
    pub fn unregister(&self, user: &UserId, session: SessionId) -> bool {
        let mut users = self.users();
        let Some(sessions) = users.get_mut(user) else {
            return false;
        };
        sessions.retain(|s| s.id != session);
        if sessions.is_empty() {
            users.remove(user);
            true
        } else {
            false
        }
    }

    /// Whether `user` has a session on this node.
    pub fn is_local(&self, user: &UserId) -> bool {
        self.users().contains_key(user)
    }

    /// Number of `user`'s sessions on this node.
    pub fn session_count(&self, user: &UserId) -> usize {
        self.users().get(user).map_or(0, Vec::len)
    }

    /// Number of users with at least one session here.
    pub fn user_count(&self) -> usize {
        self.users().len()
    }

    /// Queues `item` for every session of `user` except `skip`; returns how
    /// many sessions took it.
    pub fn send_to_user(&self, user: &UserId, skip: Option<SessionId>, item: &Outbound) -> usize {
        let users = self.users();
        let Some(sessions) = users.get(user) else {
            return 0;
        };
        let mut queued = 0;
        for s in sessions.iter().filter(|s| Some(s.id) != skip) {
            match s.outbound.try_send(Box::new(item.clone())) {
                Ok(()) => queued += 1,
                Err(mpsc::error::TrySendError::Full(_)) => s.slow.cancel(),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        queued
    }
}

impl Inbox for Hub {
    fn deliver(&self, user: &UserId, envelope: Envelope) {
        let Ok(frame) = ByteString::try_from(envelope.frame) else {
            tracing::warn!("non-UTF-8 frame from the broker dropped");
            return;
        };
        // Parsed once per event (not per session): which chat and seq a
        // `message` event carries, so sessions can order and de-duplicate.
        let meta = message_meta(&frame);
        let item = match &meta {
            Some(m) => Outbound::Message {
                chat: m.chat_id,
                seq: m.seq,
                frame,
                live: true,
            },
            None => Outbound::Frame(frame),
        };
        let queued = self.send_to_user(user, envelope.origin, &item);
        if let (Some(m), true) = (meta, queued > 0) {
            self.metrics.delivered.inc_by(queued as u64);
            let age = (Timestamp::now().millis() - m.created_at.millis()).max(0);
            self.metrics.delivery.observe(age as f64 / 1000.0);
        }
    }

    fn wants(&self, user: &UserId) -> bool {
        self.is_local(user)
    }

    fn resubscribed(&self, since: Timestamp) {
        // Keep the earliest moment if a catch-up is already pending.
        self.catch_up.send_modify(|pending| {
            *pending = Some(pending.map_or(since, |p| p.min(since)));
        });
    }
}

/// What the hub needs of a `message` event.
#[derive(serde::Deserialize)]
struct MessageMeta {
    seq: u64,
    chat_id: ChatId,
    created_at: Timestamp,
}

/// The chat, `seq` and creation time of a `message` frame; `None` for every other frame.
fn message_meta(frame: &str) -> Option<MessageMeta> {
    #[derive(serde::Deserialize)]
    struct Frame {
        message: MessageMeta,
    }
    if !frame.starts_with(r#"{"type":"message""#) {
        return None;
    }
    let f: Frame = serde_json::from_str(frame).ok()?;
    Some(f.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::outbound::QueueReceiver;

    fn handle(cap: usize) -> (SessionHandle, QueueReceiver) {
        let (tx, rx) = crate::session::outbound::queue(cap);
        (
            SessionHandle {
                id: SessionId::generate(),
                outbound: tx,
                slow: CancellationToken::new(),
                role: Role::Patient,
            },
            rx,
        )
    }

    fn hub() -> Hub {
        Hub::new(GatewayMetrics::new().unwrap())
    }

    #[test]
    fn first_and_last_sessions_are_reported_for_subscription_changes() {
        let hub = hub();
        let u = UserId::parse("u").unwrap();
        let (a, _ra) = handle(4);
        let (b, _rb) = handle(4);
        assert!(hub.register(&u, a.clone()));
        assert!(!hub.register(&u, b.clone()));
        assert!(!hub.unregister(&u, a.id));
        assert!(hub.unregister(&u, b.id));
        assert!(!hub.is_local(&u));
    }

    #[test]
    fn delivers_to_every_device_except_the_origin() {
        let hub = hub();
        let u = UserId::parse("u").unwrap();
        let (a, mut ra) = handle(4);
        let (b, mut rb) = handle(4);
        hub.register(&u, a.clone());
        hub.register(&u, b);
        hub.deliver(
            &u,
            Envelope {
                origin: Some(a.id),
                frame: bytes::Bytes::from_static(b"{}"),
            },
        );
        assert!(ra.try_recv().is_err());
        assert_eq!(
            *rb.try_recv().unwrap(),
            Outbound::Frame(ByteString::from_static("{}"))
        );
    }

    #[test]
    fn message_events_carry_their_chat_and_seq_for_the_session() {
        let chat = ChatId::generate();
        let frame = format!(
            r#"{{"type":"message","message":{{"seq":7,"id":"{}","chat_id":"{chat}","sender_id":"u","sender_role":"patient","body":"b","client_msg_id":"c","created_at":"2026-01-01T00:00:00.000Z"}}}}"#,
            chat_shared::domain::MessageId::generate()
        );
        let meta = message_meta(&frame).unwrap();
        assert_eq!((meta.chat_id, meta.seq), (chat, 7));
        assert_eq!(
            meta.created_at,
            Timestamp::parse_rfc3339("2026-01-01T00:00:00.000Z").unwrap()
        );
        assert!(message_meta(r#"{"type":"typing","chat_id":"x"}"#).is_none());
    }

    #[test]
    fn a_full_queue_marks_the_session_slow_instead_of_blocking() {
        let hub = hub();
        let u = UserId::parse("u").unwrap();
        let (a, _ra) = handle(1);
        hub.register(&u, a.clone());
        let frame = Outbound::Frame(ByteString::from_static("{}"));
        assert_eq!(hub.send_to_user(&u, None, &frame), 1);
        assert!(!a.slow.is_cancelled());
        assert_eq!(hub.send_to_user(&u, None, &frame), 0);
        assert!(a.slow.is_cancelled());
    }
}
