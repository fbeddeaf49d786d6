//! The simulator's in-memory state (accounts, tokens, chats, messages,
//! uploads) and how each piece is rendered as a MAX wire object.

use crate::fixture::{ChatKind, Fixture, FixtureError};
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where a chat lives. Saved messages are chat `0` on the wire for every
/// user, so internally they are keyed by their owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum ChatKey {
    Saved(i64),
    Id(i64),
}

impl ChatKey {
    pub fn wire_id(self) -> i64 {
        match self {
            ChatKey::Saved(_) => 0,
            ChatKey::Id(id) => id,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Account {
    pub id: i64,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<i64>,
    pub sms_code: Option<String>,
    pub contacts: Vec<i64>,
    pub options: Vec<String>,
    pub photo_id: Option<i64>,
    pub avatar_url: Option<String>,
    pub description: Option<String>,
    pub link: Option<String>,
    pub update_time: i64,
    pub registration_time: i64,
    #[serde(default)]
    pub rotate_on_login: bool,
    /// `(userAgent, deviceId)` of the last SESSION_INIT that logged in.
    #[serde(default)]
    pub last_session: Option<(Value, Option<String>)>,
}

impl Account {
    pub fn full_name(&self) -> String {
        if self.last_name.is_empty() {
            self.first_name.clone()
        } else {
            format!("{} {}", self.first_name, self.last_name)
        }
    }

    /// The `User` object of spec §4.1.
    pub fn to_json(&self) -> Value {
        let mut user = json!({
            "id": self.id,
            "names": [{
                "name": self.full_name(),
                "firstName": self.first_name,
                "lastName": self.last_name,
                "type": "ONEME",
            }],
            "options": self.options,
            "accountStatus": 0,
            "updateTime": self.update_time,
            "registrationTime": self.registration_time,
        });
        let obj = user.as_object_mut().expect("literal object");
        if let Some(phone) = self.phone {
            obj.insert("phone".into(), json!(phone));
        }
        if let Some(url) = &self.avatar_url {
            obj.insert("baseUrl".into(), json!(url));
            obj.insert("baseRawUrl".into(), json!(url));
        }
        if let Some(photo_id) = self.photo_id {
            obj.insert("photoId".into(), json!(photo_id));
        }
        if let Some(d) = &self.description {
            obj.insert("description".into(), json!(d));
        }
        if let Some(l) = &self.link {
            obj.insert("link".into(), json!(l));
        }
        user
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum Status {
    Edited,
    Removed,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Edited => "EDITED",
            Status::Removed => "REMOVED",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Message {
    pub id: i64,
    pub time: i64,
    #[serde(default)]
    pub sender: Option<i64>,
    #[serde(default)]
    pub cid: Option<i64>,
    pub kind: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub elements: Vec<Value>,
    #[serde(default)]
    pub attaches: Vec<Value>,
    /// The `link` object, rendered (with the quoted message) when sent.
    #[serde(default)]
    pub link: Option<Value>,
    #[serde(default)]
    pub status: Option<Status>,
    #[serde(default)]
    pub update_time: Option<i64>,
    /// (user, reaction) in the order they were first set.
    #[serde(default)]
    pub reactions: Vec<(i64, String)>,
    /// Users who deleted the message "for me".
    #[serde(default)]
    pub hidden_for: BTreeSet<i64>,
    #[serde(default)]
    pub extra: Map<String, Value>,
}

impl Message {
    pub fn is_removed(&self) -> bool {
        self.status == Some(Status::Removed)
    }

    pub fn visible_to(&self, user: i64) -> bool {
        !self.is_removed() && !self.hidden_for.contains(&user)
    }

    /// The wire `Message` (§4.3). Message ids are decimal strings.
    pub fn to_json(&self, with_elements: bool) -> Value {
        let mut obj = self.extra.clone();
        obj.insert("id".into(), json!(self.id.to_string()));
        obj.insert("time".into(), json!(self.time));
        obj.insert("type".into(), json!(self.kind));
        obj.insert("sender".into(), json!(self.sender));
        if let Some(cid) = self.cid {
            obj.insert("cid".into(), json!(cid));
        }
        obj.insert("text".into(), json!(self.text));
        if with_elements && !self.elements.is_empty() {
            obj.insert("elements".into(), json!(self.elements));
        }
        obj.insert("attaches".into(), json!(self.attaches));
        if let Some(link) = &self.link {
            obj.insert("link".into(), link.clone());
        }
        if let Some(status) = &self.status {
            obj.insert("status".into(), json!(status.as_str()));
        }
        if let Some(t) = self.update_time {
            obj.insert("updateTime".into(), json!(t));
        }
        Value::Object(obj)
    }

    /// `ReactionInfo`: `{}` when nobody reacted.
    pub fn reaction_info(&self, viewer: Option<i64>) -> Value {
        if self.reactions.is_empty() {
            return json!({});
        }
        let mut counters: Vec<(String, u64)> = Vec::new();
        for (_, r) in &self.reactions {
            match counters.iter_mut().find(|(name, _)| name == r) {
                Some((_, n)) => *n += 1,
                None => counters.push((r.clone(), 1)),
            }
        }
        let mut info = json!({
            "totalCount": self.reactions.len(),
            "counters": counters.iter().map(|(r, n)| json!({"reaction": r, "count": n})).collect::<Vec<_>>(),
        });
        if let Some(own) = viewer.and_then(|v| self.reactions.iter().find(|(u, _)| *u == v)) {
            info["yourReaction"] = json!(own.1);
        }
        info
    }

    pub fn counters(&self) -> Value {
        self.reaction_info(None)
            .get("counters")
            .cloned()
            .unwrap_or_else(|| json!([]))
    }

    /// Build from a fixture's wire-form message.
    pub fn from_fixture(value: &Value) -> Result<Message, String> {
        let obj = value
            .as_object()
            .ok_or_else(|| "message is not an object".to_owned())?;
        let id = obj
            .get("id")
            .and_then(as_i64)
            .ok_or_else(|| "message without a numeric id".to_owned())?;
        let time = obj.get("time").and_then(as_i64).unwrap_or(id >> 16);
        let mut extra = obj.clone();
        for key in [
            "id",
            "time",
            "sender",
            "cid",
            "type",
            "text",
            "elements",
            "attaches",
            "link",
            "status",
            "updateTime",
            "reactionInfo",
        ] {
            extra.remove(key);
        }
        let status = match obj.get("status").and_then(Value::as_str) {
            Some("EDITED") => Some(Status::Edited),
            Some("REMOVED") => Some(Status::Removed),
            _ => None,
        };
        Ok(Message {
            id,
            time,
            sender: obj.get("sender").and_then(as_i64),
            cid: obj.get("cid").and_then(as_i64),
            kind: obj
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("USER")
                .to_owned(),
            text: obj
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            elements: array_of(obj.get("elements")),
            attaches: array_of(obj.get("attaches")),
            link: obj.get("link").cloned(),
            status,
            update_time: obj.get("updateTime").and_then(as_i64),
            reactions: Vec::new(),
            hidden_for: BTreeSet::new(),
            extra,
        })
    }
}

fn array_of(value: Option<&Value>) -> Vec<Value> {
    value.and_then(Value::as_array).cloned().unwrap_or_default()
}

/// An integer, or a decimal string holding one (ids on the JSON wire).
pub(crate) fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Chat {
    pub key: ChatKey,
    pub kind: ChatKind,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub owner: i64,
    #[serde(default)]
    pub admins: Vec<i64>,
    /// Member → read mark (ms).
    pub participants: BTreeMap<i64, i64>,
    #[serde(default)]
    pub icon_url: Option<String>,
    pub created: i64,
    pub modified: i64,
    /// Ordered by id (which is ordered by time).
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub extra: Map<String, Value>,
    #[serde(default)]
    pub last_reaction: Option<(i64, String)>,
    /// The pinned message (groups and channels; one at a time).
    #[serde(default)]
    pub pinned: Option<i64>,
}

impl Chat {
    pub fn is_member(&self, user: i64) -> bool {
        self.participants.contains_key(&user)
    }

    pub fn is_admin(&self, user: i64) -> bool {
        self.owner == user || self.admins.contains(&user)
    }

    pub fn last_visible(&self, viewer: i64) -> Option<&Message> {
        self.messages.iter().rev().find(|m| m.visible_to(viewer))
    }

    pub fn last_event_time(&self) -> i64 {
        self.messages
            .iter()
            .rev()
            .find(|m| !m.is_removed())
            .map(|m| m.time)
            .unwrap_or(self.created)
            .max(self.modified)
    }

    pub fn unread_for(&self, user: i64) -> usize {
        let mark = self.participants.get(&user).copied().unwrap_or(0);
        self.messages
            .iter()
            .filter(|m| m.visible_to(user) && m.time > mark && m.sender != Some(user))
            .count()
    }

    pub fn find(&self, id: i64) -> Option<&Message> {
        self.messages
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .map(|i| &self.messages[i])
    }

    pub fn find_mut(&mut self, id: i64) -> Option<&mut Message> {
        match self.messages.binary_search_by_key(&id, |m| m.id) {
            Ok(i) => Some(&mut self.messages[i]),
            Err(_) => None,
        }
    }

    /// The wire `Chat` (§4.2) as `viewer` sees it.
    pub fn to_json(&self, viewer: i64) -> Value {
        let mut obj = self.extra.clone();
        let last = self.last_visible(viewer);
        obj.insert("id".into(), json!(self.key.wire_id()));
        obj.insert("type".into(), json!(self.kind.as_str()));
        obj.entry("status").or_insert_with(|| json!("ACTIVE"));
        obj.insert("owner".into(), json!(self.owner));
        obj.insert(
            "participants".into(),
            Value::Object(
                self.participants
                    .iter()
                    .map(|(u, m)| (u.to_string(), json!(m)))
                    .collect(),
            ),
        );
        if let Some(t) = &self.title {
            obj.insert("title".into(), json!(t));
        }
        if let Some(d) = &self.description {
            obj.insert("description".into(), json!(d));
        }
        if let Some(url) = &self.icon_url {
            obj.insert("baseIconUrl".into(), json!(url));
            obj.insert("baseRawIconUrl".into(), json!(url));
        }
        if let Some(pinned) = self
            .pinned
            .and_then(|id| self.find(id))
            .filter(|m| m.visible_to(viewer))
        {
            obj.insert("pinnedMessage".into(), pinned.to_json(true));
        }
        if let Some(m) = last {
            let mut lm = m.to_json(true);
            if !m.reactions.is_empty() {
                lm["reactionInfo"] = m.reaction_info(Some(viewer));
            }
            obj.insert("lastMessage".into(), lm);
        }
        let visible: Vec<&Message> = self
            .messages
            .iter()
            .filter(|m| m.visible_to(viewer))
            .collect();
        if visible.len() >= 2 {
            obj.insert(
                "prevMessageId".into(),
                json!(visible[visible.len() - 2].id.to_string()),
            );
        }
        obj.insert("lastEventTime".into(), json!(self.last_event_time()));
        obj.insert("modified".into(), json!(self.modified));
        obj.entry("created").or_insert_with(|| json!(self.created));
        obj.entry("joinTime").or_insert_with(|| json!(self.created));
        obj.insert("newMessages".into(), json!(self.unread_for(viewer)));
        obj.entry("lastDelayedUpdateTime").or_insert(json!(0));
        obj.entry("lastFireDelayedErrorTime").or_insert(json!(0));
        if let Some((mid, r)) = &self.last_reaction {
            obj.insert("lastReactedMessageId".into(), json!(mid.to_string()));
            obj.insert("lastReaction".into(), json!(r));
        }
        match self.kind {
            ChatKind::Dialog => {
                obj.entry("cid").or_insert(json!(self.key.wire_id()));
            }
            ChatKind::Chat | ChatKind::Channel => {
                obj.insert("participantsCount".into(), json!(self.participants.len()));
                obj.insert("messagesCount".into(), json!(visible.len()));
                obj.entry("access").or_insert(json!("PRIVATE"));
                let mut admins = vec![self.owner];
                admins.extend(self.admins.iter().filter(|a| **a != self.owner));
                obj.insert("admins".into(), json!(admins));
                obj.insert(
                    "adminParticipants".into(),
                    Value::Object(
                        admins
                            .iter()
                            .map(|a| (a.to_string(), json!({"id": a, "permissions": 2047})))
                            .collect(),
                    ),
                );
                obj.entry("options").or_insert_with(|| {
                    json!({
                        "SIGN_ADMIN": false,
                        "OFFICIAL": false,
                        "MESSAGE_COPY_NOT_ALLOWED": false,
                        "ONLY_OWNER_CAN_CHANGE_ICON_TITLE": false,
                        "ONLY_ADMIN_CAN_ADD_MEMBER": false,
                        "ONLY_ADMIN_CAN_CALL": false,
                        "SENT_BY_PHONE": false,
                        "ALL_CAN_PIN_MESSAGE": self.kind == ChatKind::Chat,
                    })
                });
            }
        }
        Value::Object(obj)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MediaKind {
    Photo,
    Video,
    File,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Upload {
    pub kind: MediaKind,
    pub id: i64,
    pub token: String,
    pub owner: i64,
    /// The uploaded bytes; the state file keeps them in files of their own
    /// (see [`crate::persist`]).
    #[serde(skip)]
    pub data: Option<Bytes>,
    pub name: String,
    pub content_type: String,
    pub ready: bool,
    pub width: u32,
    pub height: u32,
}

/// Who is online and when everyone was last seen.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    /// Users announced online (the last 132 said so).
    pub online: BTreeSet<i64>,
    /// Users kept online by the control API, connections or not.
    pub held: BTreeSet<i64>,
    /// Last activity, in seconds.
    pub seen: HashMap<i64, i64>,
    /// `seen` of users without activity since the server started.
    pub default_seen: i64,
}

/// Everything the server knows. Guarded by one mutex in [`crate::sim::Sim`].
///
/// Serialized (the skipped parts excepted) as the `state` of the state file
/// ([`crate::persist`]); ordered collections keep that file's bytes the
/// same as long as nothing changed.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct State {
    /// What URLs in the state start with (rewritten when a state file is
    /// loaded by a simulator with another base URL).
    pub base_url: String,
    #[serde(with = "by_key")]
    pub accounts: BTreeMap<i64, Account>,
    /// Valid login token → user.
    pub tokens: BTreeMap<String, i64>,
    pub revoked: BTreeSet<String>,
    #[serde(with = "by_key")]
    pub chats: BTreeMap<ChatKey, Chat>,
    /// (sender, chat, cid) → message id, for idempotent sends.
    #[serde(with = "cid_table")]
    pub cids: CidTable,
    #[serde(with = "by_key")]
    pub uploads: BTreeMap<i64, Upload>,
    /// Photo upload token → upload id (rebuilt from `uploads`).
    #[serde(skip)]
    pub photo_tokens: HashMap<String, i64>,
    /// Short-lived token of AUTH_REQUEST (17) → user.
    #[serde(skip)]
    pub auth_tracks: HashMap<String, i64>,
    /// QR track id → approving user, once approved.
    #[serde(skip)]
    pub qr_tracks: HashMap<String, Option<i64>>,
    pub server_config: Map<String, Value>,
    #[serde(skip)]
    pub presence: Presence,
    /// Inline keyboard buttons pressed (118), oldest first: what a bot
    /// would be told.
    #[serde(skip)]
    pub callbacks: Vec<Callback>,
    /// Votes (304) by (message, voter): the answers chosen.
    #[serde(skip)]
    pub votes: BTreeMap<(i64, i64), Vec<i64>>,
    last_message_id: i64,
    next_group: i64,
    next_user: i64,
    next_media: i64,
}

/// A press of an inline keyboard button (118 MSG_SEND_CALLBACK).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Callback {
    /// Who pressed it.
    pub user: i64,
    /// The message whose keyboard it is.
    pub message_id: i64,
    pub callback_id: Value,
    pub payload: Option<String>,
}

/// (sender, chat, cid) → message id.
pub(crate) type CidTable = BTreeMap<(i64, ChatKey, i64), i64>;

/// Things stored in a map under a key they carry themselves; such maps are
/// serialized as the list of their values.
pub(crate) trait Keyed {
    type Key: Ord;
    fn key(&self) -> Self::Key;
}

impl Keyed for Account {
    type Key = i64;
    fn key(&self) -> i64 {
        self.id
    }
}

impl Keyed for Chat {
    type Key = ChatKey;
    fn key(&self) -> ChatKey {
        self.key
    }
}

impl Keyed for Upload {
    type Key = i64;
    fn key(&self) -> i64 {
        self.id
    }
}

/// `#[serde(with)]` for a `BTreeMap` of [`Keyed`] values: a JSON array.
mod by_key {
    use super::*;

    pub fn serialize<K, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.values())
    }

    pub fn deserialize<'de, V, D>(d: D) -> Result<BTreeMap<V::Key, V>, D::Error>
    where
        V: Keyed + Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let list = Vec::<V>::deserialize(d)?;
        let len = list.len();
        let map: BTreeMap<V::Key, V> = list.into_iter().map(|v| (v.key(), v)).collect();
        if map.len() != len {
            return Err(serde::de::Error::custom("duplicate key"));
        }
        Ok(map)
    }
}

/// `#[serde(with)]` for [`State::cids`]: `[{sender, chat, cid, messageId}]`.
mod cid_table {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        sender: i64,
        chat: ChatKey,
        cid: i64,
        message_id: i64,
    }

    pub fn serialize<S: Serializer>(map: &CidTable, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter().map(|(&(sender, chat, cid), &message_id)| Entry {
            sender,
            chat,
            cid,
            message_id,
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CidTable, D::Error> {
        Ok(Vec::<Entry>::deserialize(d)?
            .into_iter()
            .map(|e| ((e.sender, e.chat, e.cid), e.message_id))
            .collect())
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl State {
    pub fn new(base_url: String) -> State {
        State {
            base_url,
            presence: Presence {
                // Somebody who was never seen here was "last seen" a while
                // before the server started: a stable, plausible value.
                default_seen: now_ms() / 1000 - 600,
                ..Presence::default()
            },
            next_group: 70_000_000_000_100,
            next_user: 30_000_001,
            next_media: 40_000_001,
            ..State::default()
        }
    }

    pub fn load(&mut self, fixture: &Fixture) -> Result<(), FixtureError> {
        let bad = |m: String| FixtureError::Invalid(m);
        self.server_config = fixture.server_config.clone();
        for a in &fixture.accounts {
            if a.id <= 0 {
                return Err(bad(format!("account id {} must be positive", a.id)));
            }
            if self.accounts.contains_key(&a.id) {
                return Err(bad(format!("duplicate account {}", a.id)));
            }
            let avatar_url = match (&a.avatar_url, a.avatar) {
                (Some(url), _) => Some(url.clone()),
                (None, true) => Some(self.avatar_url('u', a.id)),
                (None, false) => None,
            };
            for t in &a.tokens {
                self.tokens.insert(t.clone(), a.id);
            }
            self.accounts.insert(
                a.id,
                Account {
                    id: a.id,
                    first_name: a.first_name.clone(),
                    last_name: a.last_name.clone(),
                    phone: a.phone,
                    sms_code: a.sms_code.clone(),
                    contacts: a.contacts.clone(),
                    options: a.options.clone(),
                    photo_id: a.photo_id,
                    avatar_url,
                    description: a.description.clone(),
                    link: a.link.clone(),
                    update_time: a.update_time.unwrap_or(1),
                    registration_time: a.update_time.unwrap_or(1),
                    rotate_on_login: false,
                    last_session: None,
                },
            );
            self.next_user = self.next_user.max(a.id + 1);
        }
        for c in &fixture.chats {
            for u in c.participants.keys().chain([&c.owner]) {
                if !self.accounts.contains_key(u) {
                    return Err(bad(format!("chat {}: unknown user {u}", c.id)));
                }
            }
            match c.kind {
                ChatKind::Dialog => {
                    let users: Vec<i64> = c.participants.keys().copied().collect();
                    if users.len() != 2 || users[0] ^ users[1] != c.id {
                        return Err(bad(format!(
                            "dialog {} must have two participants whose ids XOR to it",
                            c.id
                        )));
                    }
                }
                ChatKind::Chat | ChatKind::Channel => {
                    if c.id >= 0 {
                        return Err(bad(format!("group/channel id {} must be negative", c.id)));
                    }
                }
            }
            let mut messages = c
                .messages
                .iter()
                .map(Message::from_fixture)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("chat {}: {e}", c.id)))?;
            messages.sort_by_key(|m| m.id);
            if messages.windows(2).any(|w| w[0].id == w[1].id) {
                return Err(bad(format!("chat {}: duplicate message id", c.id)));
            }
            if let Some(last) = messages.last() {
                self.last_message_id = self.last_message_id.max(last.id);
            }
            let created = c
                .extra
                .get("created")
                .and_then(as_i64)
                .or(messages.first().map(|m| m.time))
                .unwrap_or(1);
            let icon_url = match (&c.icon_url, c.icon) {
                (Some(url), _) => Some(url.clone()),
                (None, true) => Some(self.avatar_url('c', c.id)),
                (None, false) => None,
            };
            let modified = messages.last().map(|m| m.time).unwrap_or(created);
            let key = ChatKey::Id(c.id);
            if self.chats.contains_key(&key) {
                return Err(bad(format!("duplicate chat {}", c.id)));
            }
            self.chats.insert(
                key,
                Chat {
                    key,
                    kind: c.kind,
                    title: c.title.clone(),
                    description: c.description.clone(),
                    owner: c.owner,
                    admins: c.admins.clone(),
                    participants: c.participants.clone(),
                    icon_url,
                    created,
                    modified,
                    messages,
                    extra: c.extra.clone(),
                    last_reaction: None,
                    pinned: None,
                },
            );
        }
        Ok(())
    }

    /// Make a state read from a state file usable by a server at
    /// `base_url`: URLs under the saved base URL are moved to the new one
    /// (the port of a restarted simulator may differ), derived indexes are
    /// rebuilt, uploads whose bytes survived count as processed, and
    /// everybody is offline.
    pub fn restored(mut self, base_url: String) -> State {
        let old = std::mem::replace(&mut self.base_url, base_url);
        if !old.is_empty() && old != self.base_url {
            let rebase = Rebase {
                old: &old,
                new: &self.base_url,
            };
            for a in self.accounts.values_mut() {
                rebase.opt(&mut a.avatar_url);
            }
            for c in self.chats.values_mut() {
                rebase.opt(&mut c.icon_url);
                rebase.map(&mut c.extra);
                for m in &mut c.messages {
                    m.attaches.iter_mut().for_each(|v| rebase.value(v));
                    if let Some(link) = &mut m.link {
                        rebase.value(link);
                    }
                    rebase.map(&mut m.extra);
                }
            }
        }
        self.photo_tokens = self
            .uploads
            .values()
            .filter(|u| u.kind == MediaKind::Photo)
            .map(|u| (u.token.clone(), u.id))
            .collect();
        for u in self.uploads.values_mut() {
            if u.data.is_some() {
                u.ready = true;
            }
        }
        self.auth_tracks.clear();
        self.qr_tracks.clear();
        self.presence = Presence {
            default_seen: now_ms() / 1000 - 600,
            ..Presence::default()
        };
        self
    }

    /// A URL of the simulator's generated PNG for a user (`u`) or chat (`c`).
    pub fn avatar_url(&self, kind: char, id: i64) -> String {
        format!("{}/i?r={kind}{id}", self.base_url)
    }

    /// `(now_ms << 16) | counter`, strictly increasing.
    pub fn next_message_id(&mut self, now: i64) -> i64 {
        let id = (now << 16).max(self.last_message_id + 1);
        self.last_message_id = id;
        id
    }

    pub fn next_group_id(&mut self) -> i64 {
        self.next_group += 1;
        -self.next_group
    }

    pub fn next_user_id(&mut self) -> i64 {
        while self.accounts.contains_key(&self.next_user) {
            self.next_user += 1;
        }
        self.next_user
    }

    pub fn next_media_id(&mut self) -> i64 {
        self.next_media += 1;
        self.next_media
    }

    /// Saved messages of `user`, created on first use.
    pub fn ensure_saved(&mut self, user: i64) -> ChatKey {
        let key = ChatKey::Saved(user);
        let created = self
            .accounts
            .get(&user)
            .map(|a| a.registration_time)
            .unwrap_or(1);
        self.chats.entry(key).or_insert_with(|| Chat {
            key,
            kind: ChatKind::Dialog,
            title: None,
            description: None,
            owner: user,
            admins: Vec::new(),
            participants: BTreeMap::from([(user, 0)]),
            icon_url: None,
            created,
            modified: created,
            messages: Vec::new(),
            extra: Map::new(),
            last_reaction: None,
            pinned: None,
        });
        key
    }

    /// The chat `user` means by wire id `chat_id`, if they are a member.
    /// [`State::member_chat`], or the protocol's `chat.not.found` error.
    pub fn require_member_chat(
        &mut self,
        user: i64,
        chat_id: i64,
    ) -> Result<ChatKey, crate::sim::ProtoError> {
        self.member_chat(user, chat_id)
            .ok_or_else(|| crate::sim::ProtoError::chat_not_found(chat_id))
    }

    /// [`require_member_chat`](Self::require_member_chat), with the chat
    /// itself, to change.
    pub fn require_member_chat_mut(
        &mut self,
        user: i64,
        chat_id: i64,
    ) -> Result<(ChatKey, &mut Chat), crate::sim::ProtoError> {
        let key = self.require_member_chat(user, chat_id)?;
        let chat = self
            .chats
            .get_mut(&key)
            .ok_or_else(|| crate::sim::ProtoError::chat_not_found(chat_id))?;
        Ok((key, chat))
    }

    pub fn member_chat(&mut self, user: i64, chat_id: i64) -> Option<ChatKey> {
        if chat_id == 0 {
            return Some(self.ensure_saved(user));
        }
        let key = ChatKey::Id(chat_id);
        self.chats
            .get(&key)
            .filter(|c| c.is_member(user))
            .map(|c| c.key)
    }

    /// Every chat `user` belongs to, Saved messages included.
    pub fn chats_of(&mut self, user: i64) -> Vec<ChatKey> {
        self.ensure_saved(user);
        self.chats
            .values()
            .filter(|c| match c.key {
                ChatKey::Saved(owner) => owner == user,
                ChatKey::Id(_) => c.is_member(user),
            })
            .map(|c| c.key)
            .collect()
    }

    pub fn user_json(&self, id: i64) -> Option<Value> {
        self.accounts.get(&id).map(Account::to_json)
    }

    pub fn find_by_phone(&self, phone: &str) -> Option<i64> {
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        let n: i64 = digits.parse().ok()?;
        self.accounts
            .values()
            .find(|a| a.phone == Some(n))
            .map(|a| a.id)
    }

    /// The wire presence (`{seen, status?}`, `seen` in seconds like the
    /// captured LOGIN answer) of `user` as last announced.
    pub fn presence_json(&self, user: i64) -> Value {
        let seen = self
            .presence
            .seen
            .get(&user)
            .copied()
            .unwrap_or(self.presence.default_seen);
        if self.presence.online.contains(&user) {
            json!({"seen": seen, "status": 1})
        } else {
            json!({"seen": seen})
        }
    }

    /// Accounts told about `user`'s presence changes: those that have
    /// them as a contact or share a chat with them (never `user`).
    pub fn presence_watchers(&self, user: i64) -> BTreeSet<i64> {
        let mut watchers: BTreeSet<i64> = self
            .accounts
            .values()
            .filter(|a| a.contacts.contains(&user))
            .map(|a| a.id)
            .collect();
        for chat in self.chats.values() {
            if matches!(chat.key, ChatKey::Id(_)) && chat.is_member(user) {
                watchers.extend(chat.participants.keys().copied());
            }
        }
        watchers.remove(&user);
        watchers
    }

    pub fn tokens_of(&self, user: i64) -> Vec<String> {
        let mut t: Vec<String> = self
            .tokens
            .iter()
            .filter(|(_, u)| **u == user)
            .map(|(t, _)| t.clone())
            .collect();
        t.sort();
        t
    }
}

/// Moves URLs from one base URL to another.
struct Rebase<'a> {
    old: &'a str,
    new: &'a str,
}

impl Rebase<'_> {
    fn string(&self, s: &mut String) {
        if let Some(rest) = s.strip_prefix(self.old)
            && (rest.is_empty() || rest.starts_with(['/', '?', '#']))
        {
            *s = format!("{}{rest}", self.new);
        }
    }

    fn opt(&self, s: &mut Option<String>) {
        if let Some(s) = s {
            self.string(s);
        }
    }

    fn map(&self, m: &mut Map<String, Value>) {
        m.values_mut().for_each(|v| self.value(v));
    }

    fn value(&self, v: &mut Value) {
        match v {
            Value::String(s) => self.string(s),
            Value::Array(a) => a.iter_mut().for_each(|v| self.value(v)),
            Value::Object(m) => self.map(m),
            _ => {}
        }
    }
}

/// A random URL-safe secret of `len` characters.
pub(crate) fn random_token(prefix: &str, len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    for _ in 0..len {
        s.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    s
}
