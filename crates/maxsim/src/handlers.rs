//! Request handling: the connection state machine (§A.3) and one handler
//! per supported opcode, answering with the spec's payload shapes.

use crate::fixture::ChatKind;
use crate::hub::{Conn, Phase};
use crate::model::{ChatKey, MediaKind, State, as_i64, now_ms, random_token};
use crate::sim::{
    Actor, EDIT_TIMEOUT_S, MAX_MSG_LENGTH, ProtoError, REACTIONS_MAX, REACTIONS_MENU, SendRequest,
    Sim,
};
use maxproto::{Frame, Opcode};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// What to do after answering.
#[derive(Debug)]
pub(crate) enum Answer {
    Ok(Value),
    /// Answer, then close the connection normally (LOGOUT).
    OkThenClose(Value),
}

/// Opcodes valid between SESSION_INIT and LOGIN.
const PRE_LOGIN: [u16; 12] = [1, 5, 6, 17, 18, 19, 23, 115, 224, 288, 289, 291];

type HResult = Result<Answer, ProtoError>;

fn ok(v: Value) -> HResult {
    Ok(Answer::Ok(v))
}

/// Handle one request (cmd 0) from `conn`.
pub(crate) fn handle(sim: &Arc<Sim>, conn: &Arc<Conn>, frame: &Frame) -> HResult {
    let op = frame.opcode;
    if let Some(key) = sim.faults().fail_opcode.get(&op.0).cloned() {
        return Err(ProtoError::new(
            &key,
            format!("Injected failure of opcode {}", op.0),
        ));
    }
    if op.name().is_none() || op.is_push_only() || op == Opcode::RECONNECT {
        return Err(ProtoError::new(
            "proto.opcode",
            format!("Unknown opcode {}", op.0),
        ));
    }
    let phase = conn.session().phase;
    match phase {
        Phase::Fresh if op != Opcode::SESSION_INIT => {
            return Err(ProtoError::new("proto.state", "Session is not initialized"));
        }
        Phase::Initialized if !PRE_LOGIN.contains(&op.0) => {
            return Err(ProtoError::new("proto.state", "Not logged in"));
        }
        _ => {}
    }
    let p = &frame.payload;
    let user = match phase {
        Phase::LoggedIn(u) => u,
        _ => 0,
    };
    let actor = Actor {
        user,
        conn: Some(conn.id),
    };
    match op.0 {
        1 => {
            let interactive = {
                let mut s = conn.session();
                if let Some(i) = p.get("interactive").and_then(Value::as_bool) {
                    s.interactive = i;
                }
                s.interactive
            };
            if let Phase::LoggedIn(u) = phase {
                sim.refresh_presence(u, interactive);
            }
            ok(Value::Null)
        }
        5 => ok(json!({})),
        6 => session_init(sim, conn, p),
        17 => auth_request(sim, p),
        18 => auth_check(sim, p),
        19 => login(sim, conn, p),
        20 => logout(sim, conn),
        23 => Err(ProtoError::new("login.token", "Invalid token")),
        115 => Err(ProtoError::new("track.not.found", "Track not found")),
        224 => ok(json!({"link": format!("{}/captcha", sim.state().base_url)})),
        288 => qr_request(sim),
        289 => qr_status(sim, p),
        291 => qr_login(sim, p),
        16 => profile_update(sim, user, p),
        22 => ok(json!({"hash": config_hash()})),
        27 => ok(json!({"sync": now_ms(), "sections": [], "stickersOrder": []})),
        28 => ok(json!({"stickerSets": [], "stickers": []})),
        32 => contact_info(sim, p),
        34 => contact_update(sim, user, p),
        35 => presence(sim, p),
        46 => contact_by_phone(sim, p),
        48 => chat_info(sim, user, p),
        49 => history(sim, user, p),
        50 => {
            let chat_id = req_i64(p, "chatId")?;
            let set_unread = p.get("type").and_then(Value::as_str) == Some("SET_AS_UNREAD");
            let mark = opt_i64(p, "mark")?;
            let message_id = opt_i64(p, "messageId")?;
            ok(sim.mark(actor, chat_id, message_id, mark, set_unread)?)
        }
        51 => chat_media(sim, user, p),
        53 => chats_list(sim, user, p),
        55 => {
            // Title ("theme"), description and pins; the other variants
            // (settings, links, ownership) are not simulated.
            let chat_id = req_i64(p, "chatId")?;
            if let Some(pin) = opt_i64(p, "pinMessageId")? {
                sim.pin(actor, chat_id, Some(pin).filter(|id| *id != 0))?;
                return ok(json!({"chat": chat_json(sim, user, chat_id)?}));
            }
            let text = |name| p.get(name).and_then(Value::as_str);
            let (title, description) = (text("theme"), text("description"));
            if title.is_none() && description.is_none() {
                return Err(ProtoError::payload("Nothing to update"));
            }
            sim.update_chat(actor, chat_id, title, description)?;
            ok(json!({"chat": chat_json(sim, user, chat_id)?}))
        }
        59 => members(sim, user, p),
        64 => msg_send(sim, actor, p),
        65 => {
            let chat_id = req_i64(p, "chatId")?;
            sim.typing(actor, chat_id, p.get("type").and_then(Value::as_str))?;
            ok(json!({}))
        }
        66 => {
            let chat_id = req_i64(p, "chatId")?;
            let ids = req_ids(p, "messageIds")?;
            let for_me = p.get("forMe").and_then(Value::as_bool).unwrap_or(false);
            sim.delete(actor, chat_id, &ids, for_me)?;
            ok(json!({}))
        }
        67 => {
            let chat_id = req_i64(p, "chatId")?;
            let message_id = req_i64(p, "messageId")?;
            let text = match p.get("text") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(ProtoError::payload("Expected string at text")),
            };
            let elements = opt_array(p, "elements")?;
            let attaches = opt_array(p, "attachments")?;
            ok(sim.edit(actor, chat_id, message_id, text, elements, attaches)?)
        }
        71 => msg_get(sim, user, p),
        118 => press_button(sim, user, p),
        304 => vote(sim, user, p),
        73 => msg_search(sim, user, p),
        75 => {
            req_i64(p, "chatId")?;
            ok(Value::Null)
        }
        77 => {
            let chat_id = req_i64(p, "chatId")?;
            let ids = req_ids(p, "userIds")?;
            let op = req_str(p, "operation")?;
            let add = match op {
                "add" => true,
                "remove" => false,
                _ => return Err(ProtoError::payload("Unknown operation")),
            };
            if p.get("type").and_then(Value::as_str).is_some() {
                // Admin rights and join requests are not simulated; accept.
                return ok(json!({"chat": chat_json(sim, user, chat_id)?}));
            }
            sim.members_update(actor, chat_id, &ids, add)?;
            ok(json!({"chat": chat_json(sim, user, chat_id)?}))
        }
        80 => {
            let (id, token) = sim.new_upload(user, MediaKind::Photo);
            let base = sim.state().base_url.clone();
            ok(json!({"url": format!("{base}/upload/photo?apiToken={token}&photoIds={id}")}))
        }
        82 => {
            let (id, token) = sim.new_upload(user, MediaKind::Video);
            let base = sim.state().base_url.clone();
            ok(
                json!({"info": [{"url": format!("{base}/upload/video?id={id}&sig={token}"), "videoId": id, "token": token}]}),
            )
        }
        87 => {
            let (id, token) = sim.new_upload(user, MediaKind::File);
            let base = sim.state().base_url.clone();
            ok(
                json!({"info": [{"url": format!("{base}/upload/file?id={id}&sig={token}"), "fileId": id, "token": token}]}),
            )
        }
        83 => {
            let id = req_i64(p, "videoId")?;
            let (url, _) = download_url(sim, id, MediaKind::Video)?;
            ok(json!({"MP4_720": url, "EXTERNAL": url, "cache": true}))
        }
        88 => {
            let id = req_i64(p, "fileId")?;
            let (url, name) = download_url(sim, id, MediaKind::File)?;
            let unsafe_file = name
                .rsplit('.')
                .next()
                .is_some_and(|e| e.eq_ignore_ascii_case("exe"));
            ok(json!({"url": url, "unsafe": unsafe_file}))
        }
        96 => sessions(sim, conn, user),
        163 => ok(json!({"callHistoryItems": [], "callHistorySync": now_ms(), "reset": false})),
        178 => {
            let chat_id = req_i64(p, "chatId")?;
            let message_id = req_i64(p, "messageId")?;
            let reaction = match p.get("reaction") {
                Some(Value::Object(r)) => r
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ProtoError::missing("reaction.id"))?,
                Some(_) => return Err(ProtoError::payload("Expected map at reaction")),
                None => return Err(ProtoError::missing("reaction")),
            };
            let info = sim.react(actor, chat_id, message_id, Some(reaction))?;
            ok(json!({"reactionInfo": info}))
        }
        179 => {
            let chat_id = req_i64(p, "chatId")?;
            let message_id = req_i64(p, "messageId")?;
            let info = sim.react(actor, chat_id, message_id, None)?;
            ok(json!({"reactionInfo": info}))
        }
        180 => reactions_bulk(sim, user, p),
        181 => reactions_detailed(sim, user, p),
        198 => common_chats(sim, user, p),
        208 | 209 => ok(json!({})),
        272 => ok(
            json!({"folders": [], "foldersOrder": [], "folderSync": now_ms(), "allFilterExcludeFolders": []}),
        ),
        302 => ok(json!({"banners": [], "updateTime": 0, "showTime": 0})),
        other => Err(ProtoError::new(
            "proto.opcode",
            format!("Opcode {other} is not supported by the simulator"),
        )),
    }
}

// ------------------------------------------------------------------ helpers

fn field<'a>(p: &'a Value, name: &str) -> Option<&'a Value> {
    p.get(name).filter(|v| !v.is_null())
}

fn req_i64(p: &Value, name: &str) -> Result<i64, ProtoError> {
    match field(p, name) {
        None => Err(ProtoError::missing(name)),
        Some(v) => {
            as_i64(v).ok_or_else(|| ProtoError::payload(format!("Expected number at {name}")))
        }
    }
}

fn opt_i64(p: &Value, name: &str) -> Result<Option<i64>, ProtoError> {
    match field(p, name) {
        None => Ok(None),
        Some(v) => as_i64(v)
            .map(Some)
            .ok_or_else(|| ProtoError::payload(format!("Expected number at {name}"))),
    }
}

fn req_str<'a>(p: &'a Value, name: &str) -> Result<&'a str, ProtoError> {
    match field(p, name) {
        None => Err(ProtoError::missing(name)),
        Some(v) => v
            .as_str()
            .ok_or_else(|| ProtoError::payload(format!("Expected string at {name}"))),
    }
}

fn opt_array(p: &Value, name: &str) -> Result<Option<Vec<Value>>, ProtoError> {
    match field(p, name) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a.clone())),
        Some(_) => Err(ProtoError::payload(format!("Expected array at {name}"))),
    }
}

fn req_ids(p: &Value, name: &str) -> Result<Vec<i64>, ProtoError> {
    match field(p, name) {
        None => Err(ProtoError::missing(name)),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                as_i64(v).ok_or_else(|| ProtoError::payload(format!("Expected number at {name}")))
            })
            .collect(),
        Some(_) => Err(ProtoError::payload(format!("Expected array at {name}"))),
    }
}

fn config_hash() -> String {
    "497c7ac3-0000000000000000-80000000-0000000000000001-0000000000000000-2-0000019860dbac57".into()
}

fn chat_json(sim: &Sim, user: i64, chat_id: i64) -> Result<Value, ProtoError> {
    let mut st = sim.state();
    let key = st.require_member_chat(user, chat_id)?;
    Ok(st.chats[&key].to_json(user))
}

fn profile_json(st: &State, user: i64) -> Value {
    json!({"contact": st.user_json(user).unwrap_or(Value::Null), "profileOptions": []})
}

// -------------------------------------------------------------------- auth

fn session_init(sim: &Sim, conn: &Conn, p: &Value) -> HResult {
    let ua = match field(p, "userAgent") {
        Some(Value::Object(ua)) => Value::Object(ua.clone()),
        Some(_) => return Err(ProtoError::payload("Expected map at userAgent")),
        None => return Err(ProtoError::missing("userAgent")),
    };
    let device_id = match field(p, "deviceId") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ProtoError::payload("Expected string at deviceId")),
        None => None,
    };
    {
        let mut s = conn.session();
        s.user_agent = Some(ua);
        s.device_id = device_id;
        if s.phase == Phase::Fresh {
            s.phase = Phase::Initialized;
        }
    }
    let _ = sim;
    ok(json!({
        "location": "RU",
        "app-update-type": 0,
        "reg-country-code": ["RU", "BY", "KZ"],
        "phone-auto-complete-enabled": false,
        "lang": true,
    }))
}

fn auth_request(sim: &Sim, p: &Value) -> HResult {
    let phone = req_str(p, "phone")?;
    if sim.faults().rate_limit_logins {
        return Err(ProtoError::new("error.limit.violate", "Too many attempts"));
    }
    let mut st = sim.state();
    let user = st
        .find_by_phone(phone)
        .filter(|u| st.accounts.get(u).is_some_and(|a| a.sms_code.is_some()))
        .ok_or_else(|| ProtoError::new("error.phone.wrong", "Unknown phone number"))?;
    let token = random_token("An_", 60);
    st.auth_tracks.insert(token.clone(), user);
    ok(json!({
        "token": token,
        "codeLength": 6,
        "requestMaxDuration": 60000,
        "requestCountLeft": 10,
        "altActionDuration": 60000,
    }))
}

/// A fresh login token for `user`.
fn issue_token(st: &mut State, user: i64) -> String {
    let token = random_token("", 160);
    st.tokens.insert(token.clone(), user);
    token
}

fn auth_check(sim: &Sim, p: &Value) -> HResult {
    let track = req_str(p, "token")?;
    let code = match field(p, "verifyCode") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(ProtoError::payload("Expected string at verifyCode")),
        None => return Err(ProtoError::missing("verifyCode")),
    };
    if sim.faults().rate_limit_logins {
        return Err(ProtoError::new("error.limit.violate", "Too many attempts"));
    }
    let mut st = sim.state();
    let user = *st
        .auth_tracks
        .get(track)
        .ok_or_else(|| ProtoError::new("error.code.expired", "Code expired"))?;
    let expected = st.accounts.get(&user).and_then(|a| a.sms_code.clone());
    if expected.as_deref() != Some(code.trim()) {
        return Err(ProtoError::new("error.code.wrong", "Wrong code"));
    }
    st.auth_tracks.remove(track);
    let token = issue_token(&mut st, user);
    let answer =
        json!({"tokenAttrs": {"LOGIN": {"token": token}}, "profile": profile_json(&st, user)});
    drop(st);
    sim.changed();
    ok(answer)
}

fn qr_request(sim: &Sim) -> HResult {
    let mut st = sim.state();
    let track = uuid::Uuid::new_v4().to_string();
    st.qr_tracks.insert(track.clone(), None);
    let link = format!("{}/qr?token={track}", st.base_url);
    ok(json!({
        "qrLink": link,
        "trackId": track,
        "pollingInterval": 1000,
        "ttl": 120000,
        "expiresAt": now_ms() + 120_000,
    }))
}

fn qr_status(sim: &Sim, p: &Value) -> HResult {
    let track = req_str(p, "trackId")?;
    let st = sim.state();
    let approved = st
        .qr_tracks
        .get(track)
        .ok_or_else(|| ProtoError::new("track.not.found", "Track not found"))?;
    let mut status = json!({"expiresAt": now_ms() + 120_000});
    if approved.is_some() {
        status["loginAvailable"] = json!(true);
    }
    ok(json!({"status": status}))
}

fn qr_login(sim: &Sim, p: &Value) -> HResult {
    let track = req_str(p, "trackId")?;
    let mut st = sim.state();
    let user = st
        .qr_tracks
        .get(track)
        .copied()
        .flatten()
        .ok_or_else(|| ProtoError::new("track.not.found", "Track not found"))?;
    st.qr_tracks.remove(track);
    let token = issue_token(&mut st, user);
    let answer =
        json!({"tokenAttrs": {"LOGIN": {"token": token}}, "profile": profile_json(&st, user)});
    drop(st);
    sim.changed();
    ok(answer)
}

fn login(sim: &Sim, conn: &Conn, p: &Value) -> HResult {
    let token = req_str(p, "token")?;
    let chats_count = opt_i64(p, "chatsCount")?.unwrap_or(40);
    if !(0..=100).contains(&chats_count) {
        return Err(ProtoError::payload("'chatsCount' out of range"));
    }
    {
        let f = sim.faults();
        if f.rate_limit_logins {
            return Err(ProtoError::new("error.limit.violate", "Too many attempts"));
        }
        if let Some(key) = &f.refuse_logins {
            return Err(ProtoError::new(key, "Login refused"));
        }
    }
    let chats_sync = opt_i64(p, "chatsSync")?.unwrap_or(0);
    let contacts_sync = opt_i64(p, "contactsSync")?.unwrap_or(0);
    let mut st = sim.state();
    if st.revoked.contains(token) {
        return Err(ProtoError::new("login.token", "FAIL_LOGIN_TOKEN"));
    }
    let user = *st
        .tokens
        .get(token)
        .ok_or_else(|| ProtoError::new("login.token", "Invalid token"))?;
    let mut token = token.to_owned();
    let rotate = st.accounts.get(&user).is_some_and(|a| a.rotate_on_login);
    if rotate {
        token = issue_token(&mut st, user);
    }
    let previous = conn.user();
    {
        let session = {
            let mut s = conn.session();
            s.phase = Phase::LoggedIn(user);
            s.token = Some(token.clone());
            if let Some(i) = p.get("interactive").and_then(Value::as_bool) {
                s.interactive = i;
            }
            (
                s.user_agent.clone().unwrap_or(Value::Null),
                s.device_id.clone(),
            )
        };
        if let Some(a) = st.accounts.get_mut(&user) {
            a.rotate_on_login = false;
            a.last_session = Some(session);
        }
    }
    let now = now_ms();
    let mut keys = st.chats_of(user);
    keys.sort_by_key(|k| std::cmp::Reverse(st.chats[k].last_event_time()));
    if chats_sync > 0 {
        keys.retain(|k| {
            let c = &st.chats[k];
            c.last_event_time() > chats_sync || c.modified > chats_sync
        });
    }
    let total = keys.len();
    let limit = usize::try_from(chats_count).unwrap_or(0);
    let mut page: Vec<ChatKey> = keys.iter().take(limit).copied().collect();
    let chat_marker = if total > page.len() {
        page.last()
            .map(|k| st.chats[k].last_event_time())
            .unwrap_or(0)
    } else {
        0
    };
    let saved = ChatKey::Saved(user);
    if chats_sync <= 0 && !page.contains(&saved) {
        page.push(saved);
    }
    let chats: Vec<Value> = page.iter().map(|k| st.chats[k].to_json(user)).collect();
    // The real service cannot be relied on to send recent messages (chats
    // carry their lastMessage; clients catch up with CHAT_HISTORY), so by
    // default this stays empty.
    let mut messages = Map::new();
    let per_chat = sim.settings.login_messages;
    for k in page.iter().filter(|_| per_chat > 0) {
        let c = &st.chats[k];
        let mut recent: Vec<Value> = c
            .messages
            .iter()
            .rev()
            .filter(|m| m.visible_to(user) && m.time > chats_sync)
            .take(per_chat)
            .map(|m| m.to_json(true))
            .collect();
        recent.reverse();
        if !recent.is_empty() {
            messages.insert(k.wire_id().to_string(), Value::Array(recent));
        }
    }
    let account = st.accounts.get(&user);
    let contacts: Vec<Value> = account
        .map(|a| a.contacts.clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| st.accounts.get(c))
        .filter(|a| a.update_time > contacts_sync || contacts_sync <= 0)
        .map(|a| a.to_json())
        .collect();
    // Own entry as captured; then contacts and dialog peers as they are now.
    let mut presence = Map::new();
    presence.insert(user.to_string(), json!({"seen": now / 1000, "on": "ON"}));
    let peers = st.chats.values().filter_map(|c| match c.key {
        ChatKey::Id(id) if c.kind == ChatKind::Dialog && c.is_member(user) => Some(id ^ user),
        _ => None,
    });
    let watched: std::collections::BTreeSet<i64> = account
        .map(|a| a.contacts.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(peers)
        .filter(|u| *u != user && st.accounts.contains_key(u))
        .collect();
    for u in watched {
        presence.insert(u.to_string(), st.presence_json(u));
    }
    let answer = json!({
        "profile": profile_json(&st, user),
        "chats": chats,
        "chatMarker": chat_marker,
        "messages": messages,
        "contacts": contacts,
        "presence": presence,
        "config": {
            "server": server_config(&st),
            "user": user_settings(),
            "chatFolders": {"FOLDERS": [], "ALL_FILTER_EXCLUDE": []},
            "hash": config_hash(),
        },
        "drafts": {"chats": {"saved": {}, "discarded": {}}, "users": {"saved": {}, "discarded": {}}},
        "token": token,
        "time": now,
        "videoChatHistory": false,
        "calls": [],
    });
    drop(st);
    tracing::info!(user, conn = conn.id, rotated = rotate, "login");
    if let Some(previous) = previous.filter(|p| *p != user) {
        sim.refresh_presence(previous, false);
    }
    let interactive = conn.session().interactive;
    sim.refresh_presence(user, interactive);
    sim.changed();
    ok(answer)
}

fn server_config(st: &State) -> Value {
    let mut server = json!({
        "max-msg-length": MAX_MSG_LENGTH,
        "edit-timeout": EDIT_TIMEOUT_S,
        "file-upload-max-size": 4_294_967_296_i64,
        "file-upload-unsupported-types": ["exe"],
        "file-upload-enabled": true,
        "image-size": 40_000_000,
        "image-width": 1920,
        "image-height": 1920,
        "min-image-side-size": 64,
        "max-video-duration-download": 1200,
        "max-audio-length": 3600,
        "reactions-enabled": true,
        "reactions-max": REACTIONS_MAX,
        "reactions-menu": REACTIONS_MENU,
        "double-tap-reaction": "👍",
        "msg-get-reactions-page-size": 40,
        "max-participants": 20000,
        "chats-page-size": 50,
        "max-readmarks": 100,
        "max-description-length": 400,
        "max-theme-length": 200,
        "nick-min-length": 7,
        "nick-max-length": 60,
        "max-favorite-chats": 5,
        "set-unread-timeout": 31_536_000,
        "disconnect-timeout": 300,
        "markdown-enabled": true,
        "quotes-enabled": true,
        "mentions-enabled": true,
        "mentions_entity_names_limit": 3,
        "scheduled-messages-enabled": false,
        "qr-auth-enabled": true,
        "saved-messages-enabled": true,
        "react-errors": ["error.message.invalid", "error.message.chat.access", "error.message.like.unknown.reaction", "error.too-many-likes", "error.reactions.not.allowed"],
        "calls-endpoint": "https://calls.okcdn.ru/",
    });
    if let Some(obj) = server.as_object_mut() {
        for (k, v) in &st.server_config {
            obj.insert(k.clone(), v.clone());
        }
    }
    server
}

fn user_settings() -> Value {
    json!({
        "SEARCH_BY_PHONE": "ALL", "INCOMING_CALL": "ALL", "DOUBLE_TAP_REACTION_DISABLED": false,
        "SAFE_MODE_NO_PIN": false, "CHATS_PUSH_NOTIFICATION": "ON", "CHATS_PUSH_SOUND": "oki.aiff",
        "DOUBLE_TAP_REACTION_VALUE": null, "PUSH_DETAILS": true, "HIDDEN": false, "PUSH_SOUND": "oki.aiff",
        "CHATS_INVITE": "ALL", "PUSH_NEW_CONTACTS": true, "INACTIVE_TTL": "6M", "DONT_DISTURB_UNTIL": 0,
        "SHOW_READ_MARK": true, "ALT_KEYBOARD": false, "STICKERS_SUGGEST": "ON", "SAFE_MODE": false,
        "M_CALL_PUSH_NOTIFICATION": "ON", "AUDIO_TRANSCRIPTION_ENABLED": true,
    })
}

fn logout(sim: &Sim, conn: &Conn) -> HResult {
    let token = conn.session().token.clone();
    if let Some(token) = token {
        sim.revoke(&token, Some(conn.id));
    }
    Ok(Answer::OkThenClose(json!({})))
}

// ---------------------------------------------------------------- contacts

fn profile_update(sim: &Sim, user: i64, p: &Value) -> HResult {
    let first = req_str(p, "firstName")?;
    if first.trim().is_empty() {
        return Err(ProtoError::payload("Field requirement failed: firstName"));
    }
    let mut st = sim.state();
    if let Some(a) = st.accounts.get_mut(&user) {
        a.first_name = first.to_owned();
        if let Some(l) = p.get("lastName").and_then(Value::as_str) {
            a.last_name = l.to_owned();
        }
        if let Some(d) = p.get("description").and_then(Value::as_str) {
            a.description = Some(d.to_owned());
        }
        a.update_time = now_ms();
    }
    let answer = json!({"profile": profile_json(&st, user)});
    drop(st);
    sim.changed();
    ok(answer)
}

fn contact_info(sim: &Sim, p: &Value) -> HResult {
    let ids = req_ids(p, "contactIds")?;
    let st = sim.state();
    let contacts: Vec<Value> = ids.iter().filter_map(|id| st.user_json(*id)).collect();
    ok(json!({"contacts": contacts}))
}

fn contact_update(sim: &Sim, user: i64, p: &Value) -> HResult {
    let id = req_i64(p, "contactId")?;
    let action = req_str(p, "action")?;
    let mut st = sim.state();
    if !st.accounts.contains_key(&id) {
        return Err(ProtoError::new("not.found", format!("User {id} not found")));
    }
    let Some(me) = st.accounts.get_mut(&user) else {
        return Err(ProtoError::new("not.found", "Unknown account"));
    };
    let answer = match action {
        "ADD" | "UPDATE" => {
            if !me.contacts.contains(&id) {
                me.contacts.push(id);
            }
            json!({"contact": st.user_json(id)})
        }
        "REMOVE" => {
            me.contacts.retain(|c| *c != id);
            json!({})
        }
        _ => json!({}),
    };
    drop(st);
    sim.changed();
    ok(answer)
}

fn presence(sim: &Sim, p: &Value) -> HResult {
    let ids = req_ids(p, "contactIds")?;
    let st = sim.state();
    let presence: Map<String, Value> = ids
        .iter()
        .filter(|id| st.accounts.contains_key(id))
        .map(|id| (id.to_string(), st.presence_json(*id)))
        .collect();
    ok(json!({"presence": presence, "time": now_ms()}))
}

fn contact_by_phone(sim: &Sim, p: &Value) -> HResult {
    let phone = match field(p, "phone") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(ProtoError::missing("phone")),
    };
    let st = sim.state();
    let id = st
        .find_by_phone(&phone)
        .ok_or_else(|| ProtoError::new("not.found", "Contact not found"))?;
    ok(json!({"contact": st.user_json(id)}))
}

fn sessions(sim: &Sim, conn: &Conn, user: i64) -> HResult {
    let list: Vec<Value> = sim
        .hub
        .of_user(user)
        .iter()
        .map(|c| {
            let s = c.session();
            let ua = s.user_agent.clone().unwrap_or(Value::Null);
            let device = ua
                .get("deviceType")
                .and_then(Value::as_str)
                .unwrap_or("WEB")
                .to_owned();
            json!({
                "client": format!("MAX {device}"),
                "info": ua.get("deviceName").and_then(Value::as_str).unwrap_or("Simulator"),
                "location": c.peer.ip().to_string(),
                "time": c.connected_at,
                "current": c.id == conn.id,
            })
        })
        .collect();
    ok(json!({"sessions": list}))
}

// ------------------------------------------------------------------- chats

fn chat_info(sim: &Sim, user: i64, p: &Value) -> HResult {
    let ids = req_ids(p, "chatIds")?;
    let mut st = sim.state();
    let mut chats = Vec::new();
    for id in ids {
        if let Some(k) = st.member_chat(user, id) {
            chats.push(st.chats[&k].to_json(user));
        }
    }
    ok(json!({"chats": chats}))
}

fn chats_list(sim: &Sim, user: i64, p: &Value) -> HResult {
    let marker = req_i64(p, "marker")?;
    let count = opt_i64(p, "count")?.unwrap_or(50).clamp(0, 100) as usize;
    let mut st = sim.state();
    let mut keys = st.chats_of(user);
    keys.retain(|k| st.chats[k].last_event_time() < marker);
    keys.sort_by_key(|k| std::cmp::Reverse(st.chats[k].last_event_time()));
    let more = keys.len() > count;
    keys.truncate(count);
    let chats: Vec<Value> = keys.iter().map(|k| st.chats[k].to_json(user)).collect();
    let mut out = json!({"chats": chats});
    if more && let Some(k) = keys.last() {
        out["marker"] = json!(st.chats[k].last_event_time());
    }
    ok(out)
}

fn members(sim: &Sim, user: i64, p: &Value) -> HResult {
    let chat_id = req_i64(p, "chatId")?;
    let offset = opt_i64(p, "marker")?.unwrap_or(0).max(0) as usize;
    let count = opt_i64(p, "count")?.unwrap_or(50);
    if !(1..=500).contains(&count) {
        return Err(ProtoError::payload("'count' out of range"));
    }
    if p.get("type").and_then(Value::as_str) == Some("JOIN_REQUEST") {
        return ok(json!({"members": []}));
    }
    let query = p
        .get("query")
        .and_then(Value::as_str)
        .map(str::to_lowercase);
    let mut st = sim.state();
    let key = st.require_member_chat(user, chat_id)?;
    let chat = &st.chats[&key];
    let all: Vec<(i64, i64)> = chat
        .participants
        .iter()
        .filter(|(u, _)| match &query {
            Some(q) => st
                .accounts
                .get(u)
                .is_some_and(|a| a.full_name().to_lowercase().contains(q.as_str())),
            None => true,
        })
        .map(|(u, m)| (*u, *m))
        .collect();
    let page: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(count as usize)
        .map(|(u, mark)| json!({"contact": st.user_json(*u), "presence": st.presence_json(*u), "readMark": mark}))
        .collect();
    let mut out = json!({"members": page});
    if offset + (count as usize) < all.len() {
        out["marker"] = json!(offset + count as usize);
    }
    ok(out)
}

fn common_chats(sim: &Sim, user: i64, p: &Value) -> HResult {
    let ids = req_ids(p, "userIds")?;
    let mut st = sim.state();
    let keys = st.chats_of(user);
    let chats: Vec<Value> = keys
        .iter()
        .map(|k| &st.chats[k])
        .filter(|c| c.kind != ChatKind::Dialog && ids.iter().all(|u| c.is_member(*u)))
        .map(|c| c.to_json(user))
        .collect();
    ok(json!({"commonChats": chats, "hasMore": false}))
}

// ---------------------------------------------------------------- messages

fn msg_send(sim: &Sim, actor: Actor, p: &Value) -> HResult {
    let message = match field(p, "message") {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ProtoError::payload("Expected map at message")),
        None => return Err(ProtoError::missing("message")),
    };
    let m = Value::Object(message.clone());
    let text = match field(&m, "text") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ProtoError::payload("Expected string at message.text")),
    };
    let link = match field(&m, "link") {
        None => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(ProtoError::payload("Expected map at message.link")),
    };
    let req = SendRequest {
        chat_id: opt_i64(p, "chatId")?,
        user_id: opt_i64(p, "userId")?,
        text,
        cid: opt_i64(&m, "cid")
            .map_err(|_| ProtoError::payload("Expected number at message.cid"))?,
        elements: opt_array(&m, "elements")?.unwrap_or_default(),
        attaches: opt_array(&m, "attaches")?.unwrap_or_default(),
        link,
    };
    ok(sim.send(actor, req)?.response)
}

fn history(sim: &Sim, user: i64, p: &Value) -> HResult {
    let chat_id = req_i64(p, "chatId")?;
    let from = opt_i64(p, "from")?.unwrap_or_else(now_ms);
    let forward = opt_i64(p, "forward")?.unwrap_or(0).max(0) as usize;
    let backward = opt_i64(p, "backward")?.unwrap_or(0).max(0) as usize;
    let mut st = sim.state();
    let key = st.require_member_chat(user, chat_id)?;
    let chat = &st.chats[&key];
    let mut out = json!({"messages": []});
    if p.get("itemType").and_then(Value::as_str) != Some("DELAYED") {
        let visible: Vec<&crate::model::Message> = chat
            .messages
            .iter()
            .filter(|m| m.visible_to(user))
            .collect();
        let before: Vec<&&crate::model::Message> =
            visible.iter().filter(|m| m.time <= from).collect();
        let mut page: Vec<Value> = before
            .iter()
            .skip(before.len().saturating_sub(backward))
            .map(|m| m.to_json(true))
            .collect();
        page.extend(
            visible
                .iter()
                .filter(|m| {
                    if backward > 0 {
                        m.time > from
                    } else {
                        m.time >= from
                    }
                })
                .take(forward)
                .map(|m| m.to_json(true)),
        );
        out["messages"] = Value::Array(page);
    }
    if p.get("getChat").and_then(Value::as_bool) == Some(true) {
        out["chat"] = chat.to_json(user);
    }
    ok(out)
}

fn chat_media(sim: &Sim, user: i64, p: &Value) -> HResult {
    let chat_id = req_i64(p, "chatId")?;
    let types: Vec<String> = opt_array(p, "attachTypes")?
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let anchor = opt_i64(p, "messageId")?.unwrap_or(i64::MAX);
    let forward = opt_i64(p, "forward")?.unwrap_or(0).max(0) as usize;
    let backward = opt_i64(p, "backward")?.unwrap_or(0).max(0) as usize;
    let mut st = sim.state();
    let key = st.require_member_chat(user, chat_id)?;
    let chat = &st.chats[&key];
    let media: Vec<&crate::model::Message> = chat
        .messages
        .iter()
        .filter(|m| m.visible_to(user))
        .filter(|m| {
            m.attaches.iter().any(|a| {
                a.get("_type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| types.is_empty() || types.iter().any(|x| x == t))
            })
        })
        .collect();
    let before: Vec<_> = media.iter().filter(|m| m.id <= anchor).collect();
    let mut page: Vec<Value> = before
        .iter()
        .skip(before.len().saturating_sub(backward))
        .map(|m| m.to_json(true))
        .collect();
    page.extend(
        media
            .iter()
            .filter(|m| m.id > anchor)
            .take(forward)
            .map(|m| m.to_json(true)),
    );
    ok(json!({"messages": page, "total": media.len()}))
}

/// 118 MSG_SEND_CALLBACK: a button of an inline keyboard the user can see
/// is pressed; its bot is told (here: the press is recorded for the
/// control API). An unknown `callbackId` is refused.
fn press_button(sim: &Sim, user: i64, p: &Value) -> HResult {
    let callback_id = p
        .get("callbackId")
        .filter(|v| !v.is_null())
        .ok_or_else(|| ProtoError::missing("callbackId"))?
        .clone();
    let payload = p.get("payload").and_then(Value::as_str).map(str::to_owned);
    let mut st = sim.state();
    let same = |a: &Value, b: &Value| {
        a == b || a.to_string().trim_matches('"') == b.to_string().trim_matches('"')
    };
    let message_id = st
        .chats
        .values()
        .filter(|chat| chat.participants.contains_key(&user))
        .flat_map(|chat| chat.messages.iter())
        .filter(|m| m.visible_to(user))
        .find(|m| {
            m.attaches.iter().any(|a| {
                a.get("_type").and_then(Value::as_str) == Some("INLINE_KEYBOARD")
                    && a.get("callbackId").is_some_and(|id| same(id, &callback_id))
            })
        })
        .map(|m| m.id)
        .ok_or_else(|| ProtoError::new("not.found", "No such keyboard"))?;
    st.callbacks.push(crate::model::Callback {
        user,
        message_id,
        callback_id,
        payload,
    });
    ok(json!({}))
}

/// 304 SEND_VOTE: the user's answers to a poll of a message they can see
/// (an empty list takes the vote back); the poll's state is counted anew
/// and answered. An unknown poll or answer is refused.
fn vote(sim: &Sim, user: i64, p: &Value) -> HResult {
    let chat_id = req_i64(p, "chatId")?;
    let message_id = req_i64(p, "messageId")?;
    let poll_id = req_i64(p, "pollId")?;
    let answers = req_ids(p, "answersIds")?;
    let mut st = sim.state();
    let key = st.require_member_chat(user, chat_id)?;
    let known: Vec<i64> = st.chats[&key]
        .find(message_id)
        .filter(|m| m.visible_to(user))
        .and_then(|m| {
            m.attaches.iter().find(|a| {
                a.get("_type").and_then(Value::as_str) == Some("POLL")
                    && a.get("pollId").and_then(as_i64) == Some(poll_id)
            })
        })
        .and_then(|poll| poll.get("answers")?.as_array().cloned())
        .ok_or_else(|| ProtoError::new("not.found", "No such poll"))?
        .iter()
        .filter_map(|a| a.get("id").and_then(as_i64))
        .collect();
    if let Some(unknown) = answers.iter().find(|a| !known.contains(a)) {
        return Err(ProtoError::payload(format!("Unknown answer {unknown}")));
    }
    if answers.is_empty() {
        st.votes.remove(&(message_id, user));
    } else {
        st.votes.insert((message_id, user), answers);
    }
    let mut counts: std::collections::BTreeMap<i64, i64> = Default::default();
    let mut total = 0;
    for ((_, _), chosen) in st
        .votes
        .range((message_id, i64::MIN)..=(message_id, i64::MAX))
    {
        total += 1;
        for answer in chosen {
            *counts.entry(*answer).or_default() += 1;
        }
    }
    let state = json!({
        "total": total,
        "result": counts.iter().map(|(a, n)| json!({"answerId": a, "voteCount": n})).collect::<Vec<_>>(),
        "voterPreviewIds": [],
    });
    let chat = st
        .chats
        .get_mut(&key)
        .ok_or_else(|| ProtoError::chat_not_found(chat_id))?;
    if let Some(poll) = chat.find_mut(message_id).and_then(|m| {
        m.attaches
            .iter_mut()
            .find(|a| a.get("_type").and_then(Value::as_str) == Some("POLL"))
    }) {
        poll["state"] = state.clone();
    }
    ok(json!({"state": state}))
}

fn msg_get(sim: &Sim, user: i64, p: &Value) -> HResult {
    let chat_id = req_i64(p, "chatId")?;
    let ids = req_ids(p, "messageIds")?;
    let mut st = sim.state();
    let key = st.require_member_chat(user, chat_id)?;
    let chat = &st.chats[&key];
    let messages: Vec<Value> = ids
        .iter()
        .filter_map(|id| chat.find(*id))
        .filter(|m| m.visible_to(user))
        .map(|m| m.to_json(true))
        .collect();
    ok(json!({"messages": messages, "chatId": chat_id}))
}

fn msg_search(sim: &Sim, user: i64, p: &Value) -> HResult {
    let chat_id = req_i64(p, "chatId")?;
    let query = req_str(p, "query")?.to_lowercase();
    let count = opt_i64(p, "count")?.unwrap_or(20).max(0) as usize;
    let mut st = sim.state();
    let key = st.require_member_chat(user, chat_id)?;
    let chat = &st.chats[&key];
    let hits: Vec<&crate::model::Message> = chat
        .messages
        .iter()
        .rev()
        .filter(|m| m.visible_to(user) && m.text.to_lowercase().contains(&query))
        .collect();
    let result: Vec<Value> = hits
        .iter()
        .take(count)
        .map(|m| json!({"message": m.to_json(true), "highlights": []}))
        .collect();
    ok(json!({"result": result, "total": hits.len()}))
}

fn reactions_bulk(sim: &Sim, user: i64, p: &Value) -> HResult {
    let chat_id = req_i64(p, "chatId")?;
    let ids = req_ids(p, "messageIds")?;
    let mut st = sim.state();
    let key = st.require_member_chat(user, chat_id)?;
    let chat = &st.chats[&key];
    let map: Map<String, Value> = ids
        .iter()
        .filter_map(|id| chat.find(*id))
        .map(|m| (m.id.to_string(), m.reaction_info(Some(user))))
        .collect();
    ok(json!({"messagesReactions": map}))
}

fn reactions_detailed(sim: &Sim, user: i64, p: &Value) -> HResult {
    let chat_id = req_i64(p, "chatId")?;
    let id = req_i64(p, "messageId")?;
    let count = opt_i64(p, "count")?.unwrap_or(40).max(0) as usize;
    let mut st = sim.state();
    let key = st.require_member_chat(user, chat_id)?;
    let m = st.chats[&key]
        .find(id)
        .ok_or_else(|| ProtoError::new("error.message.invalid", "Message not found"))?;
    let reactions: Vec<Value> = m
        .reactions
        .iter()
        .take(count)
        .map(|(u, r)| json!({"userId": u, "reaction": r}))
        .collect();
    ok(json!({"reactionInfo": m.reaction_info(Some(user)), "reactions": reactions}))
}

fn download_url(sim: &Sim, id: i64, kind: MediaKind) -> Result<(String, String), ProtoError> {
    let st = sim.state();
    let u = st
        .uploads
        .get(&id)
        .filter(|u| u.kind == kind && u.data.is_some())
        .ok_or_else(|| ProtoError::new("not.found", format!("Media {id} not found")))?;
    Ok((
        format!("{}/media/{}?sig={}", st.base_url, u.id, u.token),
        u.name.clone(),
    ))
}
