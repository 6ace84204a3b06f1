//! closureInfo's `registration` (the input of `nix-store --load-db`): path,
//! NAR hash, NAR size, deriver, count, refs.
#![no_main]

#[path = "common/graph.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Only what the format sniffing reads as a registration: not gzip, not
    // JSON, and a second line that is not a deriver (the NAR hash).
    let first = data.iter().find(|b| !b.is_ascii_whitespace());
    if data.starts_with(&[0x1f, 0x8b]) || matches!(first, None | Some(b'[' | b'{')) {
        return;
    }
    let second = data.split(|&b| b == b'\n').nth(1);
    if !second.is_some_and(|l| !l.is_empty() && !l.starts_with(b"/")) {
        return;
    }
    common::check(data);
});
