//! A fast, per-map seeded hasher for the engine's hash maps.
//!
//! The standard SipHash showed up as a tenth of the time of a remote
//! endpoint update. Keys here are short (ids, endpoint keys, addresses,
//! handles) and come from the datastore, which only the cluster's own
//! components write; a word-at-a-time multiplicative hash with a random seed
//! per map and a final avalanche is plenty, and several times faster.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

const K: u64 = 0x517c_c1b7_2722_0a95;

/// Builds [`FastHasher`]s sharing one random seed.
#[derive(Clone, Copy)]
pub(super) struct FastState {
    seed: u64,
}

impl Default for FastState {
    fn default() -> Self {
        FastState {
            seed: RandomState::new().hash_one(0x6d61_7267_6179u64),
        }
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.seed)
    }
}

/// Word-at-a-time multiplicative hasher (see the module docs).
pub(super) struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    #[inline]
    fn write_u128(&mut self, n: u128) {
        self.mix(n as u64);
        self.mix((n >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // murmur3's finaliser: spreads the entropy into the high bits the
        // hash table uses for its control bytes.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// A hash map with [`FastState`].
pub(super) type FastMap<K, V> = HashMap<K, V, FastState>;
/// A hash set with [`FastState`].
pub(super) type FastSet<K> = HashSet<K, FastState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_hash_equal_and_near_keys_differ() {
        let s = FastState::default();
        assert_eq!(s.hash_one("cali1234"), s.hash_one(String::from("cali1234")));
        assert_ne!(s.hash_one("cali1234"), s.hash_one("cali1235"));
        assert_ne!(s.hash_one(("ab", "c")), s.hash_one(("a", "bc")));
        assert_ne!(s.hash_one(""), s.hash_one("\0"));
        let mut m: FastMap<String, u32> = FastMap::default();
        for i in 0..1000 {
            m.insert(format!("host-{i}"), i);
        }
        assert!((0..1000).all(|i| m[&format!("host-{i}")] == i));
    }
}
