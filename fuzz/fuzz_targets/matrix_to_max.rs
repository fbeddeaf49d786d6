//! Matrix → MAX content conversion: any event content (HTML included)
//! converts without a panic, and long texts split within MAX's limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maxbridge::bridge::convert;

fuzz_target!(|data: &[u8]| {
    if let Ok(content) = serde_json::from_slice::<serde_json::Value>(data)
        && let Some(text) = convert::matrix_to_max(&content)
    {
        for part in convert::split_text(&text.text) {
            assert!(part.chars().count() <= convert::MAX_TEXT_CHARS);
        }
    }
});
