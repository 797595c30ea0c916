//! Fuzz target `selector`: the property is `margay_fuzz_checks::selector`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| margay_fuzz_checks::selector(data));
