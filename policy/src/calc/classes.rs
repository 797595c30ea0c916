//! Label classes: endpoints with identical effective labels share one class.
//!
//! Selectors only look at labels, so a selector is evaluated once per class
//! rather than once per endpoint, and each class caches which active
//! selector sets it matches. An endpoint whose labels do not change never
//! re-evaluates a selector; one whose labels change to an existing class
//! only looks the class up. A class disappears with its last endpoint.

use std::collections::HashMap;
use std::sync::Arc;

use super::sets::{SetIdx, SetSpec};
use super::slab::{handle, HandleSet, Slab};
use super::{CalcEngine, EpIdx};
use crate::model::{Labels, WorkloadEndpoint};

handle!(
    /// Handle of a label class.
    ClassIdx
);

/// Endpoints sharing one set of effective labels.
pub(super) struct LabelClass {
    /// The effective labels.
    pub labels: Arc<Labels>,
    /// Its endpoints (never empty while the class exists).
    pub endpoints: HandleSet<EpIdx>,
    /// Active selector sets these labels satisfy (sorted).
    pub sel_matches: Vec<SetIdx>,
}

/// All label classes, interned by labels.
#[derive(Default)]
pub(super) struct Classes {
    pub slab: Slab<ClassIdx, LabelClass>,
    index: HashMap<Arc<Labels>, ClassIdx>,
}

impl CalcEngine {
    /// An endpoint's labels: its profiles' labels in profile order (later
    /// wins), overlaid by its own.
    pub(super) fn effective_labels(&self, doc: &WorkloadEndpoint) -> Labels {
        let mut out = Labels::new();
        for p in &doc.profile_ids {
            if let Some(labels) = self.profiles.map.get(p).and_then(|p| p.labels.as_ref()) {
                out.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        if out.is_empty() {
            return doc.labels.clone();
        }
        out.extend(doc.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }

    /// Adds endpoint `e` to the class of `labels`, creating it if needed.
    pub(super) fn enter_class(&mut self, e: EpIdx, labels: Labels) -> ClassIdx {
        let c = self.intern_class(labels);
        self.classes.slab[c].endpoints.insert(e);
        c
    }

    /// The class of `labels`, created (without endpoints) if needed; the
    /// caller adds an endpoint at once.
    pub(super) fn intern_class(&mut self, labels: Labels) -> ClassIdx {
        match self.classes.index.get(&labels) {
            Some(&c) => c,
            None => self.create_class(labels),
        }
    }

    fn create_class(&mut self, labels: Labels) -> ClassIdx {
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
        let labels = Arc::new(labels);
        let c = self.classes.slab.insert(LabelClass {
            labels: Arc::clone(&labels),
            endpoints: HandleSet::default(),
            sel_matches,
        });
        self.classes.index.insert(labels, c);
        c
    }

    /// Removes endpoint `e` from class `c`, dropping the class when empty.
    pub(super) fn leave_class(&mut self, e: EpIdx, c: ClassIdx) {
        let class = &mut self.classes.slab[c];
        class.endpoints.remove(&e);
        if class.endpoints.is_empty() {
            if let Some(class) = self.classes.slab.remove(c) {
                self.classes.index.remove(&*class.labels);
            }
        }
    }

    /// Recomputes the effective labels of `e`; true when its class changed.
    pub(super) fn reclassify(&mut self, e: EpIdx) -> bool {
        let labels = self.effective_labels(&self.eps.slab[e].doc);
        let old = self.eps.slab[e].class;
        if *self.classes.slab[old].labels == labels {
            return false;
        }
        let new = self.enter_class(e, labels);
        self.eps.slab[e].class = new;
        self.leave_class(e, old);
        true
    }
}
