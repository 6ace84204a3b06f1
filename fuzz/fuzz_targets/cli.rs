//! The command line: any argument vector parses without a panic, and a
//! refusal is one line with no control characters, ending in the pointer
//! to --help.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

#[path = "../../src/cli/args.rs"]
#[allow(dead_code)]
mod args;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Arguments are separated by NUL bytes, as in /proc/PID/cmdline.
    let argv: Vec<OsString> = data
        .split(|&b| b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    match args::parse(argv) {
        Ok(args::Parsed::Print(text)) => assert!(!text.is_empty()),
        Ok(args::Parsed::Run(_)) => {}
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "two lines: {message:?}");
            assert!(
                !message.chars().any(char::is_control),
                "a control character: {message:?}"
            );
            assert!(message.ends_with("; see --help"), "{message:?}");
        }
    }
});
