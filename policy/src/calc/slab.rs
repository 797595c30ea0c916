//! Index-addressed storage for the engine's own records: small integer
//! handles instead of keys, so the indexes between records stay cheap.

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

/// Slots addressed by handles; freed slots are reused.
pub(super) struct Slab<K, T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
    _key: PhantomData<K>,
}

impl<K, T> Default for Slab<K, T> {
    fn default() -> Self {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
            _key: PhantomData,
        }
    }
}

impl<K: Handle, T> Slab<K, T> {
    /// Stores `value` and returns its handle.
    pub fn insert(&mut self, value: T) -> K {
        if let Some(raw) = self.free.pop() {
            self.items[raw as usize] = Some(value);
            return K::from_raw(raw);
        }
        let raw = u32::try_from(self.items.len()).expect("more than 2^32 records");
        self.items.push(Some(value));
        K::from_raw(raw)
    }

    /// Removes and returns the record, freeing its slot.
    pub fn remove(&mut self, key: K) -> Option<T> {
        let value = self.items.get_mut(key.raw() as usize)?.take()?;
        self.free.push(key.raw());
        Some(value)
    }

    /// The record, if the handle is live.
    pub fn get_mut(&mut self, key: K) -> Option<&mut T> {
        self.items.get_mut(key.raw() as usize)?.as_mut()
    }

    /// Live records with their handles, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut T)> {
        self.items
            .iter_mut()
            .enumerate()
            .filter_map(|(i, v)| Some((K::from_raw(i as u32), v.as_mut()?)))
    }
}

impl<K: Handle, T> Index<K> for Slab<K, T> {
    type Output = T;

    /// Panics on a stale handle: handles never leave the engine, so that is a bug.
    fn index(&self, key: K) -> &T {
        match self.items.get(key.raw() as usize) {
            Some(Some(v)) => v,
            _ => panic!("stale slab handle {}", key.raw()),
        }
    }
}

impl<K: Handle, T> IndexMut<K> for Slab<K, T> {
    fn index_mut(&mut self, key: K) -> &mut T {
        match self.items.get_mut(key.raw() as usize) {
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
}
