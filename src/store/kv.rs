//! The `kv` table: small named values that must survive restarts (e.g. MAX
//! sync markers per login). Keys are namespaced by the caller, e.g.
//! `login/@alice:example.org/chats_sync`.

use super::Db;
use crate::on_db;

use super::StoreError;

pub struct Kv<'a> {
    db: &'a Db,
}

impl<'a> Kv<'a> {
    pub(super) fn new(db: &'a Db) -> Self {
        Self { db }
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let value = on_db!(self.db, |pool| sqlx::query_scalar(
            "SELECT value FROM kv WHERE key = $1"
        )
        .bind(key)
        .fetch_optional(pool)
        .await)?;
        Ok(value)
    }

    pub async fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        on_db!(self.db, |pool| {
            sqlx::query(
            "INSERT INTO kv (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = CURRENT_TIMESTAMP",
        )
        .bind(key)
        .bind(value)
        .execute(pool).await.map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Returns whether the key existed.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let done = on_db!(self.db, |pool| sqlx::query("DELETE FROM kv WHERE key = $1")
            .bind(key)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(done > 0)
    }
}
