//! End to end: a Matrix user, through a real client and a real Synapse,
//! logs in to MAX (the simulator) through the bridge bot and chats with MAX
//! accounts driven through the simulator's control API.

mod support;

use maxsim::{Outgoing, fixture_ids};
use ruma::RoomId;
use support::bridge::{Env, EnvOptions};
use support::human::Human;
use support::wait;

use support::bridge::{ALICE_CODE, ALICE_PHONE};

/// How long most waits below may take.
const SECONDS_30: std::time::Duration = std::time::Duration::from_secs(30);

/// Boris writes to Alice on MAX (through the simulator's control API).
fn boris_says(control: &maxsim::Control, text: &str) -> maxsim::SimMessage {
    control
        .send(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            Outgoing::text(text),
        )
        .expect("Boris sends")
}

/// Boris makes a group with Alice on MAX; its chat id.
fn boris_creates_group(control: &maxsim::Control, title: &str) -> i64 {
    control
        .create_chat(
            fixture_ids::BORIS,
            maxsim::ChatKind::Chat,
            title,
            &[fixture_ids::ALICE],
        )
        .expect("Boris creates a group")
}

/// Waits until `event` in `room` is redacted.
async fn wait_for_redaction(human: &Human, room: &RoomId, event: &str) {
    human
        .wait_for_event(room, |e| {
            e["type"] == "m.room.redaction"
                && (e["redacts"] == event || e["content"]["redacts"] == event)
        })
        .await;
}

/// Nothing in `room` says `complaint` (the bot's notices of failures).
fn assert_no_notice(human: &Human, room: &RoomId, complaint: &str) {
    let complaints: Vec<String> = human
        .messages(room)
        .into_iter()
        .filter(|m| m.body.contains(complaint))
        .map(|m| m.body)
        .collect();
    assert!(complaints.is_empty(), "{complaints:?}");
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
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);

    // The ghost carries the MAX name.
    let members = human.room_members(&dm).await;
    let ghost = members
        .iter()
        .find(|m| m.user_id == boris)
        .expect("Boris's ghost is in the DM");
    assert_eq!(ghost.display_name.as_deref(), Some("Boris Petrov (MAX)"));
    // ... and the MAX avatar, mirrored into the media repository.
    let member = human
        .state_event(&dm, "m.room.member", boris.as_str())
        .await
        .expect("ghost membership");
    let avatar = member["avatar_url"].as_str().unwrap_or_default().to_owned();
    assert!(avatar.starts_with("mxc://localhost/"), "{member}");
    let bytes = download(&env, &human, &avatar).await;
    assert_eq!(
        bytes,
        avatar_png(&env, fixture_ids::BORIS).await,
        "the MAX avatar, mirrored"
    );

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
        let sent = boris_says(control, text);
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
    boris_says(control, "done");
    human.wait_for_text(&dm, "done").await;
    let mine = texts_from(&human, &dm, human.user_id());
    assert_eq!(mine, outgoing);
    let from_boris = texts_from(&human, &dm, &boris);
    assert_eq!(from_boris, [&incoming[..], &["done"]].concat());
    assert!(
        human
            .messages(&dm)
            .iter()
            .all(|m| m.sender != own || m.body == "from my phone"),
        "no echo of Matrix-sent messages"
    );

    // Edits on MAX become replacements, deletions redactions.
    let done = control
        .messages(fixture_ids::BORIS, fixture_ids::DIALOG_ALICE_BORIS)
        .expect("history")
        .into_iter()
        .rfind(|m| m.text == "done")
        .expect("stored on MAX");
    let done_event = human
        .messages(&dm)
        .into_iter()
        .find(|m| m.body == "done")
        .expect("bridged")
        .event_id;
    control
        .edit(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            done.id,
            "done, edited",
            None,
        )
        .expect("Boris edits");
    let edit = human
        .wait_for_message(&dm, |m| m.rel_type() == Some("m.replace"))
        .await;
    assert_eq!(
        edit.json["content"]["m.new_content"]["body"],
        "done, edited"
    );
    assert_eq!(
        edit.json["content"]["m.relates_to"]["event_id"],
        done_event.as_str()
    );
    control
        .delete(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            &[done.id],
            false,
        )
        .expect("Boris deletes");
    wait_for_redaction(&human, &dm, done_event.as_str()).await;

    // A chat that appears later gets its portal with its first message.
    let chat = boris_creates_group(control, "Later group");
    control
        .send(
            fixture_ids::BORIS,
            chat,
            Outgoing::text("welcome to the new group"),
        )
        .expect("Boris sends");
    let invite = human
        .wait_for_invite(|i| i.room_name.as_deref() == Some("Later group"))
        .await;
    human.join(&invite.room_id).await;
    let first = human
        .wait_for_text(&invite.room_id, "welcome to the new group")
        .await;
    assert_eq!(first.sender, boris);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_conversation_reuses_portals_and_loses_nothing() {
    let mut env = Env::start().await;
    let (human, management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control().clone();
    let boris = env.ghost(fixture_ids::BORIS);
    boris_says(&control, "before restart");
    human.wait_for_text(&dm, "before restart").await;
    human.send_text(&dm, "my answer").await;
    control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.text == "my answer"
        })
        .await
        .expect("reaches MAX");
    let rooms_before = human.client().rooms().len();

    let group = human
        .wait_for_invite(|i| i.room_name.as_deref() == Some("Test group"))
        .await
        .room_id;
    human.join(&group).await;
    // Leaving a portal is undone at the next start: the user is invited again.
    human.leave(&group).await;

    env.stop_bridge().await;
    // Sent while the bridge is down: caught up from MAX history, also in a
    // portal where nothing was bridged yet.
    boris_says(&control, "while you were away");
    control
        .send(
            fixture_ids::BORIS,
            fixture_ids::TEST_GROUP,
            Outgoing::text("group news while away"),
        )
        .expect("Boris posts in the group");
    env.start_bridge().await;
    human.wait_for_text(&dm, "while you were away").await;
    // Joining works again only once the bridge has invited us back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while let Err(error) = human.client().join_room_by_id(&group).await {
        assert!(
            std::time::Instant::now() < deadline,
            "never invited back into the group portal: {error}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    human.join(&group).await;
    human.wait_for_text(&group, "group news while away").await;
    boris_says(&control, "after restart");
    human.wait_for_text(&dm, "after restart").await;
    human.send_text(&dm, "still here").await;
    control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.text == "still here"
        })
        .await
        .expect("reaches MAX after the restart");
    human.wait_for_text(&dm, "still here").await;

    let from_boris = texts_from(&human, &dm, &boris);
    assert_eq!(
        from_boris,
        ["before restart", "while you were away", "after restart"],
        "each message once, in order"
    );
    assert_eq!(
        texts_from(&human, &dm, human.user_id()),
        ["my answer", "still here"]
    );
    // No new portal rooms or invites appeared for the same chats.
    assert!(
        human
            .invites()
            .iter()
            .all(|i| i.inviter.as_ref() != Some(&boris) || i.room_id == dm),
        "no second portal for the dialog"
    );
    assert_eq!(human.client().rooms().len(), rooms_before);
    let listing = env
        .command(&human, &management, "list", "Bridged chats")
        .await;
    assert!(listing.contains(dm.as_str()), "{listing}");
    // Rendered: each room a link a client opens.
    let rendered = human
        .messages(&management)
        .into_iter()
        .rev()
        .find(|m| m.sender == env.bot() && m.body.starts_with("Bridged chats"))
        .expect("the listing");
    let html = rendered.json["content"]["formatted_body"]
        .as_str()
        .unwrap_or_default();
    assert!(
        html.contains(&format!("href=\"https://matrix.to/#/{dm}\"")),
        "{html}"
    );
    // `sync` reads the chat list (53) again; portals stay the same rooms.
    let synced = env
        .command(&human, &management, "sync", "Synchronising")
        .await;
    let chats = control.chats(fixture_ids::ALICE).expect("chats").len() - 1;
    assert!(synced.contains(&format!("{chats} chats")), "{synced}");
    let rooms_after_sync = env
        .command(&human, &management, "list", "Bridged chats")
        .await;
    assert!(rooms_after_sync.contains(dm.as_str()), "{rooms_after_sync}");
    assert_eq!(human.client().rooms().len(), rooms_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appservice_api_rejects_wrong_tokens_and_refuses_unpermitted_users() {
    let env = Env::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/_matrix/app/v1/transactions/evil1", env.appservice_url());
    let body = serde_json::json!({"events": []});
    let missing = http.put(&url).json(&body).send().await.expect("answers");
    assert_eq!(missing.status(), 401);
    let wrong = http
        .put(&url)
        .bearer_auth("not-the-hs-token")
        .json(&body)
        .send()
        .await
        .expect("answers");
    assert_eq!(wrong.status(), 403);
    let right = http
        .put(&url)
        .bearer_auth(env.hs_token())
        .json(&body)
        .send()
        .await
        .expect("answers");
    assert_eq!(right.status(), 200);

    // Mallory is blocked by `permissions`: the bot refuses politely and leaves.
    let mallory = Human::register(&env.synapse, "mallory").await;
    let room = mallory.create_dm(&env.bot()).await;
    let bot = env.bot();
    let refusal = mallory.wait_for_message(&room, |m| m.sender == bot).await;
    assert!(refusal.body.contains("not allowed"), "{}", refusal.body);
    mallory.wait_for_membership(&room, &bot, "leave").await;

    // A wrong SMS code shows MAX's error, and the flow waits for another try.
    let (carol, management) = env.user_with_management_room("carol").await;
    env.command(&carol, &management, "login", "phone number")
        .await;
    env.command(&carol, &management, fixture_ids::BORIS_PHONE, "code")
        .await;
    let refused = env
        .command(&carol, &management, "999999", "did not accept the code")
        .await;
    assert!(refused.contains("error.code.wrong"), "{refused}");
    env.command(
        &carol,
        &management,
        fixture_ids::BORIS_SMS,
        "Logged in to MAX as Boris Petrov",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_socket_is_reported_and_recovered_and_failures_are_visible() {
    let status = support::status::StatusSink::start().await;
    let env = Env::start_with_options(EnvOptions {
        status_endpoint: Some(status.url().to_owned()),
        bridge_options: vec![("message_status_events".to_owned(), "true".to_owned())],
        ..EnvOptions::default()
    })
    .await;
    let (human, management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let bot = env.bot();

    // The login's state reaches the status endpoint, with the
    // appservice's token and the MAX account it is about.
    let connected = status.wait_for_state(0, "CONNECTED").await;
    assert_eq!(
        connected.authorization,
        Some(format!("Bearer {}", env.as_token()))
    );
    assert_eq!(connected.body["user_id"], "@alice:localhost");
    assert_eq!(connected.body["remote_id"], fixture_ids::ALICE.to_string());

    let before_drop = status.reports().len();
    assert!(control.drop_connections(Some(fixture_ids::ALICE)) > 0);
    human
        .wait_for_message(&management, |m| {
            m.sender == bot && m.body.contains("Lost the connection")
        })
        .await;
    human
        .wait_for_message(&management, |m| {
            m.sender == bot && m.body.contains("Reconnected")
        })
        .await;
    let dropped = status
        .wait_for_state(before_drop, "TRANSIENT_DISCONNECT")
        .await;
    assert_eq!(dropped.body["error"], "max-disconnected");
    status.wait_for_state(before_drop, "CONNECTED").await;
    // Reported in order: the last word on the login is that it works.
    let reports = status.reports();
    assert_eq!(
        reports[before_drop..].last().map(|r| r.state()),
        Some("CONNECTED"),
        "{reports:#?}"
    );
    let pong = env
        .command(&human, &management, "ping", "Logged in to MAX")
        .await;
    assert!(pong.contains("connected"), "{pong}");
    let logins = env
        .command(&human, &management, "list-logins", "Your login")
        .await;
    assert!(
        logins.contains("@alice:localhost")
            && logins.contains("Alice")
            && logins.contains(&format!("MAX id {}: connected", fixture_ids::ALICE)),
        "{logins}"
    );
    // Finding someone to write to: by a part of a name among her contacts,
    // by phone number through MAX, or nobody.
    let start_boris = format!("`start-chat {}`", fixture_ids::BORIS);
    let by_name = env
        .command(&human, &management, "search bor", "Found for")
        .await;
    assert!(
        by_name.contains("Boris") && by_name.contains(&start_boris),
        "{by_name}"
    );
    let by_phone = env
        .command(&human, &management, "search +79000000002", "Found for")
        .await;
    assert!(by_phone.contains(&start_boris), "{by_phone}");
    env.command(&human, &management, "search zzz", "Nobody found")
        .await;
    boris_says(control, "after the drop");
    human.wait_for_text(&dm, "after the drop").await;

    // MAX refuses a send: the user sees why, in the room.
    control.fail_opcode(64, Some("chat.not.access"));
    let failed = human.send_text(&dm, "this one fails").await;
    let notice = human
        .wait_for_message(&dm, |m| m.sender == bot && m.body.contains("not delivered"))
        .await;
    assert!(notice.body.contains("chat.not.access"), "{}", notice.body);
    // And clients that read message statuses can mark it failed.
    let status_of = |event: &ruma::EventId| {
        let event = event.to_string();
        move |e: &serde_json::Value| {
            e["type"] == "com.beeper.message_send_status"
                && e["content"]["m.relates_to"]["event_id"] == event.as_str()
        }
    };
    let refused = human.wait_for_event(&dm, status_of(&failed)).await;
    assert_eq!(refused["content"]["status"], "FAIL_PERMANENT", "{refused}");
    assert_eq!(refused["content"]["reason"], "m_foreign_network_error");
    assert!(
        refused["content"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("chat.not.access")),
        "{refused}"
    );
    control.fail_opcode(64, None);
    let delivered = human.send_text(&dm, "this one arrives").await;
    let success = human.wait_for_event(&dm, status_of(&delivered)).await;
    assert_eq!(success["content"]["status"], "SUCCESS", "{success}");
    assert_eq!(success["sender"], bot.as_str());
    // Edits and reactions have their status too.
    let edit = human
        .send_edit(&dm, &delivered, "this one arrives, edited")
        .await;
    let edited = human.wait_for_event(&dm, status_of(&edit)).await;
    assert_eq!(edited["content"]["status"], "SUCCESS", "{edited}");
    let reaction = human.send_reaction(&dm, &delivered, "👍").await;
    let reacted = human.wait_for_event(&dm, status_of(&reaction)).await;
    assert_eq!(reacted["content"]["status"], "SUCCESS", "{reacted}");

    // The server revokes the token: the user is told to log in again.
    let device = control
        .last_session(fixture_ids::ALICE)
        .and_then(|s| s.device_id)
        .expect("the bridge presented a device id");
    let before_revoke = status.reports().len();
    control.revoke_tokens(fixture_ids::ALICE);
    human
        .wait_for_message(&management, |m| {
            m.sender == bot && m.body.contains("logged you out")
        })
        .await;
    let revoked = status
        .wait_for_state(before_revoke, "BAD_CREDENTIALS")
        .await;
    assert_eq!(revoked.body["error"], "max-logged-out");
    let pong = env.command(&human, &management, "ping", "login").await;
    assert!(
        pong.contains("Not connected") || pong.contains("not logged in"),
        "{pong}"
    );
    // Logging in again presents the same device to MAX, and bridging resumes.
    env.login_sms(&human, &management, ALICE_PHONE, ALICE_CODE)
        .await;
    assert_eq!(
        control
            .last_session(fixture_ids::ALICE)
            .and_then(|s| s.device_id),
        Some(device)
    );
    boris_says(control, "welcome back");
    human.wait_for_text(&dm, "welcome back").await;

    // Logging out is reported too.
    let before_logout = status.reports().len();
    env.command(&human, &management, "logout", "Logged out")
        .await;
    status.wait_for_state(before_logout, "LOGGED_OUT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_matrix_users_bridge_their_own_accounts() {
    let env = Env::start().await;
    let (alice, _, alice_dm) = env.alice_with_boris_dm("alice").await;
    let (bob, bob_management) = env.user_with_management_room("bob").await;
    env.command(
        &bob,
        &bob_management,
        &format!("login-token {}", fixture_ids::BORIS_TOKEN),
        "Logged in to MAX as Boris",
    )
    .await;
    let alice_ghost = env.ghost(fixture_ids::ALICE);
    let bob_dm = bob
        .wait_for_invite(|i| i.inviter.as_ref() == Some(&alice_ghost))
        .await
        .room_id;
    bob.join(&bob_dm).await;
    assert_ne!(alice_dm, bob_dm, "each login has its own portal");

    alice
        .send_text(&alice_dm, "hello Bob, via two bridges")
        .await;
    let got = bob
        .wait_for_text(&bob_dm, "hello Bob, via two bridges")
        .await;
    assert_eq!(got.sender, alice_ghost);
    bob.send_text(&bob_dm, "hi Alice!").await;
    let got = alice.wait_for_text(&alice_dm, "hi Alice!").await;
    assert_eq!(got.sender, env.ghost(fixture_ids::BORIS));
    bob.wait_for_text(&bob_dm, "hi Alice!").await;
    // Each side sees the other's message once and its own once.
    assert_eq!(
        texts_from(&alice, &alice_dm, alice.user_id()),
        ["hello Bob, via two bridges"]
    );
    assert_eq!(texts_from(&bob, &bob_dm, bob.user_id()), ["hi Alice!"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_login_resumes_after_max_refused_it_for_a_while() {
    let mut env = Env::start().await;
    let (human, management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control().clone();
    let bot = env.bot();

    env.stop_bridge().await;
    control.rate_limit_logins(true);
    env.start_bridge().await;
    human
        .wait_for_message(&management, |m| {
            m.sender == bot && m.body.contains("Could not reconnect to MAX")
        })
        .await;
    control.rate_limit_logins(false);
    human
        .wait_for_message(&management, |m| {
            m.sender == bot && m.body.contains("Reconnected to MAX")
        })
        .await;
    boris_says(&control, "you are back");
    human.wait_for_text(&dm, "you are back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_names_what_is_wrong_with_the_homeserver() {
    support::bridge::init_tracing();
    let db = support::pg::TestDb::create().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let registration = dir.path().join("registration.yaml");
    let yaml = format!(
        "homeserver:\n    address: http://127.0.0.1:9\n    domain: localhost\n    start_patience: 0\n\
         appservice:\n    address: http://127.0.0.1:9\n    port: 0\n    registration: {}\n\
         database:\n    url: {}\n",
        registration.display(),
        db.url()
    );
    let config = maxbridge::config::Config::parse(&yaml, "test.yaml").expect("config parses");
    let reg = maxbridge::config::generate_registration(&config).expect("registration");
    let error = match maxbridge::app::start(config, reg).await {
        Ok(_) => panic!("a bridge without a homeserver must not start"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("homeserver at http://127.0.0.1:9/ cannot be reached"),
        "{error}"
    );
    db.drop_db().await;
}

/// Waits for a push matching `pred` on a MAX client's event stream.
async fn wait_for_push(
    events: &mut maxproto::client::ClientEvents,
    what: &str,
    pred: impl Fn(&maxproto::types::Push) -> bool,
) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("MAX client closed while waiting for {what}"));
        if let maxproto::client::ClientEvent::Push(push) = event
            && let Ok(push) = push.into_typed()
            && pred(&push)
        {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_read_receipts_cross_both_ways() {
    use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
    use matrix_sdk::ruma::events::receipt::{ReceiptThread, ReceiptType as StoredReceiptType};
    use maxproto::types::Push;

    let env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let boris_ghost = env.ghost(fixture_ids::BORIS);
    let room = human.client().get_room(&dm).expect("joined room");

    // Boris, as a real MAX client, watches the dialog.
    let mut config = maxproto::client::ClientConfig::web("boris-phone");
    config.endpoint = env.sim.ws_url();
    let (boris, mut boris_events, _) =
        maxproto::client::Client::login(config, maxproto::Token::new(fixture_ids::BORIS_TOKEN))
            .await
            .expect("Boris logs in");

    // Matrix → MAX: typing.
    room.typing_notice(true).await.expect("typing sent");
    wait_for_push(&mut boris_events, "Alice's typing", |p| {
        matches!(p, Push::Typing(t) if t.user_id.0 == fixture_ids::ALICE
            && t.chat_id.0 == fixture_ids::DIALOG_ALICE_BORIS)
    })
    .await;

    // Matrix → MAX: a read receipt on Boris's message marks it read on MAX.
    let sent = boris_says(control, "read me");
    let bridged = human.wait_for_text(&dm, "read me").await;
    room.send_single_receipt(
        ReceiptType::Read,
        ReceiptThread::Unthreaded,
        bridged.event_id,
    )
    .await
    .expect("receipt sent");
    wait_for_push(
        &mut boris_events,
        "Alice's read mark",
        |p| matches!(p, Push::Mark(m) if m.user_id.0 == fixture_ids::ALICE && m.mark == sent.time),
    )
    .await;

    // MAX → Matrix: Boris types, and reads Alice's message.
    let (_guard, mut typing) = room.subscribe_to_typing_notifications();
    control
        .typing(fixture_ids::BORIS, fixture_ids::DIALOG_ALICE_BORIS)
        .expect("Boris types");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let users = tokio::time::timeout_at(deadline, typing.recv())
            .await
            .expect("Boris's typing reaches Matrix")
            .expect("typing stream open");
        if users.contains(&boris_ghost) {
            break;
        }
    }
    let mine = human.send_text(&dm, "did you read this?").await;
    let on_max = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.text == "did you read this?"
        })
        .await
        .expect("reaches MAX");
    control
        .mark_read(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            on_max.id,
        )
        .expect("Boris reads");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let receipt = room
            .load_user_receipt(
                StoredReceiptType::Read,
                ReceiptThread::Unthreaded,
                &boris_ghost,
            )
            .await
            .expect("receipt store");
        if receipt.as_ref().is_some_and(|(event, _)| *event == mine) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Boris's read receipt never reached Matrix (last: {receipt:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    boris.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_formatting_edits_and_redactions_reach_max() {
    let env = Env::start().await;
    let (human, management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let stored = |text: &str| {
        let text = text.to_owned();
        async move {
            control
                .wait_for_message(std::time::Duration::from_secs(30), |m| {
                    m.chat_id == fixture_ids::DIALOG_ALICE_BORIS && m.text == text
                })
                .await
                .expect("reaches MAX")
        }
    };

    // Formatting goes over as MAX elements.
    human
        .send_event(
            &dm,
            "m.room.message",
            serde_json::json!({
                "msgtype": "m.text",
                "body": "**bold** and _it_",
                "format": "org.matrix.custom.html",
                "formatted_body": "<strong>bold</strong> and <em>it</em>",
            }),
        )
        .await;
    let formatted = stored("bold and it").await;
    assert_eq!(
        formatted.elements,
        [
            serde_json::json!({"type": "STRONG", "from": 0, "length": 4}),
            serde_json::json!({"type": "EMPHASIZED", "from": 9, "length": 2}),
        ]
    );

    // A pill to Boris's ghost is his MAX name on MAX, not the ghost's.
    let boris = env.ghost(fixture_ids::BORIS);
    human
        .send_event(
            &dm,
            "m.room.message",
            serde_json::json!({
                "msgtype": "m.text",
                "body": "Boris Petrov (MAX): look",
                "format": "org.matrix.custom.html",
                "formatted_body": format!("<a href=\"https://matrix.to/#/{boris}\">Boris Petrov (MAX)</a>: <b>look</b>"),
            }),
        )
        .await;
    let mention = stored("Boris Petrov: look").await;
    assert_eq!(
        mention.elements,
        [serde_json::json!({"type": "STRONG", "from": 14, "length": 4})]
    );

    let original = human.send_text(&dm, "typo hree").await;
    let on_max = stored("typo hree").await;
    human.send_edit(&dm, &original, "typo here").await;
    let edited = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.id == on_max.id && m.status.as_deref() == Some("EDITED")
        })
        .await
        .expect("the edit reaches MAX");
    assert_eq!(edited.text, "typo here");

    let doomed = human.send_text(&dm, "delete me").await;
    let doomed_on_max = stored("delete me").await;
    human.redact(&dm, &doomed, None).await;
    control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.id == doomed_on_max.id && m.status.as_deref() == Some("REMOVED")
        })
        .await
        .expect("the deletion reaches MAX");

    // Nothing of that comes back: Boris's next message is the only thing
    // the ghosts say in the room.
    boris_says(control, "noted");
    human.wait_for_text(&dm, "noted").await;
    let from_ghosts: Vec<String> = human
        .messages(&dm)
        .into_iter()
        .filter(|m| m.sender != *human.user_id() && m.sender != env.bot())
        .map(|m| m.body)
        .collect();
    assert_eq!(from_ghosts, ["noted"]);
    let redactions = human
        .events(&dm)
        .into_iter()
        .filter(|e| e["type"] == "m.room.redaction")
        .count();
    assert_eq!(redactions, 1, "only the user's own redaction");
    // MAX's echoes of the edit and the send were recognised, not retried as
    // foreign messages (which would have failed loudly here).
    assert_no_notice(&human, &management, "could not be bridged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_wire_format_bridges_the_same() {
    let env = Env::start_with(maxsim::SimConfig::default(), "binary").await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let session = control
        .last_session(fixture_ids::ALICE)
        .expect("the bridge's session is known");
    assert_eq!(session.user_agent["deviceType"], "WEB");

    boris_says(control, "по бинарному каналу");
    human.wait_for_text(&dm, "по бинарному каналу").await;
    let event = human.send_text(&dm, "binary reply").await;
    let on_max = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.text == "binary reply"
        })
        .await
        .expect("reaches MAX");
    // A deletion on MAX arrives over binary frames as 142, not 128.
    control
        .delete(
            fixture_ids::ALICE,
            fixture_ids::DIALOG_ALICE_BORIS,
            &[on_max.id],
            false,
        )
        .expect("Alice deletes on another device");
    wait_for_redaction(&human, &dm, event.as_str()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homeserver_outage_holds_messages_in_order_until_it_returns() {
    let mut env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control().clone();

    env.synapse.stop().await;
    for text in ["during the outage 1", "during the outage 2"] {
        boris_says(&control, text);
    }
    // The bridge got the first one and holds it (the second waits behind it).
    let bridge = std::sync::Arc::clone(&env.bridge.as_ref().expect("running").bridge);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while bridge.held_for_homeserver() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the bridge never tried to deliver while the homeserver was down"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    env.synapse.restart().await;
    let boris = env.ghost(fixture_ids::BORIS);
    let arrived = human.wait_for_messages(&dm, 2, |m| m.sender == boris).await;
    let bodies: Vec<_> = arrived.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["during the outage 1", "during the outage 2"]);
    assert_eq!(bridge.held_for_homeserver(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_cross_both_ways() {
    let env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);
    let bot = env.bot();
    let reaction_of = |e: &serde_json::Value, sender: &ruma::UserId, key: &str| {
        e["type"] == "m.reaction"
            && e["sender"] == sender.as_str()
            && e["content"]["m.relates_to"]["key"] == key
    };

    // MAX → Matrix: Boris reacts to Alice's message, changes his mind, removes it.
    let mine = human.send_text(&dm, "react to this").await;
    let on_max = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.text == "react to this"
        })
        .await
        .expect("reaches MAX");
    control
        .react(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            on_max.id,
            Some("👍"),
        )
        .expect("Boris reacts");
    let thumbs = human
        .wait_for_event(&dm, |e| reaction_of(e, &boris, "👍"))
        .await;
    assert_eq!(thumbs["content"]["m.relates_to"]["event_id"], mine.as_str());
    assert_eq!(
        thumbs["content"]["m.relates_to"]["rel_type"],
        "m.annotation"
    );
    let thumbs_id = thumbs["event_id"].as_str().expect("event id").to_owned();
    control
        .react(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            on_max.id,
            Some("🔥"),
        )
        .expect("Boris changes his reaction");
    human
        .wait_for_event(&dm, |e| reaction_of(e, &boris, "🔥"))
        .await;
    let redacted = |id: String| {
        move |e: &serde_json::Value| {
            e["type"] == "m.room.redaction"
                && (e["redacts"] == id.as_str() || e["content"]["redacts"] == id.as_str())
        }
    };
    human.wait_for_event(&dm, redacted(thumbs_id)).await;
    let fire_id = human
        .events(&dm)
        .into_iter()
        .find(|e| reaction_of(e, &boris, "🔥"))
        .and_then(|e| e["event_id"].as_str().map(str::to_owned))
        .expect("fire reaction");
    control
        .react(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            on_max.id,
            None,
        )
        .expect("Boris removes his reaction");
    human.wait_for_event(&dm, redacted(fire_id)).await;

    // Matrix → MAX: Alice reacts to Boris's message and takes it back.
    let theirs = boris_says(control, "nice?");
    let bridged = human.wait_for_text(&dm, "nice?").await;
    let heart = human.send_reaction(&dm, &bridged.event_id, "❤️").await;
    let reacted = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.id == theirs.id
                && m.reactions.get(&fixture_ids::ALICE).map(String::as_str) == Some("❤️")
        })
        .await;
    assert!(reacted.is_ok(), "the reaction reaches MAX");
    human.redact(&dm, &heart, None).await;
    control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.id == theirs.id && m.reactions.is_empty()
        })
        .await
        .expect("the reaction is taken back on MAX");

    // A reaction MAX does not offer is refused with MAX's reason, and
    // taken off the Matrix side too.
    let crab = human.send_reaction(&dm, &bridged.event_id, "🦀").await;
    let notice = human
        .wait_for_message(&dm, |m| m.sender == bot && m.body.contains("reaction 🦀"))
        .await;
    assert!(notice.body.contains("not delivered"), "{}", notice.body);
    wait_for_redaction(&human, &dm, crab.as_str()).await;
    // Our own reactions never came back as ghost reactions.
    let own_ghost = env.ghost(fixture_ids::ALICE);
    assert!(
        human
            .events(&dm)
            .iter()
            .all(|e| !(e["type"] == "m.reaction" && e["sender"] == own_ghost.as_str()))
    );
}

/// A real PNG: the simulator's generated avatar of a MAX user.
async fn avatar_png(env: &Env, max_user_id: i64) -> Vec<u8> {
    reqwest::get(format!("{}/i?r=u{max_user_id}", env.sim.http_url()))
        .await
        .expect("avatar answers")
        .bytes()
        .await
        .expect("avatar bytes")
        .to_vec()
}

/// Downloads an `mxc://` URI through the homeserver as the human.
/// Uploads bytes to Synapse as the human; their content URI.
async fn matrix_upload(human: &Human, mime: &str, bytes: Vec<u8>) -> ruma::OwnedMxcUri {
    human
        .client()
        .media()
        .upload(&mime.parse().expect("mime"), bytes, None)
        .await
        .expect("upload to Synapse")
        .content_uri
}

/// Uploads bytes to MAX as `account`; the attach to send them with.
fn max_upload(
    control: &maxsim::Control,
    account: i64,
    kind: maxsim::UploadKind,
    (name, mime): (&str, &str),
    bytes: Vec<u8>,
) -> serde_json::Value {
    control
        .upload(account, kind, name, mime, bytes)
        .expect("upload to MAX")
}

async fn download(env: &Env, human: &Human, mxc: &str) -> Vec<u8> {
    let (server, media_id) = mxc
        .strip_prefix("mxc://")
        .and_then(|rest| rest.split_once('/'))
        .unwrap_or_else(|| panic!("not an mxc URI: {mxc}"));
    let response = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v1/media/download/{server}/{media_id}",
            env.synapse.base_url()
        ))
        .bearer_auth(human.client().access_token().expect("logged in"))
        .send()
        .await
        .expect("media answers");
    assert!(response.status().is_success(), "{}", response.status());
    response.bytes().await.expect("media bytes").to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_photos_and_files_arrive_as_matrix_media() {
    let env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);

    // A real PNG (the simulator's own avatar of Boris) and an arbitrary file.
    let png = avatar_png(&env, fixture_ids::BORIS).await;
    let file: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let photo = max_upload(
        control,
        fixture_ids::BORIS,
        maxsim::UploadKind::Photo,
        ("cat.png", "image/png"),
        png.clone(),
    );
    let document = max_upload(
        control,
        fixture_ids::BORIS,
        maxsim::UploadKind::File,
        ("отчёт.pdf", "application/pdf"),
        file.clone(),
    );
    control
        .send(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            maxsim::Outgoing {
                text: "look at these".to_owned(),
                attaches: vec![photo, document],
                ..Default::default()
            },
        )
        .expect("Boris sends");

    let parts = human.wait_for_messages(&dm, 3, |m| m.sender == boris).await;
    assert_eq!(parts[0].msgtype, "m.text");
    assert_eq!(parts[0].body, "look at these");
    assert_eq!(parts[1].msgtype, "m.image");
    let image = &parts[1].json["content"];
    assert_eq!(image["info"]["mimetype"], "image/png");
    assert_eq!(image["info"]["size"], png.len());
    let got = download(&env, &human, image["url"].as_str().expect("url")).await;
    assert_eq!(got, png, "the photo's bytes");
    assert_eq!(parts[2].msgtype, "m.file");
    let doc = &parts[2].json["content"];
    assert_eq!(doc["filename"], "отчёт.pdf");
    assert_eq!(doc["info"]["mimetype"], "application/pdf");
    let got = download(&env, &human, doc["url"].as_str().expect("url")).await;
    assert_eq!(got, file, "the file's bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_images_and_files_are_uploaded_to_max() {
    let env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();

    let png = avatar_png(&env, fixture_ids::ALICE).await;
    let file: Vec<u8> = (0..90_000u32).map(|i| (i * 13 % 253) as u8).collect();
    let image_mxc = matrix_upload(&human, "image/png", png.clone()).await;
    let file_mxc = matrix_upload(&human, "application/pdf", file.clone()).await;
    human
        .send_event(
            &dm,
            "m.room.message",
            serde_json::json!({"msgtype": "m.image", "body": "me.png", "url": image_mxc,
                               "info": {"mimetype": "image/png", "size": png.len()}}),
        )
        .await;
    human
        .send_event(
            &dm,
            "m.room.message",
            serde_json::json!({"msgtype": "m.file", "body": "план.pdf", "filename": "план.pdf",
                               "url": file_mxc,
                               "info": {"mimetype": "application/pdf", "size": file.len()}}),
        )
        .await;

    let attach_of = |kind: &'static str| {
        control.wait_for_message(std::time::Duration::from_secs(30), move |m| {
            m.chat_id == fixture_ids::DIALOG_ALICE_BORIS
                && m.sender == Some(fixture_ids::ALICE)
                && m.attaches.first().is_some_and(|a| a["_type"] == kind)
        })
    };
    let photo = attach_of("PHOTO").await.expect("the image reaches MAX");
    let photo_id = photo.attaches[0]["photoId"].as_i64().expect("photo id");
    let (bytes, content_type) = control.media(photo_id).expect("stored photo");
    assert_eq!(bytes.as_ref(), png.as_slice());
    assert_eq!(content_type, "image/png");
    let doc = attach_of("FILE").await.expect("the file reaches MAX");
    assert_eq!(doc.attaches[0]["name"], "план.pdf");
    let file_id = doc.attaches[0]["fileId"].as_i64().expect("file id");
    let (bytes, content_type) = control.media(file_id).expect("stored file");
    assert_eq!(bytes.as_ref(), file.as_slice());
    assert_eq!(content_type, "application/pdf");
}

/// A photo with a caption is one message on each side, whichever side sent
/// it, and an edit of its caption on either side keeps the photo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captions_travel_with_their_media_and_edits_keep_the_media() {
    let env = Env::start().await;
    let (human, management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);

    // MAX → Matrix: one m.image whose body is the caption (MSC2530).
    let png = avatar_png(&env, fixture_ids::BORIS).await;
    let photo = max_upload(
        control,
        fixture_ids::BORIS,
        maxsim::UploadKind::Photo,
        ("cat.png", "image/png"),
        png.clone(),
    );
    let sent = control
        .send(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            maxsim::Outgoing {
                text: "my cat".to_owned(),
                elements: vec![serde_json::json!({"type": "STRONG", "from": 3, "length": 3})],
                attaches: vec![photo],
                ..Default::default()
            },
        )
        .expect("Boris sends");
    let image = human
        .wait_for_message(&dm, |m| m.sender == boris && m.msgtype == "m.image")
        .await;
    let content = &image.json["content"];
    assert_eq!(content["body"], "my cat");
    assert_eq!(content["formatted_body"], "my <strong>cat</strong>");
    assert!(content["filename"].as_str().is_some_and(|f| !f.is_empty()));
    let url = content["url"].as_str().expect("url").to_owned();
    assert_eq!(download(&env, &human, &url).await, png, "the photo's bytes");

    control
        .edit(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            sent.id,
            "my cat, asleep",
            Some(Vec::new()),
        )
        .expect("Boris edits the caption");
    let edit = human
        .wait_for_message(&dm, |m| {
            m.sender == boris && m.json["content"]["m.relates_to"]["rel_type"] == "m.replace"
        })
        .await;
    let new_content = &edit.json["content"]["m.new_content"];
    assert_eq!(new_content["msgtype"], "m.image");
    assert_eq!(new_content["body"], "my cat, asleep");
    assert_eq!(new_content["url"], url.as_str(), "the edit keeps the photo");
    assert_eq!(
        edit.json["content"]["m.relates_to"]["event_id"],
        image.event_id.as_str()
    );

    // Matrix → MAX: the caption is the MAX message's text beside the photo.
    let mxc = matrix_upload(&human, "image/png", png.clone()).await;
    let original = human
        .send_event(
            &dm,
            "m.room.message",
            serde_json::json!({"msgtype": "m.image", "body": "here I am", "filename": "me.png",
                               "url": mxc, "info": {"mimetype": "image/png", "size": png.len()}}),
        )
        .await;
    let on_max = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.sender == Some(fixture_ids::ALICE) && m.text == "here I am"
        })
        .await
        .expect("the captioned photo reaches MAX");
    assert_eq!(on_max.attaches.len(), 1);
    assert_eq!(on_max.attaches[0]["_type"], "PHOTO");
    let photo_id = on_max.attaches[0]["photoId"].as_i64().expect("photo id");

    human
        .send_event(
            &dm,
            "m.room.message",
            serde_json::json!({
                "msgtype": "m.image", "body": "* here I am, smiling",
                "m.new_content": {"msgtype": "m.image", "body": "here I am, smiling",
                                  "filename": "me.png", "url": mxc},
                "m.relates_to": {"rel_type": "m.replace", "event_id": original},
            }),
        )
        .await;
    let edited = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.id == on_max.id && m.status.as_deref() == Some("EDITED")
        })
        .await
        .expect("the caption's edit reaches MAX");
    assert_eq!(edited.text, "here I am, smiling");
    assert_eq!(edited.attaches.len(), 1, "the edit keeps the photo");
    assert_eq!(edited.attaches[0]["photoId"].as_i64(), Some(photo_id));

    // One event per message: no text event beside Boris's photo, and
    // nothing of Alice's came back.
    boris_says(control, "nice");
    human.wait_for_text(&dm, "nice").await;
    let from_boris: Vec<String> = human
        .messages(&dm)
        .into_iter()
        .filter(|m| m.sender == boris && m.json["content"]["m.relates_to"].is_null())
        .map(|m| m.msgtype)
        .collect();
    assert_eq!(from_boris, ["m.image", "m.text"]);
    assert_no_notice(&human, &management, "could not be bridged");
    assert_no_notice(&human, &dm, "not delivered");
}

/// A MAX video arrives as a video whatever type MAX's server names, with
/// its preview as the thumbnail and no made-up dimensions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_video_metadata_comes_from_the_bytes_and_the_preview() {
    let env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);
    // An MP4 header ('ftyp' box, brand isom) and some bytes.
    let mp4: Vec<u8> = [0, 0, 0, 0x18]
        .into_iter()
        .chain(*b"ftypisom")
        .chain([0, 0, 2, 0])
        .chain(*b"isomiso2")
        .chain((0..30_000u32).map(|i| (i * 7 % 256) as u8))
        .collect();
    let video = max_upload(
        control,
        fixture_ids::BORIS,
        maxsim::UploadKind::Video,
        ("clip", "application/octet-stream"),
        mp4.clone(),
    );
    control
        .send(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            maxsim::Outgoing {
                attaches: vec![video],
                ..Default::default()
            },
        )
        .expect("Boris sends a video");
    let event = human
        .wait_for_message(&dm, |m| m.sender == boris && m.msgtype == "m.video")
        .await;
    let info = &event.json["content"]["info"];
    assert_eq!(info["mimetype"], "video/mp4", "{info}");
    assert!(
        info.get("w").is_none() && info.get("duration").is_none(),
        "MAX said 0: {info}"
    );
    assert_eq!(info["thumbnail_info"]["mimetype"], "image/png");
    assert_eq!(
        (
            info["thumbnail_info"]["w"].as_u64(),
            info["thumbnail_info"]["h"].as_u64()
        ),
        (Some(64), Some(64))
    );
    let thumbnail = info["thumbnail_url"].as_str().expect("a thumbnail");
    let thumb = download(&env, &human, thumbnail).await;
    assert!(
        thumb.starts_with(b"\x89PNG"),
        "{:?} {info}",
        &thumb[..thumb.len().min(40)]
    );
    let url = event.json["content"]["url"]
        .as_str()
        .expect("url")
        .to_owned();
    assert_eq!(download(&env, &human, &url).await, mp4);
}

/// A voice message stays a voice message both ways, with its length and
/// waveform, and its bytes as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_messages_stay_voice_both_ways() {
    let env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);
    let ogg: Vec<u8> = b"OggS"
        .iter()
        .copied()
        .chain((0..20_000u32).map(|i| (i * 31 % 256) as u8))
        .collect();

    let upload = max_upload(
        control,
        fixture_ids::BORIS,
        maxsim::UploadKind::Video,
        ("voice.ogg", "audio/ogg"),
        ogg.clone(),
    );
    let wave: Vec<u8> = (0..80).map(|i| (i * 3 % 128) as u8).collect();
    control
        .send(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            maxsim::Outgoing {
                attaches: vec![
                    serde_json::json!({"_type": "AUDIO", "audioId": upload["videoId"],
                    "token": upload["token"], "duration": 4200, "wave": wave}),
                ],
                ..Default::default()
            },
        )
        .expect("Boris speaks");
    let voice = human
        .wait_for_message(&dm, |m| m.sender == boris && m.msgtype == "m.audio")
        .await;
    let content = &voice.json["content"];
    assert!(
        content.get("org.matrix.msc3245.voice").is_some(),
        "{content}"
    );
    assert_eq!(content["org.matrix.msc1767.audio"]["duration"], 4200);
    let waveform = content["org.matrix.msc1767.audio"]["waveform"]
        .as_array()
        .expect("waveform");
    assert_eq!(waveform.len(), 80);
    assert_eq!(waveform[1], 24, "3 of 127 is 24 of 1024");
    let url = content["url"].as_str().expect("url").to_owned();
    assert_eq!(download(&env, &human, &url).await, ogg);

    let mxc = matrix_upload(&human, "audio/ogg", ogg.clone()).await;
    let waveform: Vec<u32> = (0..100).map(|i| i * 10).collect();
    human
        .send_event(
            &dm,
            "m.room.message",
            serde_json::json!({"msgtype": "m.audio", "body": "Voice message", "url": mxc,
                "info": {"mimetype": "audio/ogg", "size": ogg.len(), "duration": 2500},
                "org.matrix.msc1767.audio": {"duration": 2500, "waveform": waveform},
                "org.matrix.msc3245.voice": {}}),
        )
        .await;
    let on_max = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.sender == Some(fixture_ids::ALICE)
                && m.attaches.first().is_some_and(|a| a["_type"] == "AUDIO")
        })
        .await
        .expect("the voice message reaches MAX as voice");
    let attach = &on_max.attaches[0];
    assert_eq!(attach["duration"], 2500);
    let wave = attach["wave"].as_array().expect("wave");
    assert_eq!(wave.len(), 80);
    assert_eq!(wave[79], 123, "the loudest of the last points, 990 of 1024");
    let audio_id = attach["audioId"].as_i64().expect("audio id");
    let (bytes, _) = control.media(audio_id).expect("stored voice");
    assert_eq!(bytes.as_ref(), ogg.as_slice());
}

/// MAX has no Matrix stickers: one goes as the picture it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_sticker_reaches_max_as_a_picture() {
    let env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let png = avatar_png(&env, fixture_ids::ALICE).await;
    let mxc = matrix_upload(&human, "image/png", png.clone()).await;
    human
        .send_event(
            &dm,
            "m.sticker",
            serde_json::json!({"body": "waving cat", "url": mxc,
                               "info": {"mimetype": "image/png", "size": png.len(), "w": 64, "h": 64}}),
        )
        .await;
    let on_max = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.sender == Some(fixture_ids::ALICE)
                && m.attaches.first().is_some_and(|a| a["_type"] == "PHOTO")
        })
        .await
        .expect("the sticker reaches MAX");
    assert_eq!(on_max.text, "", "a sticker's description is no caption");
    let photo_id = on_max.attaches[0]["photoId"].as_i64().expect("photo id");
    let (bytes, _) = control.media(photo_id).expect("stored photo");
    assert_eq!(bytes.as_ref(), png.as_slice());
    // Its MAX echo is known as Alice's sticker, not bridged back.
    boris_says(control, "cute");
    human.wait_for_text(&dm, "cute").await;
    let images = human
        .messages(&dm)
        .into_iter()
        .filter(|m| m.msgtype == "m.image")
        .count();
    assert_eq!(images, 0);
}

/// A reaction a client puts on the edit it shows reaches the MAX message;
/// one on something MAX never had is refused aloud. MAX answers to Alice's
/// messages and MAX mentions of her notify her Matrix user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_on_edits_answers_and_mentions_reach_the_right_people() {
    let env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let original = human.send_text(&dm, "see you at 5").await;
    let on_max = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.text == "see you at 5"
        })
        .await
        .expect("reaches MAX");
    let edit = human.send_edit(&dm, &original, "see you at 6").await;
    control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.id == on_max.id && m.text == "see you at 6"
        })
        .await
        .expect("the edit reaches MAX");
    human.send_reaction(&dm, &edit, "👍").await;
    control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.id == on_max.id
                && m.reactions.get(&fixture_ids::ALICE).map(String::as_str) == Some("👍")
        })
        .await
        .expect("the reaction reaches the edited message");

    // Boris's answer to it mentions Alice; his answer to himself does not.
    let boris = env.ghost(fixture_ids::BORIS);
    let answer = |text: &str, to: i64| {
        let mut outgoing = maxsim::Outgoing::text(text);
        outgoing.reply_to = Some(to);
        control
            .send(
                fixture_ids::BORIS,
                fixture_ids::DIALOG_ALICE_BORIS,
                outgoing,
            )
            .expect("Boris answers")
    };
    let first = answer("6 is fine", on_max.id);
    answer("really", first.id);
    let answers = human.wait_for_messages(&dm, 2, |m| m.sender == boris).await;
    assert_eq!(
        answers[0].json["content"]["m.mentions"],
        serde_json::json!({"user_ids": [human.user_id().as_str()]})
    );
    assert!(answers[1].json["content"].get("m.mentions").is_none());

    // A MAX mention of Alice is a pill of her Matrix user, which notifies her.
    control
        .send(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            maxsim::Outgoing {
                text: "thanks Alice".to_owned(),
                elements: vec![
                    serde_json::json!({"type": "USER_MENTION", "from": 7, "length": 5,
                    "attributes": {"userId": fixture_ids::ALICE}}),
                ],
                ..Default::default()
            },
        )
        .expect("Boris mentions Alice");
    let thanks = human.wait_for_text(&dm, "thanks Alice").await;
    let alice = human.user_id().as_str();
    assert_eq!(
        thanks.json["content"]["formatted_body"],
        format!("thanks <a href=\"https://matrix.to/#/{alice}\">Alice</a>")
    );
    assert_eq!(
        thanks.json["content"]["m.mentions"],
        serde_json::json!({"user_ids": [alice]})
    );

    let unbridged = human
        .send_event(
            &dm,
            "m.room.message",
            serde_json::json!({"msgtype": "m.server_notice", "body": "?"}),
        )
        .await;
    human
        .wait_for_message(&dm, |m| {
            m.sender == env.bot() && m.body.contains("not sent")
        })
        .await;
    human.send_reaction(&dm, &unbridged, "👀").await;
    human
        .wait_for_message(&dm, |m| {
            m.sender == env.bot() && m.body.contains("👀 was not delivered")
        })
        .await;
}

/// A MAX bot's buttons are listed, and answering one's number or text
/// presses it (the bot is told); any other answer is an ordinary reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bots_buttons_can_be_pressed_from_matrix() {
    let env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);
    control
        .send(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            maxsim::Outgoing {
                text: "Coming tonight?".to_owned(),
                attaches: vec![
                    serde_json::json!({"_type": "INLINE_KEYBOARD", "callbackId": "cb-1",
                    "keyboard": {"buttons": [
                        [{"type": "CALLBACK", "text": "Yes", "payload": "yes"},
                         {"type": "CALLBACK", "text": "No", "payload": "no"}],
                        [{"type": "LINK", "text": "Map", "url": "https://max.ru/map"}]]}}),
                ],
                ..Default::default()
            },
        )
        .expect("the bot asks");
    let question = human
        .wait_for_message(&dm, |m| {
            m.sender == boris && m.body.starts_with("Coming tonight?")
        })
        .await;
    assert!(
        question
            .body
            .ends_with("[1] Yes\n[2] No\n[3] Map — https://max.ru/map"),
        "{}",
        question.body
    );

    let answer = |text: &str| {
        serde_json::json!({"msgtype": "m.text", "body": text,
            "m.relates_to": {"m.in_reply_to": {"event_id": question.event_id.as_str()}}})
    };
    human.send_event(&dm, "m.room.message", answer("2")).await;
    human
        .wait_for_message(&dm, |m| m.sender == env.bot() && m.body == "Pressed «No».")
        .await;
    let pressed = control.callbacks();
    assert_eq!(pressed.len(), 1);
    assert_eq!(pressed[0].user, fixture_ids::ALICE);
    assert_eq!(pressed[0].callback_id, "cb-1");
    assert_eq!(pressed[0].payload.as_deref(), Some("no"));

    human.send_event(&dm, "m.room.message", answer("Map")).await;
    human
        .wait_for_message(&dm, |m| {
            m.sender == env.bot() && m.body == "«Map» opens https://max.ru/map"
        })
        .await;
    human
        .send_event(&dm, "m.room.message", answer("maybe later"))
        .await;
    let reply = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.text == "maybe later"
        })
        .await
        .expect("an ordinary answer is a reply on MAX");
    assert_eq!(
        reply.link.as_ref().map(|l| l["type"].clone()),
        Some(serde_json::json!("REPLY"))
    );
    let texts: Vec<String> = control
        .messages(fixture_ids::ALICE, fixture_ids::DIALOG_ALICE_BORIS)
        .expect("messages")
        .into_iter()
        .filter(|m| m.sender == Some(fixture_ids::ALICE))
        .map(|m| m.text)
        .collect();
    assert!(
        !texts.iter().any(|t| t == "2" || t == "Map"),
        "presses are no messages: {texts:?}"
    );
    assert_eq!(control.callbacks().len(), 1);
}

/// `/metrics` counts what was bridged each way, and the health check
/// answers; both without the homeserver's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_bridged() {
    let env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    boris_says(control, "one");
    boris_says(control, "two");
    human.wait_for_text(&dm, "two").await;
    human.send_text(&dm, "three").await;
    control
        .wait_for_message(std::time::Duration::from_secs(30), |m| m.text == "three")
        .await
        .expect("reaches MAX");

    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/_maxbridge/health", env.appservice_url()))
        .send()
        .await
        .expect("health answers");
    assert_eq!(health.status(), 200);
    // Counted once the send returns, a moment after MAX has it: wait for it.
    let sample = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let response = http
            .get(format!("{}/metrics", env.appservice_url()))
            .send()
            .await
            .expect("metrics answer");
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("metrics text");
        if sample(
            &text,
            r#"maxbridge_messages_total{direction="matrix_to_max",kind="m.text"}"#,
        ) >= 1.0
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never counted:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        sample(
            &text,
            r#"maxbridge_messages_total{direction="max_to_matrix",kind="m.text"}"#
        ) >= 2.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"maxbridge_handling_seconds_count{direction="max_to_matrix"}"#
        ) >= 2.0
    );
    assert_eq!(
        sample(&text, r#"maxbridge_logins{state="connected"}"#),
        1.0,
        "{text}"
    );
    // Their mappings were written, and timed.
    assert!(
        sample(
            &text,
            r#"maxbridge_database_write_seconds_count{write="messages",outcome="ok"}"#
        ) >= 1.0,
        "{text}"
    );
    // Both MAX messages were sent to the homeserver, and timed.
    assert!(
        sample(
            &text,
            r#"maxbridge_homeserver_request_seconds_count{request="send message",outcome="ok"}"#
        ) >= 2.0,
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );

    // The Grafana dashboard in the repository graphs only what is exposed.
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../contrib/grafana/maxbridge.json"))
            .expect("the dashboard is JSON");
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let mut used = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (at, _) in expr.match_indices("maxbridge_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                assert!(
                    families.contains(&family),
                    "panel {:?} uses {name}, which /metrics does not have:\n{text}",
                    panel["title"]
                );
                used.insert(family.to_owned());
            }
        }
    }
    for family in &families {
        assert!(
            used.contains(*family),
            "the dashboard does not show {family}"
        );
    }
}

/// A MAX poll is a Matrix poll (MSC3381), and a vote in it from Matrix is
/// the account's vote on MAX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_arrive_as_polls_and_votes_reach_max() {
    let env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);
    let poll = control
        .send(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            maxsim::Outgoing {
                attaches: vec![
                    serde_json::json!({"_type": "POLL", "pollId": 77, "title": "Walk at 6?",
                    "answers": [{"id": 1, "text": "Yes"}, {"id": 2, "text": "No"}], "settings": 0}),
                ],
                ..Default::default()
            },
        )
        .expect("Boris asks");
    let start = human
        .wait_for_event(&dm, |e| {
            e["type"] == "org.matrix.msc3381.poll.start" && e["sender"] == boris.as_str()
        })
        .await;
    let inner = &start["content"]["org.matrix.msc3381.poll.start"];
    assert_eq!(inner["question"]["org.matrix.msc1767.text"], "Walk at 6?");
    assert_eq!(inner["answers"][1]["id"], "2");
    assert_eq!(inner["answers"][1]["org.matrix.msc1767.text"], "No");

    let start_id = start["event_id"].as_str().expect("event id").to_owned();
    human
        .send_event(
            &dm,
            "org.matrix.msc3381.poll.response",
            serde_json::json!({"org.matrix.msc3381.poll.response": {"answers": ["2"]},
                "m.relates_to": {"rel_type": "m.reference", "event_id": start_id}}),
        )
        .await;
    let voted = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.id == poll.id && !m.attaches[0]["state"].is_null()
        })
        .await
        .expect("the vote reaches MAX");
    assert_eq!(
        voted.attaches[0]["state"]["result"],
        serde_json::json!([{"answerId": 2, "voteCount": 1}])
    );
}

/// A shared location is a map pin on both sides; one without coordinates
/// is refused with a notice, not sent as something else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_cross_both_ways() {
    let env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);

    control
        .send(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            maxsim::Outgoing {
                attaches: vec![serde_json::json!(
                    {"_type": "LOCATION", "latitude": 59.9386, "longitude": 30.3141}
                )],
                ..Default::default()
            },
        )
        .expect("Boris shares where he is");
    let pin = human
        .wait_for_message(&dm, |m| m.sender == boris && m.msgtype == "m.location")
        .await;
    assert_eq!(pin.json["content"]["geo_uri"], "geo:59.9386,30.3141");

    human
        .send_event(
            &dm,
            "m.room.message",
            serde_json::json!({"msgtype": "m.location", "body": "Location", "geo_uri": "geo:55.7558,37.6173;u=20"}),
        )
        .await;
    let on_max = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.sender == Some(fixture_ids::ALICE)
                && m.attaches.first().is_some_and(|a| a["_type"] == "LOCATION")
        })
        .await
        .expect("the location reaches MAX");
    assert_eq!(on_max.attaches[0]["latitude"], 55.7558);
    assert_eq!(on_max.attaches[0]["longitude"], 37.6173);

    human
        .send_event(
            &dm,
            "m.room.message",
            serde_json::json!({"msgtype": "m.location", "body": "somewhere", "geo_uri": "geo:nowhere"}),
        )
        .await;
    human
        .wait_for_message(&dm, |m| {
            m.sender == env.bot() && m.body.contains("holds no coordinates")
        })
        .await;
    // Alice's pin did not come back from MAX as a ghost's.
    boris_says(control, "see you there");
    human.wait_for_text(&dm, "see you there").await;
    let pins = human
        .messages(&dm)
        .into_iter()
        .filter(|m| m.msgtype == "m.location" && m.sender != *human.user_id())
        .count();
    assert_eq!(pins, 1, "only Boris's pin");
}

/// A forward names whom it comes from and brings its media; a shared
/// contact, a call and a poll arrive in forms a person can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_contacts_calls_and_polls_arrive_readable() {
    let env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);

    // Vera posts a captioned photo in a group Alice is not in; Boris
    // forwards it to Alice.
    let vera = control
        .create_account(maxsim::NewAccount {
            first_name: "Vera".to_owned(),
            last_name: "Lis".to_owned(),
            ..Default::default()
        })
        .expect("Vera");
    let pets = control
        .create_chat(
            vera.id,
            maxsim::ChatKind::Chat,
            "Pets",
            &[fixture_ids::BORIS],
        )
        .expect("a group without Alice");
    let png = avatar_png(&env, fixture_ids::BORIS).await;
    let photo = max_upload(
        control,
        vera.id,
        maxsim::UploadKind::Photo,
        ("dog.png", "image/png"),
        png.clone(),
    );
    let post = control
        .send(
            vera.id,
            pets,
            maxsim::Outgoing {
                text: "my dog".to_owned(),
                attaches: vec![photo],
                ..Default::default()
            },
        )
        .expect("Vera posts");
    control
        .send(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            maxsim::Outgoing {
                forward: Some((pets, post.id)),
                ..Default::default()
            },
        )
        .expect("Boris forwards");
    let parts = human.wait_for_messages(&dm, 2, |m| m.sender == boris).await;
    assert_eq!(parts[0].body, "↪ Forwarded from Vera Lis:\nmy dog");
    assert_eq!(parts[1].msgtype, "m.image", "the forward's photo");
    let url = parts[1].json["content"]["url"]
        .as_str()
        .expect("url")
        .to_owned();
    assert_eq!(download(&env, &human, &url).await, png);

    let shared = |attach: serde_json::Value| {
        control
            .send(
                fixture_ids::BORIS,
                fixture_ids::DIALOG_ALICE_BORIS,
                maxsim::Outgoing {
                    attaches: vec![attach],
                    ..Default::default()
                },
            )
            .expect("Boris sends");
    };
    shared(serde_json::json!({"_type": "CONTACT", "contactId": vera.id}));
    let card = human.wait_for_text(&dm, "👤 Contact: Vera Lis").await;
    assert_eq!(card.msgtype, "m.file");
    assert_eq!(card.json["content"]["filename"], "Vera Lis.vcf");
    let url = card.json["content"]["url"]
        .as_str()
        .expect("url")
        .to_owned();
    let vcard = String::from_utf8(download(&env, &human, &url).await).expect("text");
    assert!(vcard.contains("\r\nFN:Vera Lis\r\n"), "{vcard}");
    shared(serde_json::json!(
        {"_type": "CALL", "callType": "AUDIO", "hangupType": "HUNGUP", "duration": 65_000}
    ));
    let call = human
        .wait_for_message(&dm, |m| m.sender == boris && m.body.starts_with("📞"))
        .await;
    assert_eq!(
        (call.msgtype.as_str(), call.body.as_str()),
        ("m.notice", "📞 Call, 1:05")
    );
    shared(
        serde_json::json!({"_type": "POLL", "pollId": 1, "title": "Walk at 6?",
        "answers": [{"id": 1, "text": "Yes"}, {"id": 2, "text": "No"}]}),
    );
    // A poll is a poll event; its text is for clients that show no polls.
    human
        .wait_for_event(&dm, |e| {
            e["type"] == "org.matrix.msc3381.poll.start"
                && e["content"]["body"] == "📊 Poll: Walk at 6?\n• Yes\n• No"
        })
        .await;
    let unbridged = human
        .messages(&dm)
        .into_iter()
        .filter(|m| m.body.contains("not bridged"))
        .count();
    assert_eq!(unbridged, 0);
}

/// While the bridge is away, Boris edits one bridged message, deletes
/// another and sends more than `max_catchup_messages`: at start the edit
/// and the deletion are applied, the newest messages arrive once and in
/// order, and a notice says how many older ones were skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_applies_edits_deletions_and_the_limit() {
    let mut env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control().clone();
    let boris = env.ghost(fixture_ids::BORIS);
    let kept = boris_says(&control, "kept");
    let to_edit = boris_says(&control, "typo");
    let to_delete = boris_says(&control, "regret");
    human.wait_for_text(&dm, "regret").await;
    let bridged = |text: &str| {
        human
            .messages(&dm)
            .into_iter()
            .find(|m| m.body == text && m.sender == boris)
            .unwrap_or_else(|| panic!("{text:?} bridged"))
            .event_id
    };
    let (edit_target, delete_target) = (bridged("typo"), bridged("regret"));

    env.stop_bridge().await;
    env.set_bridge_option("max_catchup_messages", "5");
    control
        .edit(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            to_edit.id,
            "fixed",
            None,
        )
        .expect("Boris edits");
    control
        .delete(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            &[to_delete.id],
            false,
        )
        .expect("Boris deletes");
    for n in 1..=8 {
        boris_says(&control, &format!("away {n}"));
    }
    env.start_bridge().await;

    human.wait_for_text(&dm, "away 8").await;
    human
        .wait_for_event(&dm, |e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && e["content"]["m.relates_to"]["event_id"] == edit_target.as_str()
                && e["content"]["m.new_content"]["body"] == "fixed"
        })
        .await;
    wait_for_redaction(&human, &dm, delete_target.as_str()).await;
    let notice = human
        .wait_for_message(&dm, |m| {
            m.msgtype == "m.notice" && m.body.contains("not bridged")
        })
        .await;
    assert!(notice.body.contains("3 older messages"), "{}", notice.body);
    let all = texts_from(&human, &dm, &boris);
    assert!(
        all.iter().filter(|t| *t == "regret").count() <= 1,
        "{all:?}"
    );
    // Edits ("* …") and the redacted message aside.
    let from_boris: Vec<&String> = all
        .iter()
        .filter(|t| !t.starts_with("* ") && !t.is_empty() && *t != "regret")
        .collect();
    assert_eq!(
        from_boris,
        [
            "kept", "typo", "away 4", "away 5", "away 6", "away 7", "away 8"
        ],
        "the newest five once each, in order, after what was bridged before"
    );
    assert_eq!(kept.text, "kept");

    // A second restart finds nothing new: nothing is bridged twice.
    env.restart_bridge().await;
    boris_says(&control, "after");
    human.wait_for_text(&dm, "after").await;
    let events = human.events(&dm);
    let edits = events
        .iter()
        .filter(|e| e["content"]["m.relates_to"]["rel_type"] == "m.replace")
        .count();
    let redactions = events
        .iter()
        .filter(|e| e["type"] == "m.room.redaction")
        .count();
    assert_eq!(
        (edits, redactions),
        (1, 1),
        "the edit and the deletion once each"
    );
    assert_eq!(
        texts_from(&human, &dm, &boris).last().map(String::as_str),
        Some("after")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_room_keeps_logins_and_commands_apart() {
    let env = Env::start_with_options(support::bridge::EnvOptions {
        bridge_options: vec![("login_step_timeout".to_owned(), "3".to_owned())],
        ..Default::default()
    })
    .await;
    let (human, management) = env.user_with_management_room("alice").await;
    let control = env.sim.control().clone();

    // During a login, known commands run as themselves and a text that is
    // not a phone number is not sent to MAX; `cancel` ends the login.
    env.command(&human, &management, "login", "phone number")
        .await;
    let help = env.command(&human, &management, "help", "Account").await;
    assert!(help.contains("`!max ping`"), "{help}");
    let version = env
        .command(&human, &management, "version", "maxbridge")
        .await;
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    env.command(
        &human,
        &management,
        "call me maybe",
        "does not look like a phone number",
    )
    .await;
    env.command(&human, &management, "cancel", "Login cancelled")
        .await;
    // A login left waiting ends by itself, with a notice.
    env.command(&human, &management, "login", "phone number")
        .await;
    human
        .wait_for_message(&management, |m| {
            m.sender == env.bot() && m.body.contains("login timed out after 3 s")
        })
        .await;
    env.command(&human, &management, "+79000000001", "Unknown command")
        .await;

    env.login_sms(&human, &management, ALICE_PHONE, ALICE_CODE)
        .await;
    // The messages with the code and with a token are removed, and the bot
    // says so.
    let redacted = |target: String| {
        move |e: &serde_json::Value| {
            e["type"] == "m.room.redaction"
                && (e["redacts"] == target.as_str() || e["content"]["redacts"] == target.as_str())
        }
    };
    let code = human
        .messages(&management)
        .into_iter()
        .find(|m| m.body == ALICE_CODE)
        .expect("the code was sent");
    human
        .wait_for_event(&management, redacted(code.event_id.to_string()))
        .await;
    // Logged in: neither login nor login-token switches accounts silently.
    env.command(
        &human,
        &management,
        "login-token sim-token-boris",
        "already logged in",
    )
    .await;
    let token = human
        .messages(&management)
        .into_iter()
        .find(|m| m.body.starts_with("login-token sim-token-boris"))
        .expect("the token was sent");
    human
        .wait_for_event(&management, redacted(token.event_id.to_string()))
        .await;
    human
        .wait_for_message(&management, |m| {
            m.sender == env.bot() && m.body.contains("removed your message with the token")
        })
        .await;
    env.command(&human, &management, "login", "already logged in")
        .await;

    // A prefixed command in a portal is answered there and never sent to MAX.
    let boris = env.ghost(fixture_ids::BORIS);
    let dm = human.accept_invite_from(&boris).await;
    let before = control
        .messages(fixture_ids::ALICE, fixture_ids::DIALOG_ALICE_BORIS)
        .expect("history")
        .len();
    env.command(&human, &dm, "!max ping", "Logged in to MAX as")
        .await;
    human.send_text(&dm, "a real message").await;
    control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.text == "a real message"
        })
        .await
        .expect("the real message reaches MAX");
    let texts: Vec<String> = control
        .messages(fixture_ids::ALICE, fixture_ids::DIALOG_ALICE_BORIS)
        .expect("history")
        .into_iter()
        .skip(before)
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["a real message"], "the command stayed on Matrix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_portal_gives_posting_power_only_to_who_may_post_on_max() {
    let env = Env::start().await;
    let (human, _management, _dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control().clone();
    let channel = human
        .wait_for_invite(|i| i.room_name.as_deref() == Some("Test channel"))
        .await
        .room_id;
    human.join(&channel).await;
    // Alice only reads "Test channel" on MAX (Boris owns it).
    let levels = human
        .wait_for_state(&channel, "m.room.power_levels", "", |l| {
            l["events_default"] == 50
        })
        .await;
    assert_eq!(levels["users"][human.user_id().as_str()], 0, "{levels}");
    let refused = human
        .client()
        .get_room(&channel)
        .expect("joined")
        .send_raw(
            "m.room.message",
            serde_json::json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await;
    assert!(
        refused.is_err(),
        "a subscriber could post in the channel portal"
    );
    // The channel's posts still arrive.
    control
        .send(
            fixture_ids::BORIS,
            fixture_ids::TEST_CHANNEL,
            Outgoing::text("channel news"),
        )
        .expect("Boris posts");
    human.wait_for_text(&channel, "channel news").await;
}

/// A burst in which each message answers the one before (MAX quotes the
/// answered message whole, with its own quote, so the last pushes nest some
/// 70 levels deep) and the last ones are edited and deleted at once: the portals send while the mappings of
/// the messages before are still being written, and every reply, edit and
/// deletion still finds its message, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_replies_edits_and_deletions_keeps_every_link() {
    const BURST: usize = 30;
    let env = Env::start().await;
    let (human, management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);

    // MAX → Matrix, all without waiting.
    let mut sent: Vec<maxsim::SimMessage> = Vec::new();
    for n in 1..=BURST {
        let mut outgoing = Outgoing::text(format!("burst {n}"));
        outgoing.reply_to = sent.last().map(|m| m.id);
        let message = control
            .send(
                fixture_ids::BORIS,
                fixture_ids::DIALOG_ALICE_BORIS,
                outgoing,
            )
            .expect("Boris sends");
        sent.push(message);
    }
    let (last, before_last) = (sent[BURST - 1].id, sent[BURST - 2].id);
    control
        .edit(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            last,
            &format!("burst {BURST}, edited"),
            None,
        )
        .expect("Boris edits");
    control
        .delete(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            &[before_last],
            false,
        )
        .expect("Boris deletes");

    // Matrix → MAX, also without waiting: a burst, an edit of its last
    // message and a reply to it.
    let mut mine = Vec::new();
    for n in 1..=10 {
        mine.push(human.send_text(&dm, &format!("mine {n}")).await);
    }
    human.send_edit(&dm, &mine[9], "mine 10, edited").await;
    human
        .send_event(
            &dm,
            "m.room.message",
            serde_json::json!({
                "msgtype": "m.text",
                "body": "a reply to mine 10",
                "m.relates_to": {"m.in_reply_to": {"event_id": mine[9].as_str()}},
            }),
        )
        .await;

    let from_boris = human
        .wait_for_messages(&dm, BURST, |m| {
            m.sender == boris && m.rel_type() != Some("m.replace")
        })
        .await;
    let redacted = from_boris[BURST - 2].event_id.clone();
    wait_for_redaction(&human, &dm, redacted.as_str()).await;
    let edit = human
        .wait_for_message(&dm, |m| {
            m.sender == boris && m.rel_type() == Some("m.replace")
        })
        .await;
    assert_eq!(
        edit.json["content"]["m.relates_to"]["event_id"],
        from_boris[BURST - 1].event_id.as_str(),
        "the edit replaces the last message"
    );
    assert_eq!(
        edit.json["content"]["m.new_content"]["body"],
        format!("burst {BURST}, edited")
    );
    let from_boris = human
        .messages(&dm)
        .into_iter()
        .filter(|m| m.sender == boris && m.rel_type() != Some("m.replace"))
        .collect::<Vec<_>>();
    assert_eq!(from_boris.len(), BURST, "each message once");
    for (n, message) in from_boris.iter().enumerate() {
        // The deleted one's redaction was waited for above; the timeline
        // may still show it as first received.
        if n != BURST - 2 {
            assert_eq!(message.body, format!("burst {}", n + 1), "in order");
        }
        if n > 0 {
            assert_eq!(
                message.json["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
                from_boris[n - 1].event_id.as_str(),
                "message {} answers the one before",
                n + 1
            );
        }
    }

    let on_max = |text: &'static str| async move {
        control
            .wait_for_message(std::time::Duration::from_secs(30), |m| {
                m.chat_id == fixture_ids::DIALOG_ALICE_BORIS && m.text == text
            })
            .await
            .expect("reaches MAX")
    };
    let edited = on_max("mine 10, edited").await;
    assert_eq!(edited.status.as_deref(), Some("EDITED"));
    let reply = on_max("a reply to mine 10").await;
    assert_eq!(
        reply.link.as_ref().map(|l| l["messageId"].clone()),
        Some(serde_json::json!(edited.id.to_string())),
        "the reply quotes mine 10"
    );
    let alice_on_max: Vec<String> = control
        .messages(fixture_ids::BORIS, fixture_ids::DIALOG_ALICE_BORIS)
        .expect("history")
        .into_iter()
        .filter(|m| m.sender == Some(fixture_ids::ALICE))
        .map(|m| m.text)
        .filter(|text| text.starts_with("mine ") || text.starts_with("a reply"))
        .collect();
    let expected: Vec<String> = (1..=9)
        .map(|n| format!("mine {n}"))
        .chain([
            "mine 10, edited".to_owned(),
            "a reply to mine 10".to_owned(),
        ])
        .collect();
    assert_eq!(alice_on_max, expected, "once each, in order");
    assert_no_notice(&human, &management, "could not");
}

/// A new portal brings the chat's newest history with it
/// (`backfill.max_initial_messages`), in order, with MAX's times, before
/// what comes live; and a chat that gets its portal from its first messages
/// has each of them once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_portals_bring_their_newest_history_in_order() {
    const HISTORY: usize = 5;
    let env = Env::start_with_options(support::bridge::EnvOptions {
        backfill: HISTORY as u32,
        ..support::bridge::EnvOptions::default()
    })
    .await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);
    // Written before Alice's login: history, not news.
    let written: Vec<maxsim::SimMessage> = (1..=8)
        .map(|n| boris_says(control, &format!("history {n}")))
        .collect();
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    boris_says(control, "live");
    human.wait_for_text(&dm, "live").await;
    let from_boris: Vec<_> = human
        .messages(&dm)
        .into_iter()
        .filter(|m| m.sender == boris)
        .collect();
    let bodies: Vec<&str> = from_boris.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "history 4",
            "history 5",
            "history 6",
            "history 7",
            "history 8",
            "live"
        ],
        "the newest {HISTORY} of the history, then the live message"
    );
    for (message, sent) in from_boris.iter().zip(&written[8 - HISTORY..]) {
        assert_eq!(
            message.origin_server_ts, sent.time as u64,
            "{} keeps its MAX time",
            message.body
        );
    }

    // A group appears with messages already in it.
    let chat = boris_creates_group(control, "Group with a past");
    for text in ["first words", "second words", "third words"] {
        control
            .send(fixture_ids::BORIS, chat, Outgoing::text(text))
            .expect("Boris sends");
    }
    let invite = human
        .wait_for_invite(|i| i.room_name.as_deref() == Some("Group with a past"))
        .await;
    human.join(&invite.room_id).await;
    human.wait_for_text(&invite.room_id, "third words").await;
    boris_says(control, "and the DM goes on");
    human.wait_for_text(&dm, "and the DM goes on").await;
    let group: Vec<String> = human
        .messages(&invite.room_id)
        .into_iter()
        .filter(|m| m.sender == boris)
        .map(|m| m.body)
        .collect();
    // The group's creation is part of its history on MAX too.
    assert_eq!(
        group,
        [
            "created the chat «Group with a past»",
            "first words",
            "second words",
            "third words"
        ]
    );
}

/// An account with more chats than the LOGIN answer holds (40) gets a
/// portal for every one: the rest of the list is read with CHATS_LIST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chat_of_a_long_chat_list_gets_its_portal() {
    const GROUPS: usize = 45;
    let env = Env::start().await;
    let control = env.sim.control();
    for n in 1..=GROUPS {
        boris_creates_group(control, &format!("Paged group {n}"));
    }
    let (human, _management, _dm) = env.alice_with_boris_dm("alice").await;
    // The oldest groups are past the LOGIN answer's first page.
    human
        .wait_for_invite(|i| i.room_name.as_deref() == Some("Paged group 1"))
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut names: Vec<String> = human
            .invites()
            .into_iter()
            .filter_map(|i| i.room_name)
            .filter(|n| n.starts_with("Paged group "))
            .collect();
        names.sort();
        names.dedup();
        if names.len() == GROUPS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {GROUPS} groups got a portal",
            names.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let store = maxbridge::store::Store::connect(&env.config().database.url, 1)
        .await
        .expect("bridge database");
    let rooms: i64 = maxbridge::on_db!(store.db(), |pool| {
        sqlx::query_scalar("SELECT count(*) FROM portals WHERE room_id IS NOT NULL")
            .fetch_one(pool)
            .await
    })
    .expect("count");
    // Each group once, besides the fixture's own chats.
    assert!(rooms >= GROUPS as i64, "{rooms} portals");
    let duplicates: i64 = maxbridge::on_db!(store.db(), |pool| {
        sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT name FROM portals WHERE name LIKE 'Paged group %' \
             GROUP BY name HAVING count(*) > 1) d",
        )
        .fetch_one(pool)
        .await
    })
    .expect("count");
    assert_eq!(duplicates, 0, "one portal per chat");
    store.close().await;
}

/// `start-chat` opens a direct chat with a MAX user the account never wrote
/// to, found by id or by phone number; Alice's first message makes the
/// dialog on MAX, and the answer comes back into the same room. Unknown
/// users are named as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_chat_opens_a_direct_chat_with_someone_new_in_the_personal_space() {
    let env = Env::start().await;
    let control = env.sim.control();
    let vera = new_contact_vera(control);
    let (human, management, dm) = env.alice_with_boris_dm("alice").await;

    // The login's portals are gathered in a space of the user's own.
    let space = human
        .wait_for_invite(|i| i.room_name.as_deref() == Some("MAX"))
        .await;
    assert_eq!(space.inviter.as_ref(), Some(&env.bot()));
    assert!(
        space
            .state
            .iter()
            .any(|e| e["type"] == "m.room.create" && e["content"]["type"] == "m.space"),
        "a space: {:?}",
        space.state
    );
    human.join(&space.room_id).await;
    let child = human
        .wait_for_state(&space.room_id, "m.space.child", dm.as_str(), |c| {
            c["via"].is_array()
        })
        .await;
    assert_eq!(child["via"][0], "localhost");

    let answer = env
        .command(
            &human,
            &management,
            &format!("start-chat {}", vera.id),
            "Direct chat with Vera Nova",
        )
        .await;
    let ghost = env.ghost(vera.id);
    let invite = human.wait_for_invite_from(&ghost).await;
    assert!(invite.is_direct, "a direct chat");
    assert!(answer.contains(invite.room_id.as_str()), "{answer}");
    human.join(&invite.room_id).await;
    human.send_text(&invite.room_id, "hi Vera").await;
    let dialog = fixture_ids::ALICE ^ vera.id;
    let on_max = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.chat_id == dialog && m.text == "hi Vera"
        })
        .await
        .expect("the dialog is made on MAX by the first message");
    assert_eq!(on_max.sender, Some(fixture_ids::ALICE));
    control
        .send(vera.id, dialog, Outgoing::text("hi Alice"))
        .expect("Vera answers");
    let reply = human.wait_for_text(&invite.room_id, "hi Alice").await;
    assert_eq!(reply.sender, ghost);
    // A portal made later joins the space too.
    human
        .wait_for_state(
            &space.room_id,
            "m.space.child",
            invite.room_id.as_str(),
            |c| c["via"].is_array(),
        )
        .await;

    // By phone: the same room again, not a second one.
    let again = env
        .command(
            &human,
            &management,
            "start-chat +79000000077",
            "Direct chat with Vera Nova",
        )
        .await;
    assert!(again.contains(invite.room_id.as_str()), "{again}");
    env.command(&human, &management, "start-chat 999999999", "No MAX user")
        .await;
    env.command(&human, &management, "start-chat bob", "neither a phone")
        .await;
}

/// Vera Nova (+79000000077), a MAX user nobody has talked to yet.
fn new_contact_vera(control: &maxsim::Control) -> maxsim::AccountInfo {
    control
        .create_account(maxsim::NewAccount {
            first_name: "Vera".to_owned(),
            last_name: "Nova".to_owned(),
            phone: Some(79_000_000_077),
            ..maxsim::NewAccount::default()
        })
        .expect("Vera's account")
}

/// The provisioning API logs a user in (a refused code retried), says who
/// they are, finds a MAX user and opens a direct chat, and logs out; each
/// answer fits `docs/provisioning.yaml`, which describes nothing unused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_api_logs_in_finds_people_and_opens_chats() {
    use support::openapi::OpenApi;
    const SECRET: &str = "provisioning-secret-for-tests";
    let env = Env::start_with_options(EnvOptions {
        bridge_yaml: format!("provisioning:\n    shared_secret: {SECRET}\n"),
        ..EnvOptions::default()
    })
    .await;
    let control = env.sim.control();
    let vera = new_contact_vera(control);
    let (human, management) = env.user_with_management_room("alice").await;
    let api = OpenApi::parse(include_str!("../docs/provisioning.yaml"));
    let http = reqwest::Client::new();
    let base = format!("{}/_matrix/provision/v3", env.appservice_url());
    // One call: (status, body), checked against the description.
    let call = |method: &'static str,
                described: &'static str,
                path: String,
                body: Option<serde_json::Value>| {
        let (http, api, base) = (&http, &api, &base);
        async move {
            let url = format!("{base}{path}");
            let request = match method {
                "GET" => http.get(&url),
                _ => http
                    .post(&url)
                    .json(&body.unwrap_or_else(|| serde_json::json!({}))),
            };
            let response = request
                .query(&[("user_id", "@alice:localhost")])
                .bearer_auth(SECRET)
                .send()
                .await
                .expect("the provisioning API answers");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.expect("a JSON answer");
            api.check(method, described, status, &body);
            (status, body)
        }
    };

    // Who may call: the secret, and a user the permissions allow.
    let anonymous = http
        .get(format!("{base}/whoami?user_id=@alice:localhost"))
        .send()
        .await
        .expect("answers");
    assert_eq!(anonymous.status(), 401);
    let body: serde_json::Value = anonymous.json().await.expect("JSON");
    api.check("GET", "/whoami", 401, &body);
    assert_eq!(body["errcode"], "M_MISSING_TOKEN");
    let wrong = http
        .get(format!("{base}/whoami?user_id=@alice:localhost"))
        .bearer_auth("not-the-secret")
        .send()
        .await
        .expect("answers");
    assert_eq!(wrong.status(), 401);
    let mallory = http
        .get(format!("{base}/whoami?user_id=@mallory:localhost"))
        .bearer_auth(SECRET)
        .send()
        .await
        .expect("answers");
    assert_eq!(mallory.status(), 403);
    api.check("GET", "/whoami", 403, &mallory.json().await.expect("JSON"));
    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/login/start/phone"),
        )
        .send()
        .await
        .expect("answers");
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");

    // Or a Matrix OpenID token of the user, from their homeserver (as
    // bridgev2 takes it), instead of the secret.
    let openid = human
        .client()
        .send(
            ruma::api::client::account::request_openid_token::v3::Request::new(
                human.user_id().to_owned(),
            ),
        )
        .await
        .expect("an OpenID token");
    let with_openid = |user: &str, token: &str| {
        http.get(format!("{base}/whoami?user_id={user}"))
            .bearer_auth(format!("openid:{token}"))
            .send()
    };
    let answer = with_openid("@alice:localhost", &openid.access_token)
        .await
        .expect("answers");
    assert_eq!(answer.status(), 200);
    let answer = with_openid("@bob:localhost", &openid.access_token)
        .await
        .expect("answers");
    assert_eq!(answer.status(), 401, "someone else's token");
    let answer = with_openid("@alice:localhost", "made-up")
        .await
        .expect("answers");
    assert_eq!(answer.status(), 401);
    api.check("GET", "/whoami", 401, &answer.json().await.expect("JSON"));

    let (status, whoami) = call("GET", "/whoami", "/whoami".to_owned(), None).await;
    assert_eq!(status, 200);
    assert_eq!(whoami["logins"], serde_json::json!([]));
    assert_eq!(whoami["management_room"], management.as_str());
    assert_eq!(whoami["bridge_bot"], env.bot().as_str());
    let (_, flows) = call("GET", "/login/flows", "/login/flows".to_owned(), None).await;
    assert_eq!(flows["flows"][0]["id"], "phone");

    // Phone, a wrong code (the same step again), the right code.
    let step = "/login/step/{loginID}/{stepID}/{stepType}";
    let (status, first) = call(
        "POST",
        "/login/start/{flowID}",
        "/login/start/phone".to_owned(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let login_id = first["login_id"].as_str().expect("login id").to_owned();
    let (status, code_step) = call(
        "POST",
        step,
        format!(
            "/login/step/{login_id}/{}/user_input",
            first["step_id"].as_str().unwrap_or_default()
        ),
        Some(serde_json::json!({"phone": ALICE_PHONE})),
    )
    .await;
    assert_eq!(status, 200, "{code_step}");
    assert_eq!(code_step["user_input"]["fields"][0]["type"], "2fa_code");
    let code_path = format!(
        "/login/step/{login_id}/{}/user_input",
        code_step["step_id"].as_str().unwrap_or_default()
    );
    let (status, refused) = call(
        "POST",
        step,
        code_path.clone(),
        Some(serde_json::json!({"code": "999999"})),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["errcode"], "NET.MAXBRIDGE.MAX_REFUSED");
    let (status, done) = call(
        "POST",
        step,
        code_path.clone(),
        Some(serde_json::json!({"code": ALICE_CODE})),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["type"], "complete");
    assert_eq!(
        done["complete"]["user_login_id"],
        fixture_ids::ALICE.to_string()
    );
    // The finished login is gone; the bot says so in the management room.
    let (status, _) = call(
        "POST",
        step,
        code_path,
        Some(serde_json::json!({"code": ALICE_CODE})),
    )
    .await;
    assert_eq!(status, 404);
    human
        .wait_for_message(&management, |m| {
            m.sender == env.bot() && m.body.contains("Logged in to MAX as")
        })
        .await;
    let (status, again) = call(
        "POST",
        "/login/start/{flowID}",
        "/login/start/phone".to_owned(),
        None,
    )
    .await;
    assert_eq!(status, 409, "{again}");

    let (_, whoami) = call("GET", "/whoami", "/whoami".to_owned(), None).await;
    assert_eq!(whoami["logins"][0]["id"], fixture_ids::ALICE.to_string());
    let (_, logins) = call("GET", "/logins", "/logins".to_owned(), None).await;
    assert_eq!(
        logins["login_ids"],
        serde_json::json!([fixture_ids::ALICE.to_string()])
    );

    // Finding someone, by phone and by id; opening the chat invites the user.
    let (status, found) = call(
        "GET",
        "/resolve_identifier/{identifier}",
        "/resolve_identifier/+79000000077".to_owned(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["id"], vera.id.to_string());
    assert_eq!(found["name"], "Vera Nova");
    assert_eq!(found["mxid"], env.ghost(vera.id).as_str());
    assert_eq!(found["dm_room_mxid"], serde_json::Value::Null);
    let (status, unknown) = call(
        "GET",
        "/resolve_identifier/{identifier}",
        "/resolve_identifier/987654321".to_owned(),
        None,
    )
    .await;
    assert_eq!(status, 404, "{unknown}");
    let (status, dm) = call(
        "POST",
        "/create_dm/{identifier}",
        format!("/create_dm/{}", vera.id),
        None,
    )
    .await;
    assert_eq!(status, 200, "{dm}");
    let room = dm["dm_room_mxid"].as_str().expect("a room").to_owned();
    let invite = human.wait_for_invite_from(&env.ghost(vera.id)).await;
    assert_eq!(invite.room_id.as_str(), room);
    let (_, found) = call(
        "GET",
        "/resolve_identifier/{identifier}",
        format!("/resolve_identifier/{}", vera.id),
        None,
    )
    .await;
    assert_eq!(found["dm_room_mxid"], room.as_str());

    // Logging out ends bridging; a second logout finds nothing.
    let (status, _) = call("POST", "/logout/{loginID}", "/logout/all".to_owned(), None).await;
    assert_eq!(status, 200);
    let (_, logins) = call("GET", "/logins", "/logins".to_owned(), None).await;
    assert_eq!(logins["login_ids"], serde_json::json!([]));
    let (status, _) = call("POST", "/logout/{loginID}", "/logout/all".to_owned(), None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        "POST",
        "/create_dm/{identifier}",
        format!("/create_dm/{}", vera.id),
        None,
    )
    .await;
    assert_eq!(status, 400);

    assert_eq!(
        api.unchecked(),
        Vec::<String>::new(),
        "described but never tried"
    );
}

/// With `bridge.presence`, a MAX contact's online state is their ghost's
/// presence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_max_when_enabled() {
    use matrix_sdk::ruma::api::client::presence::get_presence;
    use matrix_sdk::ruma::presence::PresenceState;
    let env = Env::start_with_options(EnvOptions {
        bridge_options: vec![("presence".to_owned(), "true".to_owned())],
        synapse_yaml: "presence:\n  enabled: true\n".to_owned(),
        ..EnvOptions::default()
    })
    .await;
    let (human, _management, _dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);
    let presence_of = || async {
        human
            .client()
            .send(get_presence::v3::Request::new(boris.clone()))
            .await
            .expect("presence readable")
            .presence
    };
    for (online, expected) in [
        (true, PresenceState::Online),
        (false, PresenceState::Offline),
    ] {
        control
            .set_presence(fixture_ids::BORIS, online)
            .expect("Boris exists");
        wait::until(SECONDS_30, || async {
            let shown = presence_of().await;
            if shown == expected {
                return Ok(());
            }
            Err(format!("Boris's ghost shows {shown:?}, not {expected:?}"))
        })
        .await;
    }
}

/// `delete-portal` empties the portal's room and the bridge forgets it: the
/// chat's next message makes a new room. With `cleanup_on_logout: kick`, a
/// logout removes the user from their portals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_portals_start_again_and_logout_cleans_up() {
    let env = Env::start_with_options(EnvOptions {
        bridge_options: vec![("cleanup_on_logout".to_owned(), "kick".to_owned())],
        ..EnvOptions::default()
    })
    .await;
    let (human, management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let boris = env.ghost(fixture_ids::BORIS);
    boris_says(control, "before");
    human.wait_for_text(&dm, "before").await;

    human.send_text(&dm, "!max delete-portal").await;
    human
        .wait_for_membership(&dm, human.user_id(), "leave")
        .await;
    assert!(
        env.db_portal_room(fixture_ids::DIALOG_ALICE_BORIS)
            .await
            .is_none(),
        "the bridge forgot the portal"
    );
    assert!(
        !control
            .messages(fixture_ids::ALICE, fixture_ids::DIALOG_ALICE_BORIS)
            .expect("the dialog")
            .iter()
            .any(|m| m.text.contains("delete-portal")),
        "a command is not sent to MAX"
    );

    // The chat goes on: a new room, with only what came after.
    boris_says(control, "after");
    let invite = human
        .wait_for_invite(|i| i.inviter.as_ref() == Some(&boris) && i.room_id != dm)
        .await;
    human.join(&invite.room_id).await;
    human.wait_for_text(&invite.room_id, "after").await;

    env.command(&human, &management, "logout", "Logged out")
        .await;
    human
        .wait_for_membership(&invite.room_id, human.user_id(), "leave")
        .await;
}

/// Inviting a MAX user's ghost into a new room (a client's "start a
/// direct chat") opens the bridged direct chat with that user; the ghost
/// declines the invite and says where the chat is, or why there is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inviting_a_ghost_opens_the_direct_chat() {
    let env = Env::start().await;
    let control = env.sim.control();
    let vera = new_contact_vera(control);
    let (human, _management, _dm) = env.alice_with_boris_dm("alice").await;
    let ghost = env.ghost(vera.id);

    let asked = human.create_dm(&ghost).await;
    human.wait_for_membership(&asked, &ghost, "leave").await;
    let invite = human.wait_for_invite_from(&ghost).await;
    assert!(invite.is_direct);
    assert_ne!(
        invite.room_id, asked,
        "the bridged chat is a room of its own"
    );
    human.join(&invite.room_id).await;
    human.send_text(&invite.room_id, "found you").await;
    control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.chat_id == fixture_ids::ALICE ^ vera.id && m.text == "found you"
        })
        .await
        .expect("the direct chat bridges");

    // A MAX id nobody has: declined, and no chat opened.
    let nobody = env.ghost(987_654_321);
    let asked = human.create_dm(&nobody).await;
    human.wait_for_membership(&asked, &nobody, "leave").await;
    assert!(
        human
            .invites()
            .iter()
            .all(|i| i.inviter.as_ref() != Some(&nobody)),
        "no chat with a MAX user who does not exist"
    );
}

/// With double puppeting, what Alice does on MAX from her phone appears as
/// her own Matrix account (her message, its edit, her reaction, her read
/// mark), nothing of it goes back to MAX, and her direct chat is joined for
/// her and listed in her `m.direct`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_puppeting_shows_the_users_own_max_activity_as_their_own_account() {
    let env = Env::start_with_options(EnvOptions {
        double_puppet: true,
        ..EnvOptions::default()
    })
    .await;
    let (human, management) = env.user_with_management_room("alice").await;
    env.login_sms(&human, &management, ALICE_PHONE, ALICE_CODE)
        .await;
    let control = env.sim.control();
    let alice = human.user_id().to_owned();
    let boris = env.ghost(fixture_ids::BORIS);
    // Her messages on MAX, as Boris sees them, after the fixture's own.
    let texts = |account| -> Vec<String> {
        control
            .messages(account, fixture_ids::DIALOG_ALICE_BORIS)
            .expect("history")
            .into_iter()
            .filter(|m| m.sender == Some(fixture_ids::ALICE))
            .map(|m| m.text)
            .collect()
    };
    let before = texts(fixture_ids::BORIS).len();

    // The portal is there for her: joined without an invite to accept, and
    // a direct chat with Boris for her clients.
    let dm = wait::until(std::time::Duration::from_secs(60), || async {
        env.db_portal_room(fixture_ids::DIALOG_ALICE_BORIS)
            .await
            .ok_or_else(|| "no DM portal".to_owned())
    })
    .await;
    let dm = ruma::OwnedRoomId::try_from(dm).expect("a room id");
    human
        .wait_for_event(&dm, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == alice.as_str()
                && e["content"]["membership"] == "join"
        })
        .await;
    let direct: serde_json::Value = human
        .client()
        .account()
        .fetch_account_data(ruma::events::GlobalAccountDataEventType::Direct)
        .await
        .expect("account data readable")
        .expect("m.direct set")
        .deserialize_as_unchecked()
        .expect("m.direct is JSON");
    assert_eq!(
        direct[boris.as_str()],
        serde_json::json!([dm.as_str()]),
        "{direct}"
    );

    // Her message from another MAX device, and its edit, as herself.
    let sent = control
        .send(
            fixture_ids::ALICE,
            fixture_ids::DIALOG_ALICE_BORIS,
            Outgoing::text("from my phone"),
        )
        .expect("Alice sends from her phone");
    let mine = human.wait_for_text(&dm, "from my phone").await;
    assert_eq!(mine.sender, alice);
    control
        .edit(
            fixture_ids::ALICE,
            fixture_ids::DIALOG_ALICE_BORIS,
            sent.id,
            "from my phone, edited",
            None,
        )
        .expect("Alice edits on her phone");
    human
        .wait_for_event(&dm, |e| {
            e["sender"] == alice.as_str()
                && e["content"]["m.new_content"]["body"] == "from my phone, edited"
                && e["content"]["m.relates_to"]["event_id"] == mine.event_id.as_str()
        })
        .await;

    // Boris writes; she reacts and reads on her phone.
    let hello = boris_says(control, "hello Alice");
    let hello_event = human.wait_for_text(&dm, "hello Alice").await;
    control
        .react(
            fixture_ids::ALICE,
            fixture_ids::DIALOG_ALICE_BORIS,
            hello.id,
            Some("👍"),
        )
        .expect("Alice reacts on her phone");
    human
        .wait_for_event(&dm, |e| {
            e["type"] == "m.reaction"
                && e["sender"] == alice.as_str()
                && e["content"]["m.relates_to"]["key"] == "👍"
                && e["content"]["m.relates_to"]["event_id"] == hello_event.event_id.as_str()
        })
        .await;

    // Her read mark from the phone is her own read receipt.
    control
        .mark_read(
            fixture_ids::ALICE,
            fixture_ids::DIALOG_ALICE_BORIS,
            hello.id,
        )
        .expect("Alice reads on her phone");
    let room = human.client().get_room(&dm).expect("joined room");
    wait::until(SECONDS_30, || async {
        let receipt = room
            .load_user_receipt(
                matrix_sdk::ruma::events::receipt::ReceiptType::Read,
                matrix_sdk::ruma::events::receipt::ReceiptThread::Unthreaded,
                &alice,
            )
            .await
            .expect("receipt store");
        if receipt
            .as_ref()
            .is_some_and(|(event, _)| *event == hello_event.event_id)
        {
            return Ok(());
        }
        Err(format!(
            "her read mark never became her receipt (last: {receipt:?})"
        ))
    })
    .await;

    // None of it went back to MAX: her one message there, edited, and her
    // reaction; what she sends in Matrix still goes to MAX, once.
    human.send_text(&dm, "from Matrix").await;
    wait::until(SECONDS_30, || async {
        if texts(fixture_ids::BORIS).contains(&"from Matrix".to_owned()) {
            return Ok(());
        }
        Err("not sent to MAX".to_owned())
    })
    .await;
    assert_eq!(
        texts(fixture_ids::BORIS)[before..],
        ["from my phone, edited", "from Matrix"]
    );
    let hello_on_max = control
        .messages(fixture_ids::BORIS, fixture_ids::DIALOG_ALICE_BORIS)
        .expect("history")
        .into_iter()
        .find(|m| m.id == hello.id)
        .expect("Boris's message");
    assert_eq!(
        hello_on_max.reactions,
        [(fixture_ids::ALICE, "👍".to_owned())].into()
    );
    // Nothing of hers came from a ghost of her MAX account.
    let own_ghost = env.ghost(fixture_ids::ALICE);
    assert!(
        human.messages(&dm).iter().all(|m| m.sender != own_ghost),
        "a ghost spoke for her"
    );
}

/// `bridge.portal_filter` keeps chats out of portals: here channels, and
/// one dialog by its id; the rest get theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_filter_keeps_chats_out_of_portals() {
    let env = Env::start_with_options(EnvOptions {
        bridge_options: vec![(
            "portal_filter".to_owned(),
            format!(
                "{{chats: [{}], channels: false}}",
                fixture_ids::DIALOG_ALICE_TRANSFERBOT
            ),
        )],
        ..EnvOptions::default()
    })
    .await;
    let (human, management, _dm) = env.alice_with_boris_dm("alice").await;
    // Every chat looked at again, then nothing left to do.
    env.command(&human, &management, "sync", "Synchronising")
        .await;
    let http = reqwest::Client::new();
    wait::until(std::time::Duration::from_secs(60), || async {
        let text = http
            .get(format!("{}/metrics", env.appservice_url()))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text");
        let busy = text
            .lines()
            .find(|l| l.starts_with("maxbridge_busy_portals "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        if busy == Some(0.0) {
            return Ok(());
        }
        Err(format!("portals still busy: {busy:?}"))
    })
    .await;
    assert!(env.db_portal_room(fixture_ids::TEST_GROUP).await.is_some());
    assert_eq!(env.db_portal_room(fixture_ids::TEST_CHANNEL).await, None);
    assert_eq!(
        env.db_portal_room(fixture_ids::DIALOG_ALICE_TRANSFERBOT)
            .await,
        None
    );
}

/// Changes to a MAX group after its portal exists cross to Matrix: a new
/// title and description, a member removed and added again (their ghost
/// leaves and joins), and the user removed from a group is removed from
/// its room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_changes_on_max_follow_into_the_portal() {
    let env = Env::start().await;
    let (human, _management, _dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let invite = human
        .wait_for_invite(|i| i.room_name.as_deref() == Some("Test group"))
        .await;
    let group = invite.room_id;
    human.join(&group).await;
    let transferbot = env.ghost(fixture_ids::TRANSFERBOT);
    human
        .wait_for_membership(&group, &transferbot, "join")
        .await;

    // Alice, its owner, renames it and describes it from her phone.
    control
        .update_chat(
            fixture_ids::ALICE,
            fixture_ids::TEST_GROUP,
            Some("Renamed group"),
            Some("What we talk about"),
        )
        .expect("Alice changes the group");
    human
        .wait_for_state(&group, "m.room.name", "", |c| c["name"] == "Renamed group")
        .await;
    human
        .wait_for_state(&group, "m.room.topic", "", |c| {
            c["topic"] == "What we talk about"
        })
        .await;

    // TransferBot removed, then added again.
    control
        .members_update(
            fixture_ids::ALICE,
            fixture_ids::TEST_GROUP,
            &[fixture_ids::TRANSFERBOT],
            false,
        )
        .expect("TransferBot removed");
    human
        .wait_for_membership(&group, &transferbot, "leave")
        .await;
    control
        .members_update(
            fixture_ids::ALICE,
            fixture_ids::TEST_GROUP,
            &[fixture_ids::TRANSFERBOT],
            true,
        )
        .expect("TransferBot added");
    human
        .wait_for_membership(&group, &transferbot, "join")
        .await;

    // Alice, the group's owner, is its moderator in Matrix: her rename,
    // topic, kick and invite there are made on MAX.
    human
        .wait_for_state(&group, "m.room.power_levels", "", |c| {
            c["users"][human.user_id().as_str()] == 50
        })
        .await;
    human
        .send_state(
            &group,
            "m.room.name",
            "",
            serde_json::json!({"name": "Named in Matrix"}),
        )
        .await;
    human
        .send_state(
            &group,
            "m.room.topic",
            "",
            serde_json::json!({"topic": "Set in Matrix"}),
        )
        .await;
    test_group_on_max(control, "the rename", |c| {
        c.title.as_deref() == Some("Named in Matrix")
            && c.description.as_deref() == Some("Set in Matrix")
    })
    .await;
    let room = human.client().get_room(&group).expect("joined group");
    room.kick_user(&transferbot, Some("not needed here"))
        .await
        .expect("Alice kicks TransferBot");
    test_group_on_max(control, "the kick", |c| {
        !c.participants.contains_key(&fixture_ids::TRANSFERBOT)
    })
    .await;
    human.invite(&group, &transferbot).await;
    test_group_on_max(control, "the invite", |c| {
        c.participants.contains_key(&fixture_ids::TRANSFERBOT)
    })
    .await;
    human
        .wait_for_membership(&group, &transferbot, "join")
        .await;
    // Pins: one made on MAX shows in the room; one made in Matrix is made
    // on MAX, and so is its removal.
    let pin_me = control
        .send(
            fixture_ids::BORIS,
            fixture_ids::TEST_GROUP,
            Outgoing::text("pin me"),
        )
        .expect("Boris writes");
    let pin_me_event = human.wait_for_text(&group, "pin me").await;
    control
        .pin(fixture_ids::ALICE, fixture_ids::TEST_GROUP, Some(pin_me.id))
        .expect("Alice pins on her phone");
    human
        .wait_for_state(&group, "m.room.pinned_events", "", |c| {
            c["pinned"] == serde_json::json!([pin_me_event.event_id.as_str()])
        })
        .await;
    let mine = human.send_text(&group, "pin this instead").await;
    let on_max = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.text == "pin this instead"
        })
        .await
        .expect("reaches MAX");
    human
        .send_state(
            &group,
            "m.room.pinned_events",
            "",
            serde_json::json!({"pinned": [mine.as_str()]}),
        )
        .await;
    test_group_on_max(control, "the pin", |c| c.pinned == Some(on_max.id)).await;
    human
        .send_state(
            &group,
            "m.room.pinned_events",
            "",
            serde_json::json!({"pinned": []}),
        )
        .await;
    test_group_on_max(control, "the unpin", |c| c.pinned.is_none()).await;

    // MAX's own echoes changed nothing back: the name she gave stays.
    assert_eq!(
        human.room_name(&group).await.as_deref(),
        Some("Named in Matrix")
    );

    // Boris makes a group with Alice, then removes her from it: she is
    // removed from its room, saying why.
    let borises = control
        .create_chat(
            fixture_ids::BORIS,
            maxsim::ChatKind::Chat,
            "Boris's group",
            &[fixture_ids::ALICE],
        )
        .expect("Boris makes a group");
    let invite = human
        .wait_for_invite(|i| i.room_name.as_deref() == Some("Boris's group"))
        .await;
    human.join(&invite.room_id).await;
    // Only its admins change its members on MAX: her invite there is
    // refused, and the ghost declines, saying so.
    human.invite(&invite.room_id, &transferbot).await;
    let bot = env.bot();
    human
        .wait_for_message(&invite.room_id, |m| {
            m.sender == bot && m.body.contains("MAX did not add that member")
        })
        .await;
    human
        .wait_for_membership(&invite.room_id, &transferbot, "leave")
        .await;
    control
        .members_update(fixture_ids::BORIS, borises, &[fixture_ids::ALICE], false)
        .expect("Alice removed");
    // She can no longer read the room: the bot's view of her membership.
    let url = format!(
        "{}/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
        env.synapse.base_url(),
        invite.room_id,
        human.user_id()
    );
    let http = reqwest::Client::new();
    let member = wait::until(SECONDS_30, || async {
        let member: serde_json::Value = http
            .get(&url)
            .bearer_auth(env.as_token())
            .send()
            .await
            .expect("membership readable")
            .json()
            .await
            .expect("membership JSON");
        if member["membership"] == "leave" {
            return Ok(member);
        }
        Err(format!("still in the room: {member}"))
    })
    .await;
    assert!(
        member["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no longer a member")),
        "{member}"
    );
}

/// Waits until the fixture's test group, as Alice's account has it on MAX,
/// shows `what` was done.
async fn test_group_on_max(
    control: &maxsim::Control,
    what: &str,
    done: impl Fn(&maxsim::ChatInfo) -> bool,
) {
    wait::until(SECONDS_30, || async {
        let group = control
            .chats(fixture_ids::ALICE)
            .expect("chats")
            .into_iter()
            .find(|c| c.id == fixture_ids::TEST_GROUP)
            .expect("the group");
        if done(&group) {
            return Ok(());
        }
        Err(format!("{what} never reached MAX: {group:?}"))
    })
    .await;
}

/// Relay mode: in a portal whose owner turned it on, a Matrix user without
/// a MAX login speaks through the owner's account, named; before that, and
/// after it is turned off, their messages stay in Matrix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_mode_lets_users_without_a_login_speak_through_the_owner() {
    let env = Env::start_with_options(EnvOptions {
        bridge_options: vec![(
            "relay".to_owned(),
            "{enabled: true, admin_only: false}".to_owned(),
        )],
        ..EnvOptions::default()
    })
    .await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    let bob = Human::register(&env.synapse, "bob").await;
    human.invite(&dm, bob.user_id()).await;
    bob.join(&dm).await;
    let alice_on_max = || -> Vec<String> {
        control
            .messages(fixture_ids::BORIS, fixture_ids::DIALOG_ALICE_BORIS)
            .expect("history")
            .into_iter()
            .filter(|m| m.sender == Some(fixture_ids::ALICE))
            .map(|m| m.text)
            .collect()
    };

    bob.send_text(&dm, "not relayed yet").await;
    let bot = env.bot();
    let on = env
        .command(&human, &dm, "!max set-relay", "Relaying is on")
        .await;
    assert!(on.contains("portal owner's account"), "{on}");
    bob.send_text(&dm, "relayed hello").await;
    let sent = control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.text.ends_with("relayed hello")
        })
        .await
        .expect("the relayed message reaches MAX");
    assert_eq!(sent.text, "bob: relayed hello");
    assert_eq!(sent.sender, Some(fixture_ids::ALICE));

    env.command(&human, &dm, "!max unset-relay", "Relaying is off")
        .await;
    bob.send_text(&dm, "not relayed again").await;
    // Alice's own message after it goes; Bob's before it stayed.
    human.send_text(&dm, "Alice after relaying").await;
    control
        .wait_for_message(std::time::Duration::from_secs(30), |m| {
            m.text == "Alice after relaying"
        })
        .await
        .expect("Alice's message reaches MAX");
    let texts = alice_on_max();
    assert!(
        !texts.iter().any(|t| t.contains("not relayed")),
        "{texts:?}"
    );
    // Nothing of Bob's came back into the room from MAX.
    assert!(
        human
            .messages(&dm)
            .iter()
            .all(|m| m.sender == bot || !m.body.starts_with("bob:")),
        "an echo of a relayed message"
    );
}

/// MAX's Saved messages become a room of the user's notes once they hold
/// something: a note made on the phone appears there, and one written in
/// the room is saved on MAX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_messages_are_a_notes_room_both_ways() {
    let env = Env::start().await;
    let (human, _management, _dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control();
    control
        .send(fixture_ids::ALICE, 0, Outgoing::text("note to self"))
        .expect("Alice saves a note on her phone");
    let invite = human
        .wait_for_invite(|i| i.room_name.as_deref() == Some("Saved messages"))
        .await;
    human.join(&invite.room_id).await;
    let note = human.wait_for_text(&invite.room_id, "note to self").await;
    assert_eq!(note.sender, env.ghost(fixture_ids::ALICE));

    human.send_text(&invite.room_id, "saved from Matrix").await;
    let saved = wait::until(SECONDS_30, || async {
        let saved: Vec<String> = control
            .messages(fixture_ids::ALICE, 0)
            .expect("Saved messages")
            .into_iter()
            .map(|m| m.text)
            .collect();
        if saved.contains(&"saved from Matrix".to_owned()) {
            return Ok(saved);
        }
        Err(format!("not saved on MAX: {saved:?}"))
    })
    .await;
    assert_eq!(saved, ["note to self", "saved from Matrix"]);
    // Once: no echo of it came back into the room.
    human
        .wait_for_text(&invite.room_id, "saved from Matrix")
        .await;
    assert_eq!(
        human
            .messages(&invite.room_id)
            .iter()
            .filter(|m| m.body == "saved from Matrix")
            .count(),
        1
    );
}

/// Double puppeting set up after the portals exist: at the next start the
/// user is in them (not merely invited) and the direct chat is in their
/// `m.direct`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_puppeting_set_up_later_joins_the_user_to_existing_portals() {
    let mut env = Env::start_with_options(EnvOptions {
        double_puppet: true,
        ..EnvOptions::default()
    })
    .await;
    // First without it: the portals are made with invites only.
    let with_puppets = std::fs::read_to_string(&env.config_path).expect("config");
    let (before, from) = with_puppets
        .split_once("double_puppet:\n")
        .expect("the double puppet section");
    let after = from
        .split_once("\n\n")
        .map_or(String::new(), |(_, rest)| rest.to_owned());
    std::fs::write(&env.config_path, format!("{before}{after}")).expect("config written");
    env.restart_bridge().await;
    let (human, management) = env.user_with_management_room("alice").await;
    env.login_sms(&human, &management, ALICE_PHONE, ALICE_CODE)
        .await;
    let boris = env.ghost(fixture_ids::BORIS);
    let dm = human
        .wait_for_invite(|i| i.inviter.as_ref() == Some(&boris))
        .await
        .room_id;
    // Once the group's invite is there too, the login's portals are made.
    human
        .wait_for_invite(|i| i.room_name.as_deref() == Some("Test group"))
        .await;
    assert_eq!(
        human.client().get_room(&dm).map(|room| room.state()),
        Some(matrix_sdk::RoomState::Invited),
        "without double puppeting the user is only invited"
    );

    std::fs::write(&env.config_path, &with_puppets).expect("config written");
    env.restart_bridge().await;
    let alice = human.user_id().to_owned();
    human
        .wait_for_event(&dm, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == alice.as_str()
                && e["content"]["membership"] == "join"
        })
        .await;
    wait::until(SECONDS_30, || async {
        let direct: Option<serde_json::Value> = human
            .client()
            .account()
            .fetch_account_data(ruma::events::GlobalAccountDataEventType::Direct)
            .await
            .expect("account data readable")
            .and_then(|raw| raw.deserialize_as_unchecked().ok());
        if direct
            .as_ref()
            .is_some_and(|d| d[boris.as_str()] == serde_json::json!([dm.as_str()]))
        {
            return Ok(());
        }
        Err(format!("the DM is not in m.direct: {direct:?}"))
    })
    .await;
}
