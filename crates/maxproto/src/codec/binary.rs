//! Binary frames (binary WebSocket and TCP transports, `ver` 10): a 10-byte
//! big-endian header `ver u8, cmd u8, seq u16, opcode u16, flags u8,
//! length u24`, then a MessagePack map, LZ4-block (flags 1..=0x7F) or zstd
//! (flags 0xFF) compressed.
//!
//! Payloads are converted to and from `serde_json::Value` so that both wire
//! formats share every typed view. MessagePack extension type 1 (a wrapped
//! int64, used by the web client for 64-bit ids) becomes a plain number.

use super::limits::FrameLimits;
use super::{CodecError, MAX_FRAME_BYTES};
use crate::frame::{Cmd, Frame, VER_BINARY};
use crate::opcode::Opcode;
use rmpv::Value as Mp;
use serde_json::{Map, Number, Value};
use std::io::Read;

pub const HEADER_LEN: usize = 10;
const MAX_LENGTH: usize = 0xFF_FFFF;
/// Bodies shorter than this go uncompressed, as the web client does.
const COMPRESS_FROM: usize = 32;
const FLAG_ZSTD: u8 = 0xFF;
const EXT_INT64: i8 = 1;

pub fn encode(frame: &Frame) -> Result<Vec<u8>, CodecError> {
    let mut raw = Vec::new();
    if !frame.payload.is_null() {
        rmpv::encode::write_value(&mut raw, &to_msgpack(&frame.payload))
            .map_err(|e| CodecError::MsgPack(e.to_string()))?;
    }
    let (flags, body) = compress(raw)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(VER_BINARY);
    out.push(frame.cmd.as_u8());
    // seq is 16 bits on this transport; callers keep their counters below it.
    out.extend_from_slice(&(frame.seq as u16).to_be_bytes());
    out.extend_from_slice(&frame.opcode.0.to_be_bytes());
    out.push(flags);
    let len = body.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&body);
    Ok(out)
}

fn compress(raw: Vec<u8>) -> Result<(u8, Vec<u8>), CodecError> {
    if raw.len() < COMPRESS_FROM {
        return Ok((0, raw));
    }
    let packed = lz4_flex::block::compress(&raw);
    // flags is the bound ratio raw/compressed, rounded up, as the web client
    // sends it (also when compression grows the body).
    let ratio = raw.len().div_ceil(packed.len().max(1));
    if (1..=0x7F).contains(&ratio) && packed.len() <= MAX_LENGTH {
        return Ok((ratio as u8, packed));
    }
    if raw.len() <= MAX_LENGTH {
        return Ok((0, raw));
    }
    Err(CodecError::TooLarge(raw.len()))
}

pub fn decode(bytes: &[u8]) -> Result<Frame, CodecError> {
    decode_within(bytes, FrameLimits::default())
}

/// [`decode`] with other bounds on depth and values.
pub fn decode_within(bytes: &[u8], limits: FrameLimits) -> Result<Frame, CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::ShortHeader(bytes.len()));
    }
    let ver = bytes[0];
    let cmd = Cmd::from_u8(bytes[1]);
    let seq = u16::from_be_bytes([bytes[2], bytes[3]]);
    let opcode = Opcode(u16::from_be_bytes([bytes[4], bytes[5]]));
    let flags = bytes[6];
    let length = u32::from_be_bytes([0, bytes[7], bytes[8], bytes[9]]) as usize;
    let body = &bytes[HEADER_LEN..];
    if body.len() != length {
        return Err(CodecError::Length {
            announced: length,
            actual: body.len(),
        });
    }
    let raw = decompress(flags, body)?;
    let payload = if raw.is_empty() {
        Value::Null
    } else {
        // Bounded before anything is built: rmpv recurses per level and
        // preallocates what an array header announces.
        super::limits::check_msgpack(&raw, limits)?;
        let mut cursor: &[u8] = &raw;
        let value = rmpv::decode::read_value(&mut cursor)
            .map_err(|e| CodecError::MsgPack(e.to_string()))?;
        let mut payload = from_msgpack(value);
        if super::limits::cut_quotes(&mut payload) {
            tracing::debug!(opcode = opcode.0, "quotes nested deeper than the limit cut");
        }
        payload
    };
    Ok(Frame {
        ver,
        cmd,
        seq: u64::from(seq),
        opcode,
        payload,
    })
}

fn decompress(flags: u8, body: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, CodecError> {
    match flags {
        0 => Ok(body.into()),
        1..=0x7F => {
            let bound = body.len().saturating_mul(usize::from(flags));
            if bound > MAX_FRAME_BYTES {
                return Err(CodecError::TooLarge(bound));
            }
            let mut out = vec![0u8; bound];
            let n = lz4_flex::block::decompress_into(body, &mut out)
                .map_err(|e| CodecError::Lz4(e.to_string()))?;
            out.truncate(n);
            Ok(out.into())
        }
        FLAG_ZSTD => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(body)
                .map_err(|e| CodecError::Zstd(e.to_string()))?;
            let mut out = Vec::new();
            // The limit stops a zstd bomb; one byte over means "too large".
            decoder
                .take(MAX_FRAME_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| CodecError::Zstd(e.to_string()))?;
            if out.len() > MAX_FRAME_BYTES {
                return Err(CodecError::TooLarge(out.len()));
            }
            Ok(out.into())
        }
        other => Err(CodecError::Lz4(format!(
            "unknown compression flags {other:#04x}"
        ))),
    }
}

/// JSON → MessagePack. Integers stay integers (int64 where they need it).
///
/// Message ids travel as decimal strings in JSON, but the binary transports
/// refuse a string where an id belongs (`proto.payload`, "Expected number"),
/// so an all-digit string under an id key (`id`, `…Id`, `…Ids`) is sent as
/// a number.
pub fn to_msgpack(value: &Value) -> Mp {
    to_msgpack_under(None, value)
}

fn is_id_key(key: &str) -> bool {
    key == "id" || key.ends_with("Id") || key.ends_with("Ids")
}

fn decimal_id(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn to_msgpack_under(key: Option<&str>, value: &Value) -> Mp {
    let id_key = key.is_some_and(is_id_key);
    match value {
        Value::String(s) if id_key => match decimal_id(s) {
            Some(id) => Mp::from(id),
            None => Mp::from(s.as_str()),
        },
        Value::Array(items) if id_key => {
            Mp::Array(items.iter().map(|v| to_msgpack_under(key, v)).collect())
        }
        Value::Null => Mp::Nil,
        Value::Bool(b) => Mp::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Mp::from(i)
            } else if let Some(u) = n.as_u64() {
                Mp::from(u)
            } else {
                Mp::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => Mp::from(s.as_str()),
        Value::Array(items) => Mp::Array(items.iter().map(to_msgpack).collect()),
        Value::Object(map) => Mp::Map(
            map.iter()
                .map(|(k, v)| (Mp::from(k.as_str()), to_msgpack_under(Some(k), v)))
                .collect(),
        ),
    }
}

/// MessagePack → JSON. Integer map keys become decimal strings (JSON's
/// form of id-keyed maps); byte strings become arrays of numbers; an
/// unknown extension becomes `{"$ext": type, "data": [bytes]}`.
pub fn from_msgpack(value: Mp) -> Value {
    match value {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(b),
        Mp::Integer(i) => int_to_json(i),
        Mp::F32(f) => float_to_json(f64::from(f)),
        Mp::F64(f) => float_to_json(f),
        Mp::String(s) => match s.into_str() {
            Some(s) => Value::String(s),
            None => Value::Null,
        },
        Mp::Binary(bytes) => bytes_to_json(&bytes),
        Mp::Array(items) => Value::Array(items.into_iter().map(from_msgpack).collect()),
        Mp::Map(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (k, v) in entries {
                map.insert(map_key(k), from_msgpack(v));
            }
            Value::Object(map)
        }
        Mp::Ext(EXT_INT64, data) => match ext_int64(&data) {
            Some(i) => Value::from(i),
            None => ext_to_json(EXT_INT64, &data),
        },
        Mp::Ext(kind, data) => ext_to_json(kind, &data),
    }
}

/// Extension type 1: a MessagePack-encoded int64 (as captured), or the raw
/// 8 big-endian bytes some encoders use. No MessagePack int is 8 bytes
/// long, so the two cannot be confused.
fn ext_int64(data: &[u8]) -> Option<i64> {
    if let Ok(bytes) = <[u8; 8]>::try_from(data) {
        return Some(i64::from_be_bytes(bytes));
    }
    match rmpv::decode::read_value(&mut &data[..]) {
        Ok(Mp::Integer(i)) => i.as_i64(),
        _ => None,
    }
}

fn int_to_json(i: rmpv::Integer) -> Value {
    if let Some(v) = i.as_i64() {
        Value::from(v)
    } else if let Some(v) = i.as_u64() {
        Value::from(v)
    } else {
        Value::Null
    }
}

fn float_to_json(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn bytes_to_json(bytes: &[u8]) -> Value {
    Value::Array(bytes.iter().map(|b| Value::from(*b)).collect())
}

fn ext_to_json(kind: i8, data: &[u8]) -> Value {
    serde_json::json!({"$ext": kind, "data": bytes_to_json(data)})
}

fn map_key(key: Mp) -> String {
    match key {
        Mp::String(s) => s.into_str().unwrap_or_default(),
        Mp::Integer(i) => i.to_string(),
        Mp::Ext(EXT_INT64, data) => ext_int64(&data).map(|i| i.to_string()).unwrap_or_default(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Frame {
        Frame {
            ver: VER_BINARY,
            cmd: Cmd::Ok,
            seq: 513,
            opcode: Opcode::LOGIN,
            payload: json!({
                "profile": {"contact": {"id": 13446207, "names": [{"name": "TransferBot", "type": "ONEME"}]}},
                "messages": {"-70000000000001": [{"id": 116785152327680001i64, "text": "привет 👋"}]},
                "time": 1782000005000i64,
                "ratio": 1.5,
                "flag": true,
                "none": null,
            }),
        }
    }

    #[test]
    fn header_layout_is_u8_cmd_u16_seq() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(bytes[0], VER_BINARY);
        assert_eq!(bytes[1], 1);
        assert_eq!(&bytes[2..4], &513u16.to_be_bytes());
        assert_eq!(&bytes[4..6], &19u16.to_be_bytes());
        let len = u32::from_be_bytes([0, bytes[7], bytes[8], bytes[9]]) as usize;
        assert_eq!(len, bytes.len() - HEADER_LEN);
        assert!(bytes[6] >= 1, "a body this long is LZ4-compressed");
    }

    #[test]
    fn round_trip_with_and_without_compression() {
        let frame = sample();
        assert_eq!(decode(&encode(&frame).unwrap()).unwrap(), frame);
        let small = Frame {
            ver: VER_BINARY,
            cmd: Cmd::Request,
            seq: 1,
            opcode: Opcode::PING,
            payload: json!({"interactive": true}),
        };
        let bytes = encode(&small).unwrap();
        assert_eq!(bytes[6], 0);
        assert_eq!(decode(&bytes).unwrap(), small);
        let empty = Frame {
            payload: Value::Null,
            ..small
        };
        let bytes = encode(&empty).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN);
        assert_eq!(decode(&bytes).unwrap(), empty);
    }

    #[test]
    fn ext_int64_ids_and_integer_keys_become_json_numbers_and_strings() {
        let mut inner = Vec::new();
        rmpv::encode::write_value(&mut inner, &Mp::from(116785152327680001i64)).unwrap();
        let body = Mp::Map(vec![
            (Mp::from("messageId"), Mp::Ext(1, inner)),
            (Mp::from(-70000000000001i64), Mp::from("x")),
            (Mp::from("raw8"), Mp::Ext(1, 5i64.to_be_bytes().to_vec())),
        ]);
        let mut raw = Vec::new();
        rmpv::encode::write_value(&mut raw, &body).unwrap();
        let mut bytes = vec![10, 0, 0, 9, 0, 128, 0];
        bytes.extend_from_slice(&(raw.len() as u32).to_be_bytes()[1..]);
        bytes.extend_from_slice(&raw);
        let frame = decode(&bytes).unwrap();
        assert_eq!(frame.payload["messageId"], json!(116785152327680001i64));
        assert_eq!(frame.payload["-70000000000001"], "x");
        assert_eq!(frame.payload["raw8"], 5);
        assert_eq!(frame.seq, 9);
        assert_eq!(frame.opcode, Opcode::NOTIF_MESSAGE);
    }

    #[test]
    fn string_message_ids_go_out_as_numbers() {
        let frame = Frame {
            ver: VER_BINARY,
            cmd: Cmd::Request,
            seq: 4,
            opcode: Opcode::MSG_REACTION,
            payload: json!({
                "chatId": 2770455,
                "messageId": "116785152327680001",
                "messageIds": ["116785152327680001", "-5"],
                "reaction": {"reactionType": "EMOJI", "id": "👍"},
                "deviceId": "2f1c-uuid",
                "phone": "79000000001",
                "text": "12345",
            }),
        };
        let back = decode(&encode(&frame).unwrap()).unwrap().payload;
        assert_eq!(back["messageId"], json!(116785152327680001i64));
        assert_eq!(back["messageIds"], json!([116785152327680001i64, -5]));
        assert_eq!(back["reaction"]["id"], "👍");
        assert_eq!(back["deviceId"], "2f1c-uuid");
        assert_eq!(back["phone"], "79000000001");
        assert_eq!(back["text"], "12345");
    }

    #[test]
    fn zstd_bodies_decode() {
        let mut raw = Vec::new();
        rmpv::encode::write_value(&mut raw, &to_msgpack(&json!({"a": 1}))).unwrap();
        let mut compressed = Vec::new();
        ruzstd::encoding::compress(
            raw.as_slice(),
            &mut compressed,
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let mut bytes = vec![10, 1, 0, 1, 0, 19, FLAG_ZSTD];
        bytes.extend_from_slice(&(compressed.len() as u32).to_be_bytes()[1..]);
        bytes.extend_from_slice(&compressed);
        assert_eq!(decode(&bytes).unwrap().payload, json!({"a": 1}));
    }

    #[test]
    fn hostile_frames_are_errors() {
        assert!(matches!(
            decode(&[10, 0, 0]),
            Err(CodecError::ShortHeader(3))
        ));
        // Announces 5 bytes, carries 1.
        assert!(matches!(
            decode(&[10, 0, 0, 1, 0, 1, 0, 0, 0, 5, 0x80]),
            Err(CodecError::Length { .. })
        ));
        // LZ4 garbage.
        assert!(decode(&[10, 0, 0, 1, 0, 1, 3, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]).is_err());
        // Bound of length x flags over the limit.
        let mut big = vec![10, 0, 0, 1, 0, 1, 0x7F, 0xFF, 0xFF, 0xFF];
        big.extend(std::iter::repeat_n(0u8, 0xFF_FFFF));
        assert!(matches!(decode(&big), Err(CodecError::TooLarge(_))));
        // Truncated MessagePack.
        assert!(decode(&[10, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0x82]).is_err());
        // Unknown compression flag.
        assert!(decode(&[10, 0, 0, 1, 0, 1, 0x90, 0, 0, 1, 0x80]).is_err());
    }

    #[test]
    fn highly_compressible_bodies_stay_within_the_flag_bound() {
        let frame = Frame {
            ver: VER_BINARY,
            cmd: Cmd::Request,
            seq: 3,
            opcode: Opcode::MSG_SEND,
            payload: json!({"text": "a".repeat(100_000)}),
        };
        let bytes = encode(&frame).unwrap();
        assert_eq!(decode(&bytes).unwrap(), frame);
    }
}
