//! A whole deployment for end-to-end tests: a throwaway database (PostgreSQL,
//! or SQLite),
//! the MAX simulator with its default fixture, a real Synapse with the
//! bridge's registration, and the bridge itself — in-process (so a test can
//! stop and restart it) or as a child process of the `maxbridge` binary (so
//! a fault test can `kill -9` it).

use super::database::{Backend, TestDatabase};
use super::human::Human;
use super::synapse::{Synapse, SynapseOptions};
use maxbridge::app::Running;
use maxbridge::config::{Config, Registration, generate_registration};
use maxsim::{SimConfig, SimHandle, Simulator};
use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use std::path::PathBuf;

/// The simulator's Alice Ivanova, as a human types her number.
pub const ALICE_PHONE: &str = "+7 900 000-00-01";
pub const ALICE_CODE: &str = "000001";

pub struct Env {
    pub db: TestDatabase,
    pub sim: SimHandle,
    pub synapse: Synapse,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub bridge: Option<Running>,
    /// The bridge as a child process (`EnvOptions::process`).
    pub process: Option<BridgeProcess>,
    /// The appservice's socket, bound once and kept: every in-process
    /// (re)start of the bridge serves on a duplicate of it, so no other
    /// process can take the port that Synapse's registration points at.
    /// A bridge process binds the port itself.
    listener: Option<std::net::TcpListener>,
    port: u16,
    process_mode: bool,
    log_filter: Option<String>,
    /// Where a bridge process sends its systemd notifications
    /// (`NOTIFY_SOCKET`), and what it sent so far. Read only when a test
    /// waits for one: the rest of the time its queue stays full, as with a
    /// service manager that does not keep up, which must not stall the bridge.
    notify_socket: std::os::unix::net::UnixDatagram,
    notifications: std::sync::Mutex<Vec<String>>,
}

/// How [`Env::start_with_options`] sets up the deployment.
pub struct EnvOptions {
    pub sim: SimConfig,
    /// `json` or `binary`.
    pub wire_format: &'static str,
    /// Run the bridge as a child process of the `maxbridge` binary.
    pub process: bool,
    /// The PostgreSQL server for the bridge's database (default: the test
    /// server of `MAXBRIDGE_TEST_PG_URL`).
    pub pg_admin_url: Option<String>,
    /// The bridge's database: PostgreSQL (default) or an SQLite file.
    pub database: Backend,
    /// Extra lines of the `bridge:` section (`key: value`).
    pub bridge_options: Vec<(String, String)>,
    /// `RUST_LOG` of a bridge process (default: `MAXBRIDGE_FAULT_LOG`, or
    /// debug for the bridge and info for the rest).
    pub log_filter: Option<String>,
    /// `max.media.max_bytes` of the bridge.
    pub media_max_bytes: Option<u64>,
    /// Extra top-level YAML for Synapse's config.
    pub synapse_yaml: String,
    /// `backfill.max_initial_messages` (0 here: most tests read a portal's
    /// timeline and expect only what they sent into it).
    pub backfill: u32,
    /// `homeserver.status_endpoint` of the bridge.
    pub status_endpoint: Option<String>,
    /// Extra top-level YAML of the bridge's config (whole sections).
    pub bridge_yaml: String,
    /// Double puppeting: a second registration (no URL) covering the
    /// homeserver's users, and its token in the bridge's config.
    pub double_puppet: bool,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            sim: SimConfig::default(),
            wire_format: "json",
            process: false,
            pg_admin_url: None,
            database: Backend::Postgres,
            double_puppet: false,
            bridge_options: Vec::new(),
            log_filter: None,
            media_max_bytes: None,
            synapse_yaml: String::new(),
            backfill: 0,
            status_endpoint: None,
            bridge_yaml: String::new(),
        }
    }
}

/// How long a bridge process may take to say it runs.
const PROCESS_START_DEADLINE: std::time::Duration = std::time::Duration::from_secs(90);

/// The `maxbridge` binary running as a child; its JSON log lines go to
/// `log_path`, appended across restarts.
pub struct BridgeProcess {
    child: tokio::process::Child,
}

impl BridgeProcess {
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }
}

pub fn init_tracing() {
    let filter = std::env::var("RUST_LOG")
        // matrix-sdk's own info lines (whole sync filters) would bury a
        // failing test's message in CI's shortened output.
        .unwrap_or_else(|_| {
            "info,maxbridge=debug,maxproto=info,maxsim=info,matrix_sdk=warn,matrix_sdk_base=warn"
                .to_owned()
        });
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .try_init();
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(SimConfig::default(), "json").await
    }

    /// The bridge talks to the simulator in `wire_format` (`json` or `binary`).
    pub async fn start_with(sim_config: SimConfig, wire_format: &'static str) -> Env {
        Env::start_with_options(EnvOptions {
            sim: sim_config,
            wire_format,
            ..EnvOptions::default()
        })
        .await
    }

    pub async fn start_with_options(options: EnvOptions) -> Env {
        init_tracing();
        let EnvOptions {
            sim: sim_config,
            wire_format,
            process,
            pg_admin_url,
            database,
            bridge_options,
            log_filter,
            media_max_bytes,
            synapse_yaml,
            backfill,
            status_endpoint,
            bridge_yaml,
            double_puppet,
        } = options;
        let db = match &pg_admin_url {
            Some(url) => TestDatabase::create_postgres_on(url).await,
            None => TestDatabase::create(database).await,
        };
        let sim = Simulator::start(sim_config)
            .await
            .expect("simulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("appservice socket");
        let port = listener.local_addr().expect("bound address").port();
        // Synapse needs the registration (with the bridge's URL) at start,
        // and the bridge config needs Synapse's address: reserve its port
        // through a first config written with a placeholder, then rewrite.
        let registration_path = dir.path().join("registration.yaml");
        let config_path = dir.path().join("config.yaml");
        let mut registrations = vec![registration_path.clone()];
        let mut bridge_yaml = bridge_yaml;
        if double_puppet {
            let token = maxbridge::matrix::Secret::generate();
            let path = dir.path().join("doublepuppet.yaml");
            let registration = format!(
                "id: doublepuppet\nurl: null\nas_token: {token}\nhs_token: {hs}\n\
                 sender_localpart: doublepuppet{sender}\nrate_limited: false\n\
                 namespaces:\n  users:\n    - regex: '@.*:localhost'\n      exclusive: false\n",
                token = token.expose(),
                hs = maxbridge::matrix::Secret::generate().expose(),
                sender = rand::random::<u32>(),
            );
            std::fs::write(&path, registration).expect("double puppet registration written");
            registrations.push(path);
            bridge_yaml.push_str(&format!(
                "double_puppet:\n    secrets:\n        localhost: as_token:{}\n",
                token.expose()
            ));
        }
        let extra: String = bridge_options
            .iter()
            .map(|(key, value)| format!("    {key}: {value}\n"))
            .collect();
        let log_format = if process { "json" } else { "pretty" };
        let status_endpoint = status_endpoint
            .map(|url| format!("    status_endpoint: {url}\n"))
            .unwrap_or_default();
        let write_config = |homeserver: &str| {
            let yaml = format!(
                r#"homeserver:
    address: {homeserver}
    domain: localhost
{status_endpoint}appservice:
    address: http://127.0.0.1:{port}
    hostname: 127.0.0.1
    port: {port}
    id: max
    bot:
        username: maxbot
        displayname: MAX bridge bot
    registration: {registration}
database:
    url: {db}
    max_connections: 5
max:
    endpoint: {ws}
    wire_format: {wire_format}
    media:
        allow_networks: ["127.0.0.1/32"]
        max_bytes: {media_max_bytes}
bridge:
    permissions:
        "*": none
        localhost: user
        "@mallory:localhost": none
{extra}backfill:
    max_initial_messages: {backfill}
metrics:
    enabled: true
logging:
    level: info
    format: {log_format}
{bridge_yaml}"#,
                registration = registration_path.display(),
                media_max_bytes = media_max_bytes.unwrap_or(100 * 1024 * 1024),
                db = db.url(),
                ws = sim.ws_url(),
            );
            std::fs::write(&config_path, yaml).expect("config written");
        };
        write_config("http://127.0.0.1:1");
        let config = Config::load(&config_path).expect("test config loads");
        generate_registration(&config)
            .expect("registration generates")
            .save(&registration_path)
            .expect("registration saved");
        let synapse = Synapse::start(SynapseOptions {
            extra_yaml: synapse_yaml,
            appservice_registrations: registrations,
            ..SynapseOptions::default()
        })
        .await;
        write_config(&synapse.base_url());
        let notify_socket = std::os::unix::net::UnixDatagram::bind(dir.path().join("notify.sock"))
            .expect("notify socket");
        notify_socket
            .set_nonblocking(true)
            .expect("non-blocking notify socket");
        let mut env = Env {
            db,
            sim,
            synapse,
            dir,
            config_path,
            bridge: None,
            process: None,
            listener: (!process).then_some(listener),
            port,
            process_mode: process,
            log_filter,
            notify_socket,
            notifications: std::sync::Mutex::new(Vec::new()),
        };
        env.start_bridge().await;
        env
    }

    /// Adds `key: value` to the `bridge:` section of the config, for the
    /// next (re)start of the bridge.
    pub fn set_bridge_option(&self, key: &str, value: &str) {
        let yaml = std::fs::read_to_string(&self.config_path).expect("config readable");
        let yaml = yaml.replacen("bridge:\n", &format!("bridge:\n    {key}: {value}\n"), 1);
        std::fs::write(&self.config_path, yaml).expect("config written");
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).expect("test config loads")
    }

    pub async fn start_bridge(&mut self) {
        assert!(
            self.bridge.is_none() && self.process.is_none(),
            "bridge already running"
        );
        if self.process_mode {
            self.spawn_bridge_process().await;
            return;
        }
        let config = self.config();
        let registration =
            Registration::load(&config.appservice.registration).expect("registration loads");
        let socket = self
            .listener
            .as_ref()
            .expect("in-process mode keeps the socket")
            .try_clone()
            .expect("duplicate the socket");
        socket.set_nonblocking(true).expect("non-blocking socket");
        let listener = tokio::net::TcpListener::from_std(socket).expect("tokio listener");
        let running = maxbridge::app::start_on(config, registration, listener)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "bridge starts: {e}\n--- synapse log ---\n{}",
                    self.synapse.log_tail()
                )
            });
        assert_eq!(running.addr.port(), self.port);
        self.bridge = Some(running);
    }

    pub async fn stop_bridge(&mut self) {
        if let Some(running) = self.bridge.take() {
            running.shutdown().await;
        }
        self.kill_bridge().await;
    }

    /// The process id of the running bridge process.
    pub fn bridge_pid(&self) -> u32 {
        self.process
            .as_ref()
            .and_then(BridgeProcess::id)
            .expect("a bridge process is running")
    }

    /// `kill -9` of the bridge process: no shutdown of any kind.
    pub async fn kill_bridge(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.child.start_kill().expect("SIGKILL the bridge");
            let status = process.child.wait().await.expect("reap the bridge");
            tracing::info!(%status, "bridge process killed");
        }
    }

    /// `maxbridge health` against this deployment's config: whether it
    /// says a bridge serves.
    pub async fn health_check(&self) -> bool {
        let binary = std::env::var_os("MAXBRIDGE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_maxbridge")));
        tokio::process::Command::new(binary)
            .arg("-c")
            .arg(&self.config_path)
            .arg("health")
            .output()
            .await
            .expect("maxbridge health runs")
            .status
            .success()
    }

    /// Waits (up to a deadline) until a bridge process has sent the systemd
    /// notification `what` (e.g. `READY=1`) `times` times in all.
    pub async fn wait_for_notification(&self, what: &str, times: usize) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (count, seen) = {
                let mut buf = [0u8; 4096];
                let mut seen = self.notifications.lock().unwrap_or_else(|e| e.into_inner());
                while let Ok(n) = self.notify_socket.recv(&mut buf) {
                    seen.extend(
                        String::from_utf8_lossy(&buf[..n])
                            .lines()
                            .map(str::to_owned),
                    );
                }
                (
                    seen.iter().filter(|line| *line == what).count(),
                    seen.clone(),
                )
            };
            if count >= times {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {times}× {what} from the bridge; it sent {seen:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Where a bridge process logs (JSON lines, all its runs).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("bridge.log")
    }

    /// The bridge process's log so far.
    pub fn bridge_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last lines of the bridge process's log, for failure messages;
    /// the whole log is copied next to the temp dir's other leftovers
    /// (the test's own dir is removed when it ends) and its path named.
    pub fn bridge_log_tail(&self, lines: usize) -> String {
        let log = self.bridge_log();
        let kept = std::env::temp_dir().join(format!(
            "maxbridge-bridge-{}.log",
            self.dir
                .path()
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        ));
        let saved = match std::fs::write(&kept, &log) {
            Ok(()) => format!("(whole log: {})", kept.display()),
            Err(error) => format!("(could not keep the whole log: {error})"),
        };
        let all: Vec<&str> = log.lines().collect();
        format!(
            "{}\n{saved}",
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    /// Starts the binary and waits until it logs that it runs.
    async fn spawn_bridge_process(&mut self) {
        let log_path = self.log_path();
        let offset = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("bridge log file");
        let filter = self.log_filter.clone().unwrap_or_else(|| {
            std::env::var("MAXBRIDGE_FAULT_LOG")
                .unwrap_or_else(|_| "info,maxbridge=debug,maxproto=info".to_owned())
        });
        // MAXBRIDGE_BIN runs the suite against another build (e.g. release).
        let binary = std::env::var_os("MAXBRIDGE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_maxbridge")));
        // As systemd starts a Type=notify service with WatchdogSec=1s: the
        // watchdog's variables name the process itself, which `exec` keeps.
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(r#"export WATCHDOG_PID=$$; exec "$0" "$@""#)
            .arg(binary)
            .arg("-c")
            .arg(&self.config_path)
            .env("RUST_LOG", filter)
            .env("NOTIFY_SOCKET", self.dir.path().join("notify.sock"))
            .env("WATCHDOG_USEC", "1000000")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the maxbridge binary");
        self.process = Some(BridgeProcess { child });
        let deadline = tokio::time::Instant::now() + PROCESS_START_DEADLINE;
        loop {
            let text = std::fs::read(&log_path).unwrap_or_default();
            let since = String::from_utf8_lossy(&text[(offset as usize).min(text.len())..]);
            if since.contains("bridge running") {
                return;
            }
            let exited = self
                .process
                .as_mut()
                .and_then(|p| p.child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.process = None;
                panic!(
                    "the bridge process exited ({status}) before running:\n{since}\n--- synapse log ---\n{}",
                    self.synapse.log_tail()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the bridge process did not start within {PROCESS_START_DEADLINE:?}:\n{since}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn restart_bridge(&mut self) {
        self.stop_bridge().await;
        self.start_bridge().await;
    }

    pub fn appservice_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The registration the bridge and Synapse share.
    pub fn registration(&self) -> Registration {
        Registration::load(&self.config().appservice.registration).expect("registration loads")
    }

    pub fn hs_token(&self) -> String {
        self.registration().hs_token.expose().to_owned()
    }

    /// The room of the portal of `chat_id` as the bridge's database has it.
    pub async fn db_portal_room(&self, chat_id: i64) -> Option<String> {
        let db = maxbridge::store::Db::connect(self.db.url(), 1)
            .await
            .expect("the bridge's database");
        let room: Option<Option<String>> = maxbridge::on_db!(&db, |pool| {
            sqlx::query_scalar("SELECT room_id FROM portals WHERE chat_id = $1")
                .bind(chat_id)
                .fetch_optional(pool)
                .await
        })
        .expect("portals readable");
        db.close().await;
        room.flatten()
    }

    pub fn as_token(&self) -> String {
        self.registration().as_token.expose().to_owned()
    }

    pub fn bot(&self) -> OwnedUserId {
        self.synapse.user_id("maxbot")
    }

    pub fn ghost(&self, max_user_id: i64) -> OwnedUserId {
        self.synapse.user_id(&format!("max_{max_user_id}"))
    }

    /// A Matrix user with a management room (a DM with the bot, greeted).
    pub async fn user_with_management_room(&self, localpart: &str) -> (Human, OwnedRoomId) {
        let human = Human::register(&self.synapse, localpart).await;
        let room = human.create_dm(&self.bot()).await;
        let bot = self.bot();
        human
            .wait_for_message(&room, |m| {
                m.sender == bot && m.body.contains("Send `login`")
            })
            .await;
        (human, room)
    }

    /// Sends a command and waits for the bot's next notice containing `expect`.
    pub async fn command(&self, human: &Human, room: &RoomId, text: &str, expect: &str) -> String {
        let before = human.messages(room).len();
        human.send_text(room, text).await;
        let bot = self.bot();
        let message = human
            .wait_for_message(room, |m| {
                m.sender == bot && m.body.contains(expect) && {
                    let all = human.messages(room);
                    all.iter()
                        .position(|x| x.event_id == m.event_id)
                        .is_some_and(|i| i >= before)
                }
            })
            .await;
        message.body
    }

    /// Logs the human in as MAX "Alice Ivanova" and joins the DM portal
    /// with Boris; returns the human, the management room and the DM.
    pub async fn alice_with_boris_dm(&self, localpart: &str) -> (Human, OwnedRoomId, OwnedRoomId) {
        let (human, management) = self.user_with_management_room(localpart).await;
        self.login_sms(&human, &management, ALICE_PHONE, ALICE_CODE)
            .await;
        let boris = self.ghost(maxsim::fixture_ids::BORIS);
        let invite = human
            .wait_for_invite(|i| i.inviter.as_ref() == Some(&boris))
            .await;
        assert!(invite.is_direct, "a MAX dialog becomes a direct room");
        human.join(&invite.room_id).await;
        (human, management, invite.room_id)
    }

    /// The whole SMS login flow through the bot.
    pub async fn login_sms(&self, human: &Human, room: &RoomId, phone: &str, code: &str) {
        self.command(human, room, "login", "phone number").await;
        self.command(human, room, phone, "code").await;
        self.command(human, room, code, "Logged in to MAX").await;
    }
}
