//! A faithful local simulator of the MAX ("OneMe") user protocol server,
//! for tests, demos and third-party clients. It speaks JSON (text frames,
//! `ver` 11) and the binary format (binary frames, `ver` 10) on
//! `/websocket`, serves uploads and downloads over HTTP on the same
//! listener, and exposes a control API (in-process [`Control`], HTTP under
//! `/_sim/`, and the `maxsim ctl` CLI).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use maxsim::{Outgoing, SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::default()).await?;
//! println!("connect to {}", sim.ws_url()); // ws://127.0.0.1:PORT/websocket
//! // Alice writes to TransferBot in their dialog (ids from the default fixture).
//! let alice = maxsim::fixture_ids::ALICE;
//! let msg = sim.control().send(alice, maxsim::fixture_ids::DIALOG_ALICE_TRANSFERBOT, Outgoing::text("hi"))?;
//! println!("sent message {}", msg.id);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Default fixture accounts (`fixtures/default.json`)
//!
//! | Account | id | phone | SMS code | token |
//! |---|---|---|---|---|
//! | TransferBot | 13446207 | +7 996 543-31-17 (`79965433117`) | `111111` | `sim-token-transferbot` |
//! | Alice Ivanova | 21473921 | +7 900 000-00-01 (`79000000001`) | `000001` | `sim-token-alice` |
//! | Boris Petrov | 23981206 | +7 900 000-00-02 (`79000000002`) | `000002` | `sim-token-boris` |
//! | MAX (bot) | 543835 | — | — | — |
//! | MasterBot (bot) | 452 | — | — | — |
//! | GigaChat (bot) | 2165956 | — | — | — |
//!
//! Chats: TransferBot's seven chats of the captured LOGIN answer
//! (`crates/maxproto/tests/data/seed_login.json`: groups -68104154993983,
//! -68102894998847, -68102896244031, -68102870553919 and dialogs 12935268,
//! 13446651, 15474939 with the three bots), plus dialogs Alice↔TransferBot
//! 25855678, Boris↔TransferBot 27312297, Alice↔Boris 2770455, the group
//! "Test group" -70000000000001 (owner Alice; Alice, Boris, TransferBot)
//! and the channel "Test channel" -70000000000002 (owner Boris; Alice and
//! TransferBot subscribed). Every account also has Saved messages (chat 0).
//!
//! # Fixture format
//!
//! ```json
//! {
//!   "accounts": [{
//!     "id": 21473921, "firstName": "Alice", "lastName": "Ivanova",
//!     "phone": 79000000001, "smsCode": "000001", "tokens": ["sim-token-alice"],
//!     "contacts": [23981206], "options": ["TT", "ONEME"], "photoId": 1,
//!     "avatar": true, "avatarUrl": null, "description": null, "link": null,
//!     "updateTime": 1754200000000, "bot": false
//!   }],
//!   "chats": [{
//!     "id": -70000000000001, "type": "CHAT", "title": "Test group",
//!     "description": null, "owner": 21473921, "admins": [21473921],
//!     "participants": {"21473921": 0, "23981206": 0},
//!     "icon": true, "iconUrl": null,
//!     "extra": {"access": "PRIVATE"},
//!     "messages": [{"id": "114976357171200001", "time": 1754302000000,
//!                   "sender": 21473921, "text": "hi", "attaches": []}]
//!   }],
//!   "serverConfig": {"max-msg-length": 4000}
//! }
//! ```
//!
//! - `accounts[].avatar: true` serves a generated PNG at `<http>/i?r=u<id>`;
//!   `avatarUrl` overrides it. `phone` is digits only. Accounts without
//!   `smsCode` cannot log in by SMS; `tokens` are valid LOGIN tokens.
//! - `chats[].type` is `DIALOG` (id = XOR of its two participants),
//!   `CHAT` or `CHANNEL` (negative ids). `participants` maps member id to
//!   read mark (ms). `extra` holds raw wire keys copied into every
//!   rendering (computed keys win). `messages` are wire-form messages
//!   (`id` as string or number), any order.
//! - `serverConfig` keys override the built-in `config.server` of LOGIN.
//!
//! # LOGIN and catching up
//!
//! Like the real service (which cannot be relied on to send recent
//! messages), the LOGIN (19) answer's `messages` object is empty by default;
//! every chat carries its `lastMessage`, and clients catch up with
//! CHAT_HISTORY (49). [`SimConfig::login_messages`] (`maxsim serve
//! --login-messages N`) puts the N most recent visible messages of each
//! returned chat back into `messages` (oldest first).
//!
//! # State file
//!
//! With [`SimConfig::state_file`] (`maxsim serve --state FILE`) the
//! server-side state lives on disk:
//!
//! - If FILE exists, the simulator starts from it and ignores the fixture;
//!   an unreadable or malformed FILE fails the start
//!   ([`SimError::StateFile`]) rather than being replaced. Otherwise it
//!   starts from the fixture and creates FILE before serving.
//! - Kept: accounts (profile, contacts, SMS codes), valid and revoked
//!   tokens, chats (members, read marks), messages (edited/removed status,
//!   reactions, "deleted for me"), the cid dedup table (a resent cid gets
//!   the original message after a restart too), the id counters (new
//!   message, chat, account and upload ids stay larger than stored ones),
//!   server config overrides, and uploads (metadata in FILE, bytes in
//!   `FILE.media/<id>`). URLs pointing at the previous run's address are
//!   moved to the new one. Not kept: connections and what belongs to them
//!   (sessions, presence, pending SMS/QR logins) and fault switches.
//! - Writes: after every change a writer task writes FILE — to a
//!   temporary file in the same directory, fsynced, then renamed over FILE
//!   (and the directory fsynced) — at most every 50 ms, so bursts coalesce.
//!   [`SimHandle::shutdown`], dropping the [`SimHandle`], and SIGTERM/Ctrl-C
//!   of `maxsim serve` write it a last time. A `kill -9` loses at most the
//!   changes of the last ~50 ms; FILE is never left half-written.
//!
//! # Presence
//!
//! An account is online while at least one of its connections is
//! interactive (the last PING, or LOGIN, said `interactive: true`) or while
//! the control API holds it online ([`Control::set_presence`],
//! `POST /_sim/presence`, `maxsim ctl presence ID [--offline]`); setting it
//! offline releases the hold and marks its connections non-interactive until
//! their next interactive PING. Presence is `{seen, status: 1}` online and
//! `{seen}` offline, `seen` in seconds (as in the captured LOGIN answer):
//! the last interactive PING/LOGIN while online, the moment it went
//! offline. Every change pushes 132 `{userId, presence}` to the accounts
//! that have the user as a contact or share a chat with them (not to the
//! user's own connections). CONTACT_PRESENCE (35), CHAT_MEMBERS (59) and
//! LOGIN's `presence` (contacts and dialog peers) show the same state.
//!
//! # HTTP endpoints (same listener)
//!
//! - `GET /websocket` — the protocol (optionally requires `Origin: https://web.max.ru`).
//! - `POST /upload/photo?apiToken=…&photoIds=…` (multipart `file` or raw body)
//!   → `{"photos": {"<id>": {"token": …}}}`.
//! - `POST /upload/file?id=…&sig=…`, `POST /upload/video?id=…&sig=…` (raw
//!   body with `Content-Disposition`/`Content-Range`, or multipart `file`);
//!   NOTIF_ATTACH (136) follows after the configured delay.
//! - `GET /media/<id>?sig=…` — the uploaded bytes with their Content-Type.
//! - `GET /i?r=p<photoId>` — an uploaded photo; `u<userId>`, `c<chatId>`,
//!   `s<stickerId>`, `v<videoId>` — generated PNGs.
//!
//! # Control API over HTTP (`/_sim/`, JSON bodies, camelCase)
//!
//! | Method and path | Body / query | Answer |
//! |---|---|---|
//! | `GET /_sim/accounts` | | `[AccountInfo]` (tokens, SMS codes) |
//! | `POST /_sim/accounts` | `NewAccount` | `AccountInfo` |
//! | `GET /_sim/accounts/{id}/chats` | | `[ChatInfo]` |
//! | `GET /_sim/accounts/{id}/session` | | last SESSION_INIT `{userAgent, deviceId}` or null |
//! | `GET /_sim/connections?account=ID` | | `{account, connections}` |
//! | `GET /_sim/messages?account=ID&chatId=ID` | | `[SimMessage]` |
//! | `POST /_sim/chats` | `{owner, type, title, members}` | `{chatId}` |
//! | `POST /_sim/send` | `{account, chatId, text, elements, attaches, replyTo, forward, cid}` | `SimMessage` |
//! | `POST /_sim/edit` | `{account, chatId, messageId, text, elements?}` | `SimMessage` |
//! | `POST /_sim/delete` | `{account, chatId, messageIds, forMe}` | `{}` |
//! | `POST /_sim/react` | `{account, chatId, messageId, reaction: "👍" \| null}` | `ReactionInfo` |
//! | `POST /_sim/typing` | `{account, chatId}` | `{}` |
//! | `POST /_sim/mark-read` | `{account, chatId, messageId}` | `{}` |
//! | `POST /_sim/presence` | `{account, online}` | `{}` |
//! | `POST /_sim/upload?account=&kind=photo\|video\|file&name=&contentType=` | raw bytes | outgoing attach JSON |
//! | `POST /_sim/drop` | `{account?}` | `{dropped}` |
//! | `POST /_sim/delay` | `{opcode?, ms}` (0 removes) | `{}` |
//! | `POST /_sim/refuse-logins` | `{error: "key" \| null}` | `{}` |
//! | `POST /_sim/rate-limit-logins` | `{enabled}` | `{}` |
//! | `POST /_sim/revoke-token` | `{token}` or `{account}` | `{closed}` |
//! | `POST /_sim/rotate-token` | `{account}` | `{}` |
//! | `POST /_sim/fail-opcode` | `{opcode, error: "key" \| null}` | `{}` |
//! | `POST /_sim/reconnect` | `{account}` | `{connections}` |
//! | `POST /_sim/unknown-push` | `{account, opcode?}` | `{connections}` |
//! | `POST /_sim/push-raw` | `{account, kind: "frame", cmd, seq, opcode, payload}` / `{account, kind: "text", text}` / `{account, kind: "binary", bytes}` | `{connections}` |
//! | `POST /_sim/hold-attach` | `{hold}` | `{}` |
//! | `POST /_sim/echo` | `{enabled}` | `{}` |
//! | `POST /_sim/approve-qr` | `{track, account}` | `{}` |
//!
//! Errors come back as `{error, message}` with a 4xx status (409 when the
//! simulated server refused the action, with its protocol error key).

mod control;
mod fixture;
mod handlers;
mod http;
mod hub;
mod model;
mod persist;
mod png;
mod sim;
mod ws;

pub use control::{
    AccountInfo, ChatInfo, Control, ControlError, NewAccount, Outgoing, RawPush, SessionInfo,
    SimMessage, UploadKind,
};
pub use fixture::{ChatKind, Fixture, FixtureAccount, FixtureChat, FixtureError};
pub use model::Callback;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Ids of the default fixture, for tests.
pub mod fixture_ids {
    pub const TRANSFERBOT: i64 = 13_446_207;
    pub const ALICE: i64 = 21_473_921;
    pub const BORIS: i64 = 23_981_206;
    pub const TRANSFERBOT_TOKEN: &str = "sim-token-transferbot";
    pub const ALICE_TOKEN: &str = "sim-token-alice";
    pub const BORIS_TOKEN: &str = "sim-token-boris";
    pub const TRANSFERBOT_PHONE: &str = "+79965433117";
    pub const ALICE_PHONE: &str = "+79000000001";
    pub const BORIS_PHONE: &str = "+79000000002";
    pub const TRANSFERBOT_SMS: &str = "111111";
    pub const ALICE_SMS: &str = "000001";
    pub const BORIS_SMS: &str = "000002";
    pub const DIALOG_ALICE_TRANSFERBOT: i64 = ALICE ^ TRANSFERBOT;
    pub const DIALOG_BORIS_TRANSFERBOT: i64 = BORIS ^ TRANSFERBOT;
    pub const DIALOG_ALICE_BORIS: i64 = ALICE ^ BORIS;
    pub const TEST_GROUP: i64 = -70_000_000_000_001;
    pub const TEST_CHANNEL: i64 = -70_000_000_000_002;
}

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Seed state; [`Fixture::default_fixture`] by default.
    pub fixture: Fixture,
    /// Refuse WebSocket upgrades without `Origin: https://web.max.ru` (403).
    pub require_origin: bool,
    /// Close connections that send nothing for this long.
    pub idle_timeout: Duration,
    /// Send server PINGs (opcode 1) at this interval.
    pub server_ping_interval: Option<Duration>,
    /// Also push 128 of a send to the connection that sent it.
    pub echo_to_sender: bool,
    /// Delay between an HTTP file/video upload and its NOTIF_ATTACH (136).
    pub attach_ready_delay: Duration,
    /// Base URL put into upload/download/avatar URLs; default
    /// `http://<bound address>`.
    pub public_url: Option<String>,
    /// Largest accepted HTTP upload body.
    pub max_upload_bytes: usize,
    /// Keep the server-side state in this JSON file: if it exists, start
    /// from it instead of [`SimConfig::fixture`]; write it (atomically,
    /// at most every 50 ms) after changes and once more on
    /// [`SimHandle::shutdown`] or drop. See the crate docs.
    pub state_file: Option<PathBuf>,
    /// How many recent messages per chat LOGIN (19) puts in its `messages`
    /// object. 0 (the default) sends none, like the real service, which
    /// cannot be relied on to send any: chats carry their `lastMessage`
    /// and clients catch up with CHAT_HISTORY (49).
    pub login_messages: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            fixture: Fixture::default_fixture(),
            require_origin: false,
            idle_timeout: Duration::from_secs(300),
            server_ping_interval: None,
            echo_to_sender: true,
            attach_ready_delay: Duration::from_millis(50),
            public_url: None,
            max_upload_bytes: 512 * 1024 * 1024,
            state_file: None,
            login_messages: 0,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    #[error("state file {path}: {source}")]
    StateFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Entry point.
pub struct Simulator;

impl Simulator {
    /// Bind, load the fixture and serve in the background.
    pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| SimError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: config.bind,
            source,
        })?;
        let base_url = config
            .public_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("http://{addr}"));
        let state_error = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| SimError::StateFile { path, source }
        };
        let loaded = match &config.state_file {
            Some(path) => persist::load(path, &base_url).map_err(state_error(path))?,
            None => None,
        };
        let (state, last_cid) = match loaded {
            Some(loaded) => {
                tracing::info!(path = ?config.state_file, "state loaded from the state file");
                (loaded.state, loaded.last_cid)
            }
            None => {
                let mut state = model::State::new(base_url);
                state.load(&config.fixture)?;
                (state, 0)
            }
        };
        let persister = config
            .state_file
            .as_ref()
            .map(|path| Arc::new(persist::Persister::new(path.clone(), &state)));
        let faults = sim::Faults {
            echo_to_sender: config.echo_to_sender,
            attach_delay: config.attach_ready_delay,
            ..sim::Faults::default()
        };
        let settings = sim::Settings {
            require_origin: config.require_origin,
            idle_timeout: config.idle_timeout,
            server_ping_interval: config.server_ping_interval,
            max_upload_bytes: config.max_upload_bytes,
            login_messages: config.login_messages,
        };
        let sim = Arc::new(sim::Sim::new(settings, state, faults));
        sim.restore_last_cid(last_cid);
        // The first write (creating the file, or normalizing a loaded one)
        // happens before serving, so that an unusable path fails the start.
        let writer = match persister {
            Some(p) => {
                let (s, pp) = (Arc::clone(&sim), Arc::clone(&p));
                tokio::task::spawn_blocking(move || pp.save(&s))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r)
                    .map_err(state_error(p.path()))?;
                Some(persist::Writer::spawn(Arc::clone(&sim), p))
            }
            None => None,
        };
        let app =
            http::router(Arc::clone(&sim)).into_make_service_with_connect_info::<SocketAddr>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "simulator server failed");
            }
        });
        tracing::info!(%addr, "MAX simulator listening");
        Ok(SimHandle {
            addr,
            control: Control { sim },
            stop: Some(stop_tx),
            task: Some(task),
            writer,
        })
    }
}

/// A running simulator. Dropping it stops the server, drops every
/// connection and (with a state file) writes the state file one last time.
pub struct SimHandle {
    addr: SocketAddr,
    control: Control,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    writer: Option<persist::Writer>,
}

impl SimHandle {
    /// `ws://<addr>/websocket`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/websocket", self.addr)
    }

    /// `http://<addr>` (no trailing slash).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Stop serving, drop every connection, wait for the server task, and
    /// (with a state file) write the final state before returning.
    pub async fn shutdown(mut self) {
        self.stop_now();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        if let Some(writer) = self.writer.take() {
            writer.finish(Arc::clone(&self.control.sim)).await;
        }
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.control.drop_connections(None);
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop_now();
        if let Some(writer) = self.writer.take() {
            writer.finish_blocking(&self.control.sim);
        }
    }
}
