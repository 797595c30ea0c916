//! Fuzz target `datastore_update`: the property is `margay_fuzz_checks::datastore_update`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| margay_fuzz_checks::datastore_update(data));
