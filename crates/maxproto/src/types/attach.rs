//! Message attachments (§4.5 incoming shapes, §2.4 outgoing forms), a
//! `_type`-tagged union with a lossless fallback for anything unknown.

use super::Extra;
use super::ids::{UserId, opt_int_or_string};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// One attachment. Known kinds are parsed into their struct; any other
/// `_type` (or a missing one, or a known kind whose fields have unexpected
/// types) is kept verbatim as [`Attach::Unknown`], so that re-serializing
/// gives back exactly what the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Attach {
    Photo(PhotoAttach),
    Video(VideoAttach),
    File(FileAttach),
    Audio(AudioAttach),
    Sticker(StickerAttach),
    Call(CallAttach),
    Control(ControlAttach),
    Share(ShareAttach),
    Contact(ContactAttach),
    Location(LocationAttach),
    InlineKeyboard(InlineKeyboardAttach),
    Poll(PollAttach),
    /// Raw JSON of an attachment this crate does not model.
    Unknown(Value),
}

const TYPE_KEY: &str = "_type";

macro_rules! attach_kinds {
    ($($variant:ident($ty:ty) = $wire:literal,)*) => {
        impl Attach {
            /// The `_type` discriminator (for `Unknown`, whatever was sent,
            /// or "" when missing).
            pub fn kind(&self) -> &str {
                match self {
                    $(Attach::$variant(_) => $wire,)*
                    Attach::Unknown(raw) => raw.get(TYPE_KEY).and_then(Value::as_str).unwrap_or(""),
                }
            }

            fn from_value(value: Value) -> Attach {
                let Value::Object(mut map) = value else {
                    return Attach::Unknown(value);
                };
                let kind = map.get(TYPE_KEY).and_then(Value::as_str).map(str::to_owned);
                let Some(kind) = kind else {
                    return Attach::Unknown(Value::Object(map));
                };
                match kind.as_str() {
                    $($wire => {
                        let tag = map.remove(TYPE_KEY);
                        match <$ty>::deserialize(&Value::Object(map.clone())) {
                            Ok(parsed) => Attach::$variant(parsed),
                            Err(_) => {
                                if let Some(tag) = tag {
                                    map.insert(TYPE_KEY.to_owned(), tag);
                                }
                                Attach::Unknown(Value::Object(map))
                            }
                        }
                    })*
                    _ => Attach::Unknown(Value::Object(map)),
                }
            }

            fn to_value(&self) -> serde_json::Result<Value> {
                let (kind, mut value) = match self {
                    $(Attach::$variant(inner) => ($wire, serde_json::to_value(inner)?),)*
                    Attach::Unknown(raw) => return Ok(raw.clone()),
                };
                match &mut value {
                    Value::Object(map) => {
                        map.insert(TYPE_KEY.to_owned(), Value::String(kind.to_owned()));
                    }
                    _ => return Err(<serde_json::Error as serde::ser::Error>::custom("attachment is not an object")),
                }
                Ok(value)
            }
        }
    };
}

attach_kinds! {
    Photo(PhotoAttach) = "PHOTO",
    Video(VideoAttach) = "VIDEO",
    File(FileAttach) = "FILE",
    Audio(AudioAttach) = "AUDIO",
    Sticker(StickerAttach) = "STICKER",
    Call(CallAttach) = "CALL",
    Control(ControlAttach) = "CONTROL",
    Share(ShareAttach) = "SHARE",
    Contact(ContactAttach) = "CONTACT",
    Location(LocationAttach) = "LOCATION",
    InlineKeyboard(InlineKeyboardAttach) = "INLINE_KEYBOARD",
    Poll(PollAttach) = "POLL",
}

impl<'de> Deserialize<'de> for Attach {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Attach::from_value)
    }
}

impl Serialize for Attach {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value()
            .map_err(S::Error::custom)?
            .serialize(serializer)
    }
}

impl Attach {
    /// Outgoing photo: `{_type: PHOTO, photoToken}` (token from the upload).
    pub fn photo(photo_token: impl Into<String>) -> Attach {
        Attach::Photo(PhotoAttach {
            photo_token: Some(photo_token.into()),
            ..PhotoAttach::default()
        })
    }

    /// Outgoing video: `{_type: VIDEO, videoId, token}`.
    pub fn video(video_id: i64, token: impl Into<String>) -> Attach {
        Attach::Video(VideoAttach {
            video_id: Some(video_id),
            token: Some(token.into()),
            ..VideoAttach::default()
        })
    }

    /// Outgoing file: `{_type: FILE, fileId}`.
    pub fn file(file_id: i64) -> Attach {
        Attach::File(FileAttach {
            file_id: Some(file_id),
            ..FileAttach::default()
        })
    }

    /// Outgoing voice message: `{_type: AUDIO, audioId, token, duration}`.
    pub fn audio(audio_id: i64, token: impl Into<String>, duration_ms: i64) -> Attach {
        Attach::Audio(AudioAttach {
            audio_id: Some(audio_id),
            token: Some(token.into()),
            duration: Some(duration_ms),
            ..AudioAttach::default()
        })
    }

    /// Outgoing sticker: `{_type: STICKER, stickerId}`.
    pub fn sticker(sticker_id: i64) -> Attach {
        Attach::Sticker(StickerAttach {
            sticker_id: Some(sticker_id),
            ..StickerAttach::default()
        })
    }

    /// A service event, e.g. `control("botStarted")`.
    pub fn control(event: impl Into<String>) -> Attach {
        Attach::Control(ControlAttach {
            event: Some(event.into()),
            ..ControlAttach::default()
        })
    }
}

/// `PHOTO`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhotoAttach {
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub photo_id: Option<i64>,
    /// Directly fetchable image URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_token: Option<String>,
    /// Tiny preview (data URL or bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_data: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `VIDEO`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoAttach {
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub video_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<i64>,
    /// Probably ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    /// Thumbnail URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_type: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `FILE`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileAttach {
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `AUDIO` (voice message).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioAttach {
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub audio_id: Option<i64>,
    /// Milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    /// Waveform (bytes 0–127), kept raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `SUCCESS`, `PROCESSING`, `FAILED`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription_status: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `STICKER`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StickerAttach {
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub sticker_id: Option<i64>,
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub set_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lottie_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticker_type: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `CALL` (a finished or missed call).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallAttach {
    /// `AUDIO` / `VIDEO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    /// `HUNGUP`, `REJECTED`, `CANCELED`, `TIMEOUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hangup_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_ids: Option<Vec<UserId>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `CONTROL`: service events (chat created, members added, title changed…).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlAttach {
    /// `new`, `add`, `remove`, `leave`, `title`, `icon`, `pin`,
    /// `joinByLink`, `botStarted`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ids: Option<Vec<UserId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `CHAT` / `CHANNEL` when creating a chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_type: Option<String>,
    /// Rendered text of the event, when the server provides one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_message: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `SHARE`: a link preview.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShareAttach {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `{url}` of the preview image, kept raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Value>,
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub share_id: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `CONTACT`: a shared contact card.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactAttach {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_url: Option<String>,
    /// Number or string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `LOCATION`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationAttach {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `INLINE_KEYBOARD` (bot buttons); the keyboard is kept raw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InlineKeyboardAttach {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_id: Option<Value>,
    /// `{buttons: [[{type, text, payload?, url?, …}]]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyboard: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POLL`; answers and state are kept raw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollAttach {
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub poll_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_kind_parses_and_round_trips() {
        let raw = json!({"_type": "FILE", "name": "a.zip", "size": 8880, "fileId": 1255973,
            "token": "t", "mystery": [1, 2]});
        let attach: Attach = serde_json::from_value(raw.clone()).unwrap();
        let Attach::File(file) = &attach else {
            panic!("expected FILE, got {attach:?}");
        };
        assert_eq!(file.file_id, Some(1_255_973));
        assert_eq!(file.name.as_deref(), Some("a.zip"));
        assert!(!file.extra.contains_key("_type"));
        assert_eq!(attach.kind(), "FILE");
        assert_eq!(serde_json::to_value(&attach).unwrap(), raw);
    }

    #[test]
    fn unknown_and_malformed_kinds_are_kept_verbatim() {
        for raw in [
            json!({"_type": "PRESENT", "presentId": 5}),
            json!({"buttons": []}),
            json!({"_type": "FILE", "name": {"not": "a string"}}),
            json!("weird"),
        ] {
            let attach: Attach = serde_json::from_value(raw.clone()).unwrap();
            assert!(matches!(attach, Attach::Unknown(_)), "{raw}");
            assert_eq!(serde_json::to_value(&attach).unwrap(), raw);
        }
        let present: Attach = serde_json::from_value(json!({"_type": "PRESENT"})).unwrap();
        assert_eq!(present.kind(), "PRESENT");
    }

    #[test]
    fn outgoing_forms_match_the_spec() {
        assert_eq!(
            serde_json::to_value(Attach::photo("pt")).unwrap(),
            json!({"_type": "PHOTO", "photoToken": "pt"})
        );
        assert_eq!(
            serde_json::to_value(Attach::video(9, "vt")).unwrap(),
            json!({"_type": "VIDEO", "videoId": 9, "token": "vt"})
        );
        assert_eq!(
            serde_json::to_value(Attach::file(7)).unwrap(),
            json!({"_type": "FILE", "fileId": 7})
        );
        assert_eq!(
            serde_json::to_value(Attach::sticker(3)).unwrap(),
            json!({"_type": "STICKER", "stickerId": 3})
        );
        assert_eq!(
            serde_json::to_value(Attach::control("botStarted")).unwrap(),
            json!({"_type": "CONTROL", "event": "botStarted"})
        );
        assert_eq!(
            serde_json::to_value(Attach::audio(4, "at", 1500)).unwrap(),
            json!({"_type": "AUDIO", "audioId": 4, "token": "at", "duration": 1500})
        );
    }
}
