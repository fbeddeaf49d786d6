//! The `messages` table: which Matrix event(s) each bridged MAX message became,
//! for replies, edits, deletions and resuming backfill.

use sqlx::PgPool;

use super::StoreError;
use super::portals::{Known, PortalCache, PortalMark, Portals};

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

pub struct Messages<'a> {
    pool: &'a PgPool,
    portals: &'a PortalCache,
}

impl<'a> Messages<'a> {
    pub(super) fn new(pool: &'a PgPool, portals: &'a PortalCache) -> Self {
        Self { pool, portals }
    }

    /// Records a bridged message part. Fails with [`StoreError::Conflict`] if
    /// the part is already recorded, and with
    /// [`StoreError::MissingReference`] if the portal does not exist.
    pub async fn insert(&self, message: &MessageRow) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO messages (chat_id, receiver, max_message_id, part, event_id, room_id, \
               sender, timestamp_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(message.chat_id)
        .bind(message.receiver)
        .bind(message.max_message_id)
        .bind(message.part)
        .bind(&message.event_id)
        .bind(&message.room_id)
        .bind(message.sender)
        .bind(message.timestamp_ms)
        .execute(self.pool)
        .await;
        self.portals.recorded(message, done.is_ok());
        done?;
        Ok(())
    }

    /// Records a bridged part unless it is already recorded (a retry after a
    /// crash), and with `advance` moves the portal's mark to this message in
    /// the same transaction, so the mark never runs ahead of the mappings.
    /// Returns whether the part was new.
    pub async fn record(&self, message: &MessageRow, advance: bool) -> Result<bool, StoreError> {
        // One statement, so one round trip and one transaction (PostgreSQL
        // runs every data-modifying WITH part, read or not).
        let inserted: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "WITH inserted AS ( \
               INSERT INTO messages (chat_id, receiver, max_message_id, part, event_id, room_id, \
                 sender, timestamp_ms) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
               ON CONFLICT (chat_id, receiver, max_message_id, part) DO NOTHING \
               RETURNING 1), \
             advanced AS ( \
               UPDATE portals SET last_max_message_id = $3, last_max_time = $8 \
               WHERE $9 AND chat_id = $1 AND receiver = $2 \
                 AND (last_max_message_id IS NULL OR last_max_message_id < $3) \
               RETURNING 1) \
             SELECT count(*) FROM inserted",
        )
        .bind(message.chat_id)
        .bind(message.receiver)
        .bind(message.max_message_id)
        .bind(message.part)
        .bind(&message.event_id)
        .bind(&message.room_id)
        .bind(message.sender)
        .bind(message.timestamp_ms)
        .bind(advance)
        .fetch_one(self.pool)
        .await;
        let key = (message.chat_id, message.receiver);
        // A row already there (a retry) may name another event: memory
        // keeps only what this statement wrote.
        self.portals
            .recorded(message, inserted.as_ref().is_ok_and(|n| *n > 0));
        let mark = PortalMark {
            message_id: message.max_message_id,
            time: message.timestamp_ms,
        };
        match (&inserted, advance) {
            (Ok(_), true) => self.portals.advanced(key, mark),
            (Err(_), true) => self.portals.forget_mark(key),
            (_, false) => {}
        }
        Ok(inserted? > 0)
    }

    /// When the last edit bridged to Matrix of a MAX message was made (MAX
    /// `updateTime`), if any was.
    pub async fn edited_ms(
        &self,
        chat_id: i64,
        receiver: i64,
        max_message_id: i64,
    ) -> Result<Option<i64>, StoreError> {
        let edited: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT edited_ms FROM messages \
             WHERE chat_id = $1 AND receiver = $2 AND max_message_id = $3 AND part = 0",
        )
        .bind(chat_id)
        .bind(receiver)
        .bind(max_message_id)
        .fetch_optional(self.pool)
        .await?;
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
        sqlx::query(
            "UPDATE messages SET edited_ms = GREATEST(COALESCE(edited_ms, 0), $4) \
             WHERE chat_id = $1 AND receiver = $2 AND max_message_id = $3",
        )
        .bind(chat_id)
        .bind(receiver)
        .bind(max_message_id)
        .bind(edited_ms)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// Marks every part of a MAX message deleted (its events are redacted).
    pub async fn set_deleted(
        &self,
        chat_id: i64,
        receiver: i64,
        max_message_id: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE messages SET deleted = true \
             WHERE chat_id = $1 AND receiver = $2 AND max_message_id = $3",
        )
        .bind(chat_id)
        .bind(receiver)
        .bind(max_message_id)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// Whether a MAX message is marked deleted.
    pub async fn is_deleted(
        &self,
        chat_id: i64,
        receiver: i64,
        max_message_id: i64,
    ) -> Result<bool, StoreError> {
        let deleted: Option<bool> = sqlx::query_scalar(
            "SELECT bool_or(deleted) FROM messages \
             WHERE chat_id = $1 AND receiver = $2 AND max_message_id = $3",
        )
        .bind(chat_id)
        .bind(receiver)
        .bind(max_message_id)
        .fetch_one(self.pool)
        .await?;
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
        let rows = sqlx::query_as(select!(
            "WHERE chat_id = $1 AND receiver = $2 AND part = 0 AND NOT deleted \
               AND timestamp_ms BETWEEN $3 AND $4 \
             ORDER BY max_message_id"
        ))
        .bind(chat_id)
        .bind(receiver)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.pool)
        .await?;
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
            Portals::new(self.pool, self.portals)
                .load(chat_id, receiver)
                .await?;
        }
        if let Some(Known::Rows(rows)) = self.portals.known(key, max_message_id) {
            return Ok(rows);
        }
        let rows = sqlx::query_as(select!(
            "WHERE chat_id = $1 AND receiver = $2 AND max_message_id = $3 ORDER BY part"
        ))
        .bind(chat_id)
        .bind(receiver)
        .bind(max_message_id)
        .fetch_all(self.pool)
        .await?;
        Ok(rows)
    }

    pub async fn by_event_id(&self, event_id: &str) -> Result<Option<MessageRow>, StoreError> {
        let row = sqlx::query_as(select!(
            "WHERE event_id = $1 ORDER BY max_message_id, part LIMIT 1"
        ))
        .bind(event_id)
        .fetch_optional(self.pool)
        .await?;
        Ok(row)
    }

    /// Every MAX message an event was sent as (a long text is split into
    /// several), oldest first.
    pub async fn all_by_event_id(&self, event_id: &str) -> Result<Vec<MessageRow>, StoreError> {
        let rows = sqlx::query_as(select!("WHERE event_id = $1 ORDER BY max_message_id, part"))
            .bind(event_id)
            .fetch_all(self.pool)
            .await?;
        Ok(rows)
    }

    /// The most recent bridged message part of a portal (by MAX timestamp).
    pub async fn latest_in_portal(
        &self,
        chat_id: i64,
        receiver: i64,
    ) -> Result<Option<MessageRow>, StoreError> {
        let row = sqlx::query_as(select!(
            "WHERE chat_id = $1 AND receiver = $2 \
             ORDER BY timestamp_ms DESC, max_message_id DESC, part DESC LIMIT 1"
        ))
        .bind(chat_id)
        .bind(receiver)
        .fetch_optional(self.pool)
        .await?;
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
        let row = sqlx::query_as(select!(
            "WHERE chat_id = $1 AND receiver = $2 AND timestamp_ms <= $3 \
             ORDER BY timestamp_ms DESC, max_message_id DESC, part DESC LIMIT 1"
        ))
        .bind(chat_id)
        .bind(receiver)
        .bind(time_ms)
        .fetch_optional(self.pool)
        .await?;
        Ok(row)
    }

    /// Forgets every part of a MAX message; returns how many were removed.
    pub async fn delete_by_max_id(
        &self,
        chat_id: i64,
        receiver: i64,
        max_message_id: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM messages WHERE chat_id = $1 AND receiver = $2 AND max_message_id = $3",
        )
        .bind(chat_id)
        .bind(receiver)
        .bind(max_message_id)
        .execute(self.pool)
        .await;
        self.portals.messages_deleted();
        Ok(done?.rows_affected())
    }

    /// Forgets one event's mapping. Returns whether it existed.
    pub async fn delete_by_event_id(&self, event_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM messages WHERE event_id = $1")
            .bind(event_id)
            .execute(self.pool)
            .await;
        self.portals.messages_deleted();
        Ok(done?.rows_affected() > 0)
    }
}
