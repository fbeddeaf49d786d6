//! Message requests (§2.4): MSG_SEND (64), MSG_TYPING (65), MSG_DELETE
//! (66), MSG_EDIT (67) and the reaction calls (178–181).

use super::attach::Attach;
use super::chat::Chat;
use super::ids::{ChatId, MessageId, UserId};
use super::message::{Element, Message, OutgoingMessage, ReactionInfo};
use super::{EmptyResponse, Extra, Request};
use crate::opcode::Opcode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// 64 MSG_SEND. Without `chat_id` (and with a CONTROL `new` attach) it
/// creates a group or channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MsgSendRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<ChatId>,
    pub message: OutgoingMessage,
    #[serde(default)]
    pub notify: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

impl MsgSendRequest {
    pub fn new(chat_id: ChatId, message: OutgoingMessage) -> MsgSendRequest {
        MsgSendRequest {
            chat_id: Some(chat_id),
            message,
            notify: true,
            extra: Extra::new(),
        }
    }
}

impl Request for MsgSendRequest {
    const OPCODE: Opcode = Opcode::MSG_SEND;
    type Response = MsgSendResponse;
}

/// Answer of MSG_SEND (`elements` are not echoed). A duplicate `cid`
/// returns the message created the first time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MsgSendResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<ChatId>,
    pub message: Message,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<i64>,
    /// Present when the send created a chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<Chat>,
    #[serde(flatten)]
    pub extra: Extra,
}

wire_enum! {
    /// What a user is doing (`type` of 65 and 129).
    TypingType {
        Text = "TEXT",
        Audio = "AUDIO",
        File = "FILE",
        Photo = "PHOTO",
        Sticker = "STICKER",
        Video = "VIDEO",
    }
}

/// 65 MSG_TYPING (fire and forget).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MsgTypingRequest {
    pub chat_id: ChatId,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<TypingType>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for MsgTypingRequest {
    const OPCODE: Opcode = Opcode::MSG_TYPING;
    type Response = EmptyResponse;
}

/// 66 MSG_DELETE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MsgDeleteRequest {
    pub chat_id: ChatId,
    pub message_ids: Vec<MessageId>,
    /// `true` hides for this account only; `false` deletes for everyone.
    #[serde(default)]
    pub for_me: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for MsgDeleteRequest {
    const OPCODE: Opcode = Opcode::MSG_DELETE;
    type Response = EmptyResponse;
}

/// 67 MSG_EDIT. Note `attachments`, not `attaches`: an empty list removes
/// existing media, so resend the attaches the message had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MsgEditRequest {
    pub chat_id: ChatId,
    pub message_id: MessageId,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub elements: Vec<Element>,
    #[serde(default)]
    pub attachments: Vec<Attach>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for MsgEditRequest {
    const OPCODE: Opcode = Opcode::MSG_EDIT;
    type Response = MsgEditResponse;
}

/// `{message}` with `status: EDITED` and `updateTime`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MsgEditResponse {
    pub message: Message,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 118 MSG_SEND_CALLBACK: a press of an inline keyboard button.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MsgSendCallbackRequest {
    /// The keyboard attach's `callbackId`, as it came.
    pub callback_id: serde_json::Value,
    /// `CALLBACK`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Milliseconds.
    pub timestamp: i64,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for MsgSendCallbackRequest {
    const OPCODE: Opcode = Opcode::MSG_SEND_CALLBACK;
    /// `{chat?, message?, unread?, mark?}`, nothing the caller needs.
    type Response = EmptyResponse;
}

/// 304 SEND_VOTE: the account's answers to a poll (an empty list takes
/// the vote back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendVoteRequest {
    pub chat_id: ChatId,
    pub message_id: MessageId,
    pub poll_id: i64,
    pub answers_ids: Vec<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for SendVoteRequest {
    const OPCODE: Opcode = Opcode::SEND_VOTE;
    /// `{state: {total, result, voterPreviewIds}}`, kept raw.
    type Response = EmptyResponse;
}

/// 71 MSG_GET: messages of one chat by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MsgGetRequest {
    pub chat_id: ChatId,
    pub message_ids: Vec<MessageId>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for MsgGetRequest {
    const OPCODE: Opcode = Opcode::MSG_GET;
    type Response = MsgGetResponse;
}

/// `{messages: [Message]}`; ids the account cannot see are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MsgGetResponse {
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub extra: Extra,
}

wire_enum! {
    /// `reactionType` of a reaction.
    ReactionType {
        Emoji = "EMOJI",
    }
}

/// `reaction` of MSG_REACTION: `{reactionType: EMOJI, id: "👍"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reaction {
    pub reaction_type: ReactionType,
    pub id: String,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Reaction {
    pub fn emoji(emoji: impl Into<String>) -> Reaction {
        Reaction {
            reaction_type: ReactionType::Emoji,
            id: emoji.into(),
            extra: Extra::new(),
        }
    }
}

/// 178 MSG_REACTION: set (or replace) the account's reaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MsgReactionRequest {
    pub chat_id: ChatId,
    pub message_id: MessageId,
    pub reaction: Reaction,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for MsgReactionRequest {
    const OPCODE: Opcode = Opcode::MSG_REACTION;
    type Response = ReactionInfoResponse;
}

/// 179 MSG_CANCEL_REACTION.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MsgCancelReactionRequest {
    pub chat_id: ChatId,
    pub message_id: MessageId,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for MsgCancelReactionRequest {
    const OPCODE: Opcode = Opcode::MSG_CANCEL_REACTION;
    type Response = ReactionInfoResponse;
}

/// `{reactionInfo}` (178, 179; `{}` when no reaction is left).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactionInfoResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction_info: Option<ReactionInfo>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 180 MSG_GET_REACTIONS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MsgGetReactionsRequest {
    pub chat_id: ChatId,
    pub message_ids: Vec<MessageId>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for MsgGetReactionsRequest {
    const OPCODE: Opcode = Opcode::MSG_GET_REACTIONS;
    type Response = MsgGetReactionsResponse;
}

/// `{messagesReactions: {"<msgId>": ReactionInfo | {}}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MsgGetReactionsResponse {
    #[serde(default)]
    pub messages_reactions: BTreeMap<MessageId, ReactionInfo>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 181 MSG_GET_DETAILED_REACTIONS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MsgGetDetailedReactionsRequest {
    pub chat_id: ChatId,
    pub message_id: MessageId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for MsgGetDetailedReactionsRequest {
    const OPCODE: Opcode = Opcode::MSG_GET_DETAILED_REACTIONS;
    type Response = MsgGetDetailedReactionsResponse;
}

/// `{reactionInfo, reactions: [{userId, reaction}]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MsgGetDetailedReactionsResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction_info: Option<ReactionInfo>,
    #[serde(default)]
    pub reactions: Vec<UserReaction>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One user's reaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserReaction {
    pub user_id: UserId,
    /// Usually the emoji; kept raw in case it is a `{reactionType, id}` map.
    pub reaction: serde_json::Value,
    #[serde(flatten)]
    pub extra: Extra,
}
