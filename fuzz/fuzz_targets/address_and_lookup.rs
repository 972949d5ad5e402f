//! Fuzzes Address, BlobId and LookupDocument parsing, and their round trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lnmp_bridge_fuzz::address_and_lookup(data));
