//! The bot's management room: accepting the bot's invite, the commands
//! (`help`, `login`, `login-token`, `logout`, `ping`, `sync`, `list`,
//! `cancel`) and the step-by-step SMS login they drive.

use super::Bridge;
use super::sms_login::{Refusal, SmsLogin, Taken};
use crate::config::Permission;
use crate::matrix::RoomEvent;
use maxproto::Token;
use maxproto::client::{ClientError, ConnectionState};
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::Value;
use std::sync::Arc;

const HELP: &str = "\
In this room no prefix is needed; in portal rooms, start commands with the prefix (`{prefix} ping`).

**Account**
• `login` — log in to MAX with your phone number and an SMS code
• `login-token <token>` — log in with an existing MAX token (advanced)
• `cancel` — cancel a login in progress
• `logout` — log out of MAX and stop bridging
• `ping` — show the MAX connection state and account
• `list-logins` — your MAX login and its state (an admin sees every login)

**Chats**
• `list` — list your bridged chats
• `sync` — read your MAX chats again and create missing portals
• `start-chat <+phone or MAX user id>` — open a direct chat with a MAX user
• `search <name or +phone>` — find MAX users among your contacts, or by phone number
• `delete-portal` — in a portal room: remove everyone and forget it (the MAX chat stays)
• `set-relay` / `unset-relay` — in a portal room: let Matrix users without a MAX login speak through your account (when the bridge allows relaying)

**General**
• `version` — the bridge's version
• `help` — this text";

/// A login in progress and the number that tells it from a later one of
/// the same user (for its expiry).
pub struct Pending {
    id: u64,
    login: SmsLogin,
}

static NEXT_PENDING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The bot was invited somewhere: join and greet permitted users, or
/// refuse politely.
pub(crate) async fn on_bot_invited(bridge: &Arc<Bridge>, event: &RoomEvent) {
    let room = &event.room_id;
    if let Err(error) = bridge.matrix.join(&bridge.bot, room).await {
        tracing::warn!(room = %room, %error, "could not accept the bot's invite");
        return;
    }
    let permission = bridge.config.permission_for(event.sender.as_str());
    if permission < Permission::User {
        bridge
            .bot_notice(
                room,
                "Sorry, you are not allowed to use this bridge. Ask the homeserver's admin for access.",
            )
            .await;
        if let Err(error) = bridge.matrix.leave(&bridge.bot, room).await {
            tracing::warn!(room = %room, %error, "could not leave after refusing");
        }
        return;
    }
    let is_direct = event
        .content
        .get("is_direct")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let users = bridge.store.users();
    let current = match users.get(event.sender.as_str()).await {
        Ok(user) => user.and_then(|u| u.management_room),
        Err(error) => {
            tracing::error!(%error, "user lookup failed");
            None
        }
    };
    if (is_direct || current.is_none())
        && let Err(error) = users
            .set_management_room(event.sender.as_str(), Some(room.as_str()))
            .await
    {
        tracing::error!(%error, "could not store the management room");
    }
    bridge
        .bot_notice(
            room,
            "Hello! I bridge your MAX chats to Matrix. Send `login` to connect your MAX account, or `help` for all commands.",
        )
        .await;
}

/// Whether a message starts with the command prefix (e.g. `!max ping`).
pub(crate) fn has_prefix(config: &crate::config::Config, event: &RoomEvent) -> bool {
    let prefix = config.bridge.command_prefix.as_str();
    event.event_type == "m.room.message"
        && !prefix.is_empty()
        && event
            .content
            .get("body")
            .and_then(Value::as_str)
            .is_some_and(|body| body.trim_start().starts_with(prefix))
}

/// A message in a room that is not a portal: a command when it is the
/// user's management room, or when it starts with the command prefix.
pub(crate) async fn on_room_message(bridge: &Arc<Bridge>, event: &RoomEvent) {
    let Some(body) = event.content.get("body").and_then(Value::as_str) else {
        return;
    };
    if event.content.get("msgtype").and_then(Value::as_str) == Some("m.notice") {
        return;
    }
    let management = match bridge.store.users().get(event.sender.as_str()).await {
        Ok(Some(user)) => user.management_room.as_deref() == Some(event.room_id.as_str()),
        Ok(None) => false,
        Err(error) => {
            tracing::error!(%error, "user lookup failed");
            false
        }
    };
    let prefix = bridge.config.bridge.command_prefix.as_str();
    let text = body.trim();
    let command = match text.strip_prefix(prefix) {
        Some(rest) if !prefix.is_empty() => rest.trim(),
        _ if management => text,
        _ => return,
    };
    if bridge.config.permission_for(event.sender.as_str()) < Permission::User {
        bridge
            .bot_notice(
                &event.room_id,
                "Sorry, you are not allowed to use this bridge.",
            )
            .await;
        return;
    }
    run_command(bridge, event, command).await;
}

async fn run_command(bridge: &Arc<Bridge>, event: &RoomEvent, text: &str) {
    let room = &event.room_id;
    let user = &event.sender;
    // A pending login takes the next plain message (phone, code, password).
    let mut words = text.split_whitespace();
    let name = words.next().unwrap_or("").to_lowercase();
    let args: Vec<&str> = words.collect();
    let known = COMMANDS_DURING_LOGIN.contains(&name.as_str());
    let pending = if known {
        None
    } else {
        bridge
            .pending_logins
            .lock()
            .await
            .remove(user)
            .map(|p| p.login)
    };
    if let Some(pending) = pending {
        if name == "cancel" {
            pending.close().await;
            bridge.bot_notice(room, "Login cancelled.").await;
            return;
        }
        if pending.wants_secret() {
            forget_secret(bridge, event, pending.wants().words()).await;
        }
        continue_login(bridge, room, user, pending, text).await;
        return;
    }
    let reply = |text: String| async move { bridge.bot_notice(room, &text).await };
    match name.as_str() {
        "" | "help" => reply(HELP.replace("{prefix}", &bridge.config.bridge.command_prefix)).await,
        "login" => {
            if bridge.login_of(user).is_some() {
                reply(
                    "You are already logged in. Send `logout` first to switch accounts.".to_owned(),
                )
                .await;
                return;
            }
            let login = SmsLogin::start(device_id_for(bridge, user).await);
            match args.first() {
                Some(phone) => continue_login(bridge, room, user, login, phone).await,
                None => {
                    set_pending(bridge, room, user, login).await;
                    reply("Send your phone number in international format, e.g. +79001234567 (or `cancel`).".to_owned()).await;
                }
            }
        }
        "login-token" => {
            // The token is a secret whatever happens next.
            if !args.is_empty() {
                forget_secret(bridge, event, "token").await;
            }
            match args.first() {
                _ if bridge.login_of(user).is_some() => {
                    reply(
                        "You are already logged in. Send `logout` first to switch accounts."
                            .to_owned(),
                    )
                    .await
                }
                Some(token) => {
                    let device_id = device_id_for(bridge, user).await;
                    finish_login(bridge, room, user, Token::new(*token), device_id).await;
                }
                None => reply("Usage: login-token <token>".to_owned()).await,
            }
        }
        "logout" => logout(bridge, room, user).await,
        "ping" => ping(bridge, room, user).await,
        "list-logins" => list_logins(bridge, room, user).await,
        "sync" => sync(bridge, room, user).await,
        "list" => list(bridge, room, user).await,
        "delete-portal" => delete_portal(bridge, room, user).await,
        "set-relay" => set_relay(bridge, room, user, true).await,
        "unset-relay" => set_relay(bridge, room, user, false).await,
        "version" => {
            reply(format!(
                "maxbridge {}, speaking to MAX as web client {} ({} frames).",
                env!("CARGO_PKG_VERSION"),
                bridge.config.max.device.app_version,
                match bridge.config.max.wire_format {
                    maxproto::codec::WireFormat::Json => "JSON",
                    maxproto::codec::WireFormat::Binary => "binary",
                },
            ))
            .await
        }
        "search" if args.is_empty() => reply("Usage: search <name or +phone>".to_owned()).await,
        "search" => search(bridge, room, user, &args.join(" ")).await,
        "start-chat" => match args.first() {
            Some(who) => start_chat(bridge, room, user, who).await,
            None => reply("Usage: start-chat <+phone or MAX user id>".to_owned()).await,
        },
        "cancel" => reply("Nothing to cancel.".to_owned()).await,
        other => {
            reply(format!(
                "Unknown command `{other}`. Send `help` for the list."
            ))
            .await
        }
    }
}

/// The device id this user's bridge logins present to MAX: the one of an
/// earlier login when there is one, since MAX flags accounts that keep
/// appearing on new devices.
pub(crate) async fn device_id_for(bridge: &Bridge, user: &OwnedUserId) -> String {
    match bridge.store.logins().get(user.as_str()).await {
        Ok(Some(login)) => login.device_id,
        Ok(None) => uuid::Uuid::new_v4().to_string(),
        Err(error) => {
            tracing::warn!(%error, "login lookup failed; using a new device id");
            uuid::Uuid::new_v4().to_string()
        }
    }
}

/// MAX's own words for a failure, so the user sees what MAX said.
pub(crate) fn describe(error: &ClientError) -> String {
    match error {
        ClientError::Server(payload) => {
            let text = payload
                .localized_message
                .clone()
                .filter(|t| !t.is_empty())
                .or_else(|| payload.message.clone().filter(|t| !t.is_empty()));
            match text {
                Some(text) => format!("{text} ({})", payload.error),
                None => payload.error.clone(),
            }
        }
        other => other.to_string(),
    }
}

/// Commands that run as themselves when typed during a login, which keeps
/// waiting for its step (`cancel` instead ends it).
const COMMANDS_DURING_LOGIN: [&str; 9] = [
    "help",
    "version",
    "login",
    "login-token",
    "logout",
    "ping",
    "list-logins",
    "sync",
    "list",
];

/// Takes the user's answer to the login's step and says what comes next.
async fn continue_login(
    bridge: &Arc<Bridge>,
    room: &RoomId,
    user: &OwnedUserId,
    pending: SmsLogin,
    text: &str,
) {
    let wants = pending.wants().words();
    match pending.take(&bridge.config, text).await {
        Taken::CodeSent {
            next,
            phone,
            digits,
        } => {
            set_pending(bridge, room, user, next).await;
            let digits = digits.map(|n| format!("{n}-digit ")).unwrap_or_default();
            bridge
                .bot_notice(
                    room,
                    &format!("MAX sent a {digits}code to {phone}. Send it here (or `cancel`)."),
                )
                .await;
        }
        Taken::PasswordAsked { next, hint } => {
            set_pending(bridge, room, user, next).await;
            let hint = hint.map(|h| format!(" (hint: {h})")).unwrap_or_default();
            bridge
                .bot_notice(
                    room,
                    &format!(
                        "Your MAX account has a cloud password{hint}. Send it here (or `cancel`)."
                    ),
                )
                .await;
        }
        Taken::Refused { again, why } => {
            let text = match &why {
                Refusal::NotAPhone => "That does not look like a phone number. Send it in international format, e.g. +79001234567 (or `cancel`).".to_owned(),
                Refusal::Unreachable(error) => format!(
                    "❌ Could not reach MAX: {}. Send the {wants} again to retry, or `cancel`.",
                    describe(error)
                ),
                Refusal::Max(error) => format!(
                    "❌ MAX did not accept the {wants}: {}. Send it again, or `cancel`.",
                    describe(error)
                ),
            };
            set_pending(bridge, room, user, again).await;
            bridge.bot_notice(room, &text).await;
        }
        Taken::LoggedIn { token, device_id } => {
            finish_login(bridge, room, user, token, device_id).await;
        }
        Taken::NoAccount => {
            bridge
                .bot_notice(
                    room,
                    "❌ This phone number has no MAX account. Create one in a MAX app first.",
                )
                .await;
        }
    }
}

/// Waits for the user's next login step; a step not taken within
/// `bridge.login_step_timeout` ends the login with a notice.
async fn set_pending(bridge: &Arc<Bridge>, room: &RoomId, user: &OwnedUserId, login: SmsLogin) {
    let id = NEXT_PENDING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    bridge
        .pending_logins
        .lock()
        .await
        .insert(user.clone(), Pending { id, login });
    let weak = Arc::downgrade(bridge);
    let (room, user) = (room.to_owned(), user.clone());
    let timeout = bridge.config.login_step_timeout();
    bridge.spawn_task(async move {
        tokio::time::sleep(timeout).await;
        let Some(bridge) = weak.upgrade() else {
            return;
        };
        let expired = {
            let mut pending = bridge.pending_logins.lock().await;
            match pending.get(&user) {
                Some(current) if current.id == id => pending.remove(&user),
                _ => None,
            }
        };
        let Some(expired) = expired else {
            return;
        };
        expired.login.close().await;
        bridge
            .bot_notice(
                &room,
                &format!(
                    "⌛ The login timed out after {} s without an answer. Send `login` to start again.",
                    timeout.as_secs()
                ),
            )
            .await;
    });
}

/// Removes the user's message that carried a secret (a code, a password, a
/// token) from the room's history, and says so; when the bot may not (it
/// lacks power in the room), it asks the user to.
async fn forget_secret(bridge: &Arc<Bridge>, event: &RoomEvent, what: &str) {
    let txn = format!("forget-{}", event.event_id);
    match bridge
        .matrix
        .redact(
            &bridge.bot,
            &event.room_id,
            &event.event_id,
            Some("carried a secret"),
            &txn,
        )
        .await
    {
        Ok(_) => {
            bridge
                .bot_notice(
                    &event.room_id,
                    &format!("🔒 I removed your message with the {what} from this room."),
                )
                .await
        }
        Err(error) => {
            tracing::warn!(room = %event.room_id, %error, "could not redact a message with a secret");
            bridge
                .bot_notice(
                    &event.room_id,
                    &format!("⚠️ I could not remove your message with the {what} ({error}); please delete it yourself."),
                )
                .await;
        }
    }
}

async fn finish_login(
    bridge: &Arc<Bridge>,
    room: &RoomId,
    user: &OwnedUserId,
    token: Token,
    device_id: String,
) {
    match bridge.start_login(user.clone(), token, device_id).await {
        Ok(session) => {
            bridge
                .bot_notice(
                    room,
                    &format!(
                        "✅ Logged in to MAX as {} (id {}). Your chats will appear as rooms.",
                        session.name, session.max_user_id
                    ),
                )
                .await;
        }
        Err(error) => {
            bridge
                .bot_notice(room, &format!("❌ MAX login failed: {}", describe(&error)))
                .await;
        }
    }
}

async fn logout(bridge: &Arc<Bridge>, room: &RoomId, user: &OwnedUserId) {
    match log_out(bridge, user).await {
        Ok(true) => bridge.bot_notice(room, "Logged out of MAX.").await,
        Ok(false) => bridge.bot_notice(room, "You are not logged in.").await,
        Err(()) => {
            bridge
                .bot_notice(room, "❌ Logout failed: database error.")
                .await
        }
    }
}

/// Ends the user's MAX login: forgets it, tells MAX (the token is
/// invalidated) and closes the session. Whether there was one; `Err` when
/// the database could not forget it (logged).
pub(crate) async fn log_out(bridge: &Arc<Bridge>, user: &OwnedUserId) -> Result<bool, ()> {
    let receiver = match bridge.store.logins().get(user.as_str()).await {
        Ok(login) => login.map(|l| l.max_user_id),
        Err(error) => {
            tracing::error!(user = %user, %error, "could not read the login");
            return Err(());
        }
    };
    let session = bridge.remove_login(user);
    let had_login = bridge
        .store
        .logins()
        .delete(user.as_str())
        .await
        .map_err(|error| tracing::error!(user = %user, %error, "could not delete the login"))?;
    if let Some(session) = &session {
        if let Err(error) = session.client.logout().await {
            tracing::warn!(user = %user, %error, "MAX LOGOUT failed; the session is closed anyway");
        }
        session.stop().await;
        bridge.report_state(
            session,
            crate::matrix::bridge_state::StateEvent::LoggedOut,
            None,
        );
    }
    if let Some(receiver) = receiver {
        clean_up_after_logout(bridge, user, receiver).await;
    }
    Ok(had_login || session.is_some())
}

/// Deletes the portal of the room the command was sent in; its owner or a
/// bridge admin may.
/// Turns relay mode on or off in a portal: by a bridge admin, or by the
/// portal's owner unless `bridge.relay.admin_only`. The owner's account is
/// the one relayed through.
async fn set_relay(bridge: &Arc<Bridge>, room: &RoomId, user: &OwnedUserId, on: bool) {
    let relay = &bridge.config.bridge.relay;
    if !relay.enabled {
        bridge
            .bot_notice(
                room,
                "Relaying is off on this bridge (`bridge.relay.enabled`).",
            )
            .await;
        return;
    }
    let Some(portal) = portal_here(bridge, room).await else {
        return;
    };
    let admin = bridge.config.permission_for(user.as_str()) >= Permission::Admin;
    let owner = bridge
        .login_of(user)
        .is_some_and(|session| session.max_user_id == portal.receiver);
    if !admin && (relay.admin_only || !owner) {
        let who = if relay.admin_only {
            "a bridge admin"
        } else {
            "the portal's owner or a bridge admin"
        };
        bridge
            .bot_notice(room, &format!("Only {who} may change relaying here."))
            .await;
        return;
    }
    match bridge
        .store
        .portals()
        .set_relay(portal.chat_id, portal.receiver, on)
        .await
    {
        Ok(_) if on => {
            bridge
                .bot_notice(
                    room,
                    "Relaying is on: messages of Matrix users here without a MAX login go to MAX through the portal owner's account, each with its sender's name.",
                )
                .await
        }
        Ok(_) => {
            bridge
                .bot_notice(room, "Relaying is off: only the portal's owner speaks on MAX.")
                .await
        }
        Err(error) => {
            tracing::error!(%error, "relay not changed");
            bridge
                .bot_notice(room, "❌ Could not change relaying: database error.")
                .await;
        }
    }
}

/// The portal of the room a portal command was sent in; `None` (and the
/// user told why) when it is none or cannot be read.
async fn portal_here(bridge: &Bridge, room: &RoomId) -> Option<crate::store::PortalRow> {
    match bridge.store.portals().get_by_room(room.as_str()).await {
        Ok(Some(portal)) => Some(portal),
        Ok(None) => {
            bridge.bot_notice(room, "This room is not a portal.").await;
            None
        }
        Err(error) => {
            tracing::error!(%error, "portal lookup failed");
            bridge
                .bot_notice(room, "❌ Could not read the portal: database error.")
                .await;
            None
        }
    }
}

async fn delete_portal(bridge: &Arc<Bridge>, room: &RoomId, user: &OwnedUserId) {
    let Some(portal) = portal_here(bridge, room).await else {
        return;
    };
    let owner = match bridge
        .store
        .logins()
        .get_by_max_user_id(portal.receiver)
        .await
    {
        Ok(login) => login.and_then(|l| OwnedUserId::try_from(l.mxid).ok()),
        Err(error) => {
            tracing::error!(%error, "login lookup failed");
            None
        }
    };
    let admin = bridge.config.permission_for(user.as_str()) >= Permission::Admin;
    if owner.as_ref() != Some(user) && !admin {
        bridge
            .bot_notice(
                room,
                "Only the portal's owner or a bridge admin may delete it.",
            )
            .await;
        return;
    }
    bridge
        .bot_notice(room, "Deleting this portal: everyone leaves the room.")
        .await;
    let key = super::portal::PortalKey {
        chat_id: portal.chat_id,
        receiver: portal.receiver,
    };
    let owner = owner.unwrap_or_else(|| user.clone());
    if let Err(error) = bridge.delete_portal(key, &owner).await {
        bridge
            .bot_notice(room, &format!("❌ The portal was not deleted: {error}"))
            .await;
    }
}

/// What `bridge.cleanup_on_logout` asks of the user's portals once they
/// logged out of `receiver`.
async fn clean_up_after_logout(bridge: &Arc<Bridge>, user: &OwnedUserId, receiver: i64) {
    use crate::config::CleanupOnLogout;
    let cleanup = bridge.config.bridge.cleanup_on_logout;
    if cleanup == CleanupOnLogout::Nothing {
        return;
    }
    let portals = match bridge.store.portals().for_receiver(receiver).await {
        Ok(portals) => portals,
        Err(error) => {
            tracing::error!(user = %user, %error, "could not list the portals to clean up");
            return;
        }
    };
    for portal in portals {
        let key = super::portal::PortalKey {
            chat_id: portal.chat_id,
            receiver,
        };
        let done = match cleanup {
            CleanupOnLogout::Delete => bridge.delete_portal(key, user).await,
            _ => match portal.room_id.as_deref().map(RoomId::parse) {
                Some(Ok(room)) => bridge
                    .matrix
                    .kick(&bridge.bot, &room, user, "Logged out of MAX")
                    .await
                    .map_err(|e| e.to_string()),
                _ => Ok(()),
            },
        };
        if let Err(error) = done {
            tracing::warn!(user = %user, chat = portal.chat_id, %error, "portal not cleaned up after logout");
        }
    }
}

async fn ping(bridge: &Arc<Bridge>, room: &RoomId, user: &OwnedUserId) {
    let Some(session) = bridge.login_of(user) else {
        let text = match bridge.store.logins().get(user.as_str()).await {
            Ok(Some(login)) => format!(
                "Not connected to MAX (account {}, state: {}). Send `login` to log in again.",
                login.max_user_id, login.state
            ),
            _ => "You are not logged in to MAX. Send `login`.".to_owned(),
        };
        bridge.bot_notice(room, &text).await;
        return;
    };
    let state = connection_state(&session);
    bridge
        .bot_notice(
            room,
            &format!(
                "Logged in to MAX as {} (id {}); connection: {state}.",
                session.name, session.max_user_id
            ),
        )
        .await;
}

/// How a running login's MAX connection is, in words.
fn connection_state(session: &crate::bridge::LoginSession) -> String {
    match &*session.client.state().borrow() {
        ConnectionState::Connected => "connected".to_owned(),
        ConnectionState::Connecting => "connecting".to_owned(),
        ConnectionState::Reconnecting {
            attempt,
            last_error,
        } => {
            format!("reconnecting (attempt {attempt}, last error: {last_error})")
        }
        ConnectionState::LoggedOut { reason } => format!("logged out: {reason}"),
        ConnectionState::Closed => "closed".to_owned(),
    }
}

/// The user's login, or every login for an admin: who, which MAX account,
/// and how its connection is (or the state saved for one not running).
async fn list_logins(bridge: &Arc<Bridge>, room: &RoomId, user: &OwnedUserId) {
    let admin = bridge.config.permission_for(user.as_str()) >= Permission::Admin;
    let logins = if admin {
        bridge.store.logins().all().await
    } else {
        bridge
            .store
            .logins()
            .get(user.as_str())
            .await
            .map(|login| login.into_iter().collect())
    };
    let logins = match logins {
        Ok(logins) => logins,
        Err(error) => {
            tracing::warn!(%error, "logins unreadable");
            bridge
                .bot_notice(room, "Could not read the logins; try again later.")
                .await;
            return;
        }
    };
    if logins.is_empty() {
        let text = if admin {
            "Nobody is logged in to MAX."
        } else {
            "You are not logged in to MAX. Send `login`."
        };
        bridge.bot_notice(room, text).await;
        return;
    }
    let mut text = String::from(if admin {
        "**Logins on this bridge**\n"
    } else {
        "**Your login**\n"
    });
    for login in logins {
        let running = OwnedUserId::try_from(login.mxid.as_str())
            .ok()
            .and_then(|mxid| bridge.login_of(&mxid));
        let state = match &running {
            Some(session) => connection_state(session),
            None => format!("not running (saved state: {})", login.state),
        };
        let name = login.display_name.as_deref().unwrap_or("no name");
        text.push_str(&format!(
            "• {} — {name}, MAX id {}: {state}\n",
            login.mxid, login.max_user_id
        ));
    }
    bridge.bot_notice(room, text.trim_end()).await;
}

async fn sync(bridge: &Arc<Bridge>, room: &RoomId, user: &OwnedUserId) {
    let Some(session) = bridge.login_of(user) else {
        bridge
            .bot_notice(room, "You are not logged in to MAX.")
            .await;
        return;
    };
    match bridge
        .sync_chats_from(&session, super::now_ms(), Default::default())
        .await
    {
        Ok(count) => {
            bridge
                .bot_notice(room, &format!("Synchronising {count} chats."))
                .await;
        }
        Err(error) => {
            bridge
                .bot_notice(
                    room,
                    &format!("❌ Could not read chats: {}", describe(&error)),
                )
                .await;
        }
    }
}

/// Why a MAX user could not be found.
pub(crate) enum NotFound {
    /// Neither a phone number nor a user id.
    NotAnIdentifier,
    /// The account's own.
    Own,
    /// MAX knows no such user.
    Unknown,
    /// MAX answered with an error.
    Max(ClientError),
}

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotFound::NotAnIdentifier => {
                f.write_str("neither a phone number (+…) nor a MAX user id")
            }
            NotFound::Own => f.write_str("your own account"),
            NotFound::Unknown => f.write_str("no such MAX user"),
            NotFound::Max(error) => write!(f, "MAX could not find it: {}", describe(error)),
        }
    }
}

/// Finds a MAX user by phone number (`+…`, CONTACT_INFO_BY_PHONE) or id
/// (CONTACT_INFO).
pub(crate) async fn find_contact(
    session: &super::login::LoginSession,
    who: &str,
) -> Result<maxproto::types::User, NotFound> {
    let found = if who.starts_with('+') {
        let request = maxproto::types::ContactByPhoneRequest {
            phone: who.to_owned(),
            ..Default::default()
        };
        session.client.call(&request).await.map(|r| Some(r.contact))
    } else {
        match who.parse::<i64>() {
            Ok(id) if id > 0 => {
                let request = maxproto::types::ContactInfoRequest {
                    contact_ids: vec![maxproto::types::UserId(id)],
                    ..Default::default()
                };
                // Unknown ids are left out of the answer.
                session
                    .client
                    .call(&request)
                    .await
                    .map(|r| r.contacts.into_iter().find(|c| c.id.0 == id))
            }
            _ => return Err(NotFound::NotAnIdentifier),
        }
    };
    match found {
        Ok(Some(contact)) if contact.id.0 == session.max_user_id => Err(NotFound::Own),
        Ok(Some(contact)) => Ok(contact),
        Ok(None) => Err(NotFound::Unknown),
        Err(error) => Err(NotFound::Max(error)),
    }
}

/// Someone invited a MAX user's ghost into a room (a new direct chat in
/// their client): the ghost declines, saying where the direct chat with
/// that MAX user is (opened if there was none), or why there is none.
pub(crate) async fn on_ghost_invited(
    bridge: &Arc<Bridge>,
    event: &RoomEvent,
    ghost: &UserId,
    max_user_id: i64,
) {
    let user = &event.sender;
    let reason = match bridge
        .store
        .portals()
        .get_by_room(event.room_id.as_str())
        .await
    {
        Ok(Some(_)) => "MAX users join MAX chats on MAX; this invite is not bridged.".to_owned(),
        Ok(None) if bridge.config.permission_for(user.as_str()) < Permission::User => {
            "You are not allowed to use this bridge.".to_owned()
        }
        Ok(None) => match bridge.login_of(user) {
            None => "Log in to MAX first (send `login` to the bridge bot).".to_owned(),
            Some(session) => match find_contact(&session, &max_user_id.to_string()).await {
                Ok(contact) => {
                    let name = contact
                        .display_name()
                        .unwrap_or_else(|| format!("MAX user {max_user_id}"));
                    match bridge.open_dialog_portal(&session, contact).await {
                        Ok(dm) => {
                            let text = format!(
                                "Your direct chat with {name} is https://matrix.to/#/{dm} (you are invited)."
                            );
                            bridge.tell_user(user, &text).await;
                            text
                        }
                        Err(error) => format!("Could not open the chat with {name}: {error}"),
                    }
                }
                Err(why) => format!("MAX user {max_user_id}: {why}."),
            },
        },
        Err(error) => {
            tracing::error!(%error, "portal lookup failed");
            "The bridge could not read its database; try again later.".to_owned()
        }
    };
    if let Err(error) = bridge
        .matrix
        .leave_saying(ghost, &event.room_id, &reason)
        .await
    {
        tracing::warn!(room = %event.room_id, %ghost, %error, "could not decline an invite");
    }
}

/// Opens the direct chat with a MAX user found by phone number or id.
/// Most contacts listed by `search`.
const SEARCH_RESULTS: usize = 20;

/// MAX users for `query`: the one a phone number or id names (asked of
/// MAX), else the contacts whose name holds it; each with the command
/// that opens a chat with them.
async fn search(bridge: &Arc<Bridge>, room: &RoomId, user: &OwnedUserId, query: &str) {
    let Some(session) = bridge.login_of(user) else {
        bridge
            .bot_notice(room, "You are not logged in to MAX.")
            .await;
        return;
    };
    let found = match find_contact(&session, query).await {
        Ok(contact) => vec![contact],
        Err(NotFound::NotAnIdentifier) => session.contacts_named(query),
        Err(NotFound::Own) => {
            bridge.bot_notice(room, "That is your own account.").await;
            return;
        }
        Err(NotFound::Unknown) => Vec::new(),
        Err(NotFound::Max(error)) => {
            bridge
                .bot_notice(
                    room,
                    &format!("❌ MAX could not search for {query}: {}", describe(&error)),
                )
                .await;
            return;
        }
    };
    if found.is_empty() {
        bridge
            .bot_notice(room, &format!("Nobody found for «{query}»."))
            .await;
        return;
    }
    let mut text = format!("Found for «{query}»:");
    for contact in found.iter().take(SEARCH_RESULTS) {
        let name = contact
            .display_name()
            .unwrap_or_else(|| format!("MAX user {}", contact.id.0));
        text.push_str(&format!(
            "\n• {name} (id {}) — `start-chat {}`",
            contact.id.0, contact.id.0
        ));
    }
    if found.len() > SEARCH_RESULTS {
        text.push_str(&format!(
            "\n… and {} more; say more of the name.",
            found.len() - SEARCH_RESULTS
        ));
    }
    bridge.bot_notice(room, &text).await;
}

async fn start_chat(bridge: &Arc<Bridge>, room: &RoomId, user: &OwnedUserId, who: &str) {
    let Some(session) = bridge.login_of(user) else {
        bridge
            .bot_notice(room, "You are not logged in to MAX.")
            .await;
        return;
    };
    let contact = match find_contact(&session, who).await {
        Ok(contact) => contact,
        Err(NotFound::NotAnIdentifier) => {
            bridge
                .bot_notice(
                    room,
                    &format!("`{who}` is neither a phone number (+…) nor a MAX user id."),
                )
                .await;
            return;
        }
        Err(NotFound::Own) => {
            bridge.bot_notice(room, "That is your own account.").await;
            return;
        }
        Err(NotFound::Unknown) => {
            bridge
                .bot_notice(room, &format!("No MAX user {who}."))
                .await;
            return;
        }
        Err(NotFound::Max(error)) => {
            bridge
                .bot_notice(
                    room,
                    &format!("❌ MAX could not find {who}: {}", describe(&error)),
                )
                .await;
            return;
        }
    };
    let name = contact
        .display_name()
        .unwrap_or_else(|| format!("MAX user {}", contact.id.0));
    match bridge.open_dialog_portal(&session, contact).await {
        Ok(chat) => {
            bridge
                .bot_notice(
                    room,
                    &format!(
                        "Direct chat with {name}: https://matrix.to/#/{chat} (you are invited)."
                    ),
                )
                .await
        }
        Err(error) => {
            bridge
                .bot_notice(
                    room,
                    &format!("❌ Could not open the chat with {name}: {error}"),
                )
                .await
        }
    }
}

async fn list(bridge: &Arc<Bridge>, room: &RoomId, user: &OwnedUserId) {
    let login = match bridge.store.logins().get(user.as_str()).await {
        Ok(Some(login)) => login,
        Ok(None) => {
            bridge
                .bot_notice(room, "You are not logged in to MAX.")
                .await;
            return;
        }
        Err(error) => {
            tracing::error!(%error, "login lookup failed");
            return;
        }
    };
    let portals = match bridge.store.portals().for_receiver(login.max_user_id).await {
        Ok(portals) => portals,
        Err(error) => {
            tracing::error!(%error, "portal lookup failed");
            return;
        }
    };
    if portals.is_empty() {
        bridge.bot_notice(room, "No bridged chats yet.").await;
        return;
    }
    let mut text = format!("Bridged chats ({}):", portals.len());
    for portal in portals {
        let name = portal.name.unwrap_or_else(|| portal.chat_id.to_string());
        let room = match portal.room_id {
            Some(room) => format!("[{room}](https://matrix.to/#/{room})"),
            None => "(no room yet)".to_owned(),
        };
        text.push_str(&format!("\n• {name} ({}) — {room}", portal.kind.as_str()));
    }
    bridge.bot_notice(room, &text).await;
}

#[cfg(test)]
mod tests {
    use crate::bridge::sms_login::looks_like_phone;

    #[test]
    fn phone_numbers_as_people_type_them() {
        for phone in [
            "+79001234567",
            "+7 900 123-45-67",
            "8 (900) 123-45-67",
            "+44.20.7946.0958",
        ] {
            assert!(looks_like_phone(phone), "{phone}");
        }
        for text in [
            "help",
            "+7900",
            "hello 79001234567",
            "+7 900 123 45 67 89 01 2",
            "",
            "+",
        ] {
            assert!(!looks_like_phone(text), "{text}");
        }
    }
}
