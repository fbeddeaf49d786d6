//! Integer ids of the protocol (`max-protocol.md` §4.0): users, chats and
//! messages, which arrive as JSON numbers or as decimal strings.
//!
//! Message ids exceed 2^53 and the JSON server sends them as strings, while
//! user and chat ids are numbers; some paths (pushes 155/156, TCP) send
//! message ids as numbers and map keys that are ids are always strings. All
//! three newtypes therefore accept either form, also as map keys.

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;
use std::str::FromStr;

/// An id string that is not a decimal 64-bit integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a decimal 64-bit id: {0:?}")]
pub struct ParseIdError(pub String);

/// Parses a decimal i64, tolerating surrounding whitespace (seen in ids
/// copied out of logs and configs).
fn parse_i64(text: &str) -> Result<i64, ParseIdError> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| ParseIdError(text.to_owned()))
}

/// Visitor accepting an integer, an integral float or a decimal string.
struct IdVisitor;

impl Visitor<'_> for IdVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a 64-bit integer id as a number or a decimal string")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format!("id {v} does not fit in i64")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // Some JavaScript-side encoders emit whole numbers as floats; accept
        // those but refuse anything that would silently lose precision.
        if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
            Ok(v as i64)
        } else {
            Err(E::custom(format!("id {v} is not an exact integer")))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        parse_i64(v).map_err(E::custom)
    }
}

/// Deserializes an i64 given as a number or a decimal string. For use as
/// `#[serde(deserialize_with = "int_or_string")]` on plain `i64` fields.
pub fn int_or_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_any(IdVisitor)
}

/// `Option` flavour of [`int_or_string`]: `null` and absence give `None`.
pub fn opt_int_or_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    struct OptVisitor;
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an optional 64-bit integer id")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(IdVisitor).map(Some)
        }
    }
    deserializer.deserialize_option(OptVisitor)
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $ser:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub i64);

        impl $name {
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_i64(s).map($name)
            }
        }

        impl From<i64> for $name {
            fn from(value: i64) -> Self {
                $name(value)
            }
        }

        impl From<$name> for i64 {
            fn from(value: $name) -> i64 {
                value.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(IdVisitor).map($name)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                $ser(self.0, serializer)
            }
        }
    };
}

fn ser_number<S: Serializer>(v: i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(v)
}

fn ser_string<S: Serializer>(v: i64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&v)
}

id_type!(
    /// A user (contact, bot) id. Serialized as a JSON number.
    UserId,
    ser_number
);
id_type!(
    /// A chat id: positive for dialogs (`me XOR other`), 0 for Saved
    /// messages, negative for groups and channels. Serialized as a number.
    ChatId,
    ser_number
);
id_type!(
    /// A message id (`(ms << 16) | counter`, beyond 2^53). Serialized as a
    /// decimal string like the JSON server sends it; see
    /// [`MessageId::serialize_number`] for fields that need a number.
    MessageId,
    ser_string
);

impl ChatId {
    /// The Saved messages ("Избранное") chat.
    pub const SAVED: ChatId = ChatId(0);

    /// The id of the dialog between two users (`a XOR b`, §4.2).
    pub fn dialog(a: UserId, b: UserId) -> ChatId {
        ChatId(a.0 ^ b.0)
    }

    /// Groups and channels have negative ids.
    pub fn is_group_or_channel(self) -> bool {
        self.0 < 0
    }
}

impl MessageId {
    /// The server time (ms) encoded in the high bits of a server-made id.
    pub fn timestamp_ms(self) -> i64 {
        self.0 >> 16
    }

    /// Serializes as a JSON number, for payloads that carry message ids as
    /// numbers (pushes 155/156, the binary transports):
    /// `#[serde(serialize_with = "MessageId::serialize_number")]`.
    pub fn serialize_number<S: Serializer>(id: &MessageId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn ids_accept_numbers_and_strings() {
        let a: MessageId = serde_json::from_value(json!("116785152327680001")).unwrap();
        let b: MessageId = serde_json::from_value(json!(116785152327680001_i64)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.get(), 116_785_152_327_680_001);
        let c: ChatId = serde_json::from_value(json!("-70000000000001")).unwrap();
        assert_eq!(c, ChatId(-70_000_000_000_001));
        let u: UserId = serde_json::from_str("87654321").unwrap();
        assert_eq!(u, UserId(87_654_321));
    }

    #[test]
    fn ids_refuse_garbage() {
        assert!(serde_json::from_value::<UserId>(json!("12a")).is_err());
        assert!(serde_json::from_value::<UserId>(json!(true)).is_err());
        assert!(serde_json::from_value::<UserId>(json!(1.5)).is_err());
        assert!(serde_json::from_value::<MessageId>(json!(u64::MAX)).is_err());
        assert!("x".parse::<ChatId>().is_err());
    }

    #[test]
    fn serialization_forms() {
        assert_eq!(serde_json::to_value(MessageId(5)).unwrap(), json!("5"));
        assert_eq!(serde_json::to_value(ChatId(-5)).unwrap(), json!(-5));
        assert_eq!(serde_json::to_value(UserId(7)).unwrap(), json!(7));
        assert_eq!(MessageId(5).to_string(), "5");
        assert_eq!("-12".parse::<ChatId>().unwrap(), ChatId(-12));
    }

    #[test]
    fn ids_work_as_map_keys_both_ways() {
        let text = r#"{"13446207": 1754255190472, "-5": 0}"#;
        let map: BTreeMap<ChatId, i64> = serde_json::from_str(text).unwrap();
        assert_eq!(map[&ChatId(13_446_207)], 1_754_255_190_472);
        let value: BTreeMap<UserId, i64> =
            serde_json::from_value(serde_json::from_str(text).unwrap()).unwrap();
        assert_eq!(value[&UserId(-5)], 0);
        let back = serde_json::to_value(&map).unwrap();
        assert_eq!(back, json!({"13446207": 1754255190472_i64, "-5": 0}));
        let msgs: BTreeMap<MessageId, u8> = serde_json::from_value(json!({"9": 1})).unwrap();
        assert_eq!(serde_json::to_value(&msgs).unwrap(), json!({"9": 1}));
    }

    #[test]
    fn dialog_id_is_xor() {
        assert_eq!(
            ChatId::dialog(UserId(3_260_455), UserId(6_236_697)),
            ChatId(7_268_926)
        );
        assert_eq!(
            MessageId(116_785_152_327_680_001).timestamp_ms(),
            1_782_000_005_000
        );
    }
}
