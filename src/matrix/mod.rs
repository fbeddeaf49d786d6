//! The Matrix application-service layer: the HTTP server the homeserver pushes
//! transactions to ([`server`]), the homeserver client acting as the bot or as
//! ghosts ([`client`]), and the lenient event types handed to the bridge
//! ([`event`]). This layer knows nothing of the remote network being bridged.

pub mod bridge_state;
pub mod client;
pub mod event;
pub mod server;

use std::fmt;
use std::sync::Arc;

use ruma::{IdParseError, OwnedServerName, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use url::Url;

pub use client::{
    CreateRoomOptions, MatrixClient, MatrixError, Profile, RetryPolicy, RoomMember, RoomPreset,
};
pub use event::{EphemeralEvent, RoomEvent};
pub use server::{
    AppserviceHandler, AppserviceServer, DeliveredEvent, Delivery, EventInbox, Handled,
    InMemoryInbox, InboxError, ServerOptions,
};

/// An appservice token (as_token, hs_token) that must never appear in logs:
/// `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

/// Length of generated tokens (alphanumeric, ~380 bits).
const TOKEN_LEN: usize = 64;

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// A fresh random alphanumeric token.
    pub fn generate() -> Self {
        use rand::Rng;
        let value = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(TOKEN_LEN)
            .map(char::from)
            .collect();
        Self(value)
    }

    /// The raw token, for putting on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `other` in constant time, so timing does not leak how
    /// much of a guessed token was right.
    pub fn matches(&self, other: &str) -> bool {
        self.0.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// Decides which user ids belong to the appservice's exclusive user namespace
/// (its ghosts). Built from a predicate so the configuration may use whatever
/// matcher the registration's regex needs.
#[derive(Clone)]
pub struct UserNamespace(Arc<dyn Fn(&UserId) -> bool + Send + Sync>);

impl UserNamespace {
    pub fn new(predicate: impl Fn(&UserId) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(predicate))
    }

    /// Users on `server_name` whose localpart starts with `prefix`.
    pub fn localpart_prefix(prefix: impl Into<String>, server_name: OwnedServerName) -> Self {
        let prefix = prefix.into();
        Self::new(move |user| {
            user.server_name() == server_name && user.localpart().starts_with(prefix.as_str())
        })
    }

    pub fn contains(&self, user_id: &UserId) -> bool {
        (self.0)(user_id)
    }
}

impl fmt::Debug for UserNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserNamespace(..)")
    }
}

/// What this layer needs to know about the appservice registration.
#[derive(Clone, Debug)]
pub struct AppserviceConfig {
    /// Client-Server API base URL of the homeserver, e.g. `http://127.0.0.1:8008`.
    pub homeserver_url: Url,
    /// The homeserver's server name (the part after `:` in user ids).
    pub server_name: OwnedServerName,
    /// Token we present to the homeserver.
    pub as_token: Secret,
    /// Token the homeserver presents to us.
    pub hs_token: Secret,
    /// `sender_localpart` of the registration.
    pub bot_localpart: String,
    /// `id` of the registration, used by the ping endpoint.
    pub appservice_id: String,
    /// The exclusive user namespace of ghosts.
    pub user_namespace: UserNamespace,
}

impl AppserviceConfig {
    /// `@{bot_localpart}:{server_name}`.
    pub fn bot_user_id(&self) -> Result<OwnedUserId, IdParseError> {
        self.user_id(&self.bot_localpart)
    }

    /// `@{localpart}:{server_name}`.
    pub fn user_id(&self, localpart: &str) -> Result<OwnedUserId, IdParseError> {
        UserId::parse(format!("@{localpart}:{}", self.server_name))
    }

    /// Whether `user_id` is the bot or one of the ghosts, i.e. whether events
    /// it sends originate from this bridge.
    pub fn is_appservice_user(&self, user_id: &UserId) -> bool {
        (user_id.server_name() == self.server_name && user_id.localpart() == self.bot_localpart)
            || self.user_namespace.contains(user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AppserviceConfig {
        let server_name: OwnedServerName = "example.org".try_into().expect("server name");
        AppserviceConfig {
            homeserver_url: Url::parse("http://127.0.0.1:8008").expect("url"),
            server_name: server_name.clone(),
            as_token: Secret::new("as-secret"),
            hs_token: Secret::new("hs-secret"),
            bot_localpart: "bridgebot".into(),
            appservice_id: "bridge".into(),
            user_namespace: UserNamespace::localpart_prefix("ghost_", server_name),
        }
    }

    #[test]
    fn debug_never_shows_tokens() {
        let shown = format!("{:?}", config());
        assert!(!shown.contains("as-secret"), "{shown}");
        assert!(!shown.contains("hs-secret"), "{shown}");
    }

    #[test]
    fn appservice_users_are_the_bot_and_the_namespace() {
        let config = config();
        let user = |s: &str| UserId::parse(s).expect("user id");
        assert_eq!(
            config.bot_user_id().expect("bot id"),
            user("@bridgebot:example.org")
        );
        assert!(config.is_appservice_user(&user("@bridgebot:example.org")));
        assert!(config.is_appservice_user(&user("@ghost_42:example.org")));
        assert!(!config.is_appservice_user(&user("@alice:example.org")));
        assert!(!config.is_appservice_user(&user("@ghost_42:elsewhere.org")));
    }

    #[test]
    fn secret_comparison() {
        let secret = Secret::new("abc");
        assert!(secret.matches("abc"));
        assert!(!secret.matches("abd"));
        assert!(!secret.matches("ab"));
        assert!(!secret.matches(""));
    }
}
