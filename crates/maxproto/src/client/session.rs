//! The state shared by a client's handles and its supervisor task: the
//! current connection, the token, subscriptions; establishing a session
//! (INIT, LOGIN, re-subscribe) and the reconnect loop around it.

use super::conn::{self, CallError, ConnEnd, Live};
use super::{ClientConfig, ClientError, ClientEvent, ConnectionState};
use crate::opcode::Opcode;
use crate::token::Token;
use crate::types::{self, LoginResponse};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};

/// Asked of the supervisor by [`super::Client::close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Run,
    Close,
}

pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    pub(crate) state: watch::Sender<ConnectionState>,
    /// The live connection requests go to; `None` while (re)connecting.
    current: watch::Sender<Option<Arc<conn::Conn>>>,
    /// `None` for an unauthenticated (SMS login) session.
    token: Mutex<Option<Token>>,
    subscriptions: Mutex<BTreeSet<i64>>,
    pub(crate) events: mpsc::Sender<ClientEvent>,
    pub(crate) logging_out: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single assignment or set operation, so a
    // poisoned lock still holds consistent data.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(
        config: ClientConfig,
        token: Option<Token>,
        events: mpsc::Sender<ClientEvent>,
    ) -> Shared {
        Shared {
            config,
            state: watch::Sender::new(ConnectionState::Connecting),
            current: watch::Sender::new(None),
            token: Mutex::new(token),
            subscriptions: Mutex::new(BTreeSet::new()),
            events,
            logging_out: AtomicBool::new(false),
        }
    }

    pub(crate) fn token(&self) -> Option<Token> {
        lock(&self.token).clone()
    }

    pub(crate) fn set_subscribed(&self, chat_id: i64, subscribed: bool) {
        let mut subscriptions = lock(&self.subscriptions);
        if subscribed {
            subscriptions.insert(chat_id);
        } else {
            subscriptions.remove(&chat_id);
        }
    }

    pub(crate) fn subscriptions(&self) -> Vec<i64> {
        lock(&self.subscriptions).iter().copied().collect()
    }

    /// Requests waiting for an answer on the current connection.
    pub(crate) fn in_flight(&self) -> usize {
        self.current
            .borrow()
            .as_ref()
            .map_or(0, |conn| conn.router.pending_count())
    }

    fn terminal_error(&self) -> Option<ClientError> {
        match &*self.state.borrow() {
            ConnectionState::LoggedOut { reason } => Some(ClientError::LoggedOut(reason.clone())),
            ConnectionState::Closed => Some(ClientError::Closed),
            _ => None,
        }
    }

    /// Sends a request on the current connection, waiting for a connection
    /// while reconnecting, all within the request timeout.
    pub(crate) async fn request(
        &self,
        opcode: Opcode,
        payload: Value,
    ) -> Result<Value, ClientError> {
        tokio::time::timeout(
            self.config.request_timeout,
            self.request_unbounded(opcode, payload),
        )
        .await
        .unwrap_or(Err(ClientError::Timeout))
    }

    async fn request_unbounded(
        &self,
        opcode: Opcode,
        mut payload: Value,
    ) -> Result<Value, ClientError> {
        let mut current = self.current.subscribe();
        loop {
            let conn = current.borrow_and_update().clone();
            match conn {
                Some(conn) => match conn.call(opcode, payload).await {
                    Ok(answer) => return Ok(answer),
                    Err(CallError::Failed(error)) => return Err(error),
                    // That connection died before the frame left; the next
                    // one gets it.
                    Err(CallError::NotSent(back)) => payload = back,
                },
                None => {
                    if let Some(error) = self.terminal_error() {
                        return Err(error);
                    }
                }
            }
            if current.changed().await.is_err() {
                return Err(ClientError::Closed);
            }
        }
    }

    pub(crate) fn publish(&self, conn: Option<Arc<conn::Conn>>, state: ConnectionState) {
        // State first: a request woken by the connection change must see a
        // terminal state if there is one.
        self.state.send_replace(state);
        self.current.send_replace(conn);
    }

    /// Remembers a replacement token from a LOGIN answer (§1.7) and tells
    /// the consumer, who must persist it.
    async fn note_token(&self, login_answer: &Value) {
        let Some(new) = login_answer.get("token").and_then(Value::as_str) else {
            return;
        };
        if new.is_empty() {
            return;
        }
        let replaced = {
            let mut token = lock(&self.token);
            match token.as_ref() {
                Some(old) if old.expose() != new => {
                    *token = Some(Token::new(new));
                    true
                }
                _ => false,
            }
        };
        if replaced {
            tracing::info!("LOGIN returned a replacement token");
            if self
                .events
                .send(ClientEvent::TokenReplaced(Token::new(new)))
                .await
                .is_err()
            {
                tracing::warn!("event receiver dropped; a replaced token will not be persisted");
            }
        }
    }
}

/// One request on a connection that is not published yet, with the timeout.
async fn call_on(
    shared: &Shared,
    live: &Live,
    opcode: Opcode,
    payload: Value,
) -> Result<Value, ClientError> {
    match tokio::time::timeout(
        shared.config.request_timeout,
        live.conn.call(opcode, payload),
    )
    .await
    {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(CallError::Failed(error))) => Err(error),
        Ok(Err(CallError::NotSent(_))) => Err(ClientError::Disconnected),
        Err(_) => Err(ClientError::Timeout),
    }
}

/// Opens a connection and brings it to a usable session: SESSION_INIT,
/// then (with a token) LOGIN and, after a reconnect, the subscriptions.
/// Returns the LOGIN answer.
pub(crate) async fn establish(
    shared: &Shared,
    reconnect: bool,
) -> Result<(Live, Option<Value>), ClientError> {
    let live = conn::open(&shared.config, shared.events.clone()).await?;
    call_on(
        shared,
        &live,
        Opcode::SESSION_INIT,
        shared.config.session_init_payload()?,
    )
    .await?;
    let Some(token) = shared.token() else {
        return Ok((live, None));
    };
    let answer = call_on(
        shared,
        &live,
        Opcode::LOGIN,
        shared.config.login_payload(&token)?,
    )
    .await?;
    shared.note_token(&answer).await;
    if reconnect {
        for chat_id in shared.subscriptions() {
            let payload = json!({"chatId": chat_id, "subscribe": true});
            if let Err(error) = call_on(shared, &live, Opcode::CHAT_SUBSCRIBE, payload).await {
                tracing::warn!(chat_id, %error, "cannot restore chat subscription");
            }
        }
    }
    Ok((live, Some(answer)))
}

async fn stopped(stop: &mut watch::Receiver<Stop>) {
    // A dropped sender means every client handle is gone: stop as well.
    let _ = stop.wait_for(|s| *s != Stop::Run).await;
}

/// Runs a client's connections until it is closed, dropped or logged out:
/// watches the live connection and reconnects with backoff when it ends.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    mut live: Live,
    mut stop: watch::Receiver<Stop>,
) {
    loop {
        shared.publish(Some(Arc::clone(&live.conn)), ConnectionState::Connected);
        let end = tokio::select! {
            end = &mut live.reader => end.unwrap_or_else(|e| ConnEnd::Lost(format!("reader task failed: {e}"))),
            () = stopped(&mut stop) => {
                shared.publish(None, final_state(&shared, None));
                live.shutdown(true).await;
                return;
            }
        };
        shared.current.send_replace(None);
        live.shutdown(false).await;
        if shared.logging_out.load(Ordering::SeqCst) {
            shared.publish(None, final_state(&shared, None));
            return;
        }
        let mut last_error = end.describe();
        tracing::warn!(reason = %last_error, "MAX connection lost; reconnecting");
        let mut attempt: u32 = 0;
        let mut delays = shared.config.reconnect.delays();
        live = loop {
            attempt = attempt.saturating_add(1);
            shared.state.send_replace(ConnectionState::Reconnecting {
                attempt,
                last_error: last_error.clone(),
            });
            let delay = delays.next().unwrap_or(shared.config.reconnect.max);
            let established = tokio::select! {
                result = async {
                    tokio::time::sleep(delay).await;
                    establish(&shared, true).await
                } => result,
                () = stopped(&mut stop) => {
                    shared.publish(None, final_state(&shared, None));
                    return;
                }
            };
            match established {
                Ok((next, login)) => {
                    tracing::info!(attempt, "MAX connection re-established");
                    if let Some(login) = login {
                        match types::from_payload::<LoginResponse>(login) {
                            Ok(login) => {
                                let event = ClientEvent::Reconnected(Box::new(login));
                                if shared.events.send(event).await.is_err() {
                                    tracing::debug!("event receiver dropped");
                                }
                            }
                            Err(error) => {
                                tracing::warn!(%error, "LOGIN answer after reconnect does not parse");
                            }
                        }
                    }
                    break next;
                }
                Err(error) if error.is_token_rejected() => {
                    tracing::warn!(%error, "login token refused; giving up reconnecting");
                    shared.publish(None, final_state(&shared, Some(error.to_string())));
                    return;
                }
                Err(error) => {
                    tracing::info!(attempt, %error, "reconnect attempt failed");
                    last_error = error.to_string();
                }
            }
        };
    }
}

/// Where a stopped client ends: logged out when its token was refused or
/// it logged out on purpose, closed otherwise.
fn final_state(shared: &Shared, refused: Option<String>) -> ConnectionState {
    match refused {
        Some(reason) => ConnectionState::LoggedOut { reason },
        None if shared.logging_out.load(Ordering::SeqCst) => ConnectionState::LoggedOut {
            reason: "logged out".to_owned(),
        },
        None => ConnectionState::Closed,
    }
}
