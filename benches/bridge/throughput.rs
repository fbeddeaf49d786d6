//! Throughput and latency against the null homeserver: one login with a
//! dialog per contact, bursts of messages over 1, 20 and 100 portals each
//! way (messages per second, bridge CPU and database transactions per
//! message), then messages one at a time each way (the latency the bridge
//! adds, p50 and p99).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use maxbridge::store::Store;
use maxsim::{Control, Outgoing, SimConfig, Simulator};
use serde_json::json;

use crate::env::{
    BenchDb, BridgeProcess, DEADLINE, dialog_with, login_account, postgres_cpu, process_stats,
    quantile, save_login, wait_until,
};
use crate::null_hs::NullHomeserver;

/// Portals of the benchmark account (dialogs with as many contacts).
const PORTALS: usize = 100;
const BENCH_TOKEN: &str = "bench-token";
/// Idle time before a reading of the database's statistics: a backend
/// that could not publish them at once (another held the lock) tries again
/// ten seconds later.
const STATS_SETTLE: Duration = Duration::from_secs(11);
/// Messages sent one at a time, each way, for the latency figures.
const LATENCY_SAMPLES: usize = 500;

pub async fn run(full: bool, messages: usize) {
    let mut db = BenchDb::create("null").await;
    // MAX: the benchmark account and one dialog per contact.
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let control = sim.control().clone();
    let me = login_account(&control, None, "Bench", BENCH_TOKEN);
    let portal_count = if full { PORTALS } else { 5 };
    let contacts: Vec<(i64, i64)> = (0..portal_count)
        .map(|n| dialog_with(&control, me, None, &format!("Contact {n}")))
        .collect();

    let (hs, files) = NullHomeserver::start_for_bridge(&db.url, &sim.ws_url()).await;
    let store = Store::connect(&db.url, 2).await.expect("store");
    save_login(&store, "@bench:bench", me, BENCH_TOKEN).await;

    let bridge = BridgeProcess::spawn(&files);
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
    let ready = bridge.started.elapsed();

    let mut bench = Bench {
        control,
        hs,
        bridge: &bridge,
        appservice: files.appservice.clone(),
        hs_token: files.hs_token.clone(),
        http: reqwest::Client::new(),
        db: &mut db,
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
    let idle = bridge.stats();

    println!(
        "start to ready: {:.2} s ({} portals); RSS idle {:.1} MiB",
        ready.as_secs_f64(),
        portal_count.min(39),
        idle.rss_mib()
    );
    // Latency first, while the simulator's chats are short (its change
    // watch scans them).
    let samples = if full { LATENCY_SAMPLES } else { 20 };
    // The next round reads its own start.
    bench.last = None;
    let mut to_matrix = bench.max_to_matrix_latency(samples).await;
    let mut to_max = bench.matrix_to_max_latency(samples).await;
    for (way, samples) in [
        ("MAX → Matrix", &mut to_matrix),
        ("Matrix → MAX", &mut to_max),
    ] {
        println!(
            "{way:<13} one at a time, {} messages: latency p50 {:.2} ms, p99 {:.2} ms",
            samples.len(),
            ms(quantile(samples, 0.5)),
            ms(quantile(samples, 0.99)),
        );
    }
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
    let end = bridge.stats();
    println!(
        "RSS peak {:.1} MiB; bridge CPU in all {:.2} s",
        end.peak_mib(),
        end.cpu.as_secs_f64()
    );

    drop(bridge);
    store.close().await;
    db.drop().await;
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Bench<'a> {
    control: Control,
    hs: Arc<NullHomeserver>,
    bridge: &'a BridgeProcess,
    appservice: String,
    hs_token: String,
    http: reqwest::Client,
    db: &'a mut BenchDb,
    me: i64,
    /// Per portal: the contact on the other side, the chat and its room.
    portals: Vec<(i64, i64, String)>,
    txn: u64,
    /// Wait for the database's statistics (the full run only).
    settle: Duration,
    /// The last reading, which starts the next round.
    last: Option<Reading>,
}

/// CPU times and the database's transaction count at one moment.
#[derive(Clone, Copy)]
struct Reading {
    bridge: Duration,
    /// This process: the simulator and the null homeserver (and the
    /// benchmark's own sending and counting).
    own: Duration,
    /// Every process of the machine's PostgreSQL server.
    postgres: Duration,
    transactions: u64,
}

/// One measured round.
struct Round {
    messages: usize,
    elapsed: Duration,
    cpu: Duration,
    own_cpu: Duration,
    postgres_cpu: Duration,
    transactions: u64,
    /// Requests the bridge made of the homeserver.
    requests: u64,
}

impl Round {
    fn print(&self, way: &str, portals: usize) {
        let rate = self.messages as f64 / self.elapsed.as_secs_f64();
        let cpu = self.cpu.as_micros() as f64 / self.messages as f64;
        let xact = self.transactions as f64 / self.messages as f64;
        let requests = self.requests as f64 / self.messages as f64;
        let per_message = |d: Duration| d.as_micros() as f64 / self.messages as f64;
        println!(
            "{way:<13} portals={portals:<4} messages={:<6} {rate:>9.0} msg/s  bridge CPU {cpu:>7.0} µs/msg  db {xact:>5.2} transactions/msg  homeserver {requests:.2} requests/msg",
            self.messages
        );
        println!(
            "{:<13} CPU of the rest per message: simulator + null homeserver {:.0} µs, PostgreSQL {:.0} µs",
            "",
            per_message(self.own_cpu),
            per_message(self.postgres_cpu),
        );
    }
}

impl Bench<'_> {
    async fn max_to_matrix(&mut self, portals: usize, total: usize) -> Round {
        let per_portal = (total / portals).max(1);
        let sent_before = self.hs.messages_sent.load(Ordering::Relaxed);
        let before = self.readings().await;
        let requests = self.requests();
        let start = Instant::now();
        for n in 0..per_portal {
            for (contact, chat, _) in &self.portals[..portals] {
                self.control
                    .send(*contact, *chat, Outgoing::text(format!("bench {n}")))
                    .expect("contact sends");
            }
        }
        let expected = sent_before + (per_portal * portals) as u64;
        let hs = Arc::clone(&self.hs);
        wait_until("messages on the null homeserver", || {
            hs.messages_sent.load(Ordering::Relaxed) >= expected
        })
        .await;
        self.finish(start, per_portal * portals, before, requests)
            .await
    }

    async fn matrix_to_max(&mut self, portals: usize, total: usize) -> Round {
        let per_portal = (total / portals).max(1);
        let counts_before = self.sent_on_max(portals);
        let before = self.readings().await;
        let requests = self.requests();
        let start = Instant::now();
        // As Synapse does: one transaction at a time, up to 50 events each.
        let mut events = Vec::new();
        for n in 0..per_portal {
            for p in 0..portals {
                events.push(self.matrix_event(p, format!("to max {n}")));
            }
        }
        for chunk in events.chunks(50) {
            self.put_transaction(chunk).await;
        }
        let expected = counts_before + (per_portal * portals);
        let deadline = Instant::now() + DEADLINE;
        while self.sent_on_max(portals) < expected {
            assert!(Instant::now() < deadline, "timed out waiting for MAX");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.finish(start, per_portal * portals, before, requests)
            .await
    }

    /// Sends `samples` messages in the first portal, each once the one
    /// before has reached the null homeserver; their times from the
    /// simulator to the homeserver.
    async fn max_to_matrix_latency(&mut self, samples: usize) -> Vec<Duration> {
        let (contact, chat, _) = self.portals[0].clone();
        let mut times = Vec::with_capacity(samples);
        for n in 0..samples {
            let expected = self.hs.messages_sent.load(Ordering::Relaxed) + 1;
            let start = Instant::now();
            self.control
                .send(contact, chat, Outgoing::text(format!("latency {n}")))
                .expect("contact sends");
            let deadline = start + DEADLINE;
            loop {
                let arrived = self.hs.message_arrived.notified();
                tokio::pin!(arrived);
                arrived.as_mut().enable();
                if self.hs.messages_sent.load(Ordering::Relaxed) >= expected {
                    break;
                }
                tokio::time::timeout_at(deadline.into(), arrived)
                    .await
                    .expect("the message reaches the null homeserver");
            }
            times.push(start.elapsed());
        }
        times
    }

    /// Hands the bridge `samples` Matrix events in the first portal, one
    /// transaction each and each once the one before is on MAX; their times
    /// from the transaction to the simulator.
    async fn matrix_to_max_latency(&mut self, samples: usize) -> Vec<Duration> {
        let me = self.me;
        let mut times = Vec::with_capacity(samples);
        for n in 0..samples {
            let text = format!("latency to max {n}");
            let event = self.matrix_event(0, text.clone());
            let start = Instant::now();
            self.put_transaction(&[event]).await;
            self.control
                .wait_for_message(DEADLINE, |m| m.sender == Some(me) && m.text == text)
                .await
                .expect("the message reaches MAX");
            times.push(start.elapsed());
        }
        times
    }

    /// A text message of the benchmark's Matrix user in portal `p`.
    fn matrix_event(&mut self, p: usize, body: String) -> serde_json::Value {
        self.txn += 1;
        json!({
            "type": "m.room.message",
            "room_id": self.portals[p].2,
            "event_id": format!("$bench{}", self.txn),
            "sender": "@bench:bench",
            "origin_server_ts": 1_700_000_000_000u64 + self.txn,
            "content": {"msgtype": "m.text", "body": body},
        })
    }

    async fn put_transaction(&mut self, events: &[serde_json::Value]) {
        self.txn += 1;
        let response = self
            .http
            .put(format!(
                "{}/_matrix/app/v1/transactions/bench{}",
                self.appservice, self.txn
            ))
            .bearer_auth(&self.hs_token)
            .json(&json!({ "events": events }))
            .send()
            .await
            .expect("transaction");
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// The round that started at `start` with readings `before`.
    async fn finish(
        &mut self,
        start: Instant,
        messages: usize,
        before: Reading,
        requests_before: u64,
    ) -> Round {
        let elapsed = start.elapsed();
        let end = self.end_readings().await;
        Round {
            messages,
            elapsed,
            cpu: end.bridge.saturating_sub(before.bridge),
            own_cpu: end.own.saturating_sub(before.own),
            postgres_cpu: end.postgres.saturating_sub(before.postgres),
            transactions: end.transactions.saturating_sub(before.transactions),
            requests: self.requests().saturating_sub(requests_before),
        }
    }

    fn requests(&self) -> u64 {
        self.hs.counter.load(Ordering::Relaxed)
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
    async fn readings(&mut self) -> Reading {
        if let Some(last) = self.last.take() {
            return last;
        }
        tokio::time::sleep(self.settle).await;
        let xact = self.db.transactions().await;
        Reading {
            bridge: self.bridge.stats().cpu,
            own: process_stats(std::process::id()).cpu,
            postgres: postgres_cpu(),
            transactions: xact.saturating_sub(1),
        }
    }

    /// A round's end reading, kept to start the next round.
    async fn end_readings(&mut self) -> Reading {
        let reading = self.readings().await;
        self.last = Some(reading);
        reading
    }
}
