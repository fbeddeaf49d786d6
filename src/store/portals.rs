//! The `portals` table: MAX chats as seen by one login, and their Matrix rooms.

use std::fmt;

use sqlx::PgPool;

use super::StoreError;

/// What kind of MAX chat a portal bridges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortalKind {
    /// A one-to-one conversation.
    Dialog,
    /// A group chat.
    Chat,
    /// A broadcast channel.
    Channel,
}

impl PortalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dialog => "dialog",
            Self::Chat => "chat",
            Self::Channel => "channel",
        }
    }
}

impl fmt::Display for PortalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored portal kind this version does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown portal kind {0:?}")]
pub struct UnknownPortalKind(pub String);

impl TryFrom<String> for PortalKind {
    type Error = UnknownPortalKind;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "dialog" => Ok(Self::Dialog),
            "chat" => Ok(Self::Chat),
            "channel" => Ok(Self::Channel),
            _ => Err(UnknownPortalKind(value)),
        }
    }
}

/// A MAX chat (`chat_id`) as seen by the login whose MAX user id is `receiver`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PortalRow {
    pub chat_id: i64,
    pub receiver: i64,
    /// `None` until the Matrix room is created.
    pub room_id: Option<String>,
    #[sqlx(try_from = "String")]
    pub kind: PortalKind,
    pub name: Option<String>,
    pub topic: Option<String>,
    /// Avatar URL on the MAX side (to notice changes).
    pub avatar_url: Option<String>,
    /// The same avatar uploaded to Matrix.
    pub avatar_mxc: Option<String>,
    /// For dialogs: the MAX user on the other side.
    pub other_user_id: Option<i64>,
}

impl PortalRow {
    /// A portal with no room and no details yet.
    pub fn new(chat_id: i64, receiver: i64, kind: PortalKind) -> Self {
        Self {
            chat_id,
            receiver,
            room_id: None,
            kind,
            name: None,
            topic: None,
            avatar_url: None,
            avatar_mxc: None,
            other_user_id: None,
        }
    }
}

/// The newest MAX message a portal has accounted for, in MAX order: every
/// message up to it is bridged (or was deliberately skipped). Catch-up reads
/// the chat's history from `time` on and bridges what comes after `message_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortalMark {
    /// 0 when no message is accounted for yet (a portal starts at a time).
    pub message_id: i64,
    /// MAX time of that message (or the portal's start), ms.
    pub time: i64,
}

/// A `SELECT` of every [`PortalRow`] column, followed by `$rest`.
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT chat_id, receiver, room_id, kind, name, topic, avatar_url, avatar_mxc, \
             other_user_id FROM portals ",
            $rest
        )
    };
}

/// Moves a portal's mark forward only ($1 chat, $2 receiver, $3 id, $4 time);
/// shared with [`super::Messages::record`], which runs it in its transaction.
pub(super) const ADVANCE_MARK: &str = "UPDATE portals SET last_max_message_id = $3, last_max_time = $4 \
     WHERE chat_id = $1 AND receiver = $2 \
       AND (last_max_message_id IS NULL OR last_max_message_id < $3)";

pub struct Portals<'a> {
    pool: &'a PgPool,
}

impl<'a> Portals<'a> {
    pub(super) fn new(pool: &'a PgPool) -> Self {
        Self { pool }
    }

    /// Inserts the portal or replaces every field of the existing one. Fails
    /// with [`StoreError::Conflict`] if its room belongs to another portal.
    pub async fn upsert(&self, portal: &PortalRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO portals (chat_id, receiver, room_id, kind, name, topic, avatar_url, \
               avatar_mxc, other_user_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (chat_id, receiver) DO UPDATE SET \
               room_id = EXCLUDED.room_id, kind = EXCLUDED.kind, name = EXCLUDED.name, \
               topic = EXCLUDED.topic, avatar_url = EXCLUDED.avatar_url, \
               avatar_mxc = EXCLUDED.avatar_mxc, other_user_id = EXCLUDED.other_user_id",
        )
        .bind(portal.chat_id)
        .bind(portal.receiver)
        .bind(&portal.room_id)
        .bind(portal.kind.as_str())
        .bind(&portal.name)
        .bind(&portal.topic)
        .bind(&portal.avatar_url)
        .bind(&portal.avatar_mxc)
        .bind(portal.other_user_id)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    pub async fn get(&self, chat_id: i64, receiver: i64) -> Result<Option<PortalRow>, StoreError> {
        let row = sqlx::query_as(select!("WHERE chat_id = $1 AND receiver = $2"))
            .bind(chat_id)
            .bind(receiver)
            .fetch_optional(self.pool)
            .await?;
        Ok(row)
    }

    pub async fn get_by_room(&self, room_id: &str) -> Result<Option<PortalRow>, StoreError> {
        let row = sqlx::query_as(select!("WHERE room_id = $1"))
            .bind(room_id)
            .fetch_optional(self.pool)
            .await?;
        Ok(row)
    }

    /// The receiver's dialog with the MAX user `other_user_id`, if any.
    pub async fn find_dialog(
        &self,
        receiver: i64,
        other_user_id: i64,
    ) -> Result<Option<PortalRow>, StoreError> {
        let row = sqlx::query_as(select!(
            "WHERE receiver = $1 AND other_user_id = $2 AND kind = 'dialog' \
             ORDER BY chat_id LIMIT 1"
        ))
        .bind(receiver)
        .bind(other_user_id)
        .fetch_optional(self.pool)
        .await?;
        Ok(row)
    }

    /// Every portal seen by one login.
    pub async fn for_receiver(&self, receiver: i64) -> Result<Vec<PortalRow>, StoreError> {
        let rows = sqlx::query_as(select!("WHERE receiver = $1 ORDER BY chat_id"))
            .bind(receiver)
            .fetch_all(self.pool)
            .await?;
        Ok(rows)
    }

    /// Sets (or clears) the portal's Matrix room. Returns whether the portal
    /// existed; fails with [`StoreError::Conflict`] if the room is taken.
    pub async fn set_room(
        &self,
        chat_id: i64,
        receiver: i64,
        room_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE portals SET room_id = $3 WHERE chat_id = $1 AND receiver = $2")
                .bind(chat_id)
                .bind(receiver)
                .bind(room_id)
                .execute(self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The portal's mark; `None` if the portal or its mark does not exist.
    pub async fn mark(
        &self,
        chat_id: i64,
        receiver: i64,
    ) -> Result<Option<PortalMark>, StoreError> {
        let row: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT last_max_message_id, last_max_time FROM portals \
             WHERE chat_id = $1 AND receiver = $2",
        )
        .bind(chat_id)
        .bind(receiver)
        .fetch_optional(self.pool)
        .await?;
        Ok(match row {
            Some((Some(message_id), Some(time))) => Some(PortalMark { message_id, time }),
            _ => None,
        })
    }

    /// Moves the mark forward to `mark` (never back). Returns whether it moved.
    pub async fn advance_mark(
        &self,
        chat_id: i64,
        receiver: i64,
        mark: PortalMark,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(ADVANCE_MARK)
            .bind(chat_id)
            .bind(receiver)
            .bind(mark.message_id)
            .bind(mark.time)
            .execute(self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets the mark of a portal that has none (a new portal's start).
    pub async fn init_mark(
        &self,
        chat_id: i64,
        receiver: i64,
        mark: PortalMark,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE portals SET last_max_message_id = $3, last_max_time = $4 \
             WHERE chat_id = $1 AND receiver = $2 AND last_max_message_id IS NULL",
        )
        .bind(chat_id)
        .bind(receiver)
        .bind(mark.message_id)
        .bind(mark.time)
        .execute(self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets the portal and its message mappings. Returns whether it existed.
    pub async fn delete(&self, chat_id: i64, receiver: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM portals WHERE chat_id = $1 AND receiver = $2")
            .bind(chat_id)
            .bind(receiver)
            .execute(self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
