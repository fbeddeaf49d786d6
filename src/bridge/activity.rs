//! Typing and read receipts in a portal, both ways: MAX 129/130 pushes
//! become the ghosts' typing and receipts; the portal owner's Matrix typing
//! and receipts become MSG_TYPING (65) and CHAT_MARK (50). And MAX presence
//! (132) as the ghosts' presence, when `bridge.presence` asks for it.

use super::Bridge;
use super::login::LoginSession;
use super::portal::{PortalError, PortalKey};
use crate::matrix::EphemeralEvent;
use crate::store::MessageRow;
use serde_json::Value;
use std::sync::Arc;

/// How long a MAX typing notification shows; MAX repeats it while typing.
const TYPING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6);

impl Bridge {
    /// Shows a MAX user online or offline through their ghost; only for a
    /// ghost that exists (presence alone registers nobody).
    pub(crate) async fn show_presence(&self, max_user_id: i64, online: bool) {
        let ghost = match self.store.ghosts().get(max_user_id).await {
            Ok(Some(ghost)) if ghost.registered => ghost,
            Ok(_) => return,
            Err(error) => {
                tracing::debug!(max_user_id, %error, "presence not shown: ghost lookup failed");
                return;
            }
        };
        let Ok(mxid) = ruma::OwnedUserId::try_from(ghost.mxid) else {
            return;
        };
        if let Err(error) = self.matrix.set_presence(&mxid, online).await {
            tracing::debug!(ghost = %mxid, %error, "presence not shown");
        }
    }

    pub(crate) async fn on_max_typing(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        user: i64,
    ) -> Result<(), PortalError> {
        let Some(room) = self.existing_room(key).await? else {
            return Ok(());
        };
        let ghost = self.ensure_ghost(session, user).await?;
        self.add_to_room(&room, &ghost).await?;
        self.matrix
            .typing(&ghost, &room, true, TYPING_TIMEOUT)
            .await?;
        Ok(())
    }

    pub(crate) async fn on_max_read(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        user: i64,
        mark: i64,
    ) -> Result<(), PortalError> {
        let Some(room) = self.existing_room(key).await? else {
            return Ok(());
        };
        let Some(row) = self
            .store
            .messages()
            .latest_at_or_before(key.chat_id, key.receiver, mark)
            .await?
        else {
            return Ok(());
        };
        let Ok(event) = ruma::OwnedEventId::try_from(row.event_id.as_str()) else {
            return Ok(());
        };
        let reader = self.speaker(session, user).await?;
        self.add_to_room(&room, &reader).await?;
        self.client_for(&reader)
            .read_receipt(&reader, &room, &event)
            .await?;
        Ok(())
    }

    /// The portal owner's typing and read receipts go to MAX (65, 50).
    pub(crate) async fn on_matrix_ephemeral(
        self: &Arc<Self>,
        key: PortalKey,
        event: &EphemeralEvent,
    ) -> Result<(), PortalError> {
        let Some(session) = self.session_of_receiver(key.receiver) else {
            return Ok(());
        };
        let owner = session.mxid.as_str();
        let chat_id = maxproto::types::ChatId(key.chat_id);
        match event.event_type.as_str() {
            "m.typing" => {
                let typing = event
                    .content
                    .get("user_ids")
                    .and_then(Value::as_array)
                    .is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(owner)));
                if typing {
                    let request = maxproto::types::MsgTypingRequest {
                        chat_id,
                        kind: Some(maxproto::types::TypingType::Text),
                        extra: Default::default(),
                    };
                    session.client.call(&request).await?;
                }
            }
            "m.receipt" => {
                let Some(receipts) = event.content.as_object() else {
                    return Ok(());
                };
                // The newest event the owner marked read in this batch.
                let mut newest: Option<MessageRow> = None;
                for (event_id, kinds) in receipts {
                    let read_by_owner = ["m.read", "m.read.private"]
                        .iter()
                        .any(|kind| kinds.get(kind).and_then(|k| k.get(owner)).is_some());
                    if !read_by_owner {
                        continue;
                    }
                    if let Some(row) = self.store.messages().by_event_id(event_id).await?
                        && row.chat_id == key.chat_id
                        && row.receiver == key.receiver
                        && newest
                            .as_ref()
                            .is_none_or(|n| row.timestamp_ms > n.timestamp_ms)
                    {
                        newest = Some(row);
                    }
                }
                if let Some(row) = newest {
                    let request = maxproto::types::ChatMarkRequest::read(
                        chat_id,
                        maxproto::types::MessageId(row.max_message_id),
                        row.timestamp_ms,
                    );
                    session.client.call(&request).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
