//! The `reactions` table: the Matrix reaction event standing for each MAX
//! user's reaction on a bridged message (MAX allows one per user and message).

use super::Db;
use crate::on_db;

use super::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReactionRow {
    pub chat_id: i64,
    pub receiver: i64,
    pub max_message_id: i64,
    /// MAX user id of whoever reacted.
    pub max_user_id: i64,
    pub emoji: String,
    pub event_id: String,
    pub room_id: String,
}

macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT chat_id, receiver, max_message_id, max_user_id, emoji, event_id, room_id \
             FROM reactions ",
            $rest
        )
    };
}

pub struct Reactions<'a> {
    db: &'a Db,
}

impl<'a> Reactions<'a> {
    pub(super) fn new(db: &'a Db) -> Self {
        Self { db }
    }

    /// Records a user's reaction, replacing the one they had on the message.
    pub async fn upsert(&self, reaction: &ReactionRow) -> Result<(), StoreError> {
        on_db!(self.db, |pool| sqlx::query(
            "INSERT INTO reactions (chat_id, receiver, max_message_id, max_user_id, emoji, \
               event_id, room_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (chat_id, receiver, max_message_id, max_user_id) DO UPDATE SET \
               emoji = EXCLUDED.emoji, event_id = EXCLUDED.event_id, room_id = EXCLUDED.room_id",
        )
        .bind(reaction.chat_id)
        .bind(reaction.receiver)
        .bind(reaction.max_message_id)
        .bind(reaction.max_user_id)
        .bind(&reaction.emoji)
        .bind(&reaction.event_id)
        .bind(&reaction.room_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Every recorded reaction on a MAX message.
    pub async fn for_message(
        &self,
        chat_id: i64,
        receiver: i64,
        max_message_id: i64,
    ) -> Result<Vec<ReactionRow>, StoreError> {
        let rows = on_db!(self.db, |pool| sqlx::query_as(select!(
            "WHERE chat_id = $1 AND receiver = $2 AND max_message_id = $3 ORDER BY max_user_id"
        ))
        .bind(chat_id)
        .bind(receiver)
        .bind(max_message_id)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    pub async fn by_event_id(&self, event_id: &str) -> Result<Option<ReactionRow>, StoreError> {
        let row = on_db!(self.db, |pool| sqlx::query_as(select!(
            "WHERE event_id = $1"
        ))
        .bind(event_id)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Forgets the reaction `reaction` records (that user's on that
    /// message); whether there was one.
    pub async fn delete(&self, reaction: &ReactionRow) -> Result<bool, StoreError> {
        let done = on_db!(self.db, |pool| sqlx::query(
            "DELETE FROM reactions \
             WHERE chat_id = $1 AND receiver = $2 AND max_message_id = $3 AND max_user_id = $4",
        )
        .bind(reaction.chat_id)
        .bind(reaction.receiver)
        .bind(reaction.max_message_id)
        .bind(reaction.max_user_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(done > 0)
    }
}
