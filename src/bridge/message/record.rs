//! The mappings of bridged messages (MAX message ↔ Matrix event), written
//! behind the portal that sent them: the portal goes on with its next
//! messages while one recorder task per portal writes them in order.

use super::{HOMESERVER_RETRY_FIRST, HOMESERVER_RETRY_MAX};
use crate::bridge::Bridge;
use crate::bridge::portal::PortalKey;
use crate::matrix::Handled;
use crate::store::{MessageRow, PortalMark};
use std::collections::HashMap;
use std::sync::Arc;

/// How long a stopping bridge waits for mappings still being written.
const RECORDS_AT_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(5);

/// Mappings of bridged MAX messages still being written: a portal sends
/// its next messages while the last ones' mappings commit, so a busy portal
/// is not held to one commit per message. Each portal with mappings in
/// flight has one recorder task that writes them in order, all that have
/// come meanwhile in one transaction.
///
/// A crash in that window leaves up to [`RECORDS_BEHIND`] sent messages
/// unrecorded instead of one, and each is sent again as any send not yet
/// recorded is: a MAX message from history under the same transaction id,
/// which the homeserver deduplicates; a Matrix event, still pending in the
/// inbox until its mapping is written, under the same cid, which MAX
/// answers with the message it made. Whatever reads what the records write
/// waits for them first ([`Bridge::settle_record`]).
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
    pub(super) fn recording(&self, key: PortalKey) -> Option<i64> {
        self.records
            .lock()
            .get(&key)
            .map(|in_flight| in_flight.newest)
    }

    /// Where the portal's mark is once its mappings being written are.
    pub(super) fn mark_when_recorded(&self, key: PortalKey) -> Option<PortalMark> {
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
    pub(super) fn echo_of_recording(&self, key: PortalKey, mark: PortalMark) -> bool {
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
    pub(super) async fn record_behind(
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
}
