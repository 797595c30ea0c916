//! Fuzz target `settings`: the property is `margay_fuzz_checks::settings`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| margay_fuzz_checks::settings(data));
