//! Opcode numbers of the MAX protocol and their names.
//!
//! An [`Opcode`] is a plain number so that opcodes the spec does not know
//! survive decoding and re-encoding; the constants below name every opcode
//! of the master table in `max-protocol.md` §2.0.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An opcode as carried in a frame. Unknown numbers are kept as they are.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Opcode(pub u16);

macro_rules! opcodes {
    ($($name:ident = $num:literal,)*) => {
        impl Opcode {
            $(pub const $name: Opcode = Opcode($num);)*

            /// The spec's name of this opcode, if it has one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($num => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// Every opcode the spec names, in numeric order.
            pub const ALL: &'static [Opcode] = &[$(Opcode($num),)*];
        }
    };
}

opcodes! {
    PING = 1,
    DEBUG = 2,
    RECONNECT = 3,
    LOG = 5,
    SESSION_INIT = 6,
    PROFILE = 16,
    AUTH_REQUEST = 17,
    AUTH = 18,
    LOGIN = 19,
    LOGOUT = 20,
    SYNC = 21,
    CONFIG = 22,
    AUTH_CONFIRM = 23,
    PRESET_AVATARS = 25,
    ASSETS_GET = 26,
    ASSETS_UPDATE = 27,
    ASSETS_GET_BY_IDS = 28,
    ASSETS_ADD = 29,
    SEARCH_FEEDBACK = 31,
    CONTACT_INFO = 32,
    CONTACT_ADD = 33,
    CONTACT_UPDATE = 34,
    CONTACT_PRESENCE = 35,
    CONTACT_LIST = 36,
    CONTACT_SEARCH = 37,
    CONTACT_MUTUAL = 38,
    CONTACT_PHOTOS = 39,
    CONTACT_SORT = 40,
    CONTACT_ADD_BY_PHONE = 41,
    CONTACT_VERIFY = 42,
    REMOVE_CONTACT_PHOTO = 43,
    OWN_CONTACT_SEARCH = 44,
    CONTACT_INFO_EXTERNAL = 45,
    CONTACT_INFO_BY_PHONE = 46,
    UNNAMED_47 = 47,
    CHAT_INFO = 48,
    CHAT_HISTORY = 49,
    CHAT_MARK = 50,
    CHAT_MEDIA = 51,
    CHAT_DELETE = 52,
    CHATS_LIST = 53,
    CHAT_CLEAR = 54,
    CHAT_UPDATE = 55,
    CHAT_CHECK_LINK = 56,
    CHAT_JOIN = 57,
    CHAT_LEAVE = 58,
    CHAT_MEMBERS = 59,
    PUBLIC_SEARCH = 60,
    CHAT_PERSONAL_CONFIG = 61,
    CHAT_LIVESTREAM_INFO = 62,
    CHAT_CREATE = 63,
    MSG_SEND = 64,
    MSG_TYPING = 65,
    MSG_DELETE = 66,
    MSG_EDIT = 67,
    CHAT_SEARCH = 68,
    MSG_SHARE_PREVIEW = 70,
    MSG_GET = 71,
    MSG_SEARCH_TOUCH = 72,
    MSG_SEARCH = 73,
    MSG_GET_STAT = 74,
    CHAT_SUBSCRIBE = 75,
    VIDEO_CHAT_START = 76,
    CHAT_MEMBERS_UPDATE = 77,
    VIDEO_CHAT_START_ACTIVE = 78,
    VIDEO_CHAT_HISTORY = 79,
    PHOTO_UPLOAD = 80,
    STICKER_UPLOAD = 81,
    VIDEO_UPLOAD = 82,
    VIDEO_PLAY = 83,
    VIDEO_CHAT_CREATE_JOIN_LINK = 84,
    MUSIC_PLAY30 = 85,
    CHAT_PIN_SET_VISIBILITY = 86,
    FILE_UPLOAD = 87,
    FILE_DOWNLOAD = 88,
    LINK_INFO = 89,
    MESSAGE_LINK = 90,
    MSG_DELETE_RANGE = 92,
    MSG_CONSTRUCT = 94,
    SESSIONS_INFO = 96,
    SESSIONS_CLOSE = 97,
    PHONE_BIND_REQUEST = 98,
    PHONE_BIND_CONFIRM = 99,
    UNBIND_OK_PROFILE = 100,
    AUTH_LOGIN_RESTORE_PASSWORD = 101,
    VIDEO_CHAT_JOIN_OLD = 102,
    GET_INBOUND_CALLS = 103,
    AUTH_2FA_DETAILS = 104,
    EXTERNAL_CALLBACK = 105,
    GET_BOT_INFO = 106,
    AUTH_VALIDATE_PASSWORD = 107,
    AUTH_VALIDATE_HINT = 108,
    AUTH_VERIFY_EMAIL = 109,
    AUTH_CHECK_EMAIL = 110,
    AUTH_SET_2FA = 111,
    AUTH_CREATE_TRACK = 112,
    AUTH_CHECK_PASSWORD = 113,
    AUTH_LOGIN_CHECK_PASSWORD = 115,
    AUTH_LOGIN_PROFILE_DELETE = 116,
    CHAT_COMPLAIN = 117,
    MSG_SEND_CALLBACK = 118,
    SUSPEND_BOT = 119,
    LOCATION_STOP = 124,
    LOCATION_SEND = 125,
    LOCATION_REQUEST = 126,
    GET_LAST_MENTIONS = 127,
    NOTIF_MESSAGE = 128,
    NOTIF_TYPING = 129,
    NOTIF_MARK = 130,
    NOTIF_CONTACT = 131,
    NOTIF_PRESENCE = 132,
    NOTIF_CONFIG = 134,
    NOTIF_CHAT = 135,
    NOTIF_ATTACH = 136,
    NOTIF_CALL_START = 137,
    NOTIF_VIDEO_CHAT_COMMAND = 138,
    NOTIF_CONTACT_SORT = 139,
    NOTIF_MSG_DELETE_RANGE = 140,
    NOTIF_MSG_DELETE = 142,
    NOTIF_CALLBACK_ANSWER = 143,
    CHAT_BOT_COMMANDS = 144,
    BOT_INFO = 145,
    NOTIF_MSG_CONSTRUCT = 146,
    NOTIF_LOCATION = 147,
    NOTIF_LOCATION_REQUEST = 148,
    NOTIF_ASSETS_UPDATE = 150,
    NOTIF_DRAFT = 152,
    NOTIF_DRAFT_DISCARD = 153,
    NOTIF_MSG_DELAYED = 154,
    NOTIF_MSG_REACTIONS_CHANGED = 155,
    NOTIF_MSG_YOU_REACTED = 156,
    CALLS_TOKEN = 158,
    NOTIF_PROFILE = 159,
    WEB_APP_INIT_DATA = 160,
    COMPLAIN = 161,
    COMPLAIN_REASONS_GET = 162,
    CALL_HISTORY = 163,
    VIDEO_CHAT_JOIN = 166,
    DRAFT_SAVE = 176,
    DRAFT_DISCARD = 177,
    MSG_REACTION = 178,
    MSG_CANCEL_REACTION = 179,
    MSG_GET_REACTIONS = 180,
    MSG_GET_DETAILED_REACTIONS = 181,
    STICKER_CREATE = 193,
    STICKER_SUGGEST = 194,
    VIDEO_CHAT_MEMBERS = 195,
    CHAT_HIDE = 196,
    CHAT_SEARCH_COUNT_MSG = 197,
    CHAT_SEARCH_COMMON_PARTICIPANTS = 198,
    PROFILE_DELETE = 199,
    PROFILE_DELETE_TIME = 200,
    GET_USER_SCORE = 201,
    TRANSCRIBE_MEDIA = 202,
    UNNAMED_208 = 208,
    UNNAMED_209 = 209,
    AUTH_CAPTCHA_REQUEST = 224,
    ORG_INFO = 256,
    CHAT_REACTIONS_SETTINGS_SET = 257,
    REACTIONS_SETTINGS_GET_BY_CHAT_ID = 258,
    ASSETS_REMOVE = 259,
    ASSETS_MOVE = 260,
    ASSETS_LIST_MODIFY = 261,
    AUTH_CHECK_SCENARIO = 263,
    FOLDERS_GET = 272,
    FOLDERS_GET_BY_ID = 273,
    FOLDERS_UPDATE = 274,
    FOLDERS_REORDER = 275,
    FOLDERS_DELETE = 276,
    NOTIF_FOLDERS = 277,
    GET_QR = 288,
    GET_QR_STATUS = 289,
    AUTH_QR_APPROVE = 290,
    LOGIN_BY_QR = 291,
    NOTIF_BANNERS = 292,
    NOTIF_TRANSCRIPTION = 293,
    CHAT_SUGGEST = 300,
    AUDIO_PLAY = 301,
    BANNERS_GET = 302,
    MSG_DELIVERY = 303,
    SEND_VOTE = 304,
    VOTERS_LIST_BY_ANSWER = 305,
    GET_POLL_UPDATES = 306,
}

impl Opcode {
    /// Push-only opcodes (128–156 except 144/145): a client must never send
    /// them as requests, and a server answers them with `proto.opcode`.
    pub fn is_push_only(self) -> bool {
        (128..=156).contains(&self.0) && self.0 != 144 && self.0 != 145
    }
}

impl fmt::Debug for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}({})", self.0),
            None => write!(f, "Opcode({})", self.0),
        }
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<u16> for Opcode {
    fn from(value: u16) -> Self {
        Opcode(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_and_keeps_unknown() {
        assert_eq!(Opcode(64).name(), Some("MSG_SEND"));
        assert_eq!(Opcode::NOTIF_MESSAGE.0, 128);
        assert_eq!(Opcode(999).name(), None);
        assert_eq!(format!("{:?}", Opcode(999)), "Opcode(999)");
        assert_eq!(format!("{:?}", Opcode::LOGIN), "LOGIN(19)");
    }

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(Opcode::ALL.windows(2).all(|w| w[0] < w[1]));
        assert!(Opcode::ALL.len() > 150);
    }

    #[test]
    fn push_only_range() {
        assert!(Opcode::NOTIF_MESSAGE.is_push_only());
        assert!(!Opcode::CHAT_BOT_COMMANDS.is_push_only());
        assert!(!Opcode::MSG_SEND.is_push_only());
    }
}
