//! The `kv` table: small named values that must survive restarts (e.g. MAX
//! sync markers per login). Keys are namespaced by the caller, e.g.
//! `login/@alice:example.org/chats_sync`.

use sqlx::PgPool;

use super::StoreError;

pub struct Kv<'a> {
    pool: &'a PgPool,
}

impl<'a> Kv<'a> {
    pub(super) fn new(pool: &'a PgPool) -> Self {
        Self { pool }
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let value = sqlx::query_scalar("SELECT value FROM kv WHERE key = $1")
            .bind(key)
            .fetch_optional(self.pool)
            .await?;
        Ok(value)
    }

    pub async fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO kv (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        )
        .bind(key)
        .bind(value)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// Returns whether the key existed.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM kv WHERE key = $1")
            .bind(key)
            .execute(self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
