//! A generic desired-versus-observed tracker (the idea of Felix's `deltatracker`).
//!
//! Two maps per kind of kernel object: what we want and what the kernel has
//! (as far as we know). The tracker keeps the set of keys on which they
//! disagree, so the work to do after any change is proportional to what is
//! out of sync, never to the total. It is pure: no I/O, no clocks; the
//! routes, neighbour and sysctl managers drive it and tell it what they wrote.
//!
//! [`diff`] and [`apply_ops`] are the same idea as free functions over two
//! maps; the tracker's [`DeltaTracker::pending`] always equals
//! `diff(desired, observed)` (a property test checks it).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeBounds;

/// One step that makes the observed side match the desired side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<K, V> {
    /// Create or replace `key` with `value`; `existing` is what we believe the
    /// kernel holds now (`None`: nothing of ours).
    Upsert {
        key: K,
        value: V,
        existing: Option<V>,
    },
    /// Delete `key`, which the kernel holds as `existing`.
    Delete { key: K, existing: V },
}

impl<K, V> Op<K, V> {
    /// The key this operation is about.
    pub fn key(&self) -> &K {
        match self {
            Op::Upsert { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// The minimal set of operations turning `observed` into `desired`, in key order.
pub fn diff<K: Ord + Clone, V: Eq + Clone>(
    desired: &BTreeMap<K, V>,
    observed: &BTreeMap<K, V>,
) -> Vec<Op<K, V>> {
    let mut ops = Vec::new();
    let keys: BTreeSet<&K> = desired.keys().chain(observed.keys()).collect();
    for key in keys {
        if let Some(op) = op_for(key, desired.get(key), observed.get(key)) {
            ops.push(op);
        }
    }
    ops
}

/// Applies `ops` to `observed`, as a kernel that accepted all of them would.
pub fn apply_ops<K: Ord, V>(observed: &mut BTreeMap<K, V>, ops: Vec<Op<K, V>>) {
    for op in ops {
        match op {
            Op::Upsert { key, value, .. } => {
                observed.insert(key, value);
            }
            Op::Delete { key, .. } => {
                observed.remove(&key);
            }
        }
    }
}

fn op_for<K: Clone, V: Eq + Clone>(
    key: &K,
    want: Option<&V>,
    have: Option<&V>,
) -> Option<Op<K, V>> {
    match (want, have) {
        (Some(w), Some(h)) if w == h => None,
        (Some(w), h) => Some(Op::Upsert {
            key: key.clone(),
            value: w.clone(),
            existing: h.cloned(),
        }),
        (None, Some(h)) => Some(Op::Delete {
            key: key.clone(),
            existing: h.clone(),
        }),
        (None, None) => None,
    }
}

/// Desired and observed state of one kind of object, plus the keys on which
/// they differ.
#[derive(Debug, Clone)]
pub struct DeltaTracker<K, V> {
    desired: BTreeMap<K, V>,
    observed: BTreeMap<K, V>,
    pending: BTreeSet<K>,
}

impl<K: Ord + Clone, V: Eq + Clone> Default for DeltaTracker<K, V> {
    fn default() -> Self {
        DeltaTracker {
            desired: BTreeMap::new(),
            observed: BTreeMap::new(),
            pending: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone, V: Eq + Clone> DeltaTracker<K, V> {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// What we want.
    pub fn desired(&self) -> &BTreeMap<K, V> {
        &self.desired
    }

    /// What we believe the kernel has.
    pub fn observed(&self) -> &BTreeMap<K, V> {
        &self.observed
    }

    /// Number of keys out of sync.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// True when observed equals desired.
    pub fn in_sync(&self) -> bool {
        self.pending.is_empty()
    }

    /// The keys out of sync, in order.
    pub fn pending_keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.pending.iter()
    }

    /// The operations that would bring the kernel in line, in key order.
    pub fn pending(&self) -> Vec<Op<K, V>> {
        self.pending
            .iter()
            .filter_map(|k| op_for(k, self.desired.get(k), self.observed.get(k)))
            .collect()
    }

    /// Up to `max` of the operations of [`Self::pending`], starting after
    /// key `after` (from the first when `None`).
    pub fn pending_after(&self, after: Option<&K>, max: usize) -> Vec<Op<K, V>> {
        let keys = match after {
            Some(k) => self
                .pending
                .range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
            None => self.pending.range(..),
        };
        keys.filter_map(|k| op_for(k, self.desired.get(k), self.observed.get(k)))
            .take(max)
            .collect()
    }

    /// The pending operation for one key, if it is out of sync.
    pub fn pending_op(&self, key: &K) -> Option<Op<K, V>> {
        op_for(key, self.desired.get(key), self.observed.get(key))
    }

    /// We want `key` to be `value`.
    pub fn set_desired(&mut self, key: K, value: V) {
        self.desired.insert(key.clone(), value);
        self.refresh(key);
    }

    /// We no longer want `key`.
    pub fn remove_desired(&mut self, key: &K) {
        if self.desired.remove(key).is_some() {
            self.refresh(key.clone());
        }
    }

    /// Replaces the whole desired side.
    pub fn replace_desired(&mut self, desired: BTreeMap<K, V>) {
        self.desired = desired;
        self.recompute();
    }

    /// The kernel has `key` as `value` (from a dump or an event).
    pub fn set_observed(&mut self, key: K, value: V) {
        self.observed.insert(key.clone(), value);
        self.refresh(key);
    }

    /// The kernel no longer has `key`.
    pub fn remove_observed(&mut self, key: &K) {
        if self.observed.remove(key).is_some() {
            self.refresh(key.clone());
        }
    }

    /// Replaces the whole observed side (after a full dump).
    pub fn replace_observed(&mut self, observed: BTreeMap<K, V>) {
        self.observed = observed;
        self.recompute();
    }

    /// Forgets every observed entry for which `forget` holds (objects the
    /// kernel dropped without telling us, e.g. routes of a deleted link).
    pub fn forget_observed(&mut self, mut forget: impl FnMut(&K, &V) -> bool) {
        let gone: Vec<K> = self
            .observed
            .iter()
            .filter(|(k, v)| forget(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.remove_observed(&key);
        }
    }

    /// Records that an upsert of `key` succeeded: observed becomes desired.
    pub fn mark_upserted(&mut self, key: &K) {
        if let Some(v) = self.desired.get(key) {
            self.observed.insert(key.clone(), v.clone());
            self.pending.remove(key);
        }
    }

    /// Records that a delete of `key` succeeded (or found nothing).
    pub fn mark_deleted(&mut self, key: &K) {
        self.remove_observed(key);
    }

    /// Desired keys within `range` (e.g. all neighbours of one interface).
    pub fn desired_keys_in<R: RangeBounds<K>>(&self, range: R) -> Vec<K> {
        self.desired.range(range).map(|(k, _)| k.clone()).collect()
    }

    fn refresh(&mut self, key: K) {
        let differs = self.desired.get(&key) != self.observed.get(&key);
        if differs {
            self.pending.insert(key);
        } else {
            self.pending.remove(&key);
        }
    }

    fn recompute(&mut self) {
        self.pending = self
            .desired
            .keys()
            .chain(self.observed.keys())
            .filter(|k| self.desired.get(*k) != self.observed.get(*k))
            .cloned()
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Map = BTreeMap<u8, u8>;

    #[test]
    fn upsert_delete_and_replace_are_minimal() {
        let desired: Map = [(1, 1), (2, 2), (3, 3)].into();
        let observed: Map = [(2, 2), (3, 9), (4, 4)].into();
        let ops = diff(&desired, &observed);
        assert_eq!(
            ops,
            vec![
                Op::Upsert {
                    key: 1,
                    value: 1,
                    existing: None
                },
                Op::Upsert {
                    key: 3,
                    value: 3,
                    existing: Some(9)
                },
                Op::Delete {
                    key: 4,
                    existing: 4
                },
            ]
        );
    }

    #[test]
    fn marking_writes_brings_the_tracker_in_sync() {
        let mut t = DeltaTracker::new();
        t.set_desired(1u8, 'a');
        t.set_observed(2u8, 'b');
        assert_eq!(t.pending_len(), 2);
        t.mark_upserted(&1);
        t.mark_deleted(&2);
        assert!(t.in_sync());
        assert_eq!(t.observed(), &BTreeMap::from([(1, 'a')]));
    }

    #[test]
    fn forgetting_observed_entries_makes_them_pending_again() {
        let mut t = DeltaTracker::new();
        t.set_desired(1u8, 'x');
        t.set_observed(1u8, 'x');
        t.set_observed(2u8, 'y');
        t.forget_observed(|_, v| *v == 'x');
        assert_eq!(t.pending_keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    }

    /// A step of a random scenario.
    #[derive(Debug, Clone)]
    enum Step {
        SetDesired(u8, u8),
        RemoveDesired(u8),
        SetObserved(u8, u8),
        RemoveObserved(u8),
        ReplaceObserved(Map),
        ReplaceDesired(Map),
        Forget(u8),
        WriteOne,
    }

    fn step() -> impl Strategy<Value = Step> {
        let k = 0u8..16;
        let v = 0u8..4;
        prop_oneof![
            (k.clone(), v.clone()).prop_map(|(k, v)| Step::SetDesired(k, v)),
            k.clone().prop_map(Step::RemoveDesired),
            (k.clone(), v.clone()).prop_map(|(k, v)| Step::SetObserved(k, v)),
            k.clone().prop_map(Step::RemoveObserved),
            prop::collection::btree_map(k.clone(), v.clone(), 0..8).prop_map(Step::ReplaceObserved),
            prop::collection::btree_map(k, v.clone(), 0..8).prop_map(Step::ReplaceDesired),
            v.prop_map(Step::Forget),
            Just(Step::WriteOne),
        ]
    }

    fn run(t: &mut DeltaTracker<u8, u8>, s: Step) {
        match s {
            Step::SetDesired(k, v) => t.set_desired(k, v),
            Step::RemoveDesired(k) => t.remove_desired(&k),
            Step::SetObserved(k, v) => t.set_observed(k, v),
            Step::RemoveObserved(k) => t.remove_observed(&k),
            Step::ReplaceObserved(m) => t.replace_observed(m),
            Step::ReplaceDesired(m) => t.replace_desired(m),
            Step::Forget(v) => t.forget_observed(|_, x| *x == v),
            Step::WriteOne => {
                if let Some(op) = t.pending().into_iter().next() {
                    match op {
                        Op::Upsert { key, .. } => t.mark_upserted(&key),
                        Op::Delete { key, .. } => t.mark_deleted(&key),
                    }
                }
            }
        }
    }

    /// Writes every pending op as a kernel that accepts everything would.
    fn converge(t: &mut DeltaTracker<u8, u8>) {
        for op in t.pending() {
            match op {
                Op::Upsert { key, .. } => t.mark_upserted(&key),
                Op::Delete { key, .. } => t.mark_deleted(&key),
            }
        }
    }

    proptest! {
        #[test]
        fn applying_the_diff_yields_desired(desired: Map, observed: Map) {
            let mut kernel = observed.clone();
            apply_ops(&mut kernel, diff(&desired, &observed));
            prop_assert_eq!(&kernel, &desired);
            prop_assert!(diff(&desired, &kernel).is_empty());
        }

        #[test]
        fn diff_touches_only_keys_that_differ(desired: Map, observed: Map) {
            for op in diff(&desired, &observed) {
                let k = op.key();
                prop_assert_ne!(desired.get(k), observed.get(k));
            }
        }

        #[test]
        fn tracker_pending_always_equals_the_pure_diff(steps in prop::collection::vec(step(), 0..40)) {
            let mut t = DeltaTracker::new();
            for s in steps {
                run(&mut t, s);
                prop_assert_eq!(t.pending(), diff(t.desired(), t.observed()));
            }
            converge(&mut t);
            prop_assert!(t.in_sync());
            prop_assert_eq!(t.desired(), t.observed());
            prop_assert!(t.pending().is_empty());
        }

        #[test]
        fn remove_then_readd_converges(desired: Map, observed: Map, k in 0u8..16, v in 0u8..4) {
            let mut t = DeltaTracker::new();
            t.replace_observed(observed);
            t.replace_desired(desired.clone());
            converge(&mut t);
            t.remove_desired(&k);
            converge(&mut t);
            prop_assert!(!t.observed().contains_key(&k));
            t.set_desired(k, v);
            converge(&mut t);
            let mut want = desired;
            want.insert(k, v);
            prop_assert_eq!(t.observed(), &want);
            prop_assert!(t.in_sync());
        }
    }
}
