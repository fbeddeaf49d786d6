//! Messages: send and fan-out, cid dedup, edit, delete, history paging,
//! read marks, typing, reactions, chat creation, limits, control sends.

mod sim_support;

use maxsim::Outgoing;
use maxsim::fixture_ids::*;
use serde_json::{Value, json};
use sim_support::*;
use std::time::Duration;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn send_payload(chat: i64, text: &str, cid: i64) -> Value {
    json!({"chatId": chat, "message": {"text": text, "cid": cid, "elements": [], "attaches": []}, "notify": true})
}

#[tokio::test]
async fn send_fans_out_to_peer_and_to_senders_other_session() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut alice2 = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut bot = Client::logged_in(&sim, TRANSFERBOT_TOKEN).await;
    let ans = alice
        .ok(
            64,
            send_payload(DIALOG_ALICE_TRANSFERBOT, "hello bot", 1_800_000_000_001),
        )
        .await;
    assert_eq!(ans["chatId"], DIALOG_ALICE_TRANSFERBOT);
    let message = &ans["message"];
    assert!(message["id"].is_string(), "message ids are decimal strings");
    assert_eq!(message["sender"], ALICE);
    assert_eq!(message["text"], "hello bot");
    assert_eq!(message["cid"], 1_800_000_000_001i64);
    assert_eq!(message["type"], "USER");
    let id = msg_id(message);
    assert_eq!(id >> 16, message["time"].as_i64().unwrap());

    for client in [&mut bot, &mut alice2, &mut alice] {
        let push = client.push(128).await;
        assert_eq!(push.payload["chatId"], DIALOG_ALICE_TRANSFERBOT);
        assert_eq!(msg_id(&push.payload["message"]), id);
        assert_eq!(push.payload["message"]["text"], "hello bot");
    }
    let stored = sim.control().message(id).unwrap();
    assert_eq!(stored.sender, Some(ALICE));
    assert_eq!(stored.chat_id, DIALOG_ALICE_TRANSFERBOT);
}

#[tokio::test]
async fn echo_to_the_sending_connection_can_be_disabled() {
    let sim = start().await;
    sim.control().set_echo_to_sender(false);
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut alice2 = Client::logged_in(&sim, ALICE_TOKEN).await;
    alice
        .ok(64, send_payload(DIALOG_ALICE_BORIS, "no echo", 5))
        .await;
    alice2.push(128).await;
    assert!(alice.drain().await.iter().all(|f| f.opcode.0 != 128));
}

#[tokio::test]
async fn duplicate_cid_returns_the_original_message() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut alice2 = Client::logged_in(&sim, ALICE_TOKEN).await;
    let first = alice.ok(64, send_payload(TEST_GROUP, "once", 42)).await;
    let again = alice2.ok(64, send_payload(TEST_GROUP, "once", 42)).await;
    assert_eq!(first["message"]["id"], again["message"]["id"]);
    let stored = sim.control().messages(ALICE, TEST_GROUP).unwrap();
    assert_eq!(stored.iter().filter(|m| m.text == "once").count(), 1);
    // The same cid in another chat is a different message.
    let other = alice
        .ok(64, send_payload(DIALOG_ALICE_BORIS, "once", 42))
        .await;
    assert_ne!(other["message"]["id"], first["message"]["id"]);
}

#[tokio::test]
async fn message_ids_strictly_increase() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut last = 0;
    for i in 0..20 {
        let ans = alice
            .ok(64, send_payload(0, &format!("n{i}"), 100 + i))
            .await;
        let id = msg_id(&ans["message"]);
        assert!(id > last);
        last = id;
    }
}

#[tokio::test]
async fn text_longer_than_4000_is_refused() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let ok = "a".repeat(4000);
    alice.ok(64, send_payload(0, &ok, 1)).await;
    let too_long = "a".repeat(4001);
    assert_eq!(
        alice.err(64, send_payload(0, &too_long, 2)).await,
        "proto.payload"
    );
    assert!(matches!(
        sim.control().send(ALICE, 0, Outgoing::text(too_long)),
        Err(maxsim::ControlError::Rejected { .. })
    ));
}

#[tokio::test]
async fn edit_pushes_edited_status_and_only_own_messages_are_editable() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut boris = Client::logged_in(&sim, BORIS_TOKEN).await;
    let sent = alice
        .ok(64, send_payload(DIALOG_ALICE_BORIS, "typo", 7))
        .await;
    let id = sent["message"]["id"].clone();
    boris.push(128).await;
    let edited = alice
        .ok(67, json!({"chatId": DIALOG_ALICE_BORIS, "messageId": id, "text": "fixed", "elements": [], "attachments": []}))
        .await;
    assert_eq!(edited["message"]["status"], "EDITED");
    assert!(edited["message"]["updateTime"].is_number());
    let push = boris
        .push_where(128, |p| p["message"]["status"] == "EDITED")
        .await;
    assert_eq!(push.payload["message"]["text"], "fixed");
    assert_eq!(push.payload["message"]["id"], id);
    assert_eq!(
        boris
            .err(67, json!({"chatId": DIALOG_ALICE_BORIS, "messageId": id, "text": "mine now", "elements": [], "attachments": []}))
            .await,
        "message.edit.denied"
    );
    let stored = sim.control().message(msg_id(&sent["message"])).unwrap();
    assert_eq!(stored.text, "fixed");
    assert_eq!(stored.status.as_deref(), Some("EDITED"));
}

#[tokio::test]
async fn delete_pushes_removed_to_others_but_not_to_the_deleting_connection() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut alice2 = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut boris = Client::logged_in(&sim, BORIS_TOKEN).await;
    let sent = alice
        .ok(64, send_payload(DIALOG_ALICE_BORIS, "oops", 8))
        .await;
    let id = sent["message"]["id"].clone();
    alice.drain().await;
    assert_eq!(
        boris
            .err(
                66,
                json!({"chatId": DIALOG_ALICE_BORIS, "messageIds": [id], "forMe": false})
            )
            .await,
        "chat.not.access"
    );
    alice
        .ok(
            66,
            json!({"chatId": DIALOG_ALICE_BORIS, "messageIds": [id], "forMe": false}),
        )
        .await;
    for c in [&mut boris, &mut alice2] {
        let push = c
            .push_where(128, |p| p["message"]["status"] == "REMOVED")
            .await;
        assert_eq!(push.payload["message"]["id"], id);
    }
    assert!(
        alice
            .drain()
            .await
            .iter()
            .all(|f| f.opcode.0 != 128 && f.opcode.0 != 142)
    );
    assert_eq!(
        alice
            .err(
                66,
                json!({"chatId": DIALOG_ALICE_BORIS, "messageIds": [id], "forMe": false})
            )
            .await,
        "message.not.found"
    );
    let history = boris
        .ok(49, json!({"chatId": DIALOG_ALICE_BORIS, "from": i64::MAX / 2, "forward": 0, "backward": 50, "getMessages": true}))
        .await;
    assert!(
        history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"] != id)
    );
    let stored = sim.control().message(msg_id(&sent["message"])).unwrap();
    assert_eq!(stored.status.as_deref(), Some("REMOVED"));
}

#[tokio::test]
async fn history_paging_follows_the_measured_semantics() {
    let sim = start().await;
    let control = sim.control();
    let mut ids = Vec::new();
    for i in 0..10 {
        let m = control
            .send(ALICE, 0, Outgoing::text(format!("m{i}")))
            .unwrap();
        // History anchors are times: give every message its own millisecond.
        while now_ms() <= m.time {
            tokio::task::yield_now().await;
        }
        ids.push(m);
    }
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let page = |v: &Value| -> Vec<String> {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect()
    };
    let hist = |from: i64, forward: i64, backward: i64| json!({"chatId": 0, "from": from, "forward": forward, "backward": backward, "getMessages": true});
    // Latest page, oldest first.
    let latest = alice.ok(49, hist(i64::MAX / 2, 0, 3)).await;
    assert_eq!(page(&latest), ["m7", "m8", "m9"]);
    // backward n ends with the anchor.
    let anchor = ids[5].time;
    let back = alice.ok(49, hist(anchor, 0, 3)).await;
    assert_eq!(page(&back).last().unwrap(), "m5");
    assert!(page(&back).len() <= 3);
    // forward n starts with the anchor when backward is 0.
    let fwd = alice.ok(49, hist(anchor, 3, 0)).await;
    assert_eq!(page(&fwd)[0], page(&back).last().unwrap().as_str());
    assert_eq!(page(&fwd).len(), 3);
    // Nothing asked, nothing returned.
    assert!(page(&alice.ok(49, hist(anchor, 0, 0)).await).is_empty());
    // Both directions: anchor once.
    let both = alice.ok(49, hist(ids[4].time, 2, 2)).await;
    let both = page(&both);
    assert_eq!(both.iter().filter(|t| *t == "m4").count(), 1);
    assert_eq!(both.len(), 4);
    let with_chat = alice
        .ok(
            49,
            json!({"chatId": 0, "from": 1, "forward": 1, "backward": 0, "getChat": true}),
        )
        .await;
    assert_eq!(with_chat["chat"]["id"], 0);
    assert_eq!(
        alice
            .err(49, json!({"chatId": 12345, "from": 1, "backward": 1}))
            .await,
        "chat.not.found"
    );
}

#[tokio::test]
async fn read_marks_and_typing_reach_the_other_side() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut boris = Client::logged_in(&sim, BORIS_TOKEN).await;
    let sent = alice
        .ok(64, send_payload(DIALOG_ALICE_BORIS, "read me", 9))
        .await;
    let push = boris.push(128).await;
    assert!(push.payload["unread"].as_i64().unwrap() >= 1);
    let mark = boris
        .ok(50, json!({"type": "READ_MESSAGE", "chatId": DIALOG_ALICE_BORIS, "messageId": sent["message"]["id"], "mark": sent["message"]["time"]}))
        .await;
    assert_eq!(mark["unread"], 0);
    assert_eq!(mark["mark"], sent["message"]["time"]);
    let notif = alice.push(130).await;
    assert_eq!(notif.payload["userId"], BORIS);
    assert_eq!(notif.payload["mark"], sent["message"]["time"]);
    boris
        .ok(65, json!({"chatId": DIALOG_ALICE_BORIS, "type": "TEXT"}))
        .await;
    let typing = alice.push(129).await;
    assert_eq!(typing.payload["userId"], BORIS);
    assert_eq!(typing.payload["chatId"], DIALOG_ALICE_BORIS);
}

#[tokio::test]
async fn reactions_are_validated_and_pushed() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut alice2 = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut boris = Client::logged_in(&sim, BORIS_TOKEN).await;
    let sent = boris
        .ok(64, send_payload(TEST_GROUP, "react to me", 10))
        .await;
    let id = sent["message"]["id"].clone();
    let react = |r: &str| json!({"chatId": TEST_GROUP, "messageId": id, "reaction": {"reactionType": "EMOJI", "id": r}});
    assert_eq!(
        alice.err(178, react("🦀")).await,
        "error.message.like.unknown.reaction"
    );
    assert_eq!(
        alice
            .err(
                178,
                json!({"chatId": TEST_GROUP, "messageId": id, "reaction": "👍"})
            )
            .await,
        "proto.payload"
    );
    let info = alice.ok(178, react("👍")).await;
    assert_eq!(info["reactionInfo"]["totalCount"], 1);
    assert_eq!(info["reactionInfo"]["yourReaction"], "👍");
    let changed = boris.push(155).await;
    assert_eq!(changed.payload["messageId"], msg_id(&sent["message"]));
    assert_eq!(changed.payload["counters"][0]["reaction"], "👍");
    assert_eq!(changed.payload["totalCount"], 1);
    let mine = alice2.push(156).await;
    assert_eq!(mine.payload["reactionInfo"]["yourReaction"], "👍");
    let chat = boris.push(135).await;
    assert_eq!(chat.payload["chat"]["lastReaction"], "👍");
    // A new reaction replaces the old one: still one per user.
    let info = alice.ok(178, react("🔥")).await;
    assert_eq!(info["reactionInfo"]["totalCount"], 1);
    let bulk = boris
        .ok(180, json!({"chatId": TEST_GROUP, "messageIds": [id]}))
        .await;
    let entry = &bulk["messagesReactions"][id.as_str().unwrap()];
    assert_eq!(entry["counters"][0]["reaction"], "🔥");
    let detailed = boris
        .ok(
            181,
            json!({"chatId": TEST_GROUP, "messageId": id, "count": 10}),
        )
        .await;
    assert_eq!(detailed["reactions"][0]["userId"], ALICE);
    let cleared = alice
        .ok(179, json!({"chatId": TEST_GROUP, "messageId": id}))
        .await;
    assert_eq!(cleared["reactionInfo"], json!({}));
}

#[tokio::test]
async fn creating_a_group_and_a_dialog_by_sending() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut boris = Client::logged_in(&sim, BORIS_TOKEN).await;
    let ans = alice
        .ok(64, json!({"message": {"cid": 77, "attaches": [{"_type": "CONTROL", "event": "new", "chatType": "CHAT", "title": "Fresh", "userIds": [BORIS]}]}, "notify": true}))
        .await;
    let chat_id = ans["chatId"].as_i64().unwrap();
    assert!(
        chat_id < -10_000_000_000_000,
        "groups have negative 14-digit ids"
    );
    assert_eq!(ans["chat"]["title"], "Fresh");
    let created = boris.push(135).await;
    assert_eq!(created.payload["chat"]["id"], chat_id);
    assert_eq!(created.payload["chat"]["type"], "CHAT");
    let control_msg = boris.push(128).await;
    assert_eq!(
        control_msg.payload["message"]["attaches"][0]["event"],
        "new"
    );

    // A dialog with a user who has none yet: by userId.
    let carol = sim
        .control()
        .create_account(maxsim::NewAccount {
            first_name: "Carol".into(),
            ..Default::default()
        })
        .unwrap();
    let ans = alice
        .ok(
            64,
            json!({"userId": carol.id, "message": {"text": "hi Carol", "cid": 78}}),
        )
        .await;
    assert_eq!(ans["chatId"], ALICE ^ carol.id);
    let stored = sim.control().messages(carol.id, ALICE ^ carol.id).unwrap();
    assert_eq!(stored[0].text, "hi Carol");
}

#[tokio::test]
async fn reply_link_carries_the_quoted_message_and_channels_are_admin_only() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let first = alice.ok(64, send_payload(TEST_GROUP, "question", 11)).await;
    let reply = alice
        .ok(64, json!({"chatId": TEST_GROUP, "message": {"text": "answer", "cid": 12, "link": {"type": "REPLY", "messageId": first["message"]["id"]}}}))
        .await;
    assert_eq!(reply["message"]["link"]["type"], "REPLY");
    assert_eq!(reply["message"]["link"]["message"]["text"], "question");
    // As the real service: the quoted message's chat, also for replies.
    assert_eq!(reply["message"]["link"]["chatId"], TEST_GROUP);
    assert_eq!(
        alice
            .err(64, send_payload(TEST_CHANNEL, "not mine", 13))
            .await,
        "chat.not.access"
    );
    assert_eq!(
        alice.err(64, send_payload(-1, "nowhere", 14)).await,
        "chat.not.found"
    );
}

#[tokio::test]
async fn control_send_reaches_clients_and_wait_for_message_sees_client_sends() {
    let sim = start().await;
    let mut bot = Client::logged_in(&sim, TRANSFERBOT_TOKEN).await;
    let sent = sim
        .control()
        .send(
            BORIS,
            DIALOG_BORIS_TRANSFERBOT,
            Outgoing {
                text: "bold".into(),
                elements: vec![json!({"type": "STRONG", "from": 0, "length": 4})],
                ..Default::default()
            },
        )
        .unwrap();
    let push = bot.push(128).await;
    assert_eq!(msg_id(&push.payload["message"]), sent.id);
    assert_eq!(push.payload["message"]["elements"][0]["type"], "STRONG");
    bot.ok(64, send_payload(DIALOG_BORIS_TRANSFERBOT, "pong", 15))
        .await;
    let seen = sim
        .control()
        .wait_for_message(Duration::from_secs(5), |m| m.text == "pong")
        .await
        .unwrap();
    assert_eq!(seen.sender, Some(TRANSFERBOT));
    assert_eq!(seen.chat_id, DIALOG_BORIS_TRANSFERBOT);
}

#[tokio::test]
async fn members_update_adds_and_removes_with_pushes() {
    let sim = start().await;
    let carol = sim
        .control()
        .create_account(maxsim::NewAccount {
            first_name: "Carol".into(),
            ..Default::default()
        })
        .unwrap();
    let token = carol.tokens[0].clone();
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut boris = Client::logged_in(&sim, BORIS_TOKEN).await;
    let mut carol_c = Client::logged_in(&sim, &token).await;
    assert_eq!(
        boris
            .err(77, json!({"chatId": TEST_GROUP, "userIds": [carol.id], "operation": "add", "showHistory": true}))
            .await,
        "chat.not.access"
    );
    let ans = alice
        .ok(77, json!({"chatId": TEST_GROUP, "userIds": [carol.id], "operation": "add", "showHistory": true}))
        .await;
    assert!(
        ans["chat"]["participants"]
            .get(carol.id.to_string())
            .is_some()
    );
    let added = carol_c.push(135).await;
    assert_eq!(added.payload["chat"]["id"], TEST_GROUP);
    let service = boris
        .push_where(128, |p| p["message"]["attaches"][0]["event"] == "add")
        .await;
    assert_eq!(
        service.payload["message"]["attaches"][0]["userIds"],
        json!([carol.id])
    );
    alice
        .ok(77, json!({"chatId": TEST_GROUP, "userIds": [carol.id], "operation": "remove", "cleanMsgPeriod": 0}))
        .await;
    carol_c
        .push_where(135, |p| {
            p["chat"]["participants"]
                .get(carol.id.to_string())
                .is_none()
        })
        .await;
    // CHAT_INFO omits chats you are not a member of.
    let info = carol_c.ok(48, json!({"chatIds": [TEST_GROUP]})).await;
    assert_eq!(info["chats"], json!([]));
}

#[tokio::test]
async fn history_drops_removed_messages_and_marks_edited_ones() {
    let sim = start().await;
    let control = sim.control();
    let mut sent = Vec::new();
    for (who, text) in [
        (ALICE, "h-keep"),
        (ALICE, "h-edit"),
        (ALICE, "h-remove"),
        (BORIS, "h-hide"),
        (BORIS, "h-last"),
    ] {
        let m = control
            .send(who, DIALOG_ALICE_BORIS, Outgoing::text(text))
            .unwrap();
        // History anchors are times: give every message its own millisecond.
        while now_ms() <= m.time {
            tokio::task::yield_now().await;
        }
        sent.push(m);
    }
    control
        .edit(ALICE, DIALOG_ALICE_BORIS, sent[1].id, "h-edited", None)
        .unwrap();
    control
        .delete(ALICE, DIALOG_ALICE_BORIS, &[sent[2].id], false)
        .unwrap();
    control
        .delete(ALICE, DIALOG_ALICE_BORIS, &[sent[3].id], true)
        .unwrap();
    let texts = |v: &Value| -> Vec<String> {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .filter(|t| t.starts_with("h-"))
            .collect()
    };
    let hist = |from: i64, forward: i64, backward: i64| json!({"chatId": DIALOG_ALICE_BORIS, "from": from, "forward": forward, "backward": backward, "getMessages": true});

    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let latest = alice.ok(49, hist(i64::MAX / 2, 0, 50)).await;
    assert_eq!(texts(&latest), ["h-keep", "h-edited", "h-last"]);
    let messages = latest["messages"].as_array().unwrap();
    let ids: Vec<i64> = messages.iter().map(msg_id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first");
    let edited = messages.iter().find(|m| m["text"] == "h-edited").unwrap();
    assert_eq!(edited["status"], "EDITED");
    assert!(edited["updateTime"].as_i64().unwrap() >= sent[1].time);
    let kept = messages.iter().find(|m| m["text"] == "h-keep").unwrap();
    assert!(kept.get("status").is_none() && kept.get("updateTime").is_none());
    assert!(
        messages.iter().all(|m| m.get("reactionInfo").is_none()),
        "reactions are not part of history"
    );
    // backward n ends with the anchor time, forward n (backward 0) starts
    // with the anchor message; removed ones are skipped either way.
    let back = alice.ok(49, hist(sent[3].time, 0, 2)).await;
    assert_eq!(
        back["messages"].as_array().unwrap().last().map(msg_id),
        Some(sent[1].id),
        "h-remove and (for Alice) h-hide are gone"
    );
    assert_eq!(back["messages"].as_array().unwrap().len(), 2);
    let fwd = alice.ok(49, hist(sent[1].time, 2, 0)).await;
    assert_eq!(texts(&fwd), ["h-edited", "h-last"]);
    let from_removed = alice.ok(49, hist(sent[2].time, 1, 0)).await;
    assert_eq!(texts(&from_removed), ["h-last"]);

    // "Deleted for me" hides it from Alice only.
    let mut boris = Client::logged_in(&sim, BORIS_TOKEN).await;
    let theirs = boris.ok(49, hist(i64::MAX / 2, 0, 50)).await;
    assert_eq!(texts(&theirs), ["h-keep", "h-edited", "h-hide", "h-last"]);
}

#[tokio::test]
async fn new_message_push_names_the_previous_message_the_receiver_can_see() {
    let sim = start().await;
    let control = sim.control();
    let first = control
        .send(ALICE, DIALOG_ALICE_BORIS, Outgoing::text("p-1"))
        .unwrap();
    let second = control
        .send(ALICE, DIALOG_ALICE_BORIS, Outgoing::text("p-2"))
        .unwrap();
    // Boris deleted the second one for himself.
    control
        .delete(BORIS, DIALOG_ALICE_BORIS, &[second.id], true)
        .unwrap();
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut boris = Client::logged_in(&sim, BORIS_TOKEN).await;
    let third = alice
        .ok(64, send_payload(DIALOG_ALICE_BORIS, "p-3", 31))
        .await;
    let third_id = msg_id(&third["message"]);
    let to_boris = boris
        .push_where(128, |p| p["message"]["text"] == "p-3")
        .await;
    assert_eq!(to_boris.payload["prevMessageId"], first.id.to_string());
    let echo = alice
        .push_where(128, |p| p["message"]["text"] == "p-3")
        .await;
    assert_eq!(echo.payload["prevMessageId"], second.id.to_string());

    // A message removed for everyone is nobody's previous message.
    alice
        .ok(
            66,
            json!({"chatId": DIALOG_ALICE_BORIS, "messageIds": [third_id.to_string()], "forMe": false}),
        )
        .await;
    control
        .send(BORIS, DIALOG_ALICE_BORIS, Outgoing::text("p-4"))
        .unwrap();
    let fourth = alice
        .push_where(128, |p| p["message"]["text"] == "p-4")
        .await;
    assert_eq!(fourth.payload["prevMessageId"], second.id.to_string());
    let fourth = boris
        .push_where(128, |p| p["message"]["text"] == "p-4")
        .await;
    assert_eq!(fourth.payload["prevMessageId"], first.id.to_string());
}
