//! Messages both ways in a portal: MAX messages (new, edited, deleted,
//! missed while away) into Matrix events, and the portal owner's Matrix
//! messages, edits and redactions into MAX requests. Runs on the portal's
//! queue, so a send's mapping is stored before its echo is looked at.

use super::Bridge;
use super::convert;
use super::login::LoginSession;
use super::portal::{PortalError, PortalKey};
use crate::matrix::{Handled, MatrixError, RoomEvent};
use crate::store::{MessageRow, PortalMark};
use maxproto::types::{
    Chat, ChatHistoryRequest, ChatId, Message, MessageLink, MsgDeleteRequest, MsgEditRequest,
    MsgSendRequest, OutgoingMessage,
};
use ruma::{RoomId, UserId};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Messages asked for per CHAT_HISTORY page while catching up.
const HISTORY_PAGE: i64 = 100;
/// Pages read at most in one catch-up (the limit on bridged messages is the
/// config's; this only bounds the reading of a very long absence).
const HISTORY_MAX_PAGES: usize = 1000;
/// Messages before the mark read again on a (re)connection, to apply the
/// edits and deletions made meanwhile to messages already bridged.
const RECHECK_WINDOW: i64 = 30;
/// Backoff of a send to the homeserver that failed for a while.
const HOMESERVER_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
const HOMESERVER_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);
/// Content key that ties a Matrix event to its transaction id, so that a
/// send whose answer was lost (homeserver restarting) can be found again
/// instead of sent twice: the homeserver forgets transaction ids of
/// appservice users when it restarts.
const TXN_KEY: &str = "net.maxbridge.txn";
/// How long a stopping bridge waits for mappings still being written.
const RECORDS_AT_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(5);

/// Mappings of bridged MAX messages still being written: a portal sends
/// its next messages while the last ones' mappings commit, so a busy portal
/// is not held to one commit per message. Each portal with mappings in
/// flight has one recorder task that writes them in order, all that have
/// come meanwhile in one transaction.
///
/// A crash in that window leaves up to [`RECORDS_BEHIND`] sent messages
/// unrecorded instead of one; they are sent again from MAX history under
/// the same transaction ids, which the homeserver deduplicates (as for any
/// send not yet recorded). Whatever reads what the records write waits for
/// them first ([`Bridge::settle_record`]).
#[derive(Debug, Default)]
pub(crate) struct InFlightRecords(std::sync::Mutex<HashMap<PortalKey, InFlight>>);

/// Parts sent but not yet recorded, per portal at most.
const RECORDS_BEHIND: usize = 64;

#[derive(Debug)]
struct InFlight {
    /// Parts waiting for the recorder's next write.
    waiting: Vec<(MessageRow, bool)>,
    /// Matrix events that are done once the waiting parts are written.
    holds: Vec<Arc<Handled>>,
    /// The newest MAX message with a part being recorded.
    newest: i64,
    /// The newest message being recorded with the mark.
    advancing: Option<PortalMark>,
    /// MAX messages sent from Matrix whose mappings are waiting or being
    /// written: their echoes need nothing more.
    sent: Vec<i64>,
    /// The newest of these messages whose MAX echo came meanwhile: the mark
    /// moves to it (in memory, as for any echo) once they are written.
    echoed: Option<PortalMark>,
    /// The recorder; finished with the entry still here only if it panicked.
    recorder: tokio::task::AbortHandle,
    /// Completes when the recorder has written everything and stopped.
    finished: futures_util::future::Shared<futures_util::future::BoxFuture<'static, ()>>,
}

impl InFlightRecords {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PortalKey, InFlight>> {
        // Nothing panics while holding it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Bridge {
    /// Waits until the portal's mappings are written (or given up).
    pub(crate) async fn settle_record(&self, key: PortalKey) {
        let finished = self.records.lock().get(&key).map(|f| f.finished.clone());
        if let Some(finished) = finished {
            finished.await;
        }
    }

    /// The newest MAX message with a mapping being written in the portal.
    fn recording(&self, key: PortalKey) -> Option<i64> {
        self.records
            .lock()
            .get(&key)
            .map(|in_flight| in_flight.newest)
    }

    /// Where the portal's mark is once its mappings being written are.
    fn mark_when_recorded(&self, key: PortalKey) -> Option<PortalMark> {
        let records = self.records.lock();
        let in_flight = records.get(&key)?;
        in_flight
            .advancing
            .into_iter()
            .chain(in_flight.echoed)
            .max_by_key(|m| m.message_id)
    }

    /// Whether `mark`'s message was sent from Matrix and is being recorded,
    /// and if so notes that its echo came: nothing more to do for it.
    fn echo_of_recording(&self, key: PortalKey, mark: PortalMark) -> bool {
        let mut records = self.records.lock();
        let Some(in_flight) = records.get_mut(&key) else {
            return false;
        };
        let echo = in_flight.sent.contains(&mark.message_id);
        if echo
            && in_flight
                .echoed
                .is_none_or(|e| e.message_id < mark.message_id)
        {
            in_flight.echoed = Some(mark);
        }
        echo
    }

    /// Writes a part's mapping (and with `advance` the portal's mark) while
    /// the portal goes on, after the portal's earlier parts; `hold` is done
    /// once it is written.
    async fn record_behind(
        self: &Arc<Self>,
        key: PortalKey,
        row: MessageRow,
        advance: bool,
        hold: Option<Arc<Handled>>,
    ) {
        let full = self
            .records
            .lock()
            .get(&key)
            .is_some_and(|f| f.waiting.len() >= RECORDS_BEHIND);
        if full {
            self.settle_record(key).await;
        }
        let mark = PortalMark {
            message_id: row.max_message_id,
            time: row.timestamp_ms,
        };
        let id = row.max_message_id;
        let mut records = self.records.lock();
        let push = |in_flight: &mut InFlight| {
            if hold.is_some() {
                in_flight.sent.push(id);
            }
            in_flight.waiting.push((row, advance));
            in_flight.holds.extend(hold);
            in_flight.newest = in_flight.newest.max(id);
            if advance {
                in_flight.advancing = Some(mark);
            }
        };
        if let Some(in_flight) = records.get_mut(&key)
            && !in_flight.recorder.is_finished()
        {
            push(in_flight);
            return;
        }
        let bridge = Arc::clone(self);
        let recorder = tokio::spawn(async move { bridge.run_recorder(key).await });
        let abort = recorder.abort_handle();
        let finished: futures_util::future::BoxFuture<'static, ()> = Box::pin(async move {
            // A panic in the recorder is a bug; what it did not write is
            // taken over by the next recorder of the portal.
            let _ = recorder.await;
        });
        let finished = futures_util::FutureExt::shared(finished);
        let in_flight = match records.remove(&key) {
            Some(dead) => InFlight {
                recorder: abort,
                finished,
                ..dead
            },
            None => InFlight {
                waiting: Vec::new(),
                holds: Vec::new(),
                newest: id,
                advancing: None,
                sent: Vec::new(),
                echoed: None,
                recorder: abort,
                finished,
            },
        };
        push(records.entry(key).or_insert(in_flight));
    }

    /// A portal's recorder: writes what is waiting until nothing is.
    /// Outages are retried for the outage patience, as the portal would;
    /// parts that fail for good stay sent and unrecorded, so the next
    /// catch-up sends them again under their transaction ids.
    async fn run_recorder(&self, key: PortalKey) {
        loop {
            let (rows, holds) = {
                let mut records = self.records.lock();
                let Some(in_flight) = records.get_mut(&key) else {
                    return;
                };
                if in_flight.waiting.is_empty() {
                    if let Some(echoed) = in_flight.echoed {
                        self.store
                            .portals()
                            .accounted(key.chat_id, key.receiver, echoed);
                    }
                    records.remove(&key);
                    return;
                }
                (
                    std::mem::take(&mut in_flight.waiting),
                    std::mem::take(&mut in_flight.holds),
                )
            };
            let started = tokio::time::Instant::now();
            let patience = self.config.outage_patience();
            let mut delay = HOMESERVER_RETRY_FIRST;
            loop {
                match self.store.messages().record_all(&rows).await {
                    Ok(_) => break,
                    Err(error) if error.is_transient() && started.elapsed() + delay < patience => {
                        tracing::warn!(chat = key.chat_id, receiver = key.receiver, %error, "database unavailable; retrying bridged messages' mappings");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(HOMESERVER_RETRY_MAX);
                    }
                    Err(error) => {
                        tracing::error!(chat = key.chat_id, receiver = key.receiver, parts = rows.len(), %error, "bridged messages' mappings could not be recorded");
                        break;
                    }
                }
            }
            let written: Vec<i64> = rows.iter().map(|(r, _)| r.max_message_id).collect();
            if let Some(in_flight) = self.records.lock().get_mut(&key) {
                in_flight.sent.retain(|id| !written.contains(id));
            }
            drop(holds);
        }
    }

    /// Waits for every mapping still being written, for a bounded time.
    pub(crate) async fn settle_all_records(&self) {
        let in_flight: Vec<_> = self
            .records
            .lock()
            .values()
            .map(|f| f.finished.clone())
            .collect();
        let all = futures_util::future::join_all(in_flight);
        if tokio::time::timeout(RECORDS_AT_SHUTDOWN, all)
            .await
            .is_err()
        {
            tracing::warn!(
                "stopped before every bridged message's mapping was written; they are sent again (deduplicated) after the restart"
            );
        }
    }

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
        if !message.is_removed() && !message.is_edited() && self.echo_of_recording(key, mark) {
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
            return self.on_max_edit(session, key, message, &known).await;
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
            // No portal yet: this message starts it.
            None => {
                let start = PortalMark {
                    message_id: prev.unwrap_or(0),
                    time: message.time - 1,
                };
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
                self.catch_up_from(session, key, mark).await?;
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
                self.store
                    .messages()
                    .by_max_id(key.chat_id, key.receiver, message.id.0)
                    .await?
            }
        };
        let mark = PortalMark {
            message_id: message.id.0,
            time: message.time,
        };
        let text = convert::max_text_to_matrix(message);
        let media: Vec<_> = message
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
            Some(id) => self.ensure_ghost(session, id).await?,
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
                    self.media_event(session, key.chat_id, message, media[n - 1])
                        .await
                }
                (None, n) => {
                    self.media_event(session, key.chat_id, message, media[n])
                        .await
                }
            };
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
                }
            }
            let txn = format!(
                "max-{}-{}-{}-{part}",
                key.receiver, key.chat_id, message.id.0
            );
            let event_id = self
                .send_once(&author, &room, event_type, &mut content, &txn, ts)
                .await?;
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
        let started = tokio::time::Instant::now();
        let patience = self.config.outage_patience();
        let mut delay = HOMESERVER_RETRY_FIRST;
        let mut waiting = None;
        loop {
            let attempt = async {
                if self.is_unsure_send(txn)
                    && let Some(event_id) = self
                        .matrix
                        .find_recent_event(author, room, TXN_KEY, txn)
                        .await?
                {
                    tracing::info!(room = %room, txn, "event was sent before the homeserver went away");
                    return Ok(event_id);
                }
                self.matrix
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
                super::room_id(&row.room_id),
                ruma::OwnedEventId::try_from(row.event_id.as_str()),
            ) else {
                continue;
            };
            let txn = format!("redact-{}", row.event_id);
            self.matrix
                .redact(&self.bot, &room, &event, Some("Deleted on MAX"), &txn)
                .await?;
        }
        self.store
            .messages()
            .set_deleted(key.chat_id, key.receiver, first.max_message_id)
            .await?;
        Ok(())
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
        let Some(room) = super::room_id(&original.room_id) else {
            return Ok(());
        };
        let author = match message.sender {
            Some(id) => self.ensure_ghost(session, id.0).await?,
            None => self.bot.clone(),
        };
        self.add_to_room(&room, &author).await?;
        let new_content = convert::max_to_matrix(message);
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
        self.send_once(&author, &room, "m.room.message", &mut content, &txn, ts)
            .await?;
        self.store
            .messages()
            .set_edited_ms(key.chat_id, key.receiver, message.id.0, edit_time)
            .await?;
        Ok(())
    }

    pub(crate) async fn on_matrix_message(
        self: &Arc<Self>,
        key: PortalKey,
        event: &RoomEvent,
        untouched: bool,
        handled: &Arc<Handled>,
    ) -> Result<(), PortalError> {
        tracing::debug!(chat = key.chat_id, receiver = key.receiver, event = %event.event_id, kind = %event.event_type, "Matrix event");
        let Some(session) = self.wait_for_login(&event.sender).await? else {
            tracing::debug!(event = %event.event_id, "no MAX login to send with");
            if let Some(login) = self.store.logins().get(event.sender.as_str()).await?
                && login.max_user_id == key.receiver
            {
                let why = if login.state == super::login::STATE_LOGGED_OUT {
                    "you are logged out of MAX. Send `login` to the bridge bot.".to_owned()
                } else {
                    format!(
                        "the connection to MAX did not come back within {} s. Send `ping` to the bridge bot to check it.",
                        self.config.login_patience().as_secs()
                    )
                };
                self.bot_notice(
                    &event.room_id,
                    &format!("⚠️ Your message was not sent: {why}"),
                )
                .await;
            }
            return Ok(());
        };
        if session.max_user_id != key.receiver {
            // Someone else's portal: only its owner speaks for it on MAX.
            tracing::debug!(event = %event.event_id, "not the portal's owner; not sent");
            return Ok(());
        }
        // How many MAX messages this event already became (a long text is
        // several): after a crash, only the rest is sent. An event new from
        // the homeserver, on its first try, became nothing yet.
        let already = if untouched {
            0
        } else {
            self.store
                .messages()
                .all_by_event_id(event.event_id.as_str())
                .await?
                .len()
        };
        if already > 0 {
            tracing::debug!(event = %event.event_id, already, "Matrix event bridged before");
        }
        if already > 0 && event.event_type != "m.room.message" {
            return Ok(());
        }
        match event.event_type.as_str() {
            "m.room.redaction" => return self.delete_on_max(&session, key, event).await,
            "m.reaction" => return self.react_on_max(&session, key, event).await,
            _ => {}
        }
        if event
            .content
            .pointer("/m.relates_to/rel_type")
            .and_then(Value::as_str)
            == Some("m.replace")
        {
            return self.edit_on_max(&session, key, event).await;
        }
        let reply_link = match event
            .content
            .pointer("/m.relates_to/m.in_reply_to/event_id")
            .and_then(Value::as_str)
        {
            Some(target) => self
                .store
                .messages()
                .by_event_id(target)
                .await?
                .map(|row| MessageLink::reply(maxproto::types::MessageId(row.max_message_id))),
            None => None,
        };
        let msgtype = event
            .content
            .get("msgtype")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let mut outgoing: Vec<OutgoingMessage> = Vec::new();
        if super::media::is_media_msgtype(msgtype) {
            if already > 0 {
                return Ok(());
            }
            match self.media_to_max(&session, &event.content).await {
                Ok(attach) => {
                    let mut message = OutgoingMessage::new(0, "");
                    message.attaches.push(attach);
                    outgoing.push(message);
                }
                Err(reason) => {
                    self.send_failed(event, &reason, 0, 0).await;
                    return Ok(());
                }
            }
        } else if let Some(content) = convert::matrix_to_max(&event.content) {
            // A text over MAX's limit goes as several plain messages; offsets
            // of formatting would not survive the cut.
            if content.text.chars().count() > convert::MAX_TEXT_CHARS {
                outgoing.extend(
                    convert::split_text(&content.text)
                        .into_iter()
                        .map(|part| OutgoingMessage::new(0, part)),
                );
            } else {
                let mut message = OutgoingMessage::new(0, content.text);
                message.elements = content.elements;
                outgoing.push(message);
            }
        } else {
            self.bot_notice(
                &event.room_id,
                &format!("⚠️ Your {msgtype} message was not sent: this kind of message is not bridged to MAX yet."),
            )
            .await;
            return Ok(());
        }
        let last = outgoing.len().saturating_sub(1);
        for (index, mut message) in outgoing.into_iter().enumerate().skip(already) {
            message.cid = super::cid_for_event(event.event_id.as_str(), index);
            if index == 0 {
                message.link = reply_link.clone();
            }
            let request = MsgSendRequest::new(maxproto::types::ChatId(key.chat_id), message);
            match self.send_to_max(&session, &request).await {
                Ok(answer) => {
                    tracing::debug!(event = %event.event_id, part = index, message = answer.message.id.0, "sent to MAX");
                    let row = MessageRow {
                        chat_id: key.chat_id,
                        receiver: key.receiver,
                        max_message_id: answer.message.id.0,
                        part: 0,
                        event_id: event.event_id.to_string(),
                        room_id: event.room_id.to_string(),
                        sender: session.max_user_id,
                        timestamp_ms: answer.message.time,
                    };
                    // The event stays pending in the inbox until its
                    // mapping is written: a crash before sends it again
                    // (MAX answers a repeated cid with the same message).
                    self.record_behind(key, row, false, Some(Arc::clone(handled)))
                        .await;
                }
                Err(reason) => {
                    self.send_failed(event, &reason, index, last).await;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// MSG_SEND, retried while MAX does not answer or the connection is
    /// being re-established, up to the outage patience. Safe to repeat: the
    /// cid is derived from the event, and MAX answers a repeated cid with
    /// the message it already created. A refusal is returned as its reason.
    async fn send_to_max(
        &self,
        session: &LoginSession,
        request: &MsgSendRequest,
    ) -> Result<maxproto::types::MsgSendResponse, String> {
        use maxproto::client::ClientError;
        let backoff = crate::retry::Backoff {
            first: std::time::Duration::from_millis(500),
            max: std::time::Duration::from_secs(30),
            patience: self.config.outage_patience(),
        };
        let attempt = || async {
            let outcome = tokio::time::timeout(
                self.config.message_send_timeout(),
                session.client.call(request),
            )
            .await;
            match outcome {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(
                    error @ (ClientError::Timeout
                    | ClientError::Disconnected
                    | ClientError::WebSocket(_)),
                )) => Err(SendFailure::transient(error.to_string())),
                Ok(Err(error)) => Err(SendFailure {
                    reason: super::commands::describe(&error),
                    transient: false,
                }),
                Err(_) => Err(SendFailure::transient("MAX did not answer in time")),
            }
        };
        let what = "MAX send, retried with the same cid";
        crate::retry::retry(what, backoff, |f: &SendFailure| f.transient, attempt)
            .await
            .map_err(|failure| failure.reason)
    }

    async fn send_failed(&self, event: &RoomEvent, reason: &str, index: usize, last: usize) {
        tracing::warn!(room = %event.room_id, event = %event.event_id, reason, "message not delivered to MAX");
        let what = if last > 0 {
            format!("Part {} of {} of your message", index + 1, last + 1)
        } else {
            "Your message".to_owned()
        };
        self.bot_notice(
            &event.room_id,
            &format!("⚠️ {what} was not delivered to MAX: {reason}"),
        )
        .await;
    }

    /// A Matrix edit of one of the user's bridged messages becomes MSG_EDIT.
    async fn edit_on_max(
        &self,
        session: &LoginSession,
        key: PortalKey,
        event: &RoomEvent,
    ) -> Result<(), PortalError> {
        let target = event
            .content
            .pointer("/m.relates_to/event_id")
            .and_then(Value::as_str);
        let new_content = event
            .content
            .get("m.new_content")
            .and_then(convert::matrix_to_max);
        let (Some(target), Some(content)) = (target, new_content) else {
            return Ok(());
        };
        let Some(original) = self.store.messages().by_event_id(target).await? else {
            return Ok(());
        };
        if original.sender != session.max_user_id {
            self.bot_notice(
                &event.room_id,
                "⚠️ Only your own messages can be edited on MAX.",
            )
            .await;
            return Ok(());
        }
        if content.text.chars().count() > convert::MAX_TEXT_CHARS {
            self.bot_notice(
                &event.room_id,
                &format!(
                    "⚠️ Your edit was not delivered to MAX: longer than {} characters.",
                    convert::MAX_TEXT_CHARS
                ),
            )
            .await;
            return Ok(());
        }
        let request = MsgEditRequest {
            chat_id: maxproto::types::ChatId(key.chat_id),
            message_id: maxproto::types::MessageId(original.max_message_id),
            text: content.text,
            elements: content.elements,
            attachments: Vec::new(),
            extra: Default::default(),
        };
        match session.client.call(&request).await {
            Ok(answer) => {
                let edit_time = answer.message.update_time.unwrap_or(answer.message.time);
                session.remember_own_edit(original.max_message_id, edit_time);
                // Recorded as bridged, so a catch-up does not send it back.
                self.store
                    .messages()
                    .set_edited_ms(
                        key.chat_id,
                        key.receiver,
                        original.max_message_id,
                        edit_time,
                    )
                    .await?;
            }
            Err(error) => {
                self.bot_notice(
                    &event.room_id,
                    &format!(
                        "⚠️ Your edit was not delivered to MAX: {}",
                        super::commands::describe(&error)
                    ),
                )
                .await;
            }
        }
        Ok(())
    }

    /// A redaction of the user's bridged message deletes it on MAX for
    /// everyone (MSG_DELETE).
    async fn delete_on_max(
        &self,
        session: &LoginSession,
        key: PortalKey,
        event: &RoomEvent,
    ) -> Result<(), PortalError> {
        let Some(target) = event.redacts() else {
            return Ok(());
        };
        if self.unreact_on_max(session, key, event, target).await? {
            return Ok(());
        }
        let rows: Vec<MessageRow> = self
            .store
            .messages()
            .all_by_event_id(target)
            .await?
            .into_iter()
            .filter(|row| row.chat_id == key.chat_id && row.receiver == key.receiver)
            .collect();
        // Rows of a message deleted already (a redelivered redaction).
        let rows: Vec<MessageRow> = {
            let mut live = Vec::new();
            for row in rows {
                if !self
                    .store
                    .messages()
                    .is_deleted(row.chat_id, row.receiver, row.max_message_id)
                    .await?
                {
                    live.push(row);
                }
            }
            live
        };
        if rows.is_empty() {
            return Ok(());
        }
        let request = MsgDeleteRequest {
            chat_id: maxproto::types::ChatId(key.chat_id),
            message_ids: rows
                .iter()
                .map(|row| maxproto::types::MessageId(row.max_message_id))
                .collect(),
            for_me: false,
            extra: Default::default(),
        };
        // The mapping stays: the echo of the original send may still be on
        // its way (a quick delete overtakes it), and must be recognised.
        match session.client.call(&request).await {
            Ok(_) => {
                for row in &rows {
                    self.store
                        .messages()
                        .set_deleted(key.chat_id, key.receiver, row.max_message_id)
                        .await?;
                }
            }
            Err(error) => {
                self.bot_notice(
                    &event.room_id,
                    &format!(
                        "⚠️ The message was not deleted on MAX: {}",
                        super::commands::describe(&error)
                    ),
                )
                .await;
            }
        }
        Ok(())
    }
}

/// Why a send to MAX did not go through, and whether the same send may
/// still succeed (MAX silent or the connection being re-established).
struct SendFailure {
    reason: String,
    transient: bool,
}

impl SendFailure {
    fn transient(reason: impl Into<String>) -> SendFailure {
        SendFailure {
            reason: reason.into(),
            transient: true,
        }
    }
}

impl std::fmt::Display for SendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}
