//! Storage round trips against a real PostgreSQL and a real SQLite file: every table, its uniqueness
//! rules, and surviving a restart.

mod support;

use std::time::Duration;

use maxbridge::store::{
    GhostRow, InboxRow, LoginRow, MessageRow, PortalKind, PortalMark, PortalRow, ReactionRow,
    Store, StoreError,
};
use maxproto::Token;
use support::database::{Backend, TestDatabase};
use support::pg::TestDb;

async fn fresh(backend: Backend) -> (TestDatabase, Store) {
    let db = TestDatabase::create(backend).await;
    let store = Store::connect(db.url(), 4)
        .await
        .expect("connect and migrate");
    (db, store)
}

fn login(mxid: &str, max_user_id: i64, token: &str) -> LoginRow {
    LoginRow {
        mxid: mxid.to_owned(),
        max_user_id,
        token: Token::new(token),
        device_id: "3f0c1e9a-4a52-4d6e-9a39-5d2b8f1f7c10".to_owned(),
        state: "connected".to_owned(),
        display_name: Some("Ivan Petrov".to_owned()),
        phone: Some("+79990000000".to_owned()),
    }
}

fn message(chat_id: i64, max_message_id: i64, part: i32, ts: i64) -> MessageRow {
    MessageRow {
        chat_id,
        receiver: 100,
        max_message_id,
        part,
        event_id: format!("$ev_{max_message_id}_{part}"),
        room_id: "!room:example.org".to_owned(),
        sender: 200,
        timestamp_ms: ts,
    }
}

fn assert_conflict(result: Result<impl std::fmt::Debug, StoreError>, constraint_part: &str) {
    match result {
        Err(StoreError::Conflict { constraint }) => {
            assert!(
                constraint.contains(constraint_part),
                "constraint {constraint}"
            )
        }
        other => panic!("expected a conflict on {constraint_part}, got {other:?}"),
    }
}

async fn users_and_management_rooms(backend: Backend) {
    let (db, store) = fresh(backend).await;
    let users = store.users();

    users.ensure("@alice:example.org").await.unwrap();
    users.ensure("@alice:example.org").await.unwrap();
    let alice = users.get("@alice:example.org").await.unwrap().unwrap();
    assert_eq!(alice.management_room, None);

    users
        .set_management_room("@alice:example.org", Some("!mgmt_a"))
        .await
        .unwrap();
    // ensure() must not wipe an existing management room.
    users.ensure("@alice:example.org").await.unwrap();
    let by_room = users
        .get_by_management_room("!mgmt_a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_room.mxid, "@alice:example.org");

    // set_management_room creates unknown users.
    users
        .set_management_room("@bob:example.org", Some("!mgmt_b"))
        .await
        .unwrap();
    assert_conflict(
        users
            .set_management_room("@bob:example.org", Some("!mgmt_a"))
            .await,
        "management_room",
    );
    assert_eq!(users.all().await.unwrap().len(), 2);

    users
        .set_management_room("@alice:example.org", None)
        .await
        .unwrap();
    assert!(
        users
            .get_by_management_room("!mgmt_a")
            .await
            .unwrap()
            .is_none()
    );
    assert!(users.get("@nobody:example.org").await.unwrap().is_none());

    // The personal space is kept beside the management room, and made for
    // unknown users too.
    users
        .set_space_room("@alice:example.org", "!space_a")
        .await
        .unwrap();
    let alice = users.get("@alice:example.org").await.unwrap().unwrap();
    assert_eq!(alice.space_room.as_deref(), Some("!space_a"));
    users
        .set_space_room("@carol:example.org", "!space_c")
        .await
        .unwrap();
    let carol = users.get("@carol:example.org").await.unwrap().unwrap();
    assert_eq!(
        (carol.management_room, carol.space_room.as_deref()),
        (None, Some("!space_c"))
    );

    store.close().await;
    db.drop_db().await;
}

async fn logins_round_trip_and_uniqueness(backend: Backend) {
    let (db, store) = fresh(backend).await;
    let logins = store.logins();

    // upsert creates the user row the login hangs off.
    logins
        .upsert(&login("@alice:example.org", 1001, "tok-alice"))
        .await
        .unwrap();
    assert!(
        store
            .users()
            .get("@alice:example.org")
            .await
            .unwrap()
            .is_some()
    );

    let got = logins.get("@alice:example.org").await.unwrap().unwrap();
    assert_eq!(got.max_user_id, 1001);
    assert_eq!(got.token.expose(), "tok-alice");
    assert_eq!(got.device_id, "3f0c1e9a-4a52-4d6e-9a39-5d2b8f1f7c10");
    assert_eq!(got.state, "connected");
    assert_eq!(got.display_name.as_deref(), Some("Ivan Petrov"));
    assert_eq!(got.phone.as_deref(), Some("+79990000000"));
    let by_max = logins.get_by_max_user_id(1001).await.unwrap().unwrap();
    assert_eq!(by_max.mxid, "@alice:example.org");

    // Same MAX account for a second Matrix user is refused, without leaking the token.
    let err = logins
        .upsert(&login("@bob:example.org", 1001, "tok-bob-secret"))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(!err.to_string().contains("tok-bob-secret"));
    assert!(!format!("{err:?}").contains("tok-bob-secret"));

    // Re-login of the same Matrix user replaces the row.
    let mut relogin = login("@alice:example.org", 1002, "tok-alice-2");
    relogin.display_name = None;
    logins.upsert(&relogin).await.unwrap();
    let got = logins.get("@alice:example.org").await.unwrap().unwrap();
    assert_eq!(got.max_user_id, 1002);
    assert_eq!(got.token.expose(), "tok-alice-2");
    assert_eq!(got.display_name, None);
    assert!(logins.get_by_max_user_id(1001).await.unwrap().is_none());

    assert!(
        logins
            .set_state("@alice:example.org", "logged_out")
            .await
            .unwrap()
    );
    assert!(
        logins
            .set_token("@alice:example.org", &Token::new("tok-alice-3"))
            .await
            .unwrap()
    );
    assert!(
        logins
            .set_profile("@alice:example.org", Some("Ivan"), None)
            .await
            .unwrap()
    );
    let got = logins.get("@alice:example.org").await.unwrap().unwrap();
    assert_eq!(got.state, "logged_out");
    assert_eq!(got.token.expose(), "tok-alice-3");
    assert_eq!(got.display_name.as_deref(), Some("Ivan"));
    assert_eq!(got.phone, None);
    assert!(
        !logins
            .set_state("@nobody:example.org", "connected")
            .await
            .unwrap()
    );

    logins
        .upsert(&login("@bob:example.org", 2001, "tok-bob"))
        .await
        .unwrap();
    let all: Vec<String> = logins
        .all()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.mxid)
        .collect();
    assert_eq!(all, ["@alice:example.org", "@bob:example.org"]);

    assert!(logins.delete("@bob:example.org").await.unwrap());
    assert!(!logins.delete("@bob:example.org").await.unwrap());
    assert!(logins.get("@bob:example.org").await.unwrap().is_none());

    // Forgetting a user forgets their login.
    assert!(store.users().delete("@alice:example.org").await.unwrap());
    assert!(logins.get("@alice:example.org").await.unwrap().is_none());

    store.close().await;
    db.drop_db().await;
}

async fn debug_of_a_login_hides_the_token(backend: Backend) {
    let (db, store) = fresh(backend).await;
    let row = login("@alice:example.org", 1001, "very-secret-token-value");
    assert!(!format!("{row:?}").contains("very-secret-token-value"));
    store.logins().upsert(&row).await.unwrap();
    let loaded = store
        .logins()
        .get("@alice:example.org")
        .await
        .unwrap()
        .unwrap();
    let shown = format!("{loaded:?}");
    assert!(!shown.contains("very-secret-token-value"), "{shown}");
    assert!(shown.contains("@alice:example.org"), "{shown}");

    store.close().await;
    db.drop_db().await;
}

async fn portals_round_trip_and_uniqueness(backend: Backend) {
    let (db, store) = fresh(backend).await;
    let portals = store.portals();

    let mut dialog = PortalRow::new(555, 100, PortalKind::Dialog);
    dialog.other_user_id = Some(200);
    dialog.name = Some("Ivan".to_owned());
    portals.upsert(&dialog).await.unwrap();
    assert_eq!(portals.get(555, 100).await.unwrap().unwrap(), dialog);

    // The same MAX chat seen by another login is another portal.
    let mut group = PortalRow::new(777, 100, PortalKind::Chat);
    group.name = Some("Team".to_owned());
    group.topic = Some("Work talk".to_owned());
    group.avatar_url = Some("https://i.oneme.ru/a.jpg".to_owned());
    group.avatar_mxc = Some("mxc://example.org/abc".to_owned());
    group.room_id = Some("!team_for_100".to_owned());
    portals.upsert(&group).await.unwrap();
    let mut group_b = PortalRow::new(777, 300, PortalKind::Chat);
    group_b.room_id = Some("!team_for_300".to_owned());
    portals.upsert(&group_b).await.unwrap();
    assert_eq!(portals.get(777, 100).await.unwrap().unwrap(), group);
    assert_eq!(portals.get(777, 300).await.unwrap().unwrap(), group_b);
    assert_eq!(
        portals.get_by_room("!team_for_300").await.unwrap().unwrap(),
        group_b
    );
    // Relay mode, on and off, as read back (memory follows the write).
    assert!(portals.set_relay(777, 300, true).await.unwrap());
    assert!(portals.get(777, 300).await.unwrap().unwrap().relay);
    assert!(!portals.get(777, 100).await.unwrap().unwrap().relay);
    assert!(portals.set_relay(777, 300, false).await.unwrap());
    assert!(
        !portals
            .get_by_room("!team_for_300")
            .await
            .unwrap()
            .unwrap()
            .relay
    );
    assert!(!portals.set_relay(999, 300, true).await.unwrap());

    // Room not yet created, then created.
    assert!(
        portals
            .get(555, 100)
            .await
            .unwrap()
            .unwrap()
            .room_id
            .is_none()
    );
    assert!(portals.set_room(555, 100, Some("!dm")).await.unwrap());
    assert_eq!(
        portals.get_by_room("!dm").await.unwrap().unwrap().chat_id,
        555
    );
    assert!(!portals.set_room(1, 1, Some("!nowhere")).await.unwrap());

    // One room cannot be two portals.
    assert_conflict(
        portals.set_room(555, 100, Some("!team_for_100")).await,
        "room_id",
    );
    let mut clash = PortalRow::new(888, 100, PortalKind::Channel);
    clash.room_id = Some("!team_for_300".to_owned());
    assert_conflict(portals.upsert(&clash).await, "room_id");

    let found = portals.find_dialog(100, 200).await.unwrap().unwrap();
    assert_eq!(found.chat_id, 555);
    assert!(portals.find_dialog(300, 200).await.unwrap().is_none());

    let mine: Vec<i64> = portals
        .for_receiver(100)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.chat_id)
        .collect();
    assert_eq!(mine, [555, 777]);

    // Upsert replaces details.
    group.name = Some("Team (renamed)".to_owned());
    group.kind = PortalKind::Channel;
    portals.upsert(&group).await.unwrap();
    let got = portals.get(777, 100).await.unwrap().unwrap();
    assert_eq!(got.name.as_deref(), Some("Team (renamed)"));
    assert_eq!(got.kind, PortalKind::Channel);

    assert!(portals.delete(777, 300).await.unwrap());
    assert!(portals.get(777, 300).await.unwrap().is_none());
    assert!(!portals.delete(777, 300).await.unwrap());

    store.close().await;
    db.drop_db().await;
}

/// Ghosts made at once (a first start) are written together, each as its
/// last upsert left it; a store that read the table ahead answers for a
/// ghost it does not hold without asking the database.
async fn ghosts_made_at_once_are_all_kept_and_a_preloaded_table_answers_from_memory(
    backend: Backend,
) {
    let (db, store) = fresh(backend).await;
    let writes = (0..60i64).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut ghost = GhostRow::new(1000 + n, format!("@max_{}:example.org", 1000 + n));
            store.ghosts().upsert(&ghost).await.unwrap();
            ghost.registered = true;
            ghost.display_name = Some(format!("Member {n}"));
            ghost.name_set = true;
            store.ghosts().upsert(&ghost).await.unwrap();
            ghost
        })
    });
    let writes: Vec<_> = writes.collect();
    let mut written = Vec::new();
    for write in writes {
        written.push(write.await.unwrap());
    }

    let restarted = Store::connect(db.url(), 2).await.unwrap();
    assert!(restarted.ghosts().preload(1000).await.unwrap());
    for ghost in &written {
        assert_eq!(
            restarted
                .ghosts()
                .get(ghost.max_user_id)
                .await
                .unwrap()
                .as_ref(),
            Some(ghost)
        );
    }
    // Written behind the store's back: a preloaded store does not look.
    maxbridge::on_db!(restarted.db(), |pool| {
        sqlx::query("INSERT INTO ghosts (max_user_id, mxid) VALUES (5, '@max_5:example.org')")
            .execute(pool)
            .await
            .map(drop)
    })
    .unwrap();
    assert_eq!(restarted.ghosts().get(5).await.unwrap(), None);
    // A table larger than asked for is left to be read as needed.
    let large = Store::connect(db.url(), 2).await.unwrap();
    assert!(!large.ghosts().preload(10).await.unwrap());
    assert!(large.ghosts().get(5).await.unwrap().is_some());

    large.close().await;
    restarted.close().await;
    store.close().await;
    db.drop_db().await;
}

async fn ghosts_round_trip_and_uniqueness(backend: Backend) {
    let (db, store) = fresh(backend).await;
    let ghosts = store.ghosts();

    let ghost = GhostRow::new(200, "@max_200:example.org");
    ghosts.upsert(&ghost).await.unwrap();
    assert_eq!(ghosts.get(200).await.unwrap().unwrap(), ghost);
    assert!(!ghost.registered);

    assert!(ghosts.mark_registered(200).await.unwrap());
    assert!(!ghosts.mark_registered(201).await.unwrap());
    let mut got = ghosts
        .get_by_mxid("@max_200:example.org")
        .await
        .unwrap()
        .unwrap();
    assert!(got.registered);

    got.display_name = Some("Ivan (MAX)".to_owned());
    got.avatar_url = Some("https://i.oneme.ru/u.jpg".to_owned());
    got.avatar_mxc = Some("mxc://example.org/u".to_owned());
    got.name_set = true;
    got.avatar_set = true;
    ghosts.upsert(&got).await.unwrap();
    assert_eq!(ghosts.get(200).await.unwrap().unwrap(), got);

    assert_conflict(
        ghosts
            .upsert(&GhostRow::new(201, "@max_200:example.org"))
            .await,
        "mxid",
    );
    assert!(ghosts.get(201).await.unwrap().is_none());

    assert!(ghosts.delete(200).await.unwrap());
    assert!(ghosts.get(200).await.unwrap().is_none());

    store.close().await;
    db.drop_db().await;
}

async fn messages_map_both_ways(backend: Backend) {
    let (db, store) = fresh(backend).await;
    store
        .portals()
        .upsert(&PortalRow::new(555, 100, PortalKind::Chat))
        .await
        .unwrap();
    let messages = store.messages();

    assert!(messages.latest_in_portal(555, 100).await.unwrap().is_none());

    let text = message(555, 9_007_199_254_740_993, 0, 1_000);
    let photo = message(555, 9_007_199_254_740_993, 1, 1_000);
    let later = message(555, 9_007_199_254_740_999, 0, 2_000);
    // Insert out of order: lookups must not depend on insertion order.
    for row in [&photo, &later, &text] {
        messages.insert(row).await.unwrap();
    }

    let parts = messages
        .by_max_id(555, 100, 9_007_199_254_740_993)
        .await
        .unwrap();
    assert_eq!(parts, [text.clone(), photo.clone()]);
    assert!(
        messages
            .by_max_id(555, 300, 9_007_199_254_740_993)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        messages
            .by_event_id(&photo.event_id)
            .await
            .unwrap()
            .unwrap(),
        photo
    );
    assert!(messages.by_event_id("$unknown").await.unwrap().is_none());

    assert_eq!(
        messages.latest_in_portal(555, 100).await.unwrap().unwrap(),
        later
    );
    // A read mark between the two messages points at the earlier one (its
    // last part); one before both points at nothing.
    assert_eq!(
        messages
            .latest_at_or_before(555, 100, 1_999)
            .await
            .unwrap()
            .unwrap(),
        photo
    );
    assert_eq!(
        messages
            .latest_at_or_before(555, 100, 2_000)
            .await
            .unwrap()
            .unwrap(),
        later
    );
    assert!(
        messages
            .latest_at_or_before(555, 100, 999)
            .await
            .unwrap()
            .is_none()
    );

    // A long Matrix message goes out as several MAX messages of one event;
    // looking the event up gives its first MAX message. Each part still
    // maps to one event.
    let mut split = message(555, 9_007_199_254_741_000, 0, 3_000);
    split.event_id = text.event_id.clone();
    messages.insert(&split).await.unwrap();
    assert_eq!(
        messages
            .by_event_id(&text.event_id)
            .await
            .unwrap()
            .unwrap()
            .max_message_id,
        text.max_message_id.min(split.max_message_id)
    );
    messages
        .delete_by_max_id(555, 100, split.max_message_id)
        .await
        .unwrap();
    let mut dup_part = text.clone();
    dup_part.event_id = "$other".to_owned();
    // PostgreSQL names the primary key; SQLite its columns.
    let primary_key = match backend {
        Backend::Postgres => "messages_pkey",
        Backend::Sqlite => {
            "messages.chat_id, messages.receiver, messages.max_message_id, messages.part"
        }
    };
    assert_conflict(messages.insert(&dup_part).await, primary_key);

    // Messages need their portal.
    match messages.insert(&message(999, 1, 0, 1)).await {
        Err(StoreError::MissingReference { .. }) => {}
        other => panic!("expected a missing portal, got {other:?}"),
    }

    assert_eq!(
        messages
            .delete_by_max_id(555, 100, 9_007_199_254_740_993)
            .await
            .unwrap(),
        2
    );
    assert!(
        messages
            .by_event_id(&text.event_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(messages.delete_by_event_id(&later.event_id).await.unwrap());
    assert!(!messages.delete_by_event_id(&later.event_id).await.unwrap());

    // Deleting a portal forgets its messages.
    messages.insert(&later).await.unwrap();
    store.portals().delete(555, 100).await.unwrap();
    assert!(
        messages
            .by_event_id(&later.event_id)
            .await
            .unwrap()
            .is_none()
    );

    store.close().await;
    db.drop_db().await;
}

async fn reactions_one_per_user_and_message(backend: Backend) {
    let (db, store) = fresh(backend).await;
    store
        .portals()
        .upsert(&PortalRow::new(555, 100, PortalKind::Chat))
        .await
        .unwrap();
    let reactions = store.reactions();
    let row = |user: i64, emoji: &str, event: &str| ReactionRow {
        chat_id: 555,
        receiver: 100,
        max_message_id: 9_007_199_254_740_993,
        max_user_id: user,
        emoji: emoji.to_owned(),
        event_id: event.to_owned(),
        room_id: "!room".to_owned(),
    };
    reactions.upsert(&row(7, "👍", "$a")).await.unwrap();
    reactions.upsert(&row(8, "🔥", "$b")).await.unwrap();
    // A new reaction of the same user replaces the old one.
    reactions.upsert(&row(7, "❤️", "$c")).await.unwrap();
    let all = reactions
        .for_message(555, 100, 9_007_199_254_740_993)
        .await
        .unwrap();
    assert_eq!(all, vec![row(7, "❤️", "$c"), row(8, "🔥", "$b")]);
    assert!(reactions.by_event_id("$a").await.unwrap().is_none());
    assert_eq!(
        reactions.by_event_id("$b").await.unwrap(),
        Some(row(8, "🔥", "$b"))
    );
    // An event stands for one reaction only.
    assert!(
        reactions
            .upsert(&ReactionRow {
                max_message_id: 1,
                ..row(9, "👍", "$b")
            })
            .await
            .unwrap_err()
            .is_conflict()
    );
    assert!(reactions.delete(&row(7, "❤️", "$c")).await.unwrap());
    assert!(!reactions.delete(&row(7, "❤️", "$c")).await.unwrap());
    // They go with their portal.
    store.portals().delete(555, 100).await.unwrap();
    assert!(reactions.by_event_id("$b").await.unwrap().is_none());
    db.drop_db().await;
}

async fn inbox_keeps_events_until_done_and_recognises_redeliveries(backend: Backend) {
    let (db, store) = fresh(backend).await;
    let inbox = store.inbox();
    let row = |id: &str| InboxRow {
        event_id: id.to_owned(),
        room_id: "!r:example.org".to_owned(),
        // NUL escapes are valid JSON that JSONB would refuse.
        event: format!(r#"{{"event_id":"{id}","content":{{"body":"a\u0000b"}}}}"#),
    };

    let fresh = inbox
        .record(&[row("$a"), row("$b"), row("$c")])
        .await
        .unwrap();
    assert_eq!(fresh, ["$a", "$b", "$c"]);
    // A redelivery (any transaction id) names the new events, and those
    // stored before but not done (an attempt may have failed after storing
    // them; the server knows which it holds); done ones are left out.
    let again = inbox.record(&[row("$b"), row("$d")]).await.unwrap();
    assert_eq!(again, ["$d", "$b"]);
    assert!(inbox.done("$b").await.unwrap());
    assert!(!inbox.done("$b").await.unwrap());
    let after_done = inbox.record(&[row("$b"), row("$c")]).await.unwrap();
    assert_eq!(after_done, ["$c"]);
    let pending: Vec<String> = inbox
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event_id)
        .collect();
    assert_eq!(
        pending,
        ["$a", "$c", "$d"],
        "delivery order, done ones left out"
    );
    assert_eq!(inbox.pending().await.unwrap()[0], row("$a"));

    // Done events are forgotten only after the retention time.
    assert_eq!(
        inbox
            .prune_done_older_than(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    let two_days_ago = match backend {
        Backend::Postgres => "now() - interval '2 days'",
        Backend::Sqlite => "datetime('now', '-2 days')",
    };
    let sql = format!("UPDATE matrix_inbox SET done_at = {two_days_ago} WHERE event_id = '$b'");
    maxbridge::on_db!(store.db(), |pool| {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .map(drop)
    })
    .unwrap();
    assert_eq!(
        inbox
            .prune_done_older_than(Duration::from_secs(24 * 3600))
            .await
            .unwrap(),
        1
    );
    assert_eq!(inbox.record(&[row("$b")]).await.unwrap(), ["$b"]);

    store.close().await;
    db.drop_db().await;
}

async fn portal_mark_moves_forward_with_the_mappings(backend: Backend) {
    let (db, store) = fresh(backend).await;
    let mut portal = PortalRow::new(555, 100, PortalKind::Chat);
    portal.room_id = Some("!room:example.org".to_owned());
    store.portals().upsert(&portal).await.unwrap();
    let portals = store.portals();
    assert_eq!(portals.mark(555, 100).await.unwrap(), None);
    let start = PortalMark {
        message_id: 0,
        time: 1000,
    };
    assert!(portals.init_mark(555, 100, start).await.unwrap());
    // A second start (a retried creation) keeps the first.
    assert!(
        !portals
            .init_mark(
                555,
                100,
                PortalMark {
                    message_id: 9,
                    time: 9
                }
            )
            .await
            .unwrap()
    );
    assert_eq!(portals.mark(555, 100).await.unwrap(), Some(start));

    let messages = store.messages();
    assert!(
        messages
            .record(&message(555, 7, 0, 2000), false)
            .await
            .unwrap()
    );
    assert_eq!(
        portals.mark(555, 100).await.unwrap(),
        Some(start),
        "not advanced"
    );
    assert!(
        messages
            .record(&message(555, 8, 0, 3000), true)
            .await
            .unwrap()
    );
    let at_8 = PortalMark {
        message_id: 8,
        time: 3000,
    };
    assert_eq!(portals.mark(555, 100).await.unwrap(), Some(at_8));
    // Recording again (a retry after a crash) is no error and changes nothing.
    assert!(
        !messages
            .record(&message(555, 8, 0, 3000), true)
            .await
            .unwrap()
    );
    // The mark never goes back.
    assert!(
        !portals
            .advance_mark(
                555,
                100,
                PortalMark {
                    message_id: 7,
                    time: 2000
                }
            )
            .await
            .unwrap()
    );
    assert_eq!(portals.mark(555, 100).await.unwrap(), Some(at_8));

    // Edits and deletions are remembered per message.
    assert_eq!(messages.edited_ms(555, 100, 8).await.unwrap(), None);
    messages.set_edited_ms(555, 100, 8, 3500).await.unwrap();
    messages.set_edited_ms(555, 100, 8, 3400).await.unwrap();
    assert_eq!(messages.edited_ms(555, 100, 8).await.unwrap(), Some(3500));
    let live: Vec<i64> = messages
        .live_between(555, 100, 0, 5000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.max_message_id)
        .collect();
    assert_eq!(live, [7, 8]);
    messages.set_deleted(555, 100, 7).await.unwrap();
    assert!(messages.is_deleted(555, 100, 7).await.unwrap());
    assert!(!messages.is_deleted(555, 100, 8).await.unwrap());
    assert_eq!(
        messages
            .live_between(555, 100, 0, 5000)
            .await
            .unwrap()
            .len(),
        1
    );

    store.close().await;
    db.drop_db().await;
}

async fn kv_round_trip(backend: Backend) {
    let (db, store) = fresh(backend).await;
    let kv = store.kv();

    assert_eq!(kv.get("login/@a:x/chats_sync").await.unwrap(), None);
    kv.set("login/@a:x/chats_sync", "0").await.unwrap();
    kv.set("login/@a:x/chats_sync", "1782000000000")
        .await
        .unwrap();
    assert_eq!(
        kv.get("login/@a:x/chats_sync").await.unwrap().as_deref(),
        Some("1782000000000")
    );
    assert!(kv.delete("login/@a:x/chats_sync").await.unwrap());
    assert!(!kv.delete("login/@a:x/chats_sync").await.unwrap());
    assert_eq!(kv.get("login/@a:x/chats_sync").await.unwrap(), None);

    store.close().await;
    db.drop_db().await;
}

async fn data_survives_a_restart_and_migrations_are_idempotent(backend: Backend) {
    let db = TestDatabase::create(backend).await;

    let store = Store::connect(db.url(), 2).await.expect("first start");
    store
        .logins()
        .upsert(&login("@alice:example.org", 1001, "tok"))
        .await
        .unwrap();
    let mut portal = PortalRow::new(555, 1001, PortalKind::Dialog);
    portal.room_id = Some("!dm".to_owned());
    store.portals().upsert(&portal).await.unwrap();
    store
        .messages()
        .insert(&MessageRow {
            receiver: 1001,
            ..message(555, 7, 0, 5)
        })
        .await
        .unwrap();
    store
        .ghosts()
        .upsert(&GhostRow::new(200, "@max_200:example.org"))
        .await
        .unwrap();
    store.close().await;

    // Two restarts: the second also re-runs migrations on a current schema.
    for _ in 0..2 {
        let store = Store::connect(db.url(), 2).await.expect("restart");
        let login = store
            .logins()
            .get("@alice:example.org")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(login.token.expose(), "tok");
        assert_eq!(
            store.portals().get_by_room("!dm").await.unwrap().unwrap(),
            portal
        );
        assert_eq!(
            store
                .messages()
                .latest_in_portal(555, 1001)
                .await
                .unwrap()
                .unwrap()
                .max_message_id,
            7
        );
        assert!(store.ghosts().get(200).await.unwrap().is_some());
        store.close().await;
    }

    let store = Store::connect(db.url(), 1).await.expect("restart");
    let applied: i64 = maxbridge::on_db!(store.db(), |pool| {
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
    })
    .unwrap();
    let dialect = match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    let shipped = std::fs::read_dir(format!(
        "{}/migrations/{dialect}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .filter(|entry| {
        entry
            .as_ref()
            .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
    })
    .count();
    assert_eq!(applied, i64::try_from(shipped).unwrap());
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn connecting_to_a_missing_database_is_an_error() {
    let db = TestDb::create().await;
    let url = db.url().replace(db.name(), "maxbridge_test_does_not_exist");
    match Store::connect(&url, 1).await {
        Err(StoreError::Connect(_)) => {}
        other => panic!("expected a connection error, got {other:?}"),
    }
    db.drop_db().await;
}

#[tokio::test]
async fn dropping_a_test_db_removes_it() {
    let db = TestDb::create().await;
    let name = db.name().to_owned();
    let admin = Store::connect(db.url(), 1).await.unwrap();
    let exists = |store: Store, name: String| async move {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
        )
        .bind(name)
        .fetch_one(match store.db() {
            maxbridge::store::Db::Postgres(pool) => pool,
            maxbridge::store::Db::Sqlite(_) => unreachable!("a PostgreSQL test"),
        })
        .await
        .unwrap()
    };
    assert!(exists(admin.clone(), name.clone()).await);
    // Dropped by the sync fallback, with the store's connection still open.
    let other = TestDb::create().await;
    let other_name = other.name().to_owned();
    let other_store = Store::connect(other.url(), 1).await.unwrap();
    drop(other);
    assert!(!exists(admin.clone(), other_name).await);
    drop(other_store);
    admin.close().await;
    db.drop_db().await;
}

/// What the store keeps in memory follows every write, and a restart (a new
/// `Store` on the same database) finds the database's record: a mark moved
/// in memory only for a recorded echo, the stored one.
async fn rows_kept_in_memory_follow_every_write_and_a_restart_reads_the_record(backend: Backend) {
    let (db, store) = fresh(backend).await;
    let mut portal = PortalRow::new(555, 100, PortalKind::Dialog);
    portal.room_id = Some("!a:example.org".to_owned());
    // Looked up before it exists: remembered as absent, then written.
    assert_eq!(store.portals().get(555, 100).await.unwrap(), None);
    assert_eq!(
        store.portals().get_by_room("!a:example.org").await.unwrap(),
        None
    );
    store.portals().upsert(&portal).await.unwrap();
    assert_eq!(
        store.portals().get(555, 100).await.unwrap(),
        Some(portal.clone())
    );
    assert_eq!(
        store.portals().get_by_room("!a:example.org").await.unwrap(),
        Some(portal.clone())
    );
    // The room moves: the old room is no portal any more.
    assert!(
        store
            .portals()
            .set_room(555, 100, Some("!b:example.org"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.portals().get_by_room("!a:example.org").await.unwrap(),
        None
    );
    assert_eq!(
        store
            .portals()
            .get_by_room("!b:example.org")
            .await
            .unwrap()
            .map(|p| p.chat_id),
        Some(555)
    );

    let start = PortalMark {
        message_id: 10,
        time: 1000,
    };
    assert!(store.portals().init_mark(555, 100, start).await.unwrap());
    assert_eq!(store.portals().mark(555, 100).await.unwrap(), Some(start));
    // A message above everything recorded is known as not bridged; once
    // recorded, it is found, with all its parts.
    let messages = store.messages();
    assert!(messages.by_max_id(555, 100, 20).await.unwrap().is_empty());
    messages
        .record(&message(555, 20, 0, 2000), false)
        .await
        .unwrap();
    messages
        .record(&message(555, 20, 1, 2000), true)
        .await
        .unwrap();
    let parts: Vec<i32> = messages
        .by_max_id(555, 100, 20)
        .await
        .unwrap()
        .iter()
        .map(|r| r.part)
        .collect();
    assert_eq!(parts, [0, 1]);
    let at_20 = PortalMark {
        message_id: 20,
        time: 2000,
    };
    assert_eq!(store.portals().mark(555, 100).await.unwrap(), Some(at_20));
    // A retried record naming another event keeps the stored one.
    let mut other = message(555, 20, 0, 2000);
    other.event_id = "$other".to_owned();
    assert!(!messages.record(&other, true).await.unwrap());
    assert_eq!(
        messages.by_max_id(555, 100, 20).await.unwrap()[0].event_id,
        "$ev_20_0"
    );
    // An echo (recorded when it was sent) moves the mark in memory only.
    messages
        .record(&message(555, 30, 0, 3000), false)
        .await
        .unwrap();
    let at_30 = PortalMark {
        message_id: 30,
        time: 3000,
    };
    store.portals().accounted(555, 100, at_30);
    assert_eq!(store.portals().mark(555, 100).await.unwrap(), Some(at_30));
    // Deleted rows are not served from memory.
    assert_eq!(messages.delete_by_max_id(555, 100, 30).await.unwrap(), 1);
    assert!(messages.by_max_id(555, 100, 30).await.unwrap().is_empty());

    let mut ghost = GhostRow::new(200, "@max_200:example.org");
    assert_eq!(store.ghosts().get(200).await.unwrap(), None);
    store.ghosts().upsert(&ghost).await.unwrap();
    assert_eq!(store.ghosts().get(200).await.unwrap(), Some(ghost.clone()));
    store.ghosts().mark_registered(200).await.unwrap();
    ghost.registered = true;
    assert_eq!(store.ghosts().get(200).await.unwrap(), Some(ghost.clone()));

    // After a restart: the stored mark (the echo's was memory only), the
    // same rows.
    let restarted = Store::connect(db.url(), 2).await.unwrap();
    assert_eq!(
        restarted.portals().mark(555, 100).await.unwrap(),
        Some(at_20)
    );
    assert_eq!(restarted.ghosts().get(200).await.unwrap(), Some(ghost));
    assert_eq!(
        restarted
            .messages()
            .by_max_id(555, 100, 20)
            .await
            .unwrap()
            .len(),
        2
    );
    // Deleting a portal forgets it (and its mappings).
    assert!(store.portals().delete(555, 100).await.unwrap());
    assert_eq!(store.portals().get(555, 100).await.unwrap(), None);
    assert_eq!(store.portals().mark(555, 100).await.unwrap(), None);
    assert_eq!(
        store.portals().get_by_room("!b:example.org").await.unwrap(),
        None
    );

    restarted.close().await;
    store.close().await;
    db.drop_db().await;
}

async fn mappings_recorded_at_once_by_many_portals_are_written_together_and_a_bad_one_fails_alone(
    backend: Backend,
) {
    let (db, store) = fresh(backend).await;
    const PORTALS: i64 = 40;
    const MESSAGES: i64 = 25;
    for chat in 1..=PORTALS {
        let mut portal = PortalRow::new(chat, 100, PortalKind::Dialog);
        portal.room_id = Some(format!("!room{chat}:example.org"));
        store.portals().upsert(&portal).await.unwrap();
    }
    // Every portal records its messages in order, all portals at once.
    let record_all = |chats: Vec<i64>, first: i64, last: i64| {
        let mut tasks = tokio::task::JoinSet::new();
        for chat in chats {
            let store = store.clone();
            tasks.spawn(async move {
                let mut outcomes = Vec::new();
                for id in first..=last {
                    let row = message(chat, id, 0, 1_000 + id);
                    let outcome = store.messages().record(&row, true).await;
                    outcomes.push(outcome.map_err(|e| e.to_string()));
                }
                (chat, outcomes)
            });
        }
        tasks
    };
    // Each write the store times is one transaction.
    let batches = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let counter = std::sync::Arc::clone(&batches);
    store.observe_writes(std::sync::Arc::new(move |write, _, _| {
        if write == "messages" {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }));
    let mut tasks = record_all((1..=PORTALS).collect(), 1, MESSAGES);
    while let Some(done) = tasks.join_next().await {
        let (chat, outcomes) = done.unwrap();
        assert!(
            outcomes.iter().all(|o| o == &Ok(true)),
            "chat {chat}: {outcomes:?}"
        );
    }
    // Written together: far fewer transactions than mappings.
    let written = PORTALS * MESSAGES;
    let transactions = batches.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        transactions > 0 && transactions < written / 2,
        "{transactions} transactions for {written} mappings"
    );

    // One more message per portal, and some for chat 999, which has no
    // portal: only its mappings fail.
    let mut tasks = record_all(
        (1..=PORTALS).chain([999]).collect(),
        MESSAGES + 1,
        MESSAGES + 1,
    );
    while let Some(done) = tasks.join_next().await {
        let (chat, outcomes) = done.unwrap();
        if chat == 999 {
            assert!(
                outcomes
                    .iter()
                    .all(|o| o.as_ref().is_err_and(|e| e.contains("missing row"))),
                "{outcomes:?}"
            );
        } else {
            assert!(
                outcomes.iter().all(|o| o == &Ok(true)),
                "chat {chat}: {outcomes:?}"
            );
        }
    }
    let last = MESSAGES + 1;
    for chat in 1..=PORTALS {
        let mark = store.portals().mark(chat, 100).await.unwrap();
        assert_eq!(
            mark.map(|m| (m.message_id, m.time)),
            Some((last, 1_000 + last)),
            "chat {chat}"
        );
        for id in [1, last] {
            let rows = store.messages().by_max_id(chat, 100, id).await.unwrap();
            assert_eq!(rows, vec![message(chat, id, 0, 1_000 + id)]);
        }
    }
    // Recorded again (a retry): nothing new.
    let again = store
        .messages()
        .record(&message(1, last, 0, 1_000 + last), true)
        .await
        .unwrap();
    assert!(!again);
    // A restart reads the record, not memory: nothing lost, nothing doubled.
    let reopened = Store::connect(db.url(), 2).await.unwrap();
    let mark = reopened.portals().mark(PORTALS, 100).await.unwrap();
    assert_eq!(mark.map(|m| m.message_id), Some(last));
    let rows = count_of(&reopened, "SELECT count(*) FROM messages").await;
    assert_eq!(rows, PORTALS * last);
    reopened.close().await;
}

/// The number a `SELECT count(*)` finds.
async fn count_of(store: &Store, sql: &'static str) -> i64 {
    maxbridge::on_db!(store.db(), |pool| sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await)
    .unwrap()
}

async fn parts_of_one_portal_recorded_together_move_the_mark_to_the_newest_and_a_missing_portal_writes_nothing(
    backend: Backend,
) {
    let (db, store) = fresh(backend).await;
    for chat in [1, 2] {
        let mut portal = PortalRow::new(chat, 100, PortalKind::Chat);
        portal.room_id = Some(format!("!room{chat}:example.org"));
        store.portals().upsert(&portal).await.unwrap();
    }
    // A message of two parts, a message, and the first part of a third
    // (its mark moves with its last part, not yet recorded).
    let rows = |chat| {
        vec![
            (message(chat, 5, 0, 1_005), false),
            (message(chat, 5, 1, 1_005), true),
            (message(chat, 6, 0, 1_006), true),
            (message(chat, 7, 0, 1_007), false),
        ]
    };
    let (rows_one, rows_two) = (rows(1), rows(2));
    let (messages_one, messages_two) = (store.messages(), store.messages());
    let (one, two) = tokio::join!(
        messages_one.record_all(&rows_one),
        messages_two.record_all(&rows_two),
    );
    assert_eq!(one.unwrap(), vec![true; 4]);
    assert_eq!(two.unwrap(), vec![true; 4]);
    // A late record of an older message never moves the mark back.
    let older = store
        .messages()
        .record_all(&[(message(1, 3, 0, 1_003), true)])
        .await
        .unwrap();
    assert_eq!(older, vec![true]);
    // Parts of a portal that does not exist: refused, nothing written.
    let missing = store
        .messages()
        .record_all(&[
            (message(999, 8, 0, 1_008), false),
            (message(999, 8, 1, 1_008), true),
        ])
        .await;
    assert!(
        missing
            .as_ref()
            .is_err_and(|e| e.to_string().contains("missing row")),
        "{missing:?}"
    );
    let missing_rows = count_of(&store, "SELECT count(*) FROM messages WHERE chat_id = 999").await;
    assert_eq!(missing_rows, 0);

    let reopened = Store::connect(db.url(), 2).await.unwrap();
    for reader in [&store, &reopened] {
        for chat in [1, 2] {
            let mark = reader.portals().mark(chat, 100).await.unwrap();
            assert_eq!(
                mark.map(|m| (m.message_id, m.time)),
                Some((6, 1_006)),
                "chat {chat}"
            );
            let parts = reader.messages().by_max_id(chat, 100, 5).await.unwrap();
            assert_eq!(
                parts,
                vec![message(chat, 5, 0, 1_005), message(chat, 5, 1, 1_005)]
            );
            let parts = reader.messages().by_max_id(chat, 100, 7).await.unwrap();
            assert_eq!(parts, vec![message(chat, 7, 0, 1_007)]);
        }
    }
    // Recorded again (a retry after a crash): nothing new, nothing doubled.
    assert_eq!(
        reopened.messages().record_all(&rows(1)).await.unwrap(),
        vec![false; 4]
    );
    let count = count_of(&reopened, "SELECT count(*) FROM messages").await;
    assert_eq!(count, 9);
    reopened.close().await;
    store.close().await;
    db.drop_db().await;
}

/// Each store test once on PostgreSQL and once on SQLite.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Postgres).await
            })*
        }
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Sqlite).await
            })*
        }
    };
}

on_both!(
    users_and_management_rooms,
    logins_round_trip_and_uniqueness,
    debug_of_a_login_hides_the_token,
    portals_round_trip_and_uniqueness,
    ghosts_made_at_once_are_all_kept_and_a_preloaded_table_answers_from_memory,
    ghosts_round_trip_and_uniqueness,
    messages_map_both_ways,
    reactions_one_per_user_and_message,
    inbox_keeps_events_until_done_and_recognises_redeliveries,
    portal_mark_moves_forward_with_the_mappings,
    kv_round_trip,
    data_survives_a_restart_and_migrations_are_idempotent,
    rows_kept_in_memory_follow_every_write_and_a_restart_reads_the_record,
    mappings_recorded_at_once_by_many_portals_are_written_together_and_a_bad_one_fails_alone,
    parts_of_one_portal_recorded_together_move_the_mark_to_the_newest_and_a_missing_portal_writes_nothing,
);
