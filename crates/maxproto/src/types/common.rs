//! Small shapes shared by many payloads: option sets that are either bit
//! masks or flag maps, presence, the error object (§1.5) and the server
//! configuration of the LOGIN answer (§5).

use super::Extra;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// `options` of chats and messages: a flag map (`{"OFFICIAL": false, …}`)
/// on groups and channels, an integer on channel posts, anything else kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Options {
    Bits(i64),
    Flags(BTreeMap<String, bool>),
    Other(Value),
}

impl Options {
    /// Whether the named flag is set in a flag map (false for bit masks).
    pub fn flag(&self, name: &str) -> bool {
        match self {
            Options::Flags(flags) => flags.get(name).copied().unwrap_or(false),
            Options::Bits(_) => false,
            Options::Other(value) => value.get(name).and_then(Value::as_bool).unwrap_or(false),
        }
    }

    /// The integer form, if the options are a bit mask.
    pub fn bits(&self) -> Option<i64> {
        match self {
            Options::Bits(bits) => Some(*bits),
            _ => None,
        }
    }
}

/// Last-seen information of a user (`{seen, status?}`, §4.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// Last seen; ms in most sources, seconds per one (§6.14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<i64>,
    /// Present (≥ 1) when online; kept raw because its encoding is disputed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Presence {
    /// Whether the user is shown online: a positive `status`, or the
    /// `on: "ON"` marker seen in real LOGIN answers.
    pub fn is_online(&self) -> bool {
        let by_status = match &self.status {
            Some(Value::Number(n)) => n.as_i64().is_some_and(|s| s >= 1),
            Some(Value::String(s)) => !s.is_empty() && s != "0" && s != "OFFLINE",
            Some(Value::Bool(b)) => *b,
            _ => false,
        };
        by_status || self.extra.get("on").and_then(Value::as_str) == Some("ON")
    }
}

/// The payload of an error answer (`cmd` 3, §1.5).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorPayload {
    /// Machine key, e.g. `proto.payload`, `login.token`.
    #[serde(default)]
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localized_message: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ErrorPayload {
    pub fn new(error: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorPayload {
            error: error.into(),
            message: Some(message.into()),
            ..ErrorPayload::default()
        }
    }

    /// Reads an error out of any payload: a `cmd` 3 payload, or a `cmd` 1
    /// payload that defensively carries an `error` key (§1.5).
    pub fn from_payload(payload: &Value) -> Option<ErrorPayload> {
        let key = payload.get("error")?.as_str()?;
        match serde_json::from_value::<ErrorPayload>(payload.clone()) {
            Ok(parsed) => Some(parsed),
            Err(_) => Some(ErrorPayload {
                error: key.to_owned(),
                ..ErrorPayload::default()
            }),
        }
    }
}

impl fmt::Display for ErrorPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.error.is_empty() {
            "unknown error"
        } else {
            &self.error
        })?;
        if let Some(message) = self.message.as_deref().filter(|m| !m.is_empty()) {
            write!(f, ": {message}")?;
        }
        if let Some(text) = self.localized_message.as_deref().or(self.title.as_deref())
            && Some(text) != self.message.as_deref()
            && !text.is_empty()
        {
            write!(f, " ({text})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ErrorPayload {}

/// `config` of the LOGIN answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoginConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerConfig>,
    /// Account settings (`HIDDEN`, `SHOW_READ_MARK`, …), kept raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Extra>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A view on `config.server` (§5): the limits a bridge enforces, the rest kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServerConfig {
    /// Maximum text length of one message (4000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msg_length: Option<i64>,
    /// Seconds a message stays editable (604800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit_timeout: Option<i64>,
    /// Distinct reactions per message (8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactions_max: Option<i64>,
    /// Allowed reactions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactions_menu: Option<Vec<String>>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_upload_max_size: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ServerConfig {
    /// Values the real server sent at the time of writing, for when the
    /// server's config lacks a key.
    pub const DEFAULT_MAX_MSG_LENGTH: i64 = 4000;
    pub const DEFAULT_EDIT_TIMEOUT_SECS: i64 = 604_800;
    pub const DEFAULT_REACTIONS_MAX: i64 = 8;

    pub fn max_msg_length_or_default(&self) -> i64 {
        self.max_msg_length.unwrap_or(Self::DEFAULT_MAX_MSG_LENGTH)
    }

    pub fn edit_timeout_or_default(&self) -> i64 {
        self.edit_timeout.unwrap_or(Self::DEFAULT_EDIT_TIMEOUT_SECS)
    }

    pub fn reactions_max_or_default(&self) -> i64 {
        self.reactions_max.unwrap_or(Self::DEFAULT_REACTIONS_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_forms() {
        let flags: Options = serde_json::from_value(json!({"OFFICIAL": true})).unwrap();
        assert!(flags.flag("OFFICIAL"));
        assert!(!flags.flag("SIGN_ADMIN"));
        let bits: Options = serde_json::from_value(json!(1)).unwrap();
        assert_eq!(bits.bits(), Some(1));
        let odd: Options = serde_json::from_value(json!({"X": 1})).unwrap();
        assert!(matches!(odd, Options::Other(_)));
        assert_eq!(serde_json::to_value(&odd).unwrap(), json!({"X": 1}));
    }

    #[test]
    fn error_display_and_detection() {
        let payload = json!({"error": "proto.payload", "message": "Field requirement failed: messageIds",
            "title": "Ошибка валидации", "localizedMessage": "Ошибка валидации"});
        let err = ErrorPayload::from_payload(&payload).unwrap();
        assert_eq!(
            err.to_string(),
            "proto.payload: Field requirement failed: messageIds (Ошибка валидации)"
        );
        assert_eq!(serde_json::to_value(&err).unwrap(), payload);
        assert!(ErrorPayload::from_payload(&json!({"chatId": 1})).is_none());
        let odd = ErrorPayload::from_payload(&json!({"error": "x", "message": 5})).unwrap();
        assert_eq!(odd.error, "x");
    }

    #[test]
    fn presence_online() {
        let p: Presence = serde_json::from_value(json!({"seen": 1, "on": "ON"})).unwrap();
        assert!(p.is_online());
        let p: Presence = serde_json::from_value(json!({"seen": 1})).unwrap();
        assert!(!p.is_online());
        let p: Presence = serde_json::from_value(json!({"seen": 1, "status": 1})).unwrap();
        assert!(p.is_online());
    }
}
