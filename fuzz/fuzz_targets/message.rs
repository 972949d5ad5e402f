//! Fuzzes Message::from_json, then verify(), open() as a fixed recipient and the JSON round trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lnmp_bridge_fuzz::message(data));
