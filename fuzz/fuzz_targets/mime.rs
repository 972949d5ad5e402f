//! Fuzzes MIME -> LNMP content conversion, its round trip, its blobs, and rendering back to MIME.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lnmp_bridge_fuzz::mime(data));
