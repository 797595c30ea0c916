//! The engine's output: the desired state and the keys dirtied since the
//! dataplane last took them.
//!
//! Every write to [`DesiredState`] goes through here so that dirty tracking
//! cannot be forgotten, and a write that changes nothing marks nothing.

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::desired::{
    Changes, DesiredState, EndpointProgram, IpSetId, LocalEndpoint, LocalHostEndpoint, RouteTarget,
    RuleSet, RuleSetId,
};
use crate::names::{Id, InterfaceName};

/// Desired state plus dirty keys.
#[derive(Debug, Default)]
pub(super) struct Output {
    pub state: DesiredState,
    pub changes: Changes,
}

impl Output {
    /// Sets (or with `None` removes) the local endpoint plumbed on `iface`.
    pub fn set_endpoint(&mut self, iface: &InterfaceName, value: Option<LocalEndpoint>) {
        let changed = match value {
            Some(v) if self.state.endpoints.get(iface) == Some(&v) => false,
            Some(v) => {
                self.state.endpoints.insert(iface.clone(), v);
                true
            }
            None => self.state.endpoints.remove(iface).is_some(),
        };
        if changed {
            self.changes.endpoints.insert(iface.clone());
        }
    }

    /// Replaces the program of `iface`; returns the previous one. The caller
    /// has checked that it differs and handles rule-set reference counts.
    pub fn replace_program(
        &mut self,
        iface: &InterfaceName,
        value: Option<EndpointProgram>,
    ) -> Option<EndpointProgram> {
        self.changes.programs.insert(iface.clone());
        match value {
            Some(p) => self.state.programs.insert(iface.clone(), p),
            None => self.state.programs.remove(iface),
        }
    }

    /// Replaces (or with `None` removes) this host's host endpoint `id`;
    /// returns the previous entry. The caller has checked that it differs
    /// and handles the rule-set reference counts of the programs.
    pub fn replace_host_endpoint(
        &mut self,
        id: &Id,
        value: Option<LocalHostEndpoint>,
    ) -> Option<LocalHostEndpoint> {
        self.changes.host_endpoints.insert(id.clone());
        match value {
            Some(v) => self.state.host_endpoints.insert(id.clone(), v),
            None => self.state.host_endpoints.remove(id),
        }
    }

    /// Replaces a rule set; returns the previous one (reference counts are the caller's).
    pub fn replace_rule_set(&mut self, id: &RuleSetId, value: Option<RuleSet>) -> Option<RuleSet> {
        self.changes.rule_sets.insert(id.clone());
        match value {
            Some(rs) => self.state.rule_sets.insert(id.clone(), rs),
            None => self.state.rule_sets.remove(id),
        }
    }

    /// Sets (or removes) the route for `net`.
    pub fn set_route(&mut self, net: IpNet, target: Option<&RouteTarget>) {
        use std::collections::btree_map::Entry;
        let local = |t: &RouteTarget| matches!(t, RouteTarget::Interface(_));
        let (changed, touches_local) = match (self.state.routes.entry(net), target) {
            (Entry::Occupied(o), Some(t)) if o.get() == t => (false, false),
            (Entry::Occupied(mut o), Some(t)) => {
                let was_local = local(o.get());
                *o.get_mut() = t.clone();
                (true, was_local || local(t))
            }
            (Entry::Occupied(o), None) => (true, local(&o.remove())),
            (Entry::Vacant(v), Some(t)) => {
                v.insert(t.clone());
                (true, local(t))
            }
            (Entry::Vacant(_), None) => (false, false),
        };
        if changed {
            self.changes.routes.insert(net);
        }
        // Local workload routes are what BIRD exports.
        self.changes.bgp |= touches_local;
    }

    /// Creates an empty address set. Its members are not tracked one by one
    /// until the changes are taken: the dataplane reads the whole set.
    pub fn create_set(&mut self, id: IpSetId) {
        self.changes.ip_set_members.remove(&id);
        self.state.ip_sets.insert(id.clone(), BTreeSet::new());
        self.changes.ip_sets.insert(id);
    }

    /// Removes an address set.
    pub fn drop_set(&mut self, id: &IpSetId) {
        self.state.ip_sets.remove(id);
        self.changes.ip_set_members.remove(id);
        self.changes.ip_sets.insert(id.clone());
    }

    /// Adds (`present`) or removes a member of an existing set.
    pub fn set_member(&mut self, id: &IpSetId, net: IpNet, present: bool) {
        if let Some(set) = self.state.ip_sets.get_mut(id) {
            if present {
                set.insert(net);
            } else {
                set.remove(&net);
            }
        }
        if self.changes.ip_sets.contains(id) {
            return;
        }
        match self.changes.ip_set_members.get_mut(id) {
            Some(dirty) => {
                dirty.insert(net);
            }
            None => {
                self.changes
                    .ip_set_members
                    .insert(id.clone(), BTreeSet::from([net]));
            }
        }
    }
}
