//! Catching up after the broker subscription was interrupted.
//!
//! While a node's pub/sub connection is down (a Redis restart, a network
//! blip), other nodes may already append again, and those events never arrive
//! here live. When the subscription is back, the hub asks for a catch-up from
//! the moment it was lost: for every chat of every local user, the messages in
//! the broker's recent window created since then (less a margin for clock skew
//! between nodes) are delivered again as live events. Each session's sequencer
//! drops what it already sent, so clients see every message once, without
//! having to notice the gap and `sync` themselves (guarantee 10).

use crate::startup::AppState;
use actix_web::web;
use chat_shared::broker::redis::DEFAULT_RECENT_WINDOW;
use chat_shared::broker::{Envelope, SeqWindow};
use chat_shared::domain::{ChatId, Timestamp};
use chat_shared::protocol::ServerFrame;
use futures_util::StreamExt;
use std::collections::HashSet;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Allowance for clocks of different nodes (message times come from the
/// sending node) and for messages in flight when the connection dropped.
const CLOCK_MARGIN_MS: i64 = 5_000;

/// Chats caught up concurrently.
const CONCURRENCY: usize = 8;

/// Serves catch-up requests until `stop`.
pub async fn run(
    state: web::Data<AppState>,
    mut requests: watch::Receiver<Option<Timestamp>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = requests.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let since = requests.borrow_and_update().to_owned();
        if let Some(since) = since {
            catch_up(&state, since).await;
        }
    }
}

async fn catch_up(state: &AppState, since: Timestamp) {
    let from = Timestamp::from_millis(since.millis() - CLOCK_MARGIN_MS);
    let mut chats: HashSet<ChatId> = HashSet::new();
    for (user, role) in state.hub.local_users() {
        match state.service.store.chats_of(&user, role).await {
            Ok(records) => chats.extend(records.iter().map(|r| r.id)),
            Err(e) => tracing::warn!(error = %e, "catch-up: listing chats failed"),
        }
    }
    let total = chats.len();
    futures_util::stream::iter(chats)
        .for_each_concurrent(CONCURRENCY, |chat| async move {
            let window = SeqWindow {
                after: None,
                before: None,
                limit: DEFAULT_RECENT_WINDOW,
            };
            let (recent, participants) = tokio::join!(
                state.service.broker.recent(chat, window),
                state.service.access.participants(chat)
            );
            let (Ok(recent), Ok(Some(participants))) = (recent, participants) else {
                tracing::warn!(%chat, "catch-up: reading a chat failed");
                return;
            };
            for message in recent.into_iter().filter(|m| m.created_at >= from) {
                let envelope = Envelope::new(None, &ServerFrame::Message { message });
                for user in [&participants.patient, &participants.doctor] {
                    chat_shared::broker::Inbox::deliver(state.hub.as_ref(), user, envelope.clone());
                }
            }
        })
        .await;
    tracing::info!(chats = total, "caught up after a broker reconnect");
}
