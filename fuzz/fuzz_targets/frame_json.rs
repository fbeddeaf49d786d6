//! JSON text frames: any text decodes to a frame or an error, within the
//! frame limits, and a decoded frame encodes again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maxproto::codec::{WireFormat, json};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(frame) = json::decode(text)
    {
        let _ = WireFormat::Json.encode(&frame);
    }
});
