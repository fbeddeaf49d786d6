//! The quick start as a new user runs it: `scripts/quickstart` brings up
//! Synapse, the simulator and the bridge on SQLite (no database server), and
//! the steps its banner prints work: log in as alice, open a chat with the
//! bot, log in to MAX, a portal appears, and a message sent with the
//! simulator's CLI arrives. Ctrl-C stops everything.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use maxsim::fixture_ids;
use ruma::OwnedUserId;
use support::human::Human;
use tokio::time::Instant;

/// A first run may install Synapse into its venv.
const START_BOUND: Duration = Duration::from_secs(600);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The directory of the binaries this test run built.
fn bin_dir() -> PathBuf {
    let bridge = Path::new(env!("CARGO_BIN_EXE_maxbridge"));
    let dir = bridge.parent().expect("a directory").to_owned();
    assert!(
        dir.join("maxsim").exists(),
        "the simulator's binary is not beside {}: build it (cargo build -p maxsim) or run the \
         whole suite (scripts/test)",
        bridge.display()
    );
    dir
}

/// Kills a process group when dropped (a failing test included).
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_runs_on_sqlite_and_its_steps_work() {
    let state = tempfile::tempdir().expect("a state directory");
    let (synapse_port, maxsim_port, bridge_port) = (free_port(), free_port(), free_port());
    let bin = bin_dir();
    let output = state.path().join("quickstart.out");
    let out = std::fs::File::create(&output).expect("output file");
    let mut script = tokio::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/quickstart"),
    );
    script
        .env("QUICKSTART_STATE", state.path())
        .env("QUICKSTART_BIN", &bin)
        .env("SYNAPSE_PORT", synapse_port.to_string())
        .env("MAXSIM_PORT", maxsim_port.to_string())
        .env("BRIDGE_PORT", bridge_port.to_string())
        // Its own process group, as a terminal's foreground job.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("output file"))
        .stderr(out)
        .kill_on_drop(true);
    let mut child = script.spawn().expect("scripts/quickstart starts");
    let group = child.id().expect("a running script") as i32;
    // Whatever happens below, nothing it started outlives the test.
    let _cleanup = KillGroup(group);
    let read = || std::fs::read_to_string(&output).unwrap_or_default();

    let deadline = Instant::now() + START_BOUND;
    while !read().contains("bridge running") {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the quick start ended ({status}):\n{}", read());
        }
        assert!(
            Instant::now() < deadline,
            "the bridge did not start:\n{}",
            read()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let shown = read();
    assert!(
        shown.contains("database ready") && shown.contains("sqlite"),
        "{shown}"
    );
    assert!(state.path().join("maxbridge.db").exists());

    // The banner's steps.
    let homeserver = format!("http://127.0.0.1:{synapse_port}");
    let human = Human::login_at(&homeserver, "alice", "alice-password").await;
    let bot: OwnedUserId = "@maxbot:localhost".try_into().expect("bot id");
    let management = human.create_dm(&bot).await;
    let from_bot = |expect: &'static str| {
        let bot = bot.clone();
        move |m: &support::human::Message| m.sender == bot && m.body.contains(expect)
    };
    human
        .wait_for_message(&management, from_bot("Send `login`"))
        .await;
    for (say, expect) in [
        ("login", "phone number"),
        ("+79000000001", "code"),
        ("000001", "Logged in to MAX"),
    ] {
        let earlier: Vec<_> = human
            .messages(&management)
            .into_iter()
            .map(|m| m.event_id)
            .collect();
        human.send_text(&management, say).await;
        let answer = from_bot(expect);
        human
            .wait_for_message(&management, |m| answer(m) && !earlier.contains(&m.event_id))
            .await;
    }
    // Boris's direct chat (the ghost naming is the default config's).
    let boris: OwnedUserId = format!("@max_{}:localhost", fixture_ids::BORIS)
        .try_into()
        .expect("Boris's ghost");
    let invite = human
        .wait_for_invite(|i| i.inviter.as_ref() == Some(&boris))
        .await;
    human.join(&invite.room_id).await;
    let sent = std::process::Command::new(bin.join("maxsim"))
        .args(["ctl", "--url", &format!("http://127.0.0.1:{maxsim_port}")])
        .args(["send", &fixture_ids::BORIS.to_string()])
        .args([&fixture_ids::DIALOG_ALICE_BORIS.to_string(), "Привет!"])
        .output()
        .expect("maxsim ctl runs");
    assert!(sent.status.success(), "{sent:?}");
    human.wait_for_text(&invite.room_id, "Привет!").await;

    // Ctrl-C (to the whole foreground group, as a terminal sends it) stops
    // everything it started.
    let signalled = std::process::Command::new("kill")
        .args(["-s", "INT", "--", &format!("-{group}")])
        .status()
        .expect("kill runs");
    assert!(signalled.success(), "the quick start's group is signalled");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the quick start stops on Ctrl-C")
        .expect("its status");
    let deadline = Instant::now() + Duration::from_secs(30);
    while [synapse_port, maxsim_port, bridge_port]
        .iter()
        .any(|port| answers(*port))
    {
        assert!(
            Instant::now() < deadline,
            "still listening after Ctrl-C ({status}):\n{}",
            read()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
