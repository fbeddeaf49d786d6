//! The homeserver client of the appservice: ruma request types sent with
//! reqwest, authenticated with the as_token, acting as the bot or (through the
//! `user_id` query parameter) as any ghost.
//!
//! Every request is retried on 429 (after the homeserver's `retry_after_ms`),
//! and on 5xx and connection errors with exponential backoff and jitter, within
//! a bounded [`RetryPolicy`]; other errors come back at once as [`MatrixError`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use ruma::api::auth_scheme::{AuthScheme, SendAccessToken};
use ruma::api::client::account::register::{self, LoginType};
use ruma::api::client::account::whoami;
use ruma::api::client::appservice::request_ping;
use ruma::api::client::authenticated_media::get_content;
use ruma::api::client::config::{get_global_account_data, set_global_account_data};
use ruma::api::client::discovery::get_supported_versions;
use ruma::api::client::media::create_content;
use ruma::api::client::membership::{
    invite_user, join_room_by_id, joined_members, kick_user, leave_room,
};
use ruma::api::client::message::{get_message_events, send_message_event};
use ruma::api::client::presence::set_presence;
use ruma::api::client::profile::{get_profile, set_profile_field};
use ruma::api::client::receipt::create_receipt;
use ruma::api::client::redact::redact_event;
use ruma::api::client::room::create_room;
use ruma::api::client::room::get_room_event;
use ruma::api::client::state::{get_state_event_for_key, send_state_event};
use ruma::api::client::typing::create_typing_event;
use ruma::api::path_builder::{PathBuilder, SinglePath, VersionHistory};
use ruma::api::{
    AppserviceUserIdentity, IncomingResponse, MatrixVersion, OutgoingRequest,
    OutgoingRequestAppserviceExt, SupportedVersions,
};
use ruma::profile::ProfileFieldValue;
use ruma::serde::Raw;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, MxcUri, OwnedEventId, OwnedMxcUri, OwnedRoomId,
    OwnedUserId, RoomId, UInt, UserId,
};
use serde::Serialize;
use serde_json::Value;

use super::{AppserviceConfig, Secret};

pub use create_room::v3::RoomPreset;
pub use joined_members::v3::RoomMember;

/// A failed homeserver request. Every variant names the request.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// The homeserver answered with an error (after retries, if retryable).
    #[error("{request}: homeserver answered {status} {errcode}: {message}")]
    Api {
        request: &'static str,
        status: StatusCode,
        errcode: String,
        message: String,
    },
    /// The homeserver could not be reached (after retries).
    #[error("{request}: could not reach the homeserver: {source}")]
    Transport {
        request: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The homeserver answered 2xx with something we cannot understand.
    #[error("{request}: unexpected response from the homeserver: {message}")]
    InvalidResponse {
        request: &'static str,
        message: String,
    },
    /// The request could not be built from the given arguments.
    #[error("{request}: invalid request: {message}")]
    InvalidRequest {
        request: &'static str,
        message: String,
    },
}

impl MatrixError {
    /// Whether the same request may succeed later unchanged: the homeserver
    /// was unreachable, overloaded (5xx) or rate-limiting (429).
    pub fn is_transient(&self) -> bool {
        match self {
            MatrixError::Transport { .. } => true,
            MatrixError::Api { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            MatrixError::InvalidResponse { .. } | MatrixError::InvalidRequest { .. } => false,
        }
    }

    /// Whether the request never reached the homeserver (no connection),
    /// so it cannot have had any effect.
    pub fn is_connect(&self) -> bool {
        matches!(self, MatrixError::Transport { source, .. } if source.is_connect())
    }

    /// The Matrix `errcode` (e.g. `M_FORBIDDEN`) if the homeserver sent one.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Api { errcode, .. } => Some(errcode),
            _ => None,
        }
    }

    /// The HTTP status if the homeserver answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn invalid_request(request: &'static str, message: impl ToString) -> Self {
        Self::InvalidRequest {
            request,
            message: message.to_string(),
        }
    }
}

/// Bounds on retrying a request.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// No retry is started that would end after this much time since the
    /// first attempt.
    pub max_total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_total: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delays before retries 1, 2, …: exponential (backon's), each with
    /// jitter somewhere in `[b/2, b)` of its step `b`, so that many clients
    /// do not retry in lockstep.
    fn delays(&self) -> backon::ExponentialBackoff {
        use backon::BackoffBuilder;
        // backon's jitter adds up to one more delay: half steps land in
        // [b/2, b).
        backon::ExponentialBuilder::new()
            .with_min_delay(self.initial_backoff / 2)
            .with_max_delay(self.max_backoff / 2)
            .without_max_times()
            .with_jitter()
            .build()
    }
}

/// Options for [`MatrixClient::create_room`].
#[derive(Clone, Debug, Default)]
pub struct CreateRoomOptions {
    pub name: Option<String>,
    pub topic: Option<String>,
    /// Set as the room's `m.room.avatar`.
    pub avatar_url: Option<OwnedMxcUri>,
    pub is_direct: bool,
    pub invite: Vec<OwnedUserId>,
    /// Complete state events (`type`, `state_key`, `content`).
    pub initial_state: Vec<Value>,
    pub preset: Option<RoomPreset>,
    /// Merged by the homeserver into the default `m.room.power_levels`.
    pub power_level_content_override: Option<Value>,
    /// Local part of an alias to create (needs an alias namespace).
    pub room_alias_name: Option<String>,
    /// Extra `m.room.create` content (e.g. `{"type": "m.space"}`).
    pub creation_content: Option<Value>,
}

/// A user's global profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub displayname: Option<String>,
    pub avatar_url: Option<OwnedMxcUri>,
}

/// Picks the input a ruma endpoint's path builder needs from what we know
/// about the homeserver.
trait PathInput: PathBuilder {
    fn input(versions: &SupportedVersions) -> Self::Input<'_>;
}

impl PathInput for VersionHistory {
    fn input(versions: &SupportedVersions) -> Cow<'_, SupportedVersions> {
        Cow::Borrowed(versions)
    }
}

impl PathInput for SinglePath {
    fn input(_: &SupportedVersions) {}
}

/// Whether a failure may be retried: 5xx and transport errors are, except
/// for requests whose caller wants the failure at once.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    Always,
    OnlyRateLimits,
}

/// The appservice's homeserver client. Cloning is cheap.
/// Told of each homeserver request as it ends: its name (from a fixed set),
/// how long it took with all its attempts, and whether it succeeded.
pub type RequestObserver = std::sync::Arc<dyn Fn(&'static str, Duration, bool) + Send + Sync>;

/// The observer, for `Debug`.
#[derive(Clone)]
struct Observer(RequestObserver);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestObserver")
    }
}

#[derive(Clone, Debug)]
pub struct MatrixClient {
    http: reqwest::Client,
    base_url: String,
    as_token: Secret,
    bot: OwnedUserId,
    server_name: ruma::OwnedServerName,
    appservice_id: String,
    versions: SupportedVersions,
    retry: RetryPolicy,
    observer: Option<Observer>,
}

impl MatrixClient {
    pub fn new(config: &AppserviceConfig) -> Result<Self, MatrixError> {
        const REQUEST: &str = "configure client";
        let bot = config
            .bot_user_id()
            .map_err(|e| MatrixError::invalid_request(REQUEST, format!("bot user id: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Generous: media uploads go through this client too.
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| MatrixError::Transport {
                request: REQUEST,
                source: e,
            })?;
        Ok(Self {
            http,
            base_url: config.homeserver_url.as_str().to_owned(),
            as_token: config.as_token.clone(),
            bot,
            server_name: config.server_name.clone(),
            appservice_id: config.appservice_id.clone(),
            // Every endpoint we use is stable since 1.7 (ping) or earlier; the
            // /versions answer is not needed to choose paths.
            versions: SupportedVersions {
                versions: [MatrixVersion::V1_11].into(),
                features: Default::default(),
            },
            retry: RetryPolicy::default(),
            observer: None,
        })
    }

    /// Tells `observer` of every request (for metrics).
    pub fn with_observer(mut self, observer: RequestObserver) -> Self {
        self.observer = Some(Observer(observer));
        self
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The token the appservice presents (for the bridge state API, which
    /// takes the same).
    pub fn as_token(&self) -> Secret {
        self.as_token.clone()
    }

    /// The appservice bot (`sender_localpart`).
    pub fn bot_user_id(&self) -> &UserId {
        &self.bot
    }

    /// `@{localpart}:{server_name}`.
    pub fn user_id(&self, localpart: &str) -> Result<OwnedUserId, MatrixError> {
        UserId::parse(format!("@{localpart}:{}", self.server_name))
            .map_err(|e| MatrixError::invalid_request("build user id", e))
    }

    /// Whose OpenID token `token` is, asked of this homeserver
    /// (`GET /_matrix/federation/v1/openid/userinfo`, which Synapse serves
    /// with its `openid` or `federation` listener resource); `None` when the
    /// homeserver does not know the token.
    pub async fn openid_user(&self, token: &str) -> Result<Option<OwnedUserId>, MatrixError> {
        const REQUEST: &str = "openid userinfo";
        let mut url = url::Url::parse(&format!(
            "{}/_matrix/federation/v1/openid/userinfo",
            self.base_url.trim_end_matches('/')
        ))
        .map_err(|e| MatrixError::invalid_request(REQUEST, e))?;
        url.query_pairs_mut().append_pair("access_token", token);
        let request = self.http.get(url).timeout(Duration::from_secs(10));
        let response = self.send_observed(REQUEST, request).await?;
        // 401 (M_UNKNOWN_TOKEN) for a token it never issued or that expired.
        if response.status() == StatusCode::UNAUTHORIZED {
            return Ok(None);
        }
        #[derive(serde::Deserialize)]
        struct UserInfo {
            sub: OwnedUserId,
        }
        let bytes = settle(REQUEST, response).await?;
        let info: UserInfo =
            serde_json::from_slice(&bytes).map_err(|e| MatrixError::InvalidResponse {
                request: REQUEST,
                message: e.to_string(),
            })?;
        Ok(Some(info.sub))
    }

    /// `GET /_matrix/client/versions`.
    pub async fn versions(&self) -> Result<get_supported_versions::Response, MatrixError> {
        self.send(
            "versions",
            get_supported_versions::Request::new(),
            None,
            Retry::Always,
        )
        .await
    }

    /// Asks the homeserver to ping us back (`POST
    /// /_matrix/client/v1/appservice/{id}/ping`) and returns the round trip it
    /// measured. Not retried on 5xx: `M_CONNECTION_FAILED` (502) means the
    /// homeserver cannot reach our server, which the caller needs to know.
    pub async fn ping(&self) -> Result<Duration, MatrixError> {
        let request = request_ping::v1::Request::new(self.appservice_id.clone());
        let response = self
            .send("appservice ping", request, None, Retry::OnlyRateLimits)
            .await?;
        Ok(response.duration)
    }

    /// Which user the homeserver takes `as_user` for.
    pub async fn whoami(&self, as_user: &UserId) -> Result<OwnedUserId, MatrixError> {
        let response = self
            .send(
                "whoami",
                whoami::v3::Request::new(),
                Some(as_user),
                Retry::Always,
            )
            .await?;
        Ok(response.user_id)
    }

    /// Registers a ghost in the appservice namespace. An already registered
    /// user counts as success.
    pub async fn register_user(&self, localpart: &str) -> Result<OwnedUserId, MatrixError> {
        let mut request = register::v3::Request::new();
        request.username = Some(localpart.to_owned());
        request.login_type = Some(LoginType::ApplicationService);
        request.inhibit_login = true;
        match self.send("register", request, None, Retry::Always).await {
            Ok(response) => Ok(response.user_id),
            Err(e) if e.errcode() == Some("M_USER_IN_USE") => self.user_id(localpart),
            Err(e) => Err(e),
        }
    }

    pub async fn set_displayname(&self, user: &UserId, name: &str) -> Result<(), MatrixError> {
        let request = set_profile_field::v3::Request::new(
            user.to_owned(),
            ProfileFieldValue::DisplayName(name.to_owned()),
        );
        self.send("set displayname", request, Some(user), Retry::Always)
            .await?;
        Ok(())
    }

    pub async fn set_avatar_url(&self, user: &UserId, url: &MxcUri) -> Result<(), MatrixError> {
        let request = set_profile_field::v3::Request::new(
            user.to_owned(),
            ProfileFieldValue::AvatarUrl(url.to_owned()),
        );
        self.send("set avatar_url", request, Some(user), Retry::Always)
            .await?;
        Ok(())
    }

    pub async fn get_profile(&self, user: &UserId) -> Result<Profile, MatrixError> {
        let response = self
            .send(
                "get profile",
                get_profile::v3::Request::new(user.to_owned()),
                None,
                Retry::Always,
            )
            .await?;
        let text = |key: &str| response.get(key).and_then(Value::as_str);
        Ok(Profile {
            displayname: text("displayname").map(str::to_owned),
            avatar_url: text("avatar_url").map(OwnedMxcUri::from),
        })
    }

    /// Downloads media (authenticated media API) as the bot: its bytes and
    /// content type.
    pub async fn download_media(
        &self,
        uri: &MxcUri,
    ) -> Result<(Vec<u8>, Option<String>), MatrixError> {
        const REQUEST: &str = "download media";
        let request = get_content::v1::Request::from_uri(uri)
            .map_err(|e| MatrixError::invalid_request(REQUEST, e))?;
        let response = self.send(REQUEST, request, None, Retry::Always).await?;
        Ok((response.file, response.content_type))
    }

    /// Starts downloading media (authenticated media endpoint) without
    /// reading its body: the response, for the caller to stream, with its
    /// content type and length as the homeserver announced them.
    pub async fn download_media_stream(
        &self,
        uri: &MxcUri,
    ) -> Result<(reqwest::Response, Option<String>, Option<u64>), MatrixError> {
        const REQUEST: &str = "download media";
        let (server, media_id) = uri
            .parts()
            .map_err(|e| MatrixError::invalid_request(REQUEST, e))?;
        let url = format!(
            "{}/_matrix/client/v1/media/download/{}/{}",
            self.base_url.trim_end_matches('/'),
            percent_encoding::utf8_percent_encode(server.as_str(), PATH_SEGMENT),
            percent_encoding::utf8_percent_encode(media_id, PATH_SEGMENT),
        );
        let response = self.send_streamed(REQUEST, self.http.get(url)).await?;
        if !response.status().is_success() {
            return Err(match settle(REQUEST, response).await {
                Err(error) => error,
                Ok(_) => MatrixError::InvalidResponse {
                    request: REQUEST,
                    message: "a failed status settled as a success".to_owned(),
                },
            });
        }
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let length = response.content_length();
        Ok((response, content_type, length))
    }

    /// Uploads media as the bot and returns its `mxc://` URI.
    pub async fn upload_media(
        &self,
        data: Vec<u8>,
        content_type: &str,
        filename: Option<&str>,
    ) -> Result<OwnedMxcUri, MatrixError> {
        let mut request = create_content::v3::Request::new(data);
        request.content_type = Some(content_type.to_owned());
        request.filename = filename.map(str::to_owned);
        let response = self
            .send("upload media", request, None, Retry::Always)
            .await?;
        Ok(response.content_uri)
    }

    pub async fn create_room(
        &self,
        as_user: &UserId,
        options: CreateRoomOptions,
    ) -> Result<OwnedRoomId, MatrixError> {
        const REQUEST: &str = "create room";
        let mut request = create_room::v3::Request::new();
        request.name = options.name;
        request.topic = options.topic;
        request.is_direct = options.is_direct;
        request.invite = options.invite;
        request.preset = options.preset;
        request.room_alias_name = options.room_alias_name;
        let mut initial_state = options.initial_state;
        if let Some(avatar_url) = options.avatar_url {
            initial_state.push(serde_json::json!({
                "type": "m.room.avatar",
                "state_key": "",
                "content": { "url": avatar_url },
            }));
        }
        request.initial_state = initial_state
            .iter()
            .map(|event| raw_json(REQUEST, event).map(Raw::from_json))
            .collect::<Result<_, _>>()?;
        request.power_level_content_override = options
            .power_level_content_override
            .map(|content| raw_json(REQUEST, &content).map(Raw::from_json))
            .transpose()?;
        request.creation_content = options
            .creation_content
            .map(|content| raw_json(REQUEST, &content).map(Raw::from_json))
            .transpose()?;
        let response = self
            .send(REQUEST, request, Some(as_user), Retry::Always)
            .await?;
        Ok(response.room_id)
    }

    /// Invites `user`. With `is_direct` the invite is sent as a member state
    /// event carrying `is_direct`, which `/invite` cannot express, so clients
    /// show the room as a direct chat.
    pub async fn invite(
        &self,
        as_user: &UserId,
        room: &RoomId,
        user: &UserId,
        is_direct: bool,
    ) -> Result<(), MatrixError> {
        if is_direct {
            let content = serde_json::json!({ "membership": "invite", "is_direct": true });
            self.send_state(as_user, room, "m.room.member", user.as_str(), &content)
                .await?;
            return Ok(());
        }
        let recipient = invite_user::v3::InviteUserId::new(user.to_owned());
        let request = invite_user::v3::Request::new(room.to_owned(), recipient.into());
        self.send("invite", request, Some(as_user), Retry::Always)
            .await?;
        Ok(())
    }

    pub async fn join(&self, as_user: &UserId, room: &RoomId) -> Result<(), MatrixError> {
        let request = join_room_by_id::v3::Request::new(room.to_owned());
        self.send("join", request, Some(as_user), Retry::Always)
            .await?;
        Ok(())
    }

    /// Leaves (or declines an invite to) `room` as `as_user`, saying why.
    pub async fn leave_saying(
        &self,
        as_user: &UserId,
        room: &RoomId,
        reason: &str,
    ) -> Result<(), MatrixError> {
        let mut request = leave_room::v3::Request::new(room.to_owned());
        request.reason = Some(reason.to_owned());
        self.send("leave", request, Some(as_user), Retry::Always)
            .await?;
        Ok(())
    }

    /// Removes `user` from `room`, as `as_user`, saying why.
    pub async fn kick(
        &self,
        as_user: &UserId,
        room: &RoomId,
        user: &UserId,
        reason: &str,
    ) -> Result<(), MatrixError> {
        let mut request = kick_user::v3::Request::new(room.to_owned(), user.to_owned());
        request.reason = Some(reason.to_owned());
        self.send("kick", request, Some(as_user), Retry::Always)
            .await?;
        Ok(())
    }

    pub async fn leave(&self, as_user: &UserId, room: &RoomId) -> Result<(), MatrixError> {
        let request = leave_room::v3::Request::new(room.to_owned());
        self.send("leave", request, Some(as_user), Retry::Always)
            .await?;
        Ok(())
    }

    /// Sends a message-like event. `txn_id` makes retries idempotent: reuse it
    /// when resending the same message. `timestamp_ms` (appservices only) sets
    /// `origin_server_ts`, e.g. to the remote message's time.
    pub async fn send_message(
        &self,
        as_user: &UserId,
        room: &RoomId,
        event_type: &str,
        content: &impl Serialize,
        txn_id: &str,
        timestamp_ms: Option<u64>,
    ) -> Result<OwnedEventId, MatrixError> {
        const REQUEST: &str = "send message";
        let mut request = send_message_event::v3::Request::new_raw(
            room.to_owned(),
            txn_id.into(),
            event_type.into(),
            Raw::from_json(raw_json(REQUEST, content)?),
        );
        request.timestamp = timestamp(REQUEST, timestamp_ms)?;
        let response = self
            .send(REQUEST, request, Some(as_user), Retry::Always)
            .await?;
        Ok(response.event_id)
    }

    /// [`send_message`](Self::send_message) without retrying on transport
    /// errors and 5xx (429 is still waited out): for callers that must
    /// check what happened before they try again.
    pub async fn send_message_once(
        &self,
        as_user: &UserId,
        room: &RoomId,
        event_type: &str,
        content: &impl Serialize,
        txn_id: &str,
        timestamp_ms: Option<u64>,
    ) -> Result<OwnedEventId, MatrixError> {
        const REQUEST: &str = "send message";
        let mut request = send_message_event::v3::Request::new_raw(
            room.to_owned(),
            txn_id.into(),
            event_type.into(),
            Raw::from_json(raw_json(REQUEST, content)?),
        );
        request.timestamp = timestamp(REQUEST, timestamp_ms)?;
        let response = self
            .send(REQUEST, request, Some(as_user), Retry::OnlyRateLimits)
            .await?;
        Ok(response.event_id)
    }

    /// Looks through the room's latest events for one sent by `as_user`
    /// whose content has `key` equal to `value`.
    pub async fn find_recent_event(
        &self,
        as_user: &UserId,
        room: &RoomId,
        key: &str,
        value: &str,
    ) -> Result<Option<OwnedEventId>, MatrixError> {
        const REQUEST: &str = "room messages";
        const RECENT: u32 = 100;
        let mut request = get_message_events::v3::Request::backward(room.to_owned());
        request.limit = UInt::from(RECENT);
        let response = self
            .send(REQUEST, request, Some(as_user), Retry::Always)
            .await?;
        for raw in &response.chunk {
            let Ok(event) = serde_json::from_str::<Value>(raw.json().get()) else {
                continue;
            };
            let matches = event.get("sender").and_then(Value::as_str) == Some(as_user.as_str())
                && event
                    .pointer("/content")
                    .and_then(|c| c.get(key))
                    .and_then(Value::as_str)
                    == Some(value);
            if matches
                && let Some(id) = event.get("event_id").and_then(Value::as_str)
                && let Ok(id) = OwnedEventId::try_from(id)
            {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    pub async fn send_state(
        &self,
        as_user: &UserId,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
        content: &impl Serialize,
    ) -> Result<OwnedEventId, MatrixError> {
        const REQUEST: &str = "send state";
        let request = send_state_event::v3::Request::new_raw(
            room.to_owned(),
            event_type.into(),
            state_key.to_owned(),
            Raw::from_json(raw_json(REQUEST, content)?),
        );
        let response = self
            .send(REQUEST, request, Some(as_user), Retry::Always)
            .await?;
        Ok(response.event_id)
    }

    /// Returns the state event's content, or `None` if the room has no such
    /// state.
    pub async fn get_state_event(
        &self,
        as_user: &UserId,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Value>, MatrixError> {
        const REQUEST: &str = "get state";
        let request = get_state_event_for_key::v3::Request::new(
            room.to_owned(),
            event_type.into(),
            state_key.to_owned(),
        );
        match self
            .send(REQUEST, request, Some(as_user), Retry::Always)
            .await
        {
            Ok(response) => serde_json::from_str(response.event_or_content.get())
                .map(Some)
                .map_err(|e| MatrixError::InvalidResponse {
                    request: REQUEST,
                    message: e.to_string(),
                }),
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One event of a room as `as_user` sees it (its JSON), or `None` if
    /// the homeserver does not have it.
    pub async fn get_event(
        &self,
        as_user: &UserId,
        room: &RoomId,
        event_id: &EventId,
    ) -> Result<Option<Value>, MatrixError> {
        const REQUEST: &str = "get event";
        let request = get_room_event::v3::Request::new(room.to_owned(), event_id.to_owned());
        match self
            .send(REQUEST, request, Some(as_user), Retry::Always)
            .await
        {
            Ok(response) => serde_json::from_str(response.event.json().get())
                .map(Some)
                .map_err(|e| MatrixError::InvalidResponse {
                    request: REQUEST,
                    message: e.to_string(),
                }),
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn redact(
        &self,
        as_user: &UserId,
        room: &RoomId,
        event_id: &EventId,
        reason: Option<&str>,
        txn_id: &str,
    ) -> Result<OwnedEventId, MatrixError> {
        let mut request =
            redact_event::v3::Request::new(room.to_owned(), event_id.to_owned(), txn_id.into());
        request.reason = reason.map(str::to_owned);
        let response = self
            .send("redact", request, Some(as_user), Retry::Always)
            .await?;
        Ok(response.event_id)
    }

    pub async fn joined_members(
        &self,
        as_user: &UserId,
        room: &RoomId,
    ) -> Result<BTreeMap<OwnedUserId, RoomMember>, MatrixError> {
        let request = joined_members::v3::Request::new(room.to_owned());
        let response = self
            .send("joined members", request, Some(as_user), Retry::Always)
            .await?;
        Ok(response.joined)
    }

    /// Starts (for `timeout`) or stops typing as `as_user`.
    pub async fn typing(
        &self,
        as_user: &UserId,
        room: &RoomId,
        typing: bool,
        timeout: Duration,
    ) -> Result<(), MatrixError> {
        let state = if typing {
            create_typing_event::v3::Typing::Yes(create_typing_event::v3::TypingInfo::new(timeout))
        } else {
            create_typing_event::v3::Typing::No
        };
        let request =
            create_typing_event::v3::Request::new(as_user.to_owned(), room.to_owned(), state);
        self.send("typing", request, Some(as_user), Retry::Always)
            .await?;
        Ok(())
    }

    /// Sets `as_user`'s presence: online, or offline.
    pub async fn set_presence(&self, as_user: &UserId, online: bool) -> Result<(), MatrixError> {
        let state = if online {
            ruma::presence::PresenceState::Online
        } else {
            ruma::presence::PresenceState::Offline
        };
        let request = set_presence::v3::Request::new(as_user.to_owned(), state);
        self.send("set presence", request, Some(as_user), Retry::Always)
            .await?;
        Ok(())
    }

    /// This client acting with another appservice's token: one whose
    /// registration (with no URL, so it receives nothing) has real users of
    /// the homeserver in its namespace, so that a request `as_user` acts as
    /// that user themselves (double puppeting, as mautrix bridges do it).
    pub fn with_as_token(&self, as_token: Secret) -> MatrixClient {
        MatrixClient {
            as_token,
            ..self.clone()
        }
    }

    /// `as_user`'s account data of `event_type`; `None` when unset.
    pub async fn account_data(
        &self,
        as_user: &UserId,
        event_type: &str,
    ) -> Result<Option<Value>, MatrixError> {
        const REQUEST: &str = "get account data";
        let request =
            get_global_account_data::v3::Request::new(as_user.to_owned(), event_type.into());
        match self
            .send(REQUEST, request, Some(as_user), Retry::Always)
            .await
        {
            Ok(response) => serde_json::from_str(response.account_data.json().get())
                .map(Some)
                .map_err(|e| MatrixError::InvalidResponse {
                    request: REQUEST,
                    message: e.to_string(),
                }),
            Err(error) if error.errcode() == Some("M_NOT_FOUND") => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Sets `as_user`'s account data of `event_type` to `content`.
    pub async fn set_account_data(
        &self,
        as_user: &UserId,
        event_type: &str,
        content: &Value,
    ) -> Result<(), MatrixError> {
        const REQUEST: &str = "set account data";
        let raw = serde_json::value::to_raw_value(content)
            .map_err(|e| MatrixError::invalid_request(REQUEST, e))?;
        let request = set_global_account_data::v3::Request::new_raw(
            as_user.to_owned(),
            event_type.into(),
            Raw::from_json(raw),
        );
        self.send(REQUEST, request, Some(as_user), Retry::Always)
            .await?;
        Ok(())
    }

    /// Marks `event_id` as read by `as_user` (public `m.read` receipt).
    pub async fn read_receipt(
        &self,
        as_user: &UserId,
        room: &RoomId,
        event_id: &EventId,
    ) -> Result<(), MatrixError> {
        let request = create_receipt::v3::Request::new(
            room.to_owned(),
            create_receipt::v3::ReceiptType::Read,
            event_id.to_owned(),
        );
        self.send("read receipt", request, Some(as_user), Retry::Always)
            .await?;
        Ok(())
    }

    /// Sends a ruma request as `as_user` (the bot if `None`), with retries.
    async fn send<R>(
        &self,
        name: &'static str,
        request: R,
        as_user: Option<&UserId>,
        retry: Retry,
    ) -> Result<R::IncomingResponse, MatrixError>
    where
        R: OutgoingRequest,
        R::PathBuilder: PathInput,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        // The bot is the registration's default identity; naming it is
        // redundant.
        let identity = match as_user {
            Some(user) if user != self.bot => AppserviceUserIdentity::new(user),
            _ => AppserviceUserIdentity::default(),
        };
        let http_request: http::Request<Vec<u8>> = request
            .try_into_http_request_with_identity(
                &self.base_url,
                SendAccessToken::Appservice(self.as_token.expose()),
                identity,
                R::PathBuilder::input(&self.versions),
            )
            .map_err(|e| MatrixError::invalid_request(name, e))?;
        let response = self.execute(name, http_request, retry).await?;
        R::IncomingResponse::try_from_http_response(response).map_err(|e| {
            MatrixError::InvalidResponse {
                request: name,
                message: e.to_string(),
            }
        })
    }

    /// Runs the HTTP exchange with retries; returns only 2xx responses.
    async fn execute(
        &self,
        name: &'static str,
        request: http::Request<Vec<u8>>,
        retry: Retry,
    ) -> Result<http::Response<Bytes>, MatrixError> {
        let started = Instant::now();
        let result = self.execute_with_retries(name, request, retry).await;
        if let Some(Observer(observer)) = &self.observer {
            observer(name, started.elapsed(), result.is_ok());
        }
        result
    }

    async fn execute_with_retries(
        &self,
        name: &'static str,
        request: http::Request<Vec<u8>>,
        retry: Retry,
    ) -> Result<http::Response<Bytes>, MatrixError> {
        let (parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        let started = Instant::now();
        let mut attempt: u32 = 1;
        let mut delays = self.retry.delays();
        loop {
            let (error, wait) = match self.attempt(name, &parts, &url, &body).await {
                Attempt::Done(response) => return Ok(response),
                Attempt::Fatal(error) => return Err(error),
                Attempt::RateLimited(error, retry_after) => {
                    let next = delays.next().unwrap_or(self.retry.max_backoff);
                    let wait = retry_after.unwrap_or(next);
                    (error, wait)
                }
                Attempt::Transient(error) if retry == Retry::Always => {
                    (error, delays.next().unwrap_or(self.retry.max_backoff))
                }
                Attempt::Transient(error) => return Err(error),
            };
            if attempt >= self.retry.max_attempts
                || started.elapsed().saturating_add(wait) > self.retry.max_total
            {
                return Err(error);
            }
            tracing::warn!(
                request = name,
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                %error,
                "homeserver request failed; retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        name: &'static str,
        parts: &http::request::Parts,
        url: &str,
        body: &[u8],
    ) -> Attempt {
        let sent = self
            .http
            .request(parts.method.clone(), url)
            .headers(parts.headers.clone())
            .body(body.to_vec())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(source) => {
                return Attempt::Transient(MatrixError::Transport {
                    request: name,
                    source,
                });
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(source) => {
                return Attempt::Transient(MatrixError::Transport {
                    request: name,
                    source,
                });
            }
        };
        classify(name, status, headers, bytes)
    }

    /// Uploads media from a stream of `length` bytes without holding it in
    /// memory. Not retried: the first attempt spends the stream, so a
    /// caller that wants another try starts over.
    pub async fn upload_media_stream(
        &self,
        body: reqwest::Body,
        length: u64,
        content_type: &str,
        filename: Option<&str>,
    ) -> Result<OwnedMxcUri, MatrixError> {
        const REQUEST: &str = "upload media";
        let mut url = reqwest::Url::parse(&format!(
            "{}/_matrix/media/v3/upload",
            self.base_url.trim_end_matches('/')
        ))
        .map_err(|e| MatrixError::invalid_request(REQUEST, e))?;
        if let Some(name) = filename {
            url.query_pairs_mut().append_pair("filename", name);
        }
        let request = self
            .http
            .post(url)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, length)
            .body(body);
        let response = self.send_streamed(REQUEST, request).await?;
        let body = settle(REQUEST, response).await?;
        let answer: Value =
            serde_json::from_slice(&body).map_err(|e| MatrixError::InvalidResponse {
                request: REQUEST,
                message: e.to_string(),
            })?;
        answer
            .get("content_uri")
            .and_then(Value::as_str)
            .map(OwnedMxcUri::from)
            .filter(|mxc| mxc.is_valid())
            .ok_or_else(|| MatrixError::InvalidResponse {
                request: REQUEST,
                message: "no content_uri".to_owned(),
            })
    }

    /// Sends a request whose body streams one way or the other, as the
    /// appservice, once (a stream cannot be sent again). Its time bound is
    /// long: the stream's source has an idle timeout of its own.
    async fn send_streamed(
        &self,
        name: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, MatrixError> {
        let request = request
            .bearer_auth(self.as_token.expose())
            .timeout(STREAMED_TIMEOUT);
        self.send_observed(name, request).await
    }

    /// Sends a request built by hand (outside the retrying path), telling
    /// the observer how it went; any status is returned to the caller.
    async fn send_observed(
        &self,
        name: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, MatrixError> {
        let started = Instant::now();
        let result = request
            .send()
            .await
            .map_err(|source| MatrixError::Transport {
                request: name,
                source,
            });
        if let Some(Observer(observer)) = &self.observer {
            let ok = result.as_ref().is_ok_and(|r| r.status().is_success());
            observer(name, started.elapsed(), ok);
        }
        result
    }
}

/// The body of a response sent outside the retrying path: a success's
/// bytes, or the error its status and body say.
async fn settle(name: &'static str, response: reqwest::Response) -> Result<Bytes, MatrixError> {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .bytes()
        .await
        .map_err(|source| MatrixError::Transport {
            request: name,
            source,
        })?;
    match classify(name, status, headers, bytes) {
        Attempt::Done(response) => Ok(response.into_body()),
        Attempt::RateLimited(error, _) | Attempt::Transient(error) | Attempt::Fatal(error) => {
            Err(error)
        }
    }
}

/// The outcome of one exchange, from its status, headers and body.
fn classify(
    name: &'static str,
    status: StatusCode,
    headers: http::HeaderMap,
    bytes: Bytes,
) -> Attempt {
    if status.is_success() {
        let mut response = http::Response::new(bytes);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        return Attempt::Done(response);
    }
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
    let field = |key: &str| {
        body.as_ref()
            .and_then(|b| b.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let message = field("error").unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&bytes);
        text.chars().take(200).collect()
    });
    let error = MatrixError::Api {
        request: name,
        status,
        errcode: field("errcode").unwrap_or_else(|| "M_UNKNOWN".to_owned()),
        message,
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        let from_body = body
            .as_ref()
            .and_then(|b| b.get("retry_after_ms"))
            .and_then(Value::as_u64)
            .map(Duration::from_millis);
        let from_header = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Attempt::RateLimited(error, from_body.or(from_header))
    } else if status.is_server_error() {
        Attempt::Transient(error)
    } else {
        Attempt::Fatal(error)
    }
}

/// Characters escaped in one path segment.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A streamed upload or download may take this long in all.
const STREAMED_TIMEOUT: Duration = Duration::from_secs(3600);

enum Attempt {
    Done(http::Response<Bytes>),
    RateLimited(MatrixError, Option<Duration>),
    Transient(MatrixError),
    Fatal(MatrixError),
}

fn raw_json(
    request: &'static str,
    value: &impl Serialize,
) -> Result<Box<serde_json::value::RawValue>, MatrixError> {
    serde_json::value::to_raw_value(value).map_err(|e| MatrixError::invalid_request(request, e))
}

fn timestamp(
    request: &'static str,
    ms: Option<u64>,
) -> Result<Option<MilliSecondsSinceUnixEpoch>, MatrixError> {
    ms.map(|ms| {
        UInt::new(ms)
            .map(MilliSecondsSinceUnixEpoch)
            .ok_or_else(|| MatrixError::invalid_request(request, "timestamp out of range"))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_total: Duration::from_secs(30),
        };
        for _ in 0..50 {
            let delays: Vec<Duration> = policy.delays().take(30).collect();
            let first = delays[0];
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = delays[2];
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = delays[29];
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_millis(1000));
        }
    }
}
