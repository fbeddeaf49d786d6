//! The fault suite: messages flow both ways through the real stack — Synapse,
//! PostgreSQL, the simulator and the `maxbridge` binary as a child process —
//! while something fails: the bridge is killed with SIGKILL, the MAX socket
//! drops, Synapse or PostgreSQL restarts, Synapse's transaction ids start
//! again from 1. Each test asserts that every message arrived exactly once
//! and in order, and that it did so within a bound after the last fault.
//!
//! Timing is random but seeded: the seed is printed (shown when a test
//! fails) and `MAXBRIDGE_FAULT_SEED=<n>` replays it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use maxsim::{Control, Outgoing, fixture_ids};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ruma::{OwnedRoomId, RoomId, UserId};
use support::bridge::{Env, EnvOptions};
use support::database::Backend;
use support::human::Human;
use support::pg::PgCluster;
use tokio::time::Instant;

/// How long recovery may go without delivering anything: slow is not lost
/// (a loaded machine's Synapse may take a second an event), a stall is.
/// Synapse retries a refused transaction after 2, 4, 8 … s, so a few faults
/// in a row can add up to half a minute on their own.
const RECOVERY_BOUND: Duration = Duration::from_secs(120);

/// Prefixes of the texts each way, so the checks see only the test traffic.
const TO_MATRIX: &str = "m2x";
const TO_MAX: &str = "x2m";

fn seed(test: &str) -> u64 {
    let seed = std::env::var("MAXBRIDGE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("{test}: MAXBRIDGE_FAULT_SEED={seed}");
    seed
}

/// A deployment with the bridge as a process, Alice logged in and her DM
/// with Boris joined.
struct Stage {
    env: Env,
    human: Arc<Human>,
    dm: OwnedRoomId,
    control: Control,
}

impl Stage {
    async fn new(options: EnvOptions) -> Stage {
        let env = Env::start_with_options(EnvOptions {
            process: true,
            ..options
        })
        .await;
        let (mut human, _management, dm) = env.alice_with_boris_dm("alice").await;
        human.set_wait_timeout(RECOVERY_BOUND);
        let control = env.sim.control().clone();
        Stage {
            env,
            human: Arc::new(human),
            dm,
            control,
        }
    }

    /// Starts `to_matrix` messages from Boris on MAX and `to_max` from the
    /// human on Matrix, each side at its own random pace.
    fn flow(&self, rng: &mut StdRng, to_matrix: usize, to_max: usize) -> Flow {
        let control = self.control.clone();
        let mut max_rng = StdRng::seed_from_u64(rng.random());
        let max_side = tokio::spawn(async move {
            let mut sent = Vec::with_capacity(to_matrix);
            for n in 0..to_matrix {
                let text = format!("{TO_MATRIX} {n:04}");
                control
                    .send(
                        fixture_ids::BORIS,
                        fixture_ids::DIALOG_ALICE_BORIS,
                        Outgoing::text(&text),
                    )
                    .expect("Boris sends");
                sent.push(text);
                tokio::time::sleep(Duration::from_millis(max_rng.random_range(5..40))).await;
            }
            sent
        });
        let human = Arc::clone(&self.human);
        let dm = self.dm.clone();
        let mut matrix_rng = StdRng::seed_from_u64(rng.random());
        let run: u32 = rng.random();
        let matrix_side = tokio::spawn(async move {
            let mut sent = Vec::with_capacity(to_max);
            for n in 0..to_max {
                let text = format!("{TO_MAX} {n:04}");
                let event = human
                    .send_text_until_accepted(&dm, &text, &format!("fault-{run}-{n}"))
                    .await;
                tracing::info!(%event, text, "the human sent");
                sent.push((text, event.to_string()));
                tokio::time::sleep(Duration::from_millis(matrix_rng.random_range(20..90))).await;
            }
            sent
        });
        Flow {
            max_side,
            matrix_side,
        }
    }

    /// Waits until both sides received everything sent, then checks that
    /// each message arrived once, in order, and that nobody was told of a
    /// failure. Returns how long it took from `since`.
    async fn assert_exactly_once(&self, sent: &Sent, since: Instant) -> Duration {
        let boris = self.env.ghost(fixture_ids::BORIS);
        // Waited for while they keep coming (see RECOVERY_BOUND).
        let mut progress = Progress::new();
        loop {
            let arrived = texts_from(&self.human, &self.dm, &boris).len();
            if arrived >= sent.to_matrix.len() {
                break;
            }
            if !progress.made(arrived) {
                // The homeserver's own count tells a message the bridge
                // never sent from one the human's sync did not show.
                let on_server = self
                    .human
                    .history_on_server(&self.dm, 10_000)
                    .await
                    .iter()
                    .filter(|e| {
                        e["sender"] == boris.as_str()
                            && e["content"]["body"]
                                .as_str()
                                .is_some_and(|b| b.starts_with(TO_MATRIX))
                    })
                    .count();
                panic!(
                    "only {arrived} of {} MAX messages reached Matrix, none for {RECOVERY_BOUND:?} (the homeserver holds {on_server}; the human's sync: {})\n--- bridge log ---\n{}",
                    sent.to_matrix.len(),
                    self.human.sync_report(),
                    self.env.bridge_log_tail(80)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let lost_by_homeserver = self.wait_on_max_or_homeserver_loss(sent).await;
        let recovered = since.elapsed();
        // A last message each way: anything doubled behind the others would
        // have come before it (each portal keeps its order).
        let end = format!("{TO_MATRIX} end");
        self.control
            .send(
                fixture_ids::BORIS,
                fixture_ids::DIALOG_ALICE_BORIS,
                Outgoing::text(&end),
            )
            .expect("Boris sends");
        self.human.wait_for_text(&self.dm, &end).await;
        self.human
            .send_text_until_accepted(&self.dm, &format!("{TO_MAX} end"), "fault-end")
            .await;
        wait_on_max(
            &self.control,
            sent.to_max.len() + 1 - lost_by_homeserver.len(),
            &self.env,
        )
        .await;

        let mut expected = sent.to_matrix.clone();
        expected.push(end);
        let arrived = texts_from(&self.human, &self.dm, &boris);
        assert_same(&arrived, &expected, "MAX → Matrix", &self.env);
        // The bridge keeps the order in which the homeserver delivers; Synapse
        // itself can deliver two transactions out of order around a failed
        // one (its recoverer resends the failed one after a later one went
        // through). That order is what MAX must show, and any difference from
        // the sending order must be the homeserver's.
        let delivered = delivery_order(&self.env.bridge_log());
        let position = |event: &str| {
            delivered
                .iter()
                .position(|e| e == event)
                .unwrap_or_else(|| panic!("{event} is nowhere in the bridge's log"))
        };
        let mut by_delivery: Vec<(String, String)> = sent
            .to_max
            .iter()
            .filter(|(_, event)| !lost_by_homeserver.contains(event))
            .cloned()
            .collect();
        by_delivery.sort_by_key(|(_, event)| position(event));
        let mut expected: Vec<String> = by_delivery.iter().map(|(text, _)| text.clone()).collect();
        expected.push(format!("{TO_MAX} end"));
        assert_same(
            &alice_on_max(&self.control),
            &expected,
            "Matrix → MAX",
            &self.env,
        );
        if !lost_by_homeserver.is_empty() {
            eprintln!(
                "the homeserver accepted and never delivered {lost_by_homeserver:?} \
                 (they are nowhere in the bridge's log)"
            );
        }
        let sent_in_order: Vec<&(String, String)> = sent
            .to_max
            .iter()
            .filter(|(_, event)| !lost_by_homeserver.contains(event))
            .collect();
        if by_delivery.iter().collect::<Vec<_>>() != sent_in_order {
            assert!(
                homeserver_reordered(&self.env.bridge_log()),
                "delivered out of sending order, yet the homeserver's transactions came in order"
            );
            eprintln!("the homeserver delivered out of sending order: {expected:?}");
        }

        let warnings: Vec<String> = self
            .human
            .messages(&self.dm)
            .into_iter()
            .filter(|m| m.sender == self.env.bot())
            .map(|m| m.body)
            .collect();
        assert!(
            warnings.is_empty(),
            "the bot warned in the portal: {warnings:?}"
        );
        recovered
    }
}

impl Stage {
    /// Waits until every Matrix message reached MAX, or until the only ones
    /// missing never reached the bridge at all: Synapse 1.163 can accept an
    /// event and never deliver it to any appservice when it restarts right
    /// then (seen: the event sits in an appservice transaction it never
    /// sends, its stream position already past it). Returns those event
    /// ids; anything else missing fails after the bound.
    async fn wait_on_max_or_homeserver_loss(&self, sent: &Sent) -> Vec<String> {
        let mut progress = Progress::new();
        // A transaction Synapse is still retrying is late, not lost: only
        // one still undelivered long after the last fault counts.
        let mut next_look = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = alice_on_max(&self.control);
            if seen.len() >= sent.to_max.len() {
                return Vec::new();
            }
            if Instant::now() >= next_look {
                next_look = Instant::now() + Duration::from_secs(2);
                let log = self.env.bridge_log();
                let missing: Vec<&(String, String)> = sent
                    .to_max
                    .iter()
                    .filter(|(text, _)| !seen.contains(text))
                    .collect();
                if missing
                    .iter()
                    .all(|(_, event)| !log.contains(event.as_str()))
                {
                    return missing.iter().map(|(_, event)| event.clone()).collect();
                }
            }
            assert!(
                progress.made(seen.len()),
                "only {} of {} Matrix messages reached MAX, none for {RECOVERY_BOUND:?}: {seen:?}\n--- bridge log ---\n{}",
                seen.len(),
                sent.to_max.len(),
                self.env.bridge_log_tail(80)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Flow {
    max_side: tokio::task::JoinHandle<Vec<String>>,
    matrix_side: tokio::task::JoinHandle<Vec<(String, String)>>,
}

impl Flow {
    fn running(&self) -> bool {
        !self.max_side.is_finished() || !self.matrix_side.is_finished()
    }

    async fn finish(self) -> Sent {
        Sent {
            to_matrix: self.max_side.await.expect("MAX side"),
            to_max: self.matrix_side.await.expect("Matrix side"),
        }
    }
}

/// What was sent each way, in order (Matrix events with their ids).
struct Sent {
    to_matrix: Vec<String>,
    to_max: Vec<(String, String)>,
}

/// The bridge's JSON log lines with this message, as their fields.
fn log_entries<'a>(log: &'a str, message: &'a str) -> impl Iterator<Item = serde_json::Value> + 'a {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(move |entry| entry["fields"]["message"] == message)
        .map(|entry| entry["fields"].clone())
}

/// Event ids in the order the bridge took them in: stored from a
/// transaction, resumed from the inbox after a restart, or seen again in a
/// redelivery (a `kill -9` can fall between storing an event and logging
/// it), each at its first mention.
fn delivery_order(log: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| {
            matches!(
                entry["fields"]["message"].as_str(),
                Some("event stored" | "event resumed" | "event delivered before; skipped")
            )
        })
        .filter_map(|entry| entry["fields"]["event_id"].as_str().map(str::to_owned))
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// Transaction ids of each homeserver run only grow; one lower than one
/// before it, while the bridge kept running or across a restart of the
/// bridge alone, is a transaction delivered out of order.
fn homeserver_reordered(log: &str) -> bool {
    let ids: Vec<u64> = log_entries(log, "transaction received")
        .filter_map(|fields| fields["txn_id"].as_str()?.parse().ok())
        .collect();
    ids.windows(2).any(|pair| pair[1] < pair[0])
}

fn texts_from(human: &Human, room: &RoomId, sender: &UserId) -> Vec<String> {
    human
        .messages(room)
        .into_iter()
        .filter(|m| m.sender == sender && m.body.starts_with(TO_MATRIX))
        .map(|m| m.body)
        .collect()
}

/// Alice's test messages in the dialog as MAX has them, in MAX's order.
fn alice_on_max(control: &Control) -> Vec<String> {
    let mut messages = control
        .messages(fixture_ids::ALICE, fixture_ids::DIALOG_ALICE_BORIS)
        .expect("dialog history");
    messages.sort_by_key(|m| m.id);
    messages
        .into_iter()
        .filter(|m| m.sender == Some(fixture_ids::ALICE) && m.text.starts_with(TO_MAX))
        .map(|m| m.text)
        .collect()
}

/// Whether a wait still makes progress: a count that grew within
/// [`RECOVERY_BOUND`].
struct Progress {
    count: usize,
    since: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            count: 0,
            since: Instant::now(),
        }
    }

    /// Takes the current count; false once it stood still too long.
    fn made(&mut self, count: usize) -> bool {
        if count > self.count {
            self.count = count;
            self.since = Instant::now();
        }
        self.since.elapsed() < RECOVERY_BOUND
    }
}

async fn wait_on_max(control: &Control, count: usize, env: &Env) {
    let mut progress = Progress::new();
    loop {
        let seen = alice_on_max(control);
        if seen.len() >= count {
            return;
        }
        assert!(
            progress.made(seen.len()),
            "only {} of {count} Matrix messages reached MAX, none for {RECOVERY_BOUND:?}: {seen:?}\n--- bridge log ---\n{}",
            seen.len(),
            env.bridge_log_tail(80)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Equal lists, or a failure that says what was lost, what doubled and
/// where the order broke.
fn assert_same(arrived: &[String], expected: &[String], way: &str, env: &Env) {
    if arrived == expected {
        return;
    }
    let lost: Vec<&String> = expected.iter().filter(|e| !arrived.contains(e)).collect();
    let mut seen = std::collections::HashSet::new();
    let doubled: Vec<&String> = arrived.iter().filter(|a| !seen.insert(*a)).collect();
    panic!(
        "{way}: {} expected, {} arrived; lost {lost:?}; doubled {doubled:?}; order: {arrived:?}\n--- bridge log ---\n{}",
        expected.len(),
        arrived.len(),
        env.bridge_log_tail(80)
    );
}

fn pause(rng: &mut StdRng, millis: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rng.random_range(millis))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_killed_repeatedly_while_messages_flow_both_ways() {
    killed_repeatedly("kill -9", Backend::Postgres).await;
}

/// The same on SQLite: what a commit there reported survives `kill -9`, as
/// with PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_on_sqlite_killed_repeatedly_while_messages_flow_both_ways() {
    killed_repeatedly("kill -9 sqlite", Backend::Sqlite).await;
}

async fn killed_repeatedly(name: &str, database: Backend) {
    let mut rng = StdRng::seed_from_u64(seed(name));
    let mut stage = Stage::new(EnvOptions {
        database,
        ..EnvOptions::default()
    })
    .await;
    let kind = match database {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    assert!(
        log_entries(&stage.env.bridge_log(), "database ready").any(|f| f["database"] == kind),
        "the bridge runs on {kind}"
    );
    let flow = stage.flow(&mut rng, 160, 60);
    let mut kills = 0;
    while kills < 4 && flow.running() {
        tokio::time::sleep(pause(&mut rng, 300..1500)).await;
        stage.env.kill_bridge().await;
        kills += 1;
        tokio::time::sleep(pause(&mut rng, 0..1000)).await;
        stage.env.start_bridge().await;
    }
    assert!(
        kills >= 2,
        "the flow ended before the bridge was killed twice"
    );
    let last_fault = Instant::now();
    let sent = flow.finish().await;
    let recovered = stage.assert_exactly_once(&sent, last_fault).await;
    eprintln!("{kills} kills; recovered in {recovered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_the_bridge_is_dead_arrive_after_restart() {
    let mut rng = StdRng::seed_from_u64(seed("down"));
    let mut stage = Stage::new(EnvOptions::default()).await;
    assert!(
        stage.env.health_check().await,
        "a running bridge is healthy"
    );
    // Under systemd (Type=notify, WatchdogSec=) it says it is ready, then
    // keeps feeding the watchdog.
    stage.env.wait_for_notification("READY=1", 1).await;
    stage.env.wait_for_notification("WATCHDOG=1", 2).await;
    stage.env.kill_bridge().await;
    assert!(!stage.env.health_check().await, "a dead one is not");
    // More than any LOGIN answer or first history page holds, both ways.
    let sent = stage.flow(&mut rng, 150, 8).finish().await;
    let started = Instant::now();
    stage.env.start_bridge().await;
    let recovered = stage.assert_exactly_once(&sent, started).await;
    eprintln!("caught up in {recovered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_socket_dropped_every_few_seconds() {
    let mut rng = StdRng::seed_from_u64(seed("drops"));
    let stage = Stage::new(EnvOptions::default()).await;
    let flow = stage.flow(&mut rng, 200, 60);
    let mut drops = 0;
    while flow.running() {
        tokio::time::sleep(pause(&mut rng, 500..2500)).await;
        drops += stage.control.drop_connections(Some(fixture_ids::ALICE));
    }
    assert!(drops >= 2, "dropped only {drops} connections");
    let last_fault = Instant::now();
    let sent = flow.finish().await;
    let recovered = stage.assert_exactly_once(&sent, last_fault).await;
    eprintln!("{drops} drops; recovered in {recovered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_restarted_mid_flow() {
    let mut rng = StdRng::seed_from_u64(seed("synapse"));
    let mut stage = Stage::new(EnvOptions::default()).await;
    let flow = stage.flow(&mut rng, 150, 50);
    for _ in 0..2 {
        tokio::time::sleep(pause(&mut rng, 500..2000)).await;
        stage.env.synapse.restart().await;
    }
    let last_fault = Instant::now();
    let sent = flow.finish().await;
    let recovered = stage.assert_exactly_once(&sent, last_fault).await;
    eprintln!("recovered in {recovered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_flow() {
    let mut rng = StdRng::seed_from_u64(seed("postgres"));
    let cluster = PgCluster::start();
    let stage = Stage::new(EnvOptions {
        pg_admin_url: Some(cluster.admin_url()),
        ..EnvOptions::default()
    })
    .await;
    let flow = stage.flow(&mut rng, 150, 50);
    for _ in 0..2 {
        tokio::time::sleep(pause(&mut rng, 300..1500)).await;
        cluster.stop();
        tokio::time::sleep(pause(&mut rng, 500..3000)).await;
        cluster.start_server();
    }
    let last_fault = Instant::now();
    let sent = flow.finish().await;
    let recovered = stage.assert_exactly_once(&sent, last_fault).await;
    eprintln!("recovered in {recovered:?}");
}

/// Synapse on SQLite numbers transactions from 1 again after an idle
/// restart: transaction ids seen before must not make the bridge deaf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_transaction_ids_start_again_from_one() {
    let mut rng = StdRng::seed_from_u64(seed("txn ids"));
    let mut stage = Stage::new(EnvOptions::default()).await;
    let mut sent = Sent {
        to_matrix: Vec::new(),
        to_max: Vec::new(),
    };
    let started = Instant::now();
    for round in 0..3 {
        if round > 0 {
            stage.env.synapse.restart().await;
        }
        let texts: Vec<String> = (0..10)
            .map(|n| format!("{TO_MAX} {round}-{n:02}"))
            .collect();
        for (n, text) in texts.iter().enumerate() {
            let event = stage
                .human
                .send_text_until_accepted(&stage.dm, text, &format!("txn-{round}-{n}"))
                .await;
            sent.to_max.push((text.clone(), event.to_string()));
            tokio::time::sleep(pause(&mut rng, 10..60)).await;
        }
        // Idle again only once all of this round went through.
        wait_on_max(&stage.control, sent.to_max.len(), &stage.env).await;
    }
    stage.assert_exactly_once(&sent, started).await;

    // The premise: some transaction id came twice, each time with new events.
    let mut ids = std::collections::HashMap::<String, usize>::new();
    for fields in log_entries(&stage.env.bridge_log(), "transaction received") {
        if let Some(id) = fields["txn_id"].as_str() {
            *ids.entry(id.to_owned()).or_default() += 1;
        }
    }
    assert!(
        ids.values().any(|&n| n > 1),
        "Synapse never reused a transaction id: {ids:?}"
    );
}
