//! The pure firewall diff: desired [`Ruleset`] against [`ObservedRuleset`].
//!
//! [`diff`] yields the fewest [`FirewallOp`]s that make the observed state
//! equal the desired one, in an order every backend can commit in one
//! transaction:
//!
//! 1. create new sets, add members (new rules see full sets);
//! 2. replace changed chains, jump targets before the chains that jump to
//!    them (a backend that needs to declare chains first can still do so);
//! 3. attach hooks;
//! 4. delete chains no longer wanted (in no particular order among
//!    themselves: a backend flushes all of them before deleting any, since
//!    one may jump to another);
//! 5. delete sets no longer wanted, then remove members.
//!
//! No op detaches a hook: when the desired ruleset stops using a hook (the
//! output hook once no host endpoint is bound), the chain it calls is kept,
//! emptied, so the hook decides nothing.
//!
//! Chains compare by rule fingerprints, sets by members. With a scope
//! ([`DirtyNames`], from the incremental lowering) only the named objects
//! are compared, and for sets only the named members: the cost of a
//! one-endpoint change does not grow with the ruleset.
//!
//! [`apply_to`] plays ops onto an observed state; the manager uses it after
//! a successful write, and the property tests use it to check convergence.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use margay_policy::desired::IpVersion;

use super::model::{Action, AddressSet, GenericRule, Hook, ObjectName, ObservedRuleset, Ruleset};
use super::FirewallOp;

/// The kernel objects an incremental lowering touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirtyNames {
    /// Chains whose content (or existence) may have changed.
    pub chains: BTreeSet<ObjectName>,
    /// Sets to compare whole: existence, family and every member.
    pub sets: BTreeSet<ObjectName>,
    /// Per set, the only members whose presence may have changed.
    pub members: BTreeMap<ObjectName, BTreeSet<IpNet>>,
    /// Hook attachments may have changed.
    pub hooks: bool,
}

impl DirtyNames {
    /// True when nothing was touched.
    pub fn is_empty(&self) -> bool {
        self == &DirtyNames::default()
    }

    /// Folds `other` into `self`.
    pub fn merge(&mut self, other: DirtyNames) {
        self.chains.extend(other.chains);
        self.sets.extend(other.sets);
        for (set, m) in other.members {
            self.members.entry(set).or_default().extend(m);
        }
        self.hooks |= other.hooks;
    }
}

/// The observed state that exactly matches `desired` (what read-back shows
/// after a perfect write).
pub fn observed_of(desired: &Ruleset) -> ObservedRuleset {
    ObservedRuleset {
        chains: desired
            .chains
            .iter()
            .map(|(n, rules)| (n.clone(), fingerprints(rules)))
            .collect(),
        sets: desired.sets.clone(),
        hooks: desired.hooks.clone(),
    }
}

/// The fingerprints of a chain's rules, in order.
pub fn fingerprints(rules: &[GenericRule]) -> Vec<u64> {
    rules.iter().map(GenericRule::fingerprint).collect()
}

/// The ops that turn `observed` into `desired`; with `scope`, only the
/// named objects are compared.
pub fn diff(
    desired: &Ruleset,
    observed: &ObservedRuleset,
    scope: Option<&DirtyNames>,
) -> Vec<FirewallOp> {
    let mut plan = Plan::default();
    match scope {
        None => {
            let sets: BTreeSet<&ObjectName> =
                desired.sets.keys().chain(observed.sets.keys()).collect();
            for name in sets {
                plan.set_whole(name, desired.sets.get(name), observed.sets.get(name));
            }
            let chains: BTreeSet<&ObjectName> = desired
                .chains
                .keys()
                .chain(observed.chains.keys())
                .collect();
            for name in chains {
                plan.chain(name, desired, observed);
            }
            plan.hooks(desired, observed);
        }
        Some(d) => {
            for name in &d.sets {
                plan.set_whole(name, desired.sets.get(name), observed.sets.get(name));
            }
            for (name, members) in d.members.iter().filter(|(n, _)| !d.sets.contains(*n)) {
                plan.set_members(
                    name,
                    members,
                    desired.sets.get(name),
                    observed.sets.get(name),
                );
            }
            for name in &d.chains {
                plan.chain(name, desired, observed);
            }
            if d.hooks {
                plan.hooks(desired, observed);
            }
        }
    }
    plan.into_ops(desired)
}

/// Plays `ops` onto `observed`, as a backend that committed them would leave it.
pub fn apply_to(observed: &mut ObservedRuleset, ops: &[FirewallOp]) {
    for op in ops {
        match op {
            FirewallOp::CreateSet { name, family } => {
                let fresh = AddressSet {
                    family: *family,
                    members: BTreeSet::new(),
                };
                let set = observed.sets.entry(name.clone()).or_insert(fresh.clone());
                if set.family != *family {
                    *set = fresh;
                }
            }
            FirewallOp::DeleteSet { name } => {
                observed.sets.remove(name);
            }
            FirewallOp::AddMembers { set, members, .. } => {
                if let Some(s) = observed.sets.get_mut(set) {
                    s.members.extend(members.iter().copied());
                }
            }
            FirewallOp::RemoveMembers { set, members, .. } => {
                if let Some(s) = observed.sets.get_mut(set) {
                    for m in members {
                        s.members.remove(m);
                    }
                }
            }
            FirewallOp::ReplaceChain { name, rules } => {
                observed.chains.insert(name.clone(), fingerprints(rules));
            }
            FirewallOp::DeleteChain { name } => {
                observed.chains.remove(name);
            }
            FirewallOp::AttachHook { hook, chain } => {
                observed.hooks.insert(*hook, chain.clone());
            }
        }
    }
}

/// True when a hook we attached calls `chain` but `desired` uses that hook
/// no more.
fn calls_unwanted_hook(chain: &ObjectName, desired: &Ruleset, observed: &ObservedRuleset) -> bool {
    observed
        .hooks
        .iter()
        .any(|(hook, c)| c == chain && !desired.hooks.contains_key(hook))
}

/// The chains a rule list jumps or goes to.
pub fn targets(rules: &[GenericRule]) -> impl Iterator<Item = &ObjectName> {
    rules.iter().filter_map(|r| match &r.action {
        Action::Jump(t) | Action::Goto(t) => Some(t),
        _ => None,
    })
}

/// The ops of a diff, by phase.
#[derive(Default)]
struct Plan {
    create_sets: Vec<(ObjectName, IpVersion)>,
    add_members: Vec<(ObjectName, IpVersion, BTreeSet<IpNet>)>,
    replace_chains: BTreeSet<ObjectName>,
    attach: Vec<(Hook, ObjectName)>,
    delete_chains: Vec<ObjectName>,
    delete_sets: Vec<ObjectName>,
    /// Sets of the wrong family: deleted, then created anew, at the end.
    recreate_sets: Vec<(ObjectName, IpVersion, BTreeSet<IpNet>)>,
    remove_members: Vec<(ObjectName, IpVersion, BTreeSet<IpNet>)>,
}

impl Plan {
    fn set_whole(&mut self, name: &ObjectName, d: Option<&AddressSet>, o: Option<&AddressSet>) {
        match (d, o) {
            (Some(d), None) => {
                self.create_sets.push((name.clone(), d.family));
                if !d.members.is_empty() {
                    self.add_members
                        .push((name.clone(), d.family, d.members.clone()));
                }
            }
            (None, Some(_)) => self.delete_sets.push(name.clone()),
            (Some(d), Some(o)) if d.family != o.family => {
                self.recreate_sets
                    .push((name.clone(), d.family, d.members.clone()));
            }
            (Some(d), Some(o)) => {
                let add: BTreeSet<IpNet> = d.members.difference(&o.members).copied().collect();
                let remove: BTreeSet<IpNet> = o.members.difference(&d.members).copied().collect();
                self.members(name, d.family, add, remove);
            }
            (None, None) => {}
        }
    }

    fn set_members(
        &mut self,
        name: &ObjectName,
        candidates: &BTreeSet<IpNet>,
        d: Option<&AddressSet>,
        o: Option<&AddressSet>,
    ) {
        let (Some(d), Some(o)) = (d, o) else {
            // Existence differs: only a whole comparison is right.
            return self.set_whole(name, d, o);
        };
        if d.family != o.family {
            return self.set_whole(name, Some(d), Some(o));
        }
        let mut add = BTreeSet::new();
        let mut remove = BTreeSet::new();
        for m in candidates {
            match (d.members.contains(m), o.members.contains(m)) {
                (true, false) => {
                    add.insert(*m);
                }
                (false, true) => {
                    remove.insert(*m);
                }
                _ => {}
            }
        }
        self.members(name, d.family, add, remove);
    }

    fn members(
        &mut self,
        name: &ObjectName,
        family: IpVersion,
        add: BTreeSet<IpNet>,
        remove: BTreeSet<IpNet>,
    ) {
        if !add.is_empty() {
            self.add_members.push((name.clone(), family, add));
        }
        if !remove.is_empty() {
            self.remove_members.push((name.clone(), family, remove));
        }
    }

    fn chain(&mut self, name: &ObjectName, desired: &Ruleset, observed: &ObservedRuleset) {
        match (desired.chains.get(name), observed.chains.get(name)) {
            (Some(rules), Some(fps)) => {
                let same = rules.len() == fps.len()
                    && rules.iter().zip(fps).all(|(r, fp)| r.fingerprint() == *fp);
                if !same {
                    self.replace_chains.insert(name.clone());
                }
            }
            (Some(_), None) => {
                self.replace_chains.insert(name.clone());
            }
            (None, Some(fps)) if calls_unwanted_hook(name, desired, observed) => {
                // No op detaches a hook: a hook the ruleset no longer uses
                // (the output hook once no host endpoint is bound) keeps
                // its chain, emptied, so it decides nothing.
                if !fps.is_empty() {
                    self.replace_chains.insert(name.clone());
                }
            }
            (None, Some(_)) => self.delete_chains.push(name.clone()),
            (None, None) => {}
        }
    }

    fn hooks(&mut self, desired: &Ruleset, observed: &ObservedRuleset) {
        for (hook, chain) in &desired.hooks {
            if observed.hooks.get(hook) != Some(chain) {
                self.attach.push((*hook, chain.clone()));
            }
        }
    }

    fn into_ops(mut self, desired: &Ruleset) -> Vec<FirewallOp> {
        let mut ops = Vec::new();
        for (name, family) in std::mem::take(&mut self.create_sets) {
            ops.push(FirewallOp::CreateSet { name, family });
        }
        for (set, family, members) in self.take_overlapping_removals() {
            ops.push(FirewallOp::RemoveMembers {
                set,
                family,
                members,
            });
        }
        for (set, family, members) in self.add_members {
            ops.push(FirewallOp::AddMembers {
                set,
                family,
                members,
            });
        }
        for name in dependency_order(&self.replace_chains, desired) {
            let rules = desired.chains.get(&name).cloned().unwrap_or_default();
            ops.push(FirewallOp::ReplaceChain { name, rules });
        }
        for (hook, chain) in self.attach {
            ops.push(FirewallOp::AttachHook { hook, chain });
        }
        for name in self.delete_chains {
            ops.push(FirewallOp::DeleteChain { name });
        }
        for name in self.delete_sets {
            ops.push(FirewallOp::DeleteSet { name });
        }
        for (name, family, members) in self.recreate_sets {
            ops.push(FirewallOp::DeleteSet { name: name.clone() });
            ops.push(FirewallOp::CreateSet {
                name: name.clone(),
                family,
            });
            if !members.is_empty() {
                ops.push(FirewallOp::AddMembers {
                    set: name,
                    family,
                    members,
                });
            }
        }
        for (set, family, members) in self.remove_members {
            ops.push(FirewallOp::RemoveMembers {
                set,
                family,
                members,
            });
        }
        ops
    }
}

impl Plan {
    /// Takes out of the late removals the members that overlap a member
    /// being added to the same set (a /24 giving way to its /16, or the
    /// reverse). They go before the adds: an interval set refuses an
    /// element overlapping one still there, and within one transaction the
    /// set is never seen without the union either way.
    fn take_overlapping_removals(&mut self) -> Vec<(ObjectName, IpVersion, BTreeSet<IpNet>)> {
        let mut early = Vec::new();
        for (set, family, removed) in &mut self.remove_members {
            let Some((_, _, added)) = self.add_members.iter().find(|(s, _, _)| s == set) else {
                continue;
            };
            let overlapping: BTreeSet<IpNet> = removed
                .iter()
                .filter(|r| added.iter().any(|a| a.contains(*r) || r.contains(a)))
                .copied()
                .collect();
            if overlapping.is_empty() {
                continue;
            }
            removed.retain(|r| !overlapping.contains(r));
            early.push((set.clone(), *family, overlapping));
        }
        self.remove_members.retain(|(_, _, m)| !m.is_empty());
        early
    }
}

/// `names` ordered so that every chain comes after the chains (among
/// `names`) it jumps or goes to. Deterministic: ties by name.
fn dependency_order(names: &BTreeSet<ObjectName>, desired: &Ruleset) -> Vec<ObjectName> {
    let mut done: BTreeSet<&ObjectName> = BTreeSet::new();
    let mut visiting: BTreeSet<&ObjectName> = BTreeSet::new();
    let mut out = Vec::with_capacity(names.len());
    for root in names {
        // Iterative post-order DFS. Our chains form a DAG; `visiting` (the
        // current path) stops a cycle, which the kernel would reject anyway.
        let mut stack: Vec<(&ObjectName, bool)> = vec![(root, false)];
        while let Some((name, expanded)) = stack.pop() {
            if expanded {
                visiting.remove(name);
                if done.insert(name) {
                    out.push(name.clone());
                }
                continue;
            }
            if done.contains(name) || visiting.contains(name) {
                continue;
            }
            visiting.insert(name);
            stack.push((name, true));
            if let Some(rules) = desired.chains.get(name) {
                for t in targets(rules) {
                    if let Some(t) = names.get(t) {
                        if !done.contains(t) && !visiting.contains(t) {
                            stack.push((t, false));
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
