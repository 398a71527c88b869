//! Token verification: arbitrary bytes as a token, as a Hello, and as signed header and claims
//! (`switchboard_tests::fuzz::token`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_tests::fuzz::token(data));
