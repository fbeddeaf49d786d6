//! The `logins` table: each Matrix user's MAX session (token, device id, state),
//! what the bridge needs to reconnect everyone after a restart.

use super::Db;
use crate::on_db;
use maxproto::Token;

use super::StoreError;

/// One Matrix user's MAX login. `Debug` shows the token redacted.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoginRow {
    pub mxid: String,
    pub max_user_id: i64,
    #[sqlx(try_from = "String")]
    pub token: Token,
    /// Stable per login (a UUID string), reused on every reconnect.
    pub device_id: String,
    /// Free-form connection state, e.g. `connected` or `logged_out`.
    pub state: String,
    /// Display name of the MAX account.
    pub display_name: Option<String>,
    pub phone: Option<String>,
}

/// A `SELECT` of every [`LoginRow`] column, followed by `$rest`.
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT mxid, max_user_id, token, device_id, state, display_name, phone FROM logins ",
            $rest
        )
    };
}

pub struct Logins<'a> {
    db: &'a Db,
}

impl<'a> Logins<'a> {
    pub(super) fn new(db: &'a Db) -> Self {
        Self { db }
    }

    /// Inserts or replaces the login of `login.mxid` (creating the user row if
    /// needed). Fails with [`StoreError::Conflict`] if the MAX account is
    /// already bridged by another Matrix user.
    pub async fn upsert(&self, login: &LoginRow) -> Result<(), StoreError> {
        on_db!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO users (mxid) VALUES ($1) ON CONFLICT (mxid) DO NOTHING")
                .bind(&login.mxid)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
            "INSERT INTO logins (mxid, max_user_id, token, device_id, state, display_name, phone) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (mxid) DO UPDATE SET \
               max_user_id = EXCLUDED.max_user_id, token = EXCLUDED.token, \
               device_id = EXCLUDED.device_id, state = EXCLUDED.state, \
               display_name = EXCLUDED.display_name, phone = EXCLUDED.phone, \
               updated_at = CURRENT_TIMESTAMP",
        )
        .bind(&login.mxid)
        .bind(login.max_user_id)
        .bind(login.token.expose())
        .bind(&login.device_id)
        .bind(&login.state)
        .bind(&login.display_name)
        .bind(&login.phone)
        .execute(&mut *tx)
        .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn get(&self, mxid: &str) -> Result<Option<LoginRow>, StoreError> {
        let row = on_db!(self.db, |pool| sqlx::query_as(select!("WHERE mxid = $1"))
            .bind(mxid)
            .fetch_optional(pool)
            .await)?;
        Ok(row)
    }

    pub async fn get_by_max_user_id(
        &self,
        max_user_id: i64,
    ) -> Result<Option<LoginRow>, StoreError> {
        let row = on_db!(self.db, |pool| sqlx::query_as(select!(
            "WHERE max_user_id = $1"
        ))
        .bind(max_user_id)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Every login, e.g. to reconnect them all at startup.
    pub async fn all(&self) -> Result<Vec<LoginRow>, StoreError> {
        let rows = on_db!(self.db, |pool| sqlx::query_as(select!("ORDER BY mxid"))
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }

    /// Returns whether the login existed.
    pub async fn set_state(&self, mxid: &str, state: &str) -> Result<bool, StoreError> {
        let done = on_db!(self.db, |pool| sqlx::query(
            "UPDATE logins SET state = $2, updated_at = CURRENT_TIMESTAMP WHERE mxid = $1"
        )
        .bind(mxid)
        .bind(state)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(done > 0)
    }

    /// Replaces the token (MAX may hand out a new one on reconnect).
    /// Returns whether the login existed.
    pub async fn set_token(&self, mxid: &str, token: &Token) -> Result<bool, StoreError> {
        let done = on_db!(self.db, |pool| sqlx::query(
            "UPDATE logins SET token = $2, updated_at = CURRENT_TIMESTAMP WHERE mxid = $1"
        )
        .bind(mxid)
        .bind(token.expose())
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(done > 0)
    }

    /// Updates the MAX account's profile. Returns whether the login existed.
    pub async fn set_profile(
        &self,
        mxid: &str,
        display_name: Option<&str>,
        phone: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = on_db!(self.db, |pool| {
            sqlx::query(
            "UPDATE logins SET display_name = $2, phone = $3, updated_at = CURRENT_TIMESTAMP WHERE mxid = $1",
        )
        .bind(mxid)
        .bind(display_name)
        .bind(phone)
        .execute(pool).await.map(|done| done.rows_affected())
        })?;
        Ok(done > 0)
    }

    /// Forgets the login (logout). Returns whether it existed.
    pub async fn delete(&self, mxid: &str) -> Result<bool, StoreError> {
        let done = on_db!(self.db, |pool| sqlx::query(
            "DELETE FROM logins WHERE mxid = $1"
        )
        .bind(mxid)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(done > 0)
    }
}
