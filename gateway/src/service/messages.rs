//! Sending, reading, typing and history.

use super::{ChatService, ServiceError};
use chat_shared::auth::Identity;
use chat_shared::broker::{Appended, BrokerError, Envelope, MessageDraft, Participants, SeqWindow};
use chat_shared::domain::{
    ChatId, ClientMsgId, MessageBody, MessageId, SessionId, Timestamp, UserId,
};
use chat_shared::protocol::rest::{HistoryQuery, MessagePage};
use chat_shared::protocol::{Message, ServerFrame};
use std::collections::BTreeMap;
use tracing::field::Empty;
use tracing::{Instrument, Span};

/// Default history page size.
pub const DEFAULT_PAGE: usize = 50;
/// Largest history page.
pub const MAX_PAGE: usize = 200;

impl ChatService {
    /// Accepts a message: access check, then one atomic append that assigns the
    /// `seq`, makes it durable and publishes it to both participants. The
    /// returned message is what the `ack` carries.
    pub async fn send(
        &self,
        who: &Identity,
        origin: SessionId,
        chat_id: ChatId,
        client_msg_id: ClientMsgId,
        body: MessageBody,
    ) -> Result<Appended, ServiceError> {
        let participants = self.access.authorize(who, chat_id).await?;
        let draft = MessageDraft {
            id: MessageId::generate(),
            chat_id,
            sender_id: who.user_id.clone(),
            sender_role: who.role,
            body: body.into_inner(),
            client_msg_id,
            created_at: Timestamp::now(),
        };
        match self
            .append_message(&draft, &participants, origin, None)
            .await
        {
            Err(BrokerError::SeqUnknown(_)) => {
                // A new chat, or the broker lost its data: continue from the
                // store's last persisted seq, never from 1 again — and if this
                // is a re-send of a message the store already has, answer with
                // the original (the broker's idempotency record is gone too).
                if let Some(original) = self
                    .store
                    .message_by_client_msg_id(chat_id, &draft.client_msg_id)
                    .await?
                {
                    return Ok(Appended::Duplicate(original));
                }
                let floor = self.last_seq(chat_id).await?;
                Ok(self
                    .append_message(&draft, &participants, origin, Some(floor))
                    .await?)
            }
            other => Ok(other?),
        }
    }

    /// Records that `who` read `chat_id` up to `up_to_seq` (clamped to the
    /// chat's newest `seq`); the peer is told, and the persister announces the
    /// new unread count to the reader's sessions.
    pub async fn mark_read(
        &self,
        who: &Identity,
        chat_id: ChatId,
        up_to_seq: u64,
    ) -> Result<u64, ServiceError> {
        let participants = self.access.authorize(who, chat_id).await?;
        let peer = participants
            .peer_of(&who.user_id)
            .ok_or(ServiceError::NotFound)?;
        match self.append_read(chat_id, who, peer, up_to_seq, None).await {
            Err(BrokerError::SeqUnknown(_)) => {
                let floor = self.last_seq(chat_id).await?;
                Ok(self
                    .append_read(chat_id, who, peer, up_to_seq, Some(floor))
                    .await?)
            }
            other => Ok(other?),
        }
    }

    /// Forwards a typing indicator to the peer (never stored).
    pub async fn typing(
        &self,
        who: &Identity,
        chat_id: ChatId,
        active: bool,
    ) -> Result<(), ServiceError> {
        let participants = self.access.authorize(who, chat_id).await?;
        let peer = participants
            .peer_of(&who.user_id)
            .ok_or(ServiceError::NotFound)?;
        let frame = ServerFrame::Typing {
            chat_id,
            user_id: who.user_id.clone(),
            active,
        };
        self.broker
            .publish(peer, Envelope::new(None, &frame))
            .await?;
        Ok(())
    }

    /// A page of history, ascending. Merges the store with the broker's recent
    /// window, so a message acknowledged a moment ago is included even if the
    /// persister has not written it yet (guarantee 4).
    pub async fn history(
        &self,
        who: &Identity,
        chat_id: ChatId,
        query: &HistoryQuery,
    ) -> Result<MessagePage, ServiceError> {
        self.access.authorize(who, chat_id).await?;
        let limit = match query.limit {
            None => DEFAULT_PAGE,
            Some(n) if (1..=MAX_PAGE as u32).contains(&n) => n as usize,
            Some(_) => {
                return Err(ServiceError::Invalid(format!(
                    "limit must be 1..={MAX_PAGE}"
                )))
            }
        };
        if let (Some(a), Some(b)) = (query.after_seq, query.before_seq) {
            if b <= a.saturating_add(1) {
                return Ok(MessagePage {
                    messages: Vec::new(),
                    has_more: false,
                });
            }
        }
        let window = SeqWindow {
            after: query.after_seq,
            before: query.before_seq,
            limit: limit + 1,
        };
        // The broker first, then the store — not both at once: a message that
        // leaves the broker's window in between (the in-process log forgets
        // entries as soon as they are persisted) is then already in the store.
        // Read concurrently, it could be missed by both.
        let recent = self.broker.recent(chat_id, window).await?;
        let stored = self.store.messages(chat_id, window).await?;
        let mut merged: BTreeMap<u64, Message> = BTreeMap::new();
        for m in stored.into_iter().chain(recent) {
            merged.entry(m.seq).or_insert(m);
        }
        let has_more = merged.len() > limit;
        let messages: Vec<Message> = if query.after_seq.is_some() {
            merged.into_values().take(limit).collect()
        } else {
            let skip = merged.len().saturating_sub(limit);
            merged.into_values().skip(skip).collect()
        };
        Ok(MessagePage { messages, has_more })
    }

    /// [`chat_shared::broker::Broker::append_message`] in a `broker.append`
    /// span. The engine stores the span's trace context with the stream entry
    /// (so the persister's span joins this trace); the publish to both
    /// participants happens inside the same atomic append, so it is part of
    /// this span (`published`).
    async fn append_message(
        &self,
        draft: &MessageDraft,
        participants: &Participants,
        origin: SessionId,
        floor_seq: Option<u64>,
    ) -> Result<Appended, BrokerError> {
        let span = append_span("message", draft.chat_id);
        span.record("message_id", tracing::field::display(&draft.id));
        let result = self
            .broker
            .append_message(draft, participants, origin, floor_seq)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(appended) => {
                let new = matches!(appended, Appended::New(_));
                span.record("seq", appended.message().seq);
                span.record("duplicate", !new);
                span.record("published", new);
            }
            Err(e) => record_error(&span, e),
        }
        result
    }

    /// [`chat_shared::broker::Broker::append_read`] in a `broker.append` span
    /// (see [`Self::append_message`]); `seq` is the stored mark.
    async fn append_read(
        &self,
        chat_id: ChatId,
        who: &Identity,
        peer: &UserId,
        up_to_seq: u64,
        floor_seq: Option<u64>,
    ) -> Result<u64, BrokerError> {
        let span = append_span("read", chat_id);
        let result = self
            .broker
            .append_read(chat_id, &who.user_id, peer, up_to_seq, floor_seq)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(mark) => {
                span.record("seq", *mark);
                span.record("published", *mark > 0);
            }
            Err(e) => record_error(&span, e),
        }
        result
    }

    async fn last_seq(&self, chat_id: ChatId) -> Result<u64, ServiceError> {
        Ok(self
            .store
            .chat(chat_id)
            .await?
            .map(|c| c.last_seq)
            .unwrap_or(0))
    }
}

/// A `broker.append` span: one append of a durable event (`message` or
/// `read`) to the broker. Carries ids and numbers only, never the body.
fn append_span(event: &'static str, chat_id: ChatId) -> Span {
    tracing::info_span!(
        "broker.append",
        otel.kind = "producer",
        event,
        chat_id = %chat_id,
        message_id = Empty,
        seq = Empty,
        duplicate = Empty,
        published = Empty,
        error = Empty,
        otel.status_code = Empty,
    )
}

/// Marks a span failed with the broker's error (which never carries a body).
fn record_error(span: &Span, e: &BrokerError) {
    let kind = match e {
        BrokerError::Unavailable(_) => "unavailable",
        BrokerError::SeqUnknown(_) => "seq_unknown",
        BrokerError::Protocol(_) => "protocol",
    };
    span.record("error", kind);
    if !matches!(e, BrokerError::SeqUnknown(_)) {
        span.record("otel.status_code", "ERROR");
    }
}
