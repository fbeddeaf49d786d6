//! Session and authentication payloads (§2.1): PING (1), SESSION_INIT (6),
//! AUTH_REQUEST (17), AUTH (18), LOGIN (19) and LOGOUT (20).

use super::chat::Chat;
use super::common::{LoginConfig, Presence};
use super::ids::{ChatId, UserId};
use super::message::Message;
use super::user::{Profile, User};
use super::{EmptyResponse, Extra, Request};
use crate::opcode::Opcode;
use crate::token::Token;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Browser `User-Agent` the web client profile of [`UserAgent::web_default`]
/// claims; send the same string as the WebSocket `User-Agent` header.
pub const WEB_USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36";

/// Web client version claimed by [`UserAgent::web_default`]; stale versions
/// are refused by the server (§2.1).
pub const WEB_APP_VERSION: &str = "26.9.8";

/// 1 PING `{interactive}`; the answer is `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PingRequest {
    /// Whether a human is looking (drives online presence).
    pub interactive: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for PingRequest {
    const OPCODE: Opcode = Opcode::PING;
    type Response = EmptyResponse;
}

/// `userAgent` of SESSION_INIT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAgent {
    /// `WEB`, `ANDROID`, `IOS`, `DESKTOP`.
    pub device_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_device_type: Option<String>,
    pub locale: String,
    pub device_locale: String,
    pub os_version: String,
    pub device_name: String,
    pub header_user_agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_pwa: Option<bool>,
    pub app_version: String,
    pub screen: String,
    pub timezone: String,
    #[serde(flatten)]
    pub extra: Extra,
}

impl UserAgent {
    /// What web.max.ru (Chrome on Linux) sends, per the 2026 captures.
    pub fn web_default() -> UserAgent {
        UserAgent {
            device_type: "WEB".to_owned(),
            push_device_type: Some("WEBPUSH".to_owned()),
            locale: "ru".to_owned(),
            device_locale: "ru".to_owned(),
            os_version: "Linux".to_owned(),
            device_name: "Chrome".to_owned(),
            header_user_agent: WEB_USER_AGENT.to_owned(),
            is_pwa: Some(false),
            app_version: WEB_APP_VERSION.to_owned(),
            screen: "1080x1920 1.0x".to_owned(),
            timezone: "Europe/Moscow".to_owned(),
            extra: Extra::new(),
        }
    }
}

/// 6 SESSION_INIT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInitRequest {
    pub user_agent: UserAgent,
    /// Stable per installation/account (a UUID on the web).
    pub device_id: String,
    #[serde(flatten)]
    pub extra: Extra,
}

impl SessionInitRequest {
    pub fn web(device_id: impl Into<String>) -> SessionInitRequest {
        SessionInitRequest {
            user_agent: UserAgent::web_default(),
            device_id: device_id.into(),
            extra: Extra::new(),
        }
    }
}

impl Request for SessionInitRequest {
    const OPCODE: Opcode = Opcode::SESSION_INIT;
    type Response = SessionInitResponse;
}

/// Answer of SESSION_INIT; clients ignore it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionInitResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

wire_enum! {
    /// `type` of AUTH_REQUEST.
    AuthStartType {
        StartAuth = "START_AUTH",
        Resend = "RESEND",
    }
}

/// 17 AUTH_REQUEST: send an SMS code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthStartRequest {
    /// `+7XXXXXXXXXX`.
    pub phone: String,
    #[serde(rename = "type")]
    pub kind: AuthStartType,
    pub language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captcha_token: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl AuthStartRequest {
    pub fn start(phone: impl Into<String>) -> AuthStartRequest {
        AuthStartRequest {
            phone: phone.into(),
            kind: AuthStartType::StartAuth,
            language: "ru".to_owned(),
            captcha_token: None,
            extra: Extra::new(),
        }
    }
}

impl Request for AuthStartRequest {
    const OPCODE: Opcode = Opcode::AUTH_REQUEST;
    type Response = AuthStartResponse;
}

/// Answer of AUTH_REQUEST.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthStartResponse {
    /// Short-lived token to pass to AUTH (18).
    pub token: Token,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_length: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_max_duration: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_count_left: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_action_duration: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

wire_enum! {
    /// `authTokenType` of AUTH.
    AuthTokenType {
        CheckCode = "CHECK_CODE",
    }
}

/// 18 AUTH: check the SMS code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthCodeRequest {
    /// The token of the AUTH_REQUEST answer.
    pub token: Token,
    pub verify_code: String,
    pub auth_token_type: AuthTokenType,
    #[serde(flatten)]
    pub extra: Extra,
}

impl AuthCodeRequest {
    pub fn new(token: Token, verify_code: impl Into<String>) -> AuthCodeRequest {
        AuthCodeRequest {
            token,
            verify_code: verify_code.into(),
            auth_token_type: AuthTokenType::CheckCode,
            extra: Extra::new(),
        }
    }
}

impl Request for AuthCodeRequest {
    const OPCODE: Opcode = Opcode::AUTH;
    type Response = AuthResponse;
}

/// Answer of AUTH (18), also of LOGIN_BY_QR (291) and the 2FA check (115).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_attrs: Option<TokenAttrs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// Present when the account has a 2FA password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_challenge: Option<PasswordChallenge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset_avatars: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl AuthResponse {
    /// The long-lived login token, on success.
    pub fn login_token(&self) -> Option<&Token> {
        self.token_attrs
            .as_ref()?
            .login
            .as_ref()
            .map(|attr| &attr.token)
    }

    /// The registration token, when the phone has no account yet.
    pub fn register_token(&self) -> Option<&Token> {
        self.token_attrs
            .as_ref()?
            .register
            .as_ref()
            .map(|attr| &attr.token)
    }
}

/// `tokenAttrs`: `{LOGIN: {token}}` or `{REGISTER: {token}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenAttrs {
    #[serde(rename = "LOGIN", default, skip_serializing_if = "Option::is_none")]
    pub login: Option<TokenAttr>,
    #[serde(rename = "REGISTER", default, skip_serializing_if = "Option::is_none")]
    pub register: Option<TokenAttr>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `tokenAttrs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenAttr {
    pub token: Token,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `passwordChallenge` of a 2FA account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordChallenge {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 19 LOGIN: log in with a token and fetch the initial state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    pub token: Token,
    pub interactive: bool,
    /// ≤ 100.
    pub chats_count: i64,
    /// Delta markers: 0 = everything, a previous answer's `time` = changes since.
    pub chats_sync: i64,
    pub contacts_sync: i64,
    pub presence_sync: i64,
    pub drafts_sync: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl LoginRequest {
    /// A full (non-delta) login fetching 40 chats, not marking the account
    /// as looked at (`interactive: false`, like the web client's LOGIN).
    pub fn new(token: Token) -> LoginRequest {
        LoginRequest {
            token,
            interactive: false,
            chats_count: 40,
            chats_sync: 0,
            contacts_sync: 0,
            presence_sync: 0,
            drafts_sync: 0,
            last_login: None,
            config_hash: None,
            extra: Extra::new(),
        }
    }
}

impl Request for LoginRequest {
    const OPCODE: Opcode = Opcode::LOGIN;
    type Response = LoginResponse;
}

/// Answer of LOGIN (19).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    pub profile: Profile,
    /// Most recent chats (always includes Saved messages, id 0).
    #[serde(default)]
    pub chats: Vec<Chat>,
    /// Paging marker for CHATS_LIST (53).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_marker: Option<i64>,
    /// Recent messages per chat.
    #[serde(default)]
    pub messages: BTreeMap<ChatId, Vec<Message>>,
    #[serde(default)]
    pub contacts: Vec<User>,
    #[serde(default)]
    pub presence: BTreeMap<UserId, Presence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<LoginConfig>,
    /// A replacement login token: persist it when present and different.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
    /// Server time (ms); the next LOGIN's `*Sync` markers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_chat_history: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drafts: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl LoginResponse {
    /// The logged-in user's id.
    pub fn me(&self) -> UserId {
        self.profile.contact.id
    }

    pub fn chat(&self, id: ChatId) -> Option<&Chat> {
        self.chats.iter().find(|chat| chat.id == id)
    }

    pub fn contact(&self, id: UserId) -> Option<&User> {
        self.contacts.iter().find(|user| user.id == id)
    }

    /// `config.server`, if sent.
    pub fn server_config(&self) -> Option<&super::common::ServerConfig> {
        self.config.as_ref()?.server.as_ref()
    }
}

/// 20 LOGOUT.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogoutRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_token: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for LogoutRequest {
    const OPCODE: Opcode = Opcode::LOGOUT;
    type Response = EmptyResponse;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_init_matches_the_web_capture() {
        let v = serde_json::to_value(SessionInitRequest::web("dev-1")).unwrap();
        assert_eq!(v["deviceId"], "dev-1");
        let ua = &v["userAgent"];
        assert_eq!(ua["deviceType"], "WEB");
        assert_eq!(ua["pushDeviceType"], "WEBPUSH");
        assert_eq!(ua["headerUserAgent"], WEB_USER_AGENT);
        assert_eq!(ua["isPwa"], false);
        assert_eq!(ua["appVersion"], WEB_APP_VERSION);
        assert_eq!(ua["screen"], "1080x1920 1.0x");
        assert_eq!(ua.as_object().map(|o| o.len()), Some(11));
    }

    #[test]
    fn auth_flow_shapes() {
        let start = serde_json::to_value(AuthStartRequest::start("+79990000000")).unwrap();
        assert_eq!(
            start,
            json!({"phone": "+79990000000", "type": "START_AUTH", "language": "ru"})
        );
        let answer: AuthStartResponse =
            serde_json::from_value(json!({"token": "An_x", "codeLength": 6,
            "requestMaxDuration": 60000, "requestCountLeft": 10, "altActionDuration": 60000}))
            .unwrap();
        assert_eq!(answer.code_length, Some(6));
        let check = serde_json::to_value(AuthCodeRequest::new(answer.token, "123456")).unwrap();
        assert_eq!(
            check,
            json!({"token": "An_x", "verifyCode": "123456", "authTokenType": "CHECK_CODE"})
        );

        let ok: AuthResponse =
            serde_json::from_value(json!({"tokenAttrs": {"LOGIN": {"token": "long"}},
            "profile": {"contact": {"id": 1, "names": []}, "profileOptions": []}}))
            .unwrap();
        assert_eq!(ok.login_token().map(Token::expose), Some("long"));
        let twofa: AuthResponse =
            serde_json::from_value(json!({"passwordChallenge": {"trackId": "t", "hint": "h"}}))
                .unwrap();
        assert!(twofa.login_token().is_none());
        assert_eq!(
            twofa.password_challenge.and_then(|c| c.track_id).as_deref(),
            Some("t")
        );
    }

    #[test]
    fn login_request_shape() {
        let v = serde_json::to_value(LoginRequest::new(Token::new("tok"))).unwrap();
        assert_eq!(
            v,
            json!({"token": "tok", "interactive": false, "chatsCount": 40, "chatsSync": 0,
                "contactsSync": 0, "presenceSync": 0, "draftsSync": 0})
        );
    }
}
