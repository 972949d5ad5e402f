//! Fuzzes MessageContent::from_json_bytes, its round trip, and FileAttachment::open of each attachment.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lnmp_bridge_fuzz::content(data));
