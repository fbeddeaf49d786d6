//! Fault injection and connection policy: drop, revoke, rotate, refuse and
//! rate-limit logins, RECONNECT, unknown and raw pushes, delays, failing
//! opcodes, idle timeout, server pings, the Origin check and the HTTP
//! control API.

mod sim_support;

use maxproto::{Cmd, Frame, Opcode};
use maxsim::fixture_ids::*;
use maxsim::{RawPush, SimConfig};
use serde_json::{Value, json};
use sim_support::*;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn drop_closes_abruptly_and_the_account_can_reconnect() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut boris = Client::logged_in(&sim, BORIS_TOKEN).await;
    assert_eq!(sim.control().drop_connections(Some(ALICE)), 1);
    assert_eq!(alice.ended().await, Ended::Abrupt);
    sim.control()
        .wait_for_connections(ALICE, 0, WAIT)
        .await
        .unwrap();
    // Others are untouched.
    boris.ok(48, json!({"chatIds": [0]})).await;
    let _again = Client::logged_in(&sim, ALICE_TOKEN).await;
    assert_eq!(sim.control().connection_count(ALICE), 1);
}

#[tokio::test]
async fn revoked_token_logs_out_live_sessions_and_fails_login() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    assert_eq!(sim.control().revoke_token(ALICE_TOKEN), 1);
    assert_eq!(alice.ended().await, Ended::Closed(1000));
    let mut c = Client::connect(&sim).await;
    c.init().await;
    let f = c.login(ALICE_TOKEN).await;
    assert_eq!(f.cmd, Cmd::Error);
    assert_eq!(f.payload["error"], "login.token");
    assert_eq!(f.payload["message"], "FAIL_LOGIN_TOKEN");
    assert!(sim.control().account(ALICE).unwrap().tokens.is_empty());
}

#[tokio::test]
async fn rotation_hands_out_a_new_token_once() {
    let sim = start().await;
    sim.control().rotate_token_on_next_login(BORIS).unwrap();
    let mut c = Client::connect(&sim).await;
    c.init().await;
    let first = c.login(BORIS_TOKEN).await;
    let new_token = first.payload["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, BORIS_TOKEN);
    let mut c2 = Client::connect(&sim).await;
    c2.init().await;
    let second = c2.login(&new_token).await;
    assert_eq!(second.payload["token"], new_token.as_str());
}

#[tokio::test]
async fn refused_and_rate_limited_logins() {
    let sim = start().await;
    let mut c = Client::connect(&sim).await;
    c.init().await;
    sim.control().refuse_logins(Some("service.unavailable"));
    assert_eq!(
        c.login(ALICE_TOKEN).await.payload["error"],
        "service.unavailable"
    );
    sim.control().refuse_logins(None);
    sim.control().rate_limit_logins(true);
    assert_eq!(
        c.login(ALICE_TOKEN).await.payload["error"],
        "error.limit.violate"
    );
    assert_eq!(
        c.err(
            17,
            json!({"phone": ALICE_PHONE, "type": "START_AUTH", "language": "ru"})
        )
        .await,
        "error.limit.violate"
    );
    sim.control().rate_limit_logins(false);
    assert_eq!(c.login(ALICE_TOKEN).await.cmd, Cmd::Ok);
}

#[tokio::test]
async fn reconnect_unknown_and_raw_pushes_arrive() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    assert_eq!(sim.control().send_reconnect(ALICE), 1);
    assert_eq!(alice.push(3).await.cmd, Cmd::Request);
    sim.control().send_unknown_push(ALICE, Some(4321));
    let unknown = alice.push(4321).await;
    assert_eq!(unknown.cmd, Cmd::Request);
    // A push whose seq collides with the client's next request seq.
    sim.control().push_raw(
        ALICE,
        RawPush::Frame {
            cmd: 0,
            seq: 5,
            opcode: 128,
            payload: json!({"chatId": 0, "message": {"id": "1", "text": "injected"}}),
        },
    );
    let injected = alice.push(128).await;
    assert_eq!(injected.seq, 5);
    assert_eq!(injected.payload["message"]["text"], "injected");
    // Server push seqs are the server's own counter.
    assert!(unknown.seq >= 1);
    // The connection still works.
    alice.ok(48, json!({"chatIds": [0]})).await;
}

#[tokio::test]
async fn delayed_and_failing_opcodes() {
    let sim = start().await;
    let mut c = Client::logged_in(&sim, ALICE_TOKEN).await;
    sim.control().fail_opcode(48, Some("chat.not.access"));
    assert_eq!(c.err(48, json!({"chatIds": [0]})).await, "chat.not.access");
    sim.control().fail_opcode(48, None);
    sim.control()
        .set_delay(Some(48), Some(Duration::from_millis(300)));
    // Fire 48 then PING without waiting: the PING answer overtakes.
    c.send_frame(&Frame::request(100, Opcode(48), json!({"chatIds": [0]})))
        .await;
    let ping = c.request(1, json!({"interactive": true})).await;
    assert_eq!(ping.cmd, Cmd::Ok);
    assert!(
        c.buffered().iter().all(|f| f.opcode.0 != 48),
        "delayed answer arrived before the ping answer"
    );
    sim.control().set_delay(Some(48), None);
}

#[tokio::test]
async fn idle_connections_are_closed_and_server_pings_are_sent() {
    let sim = start_with(SimConfig {
        idle_timeout: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let mut idle = Client::connect(&sim).await;
    assert_eq!(idle.ended().await, Ended::Closed(1000));

    let sim = start_with(SimConfig {
        server_ping_interval: Some(Duration::from_millis(50)),
        ..SimConfig::default()
    })
    .await;
    let mut c = Client::logged_in(&sim, ALICE_TOKEN).await;
    let ping = c.push(1).await;
    assert_eq!(ping.cmd, Cmd::Request);
    // Answering the server ping is accepted silently.
    let mut pong = Frame::request(ping.seq, Opcode::PING, Value::Null);
    pong.cmd = Cmd::Ok;
    c.send_frame(&pong).await;
    c.ok(48, json!({"chatIds": [0]})).await;
}

#[tokio::test]
async fn origin_can_be_required() {
    let sim = start_with(SimConfig {
        require_origin: true,
        ..SimConfig::default()
    })
    .await;
    let err = tokio_tungstenite::connect_async(sim.ws_url()).await;
    assert!(err.is_err(), "upgrade without Origin must be refused");
    let mut req = sim.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "https://web.max.ru".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
}

#[tokio::test]
async fn http_control_api_drives_the_simulator() {
    let sim = start().await;
    let mut bot = Client::logged_in(&sim, TRANSFERBOT_TOKEN).await;
    let http = reqwest::Client::new();
    let api = |p: &str| format!("{}/_sim/{p}", sim.http_url());
    let accounts: Value = http
        .get(api("accounts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alice = accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == ALICE)
        .unwrap();
    assert_eq!(alice["smsCode"], ALICE_SMS);
    assert_eq!(alice["tokens"][0], ALICE_TOKEN);

    let sent: Value = http
        .post(api("send"))
        .json(&json!({"account": ALICE, "chatId": DIALOG_ALICE_TRANSFERBOT, "text": "via http"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let push = bot.push(128).await;
    assert_eq!(push.payload["message"]["text"], "via http");
    assert_eq!(
        msg_id(&push.payload["message"]),
        sent["id"].as_i64().unwrap()
    );

    let refused = http
        .post(api("send"))
        .json(&json!({"account": ALICE, "chatId": -1, "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "chat.not.found");

    let conns: Value = http
        .get(api("connections"))
        .query(&[("account", TRANSFERBOT)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(conns["connections"], 1);
    let dropped: Value = http
        .post(api("drop"))
        .json(&json!({"account": TRANSFERBOT}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dropped["dropped"], 1);
    assert_eq!(bot.ended().await, Ended::Abrupt);
}
