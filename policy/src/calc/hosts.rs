//! Host endpoints: the host's own interfaces, protected like workloads.
//!
//! Host endpoints of every host live in the endpoint slab next to the
//! workload endpoints (`endpoints::Kind::Host`), so their expected
//! addresses join tag and selector sets through the same label classes and
//! profile index, with no cost to workload updates. They never get routes,
//! never claim interfaces and never conflict.
//!
//! Each host endpoint of *this* host also has an entry in
//! [`crate::desired::DesiredState::host_endpoints`]: its name, expected
//! addresses and program. The program is built like a plumbed workload's
//! (the tiers of the policies selecting its labels, then its profiles,
//! failing closed without profiles or with a missing one) and holds
//! references on the rule sets it lists. Binding to interfaces is the
//! dataplane's business: the entry exists whether bound or not.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use super::endpoints::Kind;
use super::locals::program_refs;
use super::{CalcEngine, EpIdx};
use crate::desired::LocalHostEndpoint;
use crate::model::{HostEndpoint, HostEndpointKey};
use crate::names::Id;

impl CalcEngine {
    /// A host endpoint document was written.
    pub(super) fn upsert_host_endpoint(&mut self, key: HostEndpointKey, doc: HostEndpoint) {
        match self.eps.host_index.get(&key).copied() {
            Some(e) => self.update_host_endpoint(e, doc),
            None => self.create_host_endpoint(key, doc),
        }
    }

    fn create_host_endpoint(&mut self, key: HostEndpointKey, mut doc: HostEndpoint) {
        let local = key.host == self.hostname;
        let key = Arc::new(key);
        let shared = self.shared.take(&mut doc.profile_ids, &mut doc.labels);
        let kind = Kind::Host {
            key: Arc::clone(&key),
            doc: Box::new(doc),
            matched: BTreeSet::new(),
        };
        let e = self.insert_endpoint(kind, local, shared);
        if local {
            self.eps.host_locals.insert(key.endpoint.clone(), e);
        }
        self.eps.host_index.insert(key, e);
        self.sync_membership(e);
        self.sync_host_entry(e, true);
    }

    fn update_host_endpoint(&mut self, e: EpIdx, mut doc: HostEndpoint) {
        if self.eps.slab[e].is_host() {
            let (profiles, labels) = self.shared.take(&mut doc.profile_ids, &mut doc.labels);
            let old_parts = self.swap_shared_parts(e, profiles, labels);
            let Kind::Host { doc: current, .. } = &mut self.eps.slab[e].kind else {
                return;
            };
            if old_parts.is_none() && **current == doc {
                return;
            }
            **current = doc;
            self.refresh_reindexed(e, old_parts);
        }
    }

    /// A host endpoint was deleted (or its document became invalid).
    pub(super) fn delete_host_endpoint(&mut self, key: &HostEndpointKey) {
        let Some(e) = self.eps.host_index.remove(key) else {
            return;
        };
        self.unhook_endpoint(e);
        if self.eps.slab[e].local {
            self.eps.host_locals.remove(&key.endpoint);
            self.write_host_endpoint(&key.endpoint, None);
        }
        self.remove_endpoint_record(e);
    }

    /// Brings the state entry of this host's host endpoint `e` up to date;
    /// `rematch` re-evaluates the policy selectors against its labels first
    /// (it is new, or its labels changed).
    pub(super) fn sync_host_entry(&mut self, e: EpIdx, rematch: bool) {
        if rematch {
            let labels = &self.classes.slab[self.eps.slab[e].class].labels;
            let now = self.match_policies(labels);
            if let Some(matched) = self.host_matched_mut(e) {
                *matched = now;
            }
        }
        let ep = &self.eps.slab[e];
        let Kind::Host { key, doc, matched } = &ep.kind else {
            return;
        };
        if !ep.local {
            return;
        }
        let mut expected_addrs: Vec<IpAddr> = doc
            .expected_ipv4_addrs
            .iter()
            .chain(&doc.expected_ipv6_addrs)
            .copied()
            .collect();
        // IPv4 sorts before IPv6.
        expected_addrs.sort_unstable();
        expected_addrs.dedup();
        let entry = LocalHostEndpoint {
            id: key.endpoint.clone(),
            name: doc.name.clone(),
            expected_addrs,
            program: self.program_for(matched, self.eps.slab[e].profile_ids()),
        };
        let id = key.endpoint.clone();
        self.write_host_endpoint(&id, Some(entry));
    }

    /// Stores (or removes) a host endpoint entry, moving rule-set references
    /// from the old program to the new one.
    fn write_host_endpoint(&mut self, id: &Id, entry: Option<LocalHostEndpoint>) {
        if self.out.state.host_endpoints.get(id) == entry.as_ref() {
            return;
        }
        // Acquire before releasing, so rule sets in both stay put.
        if let Some(new) = &entry {
            for rs in program_refs(&new.program) {
                self.acquire_rule_set(&rs);
            }
        }
        if let Some(old) = self.out.replace_host_endpoint(id, entry) {
            for rs in program_refs(&old.program) {
                self.release_rule_set(&rs);
            }
        }
    }

    /// This host's host endpoints, as handles.
    pub(super) fn local_hosts(&self) -> Vec<EpIdx> {
        self.eps.host_locals.values().copied().collect()
    }

    /// This host's host endpoints listing profile `p`.
    pub(super) fn local_host_users(&self, p: &Id) -> Vec<EpIdx> {
        self.eps
            .host_locals
            .values()
            .copied()
            .filter(|&e| self.eps.slab[e].profile_ids().contains(p))
            .collect()
    }

    /// The policies matching host endpoint `e`; `None` for a workload.
    pub(super) fn host_matched(&self, e: EpIdx) -> Option<&BTreeSet<(Id, Id)>> {
        match &self.eps.slab[e].kind {
            Kind::Host { matched, .. } => Some(matched),
            Kind::Workload { .. } => None,
        }
    }

    /// The policies matching host endpoint `e`, to update.
    pub(super) fn host_matched_mut(&mut self, e: EpIdx) -> Option<&mut BTreeSet<(Id, Id)>> {
        match &mut self.eps.slab[e].kind {
            Kind::Host { matched, .. } => Some(matched),
            Kind::Workload { .. } => None,
        }
    }

    /// Problems of this host's host endpoint `e`, for logs.
    pub(super) fn host_endpoint_problems(&self, e: EpIdx, out: &mut Vec<String>) {
        let ep = &self.eps.slab[e];
        let Kind::Host { key, .. } = &ep.kind else {
            return;
        };
        let subject = format!("host endpoint {}", key.endpoint);
        self.profile_problems(&subject, ep.profile_ids(), " except failsafe ports", out);
    }
}
