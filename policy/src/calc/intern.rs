//! Interning of what many endpoints share: their own label maps and their
//! profile lists.
//!
//! Labels of 100,000 endpoints come from small vocabularies (pods of one
//! deployment carry the same labels), and most endpoints list one of a few
//! profiles. Each distinct value is stored once, behind an [`Arc`] that
//! every endpoint holding it shares; a value is forgotten when the last
//! endpoint lets go of it ([`Interner::release`]).

use std::hash::Hash;
use std::sync::Arc;

use super::hashing::FastState;
use crate::model::Labels;
use crate::names::Id;

/// One stored copy of each distinct value in use.
pub(super) struct Interner<T: ?Sized + Hash + Eq> {
    values: std::collections::HashSet<Arc<T>, FastState>,
    empty: Arc<T>,
}

impl<T: ?Sized + Hash + Eq> Interner<T> {
    fn with_empty(empty: Arc<T>) -> Self {
        Interner {
            values: Default::default(),
            empty,
        }
    }

    /// The shared copy of `value` (stored now if it is new).
    pub fn intern<V: Into<Arc<T>> + std::borrow::Borrow<T>>(&mut self, value: V) -> Arc<T> {
        if let Some(known) = self.values.get(value.borrow()) {
            return Arc::clone(known);
        }
        let stored: Arc<T> = value.into();
        self.values.insert(Arc::clone(&stored));
        stored
    }

    /// The shared empty value (never stored in the table).
    pub fn empty(&self) -> Arc<T> {
        Arc::clone(&self.empty)
    }

    /// An endpoint lets go of `value`: forgotten when nothing else holds
    /// it (then true: its address may be reused).
    pub fn release(&mut self, value: Arc<T>) -> bool {
        // One reference is the table's, one is `value`.
        Arc::strong_count(&value) == 2 && self.values.remove(&*value)
    }

    /// Distinct values stored.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.values.len()
    }
}

/// The interners of the endpoint records.
pub(super) struct Shared {
    /// Endpoints' own labels.
    pub labels: Interner<Labels>,
    /// Endpoints' profile lists.
    pub profiles: Interner<[Id]>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            labels: Interner::with_empty(Arc::new(Labels::new())),
            profiles: Interner::with_empty(Arc::from(Vec::<Id>::new())),
        }
    }
}

impl Shared {
    /// Moves a document's labels and profile list into their shared copies,
    /// leaving both empty in the document.
    pub fn take(
        &mut self,
        profiles: &mut Vec<Id>,
        labels: &mut Labels,
    ) -> (Arc<[Id]>, Arc<Labels>) {
        let profiles = if profiles.is_empty() {
            self.profiles.empty()
        } else {
            self.profiles.intern(std::mem::take(profiles))
        };
        let labels = if labels.is_empty() {
            self.labels.empty()
        } else {
            self.labels.intern(std::mem::take(labels))
        };
        (profiles, labels)
    }

    /// Lets go of one endpoint's shared parts; true when either was
    /// forgotten (then memos keyed by their addresses must go).
    #[must_use]
    pub fn release(&mut self, profiles: Arc<[Id]>, labels: Arc<Labels>) -> bool {
        let profiles_gone = self.profiles.release(profiles);
        self.labels.release(labels) || profiles_gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn equal_values_share_one_copy_until_the_last_lets_go() {
        let mut shared = Shared::default();
        let id = |s: &str| Id::new(s).expect("id");
        let (p1, l1) = shared.take(&mut vec![id("a")], &mut labels(&[("app", "x")]));
        let (p2, l2) = shared.take(&mut vec![id("a")], &mut labels(&[("app", "x")]));
        assert!(Arc::ptr_eq(&p1, &p2) && Arc::ptr_eq(&l1, &l2));
        assert_eq!((shared.profiles.len(), shared.labels.len()), (1, 1));
        assert!(!shared.release(p1, l1));
        assert_eq!(shared.labels.len(), 1, "still held by the second");
        assert!(shared.release(p2, l2));
        assert_eq!((shared.profiles.len(), shared.labels.len()), (0, 0));
        let (p, l) = shared.take(&mut Vec::new(), &mut Labels::new());
        assert!(p.is_empty() && l.is_empty());
        assert!(!shared.release(p, l));
        assert_eq!(shared.labels.len(), 0, "the empty value is never stored");
    }
}
#[cfg(test)]
mod record_size {
    use std::mem::size_of;

    /// The per-endpoint record is what 100,000 remote endpoints cost: keep
    /// it compact (host endpoint documents boxed, no document fields that
    /// feed no output, one-word selectors in every rule).
    #[test]
    fn the_endpoint_record_and_rules_stay_compact() {
        assert!(size_of::<super::super::endpoints::Endpoint>() <= 240);
        assert_eq!(size_of::<Option<crate::selector::Selector>>(), 8);
        assert!(size_of::<crate::model::Rule>() <= 344);
    }
}
