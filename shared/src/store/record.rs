//! What the store keeps about a chat, and the updates it accepts.

use crate::broker::Participants;
use crate::domain::{AppointmentId, ChatId, Role, Timestamp, UserId};
use crate::protocol::{Chat, DisplayName, Message, Peer};
use std::collections::BTreeMap;

/// A chat as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatRecord {
    /// Chat id.
    pub id: ChatId,
    /// The patient.
    pub patient_id: UserId,
    /// The doctor.
    pub doctor_id: UserId,
    /// The patient's name as the booking app gave it.
    pub patient_name: Option<String>,
    /// The doctor's name as the booking app gave it.
    pub doctor_name: Option<String>,
    /// Appointments served, oldest first.
    pub appointment_ids: Vec<AppointmentId>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Newest persisted message.
    pub last_message: Option<Message>,
    /// Newest persisted `seq`.
    pub last_seq: u64,
    /// Unread count per participant.
    pub unread: BTreeMap<String, u64>,
    /// Read mark per participant.
    pub read_seq: BTreeMap<String, u64>,
    /// Revision for optimistic concurrency between persister replicas.
    pub rev: u64,
}

impl ChatRecord {
    /// The two participants.
    pub fn participants(&self) -> Participants {
        Participants {
            patient: self.patient_id.clone(),
            doctor: self.doctor_id.clone(),
        }
    }

    /// The role `user` has in this chat, if any.
    pub fn role_of(&self, user: &UserId) -> Option<Role> {
        if &self.patient_id == user {
            Some(Role::Patient)
        } else if &self.doctor_id == user {
            Some(Role::Doctor)
        } else {
            None
        }
    }

    /// When anything last happened (for "most recent activity first").
    pub fn last_activity(&self) -> Timestamp {
        self.last_message
            .as_ref()
            .map(|m| m.created_at)
            .unwrap_or(self.created_at)
            .max(self.created_at)
    }

    /// Unread count of `user`.
    pub fn unread_of(&self, user: &UserId) -> u64 {
        self.unread.get(user.as_str()).copied().unwrap_or(0)
    }

    /// Read mark of `user`.
    pub fn read_seq_of(&self, user: &UserId) -> u64 {
        self.read_seq.get(user.as_str()).copied().unwrap_or(0)
    }

    /// The chat as `viewer` sees it. `viewer` must be a participant (a
    /// non-participant sees the doctor as peer, which callers never expose).
    pub fn view_for(&self, viewer: &UserId, peer_online: bool) -> Chat {
        let (peer_id, peer_name, peer_role) = if viewer == &self.patient_id {
            (&self.doctor_id, &self.doctor_name, Role::Doctor)
        } else {
            (&self.patient_id, &self.patient_name, Role::Patient)
        };
        Chat {
            id: self.id,
            patient_id: self.patient_id.clone(),
            doctor_id: self.doctor_id.clone(),
            appointment_ids: self.appointment_ids.clone(),
            created_at: self.created_at,
            last_message: self.last_message.clone(),
            last_seq: self.last_seq,
            unread: self.unread_of(viewer),
            peer: Peer {
                id: peer_id.clone(),
                name: peer_name.clone().unwrap_or_else(|| peer_id.to_string()),
                role: peer_role,
                online: peer_online,
            },
        }
    }
}

/// A chat creation request, validated.
#[derive(Debug, Clone)]
pub struct NewChat {
    /// Id to use if the chat is new.
    pub id: ChatId,
    /// The booked appointment.
    pub appointment_id: AppointmentId,
    /// The patient.
    pub patient_id: UserId,
    /// The doctor.
    pub doctor_id: UserId,
    /// Patient's display name.
    pub patient_name: Option<DisplayName>,
    /// Doctor's display name.
    pub doctor_name: Option<DisplayName>,
    /// Creation time if new.
    pub created_at: Timestamp,
}

/// What [`super::Store::upsert_chat`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatUpsert {
    /// A new chat.
    Created(ChatRecord),
    /// An existing chat gained an appointment (or new names).
    Updated(ChatRecord),
    /// The same request again: nothing changed.
    Unchanged(ChatRecord),
}

impl ChatUpsert {
    /// The chat after the operation.
    pub fn record(&self) -> &ChatRecord {
        match self {
            ChatUpsert::Created(r) | ChatUpsert::Updated(r) | ChatUpsert::Unchanged(r) => r,
        }
    }
}

/// New counter values for one chat, computed by the persister.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterUpdate {
    /// Newest persisted `seq`.
    pub last_seq: u64,
    /// Newest persisted message (only set when it changed).
    pub last_message: Option<Message>,
    /// Unread count per participant.
    pub unread: BTreeMap<String, u64>,
    /// Read mark per participant.
    pub read_seq: BTreeMap<String, u64>,
}
