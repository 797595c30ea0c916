//! This host's endpoints: which ones are plumbed, and their state entries.
//!
//! A local endpoint is plumbed when it is active, its interface name carries
//! an interface prefix, and it *owns* that interface: when two endpoints name
//! the same interface, the smaller key wins (deterministic whatever the
//! update order) and the other is reported as a problem. A plumbed endpoint
//! publishes its [`LocalEndpoint`], its program and its interface routes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::hashing::FastMap;

use super::{CalcEngine, EpIdx};
use crate::desired::{EndpointProgram, LocalEndpoint, RuleSetId, WorkloadEndpointKey};
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
    /// Interface → endpoints claiming it (the first key owns it).
    pub claims: FastMap<InterfaceName, BTreeMap<Arc<WorkloadEndpointKey>, EpIdx>>,
    /// Interface → endpoint currently plumbed on it.
    pub publisher: FastMap<InterfaceName, EpIdx>,
}

/// Rule sets a program lists, once per mention.
fn program_refs(p: &EndpointProgram) -> Vec<RuleSetId> {
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
        let doc = &self.eps.slab[e].doc;
        (doc.state == EndpointState::Active && doc.name.has_prefix(&self.prefixes))
            .then(|| doc.name.clone())
    }

    fn owner_of(&self, iface: &InterfaceName) -> Option<EpIdx> {
        self.ifaces
            .claims
            .get(iface)
            .and_then(|m| m.values().next().copied())
    }

    /// Re-evaluates the interface claim of local endpoint `e` and its plumbing.
    pub(super) fn sync_local_claim(&mut self, e: EpIdx, relabelled: bool) {
        let want = self.wanted_claim(e);
        self.retarget_claim(e, want, relabelled);
    }

    /// Moves the claim of `e` to `want`, then re-plumbs `e` and the owners of
    /// the interfaces involved.
    pub(super) fn retarget_claim(
        &mut self,
        e: EpIdx,
        want: Option<InterfaceName>,
        relabelled: bool,
    ) {
        let old = self.eps.slab[e].claim.clone();
        if old != want {
            let key = self.eps.slab[e].key.clone();
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
        self.sync_local(e, relabelled);
        if old != want {
            for iface in [old, want].into_iter().flatten() {
                match self.owner_of(&iface) {
                    Some(owner) if owner != e => self.sync_local(owner, false),
                    _ => {}
                }
            }
        }
    }

    /// Publishes, updates or withdraws the plumbing of local endpoint `e`.
    pub(super) fn sync_local(&mut self, e: EpIdx, relabelled: bool) {
        let ep = &self.eps.slab[e];
        let want = ep.claim.clone().filter(|i| self.owner_of(i) == Some(e));
        let have = ep.publ.as_ref().map(|p| p.iface.clone());
        let Some(iface) = want else {
            if have.is_some() {
                self.unpublish(e, true);
            }
            return;
        };
        // A displaced owner's entries are overwritten by ours just below, so
        // rule sets both programs use are never dropped and re-created.
        if let Some(&other) = self.ifaces.publisher.get(&iface) {
            if other != e {
                self.unpublish(other, false);
            }
        }
        let fresh = have.as_ref() != Some(&iface);
        self.publish(e, iface.clone(), fresh || relabelled);
        // Moved to another interface: clear the old one only now, for the same reason.
        if let Some(old) = have.filter(|h| *h != iface) {
            self.clear_iface(&old, e);
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
        let ep = &self.eps.slab[e];
        let value = LocalEndpoint {
            key: (*ep.key).clone(),
            iface: iface.clone(),
            mac: ep.doc.mac,
            ipv4: ep.doc.ipv4_nets.clone(),
            ipv6: ep.doc.ipv6_nets.clone(),
        };
        self.out.set_endpoint(&iface, Some(value));
        self.ifaces.publisher.insert(iface, e);
        self.rebuild_program(e);
        self.sync_route(e);
    }

    /// Withdraws `e`; with `clear`, also its entries on its interface
    /// (without, the caller overwrites them at once).
    fn unpublish(&mut self, e: EpIdx, clear: bool) {
        let Some(publ) = self.eps.slab[e].publ.take() else {
            return;
        };
        if clear {
            self.clear_iface(&publ.iface, e);
        } else if self.ifaces.publisher.get(&publ.iface) == Some(&e) {
            self.ifaces.publisher.remove(&publ.iface);
        }
        self.sync_route(e);
    }

    /// Removes the endpoint and program entries `e` had on `iface`.
    fn clear_iface(&mut self, iface: &InterfaceName, e: EpIdx) {
        self.out.set_endpoint(iface, None);
        self.write_program(iface, None);
        if self.ifaces.publisher.get(iface) == Some(&e) {
            self.ifaces.publisher.remove(iface);
        }
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
