//! Endpoints of every host: the record kept per endpoint, and how an
//! endpoint update flows into label classes, set membership, routes and
//! (for this host's endpoints) plumbing and programs.
//!
//! The slab holds workload and host endpoints alike ([`Kind`]), so label
//! classes, tag and selector sets and the profile index treat both the same
//! way. Only workload endpoints have routes, claim interfaces, appear in
//! `locals`/`by_host` and can conflict; host endpoints have their own index
//! and, on this host, their own state entry (`hosts`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::hashing::FastMap;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::classes::ClassIdx;
use super::locals::Published;
use super::routes::RouteClaim;
use super::sets::SetIdx;
use super::slab::{handle, HandleSet, Slab};
use super::CalcEngine;
use crate::desired::WorkloadEndpointKey;
use crate::model::EndpointState;
use crate::model::{HostEndpoint, HostEndpointKey, Labels, WorkloadEndpoint};
use crate::names::{Id, InterfaceName, MacAddr};

handle!(
    /// Handle of a known endpoint (workload or host).
    EpIdx
);

/// Which kind of endpoint a record is, with its identity and document.
pub(super) enum Kind {
    /// A workload endpoint.
    Workload {
        /// Datastore identity (shared with the index).
        key: Arc<WorkloadEndpointKey>,
        /// What is kept of the current document.
        doc: StoredWorkload,
    },
    /// A host endpoint.
    Host {
        /// Datastore identity (shared with the host index).
        key: Arc<HostEndpointKey>,
        /// The current document (boxed: host endpoints are few, and the
        /// record of every workload endpoint is as large as its largest kind).
        doc: Box<HostEndpoint>,
        /// Of this host's host endpoints: policies whose selector matches
        /// it, (tier, policy). Empty for other hosts'.
        matched: BTreeSet<(Id, Id)>,
    },
}

/// What the engine keeps of a workload endpoint document: the fields its
/// outputs depend on, compactly. Its profiles and labels live in the
/// record, shared; the gateways feed no output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredWorkload {
    /// `state`.
    pub state: EndpointState,
    /// `name`: the host-side interface.
    pub name: InterfaceName,
    /// `mac`.
    pub mac: Option<MacAddr>,
    /// `ipv4_nets`.
    pub ipv4_nets: Box<[Ipv4Net]>,
    /// `ipv6_nets`.
    pub ipv6_nets: Box<[Ipv6Net]>,
}

impl StoredWorkload {
    /// Keeps what matters of `doc`, whose profiles and labels were taken.
    fn of(doc: WorkloadEndpoint) -> Self {
        StoredWorkload {
            state: doc.state,
            name: doc.name,
            mac: doc.mac,
            ipv4_nets: doc.ipv4_nets.into_boxed_slice(),
            ipv6_nets: doc.ipv6_nets.into_boxed_slice(),
        }
    }
}

/// What the engine keeps per endpoint.
pub(super) struct Endpoint {
    /// Kind, identity and document.
    pub kind: Kind,
    /// Host segment is this host.
    pub local: bool,
    /// Label class of its effective labels.
    pub class: ClassIdx,
    /// Distinct addresses, as contributed to sets and routes (sorted).
    pub addrs: Vec<IpNet>,
    /// Active sets it is a member of (sorted).
    pub member_of: Vec<SetIdx>,
    /// Route claim currently registered (workloads only).
    pub route: Option<RouteClaim>,
    /// Interface claim registered (local workload, active, with a prefix).
    pub claim: Option<InterfaceName>,
    /// Set while it is plumbed (it owns its interface).
    pub publ: Option<Box<Published>>,
    /// Its `profile_ids` (shared with every endpoint listing the same; the
    /// document's own list is left empty).
    pub profiles: Arc<[Id]>,
    /// Its own `labels` (shared likewise; the document's are left empty).
    pub own_labels: Arc<Labels>,
}

impl Endpoint {
    /// A fresh record of `kind` (its profiles and labels already taken
    /// out, see [`super::intern::Shared::take`]), in class `class`, a
    /// member of nothing yet.
    pub fn new(
        kind: Kind,
        local: bool,
        class: ClassIdx,
        profiles: Arc<[Id]>,
        own_labels: Arc<Labels>,
    ) -> Self {
        Endpoint {
            kind,
            local,
            class,
            profiles,
            own_labels,
            addrs: Vec::new(),
            member_of: Vec::new(),
            route: None,
            claim: None,
            publ: None,
        }
    }

    /// Its `profile_ids`.
    pub fn profile_ids(&self) -> &[Id] {
        &self.profiles
    }

    /// Its own `labels` (without those inherited from profiles).
    pub fn labels(&self) -> &Labels {
        &self.own_labels
    }

    /// Its workload key and document; `None` for a host endpoint.
    pub fn workload(&self) -> Option<(&Arc<WorkloadEndpointKey>, &StoredWorkload)> {
        match &self.kind {
            Kind::Workload { key, doc } => Some((key, doc)),
            Kind::Host { .. } => None,
        }
    }

    /// True for a host endpoint.
    pub fn is_host(&self) -> bool {
        matches!(self.kind, Kind::Host { .. })
    }

    /// The addresses it contributes to sets (a host endpoint's expected
    /// addresses as /32 and /128), sorted and without repeats, into `v`.
    fn addrs_into(&self, v: &mut Vec<IpNet>) {
        v.clear();
        match &self.kind {
            Kind::Workload { doc, .. } => {
                v.extend(doc.ipv4_nets.iter().map(|&n| IpNet::V4(n)));
                v.extend(doc.ipv6_nets.iter().map(|&n| IpNet::V6(n)));
            }
            Kind::Host { doc, .. } => {
                let expected = doc.expected_ipv4_addrs.iter();
                v.extend(
                    expected
                        .chain(&doc.expected_ipv6_addrs)
                        .map(|&a| IpNet::from(a)),
                );
            }
        }
        v.sort_unstable();
        v.dedup();
    }
}

/// All endpoints, with the lookups updates need.
#[derive(Default)]
pub(super) struct Endpoints {
    pub slab: Slab<EpIdx, Endpoint>,
    /// Workload endpoints by key.
    pub index: FastMap<Arc<WorkloadEndpointKey>, EpIdx>,
    /// Workload endpoints of this host, active or not.
    pub locals: BTreeMap<WorkloadEndpointKey, EpIdx>,
    /// Workload endpoints of other hosts, by host.
    pub by_host: FastMap<String, HandleSet<EpIdx>>,
    /// Host endpoints (of every host) by key.
    pub host_index: FastMap<Arc<HostEndpointKey>, EpIdx>,
    /// Host endpoints of this host, by id.
    pub host_locals: BTreeMap<Id, EpIdx>,
}

impl CalcEngine {
    /// A workload endpoint document was written.
    pub(super) fn upsert_endpoint(&mut self, key: WorkloadEndpointKey, doc: WorkloadEndpoint) {
        match self.eps.index.get(&key).copied() {
            Some(e) => self.update_endpoint(e, doc),
            None => self.create_endpoint(key, doc),
        }
    }

    fn create_endpoint(&mut self, key: WorkloadEndpointKey, mut doc: WorkloadEndpoint) {
        let local = key.host == self.hostname;
        let key = Arc::new(key);
        let shared = self.shared.take(&mut doc.profile_ids, &mut doc.labels);
        let kind = Kind::Workload {
            key: Arc::clone(&key),
            doc: StoredWorkload::of(doc),
        };
        let e = self.insert_endpoint(kind, local, shared);
        if local {
            self.eps.locals.insert((*key).clone(), e);
        } else if let Some(eps) = self.eps.by_host.get_mut(&key.host) {
            eps.insert(e);
        } else {
            let mut eps = HandleSet::default();
            eps.insert(e);
            self.eps.by_host.insert(key.host.clone(), eps);
        }
        self.eps.index.insert(key, e);
        self.refresh_endpoint(e, Refresh::Membership);
    }

    /// Stores a new endpoint of either kind in the slab, its label class and
    /// the index of the profiles it lists (the kind's own indexes are the
    /// caller's).
    pub(super) fn insert_endpoint(
        &mut self,
        kind: Kind,
        local: bool,
        (profiles, labels): (Arc<[Id]>, Arc<Labels>),
    ) -> EpIdx {
        let class = self.class_of(&profiles, &labels);
        let record = Endpoint::new(kind, local, class, Arc::clone(&profiles), labels);
        let e = self.eps.slab.insert(record);
        self.classes.slab[class].endpoints.insert(e);
        self.index_profiles(e, &[], &profiles);
        e
    }

    /// Lets go of one endpoint's shared profile list and labels, forgetting
    /// the class memo when either is freed.
    fn release_shared(&mut self, profiles: Arc<[Id]>, labels: Arc<Labels>) {
        if self.shared.release(profiles, labels) {
            self.classes.forget_memo();
        }
    }

    /// Drops endpoint `e`'s record (the last step of deleting it).
    pub(super) fn remove_endpoint_record(&mut self, e: EpIdx) {
        if let Some(ep) = self.eps.slab.remove(e) {
            self.release_shared(ep.profiles, ep.own_labels);
        }
    }

    /// Gives `e` the profile list and labels taken out of its new document,
    /// returning the old ones (to release once reindexed), or `None` when
    /// both are the same as before (the new ones are then released).
    pub(super) fn swap_shared_parts(
        &mut self,
        e: EpIdx,
        profiles: Arc<[Id]>,
        labels: Arc<Labels>,
    ) -> Option<(Arc<[Id]>, Arc<Labels>)> {
        let ep = &mut self.eps.slab[e];
        if Arc::ptr_eq(&ep.profiles, &profiles) && Arc::ptr_eq(&ep.own_labels, &labels) {
            self.release_shared(profiles, labels);
            return None;
        }
        let old_profiles = std::mem::replace(&mut ep.profiles, profiles);
        let old_labels = std::mem::replace(&mut ep.own_labels, labels);
        Some((old_profiles, old_labels))
    }

    /// Takes endpoint `e` out of every set, the profile index and its label
    /// class (the first step of deleting it, whatever its kind).
    pub(super) fn unhook_endpoint(&mut self, e: EpIdx) {
        self.apply_membership(e, Vec::new(), Vec::new());
        let empty = self.shared.profiles.empty();
        let (profiles, class) = {
            let ep = &mut self.eps.slab[e];
            (std::mem::replace(&mut ep.profiles, empty), ep.class)
        };
        self.index_profiles(e, &profiles, &[]);
        let no_labels = self.shared.labels.empty();
        self.release_shared(profiles, no_labels);
        self.leave_class(e, class);
    }

    fn update_endpoint(&mut self, e: EpIdx, mut doc: WorkloadEndpoint) {
        if !self.eps.slab[e].is_host() {
            let (profiles, labels) = self.shared.take(&mut doc.profile_ids, &mut doc.labels);
            let old_parts = self.swap_shared_parts(e, profiles, labels);
            let Kind::Workload { doc: current, .. } = &mut self.eps.slab[e].kind else {
                return;
            };
            let doc = StoredWorkload::of(doc);
            if old_parts.is_none() && *current == doc {
                return;
            }
            *current = doc;
            self.refresh_reindexed(e, old_parts);
        }
    }

    /// After a new document of `e`: reindexes its profiles when they
    /// changed (`old_parts` are the profile list and labels it had, if
    /// either changed) and refreshes what depends on it.
    pub(super) fn refresh_reindexed(
        &mut self,
        e: EpIdx,
        old_parts: Option<(Arc<[Id]>, Arc<Labels>)>,
    ) {
        let what = match old_parts {
            Some((old_profiles, old_labels)) => {
                let what = self.reindex_profiles(e, &old_profiles, &old_labels);
                self.release_shared(old_profiles, old_labels);
                what
            }
            None => Refresh::Addresses,
        };
        self.refresh_endpoint(e, what);
    }

    /// `e` just got a new document in place of one listing `old_profiles`
    /// with `old_labels`: moves it in the profile index and says what to refresh.
    pub(super) fn reindex_profiles(
        &mut self,
        e: EpIdx,
        old_profiles: &[Id],
        old_labels: &Labels,
    ) -> Refresh {
        let ep = &mut self.eps.slab[e];
        let profiles_changed = old_profiles != ep.profile_ids();
        let what = if profiles_changed || old_labels != ep.labels() {
            Refresh::Labels
        } else {
            Refresh::Addresses
        };
        if profiles_changed {
            let ids = Arc::clone(&ep.profiles);
            self.index_profiles(e, old_profiles, &ids);
        }
        what
    }

    /// Brings everything derived from endpoint `e` up to date.
    pub(super) fn refresh_endpoint(&mut self, e: EpIdx, what: Refresh) {
        let relabelled = what == Refresh::Labels && self.reclassify(e);
        if what == Refresh::Addresses {
            self.sync_addresses(e);
        } else {
            self.sync_membership(e);
        }
        let ep = &self.eps.slab[e];
        match (ep.is_host(), ep.local) {
            (true, true) => self.sync_host_entry(e, relabelled),
            (true, false) => {}
            (false, true) => self.sync_local_claim(e, relabelled),
            (false, false) => self.sync_route(e),
        }
    }

    /// A workload endpoint was deleted (or its document became invalid).
    pub(super) fn delete_endpoint(&mut self, key: &WorkloadEndpointKey) {
        let Some(e) = self.eps.index.remove(key) else {
            return;
        };
        // Unhook it from the indexes before anything else can run: tearing
        // down its plumbing may activate sets for other endpoints, and those
        // must not find this one.
        self.unhook_endpoint(e);
        if self.eps.slab[e].local {
            self.retarget_claim(e, None, false);
            self.eps.locals.remove(key);
        } else {
            self.apply_route(e, None);
            if let Some(eps) = self.eps.by_host.get_mut(&key.host) {
                eps.remove(&e);
                if eps.is_empty() {
                    self.eps.by_host.remove(&key.host);
                }
            }
        }
        self.remove_endpoint_record(e);
    }

    /// Recomputes which active sets `e` belongs to, and with which addresses.
    pub(super) fn sync_membership(&mut self, e: EpIdx) {
        let mut addrs = std::mem::take(&mut self.scratch.addrs);
        let mut sets = std::mem::take(&mut self.scratch.sets);
        self.eps.slab[e].addrs_into(&mut addrs);
        self.desired_sets(e, &mut sets);
        let (addrs, sets) = self.apply_membership(e, addrs, sets);
        self.scratch.addrs = addrs;
        self.scratch.sets = sets;
    }

    /// Brings the addresses `e` contributes up to date, its sets being unchanged.
    fn sync_addresses(&mut self, e: EpIdx) {
        let mut addrs = std::mem::take(&mut self.scratch.addrs);
        let mut sets = std::mem::take(&mut self.scratch.sets);
        let ep = &self.eps.slab[e];
        ep.addrs_into(&mut addrs);
        sets.clear();
        sets.extend_from_slice(&ep.member_of);
        let (addrs, sets) = self.apply_membership(e, addrs, sets);
        self.scratch.addrs = addrs;
        self.scratch.sets = sets;
    }

    /// Active sets `e` should be in: the selector sets its class matches and
    /// the tag sets of its profiles' tags.
    fn desired_sets(&self, e: EpIdx, sets: &mut Vec<SetIdx>) {
        let ep = &self.eps.slab[e];
        sets.clear();
        sets.extend_from_slice(&self.classes.slab[ep.class].sel_matches);
        if self.sets.by_tag.is_empty() {
            return;
        }
        let before = sets.len();
        for p in ep.profile_ids() {
            let Some(tags) = self.profiles.map.get(p).and_then(|p| p.tags.as_ref()) else {
                continue;
            };
            sets.extend(tags.iter().filter_map(|t| self.sets.by_tag.get(t).copied()));
        }
        if sets.len() != before {
            sets.sort_unstable();
            sets.dedup();
        }
    }

    /// Moves `e` from its current membership to `sets` with `addrs`,
    /// touching only the set members that differ. Returns the vectors no
    /// longer needed (for reuse).
    pub(super) fn apply_membership(
        &mut self,
        e: EpIdx,
        addrs: Vec<IpNet>,
        sets: Vec<SetIdx>,
    ) -> (Vec<IpNet>, Vec<SetIdx>) {
        let ep = &mut self.eps.slab[e];
        if ep.addrs == addrs && ep.member_of == sets {
            return (addrs, sets);
        }
        let old_addrs = std::mem::replace(&mut ep.addrs, addrs);
        let old_sets = std::mem::replace(&mut ep.member_of, sets);
        // The buffers come from the scratch space, sized for the largest
        // endpoint seen; a record keeps only what it holds.
        ep.addrs.shrink_to_fit();
        ep.member_of.shrink_to_fit();
        let ep = &self.eps.slab[e];
        let addrs_changed = old_addrs != ep.addrs;
        for &s in &old_sets {
            if ep.member_of.binary_search(&s).is_ok() {
                if addrs_changed {
                    for net in old_addrs
                        .iter()
                        .filter(|n| ep.addrs.binary_search(n).is_err())
                    {
                        self.sets.remove_addr(&mut self.out, s, *net);
                    }
                    for net in ep
                        .addrs
                        .iter()
                        .filter(|n| old_addrs.binary_search(n).is_err())
                    {
                        self.sets.add_addr(&mut self.out, s, *net);
                    }
                }
            } else {
                for &net in &old_addrs {
                    self.sets.remove_addr(&mut self.out, s, net);
                }
                self.sets.slab[s].endpoints.remove(&e);
            }
        }
        for &s in &ep.member_of {
            if old_sets.binary_search(&s).is_err() {
                for &net in &ep.addrs {
                    self.sets.add_addr(&mut self.out, s, net);
                }
                self.sets.slab[s].endpoints.insert(e);
            }
        }
        (old_addrs, old_sets)
    }
}

/// What may have changed about an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refresh {
    /// Not its profiles nor its labels: its sets stay, its addresses,
    /// state or interface may differ.
    Addresses,
    /// Its sets may differ, its effective labels do not (a new endpoint).
    Membership,
    /// Its effective labels may differ.
    Labels,
}

/// Reusable buffers for the per-update hot path.
#[derive(Default)]
pub(super) struct Scratch {
    addrs: Vec<IpNet>,
    sets: Vec<SetIdx>,
}
