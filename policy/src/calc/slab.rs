//! Index-addressed storage for the engine's own records: small integer
//! handles instead of keys, so the indexes between records stay cheap.
//!
//! Records live in fixed-size chunks: growing never moves them, and 100,000
//! endpoint records take what they need plus at most one chunk, not up to
//! twice that as a doubling vector would.

use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

/// A typed handle into a [`Slab`].
pub(super) trait Handle: Copy {
    /// Wraps a raw slot number.
    fn from_raw(raw: u32) -> Self;
    /// The raw slot number.
    fn raw(self) -> u32;
}

/// Declares a `u32` newtype handle.
macro_rules! handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub(super) struct $name(u32);

        impl $crate::calc::slab::Handle for $name {
            fn from_raw(raw: u32) -> Self {
                $name(raw)
            }
            fn raw(self) -> u32 {
                self.0
            }
        }
    };
}
pub(super) use handle;

/// Slots in one chunk.
const CHUNK: usize = 1024;

/// Slots addressed by handles; freed slots are reused.
pub(super) struct Slab<K, T> {
    /// Full chunks of [`CHUNK`] slots, the last one filling up.
    chunks: Vec<Vec<Option<T>>>,
    /// Slots ever used (live or free).
    len: usize,
    free: Vec<u32>,
    _key: PhantomData<K>,
}

impl<K, T> Default for Slab<K, T> {
    fn default() -> Self {
        Slab {
            chunks: Vec::new(),
            len: 0,
            free: Vec::new(),
            _key: PhantomData,
        }
    }
}

impl<K, T> Slab<K, T> {
    fn slot(&self, raw: u32) -> Option<&Option<T>> {
        let raw = raw as usize;
        self.chunks.get(raw / CHUNK)?.get(raw % CHUNK)
    }

    fn slot_mut(&mut self, raw: u32) -> Option<&mut Option<T>> {
        let raw = raw as usize;
        self.chunks.get_mut(raw / CHUNK)?.get_mut(raw % CHUNK)
    }
}

impl<K: Handle, T> Slab<K, T> {
    /// Stores `value` and returns its handle.
    pub fn insert(&mut self, value: T) -> K {
        if let Some(raw) = self.free.pop() {
            if let Some(slot) = self.slot_mut(raw) {
                *slot = Some(value);
                return K::from_raw(raw);
            }
        }
        let raw = u32::try_from(self.len).expect("more than 2^32 records");
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(Some(value));
        }
        self.len += 1;
        K::from_raw(raw)
    }

    /// Removes and returns the record, freeing its slot.
    pub fn remove(&mut self, key: K) -> Option<T> {
        let value = self.slot_mut(key.raw())?.take()?;
        self.free.push(key.raw());
        Some(value)
    }

    /// The record, if the handle is live.
    pub fn get_mut(&mut self, key: K) -> Option<&mut T> {
        self.slot_mut(key.raw())?.as_mut()
    }

    /// Live records with their handles, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut T)> {
        self.chunks
            .iter_mut()
            .flat_map(|c| c.iter_mut())
            .enumerate()
            .filter_map(|(i, v)| Some((K::from_raw(i as u32), v.as_mut()?)))
    }
}

impl<K: Handle, T> Index<K> for Slab<K, T> {
    type Output = T;

    /// Panics on a stale handle: handles never leave the engine, so that is a bug.
    fn index(&self, key: K) -> &T {
        match self.slot(key.raw()) {
            Some(Some(v)) => v,
            _ => panic!("stale slab handle {}", key.raw()),
        }
    }
}

impl<K: Handle, T> IndexMut<K> for Slab<K, T> {
    fn index_mut(&mut self, key: K) -> &mut T {
        match self.slot_mut(key.raw()) {
            Some(Some(v)) => v,
            _ => panic!("stale slab handle {}", key.raw()),
        }
    }
}

/// A set of handles.
pub(super) type HandleSet<K> = super::hashing::FastSet<K>;

#[cfg(test)]
mod tests {
    use super::*;

    handle!(
        /// Test handle.
        TestIdx
    );

    #[test]
    fn slots_are_reused_and_stale_handles_miss() {
        let mut slab: Slab<TestIdx, &str> = Slab::default();
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.remove(a), None, "stale handle misses");
        let c = slab.insert("c");
        assert_eq!(c, a, "freed slot is reused");
        assert_eq!(slab[c], "c");
        assert_eq!(slab[b], "b");
        let all: Vec<_> = slab.iter_mut().map(|(_, v)| *v).collect();
        assert_eq!(all, vec!["c", "b"]);
    }

    #[test]
    fn handles_stay_valid_across_chunks() {
        let mut slab: Slab<TestIdx, usize> = Slab::default();
        let handles: Vec<TestIdx> = (0..3 * CHUNK + 5).map(|i| slab.insert(i)).collect();
        for (i, &h) in handles.iter().enumerate() {
            assert_eq!(slab[h], i);
        }
        assert_eq!(slab.remove(handles[CHUNK + 1]), Some(CHUNK + 1));
        assert_eq!(slab.insert(7), handles[CHUNK + 1], "freed slot is reused");
        assert_eq!(slab.iter_mut().count(), 3 * CHUNK + 5);
        assert_eq!(slab.chunks.len(), 4);
    }
}
