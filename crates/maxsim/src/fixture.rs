//! The fixture format that seeds the simulator's state (accounts, chats,
//! existing messages), and the embedded default fixture.
//!
//! See the crate documentation for the format; [`Fixture::default_fixture`]
//! is `fixtures/default.json`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

const DEFAULT_FIXTURE: &str = include_str!("../fixtures/default.json");

/// Kind of chat, as MAX spells it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChatKind {
    /// One-to-one chat; its id is the XOR of both user ids.
    Dialog,
    /// Group chat (negative id).
    Chat,
    /// Channel (negative id); only the owner and admins post.
    Channel,
}

impl ChatKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatKind::Dialog => "DIALOG",
            ChatKind::Chat => "CHAT",
            ChatKind::Channel => "CHANNEL",
        }
    }
}

/// Seed state of a simulator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fixture {
    #[serde(default)]
    pub accounts: Vec<FixtureAccount>,
    #[serde(default)]
    pub chats: Vec<FixtureChat>,
    /// Keys merged over the built-in `config.server` of the LOGIN answer.
    #[serde(default)]
    pub server_config: Map<String, Value>,
}

/// One user. Accounts with a phone and an SMS code can log in by SMS;
/// accounts with tokens can log in with LOGIN (19) directly.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FixtureAccount {
    pub id: i64,
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    /// Digits only, e.g. `79000000001`.
    #[serde(default)]
    pub phone: Option<i64>,
    /// The code AUTH (18) accepts for this phone.
    #[serde(default)]
    pub sms_code: Option<String>,
    /// Login tokens valid from the start.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// User ids in this account's address book.
    #[serde(default)]
    pub contacts: Vec<i64>,
    #[serde(default = "default_options")]
    pub options: Vec<String>,
    #[serde(default)]
    pub photo_id: Option<i64>,
    /// Serve a generated PNG avatar from the simulator's HTTP server.
    #[serde(default)]
    pub avatar: bool,
    /// An explicit avatar URL (wins over `avatar`).
    #[serde(default)]
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub link: Option<String>,
    #[serde(default)]
    pub update_time: Option<i64>,
    /// A bot user (adds nothing but the flag; bots cannot log in by SMS
    /// unless they have a phone).
    #[serde(default)]
    pub bot: bool,
}

fn default_options() -> Vec<String> {
    vec!["TT".to_owned(), "ONEME".to_owned()]
}

/// One chat with its members and existing messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FixtureChat {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: ChatKind,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub owner: i64,
    #[serde(default)]
    pub admins: Vec<i64>,
    /// Member id → read mark (ms, 0 if nothing read).
    pub participants: BTreeMap<i64, i64>,
    /// Serve a generated PNG icon from the simulator's HTTP server.
    #[serde(default)]
    pub icon: bool,
    #[serde(default)]
    pub icon_url: Option<String>,
    /// Raw chat keys copied into every rendering of the chat (computed keys
    /// such as `lastMessage` or `participants` win).
    #[serde(default)]
    pub extra: Map<String, Value>,
    /// Messages in wire form (`id` as a decimal string or number, `time`,
    /// `sender`, `text`, `attaches`, …), any order.
    #[serde(default)]
    pub messages: Vec<Value>,
}

/// Why a fixture was refused.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("fixture is not valid JSON of the fixture format: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot read fixture file: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid fixture: {0}")]
    Invalid(String),
}

impl Fixture {
    /// The embedded default fixture (`fixtures/default.json`).
    pub fn default_fixture() -> Fixture {
        // The embedded file is part of the crate and covered by tests.
        Fixture::from_json(DEFAULT_FIXTURE).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Fixture, FixtureError> {
        Ok(serde_json::from_str(text)?)
    }

    pub fn from_file(path: &Path) -> Result<Fixture, FixtureError> {
        let text = std::fs::read_to_string(path)?;
        Fixture::from_json(&text)
    }

    /// An empty fixture: no accounts, no chats.
    pub fn empty() -> Fixture {
        Fixture::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_fixture_parses() {
        let f = Fixture::from_json(DEFAULT_FIXTURE).unwrap();
        assert!(f.accounts.iter().any(|a| a.id == 13446207));
        assert!(f.chats.len() >= 10);
    }
}
