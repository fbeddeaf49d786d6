//! Typed payloads against real and spec data: the seed LOGIN answer, the
//! examples of `max-protocol.md`, and hostile inputs.

use maxproto::types::*;
use maxproto::{Frame, Opcode, Token};
use serde_json::{Value, json};

fn seed() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/seed_login.json"
    ))
    .expect("seed file");
    serde_json::from_str(&text).expect("seed is JSON")
}

fn seed_login() -> LoginResponse {
    serde_json::from_value(seed()).expect("seed LOGIN answer parses")
}

#[test]
fn seed_login_profile_and_session_fields() {
    let login = seed_login();
    assert_eq!(login.me(), UserId(13_446_207));
    assert_eq!(
        login.profile.contact.display_name().as_deref(),
        Some("TransferBot")
    );
    assert_eq!(
        login.profile.contact.phone,
        Some(Phone::Number(79_965_433_117))
    );
    assert_eq!(login.profile.contact.photo_id, Some(11_549_759));
    assert!(login.profile.profile_options.is_empty());
    assert_eq!(login.token.as_ref().map(Token::expose), Some("TOKEN"));
    assert_eq!(login.time, Some(1_754_258_509_945));
    assert_eq!(login.chat_marker, Some(0));
    assert!(login.messages.is_empty());
    assert!(login.contacts.is_empty());
    assert_eq!(login.video_chat_history, Some(false));
    let me = &login.presence[&UserId(13_446_207)];
    assert_eq!(me.seen, Some(1_754_258_509));
    assert!(me.is_online());
}

#[test]
fn seed_login_chats() {
    let login = seed_login();
    assert_eq!(login.chats.len(), 7);
    let dialogs: Vec<ChatId> = login
        .chats
        .iter()
        .filter(|c| c.is_dialog())
        .map(|c| c.id)
        .collect();
    assert_eq!(
        dialogs,
        [ChatId(12_935_268), ChatId(13_446_651), ChatId(15_474_939)]
    );
    assert_eq!(
        login
            .chats
            .iter()
            .filter(|c| c.kind() == &ChatType::Chat)
            .count(),
        4
    );

    let first = &login.chats[0];
    assert_eq!(first.id, ChatId(-68_104_154_993_983));
    assert_eq!(first.title.as_deref(), Some("a"));
    assert_eq!(first.access, Some(ChatAccess::Private));
    assert_eq!(first.status, Some(ChatStatus::Active));
    assert_eq!(first.role_of(login.me()), ChatRole::Owner);
    assert!(
        first
            .options
            .as_ref()
            .is_some_and(|o| o.flag("ALL_CAN_PIN_MESSAGE"))
    );
    assert!(!first.options.as_ref().is_some_and(|o| o.flag("OFFICIAL")));
    assert_eq!(first.read_mark(login.me()), Some(1_754_255_190_472));
    let last = first.last_message.as_ref().expect("lastMessage");
    assert_eq!(last.id, MessageId(114_966_868_141_288_691));
    assert_eq!(last.sender, Some(login.me()));
    assert_eq!(last.cid, Some(1_754_255_188_210));
    assert_eq!(last.kind, Some(MessageType::User));
    assert_eq!(last.text, "");
    let [Attach::File(file)] = last.attaches.as_slice() else {
        panic!("expected one FILE attach, got {:?}", last.attaches);
    };
    assert_eq!(file.name.as_deref(), Some("CatWebCompiler-main.zip"));
    assert_eq!(file.size, Some(8880));
    assert_eq!(file.file_id, Some(1_255_973));

    let call_chat = login.chat(ChatId(-68_102_896_244_031)).expect("call chat");
    assert_eq!(
        call_chat.title.as_deref(),
        Some("Групповой звонок 02 августа")
    );
    assert_eq!(call_chat.status, Some(ChatStatus::Hidden));
    assert_eq!(call_chat.invited_by, Some(login.me()));
    assert!(call_chat.extra.contains_key("videoConversation"));
    let call = &call_chat
        .last_message
        .as_ref()
        .expect("lastMessage")
        .attaches[0];
    let Attach::Call(call) = call else {
        panic!("expected CALL, got {call:?}");
    };
    assert_eq!(call.hangup_type.as_deref(), Some("HUNGUP"));
    assert_eq!(call.call_type.as_deref(), Some("AUDIO"));
    assert!(call.extra.contains_key("joinLink"));

    let saved_intro = login.chat(ChatId(12_935_268)).expect("dialog");
    assert_eq!(
        saved_intro.other_participant(login.me()),
        Some(UserId(543_835))
    );
    assert_eq!(saved_intro.has_bots, Some(true));
    assert_eq!(
        saved_intro.prev_message_id,
        Some(MessageId(114_892_820_641_563_675))
    );
    let msg = saved_intro.last_message.as_ref().expect("lastMessage");
    assert!(msg.text.starts_with("⭐️ Избранное"));
    assert_eq!(msg.elements.len(), 2);
    assert_eq!(msg.elements[0].kind, ElementType::Strong);
    assert_eq!((msg.elements[0].offset(), msg.elements[0].length), (0, 46));
    assert_eq!(msg.elements[1].kind, ElementType::Link);
    assert_eq!(msg.elements[1].offset(), 347);
    assert_eq!(msg.elements[1].url(), Some("https://download.max.ru/"));
    let Attach::Video(video) = &msg.attaches[0] else {
        panic!("expected VIDEO");
    };
    assert_eq!(video.video_id, Some(9_420_407_594_818));
    assert_eq!(
        (video.width, video.height, video.duration),
        (Some(1440), Some(1440), Some(26_683))
    );

    let bot_father = login.chat(ChatId(13_446_651)).expect("dialog");
    assert_eq!(bot_father.other_participant(login.me()), Some(UserId(452)));
    let post = bot_father.last_message.as_ref().expect("lastMessage");
    assert_eq!(post.options.as_ref().and_then(Options::bits), Some(1));
    assert!(post.attaches.is_empty());

    // Every dialog id is the XOR of its two participants.
    for chat in login.chats.iter().filter(|c| c.is_dialog()) {
        let other = chat
            .other_participant(login.me())
            .expect("other participant");
        assert_eq!(ChatId::dialog(login.me(), other), chat.id);
    }
    // Nothing in the seed falls back to an unknown attach.
    for chat in &login.chats {
        for attach in chat.last_message.iter().flat_map(|m| &m.attaches) {
            assert!(!matches!(attach, Attach::Unknown(_)), "{attach:?}");
        }
    }
}

#[test]
fn seed_login_server_config() {
    let login = seed_login();
    let server = login.server_config().expect("config.server");
    assert_eq!(server.max_msg_length, Some(4000));
    assert_eq!(server.edit_timeout, Some(604_800));
    assert_eq!(server.reactions_max, Some(8));
    assert_eq!(server.file_upload_max_size, Some(4_294_967_296));
    let menu = server.reactions_menu.as_deref().expect("reactions-menu");
    assert_eq!(menu.len(), 8);
    assert_eq!(menu[0], "👍");
    assert_eq!(server.extra["chats-page-size"], 50);
    let config = login.config.as_ref().expect("config");
    assert!(
        config
            .hash
            .as_deref()
            .is_some_and(|h| h.starts_with("497c7ac3"))
    );
    assert_eq!(
        config.user.as_ref().map(|u| &u["SHOW_READ_MARK"]),
        Some(&json!(true))
    );
}

#[test]
fn seed_login_round_trip_is_lossless() {
    let original = seed();
    let login: LoginResponse = serde_json::from_value(original.clone()).expect("parses");
    let back = serde_json::to_value(&login).expect("serializes");
    assert_eq!(back, original);
    // And through text, the way frames travel.
    let text = serde_json::to_string(&login).expect("serializes");
    let again: LoginResponse = serde_json::from_str(&text).expect("parses again");
    assert_eq!(again, login);
}

#[test]
fn spec_push_128_example() {
    let frame: Frame = Frame::push(
        41,
        Opcode::NOTIF_MESSAGE,
        json!({"chatId": -70000000000001_i64,
            "message": {"id": "116785152327680001", "time": 1782000005000_i64, "type": "USER",
                "sender": 87654321, "cid": 1782000004990_i64, "text": "hello",
                "elements": [{"type": "STRONG", "from": 0, "length": 5}], "attaches": []},
            "prevMessageId": "116785152000000001", "ttl": false, "unread": 3, "mark": 1782000005000_i64}),
    );
    let Push::Message(push) = Push::from_frame(&frame).expect("parses") else {
        panic!("expected a message push");
    };
    assert_eq!(push.chat_id, ChatId(-70_000_000_000_001));
    assert_eq!(push.message.id, MessageId(116_785_152_327_680_001));
    assert_eq!(push.message.sender, Some(UserId(87_654_321)));
    assert_eq!(push.message.text, "hello");
    assert_eq!(push.message.elements[0].kind, ElementType::Strong);
    assert_eq!(
        push.prev_message_id,
        Some(MessageId(116_785_152_000_000_001))
    );
    assert_eq!(
        (push.ttl, push.unread, push.mark),
        (Some(false), Some(3), Some(1_782_000_005_000))
    );
    assert_eq!(
        push.ack_payload(),
        json!({"chatId": -70000000000001_i64, "messageId": "116785152327680001"})
    );
    let rebuilt = Push::Message(push).to_frame(41).expect("serializes");
    assert_eq!(rebuilt, frame);
}

#[test]
fn spec_msg_send_response_and_request() {
    let raw = json!({"chatId": 92610303, "message": {"id": "116785152000000001", "time": 1782000000000_i64,
        "type": "USER", "sender": 12345678, "cid": 1782000000123_i64, "text": "hi", "attaches": [],
        "reactionInfo": {}}, "unread": 0, "mark": 1782000000000_i64});
    let answer: MsgSendResponse = serde_json::from_value(raw.clone()).expect("parses");
    assert_eq!(answer.chat_id, Some(ChatId(92_610_303)));
    assert_eq!(answer.message.cid, Some(1_782_000_000_123));
    assert_eq!(answer.message.reaction_info, Some(ReactionInfo::default()));
    assert_eq!(serde_json::to_value(&answer).expect("serializes"), raw);

    let mut message = OutgoingMessage::new(1_782_000_000_123, "hi");
    message
        .elements
        .push(Element::new(ElementType::Strong, 0, 2));
    message.attaches.push(Attach::photo("ptok"));
    message.link = Some(MessageLink::reply(MessageId(116_785_152_000_000_001)));
    let request = MsgSendRequest::new(ChatId(92_610_303), message);
    assert_eq!(
        serde_json::to_value(&request).expect("serializes"),
        json!({"chatId": 92610303, "notify": true, "message": {"text": "hi", "cid": 1782000000123_i64,
            "elements": [{"type": "STRONG", "from": 0, "length": 2}],
            "attaches": [{"_type": "PHOTO", "photoToken": "ptok"}],
            "link": {"type": "REPLY", "messageId": "116785152000000001"}}})
    );
    assert_eq!(<MsgSendRequest as Request>::OPCODE, Opcode::MSG_SEND);

    // Creating a group: no chatId, a CONTROL attach.
    let mut create = OutgoingMessage::new(1, "");
    create.attaches.push(Attach::Control(ControlAttach {
        event: Some("new".into()),
        chat_type: Some("CHAT".into()),
        title: Some("Test group".into()),
        user_ids: Some(vec![UserId(87_654_321)]),
        ..ControlAttach::default()
    }));
    let create = MsgSendRequest {
        chat_id: None,
        ..MsgSendRequest::new(ChatId(0), create)
    };
    let v = serde_json::to_value(&create).expect("serializes");
    assert!(v.get("chatId").is_none());
    assert_eq!(
        v["message"]["attaches"][0],
        json!({"_type": "CONTROL", "event": "new", "chatType": "CHAT", "title": "Test group",
            "userIds": [87654321]})
    );
}

#[test]
fn edit_uses_attachments_key() {
    let edit = MsgEditRequest {
        chat_id: ChatId(5),
        message_id: MessageId(9),
        text: "new".into(),
        elements: Vec::new(),
        attachments: vec![Attach::file(3)],
        extra: Extra::new(),
    };
    let v = serde_json::to_value(&edit).expect("serializes");
    assert_eq!(
        v,
        json!({"chatId": 5, "messageId": "9", "text": "new", "elements": [],
            "attachments": [{"_type": "FILE", "fileId": 3}]})
    );
    let answer: MsgEditResponse = serde_json::from_value(json!({"message": {"id": "9", "time": 1,
        "text": "new", "status": "EDITED", "updateTime": 2, "attaches": []}}))
    .expect("parses");
    assert!(answer.message.is_edited());
    assert_eq!(answer.message.update_time, Some(2));
}

#[test]
fn spec_error_example() {
    let raw = json!({"error": "proto.payload", "message": "Field requirement failed: messageIds",
        "title": "Ошибка валидации", "localizedMessage": "Ошибка валидации"});
    let err: ErrorPayload = serde_json::from_value(raw.clone()).expect("parses");
    assert_eq!(err.error, "proto.payload");
    assert_eq!(err.localized_message.as_deref(), Some("Ошибка валидации"));
    assert!(
        err.to_string()
            .contains("Field requirement failed: messageIds")
    );
    assert_eq!(serde_json::to_value(&err).expect("serializes"), raw);
}

#[test]
fn reactions_178_155_156() {
    let req = MsgReactionRequest {
        chat_id: ChatId(-1),
        message_id: MessageId(116_785_152_000_000_001),
        reaction: Reaction::emoji("👍"),
        extra: Extra::new(),
    };
    assert_eq!(
        serde_json::to_value(&req).expect("serializes"),
        json!({"chatId": -1, "messageId": "116785152000000001",
            "reaction": {"reactionType": "EMOJI", "id": "👍"}})
    );
    let answer: ReactionInfoResponse = serde_json::from_value(json!({"reactionInfo":
        {"totalCount": 1, "counters": [{"reaction": "👍", "count": 1}], "yourReaction": "👍"}}))
    .expect("parses");
    let info = answer.reaction_info.expect("reactionInfo");
    assert_eq!(info.total_count, Some(1));
    assert_eq!(info.counters, [ReactionCounter::new("👍", 1)]);
    assert_eq!(info.your_reaction.as_deref(), Some("👍"));
    let none: ReactionInfoResponse =
        serde_json::from_value(json!({"reactionInfo": {}})).expect("parses");
    assert_eq!(none.reaction_info, Some(ReactionInfo::default()));

    let raw155 = json!({"chatId": -1, "messageId": 116785152000000001_i64,
        "counters": [{"reaction": "❤️", "count": 2}], "totalCount": 2});
    let push = Push::parse(Opcode(155), raw155.clone()).expect("parses");
    let Push::ReactionsChanged(changed) = &push else {
        panic!("expected 155, got {push:?}");
    };
    assert_eq!(changed.message_id, MessageId(116_785_152_000_000_001));
    assert_eq!(changed.counters[0].count, 2);
    assert_eq!(push.to_payload().expect("serializes"), raw155);
    // The same push with a string id parses too.
    let mut stringy = raw155.clone();
    stringy["messageId"] = json!("116785152000000001");
    assert_eq!(Push::parse(Opcode(155), stringy).expect("parses"), push);

    let raw156 = json!({"chatId": 7, "messageId": 42,
        "reactionInfo": {"counters": [{"reaction": "🔥", "count": 1}], "yourReaction": "🔥", "totalCount": 1}});
    let push = Push::parse(Opcode(156), raw156.clone()).expect("parses");
    let Push::YouReacted(you) = &push else {
        panic!("expected 156");
    };
    assert_eq!(you.reaction_info.your_reaction.as_deref(), Some("🔥"));
    assert_eq!(push.to_payload().expect("serializes"), raw156);

    let all: MsgGetReactionsResponse = serde_json::from_value(json!({"messagesReactions":
        {"116785152000000001": {"totalCount": 1, "counters": [{"reaction": "👍", "count": 1}]}, "5": {}}}))
    .expect("parses");
    assert_eq!(
        all.messages_reactions[&MessageId(116_785_152_000_000_001)].total_count,
        Some(1)
    );
    assert_eq!(
        all.messages_reactions[&MessageId(5)],
        ReactionInfo::default()
    );
}

#[test]
fn other_pushes() {
    let typing = Push::parse(
        Opcode(129),
        json!({"chatId": 5, "userId": 6, "type": "TEXT"}),
    )
    .expect("129");
    assert!(matches!(
        typing,
        Push::Typing(NotifTyping {
            kind: Some(TypingType::Text),
            ..
        })
    ));
    let mark = Push::parse(
        Opcode(130),
        json!({"chatId": 5, "userId": 6, "mark": 10, "setAsUnread": false}),
    )
    .expect("130");
    assert!(matches!(mark, Push::Mark(NotifMark { mark: 10, .. })));
    let presence = Push::parse(
        Opcode(132),
        json!({"userId": 6, "presence": {"seen": 1, "status": 1}}),
    )
    .expect("132");
    let Push::Presence(presence) = presence else {
        panic!("132")
    };
    assert!(presence.presence.is_online());
    let chat = Push::parse(
        Opcode(135),
        json!({"chat": {"id": -9, "type": "CHAT", "title": "t",
        "lastReactedMessageId": "77", "lastReaction": "👍"}}),
    )
    .expect("135");
    let Push::Chat(chat) = chat else {
        panic!("135")
    };
    assert_eq!(chat.chat.last_reacted_message_id, Some(MessageId(77)));
    let attach = Push::parse(Opcode(136), json!({"fileId": 1255973})).expect("136");
    assert!(matches!(
        attach,
        Push::Attach(NotifAttach {
            file_id: Some(1_255_973),
            video_id: None,
            ..
        })
    ));
    let del = Push::parse(
        Opcode(142),
        json!({"chat": {"id": -9, "type": "CHAT"}, "messageIds": ["1", 2]}),
    )
    .expect("142");
    let Push::MsgDelete(del) = del else {
        panic!("142")
    };
    assert_eq!(del.chat_id(), Some(ChatId(-9)));
    assert_eq!(del.message_ids, [MessageId(1), MessageId(2)]);
    let del = Push::parse(Opcode(142), json!({"chatId": 4, "messageIds": []})).expect("142");
    assert!(matches!(del, Push::MsgDelete(ref d) if d.chat_id() == Some(ChatId(4))));
    assert!(matches!(
        Push::parse(Opcode(1), Value::Null),
        Ok(Push::Ping(Value::Null))
    ));
    assert!(matches!(
        Push::parse(Opcode(3), json!({})),
        Ok(Push::Reconnect(_))
    ));
    for opcode in [134, 137, 140, 152, 153, 154, 159, 277, 292, 293] {
        let push = Push::parse(Opcode(opcode), json!({"x": 1})).expect("raw pushes never fail");
        assert_eq!(push.opcode(), Opcode(opcode));
        assert!(!matches!(push, Push::Unknown { .. }), "{opcode}");
    }
    let unknown = Push::parse(Opcode(999), json!({"x": 1})).expect("unknown");
    assert_eq!(
        unknown,
        Push::Unknown {
            opcode: Opcode(999),
            payload: json!({"x": 1})
        }
    );
}

#[test]
fn malformed_pushes_are_errors_not_panics() {
    let bad = json!({"chatId": 1, "message": "not an object"});
    let err = Push::parse(Opcode::NOTIF_MESSAGE, bad.clone()).expect_err("must fail");
    assert_eq!(err.opcode, Opcode::NOTIF_MESSAGE);
    assert_eq!(err.payload, bad);
    assert!(err.to_string().contains("128"));
    let (push, err) = Push::parse_lenient(Opcode::NOTIF_MESSAGE, bad.clone());
    assert!(err.is_some());
    assert_eq!(
        push,
        Push::Unknown {
            opcode: Opcode::NOTIF_MESSAGE,
            payload: bad
        }
    );
    assert!(Push::parse(Opcode::NOTIF_MESSAGE, Value::Null).is_err());
    assert!(Push::parse(Opcode::NOTIF_TYPING, json!([1, 2])).is_err());
}

#[test]
fn bad_field_types_in_messages() {
    // A wrong type in a core field is an error, never a panic.
    for bad in [
        json!({"id": "1", "time": "yesterday", "text": ""}),
        json!({"id": "x1", "text": ""}),
        json!({"id": 1, "text": 5}),
        json!({"id": 1, "elements": [{"type": 5}]}),
        json!({"id": 1, "link": {"type": "REPLY", "message": "nope"}}),
        json!({"text": "no id"}),
    ] {
        assert!(
            serde_json::from_value::<Message>(bad.clone()).is_err(),
            "{bad}"
        );
    }
    // A wrong type inside an attachment only demotes that attachment.
    let raw = json!({"id": "1", "time": 1, "text": "", "attaches": [
        {"_type": "PHOTO", "width": "wide", "baseUrl": "u"}, {"_type": "FILE", "fileId": "12"}]});
    let msg: Message = serde_json::from_value(raw.clone()).expect("parses");
    assert!(matches!(msg.attaches[0], Attach::Unknown(_)));
    assert!(matches!(&msg.attaches[1], Attach::File(f) if f.file_id == Some(12)));
    assert_eq!(msg.attaches[0].kind(), "PHOTO");
    // Varying types the spec allows parse.
    let msg: Message =
        serde_json::from_value(json!({"id": "1", "text": "", "options": {"SOMETHING": true}}))
            .expect("parses");
    assert!(msg.options.is_some_and(|o| o.flag("SOMETHING")));
}

#[test]
fn unknown_fields_and_attach_kinds_survive_round_trips() {
    let raw = json!({"id": "116785152000000001", "time": 1, "text": "x", "sender": 5,
        "futureField": {"nested": [1, 2, 3]},
        "elements": [{"type": "ANIMOJI", "from": 1, "length": 1, "entityId": 99}],
        "attaches": [
            {"_type": "PRESENT", "presentId": 1, "blob": [1, 2]},
            {"_type": "UNSUPPORTED", "audioId": 5, "wave": "AAE="},
            {"callbackId": "cb", "keyboard": {"buttons": []}},
            {"_type": "STICKER", "stickerId": 272821, "setId": 1, "tags": ["a"], "authorType": "SYSTEM"},
            {"_type": "SHARE", "url": "https://max.ru", "image": {"url": "i"}, "shareId": 3}
        ],
        "link": {"type": "FORWARD", "chatId": -5, "messageId": "3", "chatName": "c", "somethingNew": true,
            "message": {"id": "3", "time": 0, "text": "inner", "attaches": [], "innerExtra": 1}},
        "reactionInfo": {"totalCount": 0, "newCounterKind": []}});
    let msg: Message = serde_json::from_value(raw.clone()).expect("parses");
    assert_eq!(msg.extra["futureField"], json!({"nested": [1, 2, 3]}));
    assert_eq!(msg.attaches[0].kind(), "PRESENT");
    assert_eq!(msg.attaches[2].kind(), "");
    assert!(matches!(msg.attaches[3], Attach::Sticker(_)));
    assert_eq!(msg.forwarded().map(|m| m.text.as_str()), Some("inner"));
    assert_eq!(serde_json::to_value(&msg).expect("serializes"), raw);

    let user = json!({"id": 452, "names": [{"name": "MasterBot", "type": "ONEME", "x": 1}],
        "options": ["BOT"], "gender": 2, "webApp": "https://example.org", "menuButton": {"a": 1},
        "phone": "79990000000", "brandNew": null});
    let parsed: User = serde_json::from_value(user.clone()).expect("parses");
    assert!(parsed.is_bot());
    assert_eq!(serde_json::to_value(&parsed).expect("serializes"), user);

    let chat = json!({"id": -1, "type": "CHANNEL", "options": 3, "participants": {}, "admins": [],
        "reactions": {"x": 1}, "adminParticipants": {"1": {"id": 1, "permissions": 2047}}});
    let parsed: Chat = serde_json::from_value(chat.clone()).expect("parses");
    assert_eq!(serde_json::to_value(&parsed).expect("serializes"), chat);
}

#[test]
fn requests_have_the_documented_shapes() {
    let v = |r: &dyn erased::Ser| r.value();
    assert_eq!(
        v(&PingRequest {
            interactive: true,
            extra: Extra::new()
        }),
        json!({"interactive": true})
    );
    assert_eq!(
        v(&ContactInfoRequest {
            contact_ids: vec![UserId(1), UserId(2)],
            extra: Extra::new()
        }),
        json!({"contactIds": [1, 2]})
    );
    assert_eq!(
        v(&ChatInfoRequest {
            chat_ids: vec![ChatId(0), ChatId(-5)],
            extra: Extra::new()
        }),
        json!({"chatIds": [0, -5]})
    );
    assert_eq!(
        v(&ChatHistoryRequest::backward(ChatId(5), 100, 30)),
        json!({"chatId": 5, "from": 100, "forward": 0, "backward": 30, "getMessages": true})
    );
    assert_eq!(
        v(&ChatMarkRequest::read(ChatId(5), MessageId(9), 77)),
        json!({"type": "READ_MESSAGE", "chatId": 5, "messageId": "9", "mark": 77})
    );
    assert_eq!(
        v(&ChatsListRequest {
            marker: 10,
            count: Some(50),
            extra: Extra::new()
        }),
        json!({"marker": 10, "count": 50})
    );
    assert_eq!(
        v(&ChatMembersRequest::members(ChatId(-5), 0, 100)),
        json!({"chatId": -5, "type": "MEMBER", "marker": 0, "count": 100})
    );
    assert_eq!(
        v(&ChatSubscribeRequest {
            chat_id: ChatId(-5),
            subscribe: true,
            extra: Extra::new()
        }),
        json!({"chatId": -5, "subscribe": true})
    );
    assert_eq!(
        v(&MsgTypingRequest {
            chat_id: ChatId(5),
            kind: Some(TypingType::Text),
            extra: Extra::new()
        }),
        json!({"chatId": 5, "type": "TEXT"})
    );
    assert_eq!(
        v(&MsgDeleteRequest {
            chat_id: ChatId(5),
            message_ids: vec![MessageId(1)],
            for_me: false,
            extra: Extra::new()
        }),
        json!({"chatId": 5, "messageIds": ["1"], "forMe": false})
    );
    assert_eq!(
        v(&VideoPlayRequest {
            video_id: 9,
            chat_id: ChatId(5),
            message_id: MessageId(1),
            token: None,
            extra: Extra::new()
        }),
        json!({"videoId": 9, "chatId": 5, "messageId": "1"})
    );
    assert_eq!(
        v(&FileDownloadRequest {
            file_id: 9,
            chat_id: ChatId(5),
            message_id: MessageId(1),
            extra: Extra::new()
        }),
        json!({"fileId": 9, "chatId": 5, "messageId": "1"})
    );
    assert_eq!(v(&LogoutRequest::default()), json!({}));
}

#[test]
fn responses_parse() {
    let members: ChatMembersResponse = serde_json::from_value(json!({"members": [
        {"contact": {"id": 5, "names": [{"firstName": "A", "lastName": "B", "type": "ONEME"}]},
         "presence": {"seen": 1}, "readMark": 9}], "marker": 3}))
    .expect("parses");
    assert_eq!(
        members.members[0].contact.display_name().as_deref(),
        Some("A B")
    );
    assert_eq!(members.members[0].read_mark, Some(9));
    assert_eq!(members.marker, Some(3));
    let last_page: ChatsListResponse =
        serde_json::from_value(json!({"chats": []})).expect("parses");
    assert_eq!(last_page.marker, None);
    let history: ChatHistoryResponse = serde_json::from_value(json!({"messages": [
        {"id": "2", "time": 2, "text": "b", "attaches": []}, {"id": 3, "time": 3, "text": "c"}]}))
    .expect("parses");
    assert_eq!(
        history
            .messages
            .iter()
            .map(|m| m.id.get())
            .collect::<Vec<_>>(),
        [2, 3]
    );
    let mark: ChatMarkResponse =
        serde_json::from_value(json!({"unread": 0, "mark": 5})).expect("parses");
    assert_eq!(mark.unread, Some(0));
    let ack: EmptyResponse = from_payload(Value::Null).expect("null answers parse");
    assert!(ack.extra.is_empty());
}

/// Object-safe serialization for the table test above.
mod erased {
    pub trait Ser {
        fn value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("serializes")
        }
    }
}
