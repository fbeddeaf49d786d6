//! Thin typed helpers over [`Client::call`] for the requests a bridge makes
//! all the time; anything else goes through `call` or `request`.

use super::{Client, ClientError};
use crate::Opcode;
use crate::types::{
    Attach, Chat, ChatHistoryRequest, ChatHistoryResponse, ChatId, ChatInfoRequest,
    ChatMarkRequest, ChatMarkResponse, ContactInfoRequest, Element, Extra, FileDownloadRequest,
    FileDownloadResponse, FileUploadRequest, Message, MessageId, MsgCancelReactionRequest,
    MsgDeleteRequest, MsgEditRequest, MsgGetRequest, MsgReactionRequest, MsgSendRequest,
    MsgSendResponse, MsgTypingRequest, OutgoingMessage, PhotoUploadRequest, PhotoUploadResponse,
    PingRequest, Reaction, ReactionInfoResponse, TypingType, UploadRequest, UploadSlot, User,
    UserId, VideoPlayRequest, VideoPlayResponse, VideoUploadRequest,
};

impl Client {
    /// PING (1) outside the keep-alive schedule, e.g. to flip presence.
    pub async fn ping(&self, interactive: bool) -> Result<(), ClientError> {
        let request = PingRequest {
            interactive,
            extra: Extra::new(),
        };
        self.call(&request).await.map(drop)
    }

    /// MSG_SEND (64) to an existing chat.
    pub async fn send_message(
        &self,
        chat_id: ChatId,
        message: OutgoingMessage,
    ) -> Result<MsgSendResponse, ClientError> {
        self.call(&MsgSendRequest::new(chat_id, message)).await
    }

    /// CHAT_HISTORY (49): up to `count` messages ending at `from` (ms),
    /// oldest first.
    pub async fn history(
        &self,
        chat_id: ChatId,
        from: i64,
        count: i64,
    ) -> Result<ChatHistoryResponse, ClientError> {
        self.call(&ChatHistoryRequest::backward(chat_id, from, count))
            .await
    }

    /// CHAT_INFO (48); chats the account cannot see are absent.
    pub async fn chat_info(&self, chat_ids: Vec<ChatId>) -> Result<Vec<Chat>, ClientError> {
        let request = ChatInfoRequest {
            chat_ids,
            extra: Extra::new(),
        };
        Ok(self.call(&request).await?.chats)
    }

    /// CONTACT_INFO (32); unknown users are absent.
    pub async fn contact_info(&self, user_ids: Vec<UserId>) -> Result<Vec<User>, ClientError> {
        let request = ContactInfoRequest {
            contact_ids: user_ids,
            extra: Extra::new(),
        };
        Ok(self.call(&request).await?.contacts)
    }

    /// CHAT_MARK (50) read up to a message; `message_time` is that message's
    /// own `time` (a later time would mark later messages read too).
    pub async fn mark_read(
        &self,
        chat_id: ChatId,
        message_id: MessageId,
        message_time: i64,
    ) -> Result<ChatMarkResponse, ClientError> {
        self.call(&ChatMarkRequest::read(chat_id, message_id, message_time))
            .await
    }

    /// MSG_TYPING (65).
    pub async fn typing(
        &self,
        chat_id: ChatId,
        kind: Option<TypingType>,
    ) -> Result<(), ClientError> {
        let request = MsgTypingRequest {
            chat_id,
            kind,
            extra: Extra::new(),
        };
        self.call(&request).await.map(drop)
    }

    /// MSG_GET (71): one message as the server has it now, `None` if this
    /// account cannot see it.
    pub async fn get_message(
        &self,
        chat_id: ChatId,
        message_id: MessageId,
    ) -> Result<Option<Message>, ClientError> {
        let request = MsgGetRequest {
            chat_id,
            message_ids: vec![message_id],
            extra: Extra::new(),
        };
        let answer = self.call(&request).await?;
        Ok(answer.messages.into_iter().find(|m| m.id == message_id))
    }

    /// MSG_EDIT (67). `attachments` replaces the message's media: pass the
    /// attaches it has to keep them.
    pub async fn edit_message(
        &self,
        chat_id: ChatId,
        message_id: MessageId,
        text: String,
        elements: Vec<Element>,
        attachments: Vec<Attach>,
    ) -> Result<Message, ClientError> {
        let request = MsgEditRequest {
            chat_id,
            message_id,
            text,
            elements,
            attachments,
            extra: Extra::new(),
        };
        Ok(self.call(&request).await?.message)
    }

    /// MSG_DELETE (66), for everyone unless `for_me`.
    pub async fn delete_messages(
        &self,
        chat_id: ChatId,
        message_ids: Vec<MessageId>,
        for_me: bool,
    ) -> Result<(), ClientError> {
        let request = MsgDeleteRequest {
            chat_id,
            message_ids,
            for_me,
            extra: Extra::new(),
        };
        self.call(&request).await.map(drop)
    }

    /// MSG_REACTION (178) with an emoji; replaces the account's previous
    /// reaction on that message.
    pub async fn react(
        &self,
        chat_id: ChatId,
        message_id: MessageId,
        emoji: &str,
    ) -> Result<ReactionInfoResponse, ClientError> {
        let request = MsgReactionRequest {
            chat_id,
            message_id,
            reaction: Reaction::emoji(emoji),
            extra: Extra::new(),
        };
        self.call(&request).await
    }

    /// MSG_CANCEL_REACTION (179).
    pub async fn unreact(
        &self,
        chat_id: ChatId,
        message_id: MessageId,
    ) -> Result<ReactionInfoResponse, ClientError> {
        let request = MsgCancelReactionRequest {
            chat_id,
            message_id,
            extra: Extra::new(),
        };
        self.call(&request).await
    }

    /// PHOTO_UPLOAD (80): the URL to POST one photo to.
    pub async fn photo_upload_url(&self) -> Result<PhotoUploadResponse, ClientError> {
        self.call(&PhotoUploadRequest::default()).await
    }

    /// VIDEO_UPLOAD (82): an upload slot (URL, `videoId`, `token`).
    pub async fn video_upload_slot(&self) -> Result<UploadSlot, ClientError> {
        let answer = self.call(&VideoUploadRequest::default()).await?;
        first_slot(Opcode::VIDEO_UPLOAD, answer.info)
    }

    /// VIDEO_UPLOAD (82) for a voice message (`type: 2, uploaderType: 1`):
    /// its `videoId` is the voice attach's `audioId`.
    pub async fn voice_upload_slot(&self) -> Result<UploadSlot, ClientError> {
        let mut request = UploadRequest::default();
        request.extra.insert("type".to_owned(), 2.into());
        request.extra.insert("uploaderType".to_owned(), 1.into());
        let answer = self.call(&VideoUploadRequest(request)).await?;
        first_slot(Opcode::VIDEO_UPLOAD, answer.info)
    }

    /// FILE_UPLOAD (87): an upload slot (URL, `fileId`, `token`).
    pub async fn file_upload_slot(&self) -> Result<UploadSlot, ClientError> {
        let answer = self.call(&FileUploadRequest::default()).await?;
        first_slot(Opcode::FILE_UPLOAD, answer.info)
    }

    /// FILE_DOWNLOAD (88): a download URL for a file attachment.
    pub async fn file_url(
        &self,
        file_id: i64,
        chat_id: ChatId,
        message_id: MessageId,
    ) -> Result<FileDownloadResponse, ClientError> {
        let request = FileDownloadRequest {
            file_id,
            chat_id,
            message_id,
            extra: Extra::new(),
        };
        self.call(&request).await
    }

    /// VIDEO_PLAY (83): playback URLs of a video attachment.
    pub async fn video_urls(
        &self,
        video_id: i64,
        chat_id: ChatId,
        message_id: MessageId,
        token: Option<String>,
    ) -> Result<VideoPlayResponse, ClientError> {
        let request = VideoPlayRequest {
            video_id,
            chat_id,
            message_id,
            token,
            extra: Extra::new(),
        };
        self.call(&request).await
    }
}

fn first_slot(opcode: Opcode, slots: Vec<UploadSlot>) -> Result<UploadSlot, ClientError> {
    slots
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::UnexpectedAnswer {
            opcode,
            detail: "no upload slot in the answer".to_owned(),
        })
}
