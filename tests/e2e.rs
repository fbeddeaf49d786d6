//! End to end: a Matrix user, through a real client and a real Synapse,
//! logs in to MAX (the simulator) through the bridge bot and chats with MAX
//! accounts driven through the simulator's control API.

mod support;

use maxsim::{Outgoing, fixture_ids};
use ruma::{OwnedRoomId, RoomId};
use support::bridge::Env;
use support::human::Human;

const ALICE_PHONE: &str = "+7 900 000-00-01";
const ALICE_CODE: &str = "000001";

/// Logs the human in as MAX "Alice Ivanova" and joins the DM portal with
/// Boris, returning its room.
async fn alice_with_boris_dm(env: &Env, localpart: &str) -> (Human, OwnedRoomId, OwnedRoomId) {
    let (human, management) = env.user_with_management_room(localpart).await;
    env.login_sms(&human, &management, ALICE_PHONE, ALICE_CODE)
        .await;
    let boris = env.ghost(fixture_ids::BORIS);
    let invite = human.wait_for_invite(|i| i.inviter.as_ref() == Some(&boris)).await;
    assert!(invite.is_direct, "a MAX dialog becomes a direct room");
    human.join(&invite.room_id).await;
    (human, management, invite.room_id)
}

fn texts_from(human: &Human, room: &RoomId, sender: &ruma::UserId) -> Vec<String> {
    human
        .messages(room)
        .into_iter()
        .filter(|m| m.sender == sender)
        .map(|m| m.body)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_login_creates_portals_and_text_flows_both_ways() {
    let env = Env::start().await;
    let (human, _management, dm) = alice_with_boris_dm(&env, "alice").await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);

    // The ghost carries the MAX name.
    let members = human.room_members(&dm).await;
    let ghost = members
        .iter()
        .find(|m| m.user_id == boris)
        .expect("Boris's ghost is in the DM");
    assert_eq!(ghost.display_name.as_deref(), Some("Boris Petrov (MAX)"));

    // The group portal has MAX's title and the members' ghosts.
    let group = human
        .wait_for_invite(|i| i.room_name.as_deref() == Some("Test group"))
        .await;
    human.join(&group.room_id).await;
    let group_members: Vec<_> = human
        .room_members(&group.room_id)
        .await
        .into_iter()
        .map(|m| m.user_id)
        .collect();
    assert!(group_members.contains(&boris));
    assert!(group_members.contains(&env.ghost(fixture_ids::TRANSFERBOT)));
    let bridge_state = human
        .state_event(
            &group.room_id,
            "m.bridge",
            &format!("net.maxbridge://max/{}", fixture_ids::TEST_GROUP),
        )
        .await
        .expect("portal carries m.bridge state");
    assert_eq!(bridge_state["protocol"]["id"], "max");

    // MAX → Matrix, in order, Unicode intact, at the MAX time.
    let incoming = ["Привет, Алиса! 👋", "второе сообщение — ok", "👨‍👩‍👧‍👦 family"];
    let mut sent_times = Vec::new();
    for text in incoming {
        let sent = control
            .send(
                fixture_ids::BORIS,
                fixture_ids::DIALOG_ALICE_BORIS,
                Outgoing::text(text),
            )
            .expect("Boris sends");
        sent_times.push(sent.time);
    }
    let arrived = human
        .wait_for_messages(&dm, incoming.len(), |m| m.sender == boris)
        .await;
    let bodies: Vec<_> = arrived.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, incoming);
    let times: Vec<_> = arrived.iter().map(|m| m.origin_server_ts as i64).collect();
    assert_eq!(times, sent_times, "events carry the MAX send time");

    // Matrix → MAX, in order, nothing doubled.
    let history_before = control
        .messages(fixture_ids::BORIS, fixture_ids::DIALOG_ALICE_BORIS)
        .expect("history")
        .len();
    let outgoing = ["Hi Boris 🙂", "ещё одно", "third: <b>not html</b> & co"];
    for text in outgoing {
        human.send_text(&dm, text).await;
    }
    let last = outgoing[outgoing.len() - 1];
    control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.chat_id == fixture_ids::DIALOG_ALICE_BORIS && m.text == last
        })
        .await
        .expect("the last message reaches MAX");
    let on_max: Vec<String> = control
        .messages(fixture_ids::BORIS, fixture_ids::DIALOG_ALICE_BORIS)
        .expect("history")
        .into_iter()
        .skip(history_before)
        .filter(|m| m.sender == Some(fixture_ids::ALICE))
        .map(|m| m.text)
        .collect();
    assert_eq!(on_max, outgoing, "MAX got each message once, in order");

    // A message Alice sends from another MAX device shows as her own ghost.
    control
        .send(
            fixture_ids::ALICE,
            fixture_ids::DIALOG_ALICE_BORIS,
            Outgoing::text("from my phone"),
        )
        .expect("Alice sends from another device");
    let own = env.ghost(fixture_ids::ALICE);
    human.wait_for_text(&dm, "from my phone").await;
    let echo = human
        .messages(&dm)
        .into_iter()
        .find(|m| m.body == "from my phone")
        .expect("seen");
    assert_eq!(echo.sender, own);

    // Boris answers after all that; our own messages were not echoed back.
    control
        .send(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            Outgoing::text("done"),
        )
        .expect("Boris sends");
    human.wait_for_text(&dm, "done").await;
    let mine = texts_from(&human, &dm, human.user_id());
    assert_eq!(mine, outgoing);
    let from_boris = texts_from(&human, &dm, &boris);
    assert_eq!(from_boris, [&incoming[..], &["done"]].concat());
    assert!(
        human.messages(&dm).iter().all(|m| m.sender != own || m.body == "from my phone"),
        "no echo of Matrix-sent messages"
    );
}
