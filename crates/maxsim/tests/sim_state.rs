//! The state file: a simulator restarted from it (in process after a
//! graceful stop or a drop, and the `maxsim` binary after SIGTERM or
//! SIGKILL) has every account, token, chat, message, reaction and cid of
//! the previous run, and hands out larger message ids.

mod sim_support;

use maxproto::Cmd;
use maxsim::fixture_ids::*;
use maxsim::{
    AccountInfo, ChatInfo, ChatKind, NewAccount, Outgoing, SimConfig, SimError, SimHandle,
    SimMessage, UploadKind,
};
use serde_json::{Value, json};
use sim_support::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::Instant;

const THUMBS_UP: &str = "\u{1f44d}";
/// Bound on each wait for the binary (start, exit).
const DEADLINE: Duration = Duration::from_secs(20);

/// A fresh directory for one test's state file.
fn state_path(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "sim-state-{test}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir.join("state.json")
}

/// Remove a passed test's directory (a failed one keeps it to look at).
fn cleanup(path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn config(path: &Path) -> SimConfig {
    SimConfig {
        state_file: Some(path.to_path_buf()),
        ..SimConfig::default()
    }
}

fn send_payload(chat: i64, text: &str, cid: i64) -> Value {
    json!({"chatId": chat, "message": {"text": text, "cid": cid, "elements": [], "attaches": []}, "notify": true})
}

/// Every message of every chat of these accounts, as stored.
fn all_messages(sim: &SimHandle, accounts: &[i64]) -> Vec<SimMessage> {
    let c = sim.control();
    let mut out = Vec::new();
    for &a in accounts {
        for chat in c.chats(a).unwrap() {
            if chat.id != 0 && out.iter().any(|m: &SimMessage| m.chat_id == chat.id) {
                continue;
            }
            out.extend(c.messages(a, chat.id).unwrap());
        }
    }
    out
}

/// Accounts without what depends on the run: live connections and the
/// simulator's own URL.
fn accounts_sans_run(sim: &SimHandle) -> Vec<AccountInfo> {
    sim.control()
        .accounts()
        .into_iter()
        .map(|mut a| {
            if let Some(url) = &a.avatar_url {
                assert!(url.starts_with(&sim.http_url()), "{url} is not rebased");
                a.avatar_url = Some(url[sim.http_url().len()..].to_owned());
            }
            a.connections = 0;
            a
        })
        .collect()
}

fn chats_sans_run(sim: &SimHandle, account: i64) -> Vec<ChatInfo> {
    sim.control()
        .chats(account)
        .unwrap()
        .into_iter()
        .map(|mut c| {
            if let Some(url) = &c.icon_url {
                assert!(url.starts_with(&sim.http_url()), "{url} is not rebased");
                c.icon_url = Some(url[sim.http_url().len()..].to_owned());
            }
            c
        })
        .collect()
}

#[tokio::test]
async fn everything_survives_a_graceful_restart() {
    let path = state_path("graceful");
    let sim = start_with(config(&path)).await;
    assert!(path.is_file(), "the file exists from the start");
    let c = sim.control();

    let carol = c
        .create_account(NewAccount {
            first_name: "Carol".into(),
            phone: Some(79_000_000_077),
            ..NewAccount::default()
        })
        .unwrap();
    let group = c
        .create_chat(ALICE, ChatKind::Chat, "Persisted group", &[BORIS, carol.id])
        .unwrap();
    let kept = c
        .send(ALICE, DIALOG_ALICE_BORIS, Outgoing::text("kept"))
        .unwrap();
    let edited = c
        .send(ALICE, DIALOG_ALICE_BORIS, Outgoing::text("before edit"))
        .unwrap();
    c.edit(
        ALICE,
        DIALOG_ALICE_BORIS,
        edited.id,
        "after edit",
        Some(vec![json!({"type": "STRONG", "from": 0, "length": 5})]),
    )
    .unwrap();
    let removed = c
        .send(ALICE, DIALOG_ALICE_BORIS, Outgoing::text("removed"))
        .unwrap();
    c.delete(ALICE, DIALOG_ALICE_BORIS, &[removed.id], false)
        .unwrap();
    let hidden = c
        .send(
            BORIS,
            DIALOG_ALICE_BORIS,
            Outgoing::text("hidden for Alice"),
        )
        .unwrap();
    c.delete(ALICE, DIALOG_ALICE_BORIS, &[hidden.id], true)
        .unwrap();
    c.react(BORIS, DIALOG_ALICE_BORIS, kept.id, Some(THUMBS_UP))
        .unwrap();
    c.mark_read(BORIS, DIALOG_ALICE_BORIS, kept.id).unwrap();
    let attach = c
        .upload(
            ALICE,
            UploadKind::File,
            "a.bin",
            "application/x-test",
            vec![1u8, 2, 3],
        )
        .unwrap();
    let file_id = attach["fileId"].as_i64().unwrap();
    c.send(
        ALICE,
        group,
        Outgoing {
            text: "with a file".into(),
            attaches: vec![attach],
            ..Outgoing::default()
        },
    )
    .unwrap();
    // A send with a cid over the protocol, and a token revoked.
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let with_cid = alice
        .ok(64, send_payload(TEST_GROUP, "with cid", 555))
        .await;
    c.revoke_token(BORIS_TOKEN);

    let messages = all_messages(&sim, &[ALICE, BORIS, carol.id, TRANSFERBOT]);
    let accounts = accounts_sans_run(&sim);
    let alice_chats = chats_sans_run(&sim, ALICE);
    let max_id = messages.iter().map(|m| m.id).max().unwrap();
    drop(alice);
    sim.shutdown().await;

    let sim = start_with(config(&path)).await;
    let c = sim.control();
    assert_eq!(
        all_messages(&sim, &[ALICE, BORIS, carol.id, TRANSFERBOT]),
        messages
    );
    assert_eq!(accounts_sans_run(&sim), accounts);
    assert_eq!(chats_sans_run(&sim, ALICE), alice_chats);
    // Spot checks of what the comparison above covers.
    let stored = c.message(edited.id).unwrap();
    assert_eq!(
        (stored.text.as_str(), stored.status.as_deref()),
        ("after edit", Some("EDITED"))
    );
    assert_eq!(
        c.message(removed.id).unwrap().status.as_deref(),
        Some("REMOVED")
    );
    assert_eq!(c.message(hidden.id).unwrap().hidden_for, vec![ALICE]);
    assert_eq!(
        c.message(kept.id)
            .unwrap()
            .reactions
            .get(&BORIS)
            .map(String::as_str),
        Some(THUMBS_UP)
    );
    assert_eq!(
        c.media(file_id),
        Some((vec![1u8, 2, 3].into(), "application/x-test".to_owned()))
    );

    // Tokens: the revoked one stays revoked, the created account's works.
    let mut boris = Client::connect(&sim).await;
    boris.init().await;
    let refused = boris.login(BORIS_TOKEN).await;
    assert_eq!(refused.cmd, Cmd::Error);
    assert_eq!(refused.payload["message"], "FAIL_LOGIN_TOKEN");
    Client::logged_in(&sim, &carol.tokens[0]).await;

    // The cid table survived: the same send returns the original message.
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let again = alice
        .ok(64, send_payload(TEST_GROUP, "with cid", 555))
        .await;
    assert_eq!(again["message"]["id"], with_cid["message"]["id"]);
    let copies = c.messages(ALICE, TEST_GROUP).unwrap();
    assert_eq!(copies.iter().filter(|m| m.text == "with cid").count(), 1);

    // History over the protocol shows the restored chat.
    let history = alice
        .ok(49, json!({"chatId": DIALOG_ALICE_BORIS, "from": i64::MAX / 2, "forward": 0, "backward": 50}))
        .await;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert!(texts.ends_with(&["kept", "after edit"]), "{texts:?}");

    // New ids are larger than every stored one, in old and new chats.
    let next = c
        .send(ALICE, DIALOG_ALICE_BORIS, Outgoing::text("after restart"))
        .unwrap();
    assert!(next.id > max_id);
    let sent = alice.ok(64, send_payload(group, "new in group", 556)).await;
    assert!(msg_id(&sent["message"]) > next.id);
    let newer_group = c
        .create_chat(ALICE, ChatKind::Chat, "Another group", &[BORIS])
        .unwrap();
    assert_ne!(newer_group, group);
    sim.shutdown().await;
    cleanup(&path);
}

#[tokio::test]
async fn dropping_the_handle_writes_the_state() {
    let path = state_path("drop");
    let sim = start_with(config(&path)).await;
    let sent = sim
        .control()
        .send(ALICE, 0, Outgoing::text("saved before the drop"))
        .unwrap();
    drop(sim);
    let sim = start_with(config(&path)).await;
    let stored = sim.control().message(sent.id).expect("message restored");
    assert_eq!(stored.text, "saved before the drop");
    assert_eq!(stored.saved_of, Some(ALICE));
    drop(sim);
    cleanup(&path);
}

#[tokio::test]
async fn the_state_file_wins_over_the_fixture_and_a_broken_one_fails_the_start() {
    let path = state_path("precedence");
    let sim = start_with(config(&path)).await;
    let carol = sim
        .control()
        .create_account(NewAccount {
            first_name: "Carol".into(),
            ..NewAccount::default()
        })
        .unwrap();
    sim.shutdown().await;
    let sim = start_with(SimConfig {
        fixture: maxsim::Fixture::empty(),
        ..config(&path)
    })
    .await;
    assert!(sim.control().account(carol.id).is_some());
    assert!(sim.control().account(ALICE).is_some());
    sim.shutdown().await;

    std::fs::write(&path, "{not json").unwrap();
    match maxsim::Simulator::start(config(&path)).await {
        Err(SimError::StateFile { path: p, .. }) => assert_eq!(p, path),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a broken state file must not be replaced by the fixture"),
    }
    cleanup(&path);
}

// ------------------------------------------------------------ the binary

/// A `maxsim serve` process and its HTTP base URL.
struct Proc {
    child: Child,
    http: String,
    _stdout: BufReader<ChildStdout>,
}

async fn spawn_binary(path: &Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_maxsim"))
        .args(["serve", "--bind", "127.0.0.1:0", "--state"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn maxsim");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(DEADLINE, stdout.read_line(&mut line))
        .await
        .expect("maxsim announces itself in time")
        .expect("read maxsim stdout");
    // "MAX simulator: WebSocket ws://… HTTP http://…"
    let http = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Proc {
        child,
        http,
        _stdout: stdout,
    }
}

impl Proc {
    async fn post(&self, path: &str, body: Value) -> Value {
        let resp = reqwest::Client::new()
            .post(format!("{}/_sim/{path}", self.http))
            .json(&body)
            .send()
            .await
            .expect("control API answers");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.expect("JSON answer")
    }

    async fn messages(&self, account: i64, chat: i64) -> Vec<SimMessage> {
        reqwest::get(format!(
            "{}/_sim/messages?account={account}&chatId={chat}",
            self.http
        ))
        .await
        .expect("control API answers")
        .json()
        .await
        .expect("messages")
    }

    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    async fn exit_within(mut self, deadline: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(deadline, self.child.wait())
            .await
            .expect("maxsim exits in time")
            .expect("wait for maxsim")
    }
}

/// Send, edit, delete and react through the HTTP control API; returns the
/// moment of the last change.
async fn make_changes(p: &Proc, tag: &str) -> Instant {
    let send = |text: String| {
        p.post(
            "send",
            json!({"account": ALICE, "chatId": DIALOG_ALICE_BORIS, "text": text}),
        )
    };
    let a: SimMessage = serde_json::from_value(send(format!("{tag} one")).await).unwrap();
    let b: SimMessage = serde_json::from_value(send(format!("{tag} two")).await).unwrap();
    let c: SimMessage = serde_json::from_value(send(format!("{tag} three")).await).unwrap();
    p.post(
        "edit",
        json!({"account": ALICE, "chatId": DIALOG_ALICE_BORIS, "messageId": b.id, "text": format!("{tag} two edited")}),
    )
    .await;
    p.post(
        "delete",
        json!({"account": ALICE, "chatId": DIALOG_ALICE_BORIS, "messageIds": [c.id], "forMe": false}),
    )
    .await;
    p.post(
        "react",
        json!({"account": BORIS, "chatId": DIALOG_ALICE_BORIS, "messageId": a.id, "reaction": THUMBS_UP}),
    )
    .await;
    Instant::now()
}

fn check_changes(stored: &[SimMessage], tag: &str) {
    let find = |text: String| {
        stored
            .iter()
            .find(|m| m.text == text)
            .unwrap_or_else(|| panic!("{text:?} missing"))
    };
    let one = find(format!("{tag} one"));
    assert_eq!(
        one.reactions.get(&BORIS).map(String::as_str),
        Some(THUMBS_UP)
    );
    assert_eq!(
        find(format!("{tag} two edited")).status.as_deref(),
        Some("EDITED")
    );
    assert_eq!(
        find(format!("{tag} three")).status.as_deref(),
        Some("REMOVED")
    );
}

#[cfg(unix)]
#[tokio::test]
async fn the_binary_keeps_its_state_across_sigkill() {
    let path = state_path("sigkill");
    let p = spawn_binary(&path).await;
    let last_change = make_changes(&p, "kill").await;
    let before = p.messages(ALICE, DIALOG_ALICE_BORIS).await;
    check_changes(&before, "kill");
    // The scenario under test: killed without warning 200 ms after the
    // last change (the file may lag at most ~50 ms behind).
    tokio::time::sleep_until(last_change + Duration::from_millis(200)).await;
    p.kill().await;

    let p = spawn_binary(&path).await;
    let after = p.messages(ALICE, DIALOG_ALICE_BORIS).await;
    assert_eq!(after, before);
    let max_id = after.iter().map(|m| m.id).max().unwrap();
    let next: SimMessage = serde_json::from_value(
        p.post(
            "send",
            json!({"account": BORIS, "chatId": DIALOG_ALICE_BORIS, "text": "after the kill"}),
        )
        .await,
    )
    .unwrap();
    assert!(next.id > max_id, "new ids stay larger than stored ones");
    p.kill().await;
    cleanup(&path);
}

#[cfg(unix)]
#[tokio::test]
async fn the_binary_writes_its_state_on_sigterm() {
    let path = state_path("sigterm");
    let p = spawn_binary(&path).await;
    make_changes(&p, "term").await;
    let before = p.messages(ALICE, DIALOG_ALICE_BORIS).await;
    // Stop right away: the final write must carry the last change.
    let pid = p.child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = p.exit_within(DEADLINE).await;
    assert!(exit.success(), "graceful exit, got {exit}");

    let p = spawn_binary(&path).await;
    let after = p.messages(ALICE, DIALOG_ALICE_BORIS).await;
    assert_eq!(after, before);
    check_changes(&after, "term");
    p.kill().await;
    cleanup(&path);
}
