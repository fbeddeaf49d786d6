//! Memory and start-up at scale: many logins, each with dialogs and groups
//! full of distinct members (so the bridge knows as many ghosts), against
//! the null homeserver. Prints the time to ready and RSS on a first start
//! (every portal and ghost made) and after a restart (every login resumed
//! and caught up).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use maxbridge::store::Store;
use maxsim::{ChatKind, NewAccount, Outgoing, SimConfig, Simulator};

use crate::env::{
    BenchDb, BridgeProcess, DEADLINE, dialog_with, login_account, postgres_cpu, process_stats,
    save_login, wait_until,
};
use crate::null_hs::NullHomeserver;

/// The shape of the scenario.
struct Shape {
    logins: usize,
    dialogs: usize,
    groups: usize,
    /// Members of each group besides the login, all distinct.
    members: usize,
}

impl Shape {
    fn portals(&self) -> usize {
        self.logins * (self.dialogs + self.groups)
    }

    fn ghosts(&self) -> usize {
        self.logins * (self.dialogs + self.groups * self.members)
    }
}

/// Account ids chosen so that no two dialogs share an id (a dialog's id
/// is the XOR of its two users' ids; the simulator keys dialogs by it):
/// login ids fill the low 21 bits, contact ids only the bits above.
fn login_id(login: usize) -> i64 {
    1_000_000 + login as i64
}

fn contact_id(contact: usize) -> i64 {
    (contact as i64 + 1) << 21
}

/// How long the bridge is left idle before its idle RSS is read.
const IDLE: Duration = Duration::from_secs(2);

pub async fn run(full: bool) {
    // 100 logins × (5 dialogs + 5 groups of 19 others): 1,000 portals and
    // 10,000 ghosts.
    let shape = if full {
        Shape {
            logins: 100,
            dialogs: 5,
            groups: 5,
            members: 19,
        }
    } else {
        Shape {
            logins: 3,
            dialogs: 2,
            groups: 2,
            members: 3,
        }
    };
    let mut db = BenchDb::create("scale").await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let control = sim.control().clone();
    let (hs, files) = NullHomeserver::start_for_bridge(&db.url, &sim.ws_url()).await;
    let store = Store::connect(&db.url, 2).await.expect("store");

    // Per login: its MAX account and its first dialog (contact, chat).
    let mut logins = Vec::new();
    for l in 0..shape.logins {
        let token = format!("scale-token-{l}");
        let me = login_account(&control, Some(login_id(l)), &format!("User {l}"), &token);
        let dialogs: Vec<(i64, i64)> = (0..shape.dialogs)
            .map(|d| {
                let id = contact_id(l * shape.dialogs + d);
                dialog_with(&control, me, Some(id), &format!("Contact {l}.{d}"))
            })
            .collect();
        for g in 0..shape.groups {
            let members: Vec<i64> = (0..shape.members)
                .map(|m| {
                    control
                        .create_account(NewAccount {
                            first_name: format!("Member {l}.{g}.{m}"),
                            ..NewAccount::default()
                        })
                        .expect("member")
                        .id
                })
                .collect();
            control
                .create_chat(me, ChatKind::Chat, &format!("Group {l}.{g}"), &members)
                .expect("group");
        }
        save_login(&store, &format!("@user{l}:bench"), me, &token).await;
        logins.push((me, *dialogs.first().expect("a dialog per login")));
    }

    println!(
        "scale: {} logins, {} portals, {} ghosts",
        shape.logins,
        shape.portals(),
        shape.ghosts()
    );

    // First start: every portal and ghost is made.
    let before = Rest::now(&hs);
    let bridge = BridgeProcess::spawn(&files);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let portals = db
            .count("SELECT count(*) FROM portals WHERE room_id IS NOT NULL")
            .await;
        let ghosts = db.count("SELECT count(*) FROM ghosts WHERE name_set").await;
        if portals >= shape.portals() as i64 && ghosts >= shape.ghosts() as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "first start never got ready: {portals} portals, {ghosts} named ghosts"
        );
        // Not much more often: each look counts 10,000 rows, CPU that
        // PostgreSQL would otherwise give the bridge.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rest = Rest::now(&hs).since(&before);
    report("first start:", &bridge).await;
    rest.print(shape.ghosts());
    let kinds: Vec<String> = hs
        .kinds()
        .into_iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    println!(
        "{:<12} homeserver requests by kind: {}",
        "",
        kinds.join(", ")
    );
    drop(bridge);

    // While the bridge is down, a message in every login's first dialog;
    // ready again once each has been caught up.
    for (_, (contact, chat)) in &logins {
        control
            .send(*contact, *chat, Outgoing::text("while the bridge was down"))
            .expect("contact sends");
    }
    let expected = hs.messages_sent.load(Ordering::Relaxed) + logins.len() as u64;
    let bridge = BridgeProcess::spawn(&files);
    wait_until("every login caught up after the restart", || {
        hs.messages_sent.load(Ordering::Relaxed) >= expected
            && logins
                .iter()
                .all(|(me, _)| control.connection_count(*me) > 0)
    })
    .await;
    report("restart:", &bridge).await;
    drop(bridge);
    store.close().await;
    db.drop().await;
}

/// What the rest of the machine did meanwhile: a first start's floor is
/// their CPU time over the two cores, whatever the bridge costs.
struct Rest {
    /// This process: the simulator and the null homeserver.
    own: Duration,
    postgres: Duration,
    requests: u64,
}

impl Rest {
    fn now(hs: &NullHomeserver) -> Rest {
        Rest {
            own: process_stats(std::process::id()).cpu,
            postgres: postgres_cpu(),
            requests: hs.counter.load(Ordering::Relaxed),
        }
    }

    fn since(&self, before: &Rest) -> Rest {
        Rest {
            own: self.own.saturating_sub(before.own),
            postgres: self.postgres.saturating_sub(before.postgres),
            requests: self.requests - before.requests,
        }
    }

    fn print(&self, ghosts: usize) {
        println!(
            "{:<12} rest of the machine meanwhile: simulator + null homeserver CPU {:.2} s, PostgreSQL CPU {:.2} s; {} homeserver requests ({:.2} per ghost)",
            "",
            self.own.as_secs_f64(),
            self.postgres.as_secs_f64(),
            self.requests,
            self.requests as f64 / ghosts.max(1) as f64
        );
    }
}

/// Prints the time to ready (now) and RSS at ready and after idling.
async fn report(what: &str, bridge: &BridgeProcess) {
    let ready = bridge.started.elapsed();
    let at_ready = bridge.stats();
    tokio::time::sleep(IDLE).await;
    let idle = bridge.stats();
    println!(
        "{what:<12} ready {:.2} s (bridge CPU {:.2} s); RSS at ready {:.1} MiB, idle {:.1} MiB, peak {:.1} MiB",
        ready.as_secs_f64(),
        at_ready.cpu.as_secs_f64(),
        at_ready.rss_mib(),
        idle.rss_mib(),
        idle.peak_mib()
    );
}
