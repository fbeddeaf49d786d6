//! Chats (§4.2): dialogs, groups and channels, with the helpers a bridge
//! needs to name and populate them.

use super::Extra;
use super::common::Options;
use super::ids::{ChatId, MessageId, UserId, opt_int_or_string};
use super::message::Message;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

wire_enum! {
    /// `type` of a chat.
    ChatType {
        /// One-to-one (also Saved messages, id 0).
        Dialog = "DIALOG",
        /// A group.
        Chat = "CHAT",
        Channel = "CHANNEL",
    }
}

wire_enum! {
    /// `status` of a chat for the logged-in account.
    ChatStatus {
        Active = "ACTIVE",
        Archived = "ARCHIVED",
        /// You left or were removed.
        Removed = "REMOVED",
        Hidden = "HIDDEN",
    }
}

wire_enum! {
    /// `access` of a group or channel.
    ChatAccess {
        Public = "PUBLIC",
        Private = "PRIVATE",
        Secret = "SECRET",
    }
}

/// The role of a user in a chat, inferred from `owner` and `admins`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatRole {
    Owner,
    Admin,
    Member,
}

/// A chat as the server describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chat {
    pub id: ChatId,
    #[serde(rename = "type")]
    pub chat_type: ChatType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ChatStatus>,
    /// Creator (0 for some channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<UserId>,
    /// Member → how far they have read (ms, 0 if unknown). Partial or absent
    /// for big channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participants: Option<BTreeMap<UserId, i64>>,
    /// Groups and channels; dialogs usually have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_icon_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_raw_icon_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<i64>,
    /// 1 for old migrated dialogs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_time: Option<i64>,
    /// Unread count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_messages: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participants_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<ChatAccess>,
    /// `{FLAG: bool}` on groups/channels, sometimes an integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admins: Option<Vec<UserId>>,
    /// Admin → `{id, permissions?, …}`, kept raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_participants: Option<BTreeMap<UserId, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invited_by: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_message_id: Option<MessageId>,
    /// Chat-level client id; meaning unclear (§4.2).
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub cid: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_bots: Option<bool>,
    /// In 135 pushes after a reaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reacted_message_id: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reaction: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Chat {
    /// A chat with only an id and a type; fill in the rest with struct
    /// update syntax.
    pub fn new(id: ChatId, chat_type: ChatType) -> Chat {
        Chat {
            id,
            chat_type,
            status: None,
            owner: None,
            participants: None,
            title: None,
            description: None,
            link: None,
            base_icon_url: None,
            base_raw_icon_url: None,
            last_message: None,
            last_event_time: None,
            modified: None,
            created: None,
            join_time: None,
            new_messages: None,
            messages_count: None,
            participants_count: None,
            access: None,
            options: None,
            admins: None,
            admin_participants: None,
            pinned_message: None,
            invited_by: None,
            prev_message_id: None,
            cid: None,
            has_bots: None,
            last_reacted_message_id: None,
            last_reaction: None,
            extra: Extra::new(),
        }
    }

    pub fn kind(&self) -> &ChatType {
        &self.chat_type
    }

    pub fn is_dialog(&self) -> bool {
        self.chat_type == ChatType::Dialog
    }

    /// Saved messages ("Избранное"): the dialog with oneself, id 0.
    pub fn is_saved_messages(&self) -> bool {
        self.id == ChatId::SAVED
    }

    /// The other user of a dialog: the participant that is not `me`, or,
    /// when participants are missing, `id XOR me` (dialog ids are the XOR
    /// of both user ids). `None` for groups, channels and Saved messages.
    pub fn other_participant(&self, me: UserId) -> Option<UserId> {
        if !self.is_dialog() || self.is_saved_messages() {
            return None;
        }
        let listed = self
            .participants
            .as_ref()
            .and_then(|p| p.keys().copied().find(|&user| user != me));
        listed.or_else(|| {
            let other = UserId(self.id.0 ^ me.0);
            (other != me && other.0 > 0).then_some(other)
        })
    }

    /// Participant ids (possibly partial for big chats).
    pub fn participant_ids(&self) -> impl Iterator<Item = UserId> + '_ {
        self.participants.iter().flat_map(|p| p.keys().copied())
    }

    /// How far `user` has read (ms), if known.
    pub fn read_mark(&self, user: UserId) -> Option<i64> {
        self.participants.as_ref()?.get(&user).copied()
    }

    /// Owner if `user == owner`, admin if listed in `admins` or
    /// `adminParticipants`, member otherwise.
    pub fn role_of(&self, user: UserId) -> ChatRole {
        if self.owner == Some(user) {
            ChatRole::Owner
        } else if self.admins.as_ref().is_some_and(|a| a.contains(&user))
            || self
                .admin_participants
                .as_ref()
                .is_some_and(|a| a.contains_key(&user))
        {
            ChatRole::Admin
        } else {
            ChatRole::Member
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dialog_other_participant() {
        let chat: Chat = serde_json::from_value(json!({"id": 12935268, "type": "DIALOG",
            "participants": {"543835": 1753125314921_i64, "13446207": 1753959986162_i64}}))
        .unwrap();
        let me = UserId(13_446_207);
        assert_eq!(chat.other_participant(me), Some(UserId(543_835)));
        assert_eq!(chat.read_mark(UserId(543_835)), Some(1_753_125_314_921));
        let bare = Chat::new(ChatId(12_935_268), ChatType::Dialog);
        assert_eq!(bare.other_participant(me), Some(UserId(543_835)));
        let saved = Chat::new(ChatId::SAVED, ChatType::Dialog);
        assert_eq!(saved.other_participant(me), None);
        let group = Chat::new(ChatId(-1), ChatType::Chat);
        assert_eq!(group.other_participant(me), None);
    }

    #[test]
    fn roles_and_unknown_type() {
        let chat: Chat = serde_json::from_value(json!({"id": -1, "type": "GROUP_CHAT",
            "owner": 1, "admins": [2], "status": "ACTIVE"}))
        .unwrap();
        assert_eq!(chat.kind(), &ChatType::Other("GROUP_CHAT".into()));
        assert_eq!(chat.role_of(UserId(1)), ChatRole::Owner);
        assert_eq!(chat.role_of(UserId(2)), ChatRole::Admin);
        assert_eq!(chat.role_of(UserId(3)), ChatRole::Member);
        assert_eq!(chat.status, Some(ChatStatus::Active));
    }
}
