//! The `matrix_inbox` table: Matrix events the homeserver delivered, stored
//! before their transaction is acknowledged and marked done once handled, so
//! that a crash between the two loses nothing and a redelivery (same event id,
//! whatever its transaction id) is recognised.

use std::time::Duration;

use super::{Db, StoreError};
use crate::on_db;

/// An event waiting in the inbox.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InboxRow {
    pub event_id: String,
    pub room_id: String,
    /// The event's JSON as the homeserver sent it.
    pub event: String,
}

/// Marks one event done ($1).
const DONE: &str =
    "UPDATE matrix_inbox SET done_at = CURRENT_TIMESTAMP WHERE event_id = $1 AND done_at IS NULL";

pub struct Inbox<'a> {
    db: &'a Db,
    timings: &'a super::Timings,
}

impl<'a> Inbox<'a> {
    pub(super) fn new(db: &'a Db, timings: &'a super::Timings) -> Self {
        Self { db, timings }
    }

    /// Stores the events in one transaction, in the given order; returns the
    /// ids of those not done: stored now, or stored before and still
    /// pending (an attempt that failed after storing them). The others are
    /// redeliveries of finished events.
    pub async fn record(&self, events: &[InboxRow]) -> Result<Vec<String>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        match self.db {
            Db::Postgres(pool) => {
                self.timings
                    .time("inbox", record_postgres(pool, events))
                    .await
            }
            Db::Sqlite(pool) => {
                self.timings
                    .time("inbox", record_sqlite(pool, events))
                    .await
            }
        }
    }

    /// Marks an event handled. Returns whether it was waiting.
    pub async fn done(&self, event_id: &str) -> Result<bool, StoreError> {
        let done = on_db!(self.db, |pool| sqlx::query(DONE)
            .bind(event_id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(done > 0)
    }

    /// Marks events handled, in one statement (one transaction on SQLite).
    /// Returns how many were waiting.
    pub async fn done_all(&self, event_ids: &[String]) -> Result<u64, StoreError> {
        match self.db {
            Db::Postgres(pool) => {
                let done = sqlx::query(
                    "UPDATE matrix_inbox SET done_at = CURRENT_TIMESTAMP \
                     WHERE event_id = ANY($1) AND done_at IS NULL",
                )
                .bind(event_ids)
                .execute(pool)
                .await?;
                Ok(done.rows_affected())
            }
            // No arrays: a statement each, in one transaction.
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut done = 0;
                for event_id in event_ids {
                    done += sqlx::query(DONE)
                        .bind(event_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
                Ok(done)
            }
        }
    }

    /// Events not handled yet, in delivery order.
    pub async fn pending(&self) -> Result<Vec<InboxRow>, StoreError> {
        let rows = on_db!(self.db, |pool| sqlx::query_as(
            "SELECT event_id, room_id, event FROM matrix_inbox \
             WHERE done_at IS NULL ORDER BY seq",
        )
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    /// Forgets events handled longer than `age` ago; returns how many.
    pub async fn prune_done_older_than(&self, age: Duration) -> Result<u64, StoreError> {
        let done = match self.db {
            Db::Postgres(pool) => sqlx::query(
                "DELETE FROM matrix_inbox WHERE done_at < now() - make_interval(secs => $1)",
            )
            .bind(age.as_secs_f64())
            .execute(pool)
            .await?
            .rows_affected(),
            // done_at is SQLite's CURRENT_TIMESTAMP text, which sorts as
            // it reads.
            Db::Sqlite(pool) => {
                sqlx::query("DELETE FROM matrix_inbox WHERE done_at < datetime('now', $1)")
                    .bind(format!("-{} seconds", age.as_secs()))
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
        };
        Ok(done)
    }
}

/// In one statement. WITH ORDINALITY keeps the delivery order in `seq`; the
/// second part reads the table as it was before the insert: the events
/// stored earlier and never done.
async fn record_postgres(
    pool: &sqlx::PgPool,
    events: &[InboxRow],
) -> Result<Vec<String>, StoreError> {
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let rooms: Vec<&str> = events.iter().map(|e| e.room_id.as_str()).collect();
    let bodies: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    let fresh = sqlx::query_scalar(
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
    .fetch_all(pool)
    .await?;
    Ok(fresh)
}

/// In one transaction, in order: each event stored, or else looked up (an
/// event stored before and never done is still to be handled). As
/// PostgreSQL's answer: those stored now, then those stored before.
async fn record_sqlite(
    pool: &sqlx::SqlitePool,
    events: &[InboxRow],
) -> Result<Vec<String>, StoreError> {
    let mut tx = pool.begin().await?;
    let mut fresh = Vec::with_capacity(events.len());
    let mut pending_before = Vec::new();
    for event in events {
        let stored = sqlx::query(
            "INSERT INTO matrix_inbox (event_id, room_id, event) VALUES ($1, $2, $3) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&event.event_id)
        .bind(&event.room_id)
        .bind(&event.event)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if stored {
            fresh.push(event.event_id.clone());
            continue;
        }
        let pending = sqlx::query_scalar::<_, i64>(
            "SELECT 1 FROM matrix_inbox WHERE event_id = $1 AND done_at IS NULL",
        )
        .bind(&event.event_id)
        .fetch_optional(&mut *tx)
        .await?;
        if pending.is_some() {
            pending_before.push(event.event_id.clone());
        }
    }
    tx.commit().await?;
    fresh.append(&mut pending_before);
    Ok(fresh)
}
