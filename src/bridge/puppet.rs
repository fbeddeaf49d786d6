//! Double puppeting: a logged-in user's own Matrix account acts for what
//! they do on MAX from elsewhere (messages, edits, reactions and read marks
//! from the phone app), joins their portals for them and lists their direct
//! chats in `m.direct`. Owns the choice of which Matrix user speaks for a
//! MAX user, and which client acts as a Matrix user.

use super::Bridge;
use super::login::LoginSession;
use super::portal::PortalError;
use crate::matrix::MatrixClient;
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};
use std::sync::Arc;

/// Content key on every event sent as a double puppet (mautrix bridges'
/// own): those events come back to the appservice from a real user, and
/// must not be bridged to MAX again.
pub(crate) const PUPPET_SOURCE_KEY: &str = "fi.mau.double_puppet_source";
const PUPPET_SOURCE: &str = "maxbridge";

impl Bridge {
    /// Whether the bridge can act as `mxid` itself: a real user of the
    /// homeserver that `double_puppet` is set up for.
    pub(crate) fn puppets(&self, mxid: &UserId) -> bool {
        self.double_puppet.is_some()
            && mxid.server_name().as_str() == self.config.homeserver.domain
            && !self.config.is_bridge_user(mxid.as_str())
    }

    /// The client that acts as `user`: the double puppet's for a real
    /// user, the bridge's own for its bot and ghosts.
    pub(crate) fn client_for(&self, user: &UserId) -> &MatrixClient {
        match &self.double_puppet {
            Some(puppet) if self.puppets(user) => puppet,
            _ => &self.matrix,
        }
    }

    /// Who speaks in Matrix for the MAX user `max_user` in the portals of
    /// `session`: the logged-in user themselves for their own account when
    /// double puppeted, else the MAX user's ghost.
    pub(crate) async fn speaker(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        max_user: i64,
    ) -> Result<OwnedUserId, PortalError> {
        if max_user == session.max_user_id && self.puppets(&session.mxid) {
            return Ok(session.mxid.clone());
        }
        Ok(self.ensure_ghost(session, max_user).await?)
    }

    /// Marks `content` as sent by the bridge when `author` is a double
    /// puppet (see [`PUPPET_SOURCE_KEY`]).
    pub(crate) fn mark_puppet_content(&self, author: &UserId, content: &mut Value) {
        if self.puppets(author) {
            content[PUPPET_SOURCE_KEY] = json!(PUPPET_SOURCE);
        }
    }

    /// Whether a Matrix event's content says the bridge sent it as a
    /// double puppet.
    pub(crate) fn sent_as_puppet(content: &Value) -> bool {
        content.get(PUPPET_SOURCE_KEY).is_some()
    }

    /// Accepts, as the user, their invite to a portal: with double
    /// puppeting the portal is simply there, as with mautrix's bridges.
    pub(crate) async fn join_for(&self, user: &UserId, room: &RoomId) {
        if !self.puppets(user) {
            return;
        }
        match self.client_for(user).join(user, room).await {
            Ok(()) => self.mark_joined(room, user),
            Err(error) => {
                tracing::warn!(%user, %room, %error, "could not join the user to the portal")
            }
        }
    }

    /// Lists `room` in the user's `m.direct` as their direct chat with
    /// `ghost`, so that clients show it among direct chats.
    pub(crate) async fn add_direct(&self, user: &UserId, ghost: &UserId, room: &RoomId) {
        if !self.puppets(user) {
            return;
        }
        // Read, change, write: one at a time, or a concurrent portal
        // creation's entry would be lost.
        let _one_at_a_time = self.direct_updates.lock().await;
        let client = self.client_for(user);
        let mut direct = match client.account_data(user, "m.direct").await {
            Ok(direct) => direct.filter(Value::is_object).unwrap_or_else(|| json!({})),
            Err(error) => {
                tracing::warn!(%user, %error, "m.direct unreadable; the chat is not listed");
                return;
            }
        };
        let rooms = &mut direct[ghost.as_str()];
        if !rooms.is_array() {
            *rooms = json!([]);
        }
        if let Some(rooms) = rooms.as_array_mut() {
            if rooms.iter().any(|r| r.as_str() == Some(room.as_str())) {
                return;
            }
            rooms.push(json!(room.as_str()));
        }
        if let Err(error) = client.set_account_data(user, "m.direct", &direct).await {
            tracing::warn!(%user, %error, "m.direct not updated");
        }
    }
}
