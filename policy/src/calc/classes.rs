//! Label classes: endpoints with identical effective labels share one class.
//!
//! Selectors only look at labels, so a selector is evaluated once per class
//! rather than once per endpoint, and each class caches which active
//! selector sets it matches. An endpoint whose labels do not change never
//! re-evaluates a selector; one whose labels change to an existing class
//! only looks the class up (by a hash of its merged labels, without building
//! them). A class disappears with its last endpoint.
//!
//! Endpoints share their profile list and own labels (`intern`), so the
//! class of a (profile list, labels) pair is remembered by the identity of
//! the two shared values: most endpoints find their class without merging
//! or hashing labels. The memo is dropped whenever its answer could change
//! (a profile's labels change, a class goes, a shared value is freed).

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use super::hashing::{FastMap, FastState};
use super::sets::{SetIdx, SetSpec};
use super::slab::{handle, HandleSet, Slab};
use super::{CalcEngine, EpIdx};
use crate::model::Labels;
use crate::names::Id;

handle!(
    /// Handle of a label class.
    ClassIdx
);

/// Endpoints sharing one set of effective labels.
pub(super) struct LabelClass {
    /// The effective labels.
    pub labels: Labels,
    /// Hash of the labels, as [`Classes::hash`] computes it.
    hash: u64,
    /// Its endpoints (never empty while the class exists).
    pub endpoints: HandleSet<EpIdx>,
    /// Active selector sets these labels satisfy (sorted).
    pub sel_matches: Vec<SetIdx>,
}

/// All label classes, findable by label hash.
#[derive(Default)]
pub(super) struct Classes {
    pub slab: Slab<ClassIdx, LabelClass>,
    by_hash: FastMap<u64, Vec<ClassIdx>>,
    hasher: FastState,
    /// The class of (shared profile list, shared labels), by their addresses.
    by_parts: FastMap<(usize, usize), ClassIdx>,
}

/// The memo key of an endpoint's shared profile list and labels.
fn parts_key(profiles: &Arc<[Id]>, labels: &Arc<Labels>) -> (usize, usize) {
    (
        Arc::as_ptr(profiles).cast::<Id>() as usize,
        Arc::as_ptr(labels) as usize,
    )
}

/// Effective labels as borrowed, sorted (key, value) pairs.
type LabelRefs<'a> = Vec<(&'a str, &'a str)>;

impl Classes {
    /// Forgets every memoised class (their answers may have changed).
    pub fn forget_memo(&mut self) {
        self.by_parts.clear();
    }

    fn hash(&self, labels: &LabelRefs<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        for (k, v) in labels {
            h.write(k.as_bytes());
            h.write_u8(0xff);
            h.write(v.as_bytes());
            h.write_u8(0xfe);
        }
        h.finish()
    }

    fn find(&self, hash: u64, labels: &LabelRefs<'_>) -> Option<ClassIdx> {
        self.by_hash
            .get(&hash)?
            .iter()
            .copied()
            .find(|&c| same_labels(&self.slab[c].labels, labels))
    }
}

fn same_labels(a: &Labels, b: &LabelRefs<'_>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ak, av), (bk, bv))| ak == bk && av == bv)
}

impl CalcEngine {
    /// An endpoint's labels: its profiles' labels in profile order (later
    /// wins), overlaid by its own; borrowed and sorted by key.
    fn label_refs<'a>(&'a self, profile_ids: &'a [Id], own: &'a Labels) -> LabelRefs<'a> {
        let mut out: LabelRefs<'a> = Vec::with_capacity(own.len() + 4);
        let profile_labels = profile_ids
            .iter()
            .filter_map(|p| self.profiles.map.get(p)?.labels.as_ref());
        for labels in profile_labels.chain(std::iter::once(own)) {
            for (k, v) in labels {
                match out.binary_search_by(|(ok, _)| (*ok).cmp(k.as_str())) {
                    Ok(i) => out[i].1 = v,
                    Err(i) => out.insert(i, (k, v)),
                }
            }
        }
        out
    }

    /// The class of the effective labels of an endpoint listing
    /// `profile_ids` with labels `own`, created if needed. The caller adds
    /// the endpoint to it at once.
    pub(super) fn class_of(&mut self, profile_ids: &Arc<[Id]>, own: &Arc<Labels>) -> ClassIdx {
        let key = parts_key(profile_ids, own);
        if let Some(&c) = self.classes.by_parts.get(&key) {
            return c;
        }
        let c = match self.find_class(profile_ids, own) {
            Ok(c) => c,
            Err((labels, hash)) => self.create_class(labels, hash),
        };
        self.classes.by_parts.insert(key, c);
        c
    }

    /// The existing class of these labels, or the labels and their hash.
    fn find_class(&self, profile_ids: &[Id], own: &Labels) -> Result<ClassIdx, (Labels, u64)> {
        let refs = self.label_refs(profile_ids, own);
        let hash = self.classes.hash(&refs);
        if let Some(c) = self.classes.find(hash, &refs) {
            return Ok(c);
        }
        let labels: Labels = refs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Err((labels, hash))
    }

    fn create_class(&mut self, labels: Labels, hash: u64) -> ClassIdx {
        let mut sel_matches: Vec<SetIdx> = self
            .sets
            .by_selector
            .values()
            .copied()
            .filter(|&s| match &self.sets.slab[s].spec {
                SetSpec::Selector(sel) => sel.matches(&labels),
                SetSpec::Tag(_) => false,
            })
            .collect();
        sel_matches.sort_unstable();
        let c = self.classes.slab.insert(LabelClass {
            labels,
            hash,
            endpoints: HandleSet::default(),
            sel_matches,
        });
        self.classes.by_hash.entry(hash).or_default().push(c);
        c
    }

    /// Removes endpoint `e` from class `c`, dropping the class when empty.
    pub(super) fn leave_class(&mut self, e: EpIdx, c: ClassIdx) {
        let class = &mut self.classes.slab[c];
        class.endpoints.remove(&e);
        if !class.endpoints.is_empty() {
            return;
        }
        let hash = class.hash;
        self.classes.slab.remove(c);
        self.classes.by_parts.retain(|_, class| *class != c);
        if let Some(list) = self.classes.by_hash.get_mut(&hash) {
            list.retain(|&x| x != c);
            if list.is_empty() {
                self.classes.by_hash.remove(&hash);
            }
        }
    }

    /// Recomputes the effective labels of `e`; true when its class changed.
    pub(super) fn reclassify(&mut self, e: EpIdx) -> bool {
        let old = self.eps.slab[e].class;
        let ep = &self.eps.slab[e];
        let (profiles, labels) = (Arc::clone(&ep.profiles), Arc::clone(&ep.own_labels));
        // Classes are unique per label set: the same class means the same labels.
        let new = self.class_of(&profiles, &labels);
        if new == old {
            return false;
        }
        self.classes.slab[new].endpoints.insert(e);
        self.eps.slab[e].class = new;
        self.leave_class(e, old);
        true
    }
}
