//! Fuzzes what an SMTP client sends: command parsing, DATA and BDAT line-ending rules, reply framing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lnmp_bridge_fuzz::smtp_input(data));
