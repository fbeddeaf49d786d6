//! The bridge's benchmark: the `maxbridge` binary (as its own process, so
//! its CPU and memory are its own) between the MAX simulator and a built-in
//! *null homeserver* that answers every call at once, on a throwaway
//! PostgreSQL database. Prints messages per second each way for 1, 20 and
//! 100 busy portals, the bridge's CPU time and database transactions per
//! message, its RSS idle and at peak, and its time from start to ready.
//!
//! `cargo bench -p maxbridge --bench bridge` runs it in full; under
//! `cargo test` (no `--bench` argument) it runs a small smoke round, so the
//! suite proves it works. `--messages N` scales the rounds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use maxbridge::config::{Config, generate_registration};
use maxbridge::store::{LoginRow, Store};
use maxsim::{ChatKind, Control, NewAccount, Outgoing, SimConfig, Simulator};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// How long any one wait of the benchmark may take.
const DEADLINE: Duration = Duration::from_secs(300);
/// Portals of the benchmark account (dialogs with as many contacts).
const PORTALS: usize = 100;
const BENCH_TOKEN: &str = "bench-token";
/// Idle time before a reading of the database's statistics: a backend
/// that could not publish them at once (another held the lock) tries again
/// ten seconds later.
const STATS_SETTLE: Duration = Duration::from_secs(11);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let messages = args
        .iter()
        .position(|a| a == "--messages")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(if full { 2000 } else { 20 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(full, messages));
}

/// What the null homeserver has been asked, for the benchmark to wait on.
#[derive(Default)]
struct NullHomeserver {
    counter: AtomicU64,
    messages_sent: AtomicU64,
}

async fn null_homeserver(
    State(hs): State<Arc<NullHomeserver>>,
    method: Method,
    uri: Uri,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path();
    let n = hs.counter.fetch_add(1, Ordering::Relaxed);
    let answer = if path.ends_with("/versions") {
        json!({"versions": ["v1.11", "v1.12"], "unstable_features": {}})
    } else if path.contains("/appservice/") && path.ends_with("/ping") {
        json!({"duration_ms": 0})
    } else if path.ends_with("/register") {
        let body: Value = serde_json::from_slice(&body).unwrap_or_default();
        let name = body["username"].as_str().unwrap_or("x");
        json!({"user_id": format!("@{name}:bench")})
    } else if path.ends_with("/createRoom") {
        json!({"room_id": format!("!room{n}:bench")})
    } else if path.contains("/send/") {
        if path.contains("/send/m.room.message/") {
            hs.messages_sent.fetch_add(1, Ordering::Relaxed);
        }
        json!({"event_id": format!("$event{n}")})
    } else if path.contains("/state/") && method == Method::GET {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"errcode": "M_NOT_FOUND", "error": "no state"})),
        )
            .into_response();
    } else if path.contains("/state/") || path.contains("/redact/") {
        json!({"event_id": format!("$event{n}")})
    } else if path.ends_with("/join") || path.contains("/join/") {
        let room = path
            .split('/')
            .find(|s| s.starts_with('!') || s.starts_with("%21"))
            .unwrap_or("!x:bench");
        json!({"room_id": room.replace("%21", "!").replace("%3A", ":")})
    } else if path.contains("/media/") && path.ends_with("/upload") {
        json!({"content_uri": format!("mxc://bench/media{n}")})
    } else if path.ends_with("/messages") {
        json!({"chunk": [], "start": "s0"})
    } else {
        json!({})
    };
    axum::Json(answer).into_response()
}

/// CPU time (user + system) and RSS of a process, from /proc.
struct ProcessStats {
    cpu: Duration,
    rss_kib: u64,
    peak_kib: u64,
}

fn process_stats(pid: u32) -> ProcessStats {
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
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Transactions the database has committed or rolled back so far. The
/// server publishes them about once a second, so readings are taken after
/// the bridge has been idle that long.
async fn db_transactions(admin: &mut PgConnection, db: &str) -> u64 {
    let row: (i64,) = sqlx::query_as(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1",
    )
    .bind(db)
    .fetch_one(&mut *admin)
    .await
    .expect("pg_stat_database");
    row.0 as u64
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Bench {
    control: Control,
    hs: Arc<NullHomeserver>,
    bridge_pid: u32,
    appservice: String,
    hs_token: String,
    http: reqwest::Client,
    admin: PgConnection,
    db_name: String,
    me: i64,
    /// Per portal: the contact on the other side, the chat and its room.
    portals: Vec<(i64, i64, String)>,
    txn: u64,
    /// Wait for the database's statistics (the full run only).
    settle: Duration,
    /// The last reading, which starts the next round.
    last: Option<(Duration, u64)>,
}

/// One measured round.
struct Round {
    messages: usize,
    elapsed: Duration,
    cpu: Duration,
    transactions: u64,
}

impl Round {
    fn print(&self, way: &str, portals: usize) {
        let rate = self.messages as f64 / self.elapsed.as_secs_f64();
        let cpu = self.cpu.as_micros() as f64 / self.messages as f64;
        let xact = self.transactions as f64 / self.messages as f64;
        println!(
            "{way:<13} portals={portals:<4} messages={:<6} {rate:>9.0} msg/s  bridge CPU {cpu:>7.0} µs/msg  db {xact:>5.2} transactions/msg",
            self.messages
        );
    }
}

impl Bench {
    async fn max_to_matrix(&mut self, portals: usize, total: usize) -> Round {
        let per_portal = (total / portals).max(1);
        let before = self.hs.messages_sent.load(Ordering::Relaxed);
        let (cpu0, xact0) = self.readings().await;
        let start = Instant::now();
        for n in 0..per_portal {
            for (contact, chat, _) in &self.portals[..portals] {
                self.control
                    .send(*contact, *chat, Outgoing::text(format!("bench {n}")))
                    .expect("contact sends");
            }
        }
        let expected = before + (per_portal * portals) as u64;
        let hs = Arc::clone(&self.hs);
        wait_until("messages on the null homeserver", || {
            hs.messages_sent.load(Ordering::Relaxed) >= expected
        })
        .await;
        self.finish(start, per_portal * portals, (cpu0, xact0))
            .await
    }

    async fn matrix_to_max(&mut self, portals: usize, total: usize) -> Round {
        let per_portal = (total / portals).max(1);
        let counts_before = self.sent_on_max(portals);
        let (cpu0, xact0) = self.readings().await;
        let start = Instant::now();
        // As Synapse does: one transaction at a time, up to 50 events each.
        let mut events = Vec::new();
        for n in 0..per_portal {
            for (_, _, room) in &self.portals[..portals] {
                self.txn += 1;
                events.push(json!({
                    "type": "m.room.message",
                    "room_id": room,
                    "event_id": format!("$bench{}", self.txn),
                    "sender": "@bench:bench",
                    "origin_server_ts": 1_700_000_000_000u64 + self.txn,
                    "content": {"msgtype": "m.text", "body": format!("to max {n}")},
                }));
            }
        }
        for chunk in events.chunks(50) {
            self.txn += 1;
            let response = self
                .http
                .put(format!(
                    "{}/_matrix/app/v1/transactions/bench{}",
                    self.appservice, self.txn
                ))
                .bearer_auth(&self.hs_token)
                .json(&json!({"events": chunk}))
                .send()
                .await
                .expect("transaction");
            assert!(response.status().is_success(), "{}", response.status());
        }
        let expected = counts_before + (per_portal * portals);
        let deadline = Instant::now() + DEADLINE;
        while self.sent_on_max(portals) < expected {
            assert!(Instant::now() < deadline, "timed out waiting for MAX");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.finish(start, per_portal * portals, (cpu0, xact0))
            .await
    }

    /// The round that started at `start` with readings `before`.
    async fn finish(&mut self, start: Instant, messages: usize, before: (Duration, u64)) -> Round {
        let elapsed = start.elapsed();
        let (cpu, xact) = self.end_readings().await;
        Round {
            messages,
            elapsed,
            cpu: cpu.saturating_sub(before.0),
            transactions: xact.saturating_sub(before.1),
        }
    }

    /// Messages the benchmark account has in its first `portals` chats.
    fn sent_on_max(&self, portals: usize) -> usize {
        self.portals[..portals]
            .iter()
            .map(|(_, chat, _)| {
                self.control
                    .messages(self.me, *chat)
                    .map(|m| m.iter().filter(|m| m.sender == Some(self.me)).count())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// The bridge's CPU time and the database's transaction count, once
    /// both have settled (each backend publishes its statistics about a
    /// second after its last activity; each reading is itself one
    /// transaction, subtracted).
    async fn readings(&mut self) -> (Duration, u64) {
        if let Some(last) = self.last.take() {
            return last;
        }
        tokio::time::sleep(self.settle).await;
        let cpu = process_stats(self.bridge_pid).cpu;
        let xact = db_transactions(&mut self.admin, &self.db_name).await;
        (cpu, xact.saturating_sub(1))
    }

    /// A round's end reading, kept to start the next round.
    async fn end_readings(&mut self) -> (Duration, u64) {
        let reading = self.readings().await;
        self.last = Some(reading);
        reading
    }
}

async fn run(full: bool, messages: usize) {
    let admin_url = std::env::var("MAXBRIDGE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let db_name = format!("maxbridge_bench_{}", std::process::id());
    let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {admin_url} (scripts/pg-ensure starts one): {e}")
    });
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE \"{db_name}\"")))
        .await
        .expect("create the benchmark database");
    let mut db_url = url::Url::parse(&admin_url).expect("admin URL");
    db_url.set_path(&format!("/{db_name}"));

    // MAX: the benchmark account and one dialog per contact.
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let control = sim.control().clone();
    let me = control
        .create_account(NewAccount {
            first_name: "Bench".to_owned(),
            token: Some(BENCH_TOKEN.to_owned()),
            ..NewAccount::default()
        })
        .expect("bench account")
        .id;
    let portal_count = if full { PORTALS } else { 5 };
    let mut contacts = Vec::new();
    for n in 0..portal_count {
        let contact = control
            .create_account(NewAccount {
                first_name: format!("Contact {n}"),
                contacts: vec![me],
                ..NewAccount::default()
            })
            .expect("contact")
            .id;
        let chat = control
            .create_chat(contact, ChatKind::Dialog, "", &[me])
            .expect("dialog");
        contacts.push((contact, chat));
    }

    // The null homeserver.
    let hs = Arc::new(NullHomeserver::default());
    let app = axum::Router::new()
        .fallback(null_homeserver)
        .with_state(Arc::clone(&hs));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hs_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The bridge's files, and its login, saved as a resumed login would be.
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let registration = dir.path().join("registration.yaml");
    let config_path = dir.path().join("config.yaml");
    std::fs::write(
        &config_path,
        format!(
            r#"homeserver:
    address: http://{hs_addr}
    domain: bench
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
    endpoint: {ws}
    media:
        allow_networks: ["127.0.0.1/32"]
bridge:
    permissions:
        "*": user
logging:
    level: warn
"#,
            registration = registration.display(),
            ws = sim.ws_url(),
        ),
    )
    .expect("config");
    let config = Config::load(&config_path).expect("config loads");
    let generated = generate_registration(&config).expect("registration");
    generated.save(&registration).expect("registration saved");
    let hs_token = generated.hs_token.expose().to_owned();
    let store = Store::connect(db_url.as_str(), 2).await.expect("store");
    store
        .logins()
        .upsert(&LoginRow {
            mxid: "@bench:bench".to_owned(),
            max_user_id: me,
            token: maxproto::Token::new(BENCH_TOKEN),
            device_id: "bench-device".to_owned(),
            state: "connected".to_owned(),
            display_name: Some("Bench".to_owned()),
            phone: None,
        })
        .await
        .expect("login saved");

    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_maxbridge"))
        .arg("-c")
        .arg(&config_path)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start the bridge");
    let bridge_pid = child.id();
    // Ready: the login runs and the portals of its LOGIN answer exist.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let portals = store
            .portals()
            .for_receiver(me)
            .await
            .map(|p| p.iter().filter(|p| p.room_id.is_some()).count())
            .unwrap_or(0);
        // LOGIN names 40 chats at most, Saved Messages (no portal) among them.
        if portals >= portal_count.min(39) {
            break;
        }
        assert!(Instant::now() < deadline, "the bridge never got ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = started.elapsed();

    let mut bench = Bench {
        control,
        hs,
        bridge_pid,
        appservice: format!("http://127.0.0.1:{port}"),
        hs_token,
        http: reqwest::Client::new(),
        admin,
        db_name: db_name.clone(),
        me,
        portals: Vec::new(),
        txn: 0,
        settle: if full { STATS_SETTLE } else { Duration::ZERO },
        last: None,
    };
    // A first message in every chat makes every portal (LOGIN names 40
    // chats at most; the rest get theirs with their first message).
    bench.portals = contacts
        .iter()
        .map(|(contact, chat)| (*contact, *chat, String::new()))
        .collect();
    bench.max_to_matrix(portal_count, portal_count).await;
    let rooms: HashMap<i64, String> = store
        .portals()
        .for_receiver(me)
        .await
        .expect("portals")
        .into_iter()
        .filter_map(|p| Some((p.chat_id, p.room_id?)))
        .collect();
    for portal in &mut bench.portals {
        portal.2 = rooms
            .get(&portal.1)
            .cloned()
            .expect("every chat has a room");
    }
    let idle = process_stats(bridge_pid);

    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "maxbridge benchmark: bridge process ({profile} build) ↔ null homeserver, simulator, PostgreSQL"
    );
    println!(
        "start to ready: {:.2} s ({} portals); RSS idle {:.1} MiB",
        ready.as_secs_f64(),
        portal_count.min(39),
        idle.rss_kib as f64 / 1024.0
    );
    let sizes: Vec<usize> = [1, 20, 100]
        .into_iter()
        .filter(|&n| n <= portal_count)
        .chain((!full).then_some(portal_count))
        .collect();
    for &portals in &sizes {
        bench
            .max_to_matrix(portals, messages)
            .await
            .print("MAX → Matrix", portals);
    }
    for &portals in &sizes {
        bench
            .matrix_to_max(portals, messages)
            .await
            .print("Matrix → MAX", portals);
    }
    let end = process_stats(bridge_pid);
    println!(
        "RSS peak {:.1} MiB; bridge CPU in all {:.2} s",
        end.peak_kib as f64 / 1024.0,
        end.cpu.as_secs_f64()
    );

    let _ = child.kill();
    let _ = child.wait();
    store.close().await;
    let _ = bench
        .admin
        .execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
        )))
        .await;
}
