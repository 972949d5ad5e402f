//! Fuzzes what the IMAP server reads and renders: command framing and parsing, and a
//! message taken apart for FETCH and SEARCH.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lnmp_bridge_fuzz::imap_input(data));
