//! The typed push parser: any opcode with any JSON payload parses to a push
//! or an error, strictly and leniently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maxproto::Opcode;
use maxproto::types::Push;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let opcode = Opcode(u16::from_be_bytes(*head));
    if let Ok(payload) = serde_json::from_slice::<serde_json::Value>(rest) {
        let _ = Push::parse(opcode, payload.clone());
        let _ = Push::parse_lenient(opcode, payload);
    }
});
