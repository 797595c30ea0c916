//! This host's endpoints: which ones are plumbed, and their state entries.
//!
//! A local endpoint *claims* an interface when it is active and its
//! interface name carries an interface prefix. An interface claimed by
//! exactly one endpoint, none of whose addresses is contested, is plumbed
//! with that endpoint: its [`LocalEndpoint`] and its program.
//!
//! A *conflict* fails closed: when two endpoints claim one interface, or an
//! endpoint claims an address that an endpoint on another interface of this
//! host claims too, the interfaces involved get a drop-all program and no
//! [`LocalEndpoint`] (no static neighbour entries, nothing of either
//! claimant's policy), whichever endpoint came first. Which key is older
//! cannot matter (the state depends on the current documents only), so
//! neither claimant wins: the genuine workload loses its traffic until the
//! conflict is resolved, and a hijacking document gains nothing. Routes
//! follow the rules in `routes`: an address all local claims route to the
//! same interface keeps its route, a contested address gets none. The
//! conflict is reported by [`super::CalcEngine::conflicts`] and resolves as
//! soon as one of the keys goes away or stops claiming.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::hashing::FastMap;

use super::{CalcEngine, EpIdx};
use crate::desired::{
    DirectionProgram, EndpointProgram, LocalEndpoint, RuleSetId, WorkloadEndpointKey,
};
use crate::model::EndpointState;
use crate::names::{Id, InterfaceName};

/// What a plumbed endpoint keeps.
#[derive(Debug)]
pub(super) struct Published {
    /// The interface it owns.
    pub iface: InterfaceName,
    /// Policies whose selector matches it: (tier, policy).
    pub matched: BTreeSet<(Id, Id)>,
}

/// Interface claims and owners.
#[derive(Default)]
pub(super) struct Ifaces {
    /// Interface → endpoints claiming it (more than one: a conflict).
    pub claims: FastMap<InterfaceName, BTreeMap<Arc<WorkloadEndpointKey>, EpIdx>>,
    /// Interface → endpoint currently plumbed on it.
    pub publisher: FastMap<InterfaceName, EpIdx>,
}

/// What an interface carries.
enum Plan {
    /// Nobody claims it: no entries.
    Unclaimed,
    /// One endpoint claims it, without conflict: plumbed with it.
    Plumb(EpIdx),
    /// A conflict: a drop-all program, no endpoint.
    DropAll,
}

/// The program of a contested interface: both directions drop everything.
fn drop_all() -> EndpointProgram {
    let closed = DirectionProgram {
        tiers: Vec::new(),
        profiles: Vec::new(),
        fail_closed: true,
    };
    EndpointProgram {
        inbound: closed.clone(),
        outbound: closed,
    }
}

/// Rule sets a program lists, once per mention.
pub(super) fn program_refs(p: &EndpointProgram) -> Vec<RuleSetId> {
    [&p.inbound, &p.outbound]
        .into_iter()
        .flat_map(|d| {
            d.tiers
                .iter()
                .flat_map(|t| t.policies.iter())
                .chain(d.profiles.iter())
        })
        .cloned()
        .collect()
}

impl CalcEngine {
    /// The interface `e` may claim: active, with an interface prefix.
    fn wanted_claim(&self, e: EpIdx) -> Option<InterfaceName> {
        let (_, doc) = self.eps.slab[e].workload()?;
        (doc.state == EndpointState::Active && doc.name.has_prefix(&self.prefixes))
            .then(|| doc.name.clone())
    }

    /// Re-evaluates the interface claim of local endpoint `e` and its plumbing.
    pub(super) fn sync_local_claim(&mut self, e: EpIdx, relabelled: bool) {
        let want = self.wanted_claim(e);
        self.retarget_claim(e, want, relabelled);
    }

    /// Moves the claim of `e` to `want`, re-registers its route claim, then
    /// re-plumbs every interface whose plan may have changed: the old and
    /// new one, and those of the local endpoints sharing an address with `e`.
    pub(super) fn retarget_claim(
        &mut self,
        e: EpIdx,
        want: Option<InterfaceName>,
        relabelled: bool,
    ) {
        let old = self.eps.slab[e].claim.clone();
        if old != want {
            // Only workload endpoints claim interfaces.
            let Some((key, _)) = self.eps.slab[e].workload() else {
                return;
            };
            let key = Arc::clone(key);
            if let Some(o) = &old {
                if let Some(claims) = self.ifaces.claims.get_mut(o) {
                    claims.remove(&key);
                    if claims.is_empty() {
                        self.ifaces.claims.remove(o);
                    }
                }
            }
            if let Some(n) = &want {
                self.ifaces
                    .claims
                    .entry(n.clone())
                    .or_default()
                    .insert(key, e);
            }
            self.eps.slab[e].claim = want.clone();
        }
        let before = self.route_nets(e);
        self.sync_route(e);
        // The new interface first: when `e` moves, its rule sets are
        // acquired there before the old interface releases them.
        let mut ifaces: Vec<InterfaceName> = want.into_iter().chain(old).collect();
        for net in before.iter().chain(&self.route_nets(e)) {
            self.neighbours_on(net, &mut ifaces);
        }
        let mut seen = BTreeSet::new();
        ifaces.retain(|i| seen.insert(i.clone()));
        for iface in ifaces {
            self.sync_iface(&iface, relabelled.then_some(e));
        }
    }

    /// The addresses `e` currently claims routes for.
    fn route_nets(&self, e: EpIdx) -> Vec<ipnet::IpNet> {
        self.eps.slab[e]
            .route
            .as_ref()
            .map_or_else(Vec::new, |r| r.nets.clone())
    }

    /// Adds the interfaces of the local endpoints claiming `net` to `out`.
    fn neighbours_on(&self, net: &ipnet::IpNet, out: &mut Vec<InterfaceName>) {
        let Some(claims) = self.routes.by_net.get(net) else {
            return;
        };
        for &c in claims.as_slice() {
            let ep = &self.eps.slab[c];
            if let (true, Some(i)) = (ep.local, &ep.claim) {
                out.push(i.clone());
            }
        }
    }

    /// What `iface` should carry now.
    fn iface_plan(&self, iface: &InterfaceName) -> Plan {
        let Some(claims) = self.ifaces.claims.get(iface) else {
            return Plan::Unclaimed;
        };
        let mut it = claims.values();
        match (it.next(), it.next()) {
            (Some(&e), None) if !self.address_contested(e) => Plan::Plumb(e),
            (Some(_), _) => Plan::DropAll,
            (None, _) => Plan::Unclaimed,
        }
    }

    /// True when one of `e`'s addresses is claimed on another interface too.
    fn address_contested(&self, e: EpIdx) -> bool {
        self.eps.slab[e]
            .route
            .as_ref()
            .is_some_and(|r| r.nets.iter().any(|n| self.conflicts.has_address(n)))
    }

    /// Brings the entries of `iface` in line with its plan; `relabelled` is
    /// an endpoint whose policy matches must be recomputed if plumbed here.
    fn sync_iface(&mut self, iface: &InterfaceName, relabelled: Option<EpIdx>) {
        let contesting = self
            .ifaces
            .claims
            .get(iface)
            .filter(|c| c.len() > 1)
            .map(|c| c.keys().map(|k| (**k).clone()).collect());
        self.conflicts.set_interface(iface, contesting);
        match self.iface_plan(iface) {
            Plan::Plumb(e) => {
                if self.ifaces.publisher.get(iface).is_some_and(|&p| p != e) {
                    self.drop_publisher(iface);
                }
                let have = self.eps.slab[e].publ.as_ref().map(|p| p.iface.clone());
                let fresh = have.as_ref() != Some(iface);
                self.publish(e, iface.clone(), fresh || relabelled == Some(e));
            }
            Plan::DropAll => {
                // Overwritten, not cleared, so shared rule sets are released once.
                self.drop_publisher(iface);
                self.out.set_endpoint(iface, None);
                self.write_program(iface, Some(drop_all()));
            }
            Plan::Unclaimed => {
                self.drop_publisher(iface);
                self.out.set_endpoint(iface, None);
                self.write_program(iface, None);
            }
        }
    }

    /// Forgets who is plumbed on `iface` (its entries stay for the caller to
    /// overwrite or clear). An endpoint that has moved on keeps its new place.
    fn drop_publisher(&mut self, iface: &InterfaceName) {
        let Some(p) = self.ifaces.publisher.remove(iface) else {
            return;
        };
        let publ = &mut self.eps.slab[p].publ;
        if publ.as_ref().is_some_and(|x| x.iface == *iface) {
            *publ = None;
        }
    }

    fn publish(&mut self, e: EpIdx, iface: InterfaceName, rematch: bool) {
        if rematch || self.eps.slab[e].publ.is_none() {
            let labels = &self.classes.slab[self.eps.slab[e].class].labels;
            let matched = self.match_policies(labels);
            self.eps.slab[e].publ = Some(Box::new(Published {
                iface: iface.clone(),
                matched,
            }));
        }
        // Only workload endpoints are plumbed.
        let Some((key, doc)) = self.eps.slab[e].workload() else {
            return;
        };
        let value = LocalEndpoint {
            key: (**key).clone(),
            iface: iface.clone(),
            mac: doc.mac,
            ipv4: doc.ipv4_nets.to_vec(),
            ipv6: doc.ipv6_nets.to_vec(),
        };
        self.out.set_endpoint(&iface, Some(value));
        self.ifaces.publisher.insert(iface, e);
        self.rebuild_program(e);
    }

    /// Recomputes the program of plumbed endpoint `e`.
    pub(super) fn rebuild_program(&mut self, e: EpIdx) {
        let Some(iface) = self.eps.slab[e].publ.as_ref().map(|p| p.iface.clone()) else {
            return;
        };
        let program = self.build_program(e);
        self.write_program(&iface, Some(program));
    }

    /// Stores a program, moving rule-set references from the old one to the new.
    fn write_program(&mut self, iface: &InterfaceName, program: Option<EndpointProgram>) {
        if self.out.state.programs.get(iface) == program.as_ref() {
            return;
        }
        // Acquire before releasing, so rule sets in both stay put.
        if let Some(p) = &program {
            for id in program_refs(p) {
                self.acquire_rule_set(&id);
            }
        }
        if let Some(old) = self.out.replace_program(iface, program) {
            for id in program_refs(&old) {
                self.release_rule_set(&id);
            }
        }
    }

    /// Plumbed endpoints, as handles.
    pub(super) fn plumbed(&self) -> Vec<EpIdx> {
        self.ifaces.publisher.values().copied().collect()
    }

    /// Interface prefixes changed: re-evaluate every local endpoint.
    pub(super) fn reclaim_all(&mut self) {
        let locals: Vec<EpIdx> = self.eps.locals.values().copied().collect();
        for e in locals {
            self.sync_local_claim(e, false);
        }
    }
}
