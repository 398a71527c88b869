//! The length-prefixed frame decoder on an arbitrary byte stream
//! (`switchboard_tests::fuzz::frame_decoder`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_tests::fuzz::frame_decoder(data));
