//! Fuzz target `nft_roundtrip`: the property is `margay_fuzz_checks::nft_roundtrip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| margay_fuzz_checks::nft_roundtrip(data));
