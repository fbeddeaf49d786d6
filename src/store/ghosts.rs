//! The `ghosts` table: Matrix puppets of MAX users and how far their
//! profile has been pushed to Matrix.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use sqlx::PgPool;

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
            None => inner.rows.remove(&max_user_id),
        };
    }
}

pub struct Ghosts<'a> {
    pool: &'a PgPool,
    cache: &'a GhostCache,
}

impl<'a> Ghosts<'a> {
    pub(super) fn new(pool: &'a PgPool, cache: &'a GhostCache) -> Self {
        Self { pool, cache }
    }

    /// Inserts the ghost or replaces every field of the existing one.
    pub async fn upsert(&self, ghost: &GhostRow) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO ghosts (max_user_id, mxid, display_name, avatar_url, avatar_mxc, \
               registered, name_set, avatar_set) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (max_user_id) DO UPDATE SET \
               mxid = EXCLUDED.mxid, display_name = EXCLUDED.display_name, \
               avatar_url = EXCLUDED.avatar_url, avatar_mxc = EXCLUDED.avatar_mxc, \
               registered = EXCLUDED.registered, name_set = EXCLUDED.name_set, \
               avatar_set = EXCLUDED.avatar_set, updated_at = now()",
        )
        .bind(ghost.max_user_id)
        .bind(&ghost.mxid)
        .bind(&ghost.display_name)
        .bind(&ghost.avatar_url)
        .bind(&ghost.avatar_mxc)
        .bind(ghost.registered)
        .bind(ghost.name_set)
        .bind(ghost.avatar_set)
        .execute(self.pool)
        .await;
        self.cache
            .wrote(ghost.max_user_id, done.is_ok().then(|| ghost.clone()));
        done?;
        Ok(())
    }

    pub async fn get(&self, max_user_id: i64) -> Result<Option<GhostRow>, StoreError> {
        let writes = {
            let inner = self.cache.lock();
            if let Some(row) = inner.rows.get(&max_user_id) {
                return Ok(row.clone());
            }
            inner.writes
        };
        let row: Option<GhostRow> = sqlx::query_as(select!("WHERE max_user_id = $1"))
            .bind(max_user_id)
            .fetch_optional(self.pool)
            .await?;
        let mut inner = self.cache.lock();
        if inner.writes == writes {
            inner.rows.insert(max_user_id, row.clone());
        }
        Ok(row)
    }

    pub async fn get_by_mxid(&self, mxid: &str) -> Result<Option<GhostRow>, StoreError> {
        let row = sqlx::query_as(select!("WHERE mxid = $1"))
            .bind(mxid)
            .fetch_optional(self.pool)
            .await?;
        Ok(row)
    }

    /// Records that the ghost is registered with the homeserver. Returns
    /// whether the ghost existed.
    pub async fn mark_registered(&self, max_user_id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE ghosts SET registered = true, updated_at = now() WHERE max_user_id = $1",
        )
        .bind(max_user_id)
        .execute(self.pool)
        .await;
        self.cache.wrote(max_user_id, None);
        Ok(done?.rows_affected() > 0)
    }

    pub async fn delete(&self, max_user_id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM ghosts WHERE max_user_id = $1")
            .bind(max_user_id)
            .execute(self.pool)
            .await;
        self.cache.wrote(max_user_id, None);
        Ok(done?.rows_affected() > 0)
    }
}
