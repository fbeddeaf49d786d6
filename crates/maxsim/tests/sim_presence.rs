//! Presence: interactive PINGs/LOGINs and connection ends drive online state,
//! 132 goes to contacts and chat co-members, and CONTACT_PRESENCE (35),
//! CHAT_MEMBERS (59), LOGIN and the control hook agree with it.

mod sim_support;

use maxproto::{Cmd, WireFormat};
use maxsim::fixture_ids::*;
use maxsim::{ControlError, NewAccount, SimHandle};
use serde_json::{Value, json};
use sim_support::*;

/// Connect and LOGIN like the web tab does: `interactive: false`.
async fn hidden_login(sim: &SimHandle, token: &str) -> (Client, Value) {
    let mut c = Client::connect(sim).await;
    c.init().await;
    let login = c
        .request(
            19,
            json!({"token": token, "chatsCount": 40, "interactive": false, "chatsSync": 0,
                   "contactsSync": 0, "presenceSync": -1, "draftsSync": 0}),
        )
        .await;
    assert_eq!(login.cmd, Cmd::Ok, "login failed: {}", login.payload);
    (c, login.payload)
}

fn about(user: i64, online: bool) -> impl Fn(&Value) -> bool {
    move |p| p["userId"] == user && p["presence"]["status"].is_null() != online
}

fn is_presence_of(f: &maxproto::Frame, user: i64) -> bool {
    f.opcode.0 == 132 && f.payload["userId"] == user
}

/// `seen` is a time in seconds (like the captured LOGIN answer), not ms.
fn seen_secs(presence: &Value) -> i64 {
    let seen = presence["seen"]
        .as_i64()
        .unwrap_or_else(|| panic!("seen missing in {presence}"));
    assert!(
        (1_600_000_000..10_000_000_000).contains(&seen),
        "seen {seen} is not in seconds"
    );
    seen
}

#[tokio::test]
async fn interactive_pings_switch_presence_and_notify_contacts_and_co_members() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut bot = Client::logged_in_format(&sim, TRANSFERBOT_TOKEN, WireFormat::Binary).await;
    let stranger = sim
        .control()
        .create_account(NewAccount {
            first_name: "Stranger".into(),
            ..NewAccount::default()
        })
        .unwrap();
    let mut stranger = Client::logged_in(&sim, &stranger.tokens[0]).await;
    let (mut boris, _) = hidden_login(&sim, BORIS_TOKEN).await;
    assert!(!sim.control().is_online(BORIS));

    boris.ok(1, json!({"interactive": true})).await;
    // Alice has Boris as a contact; TransferBot shares chats with him.
    let online = alice.push_where(132, about(BORIS, true)).await;
    assert_eq!(online.payload["presence"]["status"], 1);
    let seen_online = seen_secs(&online.payload["presence"]);
    let on_binary = bot.push_where(132, about(BORIS, true)).await;
    assert_eq!(on_binary.payload["presence"]["status"], 1);
    assert!(sim.control().is_online(BORIS));
    // Neither Boris himself nor an account unrelated to him hears of it.
    assert!(!boris.drain().await.iter().any(|f| is_presence_of(f, BORIS)));
    assert!(
        !stranger
            .drain()
            .await
            .iter()
            .any(|f| is_presence_of(f, BORIS))
    );

    boris.ok(1, json!({"interactive": false})).await;
    let offline = alice.push_where(132, about(BORIS, false)).await;
    assert!(offline.payload["presence"].get("status").is_none());
    assert!(seen_secs(&offline.payload["presence"]) >= seen_online);
    bot.push_where(132, about(BORIS, false)).await;
    assert!(!sim.control().is_online(BORIS));

    // A ping that changes nothing announces nothing.
    boris.ok(1, json!({"interactive": false})).await;
    assert!(!alice.drain().await.iter().any(|f| is_presence_of(f, BORIS)));
}

#[tokio::test]
async fn offline_only_when_the_last_interactive_connection_closes() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let first = Client::logged_in(&sim, BORIS_TOKEN).await;
    alice.push_where(132, about(BORIS, true)).await;
    let second = Client::logged_in(&sim, BORIS_TOKEN).await;

    drop(first);
    sim.control()
        .wait_for_connections(BORIS, 1, WAIT)
        .await
        .unwrap();
    assert!(sim.control().is_online(BORIS));
    assert!(!alice.drain().await.iter().any(|f| is_presence_of(f, BORIS)));

    drop(second);
    let offline = alice.push_where(132, about(BORIS, false)).await;
    seen_secs(&offline.payload["presence"]);
    assert!(!sim.control().is_online(BORIS));
}

#[tokio::test]
async fn contact_presence_members_and_login_show_the_live_state() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let (_boris, _) = hidden_login(&sim, BORIS_TOKEN).await;

    let p = alice
        .ok(35, json!({"contactIds": [BORIS, TRANSFERBOT, 1]}))
        .await;
    assert!(p["time"].is_i64());
    let boris = &p["presence"][BORIS.to_string()];
    seen_secs(boris);
    assert!(boris.get("status").is_none(), "hidden tab is offline: {p}");
    assert!(
        p["presence"].get("1").is_none(),
        "unknown users are left out"
    );

    // A logged-in but hidden session is not enough; the hook is.
    sim.control().set_presence(BORIS, true).unwrap();
    alice.push_where(132, about(BORIS, true)).await;
    let p = alice.ok(35, json!({"contactIds": [BORIS]})).await;
    assert_eq!(p["presence"][BORIS.to_string()]["status"], 1);
    let members = alice
        .ok(
            59,
            json!({"chatId": TEST_GROUP, "type": "MEMBER", "count": 50}),
        )
        .await;
    let presence_of = |user: i64| {
        members["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["contact"]["id"] == user)
            .map(|m| m["presence"].clone())
            .unwrap_or_else(|| panic!("{user} not among {members}"))
    };
    assert_eq!(presence_of(BORIS)["status"], 1);
    assert_eq!(presence_of(ALICE)["status"], 1);
    assert!(presence_of(TRANSFERBOT).get("status").is_none());

    // TransferBot has no contacts; Boris is its dialog peer.
    let (_bot, login) = hidden_login(&sim, TRANSFERBOT_TOKEN).await;
    assert_eq!(login["presence"][BORIS.to_string()]["status"], 1);
    assert_eq!(login["presence"][ALICE.to_string()]["status"], 1);

    sim.control().set_presence(BORIS, false).unwrap();
    alice.push_where(132, about(BORIS, false)).await;
    let p = alice.ok(35, json!({"contactIds": [BORIS]})).await;
    assert!(p["presence"][BORIS.to_string()].get("status").is_none());
}

#[tokio::test]
async fn offline_hook_outlasts_interactive_sessions_until_their_next_ping() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut boris = Client::logged_in(&sim, BORIS_TOKEN).await;
    alice.push_where(132, about(BORIS, true)).await;

    sim.control().set_presence(BORIS, false).unwrap();
    alice.push_where(132, about(BORIS, false)).await;
    assert!(!sim.control().is_online(BORIS));

    boris.ok(1, json!({"interactive": true})).await;
    alice.push_where(132, about(BORIS, true)).await;
    assert!(sim.control().is_online(BORIS));
}

#[tokio::test]
async fn held_online_without_any_connection_until_released() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    sim.control().set_presence(BORIS, true).unwrap();
    alice.push_where(132, about(BORIS, true)).await;

    // A session that comes and goes does not end the hold.
    let (boris, _) = hidden_login(&sim, BORIS_TOKEN).await;
    drop(boris);
    sim.control()
        .wait_for_connections(BORIS, 0, WAIT)
        .await
        .unwrap();
    assert!(sim.control().is_online(BORIS));

    sim.control().set_presence(BORIS, false).unwrap();
    alice.push_where(132, about(BORIS, false)).await;
    assert!(matches!(
        sim.control().set_presence(1, true),
        Err(ControlError::UnknownAccount(1))
    ));
}

#[tokio::test]
async fn presence_over_the_http_control_api() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let http = reqwest::Client::new();
    let url = format!("{}/_sim/presence", sim.http_url());

    let r = http
        .post(&url)
        .json(&json!({"account": BORIS, "online": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    alice.push_where(132, about(BORIS, true)).await;

    let r = http
        .post(&url)
        .json(&json!({"account": BORIS, "online": false}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    alice.push_where(132, about(BORIS, false)).await;

    let r = http
        .post(&url)
        .json(&json!({"account": 1, "online": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unknown.account");
}
