//! Messages (§4.3), formatting elements (§4.4), reply/forward links and
//! reactions, plus the outgoing message of MSG_SEND (§2.4).

use super::Extra;
use super::attach::Attach;
use super::common::Options;
use super::ids::{ChatId, MessageId, UserId, opt_int_or_string};
use serde::{Deserialize, Serialize};

wire_enum! {
    /// `type` of a message.
    MessageType {
        /// User and service messages.
        User = "USER",
        /// Channel posts.
        Channel = "CHANNEL",
    }
}

wire_enum! {
    /// `status` of a message; absent for a normal one.
    MessageStatus {
        Edited = "EDITED",
        Removed = "REMOVED",
    }
}

wire_enum! {
    /// Formatting kinds (§4.4).
    ElementType {
        Strong = "STRONG",
        Emphasized = "EMPHASIZED",
        Underline = "UNDERLINE",
        Strikethrough = "STRIKETHROUGH",
        Monospaced = "MONOSPACED",
        /// A code block.
        Code = "CODE",
        /// `attributes.url` holds the target.
        Link = "LINK",
        Quote = "QUOTE",
        Heading = "HEADING",
    }
}

wire_enum! {
    /// `type` of a message link.
    LinkType {
        Reply = "REPLY",
        Forward = "FORWARD",
    }
}

/// A message as the server sends it (history, pushes, `lastMessage`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: MessageId,
    /// Send time, ms.
    #[serde(default)]
    pub time: i64,
    /// Time of the last edit, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<i64>,
    /// Client id from MSG_SEND (may be negative).
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub cid: Option<i64>,
    /// `None` for channel posts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<UserId>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<MessageType>,
    /// May be empty (attachment-only messages, forwards).
    #[serde(default)]
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<MessageStatus>,
    /// Formatting; offsets in UTF-16 code units of `text`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elements: Vec<Element>,
    #[serde(default)]
    pub attaches: Vec<Attach>,
    /// Reply or forward, with the quoted message inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<MessageLink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction_info: Option<ReactionInfo>,
    /// `{views}` on channel posts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<MessageStats>,
    /// Integer on channel posts, sometimes an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Message {
    /// A plain message; fill in the rest with struct update syntax.
    pub fn new(
        id: MessageId,
        time: i64,
        sender: Option<UserId>,
        text: impl Into<String>,
    ) -> Message {
        Message {
            id,
            time,
            update_time: None,
            cid: None,
            sender,
            kind: Some(MessageType::User),
            text: text.into(),
            status: None,
            elements: Vec::new(),
            attaches: Vec::new(),
            link: None,
            reaction_info: None,
            stats: None,
            options: None,
            extra: Extra::new(),
        }
    }

    pub fn is_edited(&self) -> bool {
        self.status == Some(MessageStatus::Edited)
    }

    pub fn is_removed(&self) -> bool {
        self.status == Some(MessageStatus::Removed)
    }

    /// The forwarded message, if this is a forward (its content is there and
    /// the outer text is empty).
    pub fn forwarded(&self) -> Option<&Message> {
        self.link
            .as_ref()
            .filter(|link| link.kind == LinkType::Forward)
            .and_then(|link| link.message.as_deref())
    }

    /// The id of the message this one replies to.
    pub fn reply_to(&self) -> Option<MessageId> {
        let link = self
            .link
            .as_ref()
            .filter(|link| link.kind == LinkType::Reply)?;
        link.message_id
            .or_else(|| link.message.as_ref().map(|m| m.id))
    }
}

/// One formatting span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Element {
    #[serde(rename = "type")]
    pub kind: ElementType,
    /// Start in UTF-16 units; absent means 0 (see [`Element::offset`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    /// Length in UTF-16 units.
    #[serde(default)]
    pub length: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<ElementAttributes>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Element {
    pub fn new(kind: ElementType, from: i64, length: i64) -> Element {
        Element {
            kind,
            from: Some(from),
            length,
            attributes: None,
            extra: Extra::new(),
        }
    }

    /// A `LINK` span; the URL must go in `attributes.url` (a top-level `url`
    /// is rejected by the server).
    pub fn link(from: i64, length: i64, url: impl Into<String>) -> Element {
        Element {
            attributes: Some(ElementAttributes {
                url: Some(url.into()),
                extra: Extra::new(),
            }),
            ..Element::new(ElementType::Link, from, length)
        }
    }

    /// Start offset in UTF-16 units (0 when absent).
    pub fn offset(&self) -> i64 {
        self.from.unwrap_or(0)
    }

    /// The link target of a `LINK` element.
    pub fn url(&self) -> Option<&str> {
        self.attributes.as_ref()?.url.as_deref()
    }
}

/// `attributes` of an element.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ElementAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `link` of a message: a reply or a forward. Also the outgoing form
/// (`{type: REPLY, messageId}` / `{type: FORWARD, messageId, chatId}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageLink {
    #[serde(rename = "type")]
    pub kind: LinkType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    /// Source chat of a forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<ChatId>,
    /// The quoted or forwarded message, whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Box<Message>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_icon_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_access_type: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl MessageLink {
    fn bare(kind: LinkType, message_id: MessageId, chat_id: Option<ChatId>) -> MessageLink {
        MessageLink {
            kind,
            message_id: Some(message_id),
            chat_id,
            message: None,
            chat_name: None,
            chat_link: None,
            chat_icon_url: None,
            chat_access_type: None,
            extra: Extra::new(),
        }
    }

    /// Outgoing reply link.
    pub fn reply(message_id: MessageId) -> MessageLink {
        MessageLink::bare(LinkType::Reply, message_id, None)
    }

    /// Outgoing forward link.
    pub fn forward(source_chat: ChatId, message_id: MessageId) -> MessageLink {
        MessageLink::bare(LinkType::Forward, message_id, Some(source_chat))
    }
}

/// Reactions on a message. Often `{}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactionInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<ReactionCounter>,
    /// The logged-in account's reaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub your_reaction: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `{reaction, count}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReactionCounter {
    pub reaction: String,
    #[serde(default)]
    pub count: i64,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ReactionCounter {
    pub fn new(reaction: impl Into<String>, count: i64) -> ReactionCounter {
        ReactionCounter {
            reaction: reaction.into(),
            count,
            extra: Extra::new(),
        }
    }
}

/// `stats` of a channel post.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub views: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `message` of MSG_SEND (64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutgoingMessage {
    /// ≤ `max-msg-length`; may be empty for attachments and forwards.
    #[serde(default)]
    pub text: String,
    /// Idempotency key (conventionally the send time in ms).
    #[serde(deserialize_with = "super::ids::int_or_string")]
    pub cid: i64,
    #[serde(default)]
    pub elements: Vec<Element>,
    #[serde(default)]
    pub attaches: Vec<Attach>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<MessageLink>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl OutgoingMessage {
    pub fn new(cid: i64, text: impl Into<String>) -> OutgoingMessage {
        OutgoingMessage {
            text: text.into(),
            cid,
            elements: Vec::new(),
            attaches: Vec::new(),
            link: None,
            extra: Extra::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn elements_parse_with_defaults_and_round_trip() {
        let raw = json!([{"type": "STRONG", "length": 46},
            {"length": 18, "from": 347, "attributes": {"url": "https://download.max.ru/"}, "type": "LINK"},
            {"type": "MENTION", "from": 0, "length": 3, "entityId": 5}]);
        let elements: Vec<Element> = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(elements[0].kind, ElementType::Strong);
        assert_eq!(elements[0].offset(), 0);
        assert_eq!(elements[1].url(), Some("https://download.max.ru/"));
        assert_eq!(elements[2].kind, ElementType::Other("MENTION".into()));
        assert_eq!(serde_json::to_value(&elements).unwrap(), raw);
        assert_eq!(
            serde_json::to_value(Element::link(1, 2, "u")).unwrap(),
            json!({"type": "LINK", "from": 1, "length": 2, "attributes": {"url": "u"}})
        );
    }

    #[test]
    fn forward_and_reply_helpers() {
        let fwd: Message = serde_json::from_value(json!({"id": "10", "time": 1, "text": "",
            "attaches": [], "link": {"type": "FORWARD", "chatId": -5, "messageId": "9",
            "message": {"id": "9", "time": 0, "text": "inner", "sender": 3}}}))
        .unwrap();
        assert_eq!(fwd.forwarded().map(|m| m.text.as_str()), Some("inner"));
        assert_eq!(fwd.reply_to(), None);
        let reply: Message = serde_json::from_value(json!({"id": 11, "text": "a",
            "link": {"type": "REPLY", "message": {"id": "9", "text": "q"}}}))
        .unwrap();
        assert_eq!(reply.reply_to(), Some(MessageId(9)));
        assert_eq!(
            serde_json::to_value(MessageLink::forward(ChatId(-5), MessageId(9))).unwrap(),
            json!({"type": "FORWARD", "chatId": -5, "messageId": "9"})
        );
    }

    #[test]
    fn status_and_null_sender() {
        let m: Message = serde_json::from_value(json!({"id": "1", "time": 2, "text": "t",
            "sender": null, "status": "REMOVED", "type": "CHANNEL", "options": 1,
            "stats": {"views": 12}}))
        .unwrap();
        assert!(m.is_removed());
        assert_eq!(m.sender, None);
        assert_eq!(m.kind, Some(MessageType::Channel));
        assert_eq!(m.stats.and_then(|s| s.views), Some(12));
        let odd: Message = serde_json::from_value(json!({"id": "1", "status": "PINNED"})).unwrap();
        assert_eq!(odd.status, Some(MessageStatus::Other("PINNED".into())));
    }
}
