//! The simulator core: shared state, fault switches, and the operations
//! that both the protocol handlers and the control API perform (send, edit,
//! delete, react, mark, typing, chat creation, uploads) with their pushes.

use crate::fixture::ChatKind;
use crate::hub::{Hub, Out};
use crate::model::{
    Chat, ChatKey, MediaKind, Message, State, Status, Upload, as_i64, now_ms, random_token,
};
use bytes::Bytes;
use maxproto::{Opcode, WireFormat};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Longest message text, in characters (`max-msg-length`).
pub(crate) const MAX_MSG_LENGTH: usize = 4000;
/// Seconds a message stays editable (`edit-timeout`).
pub(crate) const EDIT_TIMEOUT_S: i64 = 604_800;
/// Distinct reactions per message (`reactions-max`).
pub(crate) const REACTIONS_MAX: usize = 8;
pub(crate) const REACTIONS_MENU: [&str; 8] = ["👍", "❤️", "🤣", "🔥", "😭", "💯", "💩", "😡"];

/// A `cmd` 3 answer: the spec's error key and a technical message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtoError {
    pub key: String,
    pub message: String,
}

impl ProtoError {
    pub fn new(key: &str, message: impl Into<String>) -> ProtoError {
        ProtoError {
            key: key.to_owned(),
            message: message.into(),
        }
    }

    pub fn payload(message: impl Into<String>) -> ProtoError {
        ProtoError::new("proto.payload", message)
    }

    pub fn missing(field: &str) -> ProtoError {
        ProtoError::payload(format!("Field requirement failed: {field}"))
    }

    pub fn chat_not_found(chat_id: i64) -> ProtoError {
        ProtoError::new("chat.not.found", format!("Chat {chat_id} not found"))
    }

    pub fn message_not_found(id: i64) -> ProtoError {
        ProtoError::new("message.not.found", format!("Message {id} not found"))
    }

    /// The Russian user-facing text real servers put in `localizedMessage`.
    pub fn localized(&self) -> &'static str {
        match self.key.as_str() {
            "proto.payload" => "Ошибка валидации",
            "login.token" => "Ошибка авторизации",
            "error.limit.violate" => "Слишком много попыток",
            "error.code.wrong" => "Неверный код",
            "attachment.not.ready" => "Файл ещё не загружен",
            _ => "Ошибка",
        }
    }
}

/// Who performs an operation: an account, through one connection (or the
/// control API when `conn` is `None`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Actor {
    pub user: i64,
    pub conn: Option<u64>,
}

/// Fault switches set through the control API.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub delay_all: Option<Duration>,
    pub delay_op: HashMap<u16, Duration>,
    pub refuse_logins: Option<String>,
    pub rate_limit_logins: bool,
    pub fail_opcode: HashMap<u16, String>,
    pub hold_attach: bool,
    pub held: Vec<i64>,
    pub echo_to_sender: bool,
    pub attach_delay: Duration,
}

/// Settings of a running simulator that handlers consult.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub require_origin: bool,
    pub idle_timeout: Duration,
    pub server_ping_interval: Option<Duration>,
    pub max_upload_bytes: usize,
    /// Recent messages per chat in the LOGIN answer's `messages` (0: none,
    /// like the real service, which cannot be relied on to send any).
    pub login_messages: usize,
}

pub(crate) struct Sim {
    pub settings: Settings,
    state: Mutex<State>,
    pub hub: Hub,
    faults: Mutex<Faults>,
    changes: watch::Sender<u64>,
    last_cid: std::sync::atomic::AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a send produced.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub response: Value,
    pub key: ChatKey,
    pub message_id: i64,
}

/// A send request, from MSG_SEND (64) or the control API.
#[derive(Debug, Clone, Default)]
pub(crate) struct SendRequest {
    pub chat_id: Option<i64>,
    pub user_id: Option<i64>,
    pub text: String,
    pub cid: Option<i64>,
    pub elements: Vec<Value>,
    pub attaches: Vec<Value>,
    pub link: Option<Value>,
}

impl Sim {
    pub fn new(settings: Settings, state: State, faults: Faults) -> Sim {
        Sim {
            settings,
            state: Mutex::new(state),
            hub: Hub::default(),
            faults: Mutex::new(faults),
            changes: watch::channel(0).0,
            last_cid: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// A client id for sends made by the simulator itself: the time in ms,
    /// made unique.
    pub fn next_cid(&self) -> i64 {
        use std::sync::atomic::Ordering;
        let now = now_ms();
        let prev = self
            .last_cid
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        now.max(prev + 1)
    }

    /// The last client id [`Sim::next_cid`] handed out (kept in the state
    /// file so that a restarted simulator does not hand it out again).
    pub fn last_cid(&self) -> i64 {
        self.last_cid.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn restore_last_cid(&self, cid: i64) {
        self.last_cid
            .fetch_max(cid, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    /// Wake everyone waiting for a state change.
    pub fn changed(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn echo(&self) -> bool {
        self.faults().echo_to_sender
    }

    /// Which connection of the actor to leave out of a push to themselves.
    fn exclude_for(&self, actor: Actor, user: i64) -> Option<u64> {
        if user == actor.user && !self.echo() {
            actor.conn
        } else {
            None
        }
    }

    // ---------------------------------------------------------------- send

    pub fn send(&self, actor: Actor, req: SendRequest) -> Result<Sent, ProtoError> {
        if req.text.chars().count() > MAX_MSG_LENGTH {
            return Err(ProtoError::payload(format!(
                "Text is longer than max-msg-length {MAX_MSG_LENGTH}"
            )));
        }
        let now = now_ms();
        let mut st = self.state();
        if !st.accounts.contains_key(&actor.user) {
            return Err(ProtoError::new("not.found", "Unknown sender"));
        }
        let control_new = req.attaches.iter().find(|a| {
            a.get("_type").and_then(Value::as_str) == Some("CONTROL")
                && a.get("event").and_then(Value::as_str) == Some("new")
        });
        let mut created = false;
        let key = match (req.chat_id, req.user_id, control_new) {
            (None, None, Some(control)) => {
                let kind = match control.get("chatType").and_then(Value::as_str) {
                    Some("CHANNEL") => ChatKind::Channel,
                    _ => ChatKind::Chat,
                };
                let title = control
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let members: Vec<i64> = control
                    .get("userIds")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(as_i64).collect())
                    .unwrap_or_default();
                if let Some(u) = members.iter().find(|u| !st.accounts.contains_key(u)) {
                    return Err(ProtoError::new("not.found", format!("User {u} not found")));
                }
                created = true;
                create_group(&mut st, actor.user, kind, title, &members, now)
            }
            (None, None, None) => return Err(ProtoError::missing("chatId")),
            (None, Some(user), _) => {
                let (key, new) = ensure_dialog(&mut st, actor.user, user, now)?;
                created = new;
                key
            }
            (Some(chat_id), _, _) => match st.member_chat(actor.user, chat_id) {
                Some(key) => key,
                None if st.chats.contains_key(&ChatKey::Id(chat_id)) => {
                    return Err(ProtoError::new(
                        "chat.not.access",
                        format!("No access to chat {chat_id}"),
                    ));
                }
                None => {
                    // A dialog needs no creation call: its id is me XOR peer.
                    let peer = chat_id ^ actor.user;
                    if chat_id > 0 && peer != actor.user && st.accounts.contains_key(&peer) {
                        let (key, new) = ensure_dialog(&mut st, actor.user, peer, now)?;
                        created = new;
                        key
                    } else {
                        return Err(ProtoError::chat_not_found(chat_id));
                    }
                }
            },
        };
        let chat = st
            .chats
            .get(&key)
            .ok_or_else(|| ProtoError::chat_not_found(key.wire_id()))?;
        let is_channel = chat.kind == ChatKind::Channel;
        if is_channel && !chat.is_admin(actor.user) {
            return Err(ProtoError::new(
                "chat.not.access",
                "Only channel admins can post",
            ));
        }
        if let Some(cid) = req.cid
            && let Some(&existing) = st.cids.get(&(actor.user, key, cid))
            && let Some(m) = chat.find(existing)
        {
            let response = send_response(chat, m, actor.user);
            return Ok(Sent {
                response,
                key,
                message_id: existing,
            });
        }
        let attaches = req
            .attaches
            .iter()
            .map(|a| resolve_attach(&st, a))
            .collect::<Result<Vec<_>, _>>()?;
        let link = match &req.link {
            Some(link) => Some(resolve_link(&mut st, actor.user, key, link)?),
            None => None,
        };
        let id = st.next_message_id(now);
        let kind = if is_channel { "CHANNEL" } else { "USER" };
        let message = Message {
            id,
            time: now,
            sender: Some(actor.user),
            cid: req.cid,
            kind: kind.to_owned(),
            text: req.text,
            elements: req.elements,
            attaches,
            link,
            status: None,
            update_time: None,
            reactions: Vec::new(),
            hidden_for: BTreeSet::new(),
            extra: Map::new(),
        };
        let chat = st
            .chats
            .get_mut(&key)
            .ok_or_else(|| ProtoError::chat_not_found(key.wire_id()))?;
        chat.messages.push(message);
        chat.modified = now;
        if let Some(mark) = chat.participants.get_mut(&actor.user) {
            *mark = (*mark).max(now);
        }
        if let Some(cid) = req.cid {
            st.cids.insert((actor.user, key, cid), id);
        }
        let chat = &st.chats[&key];
        let response = send_response(chat, chat.messages.last().expect("just pushed"), actor.user);
        self.fan_out_new(chat, id, actor, created);
        drop(st);
        self.changed();
        tracing::debug!(
            user = actor.user,
            chat = key.wire_id(),
            message = id,
            "message sent"
        );
        Ok(Sent {
            response,
            key,
            message_id: id,
        })
    }

    /// 135 (if the chat is new) and 128 to every session of every member.
    fn fan_out_new(&self, chat: &Chat, id: i64, actor: Actor, created: bool) {
        let Some(msg) = chat.find(id) else { return };
        for &user in chat.participants.keys() {
            // The message before it that this member can still see.
            let prev = chat
                .messages
                .iter()
                .rev()
                .find(|m| m.id < id && m.visible_to(user))
                .map(|m| m.id.to_string());
            let exclude = self.exclude_for(actor, user);
            if created {
                self.hub.push_user(
                    user,
                    exclude,
                    Opcode::NOTIF_CHAT,
                    &json!({"chat": chat.to_json(user)}),
                );
            }
            let mut payload = json!({
                "chatId": chat.key.wire_id(),
                "message": msg.to_json(true),
                "ttl": false,
                "unread": chat.unread_for(user),
                "mark": msg.time,
            });
            if let Some(prev) = &prev {
                payload["prevMessageId"] = json!(prev);
            }
            self.hub
                .push_user(user, exclude, Opcode::NOTIF_MESSAGE, &payload);
        }
    }

    /// Create a group or channel on behalf of `creator` (control API).
    pub fn create_chat(
        &self,
        creator: i64,
        kind: ChatKind,
        title: &str,
        members: &[i64],
    ) -> Result<i64, ProtoError> {
        match kind {
            ChatKind::Dialog => {
                let [peer] = members else {
                    return Err(ProtoError::payload(
                        "a dialog needs exactly one other member",
                    ));
                };
                let now = now_ms();
                let mut st = self.state();
                let (key, created) = ensure_dialog(&mut st, creator, *peer, now)?;
                if created {
                    let chat = &st.chats[&key];
                    for &u in chat.participants.keys() {
                        self.hub.push_user(
                            u,
                            None,
                            Opcode::NOTIF_CHAT,
                            &json!({"chat": chat.to_json(u)}),
                        );
                    }
                }
                drop(st);
                self.changed();
                Ok(key.wire_id())
            }
            ChatKind::Chat | ChatKind::Channel => {
                let sent = self.send(
                    Actor {
                        user: creator,
                        conn: None,
                    },
                    SendRequest {
                        attaches: vec![json!({
                            "_type": "CONTROL",
                            "event": "new",
                            "chatType": kind.as_str(),
                            "title": title,
                            "userIds": members,
                        })],
                        cid: Some(self.next_cid()),
                        ..SendRequest::default()
                    },
                )?;
                Ok(sent.key.wire_id())
            }
        }
    }

    // ---------------------------------------------------------------- edit

    pub fn edit(
        &self,
        actor: Actor,
        chat_id: i64,
        message_id: i64,
        text: Option<String>,
        elements: Option<Vec<Value>>,
        attaches: Option<Vec<Value>>,
    ) -> Result<Value, ProtoError> {
        if let Some(t) = &text
            && t.chars().count() > MAX_MSG_LENGTH
        {
            return Err(ProtoError::payload(format!(
                "Text is longer than max-msg-length {MAX_MSG_LENGTH}"
            )));
        }
        let now = now_ms();
        let mut st = self.state();
        let key = st.require_member_chat(actor.user, chat_id)?;
        let attaches = match attaches {
            Some(list) => Some(
                list.iter()
                    .map(|a| resolve_attach(&st, a))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let chat = st
            .chats
            .get_mut(&key)
            .ok_or_else(|| ProtoError::chat_not_found(chat_id))?;
        let msg = chat
            .find_mut(message_id)
            .filter(|m| m.visible_to(actor.user))
            .ok_or_else(|| ProtoError::message_not_found(message_id))?;
        if msg.sender != Some(actor.user) {
            return Err(ProtoError::new(
                "message.edit.denied",
                "Only your own messages can be edited",
            ));
        }
        if now - msg.time > EDIT_TIMEOUT_S * 1000 {
            return Err(ProtoError::new(
                "message.edit.timeout",
                "The edit window of this message has passed",
            ));
        }
        if msg
            .link
            .as_ref()
            .and_then(|l| l.get("type"))
            .and_then(Value::as_str)
            == Some("FORWARD")
        {
            return Err(ProtoError::new(
                "message.edit.denied",
                "Forwarded messages cannot be edited",
            ));
        }
        if let Some(t) = text {
            msg.text = t;
        }
        if let Some(e) = elements {
            msg.elements = e;
        }
        if let Some(a) = attaches {
            msg.attaches = a;
        }
        msg.status = Some(Status::Edited);
        msg.update_time = Some(now);
        let rendered = msg.to_json(true);
        let chat = &st.chats[&key];
        for &user in chat.participants.keys() {
            let exclude = self.exclude_for(actor, user);
            self.hub.push_user(
                user,
                exclude,
                Opcode::NOTIF_MESSAGE,
                &json!({"chatId": chat_id, "message": rendered, "ttl": false}),
            );
        }
        drop(st);
        self.changed();
        Ok(json!({"message": rendered}))
    }

    // -------------------------------------------------------------- delete

    pub fn delete(
        &self,
        actor: Actor,
        chat_id: i64,
        ids: &[i64],
        for_me: bool,
    ) -> Result<(), ProtoError> {
        if ids.is_empty() {
            return Err(ProtoError::missing("messageIds"));
        }
        let mut st = self.state();
        let (key, chat) = st.require_member_chat_mut(actor.user, chat_id)?;
        for &id in ids {
            let m = chat
                .find(id)
                .filter(|m| m.visible_to(actor.user))
                .ok_or_else(|| ProtoError::message_not_found(id))?;
            let may = m.sender == Some(actor.user)
                || (chat.kind != ChatKind::Dialog && chat.is_admin(actor.user))
                || key.wire_id() == 0;
            if !for_me && !may {
                return Err(ProtoError::new(
                    "chat.not.access",
                    "Only your own messages can be deleted for everyone",
                ));
            }
        }
        let mut removed = Vec::new();
        for &id in ids {
            if let Some(m) = chat.find_mut(id) {
                if for_me {
                    m.hidden_for.insert(actor.user);
                } else {
                    m.status = Some(Status::Removed);
                }
                removed.push(m.clone());
            }
        }
        let chat = &st.chats[&key];
        let targets: Vec<i64> = if for_me {
            vec![actor.user]
        } else {
            chat.participants.keys().copied().collect()
        };
        for user in targets {
            // The deleting connection is not told about its own deletion.
            let ids_json: Vec<Value> = removed.iter().map(|m| json!(m.id.to_string())).collect();
            let chat_json = chat.to_json(user);
            self.hub.push_user_with(user, actor.conn, |format| match format {
                WireFormat::Binary => Some((
                    Opcode::NOTIF_MSG_DELETE,
                    json!({"chat": chat_json, "chatId": chat_id, "messageIds": ids_json, "ttl": false}),
                )),
                WireFormat::Json => None,
            });
            for m in &removed {
                let mut rendered = m.to_json(true);
                rendered["status"] = json!("REMOVED");
                let payload = json!({"chatId": chat_id, "message": rendered, "ttl": false});
                self.hub
                    .push_user_with(user, actor.conn, |format| match format {
                        WireFormat::Json => Some((Opcode::NOTIF_MESSAGE, payload.clone())),
                        WireFormat::Binary => None,
                    });
            }
        }
        drop(st);
        self.changed();
        Ok(())
    }

    // ------------------------------------------------------------ reactions

    pub fn react(
        &self,
        actor: Actor,
        chat_id: i64,
        message_id: i64,
        reaction: Option<&str>,
    ) -> Result<Value, ProtoError> {
        if let Some(r) = reaction
            && !REACTIONS_MENU.contains(&r)
        {
            return Err(ProtoError::new(
                "error.message.like.unknown.reaction",
                format!("Reaction {r} is not allowed"),
            ));
        }
        let mut st = self.state();
        let key = st
            .member_chat(actor.user, chat_id)
            .ok_or_else(|| ProtoError::new("error.message.chat.access", "No access to chat"))?;
        let chat = st
            .chats
            .get_mut(&key)
            .ok_or_else(|| ProtoError::chat_not_found(chat_id))?;
        let msg = chat
            .find_mut(message_id)
            .filter(|m| m.visible_to(actor.user))
            .ok_or_else(|| ProtoError::new("error.message.invalid", "Message not found"))?;
        match reaction {
            Some(r) => {
                let mut distinct: BTreeSet<&str> = msg
                    .reactions
                    .iter()
                    .filter(|(u, _)| *u != actor.user)
                    .map(|(_, r)| r.as_str())
                    .collect();
                distinct.insert(r);
                if distinct.len() > REACTIONS_MAX {
                    return Err(ProtoError::new(
                        "error.too-many-likes",
                        "Too many distinct reactions",
                    ));
                }
                match msg.reactions.iter_mut().find(|(u, _)| *u == actor.user) {
                    Some(slot) => slot.1 = r.to_owned(),
                    None => msg.reactions.push((actor.user, r.to_owned())),
                }
            }
            None => msg.reactions.retain(|(u, _)| *u != actor.user),
        }
        let own_info = msg.reaction_info(Some(actor.user));
        let counters = msg.counters();
        let total = msg.reactions.len();
        if let Some(r) = reaction {
            chat.last_reaction = Some((message_id, r.to_owned()));
        }
        let chat = &st.chats[&key];
        for &user in chat.participants.keys() {
            if user == actor.user {
                self.hub.push_user(
                    user,
                    actor.conn,
                    Opcode::NOTIF_MSG_YOU_REACTED,
                    &json!({"chatId": chat_id, "messageId": message_id, "reactionInfo": own_info}),
                );
            } else {
                self.hub.push_user(
                    user,
                    None,
                    Opcode::NOTIF_MSG_REACTIONS_CHANGED,
                    &json!({"chatId": chat_id, "messageId": message_id, "counters": counters, "totalCount": total}),
                );
            }
            self.hub.push_user(
                user,
                actor.conn,
                Opcode::NOTIF_CHAT,
                &json!({"chat": chat.to_json(user)}),
            );
        }
        drop(st);
        self.changed();
        Ok(own_info)
    }

    // ---------------------------------------------------------- read marks

    pub fn mark(
        &self,
        actor: Actor,
        chat_id: i64,
        message_id: Option<i64>,
        mark: Option<i64>,
        set_as_unread: bool,
    ) -> Result<Value, ProtoError> {
        let mut st = self.state();
        let (key, chat) = st.require_member_chat_mut(actor.user, chat_id)?;
        let mark = match (mark, message_id) {
            (Some(m), _) => m,
            (None, Some(id)) => chat
                .find(id)
                .map(|m| m.time)
                .ok_or_else(|| ProtoError::message_not_found(id))?,
            (None, None) => return Err(ProtoError::missing("mark")),
        };
        if let Some(id) = message_id
            && chat.find(id).is_none()
        {
            return Err(ProtoError::message_not_found(id));
        }
        let slot = chat.participants.entry(actor.user).or_insert(0);
        *slot = if set_as_unread {
            mark
        } else {
            (*slot).max(mark)
        };
        let stored = *slot;
        let unread = chat.unread_for(actor.user);
        let chat = &st.chats[&key];
        for &user in chat.participants.keys() {
            self.hub.push_user(
                user,
                actor.conn,
                Opcode::NOTIF_MARK,
                &json!({"chatId": chat_id, "userId": actor.user, "mark": stored, "setAsUnread": set_as_unread, "unread": chat.unread_for(user)}),
            );
        }
        drop(st);
        self.changed();
        Ok(json!({"unread": unread, "mark": stored}))
    }

    pub fn typing(&self, actor: Actor, chat_id: i64, kind: Option<&str>) -> Result<(), ProtoError> {
        let mut st = self.state();
        let key = st.require_member_chat(actor.user, chat_id)?;
        let chat = &st.chats[&key];
        let mut payload = json!({"chatId": chat_id, "userId": actor.user});
        if let Some(k) = kind {
            payload["type"] = json!(k);
        }
        for &user in chat.participants.keys().filter(|u| **u != actor.user) {
            self.hub
                .push_user(user, None, Opcode::NOTIF_TYPING, &payload);
        }
        Ok(())
    }

    // ------------------------------------------------------------ presence

    /// Recompute whether `user` is online (held by the control API, or at
    /// least one of their connections is interactive) and push 132 to the
    /// accounts watching them when that changed. `active` means the user
    /// just did something a human does (an interactive PING or LOGIN), which
    /// refreshes `seen` while they stay online.
    pub fn refresh_presence(&self, user: i64, active: bool) {
        let mut st = self.state();
        if !st.accounts.contains_key(&user) {
            return;
        }
        // Decided under the state lock so that concurrent refreshes of one
        // user announce their transitions in order, ending in the truth.
        let online = st.presence.held.contains(&user)
            || self
                .hub
                .of_user(user)
                .iter()
                .any(|c| c.session().interactive);
        let was = st.presence.online.contains(&user);
        if online != was || (online && active) {
            st.presence.seen.insert(user, now_ms() / 1000);
        }
        if online == was {
            return;
        }
        if online {
            st.presence.online.insert(user);
        } else {
            st.presence.online.remove(&user);
        }
        let payload = json!({"userId": user, "presence": st.presence_json(user)});
        for watcher in st.presence_watchers(user) {
            self.hub
                .push_user(watcher, None, Opcode::NOTIF_PRESENCE, &payload);
        }
        drop(st);
        tracing::debug!(user, online, "presence changed");
        self.changed();
    }

    /// Force `user` online (held until released) or offline (released, and
    /// every connection of theirs counts as not looked at until its next
    /// interactive PING).
    pub fn set_presence(&self, user: i64, online: bool) {
        {
            let mut st = self.state();
            if online {
                st.presence.held.insert(user);
            } else {
                st.presence.held.remove(&user);
            }
        }
        if !online {
            for c in self.hub.of_user(user) {
                c.session().interactive = false;
            }
        }
        self.refresh_presence(user, true);
    }

    pub fn is_online(&self, user: i64) -> bool {
        self.state().presence.online.contains(&user)
    }

    /// Invalidate a login token and close the connections that use it
    /// (except `except`, which closes by itself). Returns how many closed.
    pub fn revoke(&self, token: &str, except: Option<u64>) -> usize {
        {
            let mut st = self.state();
            st.tokens.remove(token);
            st.revoked.insert(token.to_owned());
        }
        let mut closed = 0;
        for c in self.hub.all() {
            if Some(c.id) != except && c.session().token.as_deref() == Some(token) {
                c.send(Out::Close(1000, "logged out".into()));
                closed += 1;
            }
        }
        self.changed();
        closed
    }

    /// Add or remove members of a group/channel (CHAT_MEMBERS_UPDATE, 77),
    /// announce it with 135 and a CONTROL service message.
    pub fn members_update(
        &self,
        actor: Actor,
        chat_id: i64,
        users: &[i64],
        add: bool,
    ) -> Result<(), ProtoError> {
        if users.is_empty() {
            return Err(ProtoError::payload("userIds can't be empty"));
        }
        {
            let st = self.state();
            if let Some(u) = users.iter().find(|u| !st.accounts.contains_key(u)) {
                return Err(ProtoError::new("not.found", format!("User {u} not found")));
            }
        }
        self.change_as_admin(actor, chat_id, "Only admins can change members", |chat| {
            let mut affected: BTreeSet<i64> = chat.participants.keys().copied().collect();
            for &u in users {
                if add {
                    chat.participants.entry(u).or_insert(0);
                } else if u != chat.owner {
                    chat.participants.remove(&u);
                    chat.admins.retain(|a| *a != u);
                }
                affected.insert(u);
            }
            affected
        })?;
        self.send(
            actor,
            SendRequest {
                chat_id: Some(chat_id),
                cid: Some(self.next_cid()),
                attaches: vec![json!({
                    "_type": "CONTROL",
                    "event": if add { "add" } else { "remove" },
                    "userIds": users,
                })],
                ..SendRequest::default()
            },
        )?;
        Ok(())
    }

    /// Changes a group or channel as its admin `actor` would: `change`
    /// edits it and names the users to tell, who then get 135 with the chat
    /// as it is now.
    fn change_as_admin(
        &self,
        actor: Actor,
        chat_id: i64,
        refusal: &str,
        change: impl FnOnce(&mut crate::model::Chat) -> BTreeSet<i64>,
    ) -> Result<(), ProtoError> {
        let mut st = self.state();
        let (key, chat) = st.require_member_chat_mut(actor.user, chat_id)?;
        if chat.kind == ChatKind::Dialog {
            return Err(ProtoError::payload("Not valid for dialogs"));
        }
        if !chat.is_admin(actor.user) {
            return Err(ProtoError::new("chat.not.access", refusal));
        }
        let affected = change(chat);
        chat.modified = now_ms();
        let chat = &st.chats[&key];
        for u in affected {
            self.hub.push_user(
                u,
                None,
                Opcode::NOTIF_CHAT,
                &json!({"chat": chat.to_json(u)}),
            );
        }
        Ok(())
    }

    /// Pin a message of a group or channel (`None`: unpin), as its admin
    /// does; members get 135 with `pinnedMessage`.
    pub fn pin(
        &self,
        actor: Actor,
        chat_id: i64,
        message_id: Option<i64>,
    ) -> Result<(), ProtoError> {
        if let Some(id) = message_id {
            let mut st = self.state();
            let key = st.require_member_chat(actor.user, chat_id)?;
            if st.chats[&key].find(id).is_none() {
                return Err(ProtoError::message_not_found(id));
            }
        }
        self.change_as_admin(actor, chat_id, "Only admins can pin", |chat| {
            chat.pinned = message_id;
            chat.participants.keys().copied().collect()
        })?;
        self.changed();
        Ok(())
    }

    /// Change a group's or channel's title and/or description, as an admin
    /// does in the app: members get 135 with the chat, and a new title is
    /// announced with a CONTROL service message.
    pub fn update_chat(
        &self,
        actor: Actor,
        chat_id: i64,
        title: Option<&str>,
        description: Option<&str>,
    ) -> Result<(), ProtoError> {
        self.change_as_admin(actor, chat_id, "Only admins can change the chat", |chat| {
            if let Some(title) = title {
                chat.title = Some(title.to_owned());
            }
            if let Some(description) = description {
                chat.description = Some(description.to_owned());
            }
            chat.participants.keys().copied().collect()
        })?;
        if let Some(title) = title {
            self.send(
                actor,
                SendRequest {
                    chat_id: Some(chat_id),
                    cid: Some(self.next_cid()),
                    attaches: vec![json!({"_type": "CONTROL", "event": "title", "title": title})],
                    ..SendRequest::default()
                },
            )?;
        } else {
            self.changed();
        }
        Ok(())
    }

    // ------------------------------------------------------------- uploads

    /// Hand out an upload slot: (id, token).
    pub fn new_upload(&self, owner: i64, kind: MediaKind) -> (i64, String) {
        let mut st = self.state();
        let id = st.next_media_id();
        let token = random_token("", 40);
        st.uploads.insert(
            id,
            Upload {
                kind,
                id,
                token: token.clone(),
                owner,
                data: None,
                name: String::new(),
                content_type: "application/octet-stream".into(),
                ready: false,
                width: 0,
                height: 0,
            },
        );
        if kind == MediaKind::Photo {
            st.photo_tokens.insert(token.clone(), id);
        }
        drop(st);
        self.changed();
        (id, token)
    }

    /// Store the bytes of an upload; `false` if the slot is unknown.
    pub fn store_upload(
        &self,
        id: i64,
        token: &str,
        data: Bytes,
        name: String,
        content_type: String,
    ) -> Option<MediaKind> {
        let mut st = self.state();
        let upload = st.uploads.get_mut(&id).filter(|u| u.token == token)?;
        let (w, h) = crate::png::dimensions(&data).unwrap_or((0, 0));
        upload.data = Some(data);
        upload.name = name;
        upload.content_type = content_type;
        upload.width = w;
        upload.height = h;
        if upload.kind == MediaKind::Photo {
            upload.ready = true;
        }
        let kind = upload.kind;
        drop(st);
        self.changed();
        Some(kind)
    }

    /// Mark an upload processed and push 136 to its owner's sessions.
    pub fn finish_upload(&self, id: i64) {
        let mut st = self.state();
        let Some(upload) = st.uploads.get_mut(&id) else {
            return;
        };
        if upload.ready {
            return;
        }
        upload.ready = true;
        let key = match upload.kind {
            MediaKind::Video => "videoId",
            _ => "fileId",
        };
        let owner = upload.owner;
        drop(st);
        self.hub
            .push_user(owner, None, Opcode::NOTIF_ATTACH, &json!({ key: id }));
        self.changed();
    }

    /// After an HTTP upload: 136 after the configured delay, unless held.
    pub fn schedule_ready(self: &Arc<Self>, id: i64) {
        let delay = {
            let mut f = self.faults();
            if f.hold_attach {
                f.held.push(id);
                return;
            }
            f.attach_delay
        };
        let sim = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            sim.finish_upload(id);
        });
    }

    pub fn upload(&self, id: i64) -> Option<Upload> {
        self.state().uploads.get(&id).cloned()
    }
}

/// The answer of MSG_SEND (64).
fn send_response(chat: &Chat, msg: &Message, viewer: i64) -> Value {
    let mut m = msg.to_json(false);
    m["reactionInfo"] = msg.reaction_info(Some(viewer));
    let mut resp = json!({
        "chatId": chat.key.wire_id(),
        "message": m,
        "unread": chat.unread_for(viewer),
        "mark": msg.time,
    });
    if msg
        .attaches
        .iter()
        .any(|a| a.get("_type").and_then(Value::as_str) == Some("CONTROL"))
    {
        resp["chat"] = chat.to_json(viewer);
    }
    resp
}

/// The dialog of `a` and `b`; created if missing. `(key, created)`.
fn ensure_dialog(st: &mut State, a: i64, b: i64, now: i64) -> Result<(ChatKey, bool), ProtoError> {
    if a == b {
        return Ok((st.ensure_saved(a), false));
    }
    if !st.accounts.contains_key(&b) {
        return Err(ProtoError::new("not.found", format!("User {b} not found")));
    }
    let key = ChatKey::Id(a ^ b);
    if let Some(chat) = st.chats.get(&key) {
        // The simulator keys a dialog by its wire id, so two pairs whose
        // ids XOR alike cannot both have one; said aloud rather than
        // handing out a chat the pair is not in.
        if !(chat.is_member(a) && chat.is_member(b)) {
            return Err(ProtoError::new(
                "dialog.id.taken",
                format!(
                    "the simulator already has dialog {} between other users",
                    a ^ b
                ),
            ));
        }
        return Ok((key, false));
    }
    st.chats.insert(
        key,
        Chat {
            key,
            kind: ChatKind::Dialog,
            title: None,
            description: None,
            owner: a,
            admins: Vec::new(),
            participants: BTreeMap::from([(a, now), (b, 0)]),
            icon_url: None,
            created: now,
            modified: now,
            messages: Vec::new(),
            extra: Map::new(),
            last_reaction: None,
            pinned: None,
        },
    );
    Ok((key, true))
}

fn create_group(
    st: &mut State,
    creator: i64,
    kind: ChatKind,
    title: String,
    members: &[i64],
    now: i64,
) -> ChatKey {
    let id = st.next_group_id();
    let key = ChatKey::Id(id);
    let mut participants = BTreeMap::from([(creator, now)]);
    for &m in members {
        participants.entry(m).or_insert(0);
    }
    let icon_url = Some(st.avatar_url('c', id));
    let mut extra = Map::new();
    extra.insert("cid".into(), json!(now));
    st.chats.insert(
        key,
        Chat {
            key,
            kind,
            title: Some(title),
            description: None,
            owner: creator,
            admins: vec![creator],
            participants,
            icon_url,
            created: now,
            modified: now,
            messages: Vec::new(),
            extra,
            last_reaction: None,
            pinned: None,
        },
    );
    key
}

/// Outgoing attach form → the stored (incoming) form.
fn resolve_attach(st: &State, attach: &Value) -> Result<Value, ProtoError> {
    let Some(obj) = attach.as_object() else {
        return Err(ProtoError::payload("Expected map at attaches"));
    };
    let kind = obj
        .get("_type")
        .and_then(Value::as_str)
        .ok_or_else(|| ProtoError::missing("attaches._type"))?;
    let minimal = |keys: &[&str]| {
        obj.keys()
            .all(|k| k == "_type" || keys.contains(&k.as_str()))
    };
    let base = &st.base_url;
    match kind {
        "PHOTO" => {
            let token = obj.get("photoToken").and_then(Value::as_str);
            match token
                .and_then(|t| st.photo_tokens.get(t))
                .and_then(|id| st.uploads.get(id))
            {
                Some(u) if u.data.is_some() => Ok(json!({
                    "_type": "PHOTO",
                    "photoId": u.id,
                    "baseUrl": format!("{base}/i?r=p{}", u.id),
                    "width": u.width,
                    "height": u.height,
                    "photoToken": u.token,
                })),
                Some(_) => Err(ProtoError::new(
                    "attachment.not.ready",
                    "Photo not uploaded yet",
                )),
                None if minimal(&["photoToken"]) => Err(ProtoError::payload("Invalid photoToken")),
                None => Ok(attach.clone()),
            }
        }
        "FILE" => {
            let id = obj.get("fileId").and_then(as_i64);
            match id.and_then(|id| st.uploads.get(&id)) {
                Some(u) if u.ready && u.data.is_some() => Ok(json!({
                    "_type": "FILE",
                    "fileId": u.id,
                    "name": u.name,
                    "size": u.data.as_ref().map(Bytes::len).unwrap_or(0),
                    "token": u.token,
                })),
                Some(_) => Err(ProtoError::new(
                    "attachment.not.ready",
                    "File is not processed yet",
                )),
                None if minimal(&["fileId", "token"]) => {
                    Err(ProtoError::new("not.found", "Unknown fileId"))
                }
                None => Ok(attach.clone()),
            }
        }
        "VIDEO" | "AUDIO" => {
            let id_key = if kind == "VIDEO" {
                "videoId"
            } else {
                "audioId"
            };
            let id = obj.get(id_key).and_then(as_i64);
            match id.and_then(|id| st.uploads.get(&id)) {
                Some(u) if u.ready && u.data.is_some() => {
                    let mut out = attach.clone();
                    out[id_key] = json!(u.id);
                    out["token"] = json!(u.token);
                    if kind == "VIDEO" {
                        for (k, v) in [
                            ("width", json!(u.width)),
                            ("height", json!(u.height)),
                            ("duration", json!(0)),
                            ("videoType", json!(0)),
                        ] {
                            if out.get(k).is_none() {
                                out[k] = v;
                            }
                        }
                        out["thumbnail"] = json!(format!("{base}/i?r=v{}", u.id));
                    } else {
                        out["url"] = json!(format!("{base}/media/{}?sig={}", u.id, u.token));
                        if out.get("transcriptionStatus").is_none() {
                            out["transcriptionStatus"] = json!("NOT_SUPPORTED");
                        }
                    }
                    Ok(out)
                }
                Some(_) => Err(ProtoError::new(
                    "attachment.not.ready",
                    "Video is not processed yet",
                )),
                None if minimal(&[id_key, "token", "videoType", "duration", "wave"]) => {
                    Err(ProtoError::new("not.found", format!("Unknown {id_key}")))
                }
                None => Ok(attach.clone()),
            }
        }
        "STICKER" => {
            let id = obj
                .get("stickerId")
                .and_then(as_i64)
                .ok_or_else(|| ProtoError::missing("attaches.stickerId"))?;
            Ok(json!({
                "_type": "STICKER",
                "stickerId": id,
                "setId": obj.get("setId").cloned().unwrap_or(json!(0)),
                "url": format!("{base}/i?r=s{id}"),
                "lottieUrl": "",
                "width": 128,
                "height": 128,
                "stickerType": "STATIC",
                "time": 0,
                "tags": [],
                "authorType": "SYSTEM",
            }))
        }
        "CONTACT" => {
            let id = obj
                .get("contactId")
                .and_then(as_i64)
                .ok_or_else(|| ProtoError::missing("attaches.contactId"))?;
            let a = st
                .accounts
                .get(&id)
                .ok_or_else(|| ProtoError::new("not.found", format!("User {id} not found")))?;
            Ok(json!({
                "_type": "CONTACT",
                "contactId": id,
                "firstName": a.first_name,
                "lastName": a.last_name,
                "name": a.full_name(),
                "photoUrl": a.avatar_url,
            }))
        }
        _ => Ok(attach.clone()),
    }
}

/// A request `link` (`{type, messageId, chatId?}`) → the stored link with
/// the quoted/forwarded message inside.
fn resolve_link(
    st: &mut State,
    user: i64,
    key: ChatKey,
    link: &Value,
) -> Result<Value, ProtoError> {
    let kind = link
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| ProtoError::missing("link.type"))?;
    let message_id = link
        .get("messageId")
        .and_then(as_i64)
        .ok_or_else(|| ProtoError::missing("link.messageId"))?;
    let source = match kind {
        "REPLY" => key,
        "FORWARD" => {
            let chat_id = link
                .get("chatId")
                .and_then(as_i64)
                .ok_or_else(|| ProtoError::missing("link.chatId"))?;
            st.require_member_chat(user, chat_id)?
        }
        other => return Err(ProtoError::payload(format!("Unknown link type {other}"))),
    };
    let chat = st
        .chats
        .get(&source)
        .ok_or_else(|| ProtoError::chat_not_found(source.wire_id()))?;
    let quoted = chat
        .find(message_id)
        .filter(|m| m.visible_to(user))
        .ok_or_else(|| ProtoError::message_not_found(message_id))?;
    // The real service names the quoted message's chat for replies too:
    // clients written for it require the field.
    let mut out = json!({
        "type": kind,
        "messageId": message_id.to_string(),
        "chatId": source.wire_id(),
        "message": quoted.to_json(true),
    });
    if kind == "FORWARD"
        && let Some(t) = &chat.title
    {
        out["chatName"] = json!(t);
    }
    Ok(out)
}
