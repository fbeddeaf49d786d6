//! The `portals` table: MAX chats as seen by one login, and their Matrix rooms.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use super::Db;
use crate::on_db;

use super::StoreError;
use super::messages::MessageRow;

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
    /// Relay mode: Matrix users without a MAX login speak through the
    /// owner's account.
    pub relay: bool,
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
            relay: false,
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
             other_user_id, relay FROM portals ",
            $rest
        )
    };
}

/// A `SELECT` of every [`PortalRow`] column, the mark and the highest MAX
/// message id recorded, followed by `$rest`.
macro_rules! select_cached {
    ($rest:literal) => {
        concat!(
            "SELECT chat_id, receiver, room_id, kind, name, topic, avatar_url, avatar_mxc, \
             other_user_id, relay, last_max_message_id, last_max_time, \
             (SELECT max(m.max_message_id) FROM messages m \
              WHERE m.chat_id = p.chat_id AND m.receiver = p.receiver) AS highest \
             FROM portals p ",
            $rest
        )
    };
}

#[derive(sqlx::FromRow)]
struct CachedRow {
    #[sqlx(flatten)]
    row: PortalRow,
    last_max_message_id: Option<i64>,
    last_max_time: Option<i64>,
    highest: Option<i64>,
}

impl From<CachedRow> for CachedPortal {
    fn from(row: CachedRow) -> Self {
        let mark = match (row.last_max_message_id, row.last_max_time) {
            (Some(message_id), Some(time)) => Some(PortalMark { message_id, time }),
            _ => None,
        };
        CachedPortal {
            row: row.row,
            mark,
            highest: row.highest.unwrap_or(0),
            recent: VecDeque::new(),
        }
    }
}

/// MAX messages whose rows a portal keeps at hand: the echo of a message sent
/// from Matrix comes back moments after its send recorded it.
const RECENT_MESSAGES: usize = 4;

/// Rooms remembered as no portal at most; past it the memory starts over.
const NOT_PORTALS_MAX: usize = 10_000;

/// The portal rows and marks the bridge reads on every message, kept in
/// memory so that a message costs no lookup: this process is the only writer
/// of the table, and every write goes through [`Portals`], which updates or
/// forgets what it changed. A mark here is ahead of the database's only past
/// messages that are recorded ([`Portals::accounted`]); otherwise it moves
/// after its update succeeded. So the worst a stale entry can do is cost a
/// lookup, never skip a message.
#[derive(Debug, Default)]
pub(super) struct PortalCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    /// `None`: known not to exist.
    by_key: HashMap<(i64, i64), Option<CachedPortal>>,
    /// Checked against `by_key` on use: a room that moved is a miss.
    by_room: HashMap<String, (i64, i64)>,
    not_portals: HashSet<String>,
    /// Writes per portal, and of all portals: a lookup that raced a write
    /// does not remember what it read before the write.
    writes: HashMap<(i64, i64), u64>,
    all_writes: u64,
}

impl CacheInner {
    /// A write of the portal's row, which may change what room it has.
    fn wrote(&mut self, key: (i64, i64)) {
        self.wrote_mark_or_messages(key);
        self.all_writes += 1;
    }

    /// A write that leaves the portal's room as it was.
    fn wrote_mark_or_messages(&mut self, key: (i64, i64)) {
        *self.writes.entry(key).or_default() += 1;
    }

    fn writes_of(&self, key: (i64, i64)) -> u64 {
        self.writes.get(&key).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
struct CachedPortal {
    row: PortalRow,
    mark: Option<PortalMark>,
    /// The highest MAX message id recorded, or above it: a message above
    /// it cannot have been bridged.
    highest: i64,
    /// Every part recorded by this process of the last few messages whose
    /// first part it recorded, oldest first.
    recent: VecDeque<(i64, Vec<MessageRow>)>,
}

/// What a portal's cache knows of one MAX message's rows.
pub(super) enum Known {
    /// Its parts, complete.
    Rows(Vec<MessageRow>),
    /// Nothing: the database has the answer.
    Unknown,
}

impl PortalCache {
    fn lock(&self) -> MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The portal's row (or its absence) and mark, if in memory.
    fn entry(&self, key: (i64, i64)) -> Option<Option<(PortalRow, Option<PortalMark>)>> {
        let inner = self.lock();
        let entry = inner.by_key.get(&key)?;
        Some(entry.as_ref().map(|p| (p.row.clone(), p.mark)))
    }

    /// The portal's mark (`None` inside: no portal or no mark), if in memory.
    fn mark_entry(&self, key: (i64, i64)) -> Option<Option<PortalMark>> {
        let inner = self.lock();
        let entry = inner.by_key.get(&key)?;
        Some(entry.as_ref().and_then(|p| p.mark))
    }

    fn room_entry(&self, room_id: &str) -> Option<Option<PortalRow>> {
        let inner = self.lock();
        if inner.not_portals.contains(room_id) {
            return Some(None);
        }
        let key = inner.by_room.get(room_id)?;
        match inner.by_key.get(key) {
            Some(Some(portal)) if portal.row.room_id.as_deref() == Some(room_id) => {
                Some(Some(portal.row.clone()))
            }
            _ => None,
        }
    }

    fn writes_of(&self, key: (i64, i64)) -> u64 {
        self.lock().writes_of(key)
    }

    fn all_writes(&self) -> u64 {
        self.lock().all_writes
    }

    /// Remembers what a lookup of `key` started after `writes` writes of
    /// it read, unless it was written meanwhile.
    fn remember(&self, writes: u64, key: (i64, i64), portal: Option<CachedPortal>) {
        let mut inner = self.lock();
        if inner.writes_of(key) != writes {
            return;
        }
        if let Some(room) = portal.as_ref().and_then(|p| p.row.room_id.clone()) {
            inner.not_portals.remove(&room);
            inner.by_room.insert(room, key);
        }
        inner.by_key.insert(key, portal);
    }

    /// Remembers that no portal has `room_id`, unless any portal was
    /// written since `all_writes`.
    fn remember_not_portal(&self, all_writes: u64, room_id: &str) {
        let mut inner = self.lock();
        if inner.all_writes != all_writes {
            return;
        }
        if inner.not_portals.len() >= NOT_PORTALS_MAX {
            inner.not_portals.clear();
        }
        inner.not_portals.insert(room_id.to_owned());
    }

    /// Forgets a portal that was written (whether or not the write went
    /// through), and that `room`, if any, may now be one.
    fn forget(&self, key: (i64, i64), room: Option<&str>) {
        let mut inner = self.lock();
        inner.wrote(key);
        inner.by_key.remove(&key);
        if let Some(room) = room {
            inner.not_portals.remove(room);
        }
    }

    /// After a forward-only move of the mark succeeded: the database's mark
    /// is the greater of the two. (Not a write of any room's portal, so the
    /// memory of rooms that are no portal stands.)
    pub(super) fn advanced(&self, key: (i64, i64), mark: PortalMark) {
        let mut inner = self.lock();
        inner.wrote_mark_or_messages(key);
        Self::raise_mark(&mut inner, key, mark);
    }

    /// Moves a remembered mark forward to `mark` (never back).
    fn raise_mark(inner: &mut CacheInner, key: (i64, i64), mark: PortalMark) {
        if let Some(Some(portal)) = inner.by_key.get_mut(&key)
            && portal.mark.is_none_or(|m| m.message_id < mark.message_id)
        {
            portal.mark = Some(mark);
        }
    }

    /// After a write of the mark that may or may not have gone through.
    pub(super) fn forget_mark(&self, key: (i64, i64)) {
        self.forget(key, None);
    }

    /// After a write of a message row (whether or not it went through).
    pub(super) fn recorded(&self, row: &MessageRow, written: bool) {
        let key = (row.chat_id, row.receiver);
        let mut inner = self.lock();
        inner.wrote_mark_or_messages(key);
        let Some(Some(portal)) = inner.by_key.get_mut(&key) else {
            return;
        };
        portal.highest = portal.highest.max(row.max_message_id);
        if !written {
            return;
        }
        let id = row.max_message_id;
        match portal.recent.iter_mut().find(|(m, _)| *m == id) {
            Some((_, parts)) if !parts.iter().any(|p| p.part == row.part) => {
                parts.push(row.clone());
                parts.sort_by_key(|p| p.part);
            }
            Some(_) => {}
            // Only from the first part on is the list known complete.
            None if row.part == 0 => {
                if portal.recent.len() >= RECENT_MESSAGES {
                    portal.recent.pop_front();
                }
                portal.recent.push_back((id, vec![row.clone()]));
            }
            None => {}
        }
    }

    /// After message rows were deleted.
    pub(super) fn messages_deleted(&self) {
        let mut inner = self.lock();
        for portal in inner.by_key.values_mut().flatten() {
            portal.recent.clear();
        }
    }

    /// What memory says of a MAX message's rows; `None` if the portal is not
    /// cached.
    pub(super) fn known(&self, key: (i64, i64), max_message_id: i64) -> Option<Known> {
        let inner = self.lock();
        let Some(Some(portal)) = inner.by_key.get(&key) else {
            return None;
        };
        if max_message_id > portal.highest {
            return Some(Known::Rows(Vec::new()));
        }
        Some(
            match portal.recent.iter().find(|(m, _)| *m == max_message_id) {
                Some((_, parts)) => Known::Rows(parts.clone()),
                None => Known::Unknown,
            },
        )
    }

    /// Moves the mark in memory only (see [`Portals::accounted`]).
    fn accounted(&self, key: (i64, i64), mark: PortalMark) {
        Self::raise_mark(&mut self.lock(), key, mark);
    }
}

/// Moves a portal's mark forward only ($1 chat, $2 receiver, $3 id, $4 time);
/// [`super::Messages::record`] does the same in its insert.
pub(super) const ADVANCE_MARK: &str = "UPDATE portals SET last_max_message_id = $3, last_max_time = $4 \
     WHERE chat_id = $1 AND receiver = $2 \
       AND (last_max_message_id IS NULL OR last_max_message_id < $3)";

pub struct Portals<'a> {
    db: &'a Db,
    cache: &'a PortalCache,
}

impl<'a> Portals<'a> {
    pub(super) fn new(db: &'a Db, cache: &'a PortalCache) -> Self {
        Self { db, cache }
    }

    /// Inserts the portal or replaces every field of the existing one. Fails
    /// with [`StoreError::Conflict`] if its room belongs to another portal.
    pub async fn upsert(&self, portal: &PortalRow) -> Result<(), StoreError> {
        let done = on_db!(self.db, |pool| sqlx::query(
            "INSERT INTO portals (chat_id, receiver, room_id, kind, name, topic, avatar_url, \
               avatar_mxc, other_user_id, relay) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (chat_id, receiver) DO UPDATE SET \
               room_id = EXCLUDED.room_id, kind = EXCLUDED.kind, name = EXCLUDED.name, \
               topic = EXCLUDED.topic, avatar_url = EXCLUDED.avatar_url, \
               avatar_mxc = EXCLUDED.avatar_mxc, other_user_id = EXCLUDED.other_user_id, \
               relay = EXCLUDED.relay",
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
        .bind(portal.relay)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()));
        self.cache
            .forget((portal.chat_id, portal.receiver), portal.room_id.as_deref());
        done?;
        Ok(())
    }

    pub async fn get(&self, chat_id: i64, receiver: i64) -> Result<Option<PortalRow>, StoreError> {
        Ok(self.cached(chat_id, receiver).await?.map(|(row, _)| row))
    }

    /// Loads the portal into memory if it is not there (for the message
    /// lookups that memory can answer).
    pub(super) async fn load(&self, chat_id: i64, receiver: i64) -> Result<(), StoreError> {
        self.cached(chat_id, receiver).await.map(drop)
    }

    /// Moves the portal's mark to `mark` in memory only, for a message
    /// whose every part is recorded (the echo of a message sent from
    /// Matrix): the database's mark may lag behind, since a catch-up from
    /// it finds such messages recorded. The next bridged message moves it.
    pub fn accounted(&self, chat_id: i64, receiver: i64, mark: PortalMark) {
        self.cache.accounted((chat_id, receiver), mark);
    }

    /// The portal with its mark, from memory or else from the database.
    async fn cached(
        &self,
        chat_id: i64,
        receiver: i64,
    ) -> Result<Option<(PortalRow, Option<PortalMark>)>, StoreError> {
        let key = (chat_id, receiver);
        if let Some(entry) = self.cache.entry(key) {
            return Ok(entry);
        }
        let writes = self.cache.writes_of(key);
        let row: Option<CachedRow> = on_db!(self.db, |pool| sqlx::query_as(select_cached!(
            "WHERE chat_id = $1 AND receiver = $2"
        ))
        .bind(chat_id)
        .bind(receiver)
        .fetch_optional(pool)
        .await)?;
        let portal = row.map(CachedPortal::from);
        let answer = portal.as_ref().map(|p| (p.row.clone(), p.mark));
        self.cache.remember(writes, key, portal);
        Ok(answer)
    }

    pub async fn get_by_room(&self, room_id: &str) -> Result<Option<PortalRow>, StoreError> {
        if let Some(entry) = self.cache.room_entry(room_id) {
            return Ok(entry);
        }
        let all_writes = self.cache.all_writes();
        // The key first, then the portal as a lookup by key reads it: that
        // one notices a write of its portal racing it (a record raising the
        // highest id, say), which a lookup by room could not.
        let key: Option<(i64, i64)> = on_db!(self.db, |pool| sqlx::query_as(
            "SELECT chat_id, receiver FROM portals WHERE room_id = $1"
        )
        .bind(room_id)
        .fetch_optional(pool)
        .await)?;
        match key {
            Some((chat_id, receiver)) => Ok(self
                .cached(chat_id, receiver)
                .await?
                .map(|(row, _)| row)
                .filter(|row| row.room_id.as_deref() == Some(room_id))),
            None => {
                self.cache.remember_not_portal(all_writes, room_id);
                Ok(None)
            }
        }
    }

    /// The receiver's dialog with the MAX user `other_user_id`, if any.
    pub async fn find_dialog(
        &self,
        receiver: i64,
        other_user_id: i64,
    ) -> Result<Option<PortalRow>, StoreError> {
        let row = on_db!(self.db, |pool| sqlx::query_as(select!(
            "WHERE receiver = $1 AND other_user_id = $2 AND kind = 'dialog' \
             ORDER BY chat_id LIMIT 1"
        ))
        .bind(receiver)
        .bind(other_user_id)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Every portal seen by one login.
    pub async fn for_receiver(&self, receiver: i64) -> Result<Vec<PortalRow>, StoreError> {
        let rows = on_db!(self.db, |pool| sqlx::query_as(select!(
            "WHERE receiver = $1 ORDER BY chat_id"
        ))
        .bind(receiver)
        .fetch_all(pool)
        .await)?;
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
        let done = on_db!(self.db, |pool| sqlx::query(
            "UPDATE portals SET room_id = $3 WHERE chat_id = $1 AND receiver = $2"
        )
        .bind(chat_id)
        .bind(receiver)
        .bind(room_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()));
        self.cache.forget((chat_id, receiver), room_id);
        Ok(done? > 0)
    }

    /// The portal's mark; `None` if the portal or its mark does not exist.
    pub async fn mark(
        &self,
        chat_id: i64,
        receiver: i64,
    ) -> Result<Option<PortalMark>, StoreError> {
        if let Some(mark) = self.cache.mark_entry((chat_id, receiver)) {
            return Ok(mark);
        }
        Ok(self
            .cached(chat_id, receiver)
            .await?
            .and_then(|(_, mark)| mark))
    }

    /// Moves the mark forward to `mark` (never back). Returns whether it moved.
    pub async fn advance_mark(
        &self,
        chat_id: i64,
        receiver: i64,
        mark: PortalMark,
    ) -> Result<bool, StoreError> {
        let key = (chat_id, receiver);
        // Memory is ahead of the database only past recorded messages.
        if self
            .cache
            .mark_entry(key)
            .flatten()
            .is_some_and(|m| m.message_id >= mark.message_id)
        {
            return Ok(false);
        }
        let done = on_db!(self.db, |pool| sqlx::query(ADVANCE_MARK)
            .bind(chat_id)
            .bind(receiver)
            .bind(mark.message_id)
            .bind(mark.time)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()));
        match done {
            Ok(done) => {
                self.cache.advanced(key, mark);
                Ok(done > 0)
            }
            Err(error) => {
                self.cache.forget_mark(key);
                Err(error.into())
            }
        }
    }

    /// Sets the mark of a portal that has none (a new portal's start).
    pub async fn init_mark(
        &self,
        chat_id: i64,
        receiver: i64,
        mark: PortalMark,
    ) -> Result<bool, StoreError> {
        let done = on_db!(self.db, |pool| sqlx::query(
            "UPDATE portals SET last_max_message_id = $3, last_max_time = $4 \
             WHERE chat_id = $1 AND receiver = $2 AND last_max_message_id IS NULL",
        )
        .bind(chat_id)
        .bind(receiver)
        .bind(mark.message_id)
        .bind(mark.time)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()));
        self.cache.forget_mark((chat_id, receiver));
        Ok(done? > 0)
    }

    /// Turns relay mode on or off. Returns whether the portal existed.
    pub async fn set_relay(
        &self,
        chat_id: i64,
        receiver: i64,
        relay: bool,
    ) -> Result<bool, StoreError> {
        let done = on_db!(self.db, |pool| sqlx::query(
            "UPDATE portals SET relay = $3 WHERE chat_id = $1 AND receiver = $2"
        )
        .bind(chat_id)
        .bind(receiver)
        .bind(relay)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()));
        self.cache.forget((chat_id, receiver), None);
        Ok(done? > 0)
    }

    /// Forgets the portal and its message mappings. Returns whether it existed.
    pub async fn delete(&self, chat_id: i64, receiver: i64) -> Result<bool, StoreError> {
        let done = on_db!(self.db, |pool| sqlx::query(
            "DELETE FROM portals WHERE chat_id = $1 AND receiver = $2"
        )
        .bind(chat_id)
        .bind(receiver)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()));
        self.cache.forget((chat_id, receiver), None);
        Ok(done? > 0)
    }
}
