//! Client configuration: endpoint and wire format, the device profile sent
//! in SESSION_INIT, timeouts, keep-alive and reconnect backoff.

use super::error::ClientError;
use crate::codec::WireFormat;
use crate::token::Token;
use crate::types::{LoginRequest, SessionInitRequest, WEB_USER_AGENT};
use serde_json::Value;
use std::time::Duration;

/// The JSON WebSocket endpoint (`ver` 11) most clients use.
pub const JSON_ENDPOINT: &str = "wss://ws-api.oneme.ru/websocket";
/// The binary WebSocket endpoint (`ver` 10) of the web.max.ru tab.
pub const BINARY_ENDPOINT: &str = "wss://api.oneme.ru/websocket";
/// The `Origin` the server requires on the upgrade (§1.2).
pub const WEB_ORIGIN: &str = "https://web.max.ru";

/// Everything about how a [`super::Client`] talks to the server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://` or `wss://` URL.
    pub endpoint: String,
    /// The format frames are sent in (received frames are decoded in
    /// whichever format they arrive).
    pub wire_format: WireFormat,
    /// `Origin` header of the upgrade request.
    pub origin: String,
    /// `User-Agent` header of the upgrade request; should match
    /// `session_init.user_agent.header_user_agent`.
    pub user_agent: String,
    /// SESSION_INIT payload: device profile and a `deviceId` that must stay
    /// stable per account (new devices get flagged, §1.7).
    pub session_init: SessionInitRequest,
    /// `interactive` of LOGIN (the web client logs in with `false`).
    pub login_interactive: bool,
    /// `chatsCount` of LOGIN (at most 100).
    pub chats_count: i64,
    /// Bound on one request, waiting for a reconnection included; also on
    /// opening the socket.
    pub request_timeout: Duration,
    /// Period of the keep-alive PING.
    pub ping_interval: Duration,
    /// `interactive` of the keep-alive PING (drives online presence).
    pub ping_interactive: bool,
    /// A connection that delivers no frame for this long is dead.
    pub dead_after: Duration,
    pub reconnect: ReconnectPolicy,
    /// Capacity of the event channel; a full channel makes the reader wait.
    pub push_capacity: usize,
    /// Ack every NOTIF_MESSAGE push like the web client (§1.6).
    pub ack_messages: bool,
    /// Bounds on received frames; a frame over them is dropped with a
    /// warning and the connection carries on.
    pub frame_limits: crate::codec::limits::FrameLimits,
}

impl Default for ClientConfig {
    /// The web client's profile with a random `deviceId`; set a stable one
    /// with [`ClientConfig::web`] for real accounts.
    fn default() -> Self {
        ClientConfig::web(uuid::Uuid::new_v4().to_string())
    }
}

impl ClientConfig {
    /// The web client's profile (JSON endpoint) with the given device id.
    pub fn web(device_id: impl Into<String>) -> ClientConfig {
        ClientConfig {
            endpoint: JSON_ENDPOINT.to_owned(),
            wire_format: WireFormat::Json,
            origin: WEB_ORIGIN.to_owned(),
            user_agent: WEB_USER_AGENT.to_owned(),
            session_init: SessionInitRequest::web(device_id),
            login_interactive: false,
            chats_count: 40,
            request_timeout: Duration::from_secs(15),
            ping_interval: Duration::from_secs(30),
            ping_interactive: false,
            dead_after: Duration::from_secs(75),
            reconnect: ReconnectPolicy::default(),
            push_capacity: 1024,
            ack_messages: true,
            frame_limits: Default::default(),
        }
    }

    /// Switches the wire format; a default endpoint follows the format
    /// (binary frames go to the web tab's `api.oneme.ru`).
    pub fn with_wire_format(mut self, format: WireFormat) -> ClientConfig {
        self.wire_format = format;
        let default_endpoint = [JSON_ENDPOINT, BINARY_ENDPOINT].contains(&self.endpoint.as_str());
        if default_endpoint {
            self.endpoint = match format {
                WireFormat::Json => JSON_ENDPOINT,
                WireFormat::Binary => BINARY_ENDPOINT,
            }
            .to_owned();
        }
        self
    }

    pub(crate) fn session_init_payload(&self) -> Result<Value, ClientError> {
        serde_json::to_value(&self.session_init)
            .map_err(|e| ClientError::Config(format!("SESSION_INIT payload: {e}")))
    }

    pub(crate) fn login_payload(&self, token: &Token) -> Result<Value, ClientError> {
        let mut request = LoginRequest::new(token.clone());
        request.interactive = self.login_interactive;
        request.chats_count = self.chats_count;
        // The web client's capture asks for presence this way.
        request.presence_sync = -1;
        serde_json::to_value(&request)
            .map_err(|e| ClientError::Config(format!("LOGIN payload: {e}")))
    }
}

/// Exponential backoff between reconnect attempts (backon's, as everywhere
/// in the bridge).
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// Delay before the first attempt (with jitter: at most this).
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Spread each delay between half and all of its step, so that many
    /// accounts do not reconnect in lockstep after an outage.
    pub jitter: bool,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: true,
        }
    }
}

impl ReconnectPolicy {
    /// The delays before attempts 1, 2, …: `initial · 2^(n−1)` capped at
    /// `max` (with jitter, somewhere in its upper half). Never ends.
    pub fn delays(&self) -> backon::ExponentialBackoff {
        use backon::BackoffBuilder;
        // backon's jitter adds up to one more delay: half steps land in
        // [step/2, step).
        let (first, max) = if self.jitter {
            (self.initial / 2, self.max / 2)
        } else {
            (self.initial, self.max)
        };
        let builder = backon::ExponentialBuilder::new()
            .with_min_delay(first)
            .with_max_delay(max)
            .without_max_times();
        if self.jitter {
            builder.with_jitter().build()
        } else {
            builder.build()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let steady: Vec<Duration> = ReconnectPolicy {
            jitter: false,
            ..ReconnectPolicy::default()
        }
        .delays()
        .take(100)
        .collect();
        assert_eq!(steady[0], Duration::from_secs(1));
        assert_eq!(steady[2], Duration::from_secs(4));
        assert_eq!(steady[99], Duration::from_secs(60));
        let jittered = ReconnectPolicy::default().delays().take(10);
        for (d, base) in jittered.zip(&steady) {
            assert!(d <= *base && d >= *base / 2, "{d:?} vs {base:?}");
        }
    }

    #[test]
    fn payloads_match_the_web_client() {
        let config = ClientConfig::web("dev-1");
        let init = config.session_init_payload().unwrap();
        assert_eq!(init["deviceId"], "dev-1");
        assert_eq!(init["userAgent"]["deviceType"], "WEB");
        assert_eq!(
            init["userAgent"]["headerUserAgent"],
            config.user_agent.as_str()
        );
        let login = config.login_payload(&Token::new("t0k")).unwrap();
        assert_eq!(login["token"], "t0k");
        assert_eq!(login["chatsSync"], 0);
        assert_eq!(login["presenceSync"], -1);
        assert_eq!(login["interactive"], false);
    }

    #[test]
    fn binary_format_moves_default_endpoint_only() {
        let config = ClientConfig::web("d").with_wire_format(WireFormat::Binary);
        assert_eq!(config.endpoint, BINARY_ENDPOINT);
        let mut custom = ClientConfig::web("d");
        custom.endpoint = "ws://127.0.0.1:9/websocket".to_owned();
        let custom = custom.with_wire_format(WireFormat::Binary);
        assert_eq!(custom.endpoint, "ws://127.0.0.1:9/websocket");
    }
}
