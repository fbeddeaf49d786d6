//! Proves the end-to-end harness itself: a real Synapse starts, users register,
//! two humans talk through real clients, and what they see is complete and ordered.

mod support;

use support::human::Human;
use support::synapse::{Synapse, SynapseOptions};

#[tokio::test]
async fn two_humans_talk_through_a_real_synapse() {
    let synapse = Synapse::start(SynapseOptions::default()).await;
    assert_eq!(synapse.server_name(), "localhost");

    let (alice_id, token) = synapse.register_user("alice", "alice-pw").await;
    assert_eq!(alice_id, synapse.user_id("alice"));
    assert!(!token.is_empty());
    let alice = Human::login(&synapse, "alice", "alice-pw").await;
    let bob = Human::register(&synapse, "bob").await;
    assert_eq!(alice.user_id(), alice_id);

    let room = alice.create_dm(bob.user_id()).await;
    let invite = bob.wait_for_invite_from(alice.user_id()).await;
    assert_eq!(invite.room_id, room);
    assert!(invite.is_direct, "a DM invite carries is_direct");
    bob.join(&room).await;
    assert!(bob.is_direct(&room).await);

    let members = alice
        .wait_for_membership(&room, bob.user_id(), "join")
        .await;
    assert_eq!(members.user_id, bob.user_id());
    let mut joined: Vec<_> = alice
        .room_members(&room)
        .await
        .into_iter()
        .map(|m| (m.user_id.to_string(), m.membership))
        .collect();
    joined.sort();
    assert_eq!(
        joined,
        [
            ("@alice:localhost".to_owned(), "join".to_owned()),
            ("@bob:localhost".to_owned(), "join".to_owned()),
        ]
    );

    let texts = ["привет 👋", "second — with ümlauts", "🏳️‍🌈 family: 👨‍👩‍👧‍👦"];
    let mut sent = Vec::new();
    for text in texts {
        sent.push(alice.send_text(&room, text).await);
    }
    let reply = bob.send_emote(&room, "waves back 🙂").await;

    let seen = bob
        .wait_for_messages(&room, texts.len(), |m| m.sender == alice.user_id())
        .await;
    let bodies: Vec<&str> = seen.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, texts, "bob sees alice's messages in order, intact");
    let ids: Vec<_> = seen.iter().map(|m| m.event_id.clone()).collect();
    assert_eq!(ids, sent, "each message once, with the id the sender got");

    let emote = alice.wait_for_message(&room, |m| m.event_id == reply).await;
    assert_eq!(emote.msgtype, "m.emote");
    assert_eq!(emote.body, "waves back 🙂");
    assert_eq!(emote.sender, bob.user_id());
    assert!(emote.origin_server_ts >= seen[2].origin_server_ts);

    // Alice sees her own messages too, followed by bob's, with nothing duplicated.
    let alice_view: Vec<String> = alice.messages(&room).into_iter().map(|m| m.body).collect();
    assert_eq!(
        alice_view,
        [texts[0], texts[1], texts[2], "waves back 🙂"],
        "alice's timeline"
    );

    alice
        .send_state(
            &room,
            "m.room.name",
            "",
            serde_json::json!({ "name": "Chat ✨" }),
        )
        .await;
    assert_eq!(bob.room_name(&room).await.as_deref(), Some("Chat ✨"));
    assert!(bob.state_event(&room, "m.room.topic", "").await.is_none());
}

#[tokio::test]
async fn synapse_restarts_with_its_data() {
    let mut synapse = Synapse::start(SynapseOptions::default()).await;
    let (carol, _) = synapse.register_user("carol", "carol-pw").await;
    synapse.restart().await;
    let human = Human::login(&synapse, carol.as_str(), "carol-pw").await;
    assert_eq!(human.user_id(), carol);
}

#[tokio::test]
async fn synapse_loads_the_appservice_registration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registration = dir.path().join("registration.yaml");
    std::fs::write(
        &registration,
        "id: smoke\n\
         url: http://127.0.0.1:9/\n\
         as_token: smoke-as-token\n\
         hs_token: smoke-hs-token\n\
         sender_localpart: smokebot\n\
         rate_limited: false\n\
         namespaces:\n  users:\n    - exclusive: true\n      regex: '@smoke_.*:localhost'\n",
    )
    .expect("write registration");
    let synapse = Synapse::start(SynapseOptions::with_appservice(&registration)).await;

    // Only an appservice Synapse knows can register users in its namespace.
    let resp = reqwest::Client::new()
        .post(format!("{}/_matrix/client/v3/register", synapse.base_url()))
        .bearer_auth("smoke-as-token")
        .json(&serde_json::json!({
            "type": "m.login.application_service",
            "username": "smoke_ghost",
        }))
        .send()
        .await
        .expect("register request");
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.expect("register response");
    assert!(status.is_success(), "register ghost: {status} {body}");
    assert_eq!(body["user_id"], "@smoke_ghost:localhost");
}
