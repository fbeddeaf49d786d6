//! Through a real Synapse (`--synapse`): the bridge's message rates each
//! way as ratios to what Synapse itself does in the same run.
//!
//! - MAX → Matrix against Synapse's *raw appservice send rate*: the
//!   benchmark itself sends as the appservice (each portal's ghost), one
//!   request in flight per room, rooms concurrent.
//! - Matrix → MAX against the *human's send rate*: the Matrix user sends
//!   through the client API the same way; the bridge's rate is counted
//!   until the last message is on MAX.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use maxbridge::config::Config;
use maxbridge::store::Store;
use maxsim::{Control, Outgoing, SimConfig, Simulator};
use serde_json::json;

use crate::env::{
    BenchDb, BridgeFiles, BridgeProcess, DEADLINE, dialog_with, login_account, save_login,
};
use crate::synapse::{Synapse, SynapseOptions};

const BENCH_TOKEN: &str = "bench-token";

/// One portal: the contact on the other side, the chat, its room and the
/// contact's ghost.
struct Portal {
    contact: i64,
    chat: i64,
    room: String,
    ghost: String,
}

pub async fn run(full: bool, messages: usize) {
    let portal_count = if full { 20 } else { 3 };
    let mut db = BenchDb::create("synapse").await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let control = sim.control().clone();
    let me = login_account(&control, None, "Bench", BENCH_TOKEN);
    let chats: Vec<(i64, i64)> = (0..portal_count)
        .map(|n| dialog_with(&control, me, None, &format!("Contact {n}")))
        .collect();

    // Synapse reads the registration at start; the bridge learns
    // Synapse's address once it runs.
    let files = BridgeFiles::write("http://127.0.0.1:1", "localhost", &db.url, &sim.ws_url());
    let synapse = Synapse::start(SynapseOptions::with_appservice(&files.registration_path)).await;
    files.set_homeserver(&synapse.base_url());
    let config = Config::load(&files.config_path).expect("config loads");
    let (human, human_token) = synapse.register_user("bench", "bench-password").await;
    let store = Store::connect(&db.url, 2).await.expect("store");
    save_login(&store, human.as_str(), me, BENCH_TOKEN).await;

    let bridge = BridgeProcess::spawn(&files);
    let http = reqwest::Client::new();
    let base = synapse.base_url();
    // Every chat is in the LOGIN answer, so every portal is made at start;
    // the human accepts each invite.
    let deadline = Instant::now() + DEADLINE;
    let rooms = loop {
        let rooms: Vec<(i64, String)> = store
            .portals()
            .for_receiver(me)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| Some((p.chat_id, p.room_id?)))
            .collect();
        if rooms.len() >= portal_count {
            break rooms;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge never made its portals"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut portals = Vec::new();
    for (contact, chat) in chats {
        let room = rooms
            .iter()
            .find(|(c, _)| *c == chat)
            .map(|(_, room)| room.clone())
            .expect("every chat has a room");
        join(&http, &base, &human_token, &room).await;
        portals.push(Portal {
            contact,
            chat,
            room,
            ghost: config.ghost_user_id(contact),
        });
    }
    println!(
        "maxbridge benchmark: bridge process ↔ Synapse (SQLite), simulator, PostgreSQL; ready {:.2} s",
        bridge.started.elapsed().as_secs_f64()
    );

    let mut bench = Bench {
        control,
        db: &mut db,
        http,
        base,
        as_token: files.as_token.clone(),
        human_token,
        me,
        portals,
        txn: 0,
    };
    let sizes: Vec<usize> = if full { vec![1, 20] } else { vec![1, 3] };
    for &n in &sizes {
        let per_portal = (messages / n).max(1);
        // Synapse's rate drifts as its database grows: its rounds come
        // before and after the bridge's, which is compared with both.
        let raw = bench.raw_appservice(n, per_portal, false).await;
        let bridged = bench.max_to_matrix(n, per_portal).await;
        let raw_ts = bench.raw_appservice(n, per_portal, true).await;
        println!(
            "MAX → Matrix  portals={n:<3} messages={:<5} Synapse raw {raw:>4.0} msg/s before, {raw_ts:>4.0} after (with ?ts=)  bridge {bridged:>4.0} msg/s  ratio {:.2}",
            n * per_portal,
            2.0 * bridged / (raw + raw_ts),
        );
    }
    for &n in &sizes {
        let per_portal = (messages / n).max(1);
        let (human, bridged) = bench.matrix_to_max(n, per_portal).await;
        println!(
            "Matrix → MAX  portals={n:<3} messages={:<5} human sends {human:>6.0} msg/s  bridge {bridged:>6.0} msg/s  ratio {:.2}",
            n * per_portal,
            bridged / human
        );
    }
    let stats = bridge.stats();
    println!(
        "RSS peak {:.1} MiB; bridge CPU in all {:.2} s",
        stats.peak_mib(),
        stats.cpu.as_secs_f64()
    );
    drop(bridge);
    drop(synapse);
    store.close().await;
    db.drop().await;
}

/// Joins `room` once the bridge's invite is there.
async fn join(http: &reqwest::Client, base: &str, token: &str, room: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let response = http
            .post(format!("{base}/_matrix/client/v3/join/{room}"))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .await
            .expect("join request");
        if response.status().is_success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cannot join {room}: {}",
            response.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Bench<'a> {
    control: Control,
    db: &'a mut BenchDb,
    http: reqwest::Client,
    base: String,
    as_token: String,
    human_token: String,
    me: i64,
    portals: Vec<Portal>,
    txn: u64,
}

impl Bench<'_> {
    /// Synapse's own rate: the benchmark sends as each room's ghost, one
    /// request in flight per room, rooms concurrent; `with_ts` sets each
    /// event's time as the bridge does (`?ts=`, the MAX time).
    async fn raw_appservice(&mut self, n: usize, per_portal: usize, with_ts: bool) -> f64 {
        let start = Instant::now();
        let token = self.as_token.clone();
        self.send_in_rooms(n, per_portal, |http, url, portal, id| {
            // A ghost's id needs no escaping in a query.
            let ghost = &portal.ghost;
            http.put(match with_ts {
                true => format!("{url}/raw{id}?user_id={ghost}&ts={}", now_ms()),
                false => format!("{url}/raw{id}?user_id={ghost}"),
            })
            .bearer_auth(&token)
        })
        .await;
        (n * per_portal) as f64 / start.elapsed().as_secs_f64()
    }

    /// Sends `per_portal` text messages in each of the first `n` rooms, one
    /// request in flight per room, rooms concurrent; `request` makes the
    /// request from the room's send URL, its portal and a transaction id.
    async fn send_in_rooms(
        &mut self,
        n: usize,
        per_portal: usize,
        request: impl Fn(&reqwest::Client, &str, &Portal, u64) -> reqwest::RequestBuilder,
    ) {
        let txn = self.txn;
        self.txn += (n * per_portal) as u64;
        let request = &request;
        join_all(self.portals[..n].iter().enumerate().map(|(p, portal)| {
            let url = format!(
                "{}/_matrix/client/v3/rooms/{}/send/m.room.message",
                self.base, portal.room
            );
            let http = &self.http;
            async move {
                for m in 0..per_portal {
                    let id = txn + (p * per_portal + m) as u64;
                    send(request(http, &url, portal, id), format!("message {m}")).await;
                }
            }
        }))
        .await;
    }

    /// The bridge's rate: MAX contacts send in every chat at once; done
    /// when the bridge has recorded every message as sent to Synapse.
    async fn max_to_matrix(&mut self, n: usize, per_portal: usize) -> f64 {
        let before = self.db.count("SELECT count(*) FROM messages").await;
        let start = Instant::now();
        for m in 0..per_portal {
            for portal in &self.portals[..n] {
                self.control
                    .send(
                        portal.contact,
                        portal.chat,
                        Outgoing::text(format!("bench {m}")),
                    )
                    .expect("contact sends");
            }
        }
        let expected = before + (n * per_portal) as i64;
        let deadline = start + DEADLINE;
        while self.db.count("SELECT count(*) FROM messages").await < expected {
            assert!(Instant::now() < deadline, "timed out waiting for Synapse");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (n * per_portal) as f64 / start.elapsed().as_secs_f64()
    }

    /// The human's send rate (one request in flight per room, rooms
    /// concurrent) and the bridge's, until the last message is on MAX.
    async fn matrix_to_max(&mut self, n: usize, per_portal: usize) -> (f64, f64) {
        let before = self.sent_on_max(n);
        let start = Instant::now();
        let token = self.human_token.clone();
        self.send_in_rooms(n, per_portal, |http, url, _, id| {
            http.put(format!("{url}/human{id}")).bearer_auth(&token)
        })
        .await;
        let sent = start.elapsed();
        let expected = before + n * per_portal;
        let deadline = start + DEADLINE;
        while self.sent_on_max(n) < expected {
            assert!(Instant::now() < deadline, "timed out waiting for MAX");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let total = (n * per_portal) as f64;
        (
            total / sent.as_secs_f64(),
            total / start.elapsed().as_secs_f64(),
        )
    }

    /// Messages the benchmark account has sent in its first `n` chats.
    fn sent_on_max(&self, n: usize) -> usize {
        self.portals[..n]
            .iter()
            .map(|portal| {
                self.control
                    .messages(self.me, portal.chat)
                    .map(|m| m.iter().filter(|m| m.sender == Some(self.me)).count())
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// Sends one text message with a prepared request; panics unless Synapse
/// accepts it.
async fn send(request: reqwest::RequestBuilder, body: String) {
    let response = request
        .json(&json!({"msgtype": "m.text", "body": body}))
        .send()
        .await
        .expect("send to Synapse");
    assert!(
        response.status().is_success(),
        "Synapse refused a send: {}",
        response.text().await.unwrap_or_default()
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
