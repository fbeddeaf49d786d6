//! The in-process control API: inspect state, act as any account, and
//! inject faults. The HTTP control API under `/_sim/` and the `maxsim ctl`
//! CLI are thin layers over this.

use crate::fixture::ChatKind;
use crate::hub::Out;
use crate::model::{Account, ChatKey, MediaKind, Message, now_ms, random_token};
use crate::sim::{Actor, ProtoError, SendRequest, Sim};
use bytes::Bytes;
use maxproto::{Cmd, Frame, Opcode, WireMessage};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Why a control operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The simulated server refused it with this protocol error.
    #[error("{key}: {message}")]
    Rejected { key: String, message: String },
    #[error("unknown account {0}")]
    UnknownAccount(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

impl From<ProtoError> for ControlError {
    fn from(e: ProtoError) -> Self {
        ControlError::Rejected {
            key: e.key,
            message: e.message,
        }
    }
}

/// An account as listed by [`Control::accounts`] — secrets included, this
/// is a test tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountInfo {
    pub id: i64,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<i64>,
    pub sms_code: Option<String>,
    /// Currently valid login tokens.
    pub tokens: Vec<String>,
    pub contacts: Vec<i64>,
    pub avatar_url: Option<String>,
    pub connections: usize,
}

/// A chat as the server stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatInfo {
    /// Wire id (0 for Saved messages).
    pub id: i64,
    pub kind: ChatKind,
    pub title: Option<String>,
    pub description: Option<String>,
    /// The pinned message's id.
    pub pinned: Option<i64>,
    pub owner: i64,
    pub admins: Vec<i64>,
    /// Member → read mark (ms).
    pub participants: BTreeMap<i64, i64>,
    pub icon_url: Option<String>,
}

/// A message as the server stores it (removed ones included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimMessage {
    /// Wire chat id (0 for Saved messages).
    pub chat_id: i64,
    /// For Saved messages: whose. Otherwise `None`.
    pub saved_of: Option<i64>,
    pub id: i64,
    pub time: i64,
    pub sender: Option<i64>,
    pub cid: Option<i64>,
    pub text: String,
    pub elements: Vec<Value>,
    pub attaches: Vec<Value>,
    pub link: Option<Value>,
    /// `None`, `"EDITED"` or `"REMOVED"`.
    pub status: Option<String>,
    pub update_time: Option<i64>,
    /// user → reaction.
    pub reactions: BTreeMap<i64, String>,
    /// Users who deleted it for themselves.
    pub hidden_for: Vec<i64>,
}

impl SimMessage {
    fn new(key: ChatKey, m: &Message) -> SimMessage {
        SimMessage {
            chat_id: key.wire_id(),
            saved_of: match key {
                ChatKey::Saved(u) => Some(u),
                ChatKey::Id(_) => None,
            },
            id: m.id,
            time: m.time,
            sender: m.sender,
            cid: m.cid,
            text: m.text.clone(),
            elements: m.elements.clone(),
            attaches: m.attaches.clone(),
            link: m.link.clone(),
            status: m.status.as_ref().map(|s| s.as_str().to_owned()),
            update_time: m.update_time,
            reactions: m.reactions.iter().cloned().collect(),
            hidden_for: m.hidden_for.iter().copied().collect(),
        }
    }
}

/// A new account for [`Control::create_account`]. Missing id, token and
/// code are generated.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewAccount {
    #[serde(default)]
    pub id: Option<i64>,
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub phone: Option<i64>,
    #[serde(default)]
    pub sms_code: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub contacts: Vec<i64>,
}

/// A message to send as some account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outgoing {
    #[serde(default)]
    pub text: String,
    /// Formatting elements (`{type, from, length, attributes?}`).
    #[serde(default)]
    pub elements: Vec<Value>,
    /// Attaches in their outgoing form, e.g. what [`Control::upload`]
    /// returns, `{"_type":"STICKER","stickerId":1}` or a CONTROL attach.
    #[serde(default)]
    pub attaches: Vec<Value>,
    /// Reply to this message of the same chat.
    #[serde(default)]
    pub reply_to: Option<i64>,
    /// Forward this `(chat id, message id)`.
    #[serde(default)]
    pub forward: Option<(i64, i64)>,
    /// Client id; defaults to the current time in ms.
    #[serde(default)]
    pub cid: Option<i64>,
}

impl Outgoing {
    pub fn text(text: impl Into<String>) -> Outgoing {
        Outgoing {
            text: text.into(),
            ..Outgoing::default()
        }
    }
}

/// Kind of upload for [`Control::upload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadKind {
    Photo,
    Video,
    File,
}

/// What a session sent in SESSION_INIT (6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub user_agent: Value,
    pub device_id: Option<String>,
}

/// A frame to inject with [`Control::push_raw`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum RawPush {
    /// A frame with exactly this cmd/seq/opcode/payload, in the
    /// connection's wire format.
    Frame {
        #[serde(default)]
        cmd: u8,
        seq: u64,
        opcode: u16,
        #[serde(default)]
        payload: Value,
    },
    /// A text WebSocket message with this content (may be malformed).
    Text { text: String },
    /// A binary WebSocket message with these bytes.
    Binary { bytes: Vec<u8> },
}

/// Handle to a running simulator's controls. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    pub(crate) sim: Arc<Sim>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control")
    }
}

fn actor(user: i64) -> Actor {
    Actor { user, conn: None }
}

impl Control {
    fn account_info(&self, a: &Account, tokens: Vec<String>) -> AccountInfo {
        AccountInfo {
            id: a.id,
            first_name: a.first_name.clone(),
            last_name: a.last_name.clone(),
            phone: a.phone,
            sms_code: a.sms_code.clone(),
            tokens,
            contacts: a.contacts.clone(),
            avatar_url: a.avatar_url.clone(),
            connections: self.sim.hub.of_user(a.id).len(),
        }
    }

    fn require_account(&self, id: i64) -> Result<(), ControlError> {
        if self.sim.state().accounts.contains_key(&id) {
            Ok(())
        } else {
            Err(ControlError::UnknownAccount(id))
        }
    }

    // ------------------------------------------------------------- reading

    /// Every account with its tokens and SMS code.
    pub fn accounts(&self) -> Vec<AccountInfo> {
        let st = self.sim.state();
        st.accounts
            .values()
            .map(|a| self.account_info(a, st.tokens_of(a.id)))
            .collect()
    }

    pub fn account(&self, id: i64) -> Option<AccountInfo> {
        let st = self.sim.state();
        st.accounts
            .get(&id)
            .map(|a| self.account_info(a, st.tokens_of(id)))
    }

    /// Chats `account` is a member of (Saved messages included).
    pub fn chats(&self, account: i64) -> Result<Vec<ChatInfo>, ControlError> {
        self.require_account(account)?;
        let mut st = self.sim.state();
        let keys = st.chats_of(account);
        Ok(keys
            .iter()
            .map(|k| {
                let c = &st.chats[k];
                ChatInfo {
                    id: k.wire_id(),
                    kind: c.kind,
                    title: c.title.clone(),
                    description: c.description.clone(),
                    pinned: c.pinned,
                    owner: c.owner,
                    admins: c.admins.clone(),
                    participants: c.participants.clone(),
                    icon_url: c.icon_url.clone(),
                }
            })
            .collect())
    }

    /// Messages of a chat as stored, oldest first (removed ones included).
    /// `account` must be a member; it selects whose Saved messages chat 0 is.
    pub fn messages(&self, account: i64, chat_id: i64) -> Result<Vec<SimMessage>, ControlError> {
        self.require_account(account)?;
        let mut st = self.sim.state();
        let key = st
            .member_chat(account, chat_id)
            .ok_or_else(|| ControlError::from(ProtoError::chat_not_found(chat_id)))?;
        Ok(st.chats[&key]
            .messages
            .iter()
            .map(|m| SimMessage::new(key, m))
            .collect())
    }

    /// One message by id, in any chat.
    pub fn message(&self, message_id: i64) -> Option<SimMessage> {
        let st = self.sim.state();
        st.chats
            .values()
            .find_map(|c| c.find(message_id).map(|m| SimMessage::new(c.key, m)))
    }

    /// Wait until some stored message (in any chat) matches `pred`; the
    /// first match in chat then id order is returned.
    pub async fn wait_for_message(
        &self,
        timeout: Duration,
        pred: impl Fn(&SimMessage) -> bool,
    ) -> Result<SimMessage, ControlError> {
        self.wait_until(timeout, "a matching message", || {
            let st = self.sim.state();
            st.chats.values().find_map(|c| {
                c.messages
                    .iter()
                    .map(|m| SimMessage::new(c.key, m))
                    .find(|m| pred(m))
            })
        })
        .await
    }

    /// Live logged-in connections of `account`.
    pub fn connection_count(&self, account: i64) -> usize {
        self.sim.hub.of_user(account).len()
    }

    /// Wait until `account` has exactly `count` logged-in connections.
    pub async fn wait_for_connections(
        &self,
        account: i64,
        count: usize,
        timeout: Duration,
    ) -> Result<(), ControlError> {
        self.wait_until(timeout, "connections", || {
            (self.connection_count(account) == count).then_some(())
        })
        .await
    }

    /// What the last session that logged in as `account` sent in
    /// SESSION_INIT.
    pub fn last_session(&self, account: i64) -> Option<SessionInfo> {
        let st = self.sim.state();
        st.accounts
            .get(&account)?
            .last_session
            .clone()
            .map(|(user_agent, device_id)| SessionInfo {
                user_agent,
                device_id,
            })
    }

    async fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut() -> Option<T>,
    ) -> Result<T, ControlError> {
        let mut changes = self.sim.subscribe_changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if let Some(v) = check() {
                return Ok(v);
            }
            // Poll at least every 50 ms in case a change is not signalled.
            let tick = tokio::time::Instant::now() + Duration::from_millis(50);
            if tokio::time::Instant::now() >= deadline {
                return Err(ControlError::Timeout(what.to_owned()));
            }
            let _ = tokio::time::timeout_at(tick.min(deadline), changes.changed()).await;
        }
    }

    // ------------------------------------------------------------ creating

    pub fn create_account(&self, new: NewAccount) -> Result<AccountInfo, ControlError> {
        let mut st = self.sim.state();
        let id = match new.id {
            Some(id) if id <= 0 => return Err(ControlError::Invalid("ids are positive".into())),
            Some(id) if st.accounts.contains_key(&id) => {
                return Err(ControlError::Invalid(format!("account {id} exists")));
            }
            Some(id) => id,
            None => st.next_user_id(),
        };
        if let Some(phone) = new.phone
            && st.accounts.values().any(|a| a.phone == Some(phone))
        {
            return Err(ControlError::Invalid(format!("phone {phone} is taken")));
        }
        let token = new.token.unwrap_or_else(|| random_token("sim-", 40));
        st.tokens.insert(token.clone(), id);
        let now = now_ms();
        let avatar_url = Some(st.avatar_url('u', id));
        let account = Account {
            id,
            first_name: new.first_name,
            last_name: new.last_name,
            phone: new.phone,
            sms_code: Some(
                new.sms_code
                    .unwrap_or_else(|| format!("{:06}", id % 1_000_000)),
            ),
            contacts: new.contacts,
            options: vec!["TT".into(), "ONEME".into()],
            photo_id: Some(id),
            avatar_url,
            description: None,
            link: None,
            update_time: now,
            registration_time: now,
            rotate_on_login: false,
            last_session: None,
        };
        let info = self.account_info(&account, vec![token]);
        st.accounts.insert(id, account);
        drop(st);
        self.sim.changed();
        Ok(AccountInfo {
            tokens: self.sim.state().tokens_of(id),
            ..info
        })
    }

    /// Create a dialog (exactly one other member), group or channel owned
    /// by `owner`; members get 135 (and, for groups, the CONTROL message).
    /// Returns the chat id.
    pub fn create_chat(
        &self,
        owner: i64,
        kind: ChatKind,
        title: &str,
        members: &[i64],
    ) -> Result<i64, ControlError> {
        self.require_account(owner)?;
        Ok(self.sim.create_chat(owner, kind, title, members)?)
    }

    // -------------------------------------------------------------- acting

    /// Add (`add`) or remove members of a group or channel as its admin
    /// `account`, exactly as CHAT_MEMBERS_UPDATE (77) would: members get 135
    /// and a CONTROL service message.
    pub fn members_update(
        &self,
        account: i64,
        chat_id: i64,
        users: &[i64],
        add: bool,
    ) -> Result<(), ControlError> {
        self.require_account(account)?;
        Ok(self
            .sim
            .members_update(actor(account), chat_id, users, add)?)
    }

    /// Pin a message of a group or channel (`None`: unpin) as its admin
    /// `account`: members get 135 with `pinnedMessage`.
    pub fn pin(
        &self,
        account: i64,
        chat_id: i64,
        message_id: Option<i64>,
    ) -> Result<(), ControlError> {
        self.require_account(account)?;
        Ok(self.sim.pin(actor(account), chat_id, message_id)?)
    }

    /// Rename a group or channel and/or change its description as its admin
    /// `account`: members get 135, and a new title a CONTROL message.
    pub fn update_chat(
        &self,
        account: i64,
        chat_id: i64,
        title: Option<&str>,
        description: Option<&str>,
    ) -> Result<(), ControlError> {
        self.require_account(account)?;
        Ok(self
            .sim
            .update_chat(actor(account), chat_id, title, description)?)
    }

    /// Send as `account`, exactly as MSG_SEND (64) would; every session of
    /// every member (the sender's included) gets the 128 push.
    pub fn send(
        &self,
        account: i64,
        chat_id: i64,
        msg: Outgoing,
    ) -> Result<SimMessage, ControlError> {
        self.require_account(account)?;
        let link = match (msg.reply_to, msg.forward) {
            (Some(id), _) => Some(json!({"type": "REPLY", "messageId": id})),
            (None, Some((chat, id))) => {
                Some(json!({"type": "FORWARD", "messageId": id, "chatId": chat}))
            }
            (None, None) => None,
        };
        let sent = self.sim.send(
            actor(account),
            SendRequest {
                chat_id: Some(chat_id),
                user_id: None,
                text: msg.text,
                cid: Some(msg.cid.unwrap_or_else(|| self.sim.next_cid())),
                elements: msg.elements,
                attaches: msg.attaches,
                link,
            },
        )?;
        self.stored(sent.key, sent.message_id)
    }

    fn stored(&self, key: ChatKey, id: i64) -> Result<SimMessage, ControlError> {
        let st = self.sim.state();
        st.chats
            .get(&key)
            .and_then(|c| c.find(id))
            .map(|m| SimMessage::new(key, m))
            .ok_or_else(|| ControlError::Invalid("message vanished".into()))
    }

    /// Edit a message of `account` (text, and elements if given).
    pub fn edit(
        &self,
        account: i64,
        chat_id: i64,
        message_id: i64,
        text: &str,
        elements: Option<Vec<Value>>,
    ) -> Result<SimMessage, ControlError> {
        self.require_account(account)?;
        self.sim.edit(
            actor(account),
            chat_id,
            message_id,
            Some(text.to_owned()),
            Some(elements.unwrap_or_default()),
            None,
        )?;
        self.message(message_id)
            .ok_or_else(|| ControlError::Invalid("message vanished".into()))
    }

    pub fn delete(
        &self,
        account: i64,
        chat_id: i64,
        message_ids: &[i64],
        for_me: bool,
    ) -> Result<(), ControlError> {
        self.require_account(account)?;
        Ok(self
            .sim
            .delete(actor(account), chat_id, message_ids, for_me)?)
    }

    /// Set (`Some`) or remove (`None`) `account`'s reaction.
    pub fn react(
        &self,
        account: i64,
        chat_id: i64,
        message_id: i64,
        reaction: Option<&str>,
    ) -> Result<Value, ControlError> {
        self.require_account(account)?;
        Ok(self
            .sim
            .react(actor(account), chat_id, message_id, reaction)?)
    }

    pub fn typing(&self, account: i64, chat_id: i64) -> Result<(), ControlError> {
        self.require_account(account)?;
        Ok(self.sim.typing(actor(account), chat_id, Some("TEXT"))?)
    }

    /// Make `account` online (`true`: held online until released, with or
    /// without connections) or offline (`false`: released, and its
    /// connections count as not looked at until their next interactive
    /// PING). Watchers get 132 NOTIF_PRESENCE when this changes the state.
    pub fn set_presence(&self, account: i64, online: bool) -> Result<(), ControlError> {
        self.require_account(account)?;
        self.sim.set_presence(account, online);
        Ok(())
    }

    /// Inline keyboard buttons pressed so far (118), oldest first.
    pub fn callbacks(&self) -> Vec<crate::Callback> {
        self.sim.state().callbacks.clone()
    }

    /// Whether `account` is currently shown online.
    pub fn is_online(&self, account: i64) -> bool {
        self.sim.is_online(account)
    }

    /// Mark `chat_id` read up to `message_id` as `account` (130 to others).
    pub fn mark_read(
        &self,
        account: i64,
        chat_id: i64,
        message_id: i64,
    ) -> Result<(), ControlError> {
        self.require_account(account)?;
        self.sim
            .mark(actor(account), chat_id, Some(message_id), None, false)?;
        Ok(())
    }

    /// Upload media as `account`; the upload is ready at once. Returns the
    /// outgoing attach to put in [`Outgoing::attaches`].
    pub fn upload(
        &self,
        account: i64,
        kind: UploadKind,
        name: &str,
        content_type: &str,
        data: impl Into<Bytes>,
    ) -> Result<Value, ControlError> {
        self.require_account(account)?;
        let media = match kind {
            UploadKind::Photo => MediaKind::Photo,
            UploadKind::Video => MediaKind::Video,
            UploadKind::File => MediaKind::File,
        };
        let (id, token) = self.sim.new_upload(account, media);
        self.sim.store_upload(
            id,
            &token,
            data.into(),
            name.to_owned(),
            content_type.to_owned(),
        );
        if let Some(u) = self.sim.state().uploads.get_mut(&id) {
            u.ready = true;
        }
        self.sim.changed();
        Ok(match kind {
            UploadKind::Photo => json!({"_type": "PHOTO", "photoToken": token}),
            UploadKind::Video => json!({"_type": "VIDEO", "videoId": id, "token": token}),
            UploadKind::File => json!({"_type": "FILE", "fileId": id}),
        })
    }

    /// The bytes and content type of an upload (photo, video or file id).
    pub fn media(&self, id: i64) -> Option<(Bytes, String)> {
        let u = self.sim.upload(id)?;
        Some((u.data?, u.content_type))
    }

    /// Approve a QR login (the `trackId`, or the `qrLink` containing it) as
    /// `account`.
    pub fn approve_qr(&self, track_or_link: &str, account: i64) -> Result<(), ControlError> {
        self.require_account(account)?;
        let track = track_or_link
            .rsplit("token=")
            .next()
            .unwrap_or(track_or_link);
        let mut st = self.sim.state();
        match st.qr_tracks.get_mut(track) {
            Some(slot) => {
                *slot = Some(account);
                Ok(())
            }
            None => Err(ControlError::Invalid("unknown QR track".into())),
        }
    }

    // -------------------------------------------------------------- faults

    /// Abruptly drop (no close frame; the peer sees 1006) every connection
    /// of `account`, or all connections. Returns how many.
    pub fn drop_connections(&self, account: Option<i64>) -> usize {
        let conns = match account {
            Some(a) => self.sim.hub.of_user(a),
            None => self.sim.hub.all(),
        };
        for c in &conns {
            c.send(Out::Abort);
            c.kill();
        }
        conns.len()
    }

    /// Delay answers to `opcode` (or to everything when `None`); a zero or
    /// `None` delay removes it.
    pub fn set_delay(&self, opcode: Option<u16>, delay: Option<Duration>) {
        let mut f = self.sim.faults();
        match opcode {
            Some(op) => match delay {
                Some(d) if !d.is_zero() => {
                    f.delay_op.insert(op, d);
                }
                _ => {
                    f.delay_op.remove(&op);
                }
            },
            None => f.delay_all = delay.filter(|d| !d.is_zero()),
        }
    }

    /// Answer every LOGIN with this error key (`None` to stop).
    pub fn refuse_logins(&self, error: Option<&str>) {
        self.sim.faults().refuse_logins = error.map(str::to_owned);
    }

    /// Answer LOGIN, AUTH_REQUEST and AUTH with `error.limit.violate`.
    pub fn rate_limit_logins(&self, on: bool) {
        self.sim.faults().rate_limit_logins = on;
    }

    /// Revoke a token: live connections using it are closed and LOGIN with
    /// it fails with `login.token` "FAIL_LOGIN_TOKEN". Returns how many
    /// connections were closed.
    pub fn revoke_token(&self, token: &str) -> usize {
        self.sim.revoke(token, None)
    }

    /// Revoke every token of `account`.
    pub fn revoke_tokens(&self, account: i64) -> usize {
        let tokens = self.sim.state().tokens_of(account);
        tokens.iter().map(|t| self.sim.revoke(t, None)).sum()
    }

    /// The next LOGIN of `account` answers with a new token (the old one
    /// stays valid).
    pub fn rotate_token_on_next_login(&self, account: i64) -> Result<(), ControlError> {
        let mut st = self.sim.state();
        let a = st
            .accounts
            .get_mut(&account)
            .ok_or(ControlError::UnknownAccount(account))?;
        a.rotate_on_login = true;
        drop(st);
        self.sim.changed();
        Ok(())
    }

    /// Answer every request with `opcode` with this error key (`None` to
    /// stop).
    pub fn fail_opcode(&self, opcode: u16, error: Option<&str>) {
        let mut f = self.sim.faults();
        match error {
            Some(e) => {
                f.fail_opcode.insert(opcode, e.to_owned());
            }
            None => {
                f.fail_opcode.remove(&opcode);
            }
        }
    }

    /// Whether the sending connection also gets the 128 of its own send.
    pub fn set_echo_to_sender(&self, on: bool) {
        self.sim.faults().echo_to_sender = on;
    }

    /// Hold NOTIF_ATTACH (136) of HTTP uploads until released; releasing
    /// fires every held one.
    pub fn hold_attach_ready(&self, hold: bool) {
        let held = {
            let mut f = self.sim.faults();
            f.hold_attach = hold;
            if hold {
                Vec::new()
            } else {
                std::mem::take(&mut f.held)
            }
        };
        for id in held {
            self.sim.finish_upload(id);
        }
    }

    pub fn set_attach_ready_delay(&self, delay: Duration) {
        self.sim.faults().attach_delay = delay;
    }

    /// Push RECONNECT (3) to every connection of `account`.
    pub fn send_reconnect(&self, account: i64) -> usize {
        self.push(account, Opcode::RECONNECT, json!({}))
    }

    /// Push an opcode no client knows (default 399) to `account`.
    pub fn send_unknown_push(&self, account: i64, opcode: Option<u16>) -> usize {
        self.push(
            account,
            Opcode(opcode.unwrap_or(399)),
            json!({"simulated": true}),
        )
    }

    /// Push any opcode/payload (with the connection's next push seq).
    pub fn push(&self, account: i64, opcode: Opcode, payload: Value) -> usize {
        let conns = self.sim.hub.of_user(account);
        for c in &conns {
            c.push(opcode, payload.clone());
        }
        conns.len()
    }

    /// Send a raw frame or raw bytes to every connection of `account`.
    pub fn push_raw(&self, account: i64, raw: RawPush) -> usize {
        let conns = self.sim.hub.of_user(account);
        for c in &conns {
            let out = match &raw {
                RawPush::Frame {
                    cmd,
                    seq,
                    opcode,
                    payload,
                } => Out::Exact(Frame {
                    ver: maxproto::frame::VER_JSON,
                    cmd: Cmd::from_u8(*cmd),
                    seq: *seq,
                    opcode: Opcode(*opcode),
                    payload: payload.clone(),
                }),
                RawPush::Text { text } => Out::Raw(WireMessage::Text(text.clone())),
                RawPush::Binary { bytes } => Out::Raw(WireMessage::Binary(bytes.clone())),
            };
            c.send(out);
        }
        conns.len()
    }
}
