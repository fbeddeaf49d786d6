//! Users and contacts (§4.1): `User`, its names, the own `Profile`, and
//! chat members.

use super::Extra;
use super::common::Presence;
use super::ids::{UserId, opt_int_or_string};
use serde::{Deserialize, Serialize};
use serde_json::Value;

wire_enum! {
    /// Kind of a name entry.
    NameType {
        /// The name the user chose for themself.
        Oneme = "ONEME",
        /// The name the logged-in account gave this contact.
        Custom = "CUSTOM",
    }
}

/// One entry of `names`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Name {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<NameType>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Name {
    /// `name` if non-empty, else "first last" (trimmed), else `None`.
    pub fn display(&self) -> Option<String> {
        if let Some(name) = self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            return Some(name.to_owned());
        }
        let first = self.first_name.as_deref().unwrap_or("").trim();
        let last = self.last_name.as_deref().unwrap_or("").trim();
        let full = format!("{first} {last}");
        let full = full.trim();
        (!full.is_empty()).then(|| full.to_owned())
    }
}

/// A phone number, sent as digits without `+`, as a number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Phone {
    Number(i64),
    Text(String),
}

impl Phone {
    /// The digits only, e.g. `79965433117`.
    pub fn digits(&self) -> String {
        match self {
            Phone::Number(n) => n.to_string(),
            Phone::Text(text) => text.chars().filter(char::is_ascii_digit).collect(),
        }
    }
}

/// A user as the server describes it (`contact` in profiles, `contacts[]`,
/// `members[].contact`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: UserId,
    #[serde(default)]
    pub names: Vec<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
    /// Avatar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_raw_url: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub photo_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `https://max.ru/<nick>` when the user has a nickname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Normally a list of strings (`TT`, `ONEME`, `BOT`); kept raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_status: Option<i64>,
    /// Relationship status, e.g. `BLOCKED`, `REMOVED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// String or integer (bots send integers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<Value>,
    /// Object or bare URL string (bots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_app: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub menu_button: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl User {
    /// A user with only an id; fill in the rest with struct update syntax.
    pub fn new(id: UserId) -> User {
        User {
            id,
            names: Vec::new(),
            phone: None,
            base_url: None,
            base_raw_url: None,
            photo_id: None,
            description: None,
            link: None,
            options: None,
            account_status: None,
            status: None,
            update_time: None,
            registration_time: None,
            country: None,
            gender: None,
            web_app: None,
            menu_button: None,
            extra: Extra::new(),
        }
    }

    /// The user's public name: the first usable `ONEME` entry, else the
    /// first usable entry that is not `CUSTOM`, else a `CUSTOM` one.
    ///
    /// `CUSTOM` names are what the logged-in account calls this contact, so
    /// they are private to that account; a bridge shows one profile per user
    /// to everybody and must not leak them. Use [`User::personal_name`] to
    /// see the contact the way the account owner does.
    pub fn display_name(&self) -> Option<String> {
        let is = |name: &Name, kind: &NameType| name.kind.as_ref() == Some(kind);
        self.names
            .iter()
            .filter(|n| is(n, &NameType::Oneme))
            .chain(
                self.names
                    .iter()
                    .filter(|n| !is(n, &NameType::Oneme) && !is(n, &NameType::Custom)),
            )
            .chain(self.names.iter().filter(|n| is(n, &NameType::Custom)))
            .find_map(Name::display)
    }

    /// The name the logged-in account gave this contact (`CUSTOM`) if any,
    /// else [`User::display_name`].
    pub fn personal_name(&self) -> Option<String> {
        self.names
            .iter()
            .filter(|n| n.kind == Some(NameType::Custom))
            .find_map(Name::display)
            .or_else(|| self.display_name())
    }

    /// Whether `options` lists the given flag (e.g. `BOT`).
    pub fn has_option(&self, flag: &str) -> bool {
        match &self.options {
            Some(Value::Array(items)) => items.iter().any(|item| item.as_str() == Some(flag)),
            _ => false,
        }
    }

    pub fn is_bot(&self) -> bool {
        self.has_option("BOT")
    }
}

/// The own account: `{contact, profileOptions}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub contact: User,
    /// 1 ESIA verified, 2 2FA password set, 3 2FA email, 4 2FA hint.
    #[serde(default)]
    pub profile_options: Vec<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of CHAT_MEMBERS (59): `{contact, presence, readMark?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub contact: User,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<Presence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_mark: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(names: Value) -> User {
        serde_json::from_value(json!({"id": 5, "names": names})).unwrap()
    }

    #[test]
    fn display_name_prefers_the_public_name() {
        let u = user(json!([
            {"name": "Мой Вася", "type": "CUSTOM"},
            {"firstName": "Vasya", "lastName": "Pupkin", "type": "ONEME"}
        ]));
        assert_eq!(u.display_name().as_deref(), Some("Vasya Pupkin"));
        assert_eq!(u.personal_name().as_deref(), Some("Мой Вася"));
        let only_custom = user(json!([{"name": "X", "type": "CUSTOM"}]));
        assert_eq!(only_custom.display_name().as_deref(), Some("X"));
        let empty = user(json!([{"name": "", "firstName": " ", "type": "ONEME"}]));
        assert_eq!(empty.display_name(), None);
        let other =
            user(json!([{"name": "", "type": "ONEME"}, {"firstName": "F", "type": "FULL_NAME"}]));
        assert_eq!(other.display_name().as_deref(), Some("F"));
    }

    #[test]
    fn liberal_fields() {
        let u: User =
            serde_json::from_value(json!({"id": "42", "phone": "+7 999 123", "gender": 1,
            "webApp": "https://example.org", "options": ["BOT"]}))
            .unwrap();
        assert_eq!(u.id, UserId(42));
        assert_eq!(
            u.phone.as_ref().map(Phone::digits).as_deref(),
            Some("7999123")
        );
        assert!(u.is_bot());
        assert!(u.names.is_empty());
        let n: User = serde_json::from_value(json!({"id": 1, "phone": 79965433117_i64})).unwrap();
        assert_eq!(n.phone, Some(Phone::Number(79_965_433_117)));
    }
}
