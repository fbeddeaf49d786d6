//! Binary frames (header, LZ4/zstd, MessagePack): any bytes decode to a
//! frame or an error, within the frame limits, and a decoded frame encodes
//! again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maxproto::codec::{WireFormat, binary};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = binary::decode(data) {
        let _ = WireFormat::Binary.encode(&frame);
    }
});
