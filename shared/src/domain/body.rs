//! The text of a message.

use std::fmt;

/// The default for `MAX_MESSAGE_CHARS`.
pub const DEFAULT_MAX_MESSAGE_CHARS: usize = 4000;

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Nothing but whitespace.
    #[error("body must not be empty")]
    Empty,
    /// More characters (Unicode scalar values) than `MAX_MESSAGE_CHARS`.
    #[error("body is longer than {max} characters")]
    TooLong {
        /// The limit in force.
        max: usize,
    },
    /// A control character other than newline or tab.
    #[error("body contains a control character")]
    ControlCharacter,
}

/// A message body that is non-empty, within the length limit and free of control
/// characters (newline and tab are allowed: people write paragraphs).
///
/// The limit is counted in characters, not bytes, so that a message in Greek is
/// allowed as many letters as one in English.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(String);

impl MessageBody {
    /// Parses untrusted input against the configured limit.
    pub fn parse(s: impl Into<String>, max_chars: usize) -> Result<Self, BodyError> {
        let s = s.into();
        if s.trim().is_empty() {
            return Err(BodyError::Empty);
        }
        if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(BodyError::ControlCharacter);
        }
        if s.chars().count() > max_chars {
            return Err(BodyError::TooLong { max: max_chars });
        }
        Ok(Self(s))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, by value.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for MessageBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_text_with_newlines_and_tabs() {
        let b = MessageBody::parse("Hello doctor,\n\tsee you at 10?", 4000).unwrap();
        assert_eq!(b.as_str(), "Hello doctor,\n\tsee you at 10?");
    }

    #[test]
    fn refuses_empty_and_whitespace_only() {
        assert_eq!(MessageBody::parse("", 10), Err(BodyError::Empty));
        assert_eq!(MessageBody::parse(" \n\t ", 10), Err(BodyError::Empty));
    }

    #[test]
    fn refuses_control_characters() {
        assert_eq!(
            MessageBody::parse("hi\u{0007}", 10),
            Err(BodyError::ControlCharacter)
        );
        assert_eq!(
            MessageBody::parse("a\u{0000}b", 10),
            Err(BodyError::ControlCharacter)
        );
    }

    #[test]
    fn counts_characters_not_bytes() {
        assert!(MessageBody::parse("λ".repeat(4), 4).is_ok());
        assert_eq!(
            MessageBody::parse("λ".repeat(5), 4),
            Err(BodyError::TooLong { max: 4 })
        );
    }

    proptest! {
        #[test]
        fn any_accepted_body_obeys_every_rule(s in "\\PC{0,50}|[\\x00-\\x1f ]{0,5}", max in 1usize..60) {
            match MessageBody::parse(s.clone(), max) {
                Ok(b) => {
                    prop_assert!(!b.as_str().trim().is_empty());
                    prop_assert!(b.as_str().chars().count() <= max);
                    prop_assert!(!b.as_str().chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
                    prop_assert_eq!(b.as_str(), s.as_str());
                }
                Err(_) => {
                    let ok = !s.trim().is_empty()
                        && s.chars().count() <= max
                        && !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t');
                    prop_assert!(!ok, "refused a valid body {:?}", s);
                }
            }
        }
    }
}
