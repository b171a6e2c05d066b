//! `--dev`: demo users and chats, token minting and the demo web client.
//!
//! Never on by default. It exists so a newcomer can open two browser tabs and
//! chat as a doctor and a patient without an identity provider; it mints
//! tokens for anyone who asks, which is why start-up prints a loud warning.

use crate::service::ChatService;
use chat_shared::auth::TokenSigner;
use chat_shared::domain::{AppointmentId, Role, UserId};
use chat_shared::protocol::rest::CreateChatRequest;
use chat_shared::protocol::DisplayName;
use serde::Serialize;

/// What `--dev` needs at run time.
#[derive(Clone)]
pub struct DevSettings {
    /// Signs `POST /dev/token` answers with the node's HS256 secret.
    pub signer: TokenSigner,
}

/// A demo user, as listed by `GET /dev/users`.
#[derive(Debug, Clone, Serialize)]
pub struct DemoUser {
    /// User id.
    pub id: &'static str,
    /// Display name.
    pub name: &'static str,
    /// Patient or doctor.
    pub role: Role,
}

/// The demo users: two doctors, three patients.
pub const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        id: "doc-ana",
        name: "Dr Ana Silva",
        role: Role::Doctor,
    },
    DemoUser {
        id: "doc-ben",
        name: "Dr Ben Okafor",
        role: Role::Doctor,
    },
    DemoUser {
        id: "pat-cara",
        name: "Cara Jones",
        role: Role::Patient,
    },
    DemoUser {
        id: "pat-dev",
        name: "Dev Patel",
        role: Role::Patient,
    },
    DemoUser {
        id: "pat-eli",
        name: "Eli Novak",
        role: Role::Patient,
    },
];

/// Demo appointments (patient, doctor, appointment): each becomes a chat.
const DEMO_APPOINTMENTS: &[(&str, &str, &str)] = &[
    ("pat-cara", "doc-ana", "demo-appt-1"),
    ("pat-cara", "doc-ben", "demo-appt-2"),
    ("pat-dev", "doc-ana", "demo-appt-3"),
    ("pat-eli", "doc-ben", "demo-appt-4"),
];

fn name_of(id: &str) -> Option<DisplayName> {
    DEMO_USERS
        .iter()
        .find(|u| u.id == id)
        .and_then(|u| DisplayName::parse(u.name).ok())
}

/// Creates the demo chats as the booking app would (idempotent: safe on every
/// start and from several nodes at once).
pub async fn seed(service: &ChatService) -> Result<(), String> {
    for (patient, doctor, appointment) in DEMO_APPOINTMENTS {
        let req = CreateChatRequest {
            appointment_id: AppointmentId::parse(*appointment).map_err(|e| e.to_string())?,
            patient_id: UserId::parse(*patient).map_err(|e| e.to_string())?,
            doctor_id: UserId::parse(*doctor).map_err(|e| e.to_string())?,
            patient_name: name_of(patient),
            doctor_name: name_of(doctor),
        };
        service
            .create_chat(req)
            .await
            .map_err(|e| format!("seeding demo chats: {e}"))?;
    }
    Ok(())
}

/// The start-up warning.
pub const WARNING: &str = "\
*****************************************************************
*  --dev: DEVELOPMENT MODE. /dev/token mints tokens for anyone,  *
*  demo users and chats are seeded, the demo client is served.   *
*  Never run this in production.                                  *
*****************************************************************";
