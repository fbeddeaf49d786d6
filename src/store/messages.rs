//! The `messages` table: which Matrix event(s) each bridged MAX message became,
//! for replies, edits, deletions and resuming backfill.

use tokio::sync::oneshot;

use super::portals::{Known, PortalCache, PortalMark, Portals};
use super::{Db, StoreError};
use crate::on_db;

/// One part of a bridged MAX message (a MAX message may become several events).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MessageRow {
    pub chat_id: i64,
    pub receiver: i64,
    pub max_message_id: i64,
    /// 0 for the first (or only) event of the message.
    pub part: i32,
    pub event_id: String,
    pub room_id: String,
    /// MAX user id of the author.
    pub sender: i64,
    /// MAX timestamp, milliseconds since the epoch.
    pub timestamp_ms: i64,
}

/// A `SELECT` of every [`MessageRow`] column, followed by `$rest`.
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT chat_id, receiver, max_message_id, part, event_id, room_id, sender, \
             timestamp_ms FROM messages ",
            $rest
        )
    };
}

/// An `INSERT` of one [`MessageRow`] ($1 … $8 in field order), followed by
/// `$rest`.
macro_rules! insert {
    ($rest:literal) => {
        concat!(
            "INSERT INTO messages (chat_id, receiver, max_message_id, part, event_id, room_id, \
             sender, timestamp_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ",
            $rest
        )
    };
}

/// Binds a [`MessageRow`]'s fields to [`insert!`]'s $1 … $8.
macro_rules! bind_row {
    ($query:expr, $row:expr) => {
        $query
            .bind($row.chat_id)
            .bind($row.receiver)
            .bind($row.max_message_id)
            .bind($row.part)
            .bind(&$row.event_id)
            .bind(&$row.room_id)
            .bind($row.sender)
            .bind($row.timestamp_ms)
    };
}

pub struct Messages<'a> {
    db: &'a Db,
    portals: &'a PortalCache,
    commits: &'a GroupCommit,
    timings: &'a super::Timings,
}

/// Parts waiting to be recorded (see [`Messages::record`]).
#[derive(Debug, Default)]
pub(super) struct GroupCommit {
    queue: std::sync::Mutex<Vec<Pending>>,
    /// Held by the task whose statement is writing a batch.
    writer: tokio::sync::Mutex<()>,
}

/// One recorder's parts, all of one portal and in its order, written in
/// one transaction.
#[derive(Debug)]
struct Pending {
    rows: Vec<(MessageRow, bool)>,
    /// Whether each part was new, or why they could not be recorded.
    done: oneshot::Sender<Result<Vec<bool>, StoreError>>,
}

impl Pending {
    fn portal(&self) -> Option<(i64, i64)> {
        self.rows.first().map(|(r, _)| (r.chat_id, r.receiver))
    }
}

/// Parts written by one statement at most.
const BATCH_MAX: usize = 512;

impl GroupCommit {
    /// Writes parts of one portal, with the parts queued beside them by
    /// other portals when this task becomes the writer, or waits for the
    /// writer that takes them.
    async fn write(
        &self,
        db: &Db,
        timings: &super::Timings,
        rows: &[(MessageRow, bool)],
    ) -> Result<Vec<bool>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        loop {
            let (done, mut outcome) = oneshot::channel();
            self.lock_queue().push(Pending {
                rows: rows.to_vec(),
                done,
            });
            loop {
                tokio::select! {
                    biased;
                    written = &mut outcome => match written {
                        Ok(written) => return written,
                        // The task writing our part was dropped mid-write;
                        // the insert is idempotent, so ours is queued again.
                        Err(_) => break,
                    },
                    writer = self.writer.lock() => {
                        // The writer before us may have taken our part.
                        match outcome.try_recv() {
                            Ok(written) => return written,
                            Err(oneshot::error::TryRecvError::Closed) => break,
                            Err(oneshot::error::TryRecvError::Empty) => {}
                        }
                        let batch = self.take_batch();
                        // Boxed, as the ghosts' (see there): the leader of
                        // a batch pays one allocation, every caller a
                        // smaller future.
                        Box::pin(self.write_batch(db, timings, batch)).await;
                        drop(writer);
                    }
                }
            }
        }
    }

    /// The waiting recorders in their order, up to [`BATCH_MAX`] parts (but
    /// at least one recorder) and at most one recorder per portal, so that a
    /// portal's writes keep their order.
    fn take_batch(&self) -> Vec<Pending> {
        let mut queue = self.lock_queue();
        let mut portals = std::collections::HashSet::new();
        let mut parts = 0;
        let end = queue
            .iter()
            .position(|p| {
                parts += p.rows.len();
                !portals.insert(p.portal()) || (portals.len() > 1 && parts > BATCH_MAX)
            })
            .unwrap_or(queue.len());
        queue.drain(..end).collect()
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        // Nothing panics while holding it.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `batch` and tells each recorder how it went. When the
    /// database is unavailable, the first recorder gets the error and the
    /// rest wait for the next writer (as each would have failed on its own);
    /// when it refuses the data, the recorders are tried one by one, so that
    /// one bad part (a portal deleted meanwhile) fails only its recorder.
    async fn write_batch(&self, db: &Db, timings: &super::Timings, mut batch: Vec<Pending>) {
        match timings.time("messages", record_many(db, &batch)).await {
            Ok(mut new) => {
                for pending in batch {
                    let rest = new.split_off(pending.rows.len());
                    let _ = pending.done.send(Ok(new));
                    new = rest;
                }
            }
            Err(error) if error.is_transient() || batch.len() == 1 => {
                let rest = batch.split_off(1);
                self.lock_queue().splice(0..0, rest);
                if let Some(first) = batch.pop() {
                    let _ = first.done.send(Err(error));
                }
            }
            Err(_) => {
                for pending in batch {
                    let written = record_many(db, std::slice::from_ref(&pending)).await;
                    let _ = pending.done.send(written);
                }
            }
        }
    }
}

/// Parts (of one or more portals) in one transaction; for each part in
/// order, whether it was new. A portal's mark moves to its newest part with
/// `advance`.
async fn record_many(db: &Db, batch: &[Pending]) -> Result<Vec<bool>, StoreError> {
    let rows: Vec<&(MessageRow, bool)> = batch.iter().flat_map(|p| &p.rows).collect();
    match db {
        Db::Postgres(pool) => record_many_postgres(pool, &rows).await,
        Db::Sqlite(pool) => record_many_sqlite(pool, &rows).await,
    }
}

/// In one statement, so one round trip (PostgreSQL runs every
/// data-modifying WITH part, read or not).
async fn record_many_postgres(
    pool: &sqlx::PgPool,
    rows: &[&(MessageRow, bool)],
) -> Result<Vec<bool>, StoreError> {
    let column = |f: fn(&MessageRow) -> i64| rows.iter().map(|(r, _)| f(r)).collect::<Vec<i64>>();
    let inserted: Vec<(i64, i64, i64, i32)> = sqlx::query_as(
        "WITH rows AS ( \
           SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int4[], $5::text[], \
             $6::text[], $7::int8[], $8::int8[], $9::bool[]) \
           AS r(chat_id, receiver, max_message_id, part, event_id, room_id, sender, \
             timestamp_ms, advance)), \
         inserted AS ( \
           INSERT INTO messages (chat_id, receiver, max_message_id, part, event_id, room_id, \
             sender, timestamp_ms) \
           SELECT chat_id, receiver, max_message_id, part, event_id, room_id, sender, \
             timestamp_ms FROM rows \
           ON CONFLICT (chat_id, receiver, max_message_id, part) DO NOTHING \
           RETURNING chat_id, receiver, max_message_id, part), \
         advanced AS ( \
           UPDATE portals p SET last_max_message_id = r.max_message_id, \
             last_max_time = r.timestamp_ms \
           FROM (SELECT DISTINCT ON (chat_id, receiver) * FROM rows WHERE advance \
             ORDER BY chat_id, receiver, max_message_id DESC) r \
           WHERE p.chat_id = r.chat_id AND p.receiver = r.receiver \
             AND (p.last_max_message_id IS NULL OR p.last_max_message_id < r.max_message_id) \
           RETURNING 1) \
         SELECT chat_id, receiver, max_message_id, part FROM inserted",
    )
    .bind(column(|r| r.chat_id))
    .bind(column(|r| r.receiver))
    .bind(column(|r| r.max_message_id))
    .bind(rows.iter().map(|(r, _)| r.part).collect::<Vec<i32>>())
    .bind(
        rows.iter()
            .map(|(r, _)| r.event_id.as_str())
            .collect::<Vec<&str>>(),
    )
    .bind(
        rows.iter()
            .map(|(r, _)| r.room_id.as_str())
            .collect::<Vec<&str>>(),
    )
    .bind(column(|r| r.sender))
    .bind(column(|r| r.timestamp_ms))
    .bind(
        rows.iter()
            .map(|(_, advance)| *advance)
            .collect::<Vec<bool>>(),
    )
    .fetch_all(pool)
    .await?;
    let inserted: std::collections::HashSet<(i64, i64, i64, i32)> = inserted.into_iter().collect();
    Ok(rows
        .iter()
        .map(|(r, _)| inserted.contains(&(r.chat_id, r.receiver, r.max_message_id, r.part)))
        .collect())
}

/// A statement per part and per portal moved, in one transaction: SQLite
/// runs in this process, so statements cost no round trip, but it has no
/// arrays to pass a batch in one.
async fn record_many_sqlite(
    pool: &sqlx::SqlitePool,
    rows: &[&(MessageRow, bool)],
) -> Result<Vec<bool>, StoreError> {
    let mut tx = pool.begin().await?;
    let mut new = Vec::with_capacity(rows.len());
    // Per portal, its newest part that moves the mark.
    let mut marks: std::collections::HashMap<(i64, i64), PortalMark> =
        std::collections::HashMap::new();
    for (row, advance) in rows {
        let done = bind_row!(
            sqlx::query(insert!(
                "ON CONFLICT (chat_id, receiver, max_message_id, part) DO NOTHING"
            )),
            row
        )
        .execute(&mut *tx)
        .await?;
        new.push(done.rows_affected() > 0);
        if *advance {
            let mark = PortalMark {
                message_id: row.max_message_id,
                time: row.timestamp_ms,
            };
            marks
                .entry((row.chat_id, row.receiver))
                .and_modify(|m| {
                    if m.message_id < mark.message_id {
                        *m = mark;
                    }
                })
                .or_insert(mark);
        }
    }
    for ((chat_id, receiver), mark) in marks {
        sqlx::query(super::portals::ADVANCE_MARK)
            .bind(chat_id)
            .bind(receiver)
            .bind(mark.message_id)
            .bind(mark.time)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(new)
}

impl<'a> Messages<'a> {
    pub(super) fn new(
        db: &'a Db,
        portals: &'a PortalCache,
        commits: &'a GroupCommit,
        timings: &'a super::Timings,
    ) -> Self {
        Self {
            db,
            portals,
            commits,
            timings,
        }
    }

    /// Records a bridged message part. Fails with [`StoreError::Conflict`] if
    /// the part is already recorded, and with
    /// [`StoreError::MissingReference`] if the portal does not exist.
    pub async fn insert(&self, message: &MessageRow) -> Result<(), StoreError> {
        let done = on_db!(self.db, |pool| bind_row!(sqlx::query(insert!("")), message)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()));
        self.portals.recorded(message, done.is_ok());
        done?;
        Ok(())
    }

    /// Records a bridged part unless it is already recorded (a retry after a
    /// crash), and with `advance` moves the portal's mark to this message in
    /// the same transaction, so the mark never runs ahead of the mappings.
    /// Returns whether the part was new.
    ///
    /// Parts that portals record while another statement is writing wait
    /// and are written together by the next (group commit): one
    /// transaction for many messages when many portals are busy, and no
    /// waiting for a lone one.
    pub async fn record(&self, message: &MessageRow, advance: bool) -> Result<bool, StoreError> {
        let new = self.record_all(&[(message.clone(), advance)]).await?;
        Ok(new.first().copied().unwrap_or(false))
    }

    /// [`Self::record`] of several parts of one portal, in order, in one
    /// transaction: all are recorded or none. Returns whether each was new.
    pub async fn record_all(&self, rows: &[(MessageRow, bool)]) -> Result<Vec<bool>, StoreError> {
        debug_assert!(
            rows.windows(2)
                .all(|w| (w[0].0.chat_id, w[0].0.receiver) == (w[1].0.chat_id, w[1].0.receiver)),
            "parts of one portal"
        );
        let inserted = self.commits.write(self.db, self.timings, rows).await;
        for (i, (message, advance)) in rows.iter().enumerate() {
            let key = (message.chat_id, message.receiver);
            // A row already there (a retry) may name another event: memory
            // keeps only what this statement wrote.
            let new = inserted
                .as_ref()
                .is_ok_and(|new| new.get(i).copied().unwrap_or(false));
            self.portals.recorded(message, new);
            let mark = PortalMark {
                message_id: message.max_message_id,
                time: message.timestamp_ms,
            };
            match (&inserted, advance) {
                (Ok(_), true) => self.portals.advanced(key, mark),
                (Err(_), true) => self.portals.forget_mark(key),
                (_, false) => {}
            }
        }
        inserted
    }

    /// When the last edit bridged to Matrix of a MAX message was made (MAX
    /// `updateTime`), if any was.
    pub async fn edited_ms(
        &self,
        chat_id: i64,
        receiver: i64,
        max_message_id: i64,
    ) -> Result<Option<i64>, StoreError> {
        let edited: Option<Option<i64>> = on_db!(self.db, |pool| sqlx::query_scalar(
            "SELECT edited_ms FROM messages \
             WHERE chat_id = $1 AND receiver = $2 AND max_message_id = $3 AND part = 0",
        )
        .bind(chat_id)
        .bind(receiver)
        .bind(max_message_id)
        .fetch_optional(pool)
        .await)?;
        Ok(edited.flatten())
    }

    /// Records that the edit made at `edited_ms` is bridged.
    pub async fn set_edited_ms(
        &self,
        chat_id: i64,
        receiver: i64,
        max_message_id: i64,
        edited_ms: i64,
    ) -> Result<(), StoreError> {
        on_db!(self.db, |pool| sqlx::query(
            "UPDATE messages SET edited_ms = CASE WHEN edited_ms > $4 THEN edited_ms ELSE $4 END \
             WHERE chat_id = $1 AND receiver = $2 AND max_message_id = $3",
        )
        .bind(chat_id)
        .bind(receiver)
        .bind(max_message_id)
        .bind(edited_ms)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Marks every part of a MAX message deleted (its events are redacted).
    pub async fn set_deleted(
        &self,
        chat_id: i64,
        receiver: i64,
        max_message_id: i64,
    ) -> Result<(), StoreError> {
        on_db!(self.db, |pool| sqlx::query(
            "UPDATE messages SET deleted = true \
             WHERE chat_id = $1 AND receiver = $2 AND max_message_id = $3",
        )
        .bind(chat_id)
        .bind(receiver)
        .bind(max_message_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Whether a MAX message is marked deleted.
    pub async fn is_deleted(
        &self,
        chat_id: i64,
        receiver: i64,
        max_message_id: i64,
    ) -> Result<bool, StoreError> {
        let deleted: Option<bool> = on_db!(self.db, |pool| sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM messages \
             WHERE chat_id = $1 AND receiver = $2 AND max_message_id = $3 AND deleted)",
        )
        .bind(chat_id)
        .bind(receiver)
        .bind(max_message_id)
        .fetch_one(pool)
        .await)?;
        Ok(deleted.unwrap_or(false))
    }

    /// First parts of the portal's messages not deleted, sent between
    /// `from_ms` and `to_ms` (inclusive), oldest first.
    pub async fn live_between(
        &self,
        chat_id: i64,
        receiver: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let rows = on_db!(self.db, |pool| sqlx::query_as(select!(
            "WHERE chat_id = $1 AND receiver = $2 AND part = 0 AND NOT deleted \
               AND timestamp_ms BETWEEN $3 AND $4 \
             ORDER BY max_message_id"
        ))
        .bind(chat_id)
        .bind(receiver)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    /// Every part of a MAX message, in part order (empty if not bridged).
    pub async fn by_max_id(
        &self,
        chat_id: i64,
        receiver: i64,
        max_message_id: i64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let key = (chat_id, receiver);
        if self.portals.known(key, max_message_id).is_none() {
            Portals::new(self.db, self.portals)
                .load(chat_id, receiver)
                .await?;
        }
        if let Some(Known::Rows(rows)) = self.portals.known(key, max_message_id) {
            return Ok(rows);
        }
        let rows = on_db!(self.db, |pool| sqlx::query_as(select!(
            "WHERE chat_id = $1 AND receiver = $2 AND max_message_id = $3 ORDER BY part"
        ))
        .bind(chat_id)
        .bind(receiver)
        .bind(max_message_id)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    pub async fn by_event_id(&self, event_id: &str) -> Result<Option<MessageRow>, StoreError> {
        let row = on_db!(self.db, |pool| sqlx::query_as(select!(
            "WHERE event_id = $1 ORDER BY max_message_id, part LIMIT 1"
        ))
        .bind(event_id)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Every MAX message an event was sent as (a long text is split into
    /// several), oldest first.
    pub async fn all_by_event_id(&self, event_id: &str) -> Result<Vec<MessageRow>, StoreError> {
        let rows = on_db!(self.db, |pool| sqlx::query_as(select!(
            "WHERE event_id = $1 ORDER BY max_message_id, part"
        ))
        .bind(event_id)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    /// The most recent bridged message part of a portal (by MAX timestamp).
    pub async fn latest_in_portal(
        &self,
        chat_id: i64,
        receiver: i64,
    ) -> Result<Option<MessageRow>, StoreError> {
        let row = on_db!(self.db, |pool| sqlx::query_as(select!(
            "WHERE chat_id = $1 AND receiver = $2 \
             ORDER BY timestamp_ms DESC, max_message_id DESC, part DESC LIMIT 1"
        ))
        .bind(chat_id)
        .bind(receiver)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// The latest bridged message part of a portal sent at or before `time_ms`
    /// (where a MAX read mark points to).
    pub async fn latest_at_or_before(
        &self,
        chat_id: i64,
        receiver: i64,
        time_ms: i64,
    ) -> Result<Option<MessageRow>, StoreError> {
        let row = on_db!(self.db, |pool| sqlx::query_as(select!(
            "WHERE chat_id = $1 AND receiver = $2 AND timestamp_ms <= $3 \
             ORDER BY timestamp_ms DESC, max_message_id DESC, part DESC LIMIT 1"
        ))
        .bind(chat_id)
        .bind(receiver)
        .bind(time_ms)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Forgets every part of a MAX message; returns how many were removed.
    pub async fn delete_by_max_id(
        &self,
        chat_id: i64,
        receiver: i64,
        max_message_id: i64,
    ) -> Result<u64, StoreError> {
        let done = on_db!(self.db, |pool| sqlx::query(
            "DELETE FROM messages WHERE chat_id = $1 AND receiver = $2 AND max_message_id = $3",
        )
        .bind(chat_id)
        .bind(receiver)
        .bind(max_message_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()));
        self.portals.messages_deleted();
        Ok(done?)
    }

    /// Forgets one event's mapping. Returns whether it existed.
    pub async fn delete_by_event_id(&self, event_id: &str) -> Result<bool, StoreError> {
        let done = on_db!(self.db, |pool| sqlx::query(
            "DELETE FROM messages WHERE event_id = $1"
        )
        .bind(event_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()));
        self.portals.messages_deleted();
        Ok(done? > 0)
    }
}
