//! MAX → Matrix content conversion: any message MAX could send (as JSON)
//! converts without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maxbridge::bridge::convert;
use maxproto::types::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = serde_json::from_slice::<Message>(data) {
        let _ = convert::max_text_to_matrix(&message);
        let _ = convert::max_to_matrix(&message);
    }
});
