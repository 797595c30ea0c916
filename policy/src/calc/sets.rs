//! Named address sets for tags and selectors.
//!
//! A set is *active* while at least one present rule set refers to it
//! (reference counted, so rules share sets). Activation fills it once from
//! the indexes (tag → profiles → endpoints, or selector → label classes →
//! endpoints); after that endpoints join and leave it one at a time. Members
//! are counted per address, so two endpoints with the same address keep it
//! present until both are gone.

use super::hashing::FastMap;

use ipnet::IpNet;

use super::output::Output;
use super::slab::{handle, HandleSet, Slab};
use super::{CalcEngine, EpIdx};
use crate::desired::{Changes, IpSetId};
use crate::names::Id;
use crate::selector::Selector;

handle!(
    /// Handle of an active address set.
    SetIdx
);

/// What a rule needs: the tag or selector behind a set id.
#[derive(Debug, Clone)]
pub(super) enum SetSpec {
    /// `*_tag`.
    Tag(Id),
    /// `*_selector`.
    Selector(Selector),
}

impl SetSpec {
    /// The id of the set this spec names.
    pub fn id(&self) -> IpSetId {
        match self {
            SetSpec::Tag(t) => IpSetId::Tag(t.clone()),
            SetSpec::Selector(s) => IpSetId::Selector(s.canonical().to_owned()),
        }
    }
}

/// One active set.
pub(super) struct SetState {
    /// Its id in the desired state.
    pub id: IpSetId,
    /// The tag or selector that defines membership.
    pub spec: SetSpec,
    /// Number of rule references to it.
    refs: u32,
    /// Address → number of member endpoints carrying it.
    members: FastMap<IpNet, u32>,
    /// Member endpoints.
    pub endpoints: HandleSet<EpIdx>,
    /// Created since the changes were last taken: the dataplane reads it
    /// whole, so member changes are not tracked.
    fresh: bool,
    /// Members whose presence changed since the changes were last taken.
    dirty: Vec<IpNet>,
}

/// All active tag and selector sets, with lookups by tag and by selector text.
#[derive(Default)]
pub(super) struct Sets {
    pub slab: Slab<SetIdx, SetState>,
    pub by_tag: FastMap<Id, SetIdx>,
    pub by_selector: FastMap<String, SetIdx>,
    /// Sets that are fresh or have dirty members (may hold stale handles).
    touched: Vec<SetIdx>,
}

impl Sets {
    /// The active set with this id.
    pub fn lookup(&self, id: &IpSetId) -> Option<SetIdx> {
        match id {
            IpSetId::Tag(t) => self.by_tag.get(t).copied(),
            IpSetId::Selector(s) => self.by_selector.get(s).copied(),
            IpSetId::AllPools | IpSetId::MasqueradePools => None,
        }
    }

    fn lookup_spec(&self, spec: &SetSpec) -> Option<SetIdx> {
        match spec {
            SetSpec::Tag(t) => self.by_tag.get(t).copied(),
            SetSpec::Selector(s) => self.by_selector.get(s.canonical()).copied(),
        }
    }

    /// Counts one more carrier of `net` in set `s`.
    pub fn add_addr(&mut self, out: &mut Output, s: SetIdx, net: IpNet) {
        let n = self.slab[s].members.entry(net).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.member_changed(out, s, net, true);
        }
    }

    /// Counts one carrier of `net` in set `s` less.
    pub fn remove_addr(&mut self, out: &mut Output, s: SetIdx, net: IpNet) {
        let set = &mut self.slab[s];
        let Some(n) = set.members.get_mut(&net) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            set.members.remove(&net);
            self.member_changed(out, s, net, false);
        }
    }

    fn member_changed(&mut self, out: &mut Output, s: SetIdx, net: IpNet, present: bool) {
        let set = &mut self.slab[s];
        if let Some(members) = out.state.ip_sets.get_mut(&set.id) {
            if present {
                members.insert(net);
            } else {
                members.remove(&net);
            }
        }
        if set.fresh {
            return;
        }
        if set.dirty.is_empty() {
            self.touched.push(s);
        }
        set.dirty.push(net);
    }

    /// Moves the tracked member changes into `changes` and starts afresh.
    pub fn flush_changes(&mut self, changes: &mut Changes) {
        for s in std::mem::take(&mut self.touched) {
            let Some(set) = self.slab.get_mut(s) else {
                continue;
            };
            set.fresh = false;
            if set.dirty.is_empty() {
                continue;
            }
            changes
                .ip_set_members
                .entry(set.id.clone())
                .or_default()
                .extend(set.dirty.drain(..));
        }
    }
}

impl CalcEngine {
    /// Takes a reference on the set named by `spec`, creating and filling it
    /// when it was not active.
    pub(super) fn acquire_set(&mut self, spec: &SetSpec) {
        if let Some(s) = self.sets.lookup_spec(spec) {
            self.sets.slab[s].refs += 1;
            return;
        }
        let id = spec.id();
        let s = self.sets.slab.insert(SetState {
            id: id.clone(),
            spec: spec.clone(),
            refs: 1,
            members: FastMap::default(),
            endpoints: HandleSet::default(),
            fresh: true,
            dirty: Vec::new(),
        });
        self.sets.touched.push(s);
        match spec {
            SetSpec::Tag(t) => self.sets.by_tag.insert(t.clone(), s),
            SetSpec::Selector(sel) => self.sets.by_selector.insert(sel.canonical().to_owned(), s),
        };
        self.out.create_set(id);
        self.populate_set(s);
    }

    /// Drops a reference on set `id`; the last one removes the set.
    pub(super) fn release_set(&mut self, id: &IpSetId) {
        let Some(s) = self.sets.lookup(id) else {
            return;
        };
        let set = &mut self.sets.slab[s];
        set.refs -= 1;
        if set.refs > 0 {
            return;
        }
        let Some(set) = self.sets.slab.remove(s) else {
            return;
        };
        let is_selector = matches!(set.spec, SetSpec::Selector(_));
        for e in set.endpoints {
            let ep = &mut self.eps.slab[e];
            remove_sorted(&mut ep.member_of, s);
            if is_selector {
                remove_sorted(&mut self.classes.slab[ep.class].sel_matches, s);
            }
        }
        match &set.spec {
            SetSpec::Tag(t) => self.sets.by_tag.remove(t),
            SetSpec::Selector(sel) => self.sets.by_selector.remove(sel.canonical()),
        };
        self.out.drop_set(&set.id);
    }

    /// Fills a freshly created set from the indexes.
    fn populate_set(&mut self, s: SetIdx) {
        let members: Vec<EpIdx> = match &self.sets.slab[s].spec {
            SetSpec::Tag(t) => self.endpoints_with_tag(t),
            SetSpec::Selector(sel) => {
                let mut eps = Vec::new();
                for (_, class) in self.classes.slab.iter_mut() {
                    if sel.matches(&class.labels) {
                        insert_sorted(&mut class.sel_matches, s);
                        eps.extend(class.endpoints.iter().copied());
                    }
                }
                eps
            }
        };
        for e in members {
            self.join_set(e, s);
        }
    }

    /// Every endpoint (any host, any state) one of whose profiles carries `tag`.
    fn endpoints_with_tag(&self, tag: &Id) -> Vec<EpIdx> {
        let Some(profiles) = self.profiles.tag_profiles.get(tag) else {
            return Vec::new();
        };
        let mut eps = Vec::new();
        for p in profiles {
            if let Some(prof) = self.profiles.map.get(p) {
                eps.extend(prof.endpoints.iter().copied());
            }
        }
        eps
    }

    /// Makes endpoint `e` a member of set `s` (no-op when it already is).
    fn join_set(&mut self, e: EpIdx, s: SetIdx) {
        let ep = &mut self.eps.slab[e];
        if !insert_sorted(&mut ep.member_of, s) {
            return;
        }
        self.sets.slab[s].endpoints.insert(e);
        for &net in &ep.addrs {
            self.sets.add_addr(&mut self.out, s, net);
        }
    }
}

/// Inserts into a sorted vector; false when already present.
pub(super) fn insert_sorted<T: Ord>(v: &mut Vec<T>, item: T) -> bool {
    match v.binary_search(&item) {
        Ok(_) => false,
        Err(pos) => {
            v.insert(pos, item);
            true
        }
    }
}

/// Removes from a sorted vector; false when absent.
pub(super) fn remove_sorted<T: Ord>(v: &mut Vec<T>, item: T) -> bool {
    match v.binary_search(&item) {
        Ok(pos) => {
            v.remove(pos);
            true
        }
        Err(_) => false,
    }
}
