//! A real Synapse homeserver for one test: its own temp dir, SQLite database, free
//! loopback port and child process (killed when the handle is dropped).
//!
//! The Synapse install itself comes from `scripts/synapse-venv`; this module only
//! writes a config tuned for tests (no federation, no rate limits that a fast test
//! could trip), starts the process, waits until it answers, and registers users
//! through the shared-secret admin API.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore as _;
use ruma::OwnedUserId;
use sha1::Sha1;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long Synapse may take to answer `/_matrix/client/versions` after launch.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How many fresh ports to try when another process grabs ours between pick and bind.
const PORT_ATTEMPTS: usize = 3;
/// Lines of the Synapse log shown when it fails.
const LOG_TAIL_LINES: usize = 60;

/// Options for [`Synapse::start`].
#[derive(Debug, Clone)]
pub struct SynapseOptions {
    /// The homeserver's `server_name` (user ids end in `:<server_name>`).
    pub server_name: String,
    /// Appservice registration files to load (absolute or relative to the cwd).
    /// Synapse reads them once at start, so write them before starting.
    pub appservice_registrations: Vec<PathBuf>,
    /// Extra top-level YAML appended verbatim to `homeserver.yaml`.
    pub extra_yaml: String,
}

impl Default for SynapseOptions {
    fn default() -> Self {
        Self {
            server_name: "localhost".to_owned(),
            appservice_registrations: Vec::new(),
            extra_yaml: String::new(),
        }
    }
}

impl SynapseOptions {
    /// Options loading one appservice registration file.
    pub fn with_appservice(registration: impl Into<PathBuf>) -> Self {
        Self {
            appservice_registrations: vec![registration.into()],
            ..Self::default()
        }
    }
}

/// A running Synapse. Dropping it kills the process and removes its directory
/// (set `MAXBRIDGE_KEEP_SYNAPSE=1` to keep the directory for inspection).
pub struct Synapse {
    venv: PathBuf,
    dir: tempfile::TempDir,
    opts: SynapseOptions,
    port: u16,
    shared_secret: String,
    http: reqwest::Client,
    child: Option<Child>,
}

impl std::fmt::Debug for Synapse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Synapse")
            .field("base_url", &self.base_url())
            .field("server_name", &self.opts.server_name)
            .field("dir", &self.dir.path())
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

impl Synapse {
    /// Starts a fresh Synapse and waits until it serves the client API.
    /// Panics (with the log tail) if it does not come up.
    pub async fn start(opts: SynapseOptions) -> Synapse {
        let venv = venv_path();
        let keep = std::env::var_os("MAXBRIDGE_KEEP_SYNAPSE").is_some();
        let dir = tempfile::Builder::new()
            .prefix("maxbridge-synapse-")
            .disable_cleanup(keep)
            .tempdir()
            .expect("create Synapse temp dir");
        if keep {
            eprintln!("keeping Synapse dir {}", dir.path().display());
        }
        let mut synapse = Synapse {
            venv,
            dir,
            opts,
            port: 0,
            shared_secret: random_secret(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("build reqwest client"),
            child: None,
        };
        synapse.write_static_files();

        for attempt in 1..=PORT_ATTEMPTS {
            synapse.port = free_port();
            synapse.write_config();
            match synapse.launch().await {
                Ok(()) => return synapse,
                Err(Failure::PortTaken) if attempt < PORT_ATTEMPTS => continue,
                Err(failure) => synapse.fail(&failure.to_string()),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// Kills the Synapse process (its data stays; [`Synapse::restart`] brings it back).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Killing is fine: SQLite is transactional, and tests never need a graceful drain.
            child.kill().await.expect("kill Synapse");
        }
    }

    /// Stops Synapse as a service manager does (SIGTERM, then SIGKILL if
    /// it has not exited within 30 s). A killed Synapse can lose the
    /// appservice delivery of events it had just accepted; a restart should
    /// not.
    pub async fn shut_down(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        child.kill().await.expect("kill Synapse");
    }

    /// Starts the process again on the same port and data, after stopping
    /// it as a service manager does ([`Synapse::shut_down`]).
    pub async fn restart(&mut self) {
        self.shut_down().await;
        if let Err(failure) = self.launch().await {
            self.fail(&failure.to_string());
        }
    }

    /// `http://127.0.0.1:<port>` — the client-server API base URL.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn server_name(&self) -> &str {
        &self.opts.server_name
    }

    /// `@<localpart>:<server_name>`.
    pub fn user_id(&self, localpart: &str) -> OwnedUserId {
        let raw = format!("@{localpart}:{}", self.opts.server_name);
        OwnedUserId::try_from(raw.as_str())
            .unwrap_or_else(|err| panic!("invalid user id {raw}: {err}"))
    }

    /// The temp dir holding config, database and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("homeserver.log")
    }

    /// The last lines of Synapse's log and stderr, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["homeserver.log", "stderr.log"] {
            let path = self.dir.path().join(name);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            let _ = writeln!(out, "--- last lines of {} ---", path.display());
            for line in &lines[start..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    /// Registers a (non-admin) user through the shared-secret admin API and
    /// returns its user id and an access token.
    pub async fn register_user(&self, localpart: &str, password: &str) -> (OwnedUserId, String) {
        self.register(localpart, password, false).await
    }

    /// Like [`Synapse::register_user`], but the user is a server admin.
    pub async fn register_admin(&self, localpart: &str, password: &str) -> (OwnedUserId, String) {
        self.register(localpart, password, true).await
    }

    async fn register(
        &self,
        localpart: &str,
        password: &str,
        admin: bool,
    ) -> (OwnedUserId, String) {
        let url = format!("{}/_synapse/admin/v1/register", self.base_url());
        let nonce: serde_json::Value = self.json_ok(self.http.get(&url), "GET nonce").await;
        let nonce = nonce["nonce"]
            .as_str()
            .unwrap_or_else(|| panic!("no nonce in {nonce}"))
            .to_owned();

        // Synapse's documented MAC: HMAC-SHA1 over NUL-separated fields.
        let mut mac = Hmac::<Sha1>::new_from_slice(self.shared_secret.as_bytes())
            .expect("HMAC accepts any key length");
        mac.update(nonce.as_bytes());
        mac.update(b"\0");
        mac.update(localpart.as_bytes());
        mac.update(b"\0");
        mac.update(password.as_bytes());
        mac.update(b"\0");
        mac.update(if admin { b"admin" } else { b"notadmin" });
        let digest = mac
            .finalize()
            .into_bytes()
            .iter()
            .fold(String::new(), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            });

        let body = serde_json::json!({
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": digest,
        });
        let resp: serde_json::Value = self
            .json_ok(self.http.post(&url).json(&body), "POST register")
            .await;
        let user_id = resp["user_id"]
            .as_str()
            .and_then(|raw| OwnedUserId::try_from(raw).ok())
            .unwrap_or_else(|| panic!("register {localpart}: no valid user_id in {resp}"));
        let token = resp["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("register {localpart}: no access_token in {resp}"))
            .to_owned();
        (user_id, token)
    }

    async fn json_ok(&self, req: reqwest::RequestBuilder, what: &str) -> serde_json::Value {
        let resp = req
            .send()
            .await
            .unwrap_or_else(|err| panic!("Synapse {what}: {err}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "Synapse {what}: HTTP {status}: {text}");
        serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("Synapse {what}: bad JSON ({err}): {text}"))
    }

    fn fail(&self, why: &str) -> ! {
        panic!(
            "Synapse at {} failed: {why}\n{}",
            self.base_url(),
            self.log_tail()
        )
    }

    /// Files that do not depend on the port: signing key and logging config.
    fn write_static_files(&self) {
        let dir = self.dir.path();
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let seed = base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed);
        write(
            &dir.join("signing.key"),
            &format!("ed25519 a_test {seed}\n"),
        );
        write(
            &dir.join("log.yaml"),
            &format!(
                "version: 1\n\
                 formatters:\n  precise:\n    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'\n\
                 handlers:\n  file:\n    class: logging.FileHandler\n    formatter: precise\n    filename: {log}\n    encoding: utf8\n\
                 root:\n  level: INFO\n  handlers: [file]\n\
                 disable_existing_loggers: false\n",
                log = yaml_str(&dir.join("homeserver.log").to_string_lossy()),
            ),
        );
    }

    fn write_config(&self) {
        let dir = self.dir.path();
        let path = |name: &str| yaml_str(&dir.join(name).to_string_lossy());
        let appservices = self
            .opts
            .appservice_registrations
            .iter()
            .map(|p| {
                let abs = std::path::absolute(p)
                    .unwrap_or_else(|err| panic!("registration path {}: {err}", p.display()));
                yaml_str(&abs.to_string_lossy())
            })
            .collect::<Vec<_>>()
            .join(", ");
        let unlimited = "{per_second: 1000, burst_count: 1000}";
        let config = format!(
            "server_name: {server_name}\n\
             public_baseurl: http://127.0.0.1:{port}/\n\
             pid_file: {pid}\n\
             listeners:\n  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: false\n    x_forwarded: false\n    resources:\n      - names: [client, openid]\n        compress: false\n\
             database:\n  name: sqlite3\n  args:\n    database: {db}\n\
             log_config: {log_config}\n\
             media_store_path: {media}\n\
             signing_key_path: {signing_key}\n\
             registration_shared_secret: {secret}\n\
             macaroon_secret_key: {macaroon}\n\
             form_secret: {form}\n\
             report_stats: false\n\
             enable_metrics: false\n\
             trusted_key_servers: []\n\
             suppress_key_server_warning: true\n\
             presence:\n  enabled: false\n\
             app_service_config_files: [{appservices}]\n\
             rc_message: {unlimited}\n\
             rc_registration: {unlimited}\n\
             rc_registration_token_validity: {unlimited}\n\
             rc_login:\n  address: {unlimited}\n  account: {unlimited}\n  failed_attempts: {unlimited}\n\
             rc_admin_redaction: {unlimited}\n\
             rc_joins:\n  local: {unlimited}\n  remote: {unlimited}\n\
             rc_joins_per_room: {unlimited}\n\
             rc_3pid_validation: {unlimited}\n\
             rc_invites:\n  per_room: {unlimited}\n  per_user: {unlimited}\n  per_issuer: {unlimited}\n\
             rc_third_party_invite: {unlimited}\n\
             rc_media_create: {unlimited}\n\
             rc_presence:\n  per_user: {unlimited}\n\
             rc_delayed_event_mgmt: {unlimited}\n\
             rc_room_creation: {unlimited}\n\
             rc_reports: {unlimited}\n\
             {extra}\n",
            server_name = yaml_str(&self.opts.server_name),
            port = self.port,
            pid = path("homeserver.pid"),
            db = path("homeserver.db"),
            log_config = path("log.yaml"),
            media = path("media_store"),
            signing_key = path("signing.key"),
            secret = yaml_str(&self.shared_secret),
            macaroon = yaml_str(&random_secret()),
            form = yaml_str(&random_secret()),
            extra = self.opts.extra_yaml,
        );
        write(&dir.join("homeserver.yaml"), &config);
    }

    /// Spawns the process and waits until it answers; on failure the child is gone.
    async fn launch(&mut self) -> Result<(), Failure> {
        let dir = self.dir.path();
        let stderr = std::fs::File::create(dir.join("stderr.log")).expect("create stderr.log");
        let child = Command::new(self.venv.join("bin/python"))
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(dir.join("homeserver.yaml"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("dup stderr.log"))
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}/bin/python: {err}", self.venv.display()));
        self.child = Some(child);

        let url = format!("{}/_matrix/client/versions", self.base_url());
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = self.log_tail();
                return Err(if log.contains("Address already in use") {
                    Failure::PortTaken
                } else {
                    Failure::Exited(status.to_string())
                });
            }
            let probe = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop().await;
                return Err(Failure::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // kill_on_drop would do this too, but only once the Child is dropped,
            // which happens after TempDir removed the directory under Synapse's feet.
            let _ = child.start_kill();
        }
    }
}

#[derive(Debug)]
enum Failure {
    PortTaken,
    Exited(String),
    Timeout,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::PortTaken => write!(f, "port already in use"),
            Failure::Exited(status) => write!(f, "process exited early ({status})"),
            Failure::Timeout => write!(
                f,
                "no answer on /_matrix/client/versions within {START_DEADLINE:?}"
            ),
        }
    }
}

/// The venv made by `scripts/synapse-venv`.
fn venv_path() -> PathBuf {
    let venv = std::env::var_os("MAXBRIDGE_SYNAPSE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/synapse-venv"));
    assert!(
        venv.join("bin/python").is_file(),
        "no Synapse venv at {} — run scripts/synapse-venv first \
         (or set MAXBRIDGE_SYNAPSE_VENV to an existing one)",
        venv.display()
    );
    venv
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|addr| addr.port())
        .expect("pick a free loopback port")
}

fn random_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A double-quoted YAML scalar (JSON strings are valid YAML).
fn yaml_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
}
