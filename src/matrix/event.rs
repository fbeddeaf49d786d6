//! Events as pushed by the homeserver, parsed leniently: the few fields every
//! event must have are typed, and the full JSON is kept for everything else,
//! so an event type ruma does not know (or a slightly off event) still
//! reaches the bridge.

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why an event from a transaction could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EventParseError {
    #[error("event is not a JSON object")]
    NotAnObject,
    #[error("event field `{0}` is missing or has the wrong type")]
    MissingField(&'static str),
    #[error("event field `{field}` is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
}

/// A room event (timeline or state) delivered in a transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct RoomEvent {
    /// Opaque room id; never parse a server name out of it.
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub sender: OwnedUserId,
    /// The event type, e.g. `m.room.message`.
    pub event_type: String,
    /// Present exactly for state events.
    pub state_key: Option<String>,
    /// The `content` object (an empty object for redacted events).
    pub content: Value,
    /// Milliseconds since the Unix epoch, as stamped by the origin server.
    pub origin_server_ts: u64,
    /// The complete event as received.
    pub raw: Value,
}

impl RoomEvent {
    /// Parses the typed fields out of `raw`, keeping `raw` as is.
    pub fn from_json(raw: Value) -> Result<Self, EventParseError> {
        let object = raw.as_object().ok_or(EventParseError::NotAnObject)?;
        let str_field = |name: &'static str| {
            object
                .get(name)
                .and_then(Value::as_str)
                .ok_or(EventParseError::MissingField(name))
        };
        let invalid = |field: &'static str| {
            move |e: ruma::IdParseError| EventParseError::InvalidField {
                field,
                reason: e.to_string(),
            }
        };
        let room_id = OwnedRoomId::try_from(str_field("room_id")?).map_err(invalid("room_id"))?;
        let event_id =
            OwnedEventId::try_from(str_field("event_id")?).map_err(invalid("event_id"))?;
        let sender = OwnedUserId::try_from(str_field("sender")?).map_err(invalid("sender"))?;
        let event_type = str_field("type")?.to_owned();
        let state_key = match object.get("state_key") {
            None => None,
            Some(Value::String(key)) => Some(key.clone()),
            Some(_) => return Err(EventParseError::MissingField("state_key")),
        };
        let content = match object.get("content") {
            Some(content @ Value::Object(_)) => content.clone(),
            _ => return Err(EventParseError::MissingField("content")),
        };
        let origin_server_ts = object
            .get("origin_server_ts")
            .and_then(Value::as_u64)
            .ok_or(EventParseError::MissingField("origin_server_ts"))?;
        Ok(Self {
            room_id,
            event_id,
            sender,
            event_type,
            state_key,
            content,
            origin_server_ts,
            raw,
        })
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// Deserializes `content` into a typed event content (e.g. a ruma
    /// `RoomMessageEventContent`).
    pub fn content_as<C: DeserializeOwned>(&self) -> Result<C, serde_json::Error> {
        C::deserialize(&self.content)
    }

    /// The event an `m.room.redaction` redacts: in `content` since room
    /// version 11, at the top level before.
    pub fn redacts(&self) -> Option<&str> {
        self.content
            .get("redacts")
            .or_else(|| self.raw.get("redacts"))
            .and_then(Value::as_str)
    }

    /// The transaction id the sender gave, visible only to the sender (so set
    /// on events the appservice itself sent).
    pub fn transaction_id(&self) -> Option<&str> {
        self.raw
            .get("unsigned")
            .and_then(|u| u.get("transaction_id"))
            .and_then(Value::as_str)
    }
}

/// An ephemeral event (typing, receipt, presence) delivered in a transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct EphemeralEvent {
    pub event_type: String,
    /// Set for room-scoped ephemeral events (typing, receipts).
    pub room_id: Option<OwnedRoomId>,
    pub content: Value,
    /// The complete event as received.
    pub raw: Value,
}

impl EphemeralEvent {
    pub fn from_json(raw: Value) -> Result<Self, EventParseError> {
        let object = raw.as_object().ok_or(EventParseError::NotAnObject)?;
        let event_type = object
            .get("type")
            .and_then(Value::as_str)
            .ok_or(EventParseError::MissingField("type"))?
            .to_owned();
        let room_id = match object.get("room_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(OwnedRoomId::try_from(id.as_str()).map_err(|e| {
                EventParseError::InvalidField {
                    field: "room_id",
                    reason: e.to_string(),
                }
            })?),
            Some(_) => return Err(EventParseError::MissingField("room_id")),
        };
        let content = object.get("content").cloned().unwrap_or(Value::Null);
        Ok(Self {
            event_type,
            room_id,
            content,
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_message_with_a_v12_room_id() {
        let raw = json!({
            "room_id": "!OcXK_5deAbC",
            "event_id": "$abc",
            "sender": "@alice:example.org",
            "type": "m.room.message",
            "content": {"msgtype": "m.text", "body": "hi"},
            "origin_server_ts": 1_700_000_000_000u64,
            "unsigned": {"transaction_id": "t1"}
        });
        let event = RoomEvent::from_json(raw.clone()).expect("parses");
        assert_eq!(event.room_id.as_str(), "!OcXK_5deAbC");
        assert_eq!(event.event_type, "m.room.message");
        assert_eq!(event.content["body"], "hi");
        assert_eq!(event.origin_server_ts, 1_700_000_000_000);
        assert!(!event.is_state());
        assert_eq!(event.transaction_id(), Some("t1"));
        assert_eq!(event.raw, raw);
    }

    #[test]
    fn state_key_and_redacts() {
        let state = RoomEvent::from_json(json!({
            "room_id": "!r:example.org", "event_id": "$s", "sender": "@a:example.org",
            "type": "m.room.member", "state_key": "@a:example.org",
            "content": {"membership": "join"}, "origin_server_ts": 1
        }))
        .expect("parses");
        assert_eq!(state.state_key.as_deref(), Some("@a:example.org"));
        let redaction = RoomEvent::from_json(json!({
            "room_id": "!r:example.org", "event_id": "$r", "sender": "@a:example.org",
            "type": "m.room.redaction", "redacts": "$old",
            "content": {}, "origin_server_ts": 1
        }))
        .expect("parses");
        assert_eq!(redaction.redacts(), Some("$old"));
    }

    #[test]
    fn rejects_events_missing_required_fields() {
        let err = RoomEvent::from_json(json!({"type": "m.room.message"})).expect_err("invalid");
        assert!(
            matches!(err, EventParseError::MissingField("room_id")),
            "{err}"
        );
        let err = RoomEvent::from_json(json!({
            "room_id": "no-sigil", "event_id": "$e", "sender": "@a:b",
            "type": "t", "content": {}, "origin_server_ts": 1
        }))
        .expect_err("invalid");
        assert!(
            matches!(
                err,
                EventParseError::InvalidField {
                    field: "room_id",
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            RoomEvent::from_json(json!([1, 2])),
            Err(EventParseError::NotAnObject)
        ));
    }
}
