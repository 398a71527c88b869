//! Config loading: arbitrary TOML text, parsed, merged and validated
//! (`switchboard_tests::fuzz::config`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_tests::fuzz::config(data));
