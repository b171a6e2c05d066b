//! Who a token holder is.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The `role` claim. Only patients and doctors chat; `service` is the booking
/// app creating chats; `admin` and anything unknown may do neither (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Talks only with doctors they booked.
    Patient,
    /// Talks only with their patients.
    Doctor,
    /// Clinic staff: never reads chats.
    Admin,
    /// The booking app: may only create chats.
    Service,
    /// Any other value: refused everywhere, but still a well-formed token.
    #[serde(other)]
    Unknown,
}

impl Role {
    /// Whether this role takes part in chats (patient or doctor).
    pub fn is_participant(self) -> bool {
        matches!(self, Role::Patient | Role::Doctor)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Doctor => "doctor",
            Role::Admin => "admin",
            Role::Service => "service",
            Role::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_roles_parse_but_are_not_participants() {
        let r: Role = serde_json::from_str("\"superuser\"").unwrap();
        assert_eq!(r, Role::Unknown);
        assert!(!r.is_participant());
        assert!(Role::Doctor.is_participant());
        assert!(!Role::Admin.is_participant());
    }
}
