//! What every scenario of the benchmark sets up the same way: a throwaway
//! PostgreSQL database, the bridge's config and registration, the bridge as
//! a child process, logins saved as a resumed login would find them, and
//! readings of a process's CPU time and memory from /proc.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use maxbridge::config::{Config, generate_registration};
use maxbridge::store::{LoginRow, Store};
use maxsim::{ChatKind, Control, NewAccount};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// How long any one wait of the benchmark may take.
pub const DEADLINE: Duration = Duration::from_secs(300);

/// A database of its own for one scenario, dropped by [`BenchDb::drop`].
pub struct BenchDb {
    /// A connection to the server's `postgres` database, for statistics
    /// and for dropping this one.
    admin: PgConnection,
    /// A connection to this database, for counting what the bridge wrote.
    own: PgConnection,
    pub name: String,
    pub url: String,
}

impl BenchDb {
    pub async fn create(tag: &str) -> BenchDb {
        let admin_url = std::env::var("MAXBRIDGE_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("maxbridge_bench_{tag}_{}", std::process::id());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin_url} (scripts/pg-ensure starts one): {e}")
        });
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .expect("create the benchmark database");
        let mut url = url::Url::parse(&admin_url).expect("admin URL");
        url.set_path(&format!("/{name}"));
        let own = PgConnection::connect(url.as_str())
            .await
            .expect("connect to the benchmark database");
        BenchDb {
            admin,
            own,
            name,
            url: url.to_string(),
        }
    }

    /// Transactions the database has committed or rolled back so far. The
    /// server publishes them about once a second, so readings are taken
    /// after the bridge has been idle that long.
    pub async fn transactions(&mut self) -> u64 {
        let row: (i64,) = sqlx::query_as(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1",
        )
        .bind(&self.name)
        .fetch_one(&mut self.admin)
        .await
        .expect("pg_stat_database");
        row.0 as u64
    }

    /// One number the bridge's tables hold, e.g. `SELECT count(*) FROM …`.
    pub async fn count(&mut self, sql: &'static str) -> i64 {
        let row: (i64,) = sqlx::query_as(sql)
            .fetch_one(&mut self.own)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.0
    }

    pub async fn drop(mut self) {
        let _ = self.own.close().await;
        let _ = self
            .admin
            .execute(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            )))
            .await;
    }
}

/// The bridge's config and registration in a temp dir.
pub struct BridgeFiles {
    _dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub registration_path: PathBuf,
    /// Where the bridge serves the appservice API.
    pub appservice: String,
    pub hs_token: String,
    pub as_token: String,
}

impl BridgeFiles {
    pub fn write(homeserver: &str, domain: &str, db_url: &str, max_ws: &str) -> BridgeFiles {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let registration_path = dir.path().join("registration.yaml");
        let config_path = dir.path().join("config.yaml");
        std::fs::write(
            &config_path,
            format!(
                r#"homeserver:
    address: {homeserver}
    domain: {domain}
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
    url: {db_url}
    max_connections: 10
max:
    endpoint: {max_ws}
    media:
        allow_networks: ["127.0.0.1/32"]
bridge:
    permissions:
        "*": user
# The runs measure the live path; history into new portals is its own cost.
backfill:
    max_initial_messages: 0
logging:
    level: warn
"#,
                registration = registration_path.display(),
            ),
        )
        .expect("config");
        let config = Config::load(&config_path).expect("config loads");
        let generated = generate_registration(&config).expect("registration");
        generated
            .save(&registration_path)
            .expect("registration saved");
        BridgeFiles {
            _dir: dir,
            config_path,
            registration_path,
            appservice: format!("http://127.0.0.1:{port}"),
            hs_token: generated.hs_token.expose().to_owned(),
            as_token: generated.as_token.expose().to_owned(),
        }
    }

    /// Points the bridge at a homeserver that runs only now (it had to read
    /// the registration first).
    pub fn set_homeserver(&self, address: &str) {
        let config = std::fs::read_to_string(&self.config_path).expect("config");
        let (head, rest) = config
            .split_once("\n")
            .expect("the homeserver section comes first");
        assert_eq!(head, "homeserver:");
        let (_, rest) = rest.split_once("\n").expect("its address comes next");
        std::fs::write(
            &self.config_path,
            format!("homeserver:\n    address: {address}\n{rest}"),
        )
        .expect("config rewritten");
    }
}

/// Saves a login as the bridge finds one it should resume at start.
pub async fn save_login(store: &Store, mxid: &str, max_user_id: i64, token: &str) {
    store
        .logins()
        .upsert(&LoginRow {
            mxid: mxid.to_owned(),
            max_user_id,
            token: maxproto::Token::new(token),
            device_id: format!("bench-device-{max_user_id}"),
            state: "connected".to_owned(),
            display_name: None,
            phone: None,
        })
        .await
        .expect("login saved");
}

/// The `maxbridge` binary as a child process, killed when dropped.
pub struct BridgeProcess {
    child: std::process::Child,
    pub started: Instant,
}

impl BridgeProcess {
    pub fn spawn(files: &BridgeFiles) -> BridgeProcess {
        let started = Instant::now();
        // A profiler may wrap the bridge (e.g. `heaptrack`); its figures
        // are then the wrapper's.
        let mut command = match std::env::var("MAXBRIDGE_BENCH_WRAPPER") {
            Ok(wrapper) => {
                let mut command = std::process::Command::new(wrapper);
                command.arg(env!("CARGO_BIN_EXE_maxbridge"));
                command
            }
            Err(_) => std::process::Command::new(env!("CARGO_BIN_EXE_maxbridge")),
        };
        let child = command
            .arg("-c")
            .arg(&files.config_path)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start the bridge");
        BridgeProcess { child, started }
    }

    pub fn stats(&self) -> ProcessStats {
        process_stats(self.child.id())
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) and RSS of a process, from /proc.
pub struct ProcessStats {
    pub cpu: Duration,
    pub rss_kib: u64,
    pub peak_kib: u64,
}

impl ProcessStats {
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    pub fn peak_mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

pub fn process_stats(pid: u32) -> ProcessStats {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ")".
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    let per_second = clock_ticks_per_second();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    ProcessStats {
        cpu: Duration::from_micros(ticks * 1_000_000 / per_second),
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
    }
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(ask_clock_ticks_per_second)
}

fn ask_clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Waits for a condition the benchmark can check without waiting itself.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The value at quantile `q` (0..=1) of unsorted samples.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// A MAX account logged in with `token`, as the benchmark's bridge user.
pub fn login_account(control: &Control, id: Option<i64>, name: &str, token: &str) -> i64 {
    control
        .create_account(NewAccount {
            id,
            first_name: name.to_owned(),
            token: Some(token.to_owned()),
            ..NewAccount::default()
        })
        .expect("login account")
        .id
}

/// A contact of `me` (with `id`, or the simulator's next) and their
/// dialog: (contact, chat).
pub fn dialog_with(control: &Control, me: i64, id: Option<i64>, name: &str) -> (i64, i64) {
    let contact = control
        .create_account(NewAccount {
            id,
            first_name: name.to_owned(),
            contacts: vec![me],
            ..NewAccount::default()
        })
        .expect("contact")
        .id;
    let chat = control
        .create_chat(contact, ChatKind::Dialog, "", &[me])
        .expect("dialog");
    (contact, chat)
}

/// CPU time of every process of the `postgres` user (the PostgreSQL
/// server: its backends, WAL writer, checkpointer…).
pub fn postgres_cpu() -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    let postgres_uid = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.first() == Some(&"postgres"))
                    .then(|| fields.get(2).and_then(|uid| uid.parse::<u32>().ok()))
                    .flatten()
            })
        });
    let Some(uid) = postgres_uid else {
        return Duration::ZERO;
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix("Uid:"))
                        .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok())
                })
                == Some(uid)
        })
        .map(|pid| process_stats(pid).cpu)
        .sum()
}
