//! Who may touch which chat — the one place access is decided.
//!
//! A patient may use a chat only if they are its patient; a doctor only if they
//! are its doctor; nobody else at all. A chat that exists but is not yours is
//! reported exactly like one that does not exist (`not_found`), so chat ids
//! cannot be probed.
//!
//! A chat's participants never change, so they are cached (bounded, LRU) after
//! the first look-up and the hot `send` path does not touch the store.

use chat_shared::auth::Identity;
use chat_shared::broker::Participants;
use chat_shared::domain::{ChatId, Role};
use chat_shared::store::{Store, StoreError};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// Why access was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// No such chat, or not the caller's.
    #[error("chat not found")]
    NotFound,
    /// The store could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Decides chat access, with a cache of participants.
pub struct Access {
    store: Arc<dyn Store>,
    cache: Mutex<LruCache<ChatId, Participants>>,
}

impl Access {
    /// Caches up to `capacity` chats.
    pub fn new(store: Arc<dyn Store>, capacity: NonZeroUsize) -> Self {
        Self {
            store,
            cache: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The participants of `chat`, if it exists.
    pub async fn participants(&self, chat: ChatId) -> Result<Option<Participants>, StoreError> {
        if let Some(p) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&chat)
        {
            return Ok(Some(p.clone()));
        }
        let Some(record) = self.store.chat(chat).await? else {
            return Ok(None);
        };
        let p = record.participants();
        self.remember(chat, p.clone());
        Ok(Some(p))
    }

    /// Records a chat's participants (e.g. right after creating it).
    pub fn remember(&self, chat: ChatId, participants: Participants) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(chat, participants);
    }

    /// The chat's participants if `who` may use it.
    pub async fn authorize(
        &self,
        who: &Identity,
        chat: ChatId,
    ) -> Result<Participants, AccessError> {
        let p = self
            .participants(chat)
            .await?
            .ok_or(AccessError::NotFound)?;
        if may_use(who, &p) {
            Ok(p)
        } else {
            Err(AccessError::NotFound)
        }
    }
}

/// The rule itself: patients only as the patient, doctors only as the doctor.
pub fn may_use(who: &Identity, chat: &Participants) -> bool {
    match who.role {
        Role::Patient => chat.patient == who.user_id,
        Role::Doctor => chat.doctor == who.user_id,
        Role::Admin | Role::Service | Role::Unknown => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_shared::domain::{Timestamp, UserId};

    fn id(user: &str, role: Role) -> Identity {
        Identity {
            user_id: UserId::parse(user).unwrap(),
            role,
            name: None,
            expires_at: Timestamp::now(),
        }
    }

    fn chat() -> Participants {
        Participants {
            patient: UserId::parse("p1").unwrap(),
            doctor: UserId::parse("d1").unwrap(),
        }
    }

    #[test]
    fn participants_may_use_their_chat_in_their_own_role_only() {
        assert!(may_use(&id("p1", Role::Patient), &chat()));
        assert!(may_use(&id("d1", Role::Doctor), &chat()));
        // the right id in the wrong role is refused
        assert!(!may_use(&id("p1", Role::Doctor), &chat()));
        assert!(!may_use(&id("d1", Role::Patient), &chat()));
    }

    #[test]
    fn strangers_admins_and_services_may_not() {
        assert!(!may_use(&id("p2", Role::Patient), &chat()));
        assert!(!may_use(&id("d2", Role::Doctor), &chat()));
        assert!(!may_use(&id("p1", Role::Admin), &chat()));
        assert!(!may_use(&id("d1", Role::Service), &chat()));
        assert!(!may_use(&id("d1", Role::Unknown), &chat()));
    }
}
