//! The maxproto client's typed helpers against the simulator, and the
//! pushes another account's actions produce.

use anyhow::{Context, Result};
use maxproto::client::{Client, ClientConfig, ClientEvent, ClientEvents};
use maxproto::types::{Attach, ChatId, MessageId, MessageStatus, OutgoingMessage, Push};
use maxproto::{Token, WireFormat};
use maxsim::fixture_ids::{ALICE, ALICE_TOKEN, BORIS, DIALOG_ALICE_BORIS};
use maxsim::{Outgoing, SimConfig, SimHandle, Simulator, UploadKind};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);
const CHAT: i64 = DIALOG_ALICE_BORIS;

async fn alice(format: WireFormat) -> Result<(SimHandle, Client, ClientEvents)> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let mut config = ClientConfig::web("ops-test-device").with_wire_format(format);
    config.endpoint = sim.ws_url();
    let (client, events, _) = Client::login(config, Token::new(ALICE_TOKEN)).await?;
    Ok((sim, client, events))
}

/// The next push matching `pred`, skipping other events.
async fn wait_push(events: &mut ClientEvents, pred: impl Fn(&Push) -> bool) -> Result<Push> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("no matching push")?
            .context("event channel closed")?;
        if let ClientEvent::Push(push) = event {
            let typed = push.typed()?;
            if pred(&typed) {
                return Ok(typed);
            }
        }
    }
}

fn chat() -> ChatId {
    CHAT.into()
}

#[tokio::test]
async fn message_operations_round_trip() -> Result<()> {
    let (sim, client, _events) = alice(WireFormat::Json).await?;
    let control = sim.control();

    let sent = client
        .send_message(chat(), OutgoingMessage::new(1_782_000_000_001, "first"))
        .await?;
    let id = sent.message.id;
    assert_eq!(
        control.message(id.get()).context("not stored")?.text,
        "first"
    );

    let history = client.history(chat(), i64::MAX / 2, 30).await?;
    let last = history.messages.last().context("empty history")?;
    assert_eq!(last.id, id);
    assert_eq!(last.text, "first");

    let edited = client
        .edit_message(
            chat(),
            id,
            "first, edited".to_owned(),
            Vec::new(),
            Vec::new(),
        )
        .await?;
    assert_eq!(edited.text, "first, edited");
    assert_eq!(edited.status, Some(MessageStatus::Edited));
    assert_eq!(
        control.message(id.get()).context("gone")?.text,
        "first, edited"
    );

    let reacted = client.react(chat(), id, "👍").await?;
    let info = reacted.reaction_info.context("no reaction info")?;
    assert_eq!(info.your_reaction.as_deref(), Some("👍"));
    assert_eq!(
        control
            .message(id.get())
            .context("gone")?
            .reactions
            .get(&ALICE)
            .map(String::as_str),
        Some("👍")
    );
    client.unreact(chat(), id).await?;
    assert!(
        control
            .message(id.get())
            .context("gone")?
            .reactions
            .is_empty()
    );

    let marked = client.mark_read(chat(), id, sent.message.time).await?;
    assert_eq!(marked.mark, Some(sent.message.time));

    client.typing(chat(), None).await?;

    client.delete_messages(chat(), vec![id], false).await?;
    assert_eq!(
        control.message(id.get()).context("gone")?.status.as_deref(),
        Some("REMOVED")
    );
    let history = client.history(chat(), i64::MAX / 2, 30).await?;
    assert!(history.messages.iter().all(|m| m.id != id));
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn chats_contacts_subscriptions_and_media_urls() -> Result<()> {
    let (sim, client, _events) = alice(WireFormat::Json).await?;
    let control = sim.control();

    let chats = client.chat_info(vec![chat()]).await?;
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].id, chat());
    let contacts = client.contact_info(vec![BORIS.into()]).await?;
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].id.get(), BORIS);

    client.subscribe(chat(), true).await?;
    assert_eq!(client.subscriptions(), vec![chat()]);
    client.subscribe(chat(), false).await?;
    assert!(client.subscriptions().is_empty());

    let photo = client.photo_upload_url().await?;
    assert!(photo.url.starts_with("http"), "{}", photo.url);
    let video = client.video_upload_slot().await?;
    assert!(video.video_id.is_some() && video.url.starts_with("http"));
    let file = client.file_upload_slot().await?;
    assert!(file.file_id.is_some() && file.url.starts_with("http"));

    // Boris sends a file and a video; Alice asks for their URLs.
    let file_attach = control.upload(
        BORIS,
        UploadKind::File,
        "a.txt",
        "text/plain",
        &b"hello"[..],
    )?;
    let video_attach = control.upload(
        BORIS,
        UploadKind::Video,
        "v.mp4",
        "video/mp4",
        &b"\0\0\0\x18ftyp"[..],
    )?;
    let with_file = control.send(
        BORIS,
        CHAT,
        Outgoing {
            attaches: vec![file_attach.clone()],
            ..Outgoing::default()
        },
    )?;
    let with_video = control.send(
        BORIS,
        CHAT,
        Outgoing {
            attaches: vec![video_attach.clone()],
            ..Outgoing::default()
        },
    )?;
    let file_id = file_attach["fileId"].as_i64().context("fileId")?;
    let url = client
        .file_url(file_id, chat(), MessageId::from(with_file.id))
        .await?;
    assert!(url.url.starts_with("http"), "{}", url.url);
    let video_id = video_attach["videoId"].as_i64().context("videoId")?;
    let urls = client
        .video_urls(video_id, chat(), MessageId::from(with_video.id), None)
        .await?;
    assert!(urls.best_url().is_some(), "{urls:?}");

    client.ping(true).await?;
    client.close().await;
    Ok(())
}

/// Everything Boris does in the dialog reaches Alice as a push.
async fn pushes_from_another_account(format: WireFormat) -> Result<()> {
    let (sim, client, mut events) = alice(format).await?;
    let control = sim.control();
    client.subscribe(chat(), true).await?;

    let msg = control.send(BORIS, CHAT, Outgoing::text("hello alice"))?;
    let push = wait_push(&mut events, |p| matches!(p, Push::Message(_))).await?;
    let Push::Message(notif) = push else {
        unreachable!()
    };
    assert_eq!(notif.chat_id, chat());
    assert_eq!(notif.message.id.get(), msg.id);
    assert_eq!(notif.message.text, "hello alice");
    assert_eq!(notif.message.sender.map(|s| s.get()), Some(BORIS));

    control.typing(BORIS, CHAT)?;
    let Push::Typing(typing) = wait_push(&mut events, |p| matches!(p, Push::Typing(_))).await?
    else {
        unreachable!()
    };
    assert_eq!(typing.user_id.get(), BORIS);

    // Alice's own message, read by Boris.
    let mine = client
        .send_message(chat(), OutgoingMessage::new(1_782_000_000_777, "read me"))
        .await?;
    control.mark_read(BORIS, CHAT, mine.message.id.get())?;
    let Push::Mark(mark) = wait_push(&mut events, |p| matches!(p, Push::Mark(_))).await? else {
        unreachable!()
    };
    assert_eq!(mark.user_id.get(), BORIS);
    assert_eq!(mark.mark, mine.message.time);

    control.react(BORIS, CHAT, mine.message.id.get(), Some("🔥"))?;
    let Push::ReactionsChanged(reactions) =
        wait_push(&mut events, |p| matches!(p, Push::ReactionsChanged(_))).await?
    else {
        unreachable!()
    };
    assert_eq!(reactions.message_id, mine.message.id);
    assert_eq!(reactions.total_count, Some(1));

    control.edit(BORIS, CHAT, msg.id, "hello alice, edited", None)?;
    let edited = wait_push(
        &mut events,
        |p| matches!(p, Push::Message(m) if m.message.status == Some(MessageStatus::Edited)),
    )
    .await?;
    let Push::Message(edited) = edited else {
        unreachable!()
    };
    assert_eq!(edited.message.text, "hello alice, edited");

    control.delete(BORIS, CHAT, &[msg.id], false)?;
    let deleted = wait_push(&mut events, |p| match p {
        Push::Message(m) => m.message.status == Some(MessageStatus::Removed),
        Push::MsgDelete(d) => d.message_ids.iter().any(|id| id.get() == msg.id),
        _ => false,
    })
    .await?;
    match deleted {
        Push::Message(m) => assert_eq!(m.message.id.get(), msg.id),
        Push::MsgDelete(d) => assert_eq!(d.chat_id(), Some(chat())),
        other => anyhow::bail!("unexpected {other:?}"),
    }

    // Boris's photo arrives with its attach.
    let photo = control.upload(
        BORIS,
        UploadKind::Photo,
        "p.png",
        "image/png",
        &b"\x89PNG"[..],
    )?;
    control.send(
        BORIS,
        CHAT,
        Outgoing {
            attaches: vec![photo],
            ..Outgoing::default()
        },
    )?;
    let with_photo = wait_push(
        &mut events,
        |p| matches!(p, Push::Message(m) if !m.message.attaches.is_empty()),
    )
    .await?;
    let Push::Message(with_photo) = with_photo else {
        unreachable!()
    };
    assert!(matches!(with_photo.message.attaches[0], Attach::Photo(_)));
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn pushes_from_another_account_json() -> Result<()> {
    pushes_from_another_account(WireFormat::Json).await
}

#[tokio::test]
async fn pushes_from_another_account_binary() -> Result<()> {
    pushes_from_another_account(WireFormat::Binary).await
}

#[tokio::test]
async fn chat_list_members_and_reaction_queries() -> Result<()> {
    use maxproto::types::{
        ChatMembersRequest, ChatsListRequest, MsgGetDetailedReactionsRequest,
        MsgGetReactionsRequest,
    };
    use maxsim::fixture_ids::{TEST_GROUP, TRANSFERBOT};
    let (sim, client, _events) = alice(WireFormat::Binary).await?;
    let control = sim.control();

    // 53: newest first, only chats Alice is in.
    let list = client
        .call(&ChatsListRequest {
            marker: i64::MAX / 2,
            count: Some(50),
            extra: Default::default(),
        })
        .await?;
    let ids: Vec<i64> = list.chats.iter().map(|c| c.id.0).collect();
    assert!(ids.contains(&CHAT) && ids.contains(&TEST_GROUP), "{ids:?}");
    let expected: Vec<i64> = control
        .chats(ALICE)?
        .iter()
        .map(|c| c.id)
        .filter(|id| ids.contains(id))
        .collect();
    assert_eq!(ids.len(), expected.len(), "no foreign chats: {ids:?}");
    let times: Vec<i64> = list
        .chats
        .iter()
        .map(|c| c.last_event_time.unwrap_or(0))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );

    // 59: the group's members with their profiles.
    let members = client
        .call(&ChatMembersRequest::members(TEST_GROUP.into(), 0, 100))
        .await?;
    let mut member_ids: Vec<i64> = members.members.iter().map(|m| m.contact.id.0).collect();
    member_ids.sort_unstable();
    let mut expected: Vec<i64> = vec![ALICE, BORIS, TRANSFERBOT];
    expected.sort_unstable();
    assert_eq!(member_ids, expected);

    // 180 / 181: Boris's reaction on Alice's message, seen by Alice.
    let sent = client
        .send_message(
            chat(),
            OutgoingMessage::new(1_782_000_000_777, "react to me"),
        )
        .await?;
    control.react(BORIS, CHAT, sent.message.id.get(), Some("🔥"))?;
    let bulk = client
        .call(&MsgGetReactionsRequest {
            chat_id: chat(),
            message_ids: vec![sent.message.id],
            extra: Default::default(),
        })
        .await?;
    let info = bulk
        .messages_reactions
        .get(&sent.message.id)
        .context("reactions of the message")?;
    assert_eq!(info.total_count, Some(1));
    assert_eq!(info.counters[0].reaction, "🔥");
    let detailed = client
        .call(&MsgGetDetailedReactionsRequest {
            chat_id: chat(),
            message_id: sent.message.id,
            count: Some(10),
            extra: Default::default(),
        })
        .await?;
    assert_eq!(detailed.reactions.len(), 1);
    assert_eq!(detailed.reactions[0].user_id.0, BORIS);
    Ok(())
}
