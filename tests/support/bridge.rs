//! A whole deployment for end-to-end tests: a throwaway PostgreSQL database,
//! the MAX simulator with its default fixture, a real Synapse with the
//! bridge's registration, and the bridge itself running in-process (so a
//! test can stop and restart it).

use super::human::Human;
use super::pg::TestDb;
use super::synapse::{Synapse, SynapseOptions};
use maxbridge::app::Running;
use maxbridge::config::{Config, Registration, generate_registration};
use maxsim::{SimConfig, SimHandle, Simulator};
use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use std::path::PathBuf;

pub struct Env {
    pub db: TestDb,
    pub sim: SimHandle,
    pub synapse: Synapse,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub bridge: Option<Running>,
    /// The appservice's socket, bound once and kept: every (re)start of the
    /// bridge serves on a duplicate of it, so no other process can take the
    /// port that Synapse's registration points at.
    listener: std::net::TcpListener,
    port: u16,
}

pub fn init_tracing() {
    let filter = std::env::var("RUST_LOG")
        .unwrap_or_else(|_| "info,maxbridge=debug,maxproto=info,maxsim=info".to_owned());
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
    pub async fn start_with(sim_config: SimConfig, wire_format: &str) -> Env {
        init_tracing();
        let db = TestDb::create().await;
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
        let write_config = |homeserver: &str| {
            let yaml = format!(
                r#"homeserver:
    address: {homeserver}
    domain: localhost
appservice:
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
bridge:
    permissions:
        "*": none
        localhost: user
        "@mallory:localhost": none
logging:
    level: info
"#,
                registration = registration_path.display(),
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
        let synapse =
            Synapse::start(SynapseOptions::with_appservice(registration_path.clone())).await;
        write_config(&synapse.base_url());
        let mut env = Env {
            db,
            sim,
            synapse,
            dir,
            config_path,
            bridge: None,
            listener,
            port,
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
        assert!(self.bridge.is_none(), "bridge already running");
        let config = self.config();
        let registration =
            Registration::load(&config.appservice.registration).expect("registration loads");
        let socket = self.listener.try_clone().expect("duplicate the socket");
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
    }

    pub async fn restart_bridge(&mut self) {
        self.stop_bridge().await;
        self.start_bridge().await;
    }

    pub fn appservice_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn hs_token(&self) -> String {
        let config = self.config();
        Registration::load(&config.appservice.registration)
            .expect("registration loads")
            .hs_token
            .expose()
            .to_owned()
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

    /// The whole SMS login flow through the bot.
    pub async fn login_sms(&self, human: &Human, room: &RoomId, phone: &str, code: &str) {
        self.command(human, room, "login", "phone number").await;
        self.command(human, room, phone, "code").await;
        self.command(human, room, code, "Logged in to MAX").await;
    }
}
