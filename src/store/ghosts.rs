//! The `ghosts` table: Matrix puppets of MAX users and how far their
//! profile has been pushed to Matrix.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::Db;
use crate::on_db;

use super::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GhostRow {
    pub max_user_id: i64,
    pub mxid: String,
    pub display_name: Option<String>,
    /// Avatar URL on the MAX side (to notice changes).
    pub avatar_url: Option<String>,
    /// The same avatar uploaded to Matrix.
    pub avatar_mxc: Option<String>,
    /// Registered with the homeserver (needed before acting as this user).
    pub registered: bool,
    /// `display_name` has been set on the Matrix profile.
    pub name_set: bool,
    /// `avatar_mxc` has been set on the Matrix profile.
    pub avatar_set: bool,
}

impl GhostRow {
    /// A ghost not yet registered, with no profile.
    pub fn new(max_user_id: i64, mxid: impl Into<String>) -> Self {
        Self {
            max_user_id,
            mxid: mxid.into(),
            display_name: None,
            avatar_url: None,
            avatar_mxc: None,
            registered: false,
            name_set: false,
            avatar_set: false,
        }
    }
}

/// A `SELECT` of every [`GhostRow`] column, followed by `$rest`.
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT max_user_id, mxid, display_name, avatar_url, avatar_mxc, registered, \
             name_set, avatar_set FROM ghosts ",
            $rest
        )
    };
}

/// Ghost rows by MAX user, kept in memory once read: every message from
/// MAX names its author's ghost. This process is the table's only writer and
/// every write goes through [`Ghosts`], which updates or forgets the row.
#[derive(Debug, Default)]
pub(super) struct GhostCache {
    inner: Mutex<GhostInner>,
}

#[derive(Debug, Default)]
struct GhostInner {
    /// `None`: known not to exist.
    rows: HashMap<i64, Option<GhostRow>>,
    /// Bumped by every write, so that a lookup that raced one does not
    /// remember what it read before the write.
    writes: u64,
    /// Every row of the table is in `rows`: a miss is a ghost that does
    /// not exist, with no lookup.
    complete: bool,
}

impl GhostCache {
    fn lock(&self) -> MutexGuard<'_, GhostInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a write of `max_user_id`: its new row if the write went
    /// through, else forgotten.
    fn wrote(&self, max_user_id: i64, row: Option<GhostRow>) {
        let mut inner = self.lock();
        inner.writes += 1;
        match row {
            Some(row) => inner.rows.insert(max_user_id, Some(row)),
            None => {
                // The database may hold what memory no longer does.
                inner.complete = false;
                inner.rows.remove(&max_user_id)
            }
        };
    }
}

/// Ghost upserts of concurrent callers written in one transaction: a first
/// start makes thousands of ghosts, several portals at once, and a commit
/// each cost PostgreSQL more CPU than everything else it did for them.
#[derive(Debug, Default)]
pub(super) struct GhostCommit {
    queue: Mutex<Vec<PendingGhost>>,
    /// Held by the task whose statement is writing a batch.
    writer: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct PendingGhost {
    row: GhostRow,
    done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// Ghosts written by one statement at most.
const GHOST_BATCH_MAX: usize = 256;

impl GhostCommit {
    fn lock_queue(&self) -> MutexGuard<'_, Vec<PendingGhost>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `row` with the rows queued beside it when this task becomes
    /// the writer, or waits for the writer that takes it.
    async fn write(
        &self,
        db: &Db,
        timings: &super::Timings,
        row: &GhostRow,
    ) -> Result<(), StoreError> {
        loop {
            let (done, mut outcome) = tokio::sync::oneshot::channel();
            self.lock_queue().push(PendingGhost {
                row: row.clone(),
                done,
            });
            loop {
                tokio::select! {
                    biased;
                    written = &mut outcome => match written {
                        Ok(written) => return written,
                        // The writer was dropped mid-write; an upsert may
                        // be repeated, so ours is queued again.
                        Err(_) => break,
                    },
                    writer = self.writer.lock() => {
                        match outcome.try_recv() {
                            Ok(written) => return written,
                            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => break,
                            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                        }
                        let batch: Vec<PendingGhost> = {
                            let mut queue = self.lock_queue();
                            let end = queue.len().min(GHOST_BATCH_MAX);
                            queue.drain(..end).collect()
                        };
                        // Boxed: sqlx's transaction future is ~14 KiB, and
                        // every future that may upsert a ghost (the message
                        // path's) would carry it, copied at each call.
                        Box::pin(Self::write_batch(db, timings, batch)).await;
                        drop(writer);
                    }
                }
            }
        }
    }

    /// One statement for the batch; if it fails, each row on its own, so
    /// that each caller hears its own outcome.
    async fn write_batch(db: &Db, timings: &super::Timings, batch: Vec<PendingGhost>) {
        // A later upsert of the same ghost wins, as it would have one by one
        // (and one statement may not touch a row twice).
        let mut latest: HashMap<i64, &GhostRow> = HashMap::new();
        for pending in &batch {
            latest.insert(pending.row.max_user_id, &pending.row);
        }
        let rows: Vec<&GhostRow> = latest.into_values().collect();
        if timings.time("ghosts", upsert_many(db, &rows)).await.is_ok() {
            for pending in batch {
                let _ = pending.done.send(Ok(()));
            }
            return;
        }
        for pending in batch {
            let written = upsert_many(db, &[&pending.row]).await;
            let _ = pending.done.send(written);
        }
    }
}

async fn upsert_many(db: &Db, rows: &[&GhostRow]) -> Result<(), StoreError> {
    match db {
        Db::Postgres(pool) => upsert_many_postgres(pool, rows).await,
        Db::Sqlite(pool) => upsert_many_sqlite(pool, rows).await,
    }
}

/// In one statement: the rows as arrays.
async fn upsert_many_postgres(pool: &sqlx::PgPool, rows: &[&GhostRow]) -> Result<(), StoreError> {
    let ids: Vec<i64> = rows.iter().map(|r| r.max_user_id).collect();
    let text = |f: fn(&GhostRow) -> Option<&str>| -> Vec<Option<String>> {
        rows.iter().map(|r| f(r).map(str::to_owned)).collect()
    };
    let flag = |f: fn(&GhostRow) -> bool| -> Vec<bool> { rows.iter().map(|r| f(r)).collect() };
    sqlx::query(
        "INSERT INTO ghosts (max_user_id, mxid, display_name, avatar_url, avatar_mxc, \
           registered, name_set, avatar_set) \
         SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], \
           $6::bool[], $7::bool[], $8::bool[]) \
         ON CONFLICT (max_user_id) DO UPDATE SET \
           mxid = EXCLUDED.mxid, display_name = EXCLUDED.display_name, \
           avatar_url = EXCLUDED.avatar_url, avatar_mxc = EXCLUDED.avatar_mxc, \
           registered = EXCLUDED.registered, name_set = EXCLUDED.name_set, \
           avatar_set = EXCLUDED.avatar_set, updated_at = now()",
    )
    .bind(ids)
    .bind(text(|r| Some(r.mxid.as_str())))
    .bind(text(|r| r.display_name.as_deref()))
    .bind(text(|r| r.avatar_url.as_deref()))
    .bind(text(|r| r.avatar_mxc.as_deref()))
    .bind(flag(|r| r.registered))
    .bind(flag(|r| r.name_set))
    .bind(flag(|r| r.avatar_set))
    .execute(pool)
    .await?;
    Ok(())
}

/// A statement per row in one transaction (SQLite has no arrays, and its
/// statements cost no round trip).
async fn upsert_many_sqlite(pool: &sqlx::SqlitePool, rows: &[&GhostRow]) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for row in rows {
        sqlx::query(
            "INSERT INTO ghosts (max_user_id, mxid, display_name, avatar_url, avatar_mxc, \
               registered, name_set, avatar_set) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (max_user_id) DO UPDATE SET \
               mxid = EXCLUDED.mxid, display_name = EXCLUDED.display_name, \
               avatar_url = EXCLUDED.avatar_url, avatar_mxc = EXCLUDED.avatar_mxc, \
               registered = EXCLUDED.registered, name_set = EXCLUDED.name_set, \
               avatar_set = EXCLUDED.avatar_set, updated_at = CURRENT_TIMESTAMP",
        )
        .bind(row.max_user_id)
        .bind(&row.mxid)
        .bind(&row.display_name)
        .bind(&row.avatar_url)
        .bind(&row.avatar_mxc)
        .bind(row.registered)
        .bind(row.name_set)
        .bind(row.avatar_set)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub struct Ghosts<'a> {
    db: &'a Db,
    cache: &'a GhostCache,
    commits: &'a GhostCommit,
    timings: &'a super::Timings,
}

impl<'a> Ghosts<'a> {
    pub(super) fn new(
        db: &'a Db,
        cache: &'a GhostCache,
        commits: &'a GhostCommit,
        timings: &'a super::Timings,
    ) -> Self {
        Self {
            db,
            cache,
            commits,
            timings,
        }
    }

    /// Inserts the ghost or replaces every field of the existing one
    /// (written with the upserts of concurrent callers, in one transaction).
    pub async fn upsert(&self, ghost: &GhostRow) -> Result<(), StoreError> {
        let done = self.commits.write(self.db, self.timings, ghost).await;
        self.cache
            .wrote(ghost.max_user_id, done.is_ok().then(|| ghost.clone()));
        done
    }

    pub async fn get(&self, max_user_id: i64) -> Result<Option<GhostRow>, StoreError> {
        let writes = {
            let inner = self.cache.lock();
            if let Some(row) = inner.rows.get(&max_user_id) {
                return Ok(row.clone());
            }
            if inner.complete {
                return Ok(None);
            }
            inner.writes
        };
        let row: Option<GhostRow> = on_db!(self.db, |pool| sqlx::query_as(select!(
            "WHERE max_user_id = $1"
        ))
        .bind(max_user_id)
        .fetch_optional(pool)
        .await)?;
        let mut inner = self.cache.lock();
        if inner.writes == writes {
            inner.rows.insert(max_user_id, row.clone());
        }
        Ok(row)
    }

    /// Reads the whole table into memory if it has at most `at_most` rows,
    /// so that making a new ghost costs no lookup (a first start makes
    /// thousands); whether it did.
    pub async fn preload(&self, at_most: i64) -> Result<bool, StoreError> {
        let writes = self.cache.lock().writes;
        let (count,): (i64,) = on_db!(self.db, |pool| sqlx::query_as(
            "SELECT count(*) FROM ghosts"
        )
        .fetch_one(pool)
        .await)?;
        if count > at_most {
            return Ok(false);
        }
        let rows: Vec<GhostRow> = on_db!(self.db, |pool| sqlx::query_as(select!(""))
            .fetch_all(pool)
            .await)?;
        let mut inner = self.cache.lock();
        if inner.writes != writes {
            return Ok(false);
        }
        for row in rows {
            inner.rows.insert(row.max_user_id, Some(row));
        }
        inner.complete = true;
        Ok(true)
    }

    pub async fn get_by_mxid(&self, mxid: &str) -> Result<Option<GhostRow>, StoreError> {
        let row = on_db!(self.db, |pool| sqlx::query_as(select!("WHERE mxid = $1"))
            .bind(mxid)
            .fetch_optional(pool)
            .await)?;
        Ok(row)
    }

    /// Records that the ghost is registered with the homeserver. Returns
    /// whether the ghost existed.
    pub async fn mark_registered(&self, max_user_id: i64) -> Result<bool, StoreError> {
        let done = on_db!(self.db, |pool| {
            sqlx::query(
            "UPDATE ghosts SET registered = true, updated_at = CURRENT_TIMESTAMP WHERE max_user_id = $1",
        )
        .bind(max_user_id)
        .execute(pool).await.map(|done| done.rows_affected())
        });
        self.cache.wrote(max_user_id, None);
        Ok(done? > 0)
    }

    pub async fn delete(&self, max_user_id: i64) -> Result<bool, StoreError> {
        let done = on_db!(self.db, |pool| sqlx::query(
            "DELETE FROM ghosts WHERE max_user_id = $1"
        )
        .bind(max_user_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()));
        self.cache.wrote(max_user_id, None);
        Ok(done? > 0)
    }
}
