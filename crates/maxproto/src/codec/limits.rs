//! Bounds on what one received frame may build, checked on the raw bytes
//! before anything is built: a hostile or broken server must not make the
//! client recurse off its stack (deep nesting) or allocate without bound
//! (millions of tiny values, an array header announcing billions). Both
//! scans are iterative and allocate at most one word per nesting level.

use super::CodecError;

/// Default deepest nesting of arrays and objects (maps) a frame may have.
/// MAX's payloads nest about eight deep, but a message quotes the one it
/// answers or forwards whole, that one its own, and so on (two levels per
/// quote), so a long chain of replies nests far deeper. This stays below
/// serde_json's own limit (128) and keeps every recursive walk of a frame
/// (rmpv, serde) well within a thread's stack; what is built is then cut
/// to [`MAX_QUOTES`] quotes.
pub const MAX_DEPTH: usize = 100;
/// Quotes within quotes kept in a decoded frame; deeper ones lose their
/// quoted message (the link and its ids stay). A reply needs one, a
/// forward of a forward two.
pub const MAX_QUOTES: usize = 3;
/// Default most values (scalars, arrays, objects) one frame may hold. A
/// large LOGIN answer or history page holds some tens of thousands.
pub const MAX_VALUES: usize = 250_000;

/// The bounds a received frame is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    pub max_depth: usize,
    pub max_values: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_depth: MAX_DEPTH,
            max_values: MAX_VALUES,
        }
    }
}

/// Checks a JSON text's nesting depth and an upper bound of its value count
/// (every value but the first follows a `,` or an opening bracket).
pub fn check_json(text: &str, limits: FrameLimits) -> Result<(), CodecError> {
    let mut depth = 0usize;
    let mut values = 1usize;
    let mut in_string = false;
    let mut escaped = false;
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                values += 1;
                if depth > limits.max_depth {
                    return Err(CodecError::TooDeep(limits.max_depth));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => values += 1,
            _ => {}
        }
        if values > limits.max_values {
            return Err(CodecError::TooManyValues(limits.max_values));
        }
    }
    Ok(())
}

/// Cuts chains of quoted messages (`link.message` within `link.message`…)
/// after [`MAX_QUOTES`], wherever they are in `payload`, so that what reads
/// a message never walks a chain as long as the server made it. Iterative.
/// Returns whether anything was cut.
pub fn cut_quotes(payload: &mut serde_json::Value) -> bool {
    let mut cut = false;
    // Each value with the number of quotes it is inside.
    let mut stack: Vec<(&mut serde_json::Value, usize)> = vec![(payload, 0)];
    while let Some((value, quotes)) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    if key == "link"
                        && let serde_json::Value::Object(link) = child
                        && link.contains_key("message")
                    {
                        if quotes >= MAX_QUOTES {
                            link.remove("message");
                            cut = true;
                        }
                        stack.push((child, quotes + 1));
                    } else {
                        stack.push((child, quotes));
                    }
                }
            }
            serde_json::Value::Array(items) => {
                stack.extend(items.iter_mut().map(|item| (item, quotes)));
            }
            _ => {}
        }
    }
    cut
}

/// Walks one MessagePack value without building it: checks nesting depth,
/// counts values (announced lengths count before their items are read, so a
/// huge announcement is refused at once) and that the bytes hold them.
pub fn check_msgpack(bytes: &[u8], limits: FrameLimits) -> Result<(), CodecError> {
    // Items still to read in each open array or map, innermost last.
    let mut open: Vec<u64> = Vec::new();
    let mut values: u64 = 0;
    let mut at = 0usize;
    loop {
        let marker = *bytes.get(at).ok_or_else(truncated)?;
        at += 1;
        values += 1;
        let (skip, items): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xc4 | 0xd9 => (read_len(bytes, &mut at, 1)?, 0),
            0xc5 | 0xda => (read_len(bytes, &mut at, 2)?, 0),
            0xc6 | 0xdb => (read_len(bytes, &mut at, 4)?, 0),
            // ext 8/16/32: length, then the type byte, then the data.
            0xc7 => (read_len(bytes, &mut at, 1)? + 1, 0),
            0xc8 => (read_len(bytes, &mut at, 2)? + 1, 0),
            0xc9 => (read_len(bytes, &mut at, 4)? + 1, 0),
            0xdc => (0, read_len(bytes, &mut at, 2)?),
            0xdd => (0, read_len(bytes, &mut at, 4)?),
            0xde => (0, 2 * read_len(bytes, &mut at, 2)?),
            0xdf => (0, 2 * read_len(bytes, &mut at, 4)?),
            // 0xc1 is never used.
            0xc1 => return Err(CodecError::MsgPack("reserved marker 0xc1".to_owned())),
        };
        at = usize::try_from(skip)
            .ok()
            .and_then(|skip| at.checked_add(skip))
            .filter(|end| *end <= bytes.len())
            .ok_or_else(truncated)?;
        if values.saturating_add(items) > limits.max_values as u64 {
            return Err(CodecError::TooManyValues(limits.max_values));
        }
        let opens = matches!(marker, 0x80..=0x9f | 0xdc..=0xdf);
        if opens && items > 0 {
            if open.len() == limits.max_depth {
                return Err(CodecError::TooDeep(limits.max_depth));
            }
            open.push(items);
            continue;
        }
        // A value is complete: close every container it completes.
        loop {
            let Some(remaining) = open.last_mut() else {
                return Ok(());
            };
            *remaining -= 1;
            if *remaining > 0 {
                break;
            }
            open.pop();
        }
    }
}

fn read_len(bytes: &[u8], at: &mut usize, width: usize) -> Result<u64, CodecError> {
    let end = at.checked_add(width).ok_or_else(truncated)?;
    let field = bytes.get(*at..end).ok_or_else(truncated)?;
    *at = end;
    Ok(field.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
}

fn truncated() -> CodecError {
    CodecError::MsgPack("truncated MessagePack value".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value as Mp;

    fn packed(value: &Mp) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        out
    }

    #[test]
    fn ordinary_payloads_pass_both_checks() {
        let value = serde_json::json!({
            "chatId": -70000000000001i64,
            "message": {"id": 1, "text": "a \"quoted\" [not] {nesting}", "elements": [{"type": "STRONG"}],
                        "attaches": [], "ratio": 1.5, "none": null, "yes": true},
        });
        check_json(&value.to_string(), FrameLimits::default()).unwrap();
        check_msgpack(
            &packed(&super::super::binary::to_msgpack(&value)),
            FrameLimits::default(),
        )
        .unwrap();
        let ext = Mp::Map(vec![(
            Mp::from("id"),
            Mp::Ext(1, vec![0xcf, 0, 0, 0, 0, 0, 0, 0, 1]),
        )]);
        check_msgpack(&packed(&ext), FrameLimits::default()).unwrap();
        check_msgpack(&packed(&Mp::Binary(vec![1; 300])), FrameLimits::default()).unwrap();
        check_msgpack(&packed(&Mp::Array(vec![])), FrameLimits::default()).unwrap();
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        assert!(matches!(
            check_json(&deep, FrameLimits::default()),
            Err(CodecError::TooDeep(_))
        ));
        let ok = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        check_json(&ok, FrameLimits::default()).unwrap();

        let mut bytes = vec![0x91; MAX_DEPTH + 1];
        bytes.push(0x01);
        assert!(matches!(
            check_msgpack(&bytes, FrameLimits::default()),
            Err(CodecError::TooDeep(_))
        ));
        let mut bytes = vec![0x91; MAX_DEPTH];
        bytes.push(0x01);
        check_msgpack(&bytes, FrameLimits::default()).unwrap();
    }

    #[test]
    fn too_many_values_and_huge_announcements_are_refused() {
        let many = format!("[{}0]", "0,".repeat(MAX_VALUES));
        assert!(matches!(
            check_json(&many, FrameLimits::default()),
            Err(CodecError::TooManyValues(_))
        ));
        // An array 32 bits long announced in five bytes.
        let bytes = [0xdd, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            check_msgpack(&bytes, FrameLimits::default()),
            Err(CodecError::TooManyValues(_))
        ));
        // Nulls inflated from a tiny LZ4 body.
        let mut nulls = vec![0xdd, 0x00, 0x10, 0x00, 0x00];
        nulls.extend(std::iter::repeat_n(0xc0, 0x10_0000));
        assert!(matches!(
            check_msgpack(&nulls, FrameLimits::default()),
            Err(CodecError::TooManyValues(_))
        ));
    }

    #[test]
    fn limits_are_configurable() {
        let tight = FrameLimits {
            max_depth: 2,
            max_values: 5,
        };
        assert!(check_json("[[1]]", tight).is_ok());
        assert!(matches!(
            check_json("[[[1]]]", tight),
            Err(CodecError::TooDeep(2))
        ));
        assert!(matches!(
            check_json("[1,2,3,4,5]", tight),
            Err(CodecError::TooManyValues(5))
        ));
        assert!(check_msgpack(&[0x91, 0x91, 0x01], tight).is_ok());
        assert!(check_msgpack(&[0x91, 0x91, 0x91, 0x01], tight).is_err());
    }

    #[test]
    fn truncated_msgpack_is_refused() {
        assert!(check_msgpack(&[0x92, 0x01], FrameLimits::default()).is_err());
        assert!(check_msgpack(&[0xda, 0x00, 0x10, b'a'], FrameLimits::default()).is_err());
        assert!(check_msgpack(&[], FrameLimits::default()).is_err());
    }

    /// A message answering a message answering … 45 deep, as a server that
    /// quotes whole sends it: both codecs decode it, keeping three quotes.
    #[test]
    fn a_long_chain_of_quotes_is_decoded_and_cut() {
        use crate::frame::{Cmd, Frame};
        use crate::opcode::Opcode;
        let mut message = serde_json::json!({"id": "1", "text": "first"});
        for n in 2..=45 {
            message = serde_json::json!({
                "id": n.to_string(),
                "text": format!("answer {n}"),
                "link": {"type": "REPLY", "messageId": (n - 1).to_string(), "chatId": 7,
                         "message": message},
            });
        }
        let frame = Frame {
            ver: 11,
            cmd: Cmd::from_u8(0),
            seq: 1,
            opcode: Opcode(128),
            payload: serde_json::json!({"chatId": 7, "message": message}),
        };
        let text = crate::codec::json::encode(&frame).unwrap();
        assert!(text.matches('{').count() > 90, "deeper than MAX's usual");
        let bytes = crate::codec::binary::encode(&frame).unwrap();
        for decoded in [
            crate::codec::json::decode(&text).unwrap(),
            crate::codec::binary::decode(&bytes).unwrap(),
        ] {
            let mut quotes = Vec::new();
            let mut at = &decoded.payload["message"];
            while let Some(quoted) = at["link"].get("message") {
                quotes.push(quoted["text"].clone());
                at = quoted;
            }
            assert_eq!(quotes, ["answer 44", "answer 43", "answer 42"]);
            // The cut quote still names what it answers.
            // (as a string in JSON, a number in MessagePack).
            let id = at["link"]["messageId"].to_string();
            assert_eq!(id.trim_matches('"'), "41");
            assert_eq!(decoded.payload["message"]["text"], "answer 45");
        }
    }
}
