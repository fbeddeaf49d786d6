//! The `matrix_inbox` table: Matrix events the homeserver delivered, stored
//! before their transaction is acknowledged and marked done once handled, so
//! that a crash between the two loses nothing and a redelivery (same event id,
//! whatever its transaction id) is recognised.

use std::time::Duration;

use sqlx::PgPool;

use super::StoreError;

/// An event waiting in the inbox.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InboxRow {
    pub event_id: String,
    pub room_id: String,
    /// The event's JSON as the homeserver sent it.
    pub event: String,
}

pub struct Inbox<'a> {
    pool: &'a PgPool,
    timings: &'a super::Timings,
}

impl<'a> Inbox<'a> {
    pub(super) fn new(pool: &'a PgPool, timings: &'a super::Timings) -> Self {
        Self { pool, timings }
    }

    /// Stores the events in one statement, in the given order; returns the
    /// ids of those not done: stored now, or stored before and still
    /// pending (an attempt that failed after storing them). The others are
    /// redeliveries of finished events.
    pub async fn record(&self, events: &[InboxRow]) -> Result<Vec<String>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        let rooms: Vec<&str> = events.iter().map(|e| e.room_id.as_str()).collect();
        let bodies: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        // WITH ORDINALITY keeps the delivery order in `seq`.
        // The second part reads the table as it was before the insert: the
        // events stored earlier and never done.
        let query = sqlx::query_scalar(
            "WITH stored AS ( \
                 INSERT INTO matrix_inbox (event_id, room_id, event) \
                 SELECT e.id, e.room, e.body \
                 FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS e(id, room, body, n) \
                 ORDER BY e.n \
                 ON CONFLICT (event_id) DO NOTHING \
                 RETURNING event_id) \
             SELECT event_id FROM stored \
             UNION ALL \
             SELECT event_id FROM matrix_inbox WHERE event_id = ANY($1) AND done_at IS NULL",
        )
        .bind(&ids)
        .bind(&rooms)
        .bind(&bodies)
        .fetch_all(self.pool);
        let fresh: Vec<String> = self
            .timings
            .time("inbox", async { Ok(query.await?) })
            .await?;
        Ok(fresh)
    }

    /// Marks an event handled. Returns whether it was waiting.
    pub async fn done(&self, event_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE matrix_inbox SET done_at = now() WHERE event_id = $1 AND done_at IS NULL",
        )
        .bind(event_id)
        .execute(self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks events handled, in one statement. Returns how many were waiting.
    pub async fn done_all(&self, event_ids: &[String]) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE matrix_inbox SET done_at = now() \
             WHERE event_id = ANY($1) AND done_at IS NULL",
        )
        .bind(event_ids)
        .execute(self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Events not handled yet, in delivery order.
    pub async fn pending(&self) -> Result<Vec<InboxRow>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT event_id, room_id, event FROM matrix_inbox \
             WHERE done_at IS NULL ORDER BY seq",
        )
        .fetch_all(self.pool)
        .await?;
        Ok(rows)
    }

    /// Forgets events handled longer than `age` ago; returns how many.
    pub async fn prune_done_older_than(&self, age: Duration) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM matrix_inbox WHERE done_at < now() - make_interval(secs => $1)",
        )
        .bind(age.as_secs_f64())
        .execute(self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
