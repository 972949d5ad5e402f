//! Fuzzes open() of a valid sealed message whose nonce, keys or ciphertext the fuzzer altered.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lnmp_bridge_fuzz::open_sealed(data));
