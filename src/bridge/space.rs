//! Personal spaces: each user's portals gathered in a space of their own
//! ("MAX"), as the mautrix bridges' personal filtering spaces, so a client
//! can show the bridged chats apart. Owns the space rooms and their
//! `m.space.child` links; portals call in when they get a room.

use std::sync::Arc;

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::json;

use super::Bridge;
use crate::matrix::{CreateRoomOptions, RoomPreset};

impl Bridge {
    /// The user's space, made the first time (with the rooms of the
    /// portals `receiver` already has in it); `None` when turned off or
    /// when it cannot be made now (logged; the next login tries again).
    pub(crate) async fn personal_space(
        self: &Arc<Self>,
        user: &UserId,
        receiver: i64,
    ) -> Option<OwnedRoomId> {
        if !self.config.bridge.personal_space {
            return None;
        }
        // One space per user even when several portals ask at once.
        let _one_at_a_time = self.space_creation.lock().await;
        match self.store.users().get(user.as_str()).await {
            Ok(Some(row)) => {
                if let Some(room) = row.space_room.and_then(|r| OwnedRoomId::try_from(r).ok()) {
                    return Some(room);
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(user = %user, %error, "could not read the user's space");
                return None;
            }
        }
        let options = CreateRoomOptions {
            name: Some("MAX".to_owned()),
            topic: Some("Your MAX chats, bridged".to_owned()),
            invite: vec![user.to_owned()],
            preset: Some(RoomPreset::PrivateChat),
            creation_content: Some(json!({"type": "m.space"})),
            // Only the bridge arranges the space. (The bot, its creator, is
            // not named: room version 12 refuses creators in `users`.)
            power_level_content_override: Some(json!({"events_default": 100})),
            ..Default::default()
        };
        let space = match self.matrix.create_room(&self.bot, options).await {
            Ok(space) => space,
            Err(error) => {
                tracing::warn!(user = %user, %error, "could not make the user's space");
                return None;
            }
        };
        if let Err(error) = self
            .store
            .users()
            .set_space_room(user.as_str(), space.as_str())
            .await
        {
            // The room exists but is not recorded: the next login makes
            // another, which is the lesser harm than portals without one.
            tracing::warn!(user = %user, %error, "could not record the user's space");
            return None;
        }
        tracing::info!(user = %user, space = %space, "personal space made");
        match self.store.portals().for_receiver(receiver).await {
            Ok(portals) => {
                for room in portals.iter().filter_map(|p| p.room_id.as_deref()) {
                    if let Ok(room) = <&RoomId>::try_from(room) {
                        self.link_child(&space, room).await;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(user = %user, %error, "could not list the portals for the space")
            }
        }
        Some(space)
    }

    /// Puts a new portal room into its user's space.
    pub(crate) async fn add_to_space(
        self: &Arc<Self>,
        user: &UserId,
        receiver: i64,
        room: &RoomId,
    ) {
        if let Some(space) = self.personal_space(user, receiver).await {
            self.link_child(&space, room).await;
        }
    }

    /// Takes a deleted portal's room out of its owner's space.
    pub(crate) async fn remove_from_space(&self, owner: &UserId, room: &RoomId) {
        let space = match self.store.users().get(owner.as_str()).await {
            Ok(Some(user)) => user.space_room,
            _ => None,
        };
        let Some(space) = space.and_then(|s| OwnedRoomId::try_from(s).ok()) else {
            return;
        };
        // A child event without `via` is no child.
        if let Err(error) = self
            .matrix
            .send_state(
                &self.bot,
                &space,
                "m.space.child",
                room.as_str(),
                &json!({}),
            )
            .await
        {
            tracing::warn!(space = %space, room = %room, %error, "could not take the room out of the space");
        }
    }

    async fn link_child(&self, space: &RoomId, room: &RoomId) {
        let content = json!({"via": [self.config.homeserver.domain]});
        if let Err(error) = self
            .matrix
            .send_state(&self.bot, space, "m.space.child", room.as_str(), &content)
            .await
        {
            tracing::warn!(space = %space, room = %room, %error, "could not add the room to the space");
        }
    }
}
