//! The `transactions` table: appservice transaction ids already handled, so a
//! homeserver retry after a crash or timeout is not processed twice.

use std::time::Duration;

use sqlx::PgPool;

use super::StoreError;

pub struct Transactions<'a> {
    pool: &'a PgPool,
}

impl<'a> Transactions<'a> {
    pub(super) fn new(pool: &'a PgPool) -> Self {
        Self { pool }
    }

    pub async fn is_handled(&self, txn_id: &str) -> Result<bool, StoreError> {
        let handled: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM transactions WHERE txn_id = $1)")
                .bind(txn_id)
                .fetch_one(self.pool)
                .await?;
        Ok(handled)
    }

    /// Records the transaction as handled. Returns `false` if it already was.
    pub async fn mark_handled(&self, txn_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO transactions (txn_id) VALUES ($1) ON CONFLICT (txn_id) DO NOTHING",
        )
        .bind(txn_id)
        .execute(self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets transactions handled longer than `age` ago (the homeserver
    /// only retries recent ones); returns how many were removed.
    pub async fn prune_older_than(&self, age: Duration) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM transactions WHERE handled_at < now() - make_interval(secs => $1)",
        )
        .bind(age.as_secs_f64())
        .execute(self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
