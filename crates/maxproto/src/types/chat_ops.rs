//! Chat requests (§2.3, §2.4): CHAT_INFO (48), CHAT_HISTORY (49),
//! CHAT_MARK (50), CHATS_LIST (53), CHAT_MEMBERS (59), CHAT_SUBSCRIBE (75).

use super::chat::Chat;
use super::ids::{ChatId, MessageId, UserId};
use super::message::Message;
use super::user::Member;
use super::{EmptyResponse, Extra, Request};
use crate::opcode::Opcode;
use serde::{Deserialize, Serialize};

/// 48 CHAT_INFO: chats by id (0 = Saved messages).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatInfoRequest {
    pub chat_ids: Vec<ChatId>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for ChatInfoRequest {
    const OPCODE: Opcode = Opcode::CHAT_INFO;
    type Response = ChatsResponse;
}

/// `{chats: [Chat]}` (48); chats you are not in are omitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatsResponse {
    #[serde(default)]
    pub chats: Vec<Chat>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 49 CHAT_HISTORY.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatHistoryRequest {
    pub chat_id: ChatId,
    /// Anchor time, ms.
    pub from: i64,
    /// Messages after the anchor (starting with it when `backward` is 0).
    pub forward: i64,
    /// Messages ending with the anchor.
    pub backward: i64,
    pub get_messages: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub get_chat: Option<bool>,
    /// `REGULAR` or `DELAYED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_type: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatHistoryRequest {
    /// The `count` messages ending at time `from` (latest page: `from` = now).
    pub fn backward(chat_id: ChatId, from: i64, count: i64) -> ChatHistoryRequest {
        ChatHistoryRequest {
            chat_id,
            from,
            forward: 0,
            backward: count,
            get_messages: true,
            get_chat: None,
            item_type: None,
            extra: Extra::new(),
        }
    }

    /// The `count` messages starting with the one at time `from`.
    pub fn forward(chat_id: ChatId, from: i64, count: i64) -> ChatHistoryRequest {
        ChatHistoryRequest {
            forward: count,
            backward: 0,
            ..ChatHistoryRequest::backward(chat_id, from, 0)
        }
    }
}

impl Request for ChatHistoryRequest {
    const OPCODE: Opcode = Opcode::CHAT_HISTORY;
    type Response = ChatHistoryResponse;
}

/// `{messages (oldest first), chat?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatHistoryResponse {
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<Chat>,
    #[serde(flatten)]
    pub extra: Extra,
}

wire_enum! {
    /// `type` of CHAT_MARK.
    MarkType {
        ReadMessage = "READ_MESSAGE",
        ReadReaction = "READ_REACTION",
        SetAsUnread = "SET_AS_UNREAD",
    }
}

/// 50 CHAT_MARK: mark read up to a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMarkRequest {
    #[serde(rename = "type")]
    pub kind: MarkType,
    pub chat_id: ChatId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    /// The message's own `time` (using "now" marks later messages read too).
    pub mark: i64,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatMarkRequest {
    pub fn read(chat_id: ChatId, message_id: MessageId, message_time: i64) -> ChatMarkRequest {
        ChatMarkRequest {
            kind: MarkType::ReadMessage,
            chat_id,
            message_id: Some(message_id),
            mark: message_time,
            extra: Extra::new(),
        }
    }
}

impl Request for ChatMarkRequest {
    const OPCODE: Opcode = Opcode::CHAT_MARK;
    type Response = ChatMarkResponse;
}

/// `{unread, mark}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMarkResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 53 CHATS_LIST: chats with `lastEventTime < marker`, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatsListRequest {
    /// Time cursor (start with "now"; 0 returns nothing).
    pub marker: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for ChatsListRequest {
    const OPCODE: Opcode = Opcode::CHATS_LIST;
    type Response = ChatsListResponse;
}

/// `{chats, marker?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatsListResponse {
    #[serde(default)]
    pub chats: Vec<Chat>,
    /// Next page's cursor; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

wire_enum! {
    /// `type` of CHAT_MEMBERS.
    MembersType {
        Member = "MEMBER",
        JoinRequest = "JOIN_REQUEST",
    }
}

/// 59 CHAT_MEMBERS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMembersRequest {
    pub chat_id: ChatId,
    #[serde(rename = "type")]
    pub kind: MembersType,
    /// 0 for the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<i64>,
    /// ≤ 500.
    pub count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatMembersRequest {
    pub fn members(chat_id: ChatId, marker: i64, count: i64) -> ChatMembersRequest {
        ChatMembersRequest {
            chat_id,
            kind: MembersType::Member,
            marker: Some(marker),
            count,
            query: None,
            extra: Extra::new(),
        }
    }
}

impl Request for ChatMembersRequest {
    const OPCODE: Opcode = Opcode::CHAT_MEMBERS;
    type Response = ChatMembersResponse;
}

/// `{members, marker?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMembersResponse {
    #[serde(default)]
    pub members: Vec<Member>,
    /// Absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 55 CHAT_UPDATE, the title, description and pin variants (one change
/// per request; the title is called `theme`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatUpdateRequest {
    pub chat_id: ChatId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The message to pin; 0 unpins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_message_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_pin: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for ChatUpdateRequest {
    const OPCODE: Opcode = Opcode::CHAT_UPDATE;
    type Response = ChatResponse;
}

/// `{chat}` (55, 77).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<Chat>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 77 CHAT_MEMBERS_UPDATE, adding or removing members (the admin and
/// join-request variants carry a `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMembersUpdateRequest {
    pub chat_id: ChatId,
    pub user_ids: Vec<UserId>,
    /// `add` or `remove`.
    pub operation: String,
    /// For `add`: whether the new members see the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_history: Option<bool>,
    /// For `remove`: 0 keeps the removed members' messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_msg_period: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatMembersUpdateRequest {
    pub fn add(chat_id: ChatId, users: Vec<UserId>) -> ChatMembersUpdateRequest {
        ChatMembersUpdateRequest {
            chat_id,
            user_ids: users,
            operation: "add".to_owned(),
            show_history: Some(true),
            clean_msg_period: None,
            extra: Extra::new(),
        }
    }

    pub fn remove(chat_id: ChatId, users: Vec<UserId>) -> ChatMembersUpdateRequest {
        ChatMembersUpdateRequest {
            chat_id,
            user_ids: users,
            operation: "remove".to_owned(),
            show_history: None,
            clean_msg_period: Some(0),
            extra: Extra::new(),
        }
    }
}

impl Request for ChatMembersUpdateRequest {
    const OPCODE: Opcode = Opcode::CHAT_MEMBERS_UPDATE;
    type Response = ChatResponse;
}

/// 75 CHAT_SUBSCRIBE: receive typing/reactions/marks of an open chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatSubscribeRequest {
    pub chat_id: ChatId,
    pub subscribe: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for ChatSubscribeRequest {
    const OPCODE: Opcode = Opcode::CHAT_SUBSCRIBE;
    type Response = EmptyResponse;
}
