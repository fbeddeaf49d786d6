//! Live WebSocket connections: per-connection session state, the bounded
//! outgoing queue, and delivery of pushes to every session of a user.

use maxproto::{Frame, Opcode, WireFormat, WireMessage};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};

/// How many frames may wait for a slow reader before the connection is
/// dropped.
pub(crate) const OUT_CAPACITY: usize = 4096;

/// Something for a connection's writer task to do.
#[derive(Debug)]
pub(crate) enum Out {
    /// An answer to a request, in the format the request came in.
    Reply(Frame, WireFormat),
    /// A server push; the writer assigns the push seq.
    Push(Opcode, Value),
    /// A frame sent exactly as given (seq and cmd included).
    Exact(Frame),
    /// Bytes sent as they are (possibly malformed on purpose).
    Raw(WireMessage),
    /// A close frame with this code, then the end of the connection.
    Close(u16, String),
    /// End the connection without a close frame (the peer sees 1006).
    Abort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Nothing but SESSION_INIT is accepted.
    Fresh,
    /// SESSION_INIT done; only auth opcodes until LOGIN.
    Initialized,
    /// Bound to an account by LOGIN.
    LoggedIn(i64),
}

#[derive(Debug)]
pub(crate) struct Session {
    pub phase: Phase,
    /// The token this connection logged in with.
    pub token: Option<String>,
    pub user_agent: Option<Value>,
    pub device_id: Option<String>,
    pub interactive: bool,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub id: u64,
    pub peer: SocketAddr,
    pub connected_at: i64,
    tx: mpsc::Sender<Out>,
    kill: watch::Sender<bool>,
    format: Mutex<WireFormat>,
    session: Mutex<Session>,
    /// While a request is being handled, pushes to this connection wait
    /// here so that the answer goes out first.
    deferred: Mutex<Option<Vec<Out>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short locks cannot leave the data
    // half-updated in a way that matters more than losing the simulator.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conn {
    pub fn new(id: u64, peer: SocketAddr, tx: mpsc::Sender<Out>) -> Conn {
        Conn {
            id,
            peer,
            connected_at: crate::model::now_ms(),
            tx,
            kill: watch::channel(false).0,
            format: Mutex::new(WireFormat::Json),
            session: Mutex::new(Session {
                phase: Phase::Fresh,
                token: None,
                user_agent: None,
                device_id: None,
                interactive: false,
            }),
            deferred: Mutex::new(None),
        }
    }

    pub fn format(&self) -> WireFormat {
        *lock(&self.format)
    }

    pub fn set_format(&self, format: WireFormat) {
        *lock(&self.format) = format;
    }

    pub fn session(&self) -> MutexGuard<'_, Session> {
        lock(&self.session)
    }

    pub fn user(&self) -> Option<i64> {
        match self.session().phase {
            Phase::LoggedIn(u) => Some(u),
            _ => None,
        }
    }

    /// Queue something for the writer; a full queue drops the connection.
    pub fn send(&self, out: Out) {
        {
            let mut deferred = lock(&self.deferred);
            if let Some(list) = deferred.as_mut() {
                list.push(out);
                return;
            }
        }
        self.send_now(out);
    }

    fn send_now(&self, out: Out) {
        match self.tx.try_send(out) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(conn = self.id, "outgoing queue full; dropping connection");
                self.kill();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Hold pushes until [`Conn::flush_deferred`].
    pub fn begin_deferred(&self) {
        let mut deferred = lock(&self.deferred);
        if deferred.is_none() {
            *deferred = Some(Vec::new());
        }
    }

    /// Send `first`, then whatever was held.
    pub fn flush_deferred(&self, first: Out) {
        let held = lock(&self.deferred).take().unwrap_or_default();
        self.send_now(first);
        for out in held {
            self.send_now(out);
        }
    }

    pub fn push(&self, opcode: Opcode, payload: Value) {
        self.send(Out::Push(opcode, payload));
    }

    pub fn kill(&self) {
        self.kill.send_replace(true);
    }

    pub fn kill_signal(&self) -> watch::Receiver<bool> {
        self.kill.subscribe()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Hub {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Hub {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn register(&self, conn: Arc<Conn>) {
        lock(&self.conns).insert(conn.id, conn);
    }

    pub fn unregister(&self, id: u64) {
        lock(&self.conns).remove(&id);
    }

    pub fn all(&self) -> Vec<Arc<Conn>> {
        lock(&self.conns).values().cloned().collect()
    }

    /// Connections logged in as `user`, oldest first.
    pub fn of_user(&self, user: i64) -> Vec<Arc<Conn>> {
        let mut v: Vec<Arc<Conn>> = lock(&self.conns)
            .values()
            .filter(|c| c.user() == Some(user))
            .cloned()
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Push to every session of `user` except `exclude`.
    pub fn push_user(&self, user: i64, exclude: Option<u64>, opcode: Opcode, payload: &Value) {
        for c in self.of_user(user) {
            if Some(c.id) != exclude {
                c.push(opcode, payload.clone());
            }
        }
    }

    /// Push a format-dependent frame to every session of `user` except
    /// `exclude`; `build` may return `None` to skip a connection.
    pub fn push_user_with(
        &self,
        user: i64,
        exclude: Option<u64>,
        build: impl Fn(WireFormat) -> Option<(Opcode, Value)>,
    ) {
        for c in self.of_user(user) {
            if Some(c.id) != exclude
                && let Some((op, payload)) = build(c.format())
            {
                c.push(op, payload);
            }
        }
    }
}
