//! Connection state machine, LOGIN answer, SMS and QR auth, LOGOUT.

mod sim_support;

use maxproto::{Cmd, Frame, Opcode};
use maxsim::fixture_ids::*;
use serde_json::{Value, json};
use sim_support::*;
use std::collections::BTreeSet;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn nothing_but_session_init_before_init_and_only_auth_before_login() {
    let sim = start().await;
    let mut c = Client::connect(&sim).await;
    assert_eq!(
        c.err(19, json!({"token": TRANSFERBOT_TOKEN})).await,
        "proto.state"
    );
    assert_eq!(c.err(1, json!({"interactive": true})).await, "proto.state");
    c.init().await;
    assert_eq!(c.err(48, json!({"chatIds": [0]})).await, "proto.state");
    assert_eq!(
        c.err(64, json!({"chatId": 0, "message": {"text": "x"}}))
            .await,
        "proto.state"
    );
    // PING is allowed before LOGIN and answered with a null payload.
    let ping = c.request(1, json!({"interactive": false})).await;
    assert_eq!(ping.cmd, Cmd::Ok);
    assert!(ping.payload.is_null());
    assert_eq!(c.err(19, json!({"token": "nope"})).await, "login.token");
    c.login(TRANSFERBOT_TOKEN).await;
    assert_eq!(sim.control().connection_count(TRANSFERBOT), 1);
    let info = c.ok(48, json!({"chatIds": [0]})).await;
    assert_eq!(info["chats"][0]["id"], 0);
}

#[tokio::test]
async fn unknown_and_push_only_opcodes_are_proto_opcode_and_acks_are_ignored() {
    let sim = start().await;
    let mut c = Client::logged_in(&sim, ALICE_TOKEN).await;
    assert_eq!(c.err(999, json!({})).await, "proto.opcode");
    assert_eq!(c.err(128, json!({})).await, "proto.opcode");
    assert_eq!(c.err(155, json!({})).await, "proto.opcode");
    // A cmd 1 frame from the client (an ack) gets no answer at all.
    let mut ack = Frame::request(
        77,
        Opcode::NOTIF_MESSAGE,
        json!({"chatId": 1, "messageId": "1"}),
    );
    ack.cmd = Cmd::Ok;
    c.send_frame(&ack).await;
    assert!(c.drain().await.is_empty());
}

#[tokio::test]
async fn schema_violations_name_the_field() {
    let sim = start().await;
    let mut c = Client::connect(&sim).await;
    let f = c.request(6, json!({"deviceId": "x"})).await;
    assert_eq!(f.cmd, Cmd::Error);
    assert_eq!(f.payload["error"], "proto.payload");
    assert!(f.payload["message"].as_str().unwrap().contains("userAgent"));
    c.init().await;
    let f = c
        .request(19, json!({"token": TRANSFERBOT_TOKEN, "chatsCount": 200}))
        .await;
    assert_eq!(f.payload["error"], "proto.payload");
    assert_eq!(f.payload["message"], "'chatsCount' out of range");
    c.login(TRANSFERBOT_TOKEN).await;
    let f = c.request(49, json!({"from": 1})).await;
    assert!(f.payload["message"].as_str().unwrap().contains("chatId"));
    for key in ["error", "message", "title", "localizedMessage"] {
        assert!(f.payload[key].is_string(), "{key} missing in {}", f.payload);
    }
}

#[tokio::test]
async fn malformed_frame_closes_with_policy_violation() {
    let sim = start().await;
    let mut c = Client::connect(&sim).await;
    c.send_message(Message::text("{not json")).await;
    assert_eq!(c.ended().await, Ended::Closed(1008));
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn login_answer_has_the_structure_of_the_captured_seed() {
    let seed: Value =
        serde_json::from_str(include_str!("../../maxproto/tests/data/seed_login.json")).unwrap();
    let sim = start().await;
    let mut c = Client::connect(&sim).await;
    c.init().await;
    let ans = c.login(TRANSFERBOT_TOKEN).await;
    assert_eq!(ans.cmd, Cmd::Ok);
    let p = &ans.payload;
    assert!(
        keys(p).is_superset(&keys(&seed)),
        "top-level keys: {:?}",
        keys(p)
    );
    assert_eq!(p["profile"]["contact"]["id"], TRANSFERBOT);
    assert_eq!(p["profile"]["contact"]["phone"], 79965433117i64);
    assert_eq!(p["profile"]["contact"]["names"][0]["name"], "TransferBot");
    assert!(keys(&p["profile"]["contact"]).is_superset(&keys(&seed["profile"]["contact"])));
    assert_eq!(p["token"], TRANSFERBOT_TOKEN);
    assert!(p["messages"].is_object());
    assert!(p["contacts"].is_array());
    // The avatar points at the simulator itself and is a real PNG.
    let avatar = p["profile"]["contact"]["baseUrl"].as_str().unwrap();
    assert!(avatar.starts_with(&sim.http_url()));
    let png = reqwest::get(avatar).await.unwrap();
    assert_eq!(png.headers()["content-type"], "image/png");
    assert!(png.bytes().await.unwrap().starts_with(b"\x89PNG"));

    let chats = p["chats"].as_array().unwrap();
    for seed_chat in seed["chats"].as_array().unwrap() {
        let mine = chats
            .iter()
            .find(|c| c["id"] == seed_chat["id"])
            .unwrap_or_else(|| panic!("chat {} missing", seed_chat["id"]));
        assert_eq!(mine["type"], seed_chat["type"]);
        assert_eq!(mine["title"], seed_chat["title"]);
        assert_eq!(mine["participants"], seed_chat["participants"]);
        assert_eq!(mine["lastMessage"]["id"], seed_chat["lastMessage"]["id"]);
        assert_eq!(
            mine["lastMessage"]["text"],
            seed_chat["lastMessage"]["text"]
        );
        assert_eq!(
            mine["lastMessage"]["attaches"],
            seed_chat["lastMessage"]["attaches"]
        );
        let missing: Vec<_> = keys(seed_chat).difference(&keys(mine)).cloned().collect();
        // prevMessageId refers to history the capture did not include.
        assert!(
            missing.iter().all(|k| k == "prevMessageId"),
            "chat {} lacks {missing:?}",
            seed_chat["id"]
        );
    }
    assert!(chats.iter().any(|c| c["id"] == 0), "Saved messages missing");
    assert!(chats.iter().any(|c| c["id"] == DIALOG_ALICE_TRANSFERBOT));
    let server = &p["config"]["server"];
    assert_eq!(server["max-msg-length"], 4000);
    assert_eq!(server["edit-timeout"], 604800);
    assert_eq!(server["reactions-max"], 8);
    assert_eq!(server["reactions-menu"].as_array().unwrap().len(), 8);
    assert!(server["file-upload-max-size"].is_number());
    assert!(p["config"]["user"].is_object());
    assert!(p["config"]["hash"].is_string());
    // The last SESSION_INIT is recorded for tests.
    let session = sim.control().last_session(TRANSFERBOT).unwrap();
    assert_eq!(session.device_id.as_deref(), Some("0f1e2d3c-test-device"));
    assert_eq!(session.user_agent["deviceType"], "WEB");
}

#[tokio::test]
async fn chats_count_limits_the_page_and_sets_the_marker() {
    let sim = start().await;
    let mut c = Client::connect(&sim).await;
    c.init().await;
    let p = c
        .ok(19, json!({"token": TRANSFERBOT_TOKEN, "chatsCount": 3}))
        .await;
    let chats = p["chats"].as_array().unwrap();
    // Three most recent plus Saved messages.
    assert!(chats.len() <= 4);
    assert!(chats.iter().any(|c| c["id"] == 0));
    assert!(p["chatMarker"].as_i64().unwrap() > 0);
    let more = c
        .ok(53, json!({"marker": p["chatMarker"], "count": 50}))
        .await;
    assert!(!more["chats"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn sms_flow_issues_a_working_token() {
    let sim = start().await;
    let mut c = Client::connect(&sim).await;
    c.init().await;
    assert_eq!(
        c.err(
            17,
            json!({"phone": "+79990000000", "type": "START_AUTH", "language": "ru"})
        )
        .await,
        "error.phone.wrong"
    );
    let req = c
        .ok(
            17,
            json!({"phone": ALICE_PHONE, "type": "START_AUTH", "language": "ru"}),
        )
        .await;
    assert_eq!(req["codeLength"], 6);
    let track = req["token"].as_str().unwrap().to_owned();
    assert_eq!(
        c.err(
            18,
            json!({"token": track, "verifyCode": "999999", "authTokenType": "CHECK_CODE"})
        )
        .await,
        "error.code.wrong"
    );
    let ans = c
        .ok(
            18,
            json!({"token": track, "verifyCode": ALICE_SMS, "authTokenType": "CHECK_CODE"}),
        )
        .await;
    assert_eq!(ans["profile"]["contact"]["id"], ALICE);
    let token = ans["tokenAttrs"]["LOGIN"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let login = c.login(&token).await;
    assert_eq!(login.cmd, Cmd::Ok);
    assert_eq!(login.payload["profile"]["contact"]["id"], ALICE);
    assert!(
        sim.control()
            .account(ALICE)
            .unwrap()
            .tokens
            .contains(&token)
    );
}

#[tokio::test]
async fn qr_flow_logs_in_after_approval() {
    let sim = start().await;
    let mut c = Client::connect(&sim).await;
    c.init().await;
    let qr = c.ok(288, json!({})).await;
    let track = qr["trackId"].as_str().unwrap().to_owned();
    let status = c.ok(289, json!({"trackId": track})).await;
    assert!(status["status"].get("loginAvailable").is_none());
    assert_eq!(
        c.err(291, json!({"trackId": track})).await,
        "track.not.found"
    );
    sim.control()
        .approve_qr(qr["qrLink"].as_str().unwrap(), BORIS)
        .unwrap();
    let status = c.ok(289, json!({"trackId": track})).await;
    assert_eq!(status["status"]["loginAvailable"], true);
    let ans = c.ok(291, json!({"trackId": track})).await;
    let token = ans["tokenAttrs"]["LOGIN"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        c.login(&token).await.payload["profile"]["contact"]["id"],
        BORIS
    );
}

#[tokio::test]
async fn logout_invalidates_the_token_and_closes() {
    let sim = start().await;
    let mut c = Client::logged_in(&sim, BORIS_TOKEN).await;
    let f = c.request(20, json!({})).await;
    assert_eq!(f.cmd, Cmd::Ok);
    assert_eq!(c.ended().await, Ended::Closed(1000));
    let mut again = Client::connect(&sim).await;
    again.init().await;
    let f = again.login(BORIS_TOKEN).await;
    assert_eq!(f.payload["error"], "login.token");
    assert_eq!(f.payload["message"], "FAIL_LOGIN_TOKEN");
}

#[tokio::test]
async fn web_tab_requests_after_login_get_well_formed_answers() {
    let sim = start().await;
    let mut c = Client::logged_in(&sim, TRANSFERBOT_TOKEN).await;
    let folders = c.ok(272, json!({"folderSync": 0})).await;
    assert!(folders["folders"].is_array());
    let presence = c.ok(35, json!({"contactIds": [ALICE]})).await;
    assert!(presence["presence"][ALICE.to_string()]["seen"].is_number());
    let contacts = c.ok(32, json!({"contactIds": [ALICE, 1]})).await;
    assert_eq!(contacts["contacts"].as_array().unwrap().len(), 1);
    assert!(c.ok(302, json!({"bannersSync": 0})).await["banners"].is_array());
    assert!(c.ok(163, json!({"callHistorySync": 0})).await["callHistoryItems"].is_array());
    assert!(c.ok(27, json!({"type": "STICKER", "sync": 0})).await["sections"].is_array());
    for op in [208, 209, 28, 22] {
        assert!(c.ok(op, json!({})).await.is_object(), "opcode {op}");
    }
    let by_phone = c.ok(46, json!({"phone": BORIS_PHONE})).await;
    assert_eq!(by_phone["contact"]["id"], BORIS);
    let members = c
        .ok(
            59,
            json!({"chatId": TEST_GROUP, "type": "MEMBER", "count": 2}),
        )
        .await;
    assert_eq!(members["members"].as_array().unwrap().len(), 2);
    let rest = c
        .ok(59, json!({"chatId": TEST_GROUP, "type": "MEMBER", "marker": members["marker"], "count": 2}))
        .await;
    assert_eq!(rest["members"].as_array().unwrap().len(), 1);
    assert!(rest.get("marker").is_none());
}

#[tokio::test]
async fn login_sends_no_recent_messages_by_default_only_last_messages() {
    let sim = start().await;
    let sent = sim
        .control()
        .send(ALICE, DIALOG_ALICE_BORIS, maxsim::Outgoing::text("latest"))
        .unwrap();
    let mut c = Client::connect(&sim).await;
    c.init().await;
    let p = c.login(ALICE_TOKEN).await.payload;
    assert_eq!(p["messages"], json!({}), "like the real service");
    let dialog = p["chats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ch| ch["id"] == DIALOG_ALICE_BORIS)
        .expect("dialog in LOGIN");
    assert_eq!(dialog["lastMessage"]["id"], sent.id.to_string());
    assert_eq!(dialog["lastMessage"]["text"], "latest");
    // Catching up is CHAT_HISTORY's job.
    let history = c
        .ok(
            49,
            json!({"chatId": DIALOG_ALICE_BORIS, "from": i64::MAX / 2, "forward": 0, "backward": 30, "getMessages": true}),
        )
        .await;
    let last = history["messages"].as_array().unwrap().last().cloned();
    assert_eq!(last.unwrap()["id"], sent.id.to_string());
}

#[tokio::test]
async fn login_messages_setting_puts_recent_messages_into_login() {
    let sim = start_with(maxsim::SimConfig {
        login_messages: 2,
        ..maxsim::SimConfig::default()
    })
    .await;
    let control = sim.control();
    for text in ["s1", "s2", "s3", "s4"] {
        control
            .send(ALICE, 0, maxsim::Outgoing::text(text))
            .unwrap();
    }
    let gone = control
        .send(ALICE, 0, maxsim::Outgoing::text("s5"))
        .unwrap();
    control.delete(ALICE, 0, &[gone.id], false).unwrap();
    let mut c = Client::connect(&sim).await;
    c.init().await;
    let p = c.login(ALICE_TOKEN).await.payload;
    let saved: Vec<&str> = p["messages"]["0"]
        .as_array()
        .expect("Saved messages in LOGIN")
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        saved,
        ["s3", "s4"],
        "the most recent visible ones, oldest first"
    );
    for list in p["messages"].as_object().unwrap().values() {
        assert!(list.as_array().unwrap().len() <= 2);
    }
}
