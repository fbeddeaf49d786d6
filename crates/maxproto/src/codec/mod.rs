//! The two wire formats behind one interface: JSON text frames (ver 11) and
//! binary frames (10-byte header + MessagePack, LZ4; ver 10).
//!
//! Decoding goes by the kind of WebSocket message (text means JSON, binary
//! means the binary format), whatever format was configured for sending, so
//! a peer that answers in the other format is still understood.

pub mod binary;
pub mod json;
pub mod limits;

use crate::frame::Frame;
use serde::{Deserialize, Serialize};

/// Largest frame body either codec accepts, compressed or not. MAX frames
/// are small; anything near this is hostile or broken.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Which wire format a connection sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// JSON text frames, `ver` 11 (`wss://ws-api.oneme.ru/websocket`).
    #[default]
    Json,
    /// Binary frames, `ver` 10 (`wss://api.oneme.ru/websocket`).
    Binary,
}

/// An encoded frame, as one WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireMessage {
    Text(String),
    Binary(Vec<u8>),
}

impl WireMessage {
    pub fn len(&self) -> usize {
        match self {
            WireMessage::Text(t) => t.len(),
            WireMessage::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("malformed JSON frame: {0}")]
    Json(#[from] serde_json::Error),
    #[error("JSON frame is not an envelope: {0}")]
    Envelope(&'static str),
    #[error("binary frame shorter than its 10-byte header ({0} bytes)")]
    ShortHeader(usize),
    #[error("binary frame announces {announced} body bytes but carries {actual}")]
    Length { announced: usize, actual: usize },
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("LZ4 body does not decompress: {0}")]
    Lz4(String),
    #[error("zstd body does not decompress: {0}")]
    Zstd(String),
    #[error("MessagePack body: {0}")]
    MsgPack(String),
    #[error("frame nests deeper than {0} levels")]
    TooDeep(usize),
    #[error("frame holds more than {0} values")]
    TooManyValues(usize),
}

impl WireFormat {
    /// Encode a frame for sending in this format. The frame's `ver` is set
    /// to the format's own version.
    pub fn encode(self, frame: &Frame) -> Result<WireMessage, CodecError> {
        match self {
            WireFormat::Json => json::encode(frame).map(WireMessage::Text),
            WireFormat::Binary => binary::encode(frame).map(WireMessage::Binary),
        }
    }

    /// The format a received message is in.
    pub fn of(message: &WireMessage) -> WireFormat {
        match message {
            WireMessage::Text(_) => WireFormat::Json,
            WireMessage::Binary(_) => WireFormat::Binary,
        }
    }
}

/// Decode one received message in whichever format it is.
pub fn decode(message: &WireMessage) -> Result<Frame, CodecError> {
    match message {
        WireMessage::Text(text) => json::decode(text),
        WireMessage::Binary(bytes) => binary::decode(bytes),
    }
}
