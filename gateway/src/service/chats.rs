//! Chat creation (by the booking app), listings and unread summaries.

use super::{ChatService, ServiceError};
use chat_shared::auth::Identity;
use chat_shared::broker::Envelope;
use chat_shared::domain::{ChatId, Timestamp, UserId};
use chat_shared::protocol::rest::{CreateChatRequest, UnreadSummary};
use chat_shared::protocol::{Chat, ServerFrame};
use chat_shared::store::{ChatRecord, ChatUpsert, NewChat};

impl ChatService {
    /// Creates the chat of a (patient, doctor) pair or adds the appointment to
    /// it; both participants get a `chat` event when anything changed. Returns
    /// the record and whether it was created.
    pub async fn create_chat(
        &self,
        req: CreateChatRequest,
    ) -> Result<(ChatRecord, bool), ServiceError> {
        if req.patient_id == req.doctor_id {
            return Err(ServiceError::Invalid(
                "patient_id and doctor_id must differ".into(),
            ));
        }
        let upsert = self
            .store
            .upsert_chat(&NewChat {
                id: ChatId::generate(),
                appointment_id: req.appointment_id,
                patient_id: req.patient_id,
                doctor_id: req.doctor_id,
                patient_name: req.patient_name,
                doctor_name: req.doctor_name,
                created_at: Timestamp::now(),
            })
            .await?;
        let record = upsert.record().clone();
        self.access.remember(record.id, record.participants());
        if !matches!(upsert, ChatUpsert::Unchanged(_)) {
            for user in [&record.patient_id, &record.doctor_id] {
                let chat = self.view(&record, user).await;
                let frame = ServerFrame::Chat { chat };
                if let Err(e) = self.broker.publish(user, Envelope::new(None, &frame)).await {
                    // The chat exists; clients also see it in their next listing.
                    tracing::warn!(error = %e, "announcing a new chat failed");
                }
            }
        }
        Ok((record, matches!(upsert, ChatUpsert::Created(_))))
    }

    /// The caller's chats, most recent activity first.
    pub async fn list_chats(&self, who: &Identity) -> Result<Vec<Chat>, ServiceError> {
        let mut records = self.store.chats_of(&who.user_id, who.role).await?;
        records.sort_by_key(|r| std::cmp::Reverse((r.last_activity(), r.id)));
        let peers: Vec<UserId> = records.iter().map(|r| peer_of(r, &who.user_id)).collect();
        let online = self.online(&peers).await;
        Ok(records
            .iter()
            .zip(online)
            .map(|(r, online)| r.view_for(&who.user_id, online))
            .collect())
    }

    /// Unread counts per chat and in total.
    pub async fn unread(&self, who: &Identity) -> Result<UnreadSummary, ServiceError> {
        let records = self.store.chats_of(&who.user_id, who.role).await?;
        let chats: std::collections::BTreeMap<String, u64> = records
            .iter()
            .map(|r| (r.id.to_string(), r.unread_of(&who.user_id)))
            .collect();
        Ok(UnreadSummary {
            total: chats.values().sum(),
            chats,
        })
    }

    /// A record as `viewer` sees it, with the peer's presence.
    pub async fn view(&self, record: &ChatRecord, viewer: &UserId) -> Chat {
        let online = self.online(&[peer_of(record, viewer)]).await;
        record.view_for(viewer, online.first().copied().unwrap_or(false))
    }

    /// Presence of each user; reported offline when the broker is unreachable,
    /// which must not fail a listing.
    async fn online(&self, users: &[UserId]) -> Vec<bool> {
        match self.presence.online(users).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "presence lookup failed");
                vec![false; users.len()]
            }
        }
    }
}

fn peer_of(record: &ChatRecord, viewer: &UserId) -> UserId {
    record
        .participants()
        .peer_of(viewer)
        .cloned()
        .unwrap_or_else(|| record.doctor_id.clone())
}
