//! The properties margay's fuzz targets check, one function per target.
//!
//! Each function takes the fuzzer's raw bytes and panics when a property
//! fails; a parser that panics, hangs or overflows on its own fails too.
//! The nightly `cargo fuzz` crate beside this one calls these functions,
//! and the stable test `tests/corpus.rs` replays every checked-in corpus
//! file (crash inputs included) through them, so a fixed crash stays fixed
//! without a nightly toolchain.

mod datastore;
mod nft;
mod selector;
mod settings;

pub use datastore::datastore_update;
pub use nft::nft_roundtrip;
pub use selector::selector;
pub use settings::settings;

/// A target's check: panics when a property fails.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name (the `fuzz/corpus/<name>/` directories).
pub const TARGETS: &[(&str, Check)] = &[
    ("datastore_update", datastore_update),
    ("selector", selector),
    ("settings", settings),
    ("nft_roundtrip", nft_roundtrip),
];
