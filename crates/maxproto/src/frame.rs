//! The protocol envelope `{ver, cmd, seq, opcode, payload}`, independent of
//! the wire format that carries it.

use crate::opcode::Opcode;
use serde_json::Value;

/// Protocol version of the JSON WebSocket transport.
pub const VER_JSON: u8 = 11;
/// Protocol version of the binary transports (binary WebSocket, TCP).
pub const VER_BINARY: u8 = 10;

/// What a frame is: a request (or server push), an answer, or an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cmd {
    /// `0`: a client request, and also every server push.
    Request,
    /// `1`: a successful answer, or a client's ack of a push.
    Ok,
    /// `2`: seen in client enums, never on the wire; receivers ignore it.
    Event,
    /// `3`: an error answer; the payload is an error object.
    Error,
    /// Anything else, kept so that it can be logged and re-encoded.
    Other(u8),
}

impl Cmd {
    pub fn from_u8(value: u8) -> Cmd {
        match value {
            0 => Cmd::Request,
            1 => Cmd::Ok,
            2 => Cmd::Event,
            3 => Cmd::Error,
            other => Cmd::Other(other),
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Cmd::Request => 0,
            Cmd::Ok => 1,
            Cmd::Event => 2,
            Cmd::Error => 3,
            Cmd::Other(other) => other,
        }
    }

    /// Whether this frame answers a request (and so may resolve a pending one).
    pub fn is_response(self) -> bool {
        matches!(self, Cmd::Ok | Cmd::Error)
    }
}

/// One protocol frame. The payload is kept as JSON so that fields this
/// crate does not know survive; typed views live in [`crate::types`].
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub ver: u8,
    pub cmd: Cmd,
    pub seq: u64,
    pub opcode: Opcode,
    /// `Value::Null` when the frame has no body.
    pub payload: Value,
}

impl Frame {
    /// A client request (cmd 0).
    pub fn request(seq: u64, opcode: Opcode, payload: Value) -> Frame {
        Frame {
            ver: VER_JSON,
            cmd: Cmd::Request,
            seq,
            opcode,
            payload,
        }
    }

    /// An OK answer to `request` (same seq and opcode).
    pub fn ok_for(request: &Frame, payload: Value) -> Frame {
        Frame {
            ver: request.ver,
            cmd: Cmd::Ok,
            seq: request.seq,
            opcode: request.opcode,
            payload,
        }
    }

    /// An error answer to `request` with the spec's error object.
    pub fn error_for(request: &Frame, error: &str, message: &str) -> Frame {
        Frame {
            ver: request.ver,
            cmd: Cmd::Error,
            seq: request.seq,
            opcode: request.opcode,
            payload: serde_json::json!({
                "error": error,
                "message": message,
                "title": message,
                "localizedMessage": message,
            }),
        }
    }

    /// A server push (cmd 0 with a server-side seq).
    pub fn push(seq: u64, opcode: Opcode, payload: Value) -> Frame {
        Frame {
            ver: VER_JSON,
            cmd: Cmd::Request,
            seq,
            opcode,
            payload,
        }
    }
}
