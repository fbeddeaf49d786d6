//! Typed views of the payloads of the MAX protocol (`max-protocol.md` §2–§5).
//!
//! Frames carry payloads as [`serde_json::Value`]; the types here are serde
//! views on them: `serde_json::from_value::<LoginResponse>(frame.payload)`
//! and `serde_json::to_value(&request)`. Design rules:
//!
//! - Unknown fields never break parsing and are kept: every struct has a
//!   flattened `extra` map, so parse → serialize keeps them.
//! - Fields the server always sends (e.g. a message's `text` and `attaches`)
//!   are plain values and always serialized; fields it sometimes omits are
//!   `Option`s skipped when `None`. A JSON `null` in an optional field reads
//!   as `None` and is therefore omitted when serialized again.
//! - Where the spec says a field's type varies (`options`, `gender`,
//!   `webApp`, `phone`), the field is an untagged enum or a raw `Value`.
//! - Attachments of unknown kind, or of a known kind whose fields do not
//!   fit, are kept verbatim as [`Attach::Unknown`].
//! - Enumerations of strings have an `Other(String)` variant.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Declares an enum of wire strings with an `Other(String)` fallback so that
/// values the spec does not know survive a round trip.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this crate does not know, kept as sent.
            Other(String),
        }

        impl $name {
            /// The string as it appears on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $wire,)*
                    $name::Other(other) => other,
                }
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                match value {
                    $($wire => $name::$variant,)*
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                Ok($name::from(text.as_ref()))
            }
        }
    };
}

pub mod attach;
pub mod auth;
pub mod chat;
pub mod chat_ops;
pub mod common;
pub mod contacts;
pub mod ids;
pub mod media;
pub mod message;
pub mod messaging;
pub mod push;
pub mod user;

pub use attach::*;
pub use auth::*;
pub use chat::*;
pub use chat_ops::*;
pub use common::*;
pub use contacts::*;
pub use ids::{ChatId, MessageId, ParseIdError, UserId};
pub use media::*;
pub use message::*;
pub use messaging::*;
pub use push::*;
pub use user::*;

use crate::opcode::Opcode;

/// Unknown fields of a payload object, kept for lossless round trips.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// A client request payload: its opcode and the payload type of its answer.
///
/// Lets a client offer `call(request) -> Result<R::Response, _>` without a
/// table of opcodes at every call site. Decode answers with
/// [`from_payload`], since some OK answers carry a `null` payload.
pub trait Request: Serialize {
    const OPCODE: Opcode;
    type Response: DeserializeOwned;
}

/// The answer of requests whose OK payload carries nothing of interest
/// (`null`, `{}`, or fields the bridge ignores); fields are kept anyway.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EmptyResponse {
    #[serde(flatten)]
    pub extra: Extra,
}

/// Deserializes `T` from a `null` payload as if it were `{}`: several
/// answers come as `null` (PING ack, CHAT_SUBSCRIBE ack).
pub fn from_payload<T: DeserializeOwned>(payload: serde_json::Value) -> serde_json::Result<T> {
    match payload {
        serde_json::Value::Null => serde_json::from_value(serde_json::Value::Object(Extra::new())),
        other => serde_json::from_value(other),
    }
}
