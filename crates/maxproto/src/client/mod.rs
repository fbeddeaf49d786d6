//! An async client of the MAX user protocol over WebSocket (JSON or binary
//! frames): session setup, login by token or by SMS code, request/answer
//! correlation, server pushes, keep-alive and reconnection (§1, §2.1).
//!
//! Two entry points:
//! - [`Client::login`] for an account with a token: it keeps the session
//!   alive, reconnects with backoff and logs in again (restoring chat
//!   subscriptions), and delivers pushes and token replacements as
//!   [`ClientEvent`]s on a bounded channel.
//! - [`AuthSession`] for the unauthenticated SMS flow, driven one step at a
//!   time (request code, check code, check 2FA password).
//!
//! The core speaks [`serde_json::Value`] payloads ([`Client::request`]);
//! [`Client::call`] and the helpers in `api` add typed views from
//! [`crate::types`].

mod api;
mod auth;
mod config;
mod conn;
mod error;
mod router;
mod session;

pub use auth::{AuthSession, SmsChallenge, SmsLoginOutcome};
pub use config::{BINARY_ENDPOINT, ClientConfig, JSON_ENDPOINT, ReconnectPolicy, WEB_ORIGIN};
pub use error::ClientError;
pub use router::ServerPush;
#[doc(hidden)]
pub use router::{Routed, Router};

use crate::opcode::Opcode;
use crate::token::Token;
use crate::types::{self, ChatId, ChatSubscribeRequest, LoginResponse};
use serde_json::Value;
use session::{Shared, Stop};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Where a client's connection stands, published on a watch channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// The first connection is being opened.
    Connecting,
    /// Logged in; requests go out immediately.
    Connected,
    /// The connection was lost; requests wait (within their timeout) for
    /// the next one.
    Reconnecting { attempt: u32, last_error: String },
    /// The token was refused (or the client logged out): the client stopped
    /// and needs a fresh login.
    LoggedOut { reason: String },
    /// Closed by [`Client::close`] or by dropping every handle.
    Closed,
}

/// What the client tells its consumer, in arrival order.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// A server push (new message, typing, read mark, …) or a push of an
    /// opcode this crate does not know.
    Push(ServerPush),
    /// LOGIN returned a new token; persist it, the old one will expire.
    TokenReplaced(Token),
    /// The session was lost and established again; the LOGIN answer holds
    /// recent chats and messages to catch up on what was missed.
    Reconnected(Box<LoginResponse>),
}

/// The receiving end of a client's events.
pub type ClientEvents = mpsc::Receiver<ClientEvent>;

/// Closes the client when the last handle is dropped: the supervisor sees
/// the sender vanish.
struct StopOnDrop(watch::Sender<Stop>);

/// A logged-in MAX account. Cheap to clone; the connection stops when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    stop: Arc<StopOnDrop>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.shared.config.endpoint)
            .field("state", &*self.shared.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects, sends SESSION_INIT and LOGIN with `token`, and keeps the
    /// session running in the background. Fails if this first attempt
    /// fails (network, refused token); later losses are reconnected.
    pub async fn login(
        config: ClientConfig,
        token: Token,
    ) -> Result<(Client, ClientEvents, LoginResponse), ClientError> {
        let (client, events, answer) = Client::start(config, Some(token)).await?;
        let answer = answer.ok_or_else(|| ClientError::UnexpectedAnswer {
            opcode: Opcode::LOGIN,
            detail: "no LOGIN answer".to_owned(),
        })?;
        let login = types::from_payload::<LoginResponse>(answer).map_err(|e| {
            ClientError::UnexpectedAnswer {
                opcode: Opcode::LOGIN,
                detail: e.to_string(),
            }
        })?;
        Ok((client, events, login))
    }

    /// Starts a session; with `None` it stops after SESSION_INIT (the SMS
    /// flow's unauthenticated session).
    pub(crate) async fn start(
        config: ClientConfig,
        token: Option<Token>,
    ) -> Result<(Client, ClientEvents, Option<Value>), ClientError> {
        let (events_tx, events_rx) = mpsc::channel(config.push_capacity.max(1));
        let shared = Arc::new(Shared::new(config, token, events_tx));
        let (live, answer) = session::establish(&shared, false).await?;
        // Connected before `start` returns, so callers see a settled state.
        shared.publish(Some(Arc::clone(&live.conn)), ConnectionState::Connected);
        let (stop_tx, stop_rx) = watch::channel(Stop::Run);
        tokio::spawn(session::supervise(Arc::clone(&shared), live, stop_rx));
        let client = Client {
            shared,
            stop: Arc::new(StopOnDrop(stop_tx)),
        };
        Ok((client, events_rx, answer))
    }

    /// Sends a request and waits for its answer's payload. While the client
    /// reconnects the request waits for the new connection; the whole call
    /// is bounded by the configured request timeout.
    pub async fn request(&self, opcode: Opcode, payload: Value) -> Result<Value, ClientError> {
        self.shared.request(opcode, payload).await
    }

    /// A typed request: serializes `request`, sends it with its opcode and
    /// reads the answer as its response type.
    pub async fn call<R: types::Request>(&self, request: &R) -> Result<R::Response, ClientError> {
        let payload = serde_json::to_value(request).map_err(|e| ClientError::UnexpectedAnswer {
            opcode: R::OPCODE,
            detail: format!("request does not serialize: {e}"),
        })?;
        let answer = self.request(R::OPCODE, payload).await?;
        types::from_payload(answer).map_err(|e| ClientError::UnexpectedAnswer {
            opcode: R::OPCODE,
            detail: e.to_string(),
        })
    }

    /// The token the client logs in with now (LOGIN may have replaced the
    /// one it started with).
    pub fn current_token(&self) -> Option<Token> {
        self.shared.token()
    }

    /// Requests sent on the current connection and not answered yet (for
    /// diagnostics and tests).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Follows the connection state.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// Subscribes to (or unsubscribes from) a chat's typing, read-mark and
    /// reaction pushes (75). Subscriptions are restored after a reconnect.
    pub async fn subscribe(&self, chat_id: ChatId, subscribe: bool) -> Result<(), ClientError> {
        let request = ChatSubscribeRequest {
            chat_id,
            subscribe,
            extra: types::Extra::new(),
        };
        self.call(&request).await?;
        self.shared.set_subscribed(chat_id.get(), subscribe);
        Ok(())
    }

    /// Chats the client re-subscribes to after a reconnect.
    pub fn subscriptions(&self) -> Vec<ChatId> {
        self.shared
            .subscriptions()
            .into_iter()
            .map(ChatId::from)
            .collect()
    }

    /// Closes the connection and stops reconnecting. Pending requests fail
    /// with [`ClientError::Disconnected`], later ones with [`ClientError::Closed`].
    pub async fn close(&self) {
        self.stop.0.send_replace(Stop::Close);
        self.wait_stopped().await;
    }

    /// Ends the session on the server (LOGOUT, 20), which invalidates the
    /// token, then closes the client in state `LoggedOut`.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.shared.logging_out.store(true, Ordering::SeqCst);
        let result = match self.request(Opcode::LOGOUT, serde_json::json!({})).await {
            // The server usually closes right after LOGOUT, sometimes before
            // its answer makes it out.
            Ok(_) | Err(ClientError::Disconnected) => Ok(()),
            Err(error) => Err(error),
        };
        self.close().await;
        result
    }

    async fn wait_stopped(&self) {
        let mut state = self.state();
        let done = state.wait_for(|s| {
            matches!(
                s,
                ConnectionState::Closed | ConnectionState::LoggedOut { .. }
            )
        });
        // The supervisor stops within a second or two (it waits at most one
        // second for the close frame); do not hang a caller on a wedged task.
        let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
    }
}
