//! The login token: a bearer secret that must never reach a log line.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A MAX login token (or any other bearer secret of the protocol).
///
/// `Debug` and `Display` print a fixed placeholder so that a token inside a
/// struct that gets logged with `?` cannot leak; use [`Token::expose`] at the
/// few places that really put it on the wire or in the database.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the wire and the database only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Token {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_the_secret() {
        let t = Token::new("An_secret_value");
        assert!(!format!("{t:?}").contains("secret"));
        assert!(!format!("{t}").contains("secret"));
        assert_eq!(t.expose(), "An_secret_value");
    }
}
