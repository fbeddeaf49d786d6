//! MAX messages into Matrix events: live pushes, catch-up from history
//! after a gap or a reconnection, edits and deletions.

use super::{HOMESERVER_RETRY_FIRST, HOMESERVER_RETRY_MAX};
use crate::bridge::Bridge;
use crate::bridge::convert;
use crate::bridge::login::LoginSession;
use crate::bridge::portal::{PortalError, PortalKey};
use crate::matrix::MatrixError;
use crate::metrics::Direction;
use crate::store::{MessageRow, PortalMark};
use maxproto::types::{Chat, ChatHistoryRequest, ChatId, Message};
use ruma::{RoomId, UserId};
use serde_json::{Value, json};
use std::sync::Arc;

/// Messages asked for per CHAT_HISTORY page while catching up.
const HISTORY_PAGE: i64 = 100;
/// Pages read at most in one catch-up (the limit on bridged messages is the
/// config's; this only bounds the reading of a very long absence).
const HISTORY_MAX_PAGES: usize = 1000;
/// Messages before the mark read again on a (re)connection, to apply the
/// edits and deletions made meanwhile to messages already bridged.
const RECHECK_WINDOW: i64 = 30;
/// Content key that ties a Matrix event to its transaction id, so that a
/// send whose answer was lost (homeserver restarting) can be found again
/// instead of sent twice: the homeserver forgets transaction ids of
/// appservice users when it restarts.
const TXN_KEY: &str = "net.maxbridge.txn";

impl Bridge {
    /// A (re)connection found `chat`: bridge from MAX history what came
    /// after the portal's mark, and apply edits and deletions of the last
    /// messages bridged.
    pub(crate) async fn catch_up(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        chat: &Chat,
    ) -> Result<(), PortalError> {
        let key = session.portal_key(chat.id.0);
        let Some(mark) = self.store.portals().mark(key.chat_id, key.receiver).await? else {
            return Ok(());
        };
        self.recheck_bridged(session, key, mark).await?;
        let behind = chat
            .last_message
            .as_ref()
            .is_some_and(|last| last.id.0 > mark.message_id);
        if behind {
            self.catch_up_from(session, key, mark).await?;
        }
        Ok(())
    }

    /// A live message push (128).
    pub(crate) async fn on_max_push(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        message: &Message,
        prev: Option<i64>,
    ) -> Result<(), PortalError> {
        tracing::debug!(chat = key.chat_id, receiver = key.receiver, message = message.id.0, ?prev, sender = ?message.sender, status = ?message.status, "MAX message");
        // An edit, deletion or repeat of the message being recorded needs
        // its mapping; a new message goes on beside the record.
        let mark = PortalMark {
            message_id: message.id.0,
            time: message.time,
        };
        // The echo of a message being recorded moves the mark past itself,
        // so it must not pass over messages never seen: with a gap before
        // it (pushes that came while the login was still syncing its chats,
        // or lost), it takes the way of any message, which catches up first.
        if !message.is_removed()
            && !message.is_edited()
            && !self.gap_before(key, prev).await?
            && self.echo_of_recording(key, mark)
        {
            tracing::debug!(message = message.id.0, "MAX message being recorded");
            return Ok(());
        }
        if self
            .recording(key)
            .is_some_and(|newest| message.id.0 <= newest)
        {
            self.settle_record(key).await;
        }
        let known = self
            .store
            .messages()
            .by_max_id(key.chat_id, key.receiver, message.id.0)
            .await?;
        if message.is_removed() {
            return self.redact_bridged(key, &known).await;
        }
        if message.is_edited() && !known.is_empty() {
            return Box::pin(self.on_max_edit(session, key, message, &known)).await;
        }
        let stored = self.store.portals().mark(key.chat_id, key.receiver).await?;
        // The message being recorded counts as bridged: it is, and its
        // record moves the mark.
        let mark = match (stored, self.mark_when_recorded(key)) {
            (Some(stored), Some(recording)) if recording.message_id > stored.message_id => {
                Some(recording)
            }
            (stored, _) => stored,
        };
        match mark {
            // No portal yet: this message starts it, after the newest of
            // what came before as its history.
            None if !self.wants_portal(session, key.chat_id, None).await => {
                tracing::debug!(
                    chat = key.chat_id,
                    "no portal: bridge.portal_filter leaves it out"
                );
                Ok(())
            }
            None => {
                let live = PortalMark {
                    message_id: prev.unwrap_or(0),
                    time: message.time - 1,
                };
                let start = self.history_start(session, key.chat_id, live).await;
                if start != live {
                    self.portal_room(session, key.chat_id, start).await?;
                    Box::pin(self.backfill(session, key, start, live)).await?;
                    // History normally held this message too.
                    return self.bridge_message(session, key, message, None, None).await;
                }
                self.bridge_message(session, key, message, Some(start), Some(known))
                    .await
            }
            Some(mark) if message.id.0 <= mark.message_id => {
                tracing::debug!(message = message.id.0, "MAX message already accounted for");
                Ok(())
            }
            // Something came between the mark and this message that was
            // never seen (a crash, a drop): history has it.
            Some(mark) if prev.is_some_and(|prev| prev > mark.message_id) => {
                tracing::info!(
                    chat = key.chat_id,
                    receiver = key.receiver,
                    mark = mark.message_id,
                    ?prev,
                    "gap before a MAX message; catching up"
                );
                self.settle_record(key).await;
                Box::pin(self.catch_up_from(session, key, mark)).await?;
                // History normally holds the message; if not yet, it goes
                // after what history gave (which may have bridged it: read
                // again).
                self.bridge_message(session, key, message, None, None).await
            }
            Some(_) => {
                self.bridge_message(session, key, message, None, Some(known))
                    .await
            }
        }
    }

    /// Whether `prev` (the message before a pushed one) is newer than
    /// everything the portal has accounted for or is recording: then
    /// something between was never seen.
    async fn gap_before(&self, key: PortalKey, prev: Option<i64>) -> Result<bool, PortalError> {
        let Some(prev) = prev else {
            return Ok(false);
        };
        let stored = self.store.portals().mark(key.chat_id, key.receiver).await?;
        let known = stored
            .into_iter()
            .chain(self.mark_when_recorded(key))
            .map(|m| m.message_id)
            .max();
        Ok(known.is_some_and(|known| prev > known))
    }

    /// Where a new portal of the chat starts so that its history comes in
    /// with it: just before the oldest of the newest
    /// `backfill.max_initial_messages` messages up to `live` (the chat as
    /// it is now). `live` itself without backfill, history or an answer.
    pub(crate) async fn history_start(
        &self,
        session: &LoginSession,
        chat_id: i64,
        live: PortalMark,
    ) -> PortalMark {
        // Bridged by the catch-up, whose limit must not call them missed.
        let wanted = self
            .config
            .backfill
            .max_initial_messages
            .min(self.config.bridge.max_catchup_messages);
        if wanted == 0 {
            return live;
        }
        let request = ChatHistoryRequest::backward(ChatId(chat_id), live.time, i64::from(wanted));
        let page = match session.client.call(&request).await {
            Ok(answer) => answer.messages,
            Err(error) => {
                tracing::warn!(chat = chat_id, %error, "history unavailable; the portal starts without it");
                return live;
            }
        };
        let mut ids: Vec<(i64, i64)> = page
            .iter()
            .filter(|m| live.message_id == 0 || m.id.0 <= live.message_id)
            .map(|m| (m.id.0, m.time))
            .collect();
        ids.sort_unstable();
        let skip = ids.len().saturating_sub(wanted as usize);
        match ids.get(skip) {
            Some(&(id, time)) => PortalMark {
                message_id: id - 1,
                time: time - 1,
            },
            None => live,
        }
    }

    /// Brings a new portal's history in: what the chat holds after `start`
    /// (see [`Self::history_start`]), in order, with MAX's times.
    pub(crate) async fn backfill(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        start: PortalMark,
        live: PortalMark,
    ) -> Result<(), PortalError> {
        if start == live {
            return Ok(());
        }
        tracing::info!(
            chat = key.chat_id,
            receiver = key.receiver,
            "bringing in the new portal's history"
        );
        self.catch_up_from(session, key, start).await
    }

    /// Reads the chat's history after `mark` up to the live edge and bridges
    /// it in order; at most `max_catchup_messages` (the newest), with a
    /// notice in the room saying how many older ones were skipped.
    async fn catch_up_from(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        mark: PortalMark,
    ) -> Result<(), PortalError> {
        let limit = self.config.bridge.max_catchup_messages as usize;
        let mut missed: std::collections::VecDeque<Message> = std::collections::VecDeque::new();
        let mut skipped: u64 = 0;
        let mut skipped_up_to: Option<PortalMark> = None;
        let mut seen = mark.message_id;
        let mut from = mark.time;
        for _ in 0..HISTORY_MAX_PAGES {
            let request = ChatHistoryRequest::forward(ChatId(key.chat_id), from, HISTORY_PAGE);
            let mut page = session.client.call(&request).await?.messages;
            let count = page.len() as i64;
            page.sort_by_key(|m| m.id);
            let mut newest = from;
            for message in page {
                if message.id.0 <= seen {
                    continue;
                }
                seen = message.id.0;
                newest = newest.max(message.time);
                if message.is_removed() {
                    continue;
                }
                if missed.len() >= limit
                    && let Some(dropped) = missed.pop_front()
                {
                    skipped += 1;
                    skipped_up_to = Some(PortalMark {
                        message_id: dropped.id.0,
                        time: dropped.time,
                    });
                }
                if limit > 0 {
                    missed.push_back(message);
                } else {
                    skipped += 1;
                    skipped_up_to = Some(PortalMark {
                        message_id: message.id.0,
                        time: message.time,
                    });
                }
            }
            if count < HISTORY_PAGE {
                break;
            }
            // A full page of one millisecond would be read again forever.
            from = if newest > from { newest } else { from + 1 };
        }
        if let Some(up_to) = skipped_up_to {
            self.settle_record(key).await;
            self.store
                .portals()
                .advance_mark(key.chat_id, key.receiver, up_to)
                .await?;
            tracing::warn!(
                chat = key.chat_id,
                receiver = key.receiver,
                skipped,
                "missed MAX messages over the catch-up limit skipped"
            );
            if let Some(room) = self.existing_room(key).await? {
                self.bot_notice(
                    &room,
                    &format!(
                        "⚠️ {skipped} older messages sent while the bridge was away were not bridged (the limit is {limit} per chat). Open the chat in MAX to read them."
                    ),
                )
                .await;
            }
        }
        if !missed.is_empty() {
            tracing::info!(
                chat = key.chat_id,
                receiver = key.receiver,
                messages = missed.len(),
                "catching up missed MAX messages"
            );
        }
        for message in &missed {
            let known = self
                .store
                .messages()
                .by_max_id(key.chat_id, key.receiver, message.id.0)
                .await?;
            if message.is_edited() && !known.is_empty() {
                self.on_max_edit(session, key, message, &known).await?;
            }
            self.bridge_message(session, key, message, None, Some(known))
                .await?;
        }
        Ok(())
    }

    /// The last messages up to the mark, as history has them now: edits
    /// made and messages deleted while the bridge was away or disconnected
    /// are applied (deleted messages vanish from MAX history).
    async fn recheck_bridged(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        mark: PortalMark,
    ) -> Result<(), PortalError> {
        if mark.message_id == 0 {
            return Ok(());
        }
        let request = ChatHistoryRequest::backward(ChatId(key.chat_id), mark.time, RECHECK_WINDOW);
        let page = session.client.call(&request).await?.messages;
        let Some(oldest) = page.iter().map(|m| m.time).min() else {
            return Ok(());
        };
        // Only a full window bounds the range it covers; a shorter one is
        // the whole chat up to the mark.
        // Others of the oldest message's millisecond may be cut off.
        let window_start = if page.len() as i64 >= RECHECK_WINDOW {
            oldest + 1
        } else {
            i64::MIN
        };
        let present: std::collections::HashSet<i64> = page
            .iter()
            .filter(|m| !m.is_removed())
            .map(|m| m.id.0)
            .collect();
        let bridged = self
            .store
            .messages()
            .live_between(key.chat_id, key.receiver, window_start, mark.time)
            .await?;
        for row in bridged {
            if row.max_message_id <= mark.message_id && !present.contains(&row.max_message_id) {
                tracing::info!(
                    chat = key.chat_id,
                    message = row.max_message_id,
                    "MAX message deleted while away"
                );
                let parts = self
                    .store
                    .messages()
                    .by_max_id(key.chat_id, key.receiver, row.max_message_id)
                    .await?;
                self.redact_bridged(key, &parts).await?;
            }
        }
        for message in page.iter().filter(|m| m.is_edited() && !m.is_removed()) {
            let known = self
                .store
                .messages()
                .by_max_id(key.chat_id, key.receiver, message.id.0)
                .await?;
            if !known.is_empty() {
                self.on_max_edit(session, key, message, &known).await?;
            }
        }
        Ok(())
    }

    /// Bridges one MAX message (each part not bridged yet) and moves the
    /// portal's mark to it. `start` is where a portal created for it starts;
    /// `known` is what the message already became, when the caller has just
    /// read it (else it is read here).
    async fn bridge_message(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        message: &Message,
        start: Option<PortalMark>,
        known: Option<Vec<MessageRow>>,
    ) -> Result<(), PortalError> {
        let known = match known {
            Some(known) => known,
            None => {
                // A catch-up just before may still be recording it.
                if self
                    .recording(key)
                    .is_some_and(|newest| message.id.0 <= newest)
                {
                    self.settle_record(key).await;
                }
                self.store
                    .messages()
                    .by_max_id(key.chat_id, key.receiver, message.id.0)
                    .await?
            }
        };
        let taken = std::time::Instant::now();
        let mark = PortalMark {
            message_id: message.id.0,
            time: message.time,
        };
        let origin = match message.forwarded() {
            Some(original) => self.forward_origin(session, message, original).await,
            None => None,
        };
        let text = convert::max_text_to_matrix(message, origin.as_deref());
        // A forward's media are the forwarded message's, found in its chat.
        let shown = convert::shown(message);
        let media_chat = match message.link.as_ref().and_then(|l| l.chat_id) {
            Some(chat) if !std::ptr::eq(shown, message) => chat.0,
            _ => key.chat_id,
        };
        let media: Vec<_> = shown
            .attaches
            .iter()
            .take(convert::MAX_ATTACHES)
            .filter(|a| convert::is_media(a))
            .collect();
        let parts = usize::from(text.is_some()) + media.len();
        let done: std::collections::HashSet<i32> = known.iter().map(|row| row.part).collect();
        // The echo of a message this bridge sent was recorded by the send,
        // before this push could be handled (both go through this queue);
        // a message bridged before a crash is recorded too.
        // Its mark moves in memory only: a catch-up from the stored mark
        // finds it recorded, and the next bridged message stores the mark.
        if !known.is_empty() && (parts == 0 || (0..parts).all(|p| done.contains(&(p as i32)))) {
            // Memory must not run ahead of a record still being written.
            self.settle_record(key).await;
            self.store
                .portals()
                .accounted(key.chat_id, key.receiver, mark);
            return Ok(());
        }
        if parts == 0 {
            self.settle_record(key).await;
            self.store
                .portals()
                .advance_mark(key.chat_id, key.receiver, mark)
                .await?;
            return Ok(());
        }
        let sender = message.sender.map(|s| s.0);
        let start = start.unwrap_or(PortalMark {
            message_id: 0,
            time: message.time - 1,
        });
        let (_, room) = self.portal_room(session, key.chat_id, start).await?;
        // Channel posts have no sender: they speak as the bot.
        let author = match sender {
            Some(id) => self.speaker(session, id).await?,
            None => self.bot.clone(),
        };
        self.add_to_room(&room, &author).await?;
        let ts = u64::try_from(message.time).ok().filter(|t| *t > 0);
        // The text (if any) first, then one event per media attachment;
        // each is a part of the message, so edits, deletions and replies
        // find them all.
        for part in 0..parts {
            if done.contains(&(part as i32)) {
                continue;
            }
            let (event_type, mut content) = match (&text, part) {
                (Some(text), 0) => ("m.room.message", text.clone()),
                (Some(_), n) => {
                    Box::pin(self.media_event(session, media_chat, shown, media[n - 1])).await
                }
                (None, n) => {
                    let (event_type, mut content) =
                        Box::pin(self.media_event(session, media_chat, shown, media[n])).await;
                    if convert::is_captioned_media(message) {
                        convert::put_caption(&mut content, &convert::max_to_matrix(message));
                    }
                    (event_type, content)
                }
            };
            convert::pills_for_mentions(&mut content, |user| self.mentioned(session, key, user));
            if part == 0
                && let Some(reply_to) = message.reply_to()
            {
                // It may answer the message being recorded.
                self.settle_record(key).await;
                if let Some(target) = self
                    .store
                    .messages()
                    .by_max_id(key.chat_id, key.receiver, reply_to.0)
                    .await?
                    .into_iter()
                    .next()
                {
                    content["m.relates_to"] =
                        json!({"m.in_reply_to": {"event_id": target.event_id}});
                    // An answer to the user's own message mentions them, as
                    // a reply made in Matrix would (intentional mentions).
                    if target.sender == key.receiver {
                        let mut users: Vec<Value> = content["m.mentions"]["user_ids"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default();
                        users.push(json!(session.mxid.as_str()));
                        content["m.mentions"] = json!({"user_ids": users});
                    }
                }
            }
            let txn = format!(
                "max-{}-{}-{}-{part}",
                key.receiver, key.chat_id, message.id.0
            );
            let event_id = self
                .send_once(&author, &room, event_type, &mut content, &txn, ts)
                .await?;
            let kind = match content["msgtype"].as_str() {
                Some(msgtype) => msgtype,
                None if event_type == convert::POLL_START => "poll",
                None => event_type,
            };
            self.metrics.bridged(
                Direction::MaxToMatrix,
                kind,
                taken.elapsed(),
                crate::metrics::age_of(message.time),
            );
            self.record_behind(
                key,
                MessageRow {
                    chat_id: key.chat_id,
                    receiver: key.receiver,
                    max_message_id: message.id.0,
                    part: part as i32,
                    event_id: event_id.to_string(),
                    room_id: room.to_string(),
                    sender: sender.unwrap_or(0),
                    timestamp_ms: message.time,
                },
                part + 1 == parts,
                None,
            )
            .await;
        }
        // The last part's record moves the mark; when a retry found that
        // part recorded already, it is moved here.
        if done.contains(&(parts as i32 - 1)) {
            self.settle_record(key).await;
            self.store
                .portals()
                .advance_mark(key.chat_id, key.receiver, mark)
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn on_max_deleted(
        &self,
        key: PortalKey,
        message_ids: &[i64],
    ) -> Result<(), PortalError> {
        for id in message_ids {
            let known = self
                .store
                .messages()
                .by_max_id(key.chat_id, key.receiver, *id)
                .await?;
            self.redact_bridged(key, &known).await?;
        }
        Ok(())
    }

    /// Sends one event of a MAX message to Matrix exactly once. The
    /// transaction id makes a retry idempotent while the homeserver keeps
    /// running; across its restart it forgets transaction ids, so a send
    /// whose outcome is unknown is looked for in the room (by the
    /// transaction id in its content) before it is sent again. Outages are
    /// retried by the portal (which holds its queue, keeping order).
    async fn send_once(
        &self,
        author: &UserId,
        room: &RoomId,
        event_type: &str,
        content: &mut Value,
        txn: &str,
        ts: Option<u64>,
    ) -> Result<ruma::OwnedEventId, MatrixError> {
        content[TXN_KEY] = json!(txn);
        self.mark_puppet_content(author, content);
        let client = self.client_for(author);
        let started = tokio::time::Instant::now();
        let patience = self.config.outage_patience();
        let mut delay = HOMESERVER_RETRY_FIRST;
        let mut waiting = None;
        loop {
            let attempt = async {
                if self.is_unsure_send(txn)
                    && let Some(event_id) =
                        client.find_recent_event(author, room, TXN_KEY, txn).await?
                {
                    tracing::info!(room = %room, txn, "event was sent before the homeserver went away");
                    return Ok(event_id);
                }
                client
                    .send_message_once(author, room, event_type, &*content, txn, ts)
                    .await
            };
            match attempt.await {
                Ok(event_id) => {
                    self.set_unsure_send(txn, false);
                    return Ok(event_id);
                }
                Err(error) if error.is_transient() && started.elapsed() + delay < patience => {
                    // A request that never reached the homeserver cannot
                    // have created the event; any other failure may have.
                    if !error.is_connect() {
                        self.set_unsure_send(txn, true);
                    }
                    if waiting.is_none() {
                        tracing::warn!(room = %room, %error, "homeserver unavailable; holding the portal's messages");
                        waiting = Some(self.waiting_for_homeserver());
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(HOMESERVER_RETRY_MAX);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Redacts the events of a MAX message deleted on MAX (once: the
    /// mapping is kept, marked deleted, so a late echo is still known).
    async fn redact_bridged(
        &self,
        key: PortalKey,
        known: &[MessageRow],
    ) -> Result<(), PortalError> {
        let Some(first) = known.first() else {
            return Ok(());
        };
        for row in known {
            let (Some(room), Ok(event)) = (
                crate::bridge::room_id(&row.room_id),
                ruma::OwnedEventId::try_from(row.event_id.as_str()),
            ) else {
                continue;
            };
            let txn = format!("redact-{}", row.event_id);
            self.matrix
                .redact(&self.bot, &room, &event, Some("Deleted on MAX"), &txn)
                .await?;
        }
        self.metrics.bridged(
            Direction::MaxToMatrix,
            "m.room.redaction",
            std::time::Duration::ZERO,
            None,
        );
        self.store
            .messages()
            .set_deleted(key.chat_id, key.receiver, first.max_message_id)
            .await?;
        Ok(())
    }

    /// The Matrix user a MAX mention of `user` stands for: the portal's
    /// owner for their own account (so they are notified), else the ghost.
    fn mentioned(&self, session: &LoginSession, key: PortalKey, user: i64) -> String {
        if user == key.receiver {
            session.mxid.to_string()
        } else {
            self.config.ghost_user_id(user)
        }
    }

    /// Whom a forward comes from, as people see it: the original author's
    /// name, or the channel's or chat's.
    async fn forward_origin(
        &self,
        session: &LoginSession,
        message: &Message,
        original: &Message,
    ) -> Option<String> {
        let chat_name = message.link.as_ref().and_then(|l| l.chat_name.clone());
        let Some(author) = original.sender else {
            return chat_name;
        };
        let contact = match session.contact(author.0) {
            Some(contact) => Some(contact),
            None => {
                self.prefetch_contacts(session, &[author.0]).await;
                session.contact(author.0)
            }
        };
        contact.and_then(|c| c.display_name()).or(chat_name)
    }

    /// The content of a bridged media event with the edited message's text
    /// as its caption, or `None` if the event is not a media event the
    /// homeserver still has.
    async fn recaptioned(
        &self,
        room: &RoomId,
        row: &MessageRow,
        message: &Message,
    ) -> Result<Option<Value>, MatrixError> {
        let Ok(event_id) = ruma::EventId::parse(&row.event_id) else {
            return Ok(None);
        };
        let Some(event) = self.matrix.get_event(&self.bot, room, &event_id).await? else {
            return Ok(None);
        };
        let mut content = event["content"].clone();
        let is_media = content["msgtype"]
            .as_str()
            .is_some_and(crate::bridge::media::is_media_msgtype);
        if !is_media || content.get("url").is_none() {
            return Ok(None);
        }
        if let Some(object) = content.as_object_mut() {
            object.remove("m.relates_to");
            object.remove("m.new_content");
            object.remove(TXN_KEY);
        }
        convert::put_caption(&mut content, &convert::max_to_matrix(message));
        Ok(Some(content))
    }

    /// A MAX edit of a bridged message becomes an `m.replace` — once per
    /// edit: the edit's time is recorded, and this bridge's own edits
    /// (from Matrix) are not sent back.
    async fn on_max_edit(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        message: &Message,
        known: &[MessageRow],
    ) -> Result<(), PortalError> {
        let Some(original) = known.first() else {
            return Ok(());
        };
        let edit_time = message.update_time.unwrap_or(message.time);
        let bridged = self
            .store
            .messages()
            .edited_ms(key.chat_id, key.receiver, message.id.0)
            .await?;
        if bridged.is_some_and(|t| t >= edit_time) || session.is_own_edit(message.id.0, edit_time) {
            return Ok(());
        }
        let Some(room) = crate::bridge::room_id(&original.room_id) else {
            return Ok(());
        };
        let author = match message.sender {
            Some(id) => self.speaker(session, id.0).await?,
            None => self.bot.clone(),
        };
        self.add_to_room(&room, &author).await?;
        // A captioned media is one event: its edit keeps the media and
        // changes the caption.
        let new_content = match known {
            [only] if convert::is_captioned_media(message) => {
                self.recaptioned(&room, only, message).await?
            }
            _ => None,
        }
        .unwrap_or_else(|| convert::max_to_matrix(message));
        let mut new_content = new_content;
        convert::pills_for_mentions(&mut new_content, |user| self.mentioned(session, key, user));
        let mut content = json!({
            "msgtype": new_content["msgtype"],
            "body": format!("* {}", new_content["body"].as_str().unwrap_or_default()),
            "m.new_content": new_content,
            "m.relates_to": {"rel_type": "m.replace", "event_id": original.event_id},
        });
        if let Some(html) = content["m.new_content"]["formatted_body"]
            .as_str()
            .map(|html| format!("* {html}"))
        {
            content["format"] = json!("org.matrix.custom.html");
            content["formatted_body"] = json!(html);
        }
        let txn = format!(
            "max-edit-{}-{}-{}-{edit_time}",
            key.receiver, key.chat_id, message.id.0
        );
        let ts = u64::try_from(edit_time).ok().filter(|t| *t > 0);
        let taken = std::time::Instant::now();
        self.send_once(&author, &room, "m.room.message", &mut content, &txn, ts)
            .await?;
        self.metrics.bridged(
            Direction::MaxToMatrix,
            "edit",
            taken.elapsed(),
            crate::metrics::age_of(edit_time),
        );
        self.store
            .messages()
            .set_edited_ms(key.chat_id, key.receiver, message.id.0, edit_time)
            .await?;
        Ok(())
    }
}
