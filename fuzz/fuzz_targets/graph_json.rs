//! The structured JSON references graph (`exportReferencesGraph` with
//! `__structuredAttrs`, or a derivation's `.attrs.json`).
#![no_main]

#[path = "common/graph.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Only what the format sniffing sends to the JSON parser.
    if matches!(
        data.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'[' | b'{')
    ) {
        common::check(data);
    }
});
