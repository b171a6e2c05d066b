//! What each client frame does — the one place a frame is handled.

use super::outbound::Outbound;
use super::{Ending, Session};
use chat_shared::broker::Appended;
use chat_shared::protocol::rest::HistoryQuery;
use chat_shared::protocol::{ClientFrame, ErrorCode, RequestId, ServerFrame};
use std::time::{Duration, Instant};

/// At most one typing indicator per chat per this interval is forwarded.
pub const TYPING_INTERVAL: Duration = Duration::from_secs(2);

/// Page size used to answer `sync`.
const SYNC_PAGE: u32 = 200;

/// Handles one text frame; `Some` ends the session.
pub async fn handle(session: &mut Session, text: &str) -> Option<Ending> {
    let metrics = session.state.metrics.clone();
    let frame = match ClientFrame::parse(text, session.state.max_message_chars) {
        Ok(f) => f,
        Err(e) => {
            metrics.frames_in.with_label_values(&["invalid"]).inc();
            session.reply_error(e.id, e.code, e.message);
            return None;
        }
    };
    metrics.frames_in.with_label_values(&[frame.kind()]).inc();
    match frame {
        ClientFrame::Send {
            id,
            chat_id,
            client_msg_id,
            body,
        } => {
            let received = Instant::now();
            if let Err(wait) = session.state.send_limiter.check(&session.identity.user_id) {
                metrics.rate_limited.inc();
                metrics
                    .refused
                    .with_label_values(&[ErrorCode::RateLimited.as_str()])
                    .inc();
                session.reply(&ServerFrame::Error {
                    id,
                    code: ErrorCode::RateLimited,
                    message: "sending too fast; retry later".into(),
                    retry_after_ms: Some(wait.as_millis().max(1) as u64),
                });
                return None;
            }
            let result = session
                .state
                .service
                .send(&session.identity, session.id, chat_id, client_msg_id, body)
                .await;
            match result {
                Ok(appended) => {
                    metrics.accepted.inc();
                    let message = match appended {
                        Appended::New(m) | Appended::Duplicate(m) => m,
                    };
                    session.reply_ack(id, message);
                    metrics.send_ack.observe(received.elapsed().as_secs_f64());
                }
                Err(e) => {
                    metrics
                        .refused
                        .with_label_values(&[e.code().as_str()])
                        .inc();
                    session.reply_error(id, e.code(), e.to_string());
                }
            }
        }
        ClientFrame::Read {
            id,
            chat_id,
            up_to_seq,
        } => {
            if let Err(e) = session
                .state
                .service
                .mark_read(&session.identity, chat_id, up_to_seq)
                .await
            {
                session.reply_error(id, e.code(), e.to_string());
            }
        }
        ClientFrame::Typing {
            id,
            chat_id,
            active,
        } => {
            // Throttle "started typing"; always forward "stopped" so an
            // indicator never sticks.
            let now = Instant::now();
            let recent = session
                .typing_sent
                .get(&chat_id)
                .is_some_and(|t| now.duration_since(*t) < TYPING_INTERVAL);
            if active && recent {
                return None;
            }
            if active {
                session.typing_sent.insert(chat_id, now);
            } else {
                session.typing_sent.remove(&chat_id);
            }
            if let Err(e) = session
                .state
                .service
                .typing(&session.identity, chat_id, active)
                .await
            {
                session.reply_error(id, e.code(), e.to_string());
            }
        }
        ClientFrame::Sync { id, chats } => {
            // Live messages for these chats wait until their pages are out
            // (see `outbound::Sequencer`), so each chat arrives in order, once.
            for (chat_id, _) in &chats {
                if !session.enqueue_paced(Outbound::SyncStart(*chat_id)).await {
                    return None;
                }
            }
            for (chat_id, after) in chats {
                let mut cursor = after;
                loop {
                    let page = session
                        .state
                        .service
                        .history(
                            &session.identity,
                            chat_id,
                            &HistoryQuery {
                                after_seq: Some(cursor),
                                before_seq: None,
                                limit: Some(SYNC_PAGE),
                            },
                        )
                        .await;
                    let page = match page {
                        Ok(p) => p,
                        Err(e) => {
                            session.reply_error(id.clone(), e.code(), format!("{chat_id}: {e}"));
                            break;
                        }
                    };
                    for message in page.messages {
                        cursor = message.seq;
                        let item = Outbound::Message {
                            chat: chat_id,
                            seq: message.seq,
                            frame: ServerFrame::Message { message }.to_json().into(),
                            live: false,
                        };
                        if !session.enqueue_paced(item).await {
                            return None;
                        }
                    }
                    if !page.has_more {
                        break;
                    }
                }
                if !session.enqueue_paced(Outbound::SyncEnd(chat_id)).await {
                    return None;
                }
            }
            session.reply(&ServerFrame::Synced { id });
        }
        ClientFrame::Auth { id, token } => return refresh(session, id, &token),
        ClientFrame::Ping { id } => session.reply(&ServerFrame::Pong { id }),
    }
    None
}

/// Replaces the session's token with a fresh one for the same user.
fn refresh(session: &mut Session, id: Option<RequestId>, token: &str) -> Option<Ending> {
    match session.state.verifier.verify(token) {
        Ok(fresh)
            if fresh.user_id == session.identity.user_id && fresh.role == session.identity.role =>
        {
            session.identity = fresh;
            None
        }
        Ok(_) => {
            session.reply_error(
                id,
                ErrorCode::Forbidden,
                "a refreshed token must name the same user and role",
            );
            None
        }
        Err(e) => {
            session.reply_error(id, ErrorCode::Unauthorized, e.to_string());
            None
        }
    }
}
