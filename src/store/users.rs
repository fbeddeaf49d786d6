//! The `users` table: Matrix users known to the bridge, their management
//! room and their personal space.

use super::Db;
use crate::on_db;

use super::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRow {
    pub mxid: String,
    /// The room where this user talks to the bridge bot.
    pub management_room: Option<String>,
    /// The space holding this user's portals, once made.
    pub space_room: Option<String>,
}

pub struct Users<'a> {
    db: &'a Db,
}

impl<'a> Users<'a> {
    pub(super) fn new(db: &'a Db) -> Self {
        Self { db }
    }

    /// Records the user if unknown; an existing row is left as it is.
    pub async fn ensure(&self, mxid: &str) -> Result<(), StoreError> {
        on_db!(self.db, |pool| sqlx::query(
            "INSERT INTO users (mxid) VALUES ($1) ON CONFLICT (mxid) DO NOTHING"
        )
        .bind(mxid)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    pub async fn get(&self, mxid: &str) -> Result<Option<UserRow>, StoreError> {
        let row = on_db!(self.db, |pool| sqlx::query_as(
            "SELECT mxid, management_room, space_room FROM users WHERE mxid = $1"
        )
        .bind(mxid)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// The user whose management room `room_id` is.
    pub async fn get_by_management_room(
        &self,
        room_id: &str,
    ) -> Result<Option<UserRow>, StoreError> {
        let row = on_db!(self.db, |pool| sqlx::query_as(
            "SELECT mxid, management_room, space_room FROM users WHERE management_room = $1",
        )
        .bind(room_id)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Sets (or clears) the user's management room, creating the user if
    /// needed. A room can be the management room of one user only.
    pub async fn set_management_room(
        &self,
        mxid: &str,
        room_id: Option<&str>,
    ) -> Result<(), StoreError> {
        on_db!(self.db, |pool| sqlx::query(
            "INSERT INTO users (mxid, management_room) VALUES ($1, $2) \
             ON CONFLICT (mxid) DO UPDATE SET management_room = EXCLUDED.management_room",
        )
        .bind(mxid)
        .bind(room_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Records the user's personal space, creating the user if needed.
    pub async fn set_space_room(&self, mxid: &str, room_id: &str) -> Result<(), StoreError> {
        on_db!(self.db, |pool| sqlx::query(
            "INSERT INTO users (mxid, space_room) VALUES ($1, $2) \
             ON CONFLICT (mxid) DO UPDATE SET space_room = EXCLUDED.space_room",
        )
        .bind(mxid)
        .bind(room_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    pub async fn all(&self) -> Result<Vec<UserRow>, StoreError> {
        let rows = on_db!(self.db, |pool| sqlx::query_as(
            "SELECT mxid, management_room, space_room FROM users ORDER BY mxid"
        )
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    /// Forgets the user together with their login. Returns whether a row existed.
    pub async fn delete(&self, mxid: &str) -> Result<bool, StoreError> {
        let done = on_db!(self.db, |pool| sqlx::query(
            "DELETE FROM users WHERE mxid = $1"
        )
        .bind(mxid)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(done > 0)
    }
}
