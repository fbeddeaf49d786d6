//! Errors of the client: what a request, a login or a connection attempt
//! can fail with.

use crate::codec::CodecError;
use crate::types::ErrorPayload;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error (`cmd` 3, or an `error` key in an
    /// OK answer).
    #[error("server error: {0}")]
    Server(ErrorPayload),
    /// No answer within the request timeout (waiting for a reconnection
    /// included).
    #[error("request timed out")]
    Timeout,
    /// The socket died while the request was in flight; it may or may not
    /// have been executed, so the caller decides whether to retry.
    #[error("connection lost before the answer arrived")]
    Disconnected,
    /// The account's token was refused; the client stopped reconnecting.
    #[error("logged out: {0}")]
    LoggedOut(String),
    /// The client was closed (or dropped) and sends nothing any more.
    #[error("client closed")]
    Closed,
    /// The WebSocket could not be opened or failed.
    #[error("websocket: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// A frame could not be encoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// The answer did not have the expected shape.
    #[error("unexpected answer to {opcode}: {detail}")]
    UnexpectedAnswer {
        opcode: crate::Opcode,
        detail: String,
    },
    /// The configuration cannot work (bad endpoint URL or header value).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The server's error key (`login.token`, `proto.payload`, …), if the
    /// server refused the request.
    pub fn server_error_key(&self) -> Option<&str> {
        match self {
            ClientError::Server(payload) => Some(payload.error.as_str()),
            _ => None,
        }
    }

    /// Whether this error means the login token is no longer valid, so
    /// reconnecting with it is pointless (§2.1 LOGIN errors).
    pub fn is_token_rejected(&self) -> bool {
        match self {
            ClientError::Server(payload) => is_token_rejection(payload),
            ClientError::LoggedOut(_) => true,
            _ => false,
        }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(error: tokio_tungstenite::tungstenite::Error) -> Self {
        ClientError::WebSocket(Box::new(error))
    }
}

/// `login.token` (invalid token), `FAIL_LOGIN_TOKEN` (revoked) and
/// `auth.blocked` all need a fresh interactive login; retrying the same
/// token only burns the account's rate limit.
pub(crate) fn is_token_rejection(payload: &ErrorPayload) -> bool {
    const KEYS: [&str; 3] = ["login.token", "FAIL_LOGIN_TOKEN", "auth.blocked"];
    KEYS.iter()
        .any(|key| payload.error.eq_ignore_ascii_case(key))
        || payload
            .message
            .as_deref()
            .is_some_and(|m| m.contains("FAIL_LOGIN_TOKEN"))
}
