//! Fuzzes RelayFrame::from_json, and to_json/from_json round trip of whatever parses.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lnmp_bridge_fuzz::relay_frame(data));
