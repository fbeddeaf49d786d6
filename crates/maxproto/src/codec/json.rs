//! JSON text frames: `{"ver":11,"cmd":0,"seq":7,"opcode":64,"payload":{…}}`.

use super::limits::FrameLimits;
use super::{CodecError, MAX_FRAME_BYTES};
use crate::frame::{Cmd, Frame, VER_JSON};
use crate::opcode::Opcode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Serialize)]
struct Out<'a> {
    ver: u8,
    cmd: u8,
    seq: u64,
    opcode: u16,
    payload: &'a Value,
}

// Numbers only: the envelope is small and fixed, and a string where a number
// belongs means the peer is not speaking this protocol.
#[derive(Deserialize)]
struct In {
    #[serde(default)]
    ver: Option<u64>,
    cmd: u64,
    #[serde(default)]
    seq: Option<u64>,
    opcode: u64,
    #[serde(default)]
    payload: Value,
}

pub fn encode(frame: &Frame) -> Result<String, CodecError> {
    let text = serde_json::to_string(&Out {
        ver: VER_JSON,
        cmd: frame.cmd.as_u8(),
        seq: frame.seq,
        opcode: frame.opcode.0,
        payload: &frame.payload,
    })?;
    Ok(text)
}

pub fn decode(text: &str) -> Result<Frame, CodecError> {
    decode_within(text, FrameLimits::default())
}

/// [`decode`] with other bounds on depth and values.
pub fn decode_within(text: &str, limits: FrameLimits) -> Result<Frame, CodecError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge(text.len()));
    }
    super::limits::check_json(text, limits)?;
    let mut raw: In = serde_json::from_str(text)?;
    if super::limits::cut_quotes(&mut raw.payload) {
        tracing::debug!(
            opcode = raw.opcode,
            "quotes nested deeper than the limit cut"
        );
    }
    let cmd = u8::try_from(raw.cmd).map_err(|_| CodecError::Envelope("cmd out of range"))?;
    let opcode =
        u16::try_from(raw.opcode).map_err(|_| CodecError::Envelope("opcode out of range"))?;
    Ok(Frame {
        ver: raw
            .ver
            .and_then(|v| u8::try_from(v).ok())
            .unwrap_or(VER_JSON),
        cmd: Cmd::from_u8(cmd),
        // Pushes without a seq exist in one write-up; 0 never collides with
        // anything that matters because responses are matched by cmd too.
        seq: raw.seq.unwrap_or(0),
        opcode: Opcode(opcode),
        payload: raw.payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_push_example_decodes() {
        let text = r#"{"ver": 11, "cmd": 0, "seq": 41, "opcode": 128, "payload": {"chatId": -70000000000001,
 "message": {"id": "116785152327680001", "time": 1782000005000, "type": "USER", "sender": 87654321,
  "cid": 1782000004990, "text": "hello", "elements": [{"type": "STRONG", "from": 0, "length": 5}],
  "attaches": []}, "prevMessageId": "116785152000000001", "ttl": false, "unread": 3, "mark": 1782000005000}}"#;
        let frame = decode(text).unwrap();
        assert_eq!(frame.cmd, Cmd::Request);
        assert_eq!(frame.seq, 41);
        assert_eq!(frame.opcode, Opcode::NOTIF_MESSAGE);
        assert_eq!(frame.payload["message"]["id"], "116785152327680001");
        assert_eq!(frame.payload["chatId"], -70000000000001i64);
    }

    #[test]
    fn round_trip_keeps_everything() {
        let frame = Frame::request(
            7,
            Opcode::MSG_SEND,
            json!({"chatId": 1, "x": {"unknown": [1, "a"]}}),
        );
        let back = decode(&encode(&frame).unwrap()).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn missing_payload_is_null_and_error_cmd_kept() {
        let f = decode(r#"{"ver":11,"cmd":3,"seq":2,"opcode":19}"#).unwrap();
        assert_eq!(f.cmd, Cmd::Error);
        assert!(f.payload.is_null());
        let f = decode(r#"{"ver":11,"cmd":9,"seq":2,"opcode":4000,"payload":null}"#).unwrap();
        assert_eq!(f.cmd, Cmd::Other(9));
        assert_eq!(f.opcode, Opcode(4000));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"cmd":"0","opcode":1}"#,
            r#"{"cmd":0,"opcode":70000}"#,
            r#"{"cmd":-1,"opcode":1}"#,
            r#"{"ver":11,"cmd":0,"seq":1,"opcode":1,"payload":"#,
        ] {
            assert!(decode(bad).is_err(), "{bad:?} should not decode");
        }
    }
}
