//! The binary wire format (ver 10, MessagePack + LZ4) end to end, mixed
//! with JSON connections.

mod sim_support;

use maxproto::{Cmd, WireFormat};
use maxsim::fixture_ids::*;
use serde_json::json;
use sim_support::*;

#[tokio::test]
async fn binary_connection_logs_in_sends_and_gets_numeric_ids() {
    let sim = start().await;
    let mut bot = Client::connect_format(&sim, WireFormat::Binary).await;
    let init = bot.init().await;
    assert_eq!(init.ver, 10, "answers come in the format of the request");
    let login = bot.login(TRANSFERBOT_TOKEN).await;
    assert_eq!(login.cmd, Cmd::Ok);
    assert_eq!(login.ver, 10);
    assert_eq!(login.payload["profile"]["contact"]["id"], TRANSFERBOT);
    assert!(login.payload["chats"].as_array().unwrap().len() >= 8);

    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let sent = bot
        .ok(64, json!({"chatId": DIALOG_ALICE_TRANSFERBOT, "message": {"text": "from binary", "cid": 3, "attaches": []}}))
        .await;
    let id = sent["message"]["id"]
        .as_i64()
        .expect("numeric id on the binary wire");
    let push = alice.push(128).await;
    assert_eq!(push.ver, 11);
    assert_eq!(push.payload["message"]["id"], id.to_string());
    assert_eq!(push.payload["message"]["text"], "from binary");

    // A JSON sender's message reaches the binary client with a numeric id.
    let reply = alice
        .ok(
            64,
            json!({"chatId": DIALOG_ALICE_TRANSFERBOT, "message": {"text": "to binary", "cid": 4}}),
        )
        .await;
    let incoming = bot
        .push_where(128, |p| p["message"]["text"] == "to binary")
        .await;
    assert_eq!(incoming.ver, 10);
    assert_eq!(
        incoming.payload["message"]["id"]
            .as_i64()
            .unwrap()
            .to_string(),
        reply["message"]["id"].as_str().unwrap()
    );
    // History over binary works and carries the message.
    let hist = bot
        .ok(49, json!({"chatId": DIALOG_ALICE_TRANSFERBOT, "from": i64::MAX / 2, "backward": 5, "forward": 0}))
        .await;
    assert!(
        hist["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["text"] == "to binary")
    );
}

#[tokio::test]
async fn deletions_reach_binary_connections_as_142() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut boris_bin = Client::logged_in_format(&sim, BORIS_TOKEN, WireFormat::Binary).await;
    let mut boris_json = Client::logged_in(&sim, BORIS_TOKEN).await;
    let sent = alice
        .ok(
            64,
            json!({"chatId": DIALOG_ALICE_BORIS, "message": {"text": "gone soon", "cid": 1}}),
        )
        .await;
    let id: i64 = sent["message"]["id"].as_str().unwrap().parse().unwrap();
    alice
        .ok(66, json!({"chatId": DIALOG_ALICE_BORIS, "messageIds": [sent["message"]["id"]], "forMe": false}))
        .await;
    let del = boris_bin.push(142).await;
    assert_eq!(del.payload["messageIds"], json!([id]));
    assert_eq!(del.payload["chat"]["id"], DIALOG_ALICE_BORIS);
    let removed = boris_json
        .push_where(128, |p| p["message"]["status"] == "REMOVED")
        .await;
    assert_eq!(removed.payload["message"]["id"], id.to_string());
    // The binary connection is told only once, with 142.
    assert!(
        boris_bin
            .drain()
            .await
            .iter()
            .all(|f| f.payload["message"]["status"] != "REMOVED")
    );
}
