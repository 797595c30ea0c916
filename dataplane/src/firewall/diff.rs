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
mod tests {
    use super::*;
    use crate::firewall::model::{Action, Match};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const CHAINS: [&str; 6] = [
        "margay-c0",
        "margay-c1",
        "margay-c2",
        "margay-c3",
        "margay-c4",
        "margay-c5",
    ];
    const SETS: [&str; 4] = ["margay-s0", "margay-s1", "margay-s2", "margay-s3"];

    fn set_family(i: usize) -> IpVersion {
        if i.is_multiple_of(2) {
            IpVersion::V4
        } else {
            IpVersion::V6
        }
    }

    /// Member `i` of a set; 4 and 5 cover 0 and 1 (nested pools).
    fn member(i: usize, family: IpVersion) -> IpNet {
        let s = match (family, i) {
            (IpVersion::V4, 4 | 5) => format!("10.{}.0.0/16", i - 4),
            (IpVersion::V6, 4 | 5) => format!("fd0{}::/16", i - 4),
            (IpVersion::V4, _) => format!("10.{i}.0.0/24"),
            (IpVersion::V6, _) => format!("fd0{i}::/64"),
        };
        s.parse().expect("net")
    }

    /// A random ruleset: chains jump only to higher-numbered chains (a DAG),
    /// rules may use sets, and the forward hook calls chain 0 when present.
    fn ruleset() -> impl Strategy<Value = Ruleset> {
        let chain = proptest::collection::vec((0u8..5, 0usize..6, 0usize..4), 0..4);
        (
            proptest::collection::vec(proptest::option::of(chain), 6),
            proptest::collection::vec(
                proptest::option::of(proptest::collection::btree_set(0usize..6, 0..4)),
                4,
            ),
        )
            .prop_map(|(chains, sets)| {
                let mut rs = Ruleset::default();
                for (i, members) in sets.into_iter().enumerate() {
                    if let Some(m) = members {
                        let f = set_family(i);
                        rs.sets.insert(
                            ObjectName::fixed(SETS[i]),
                            AddressSet {
                                family: f,
                                members: crate::firewall::lower::normalize_members(
                                    m.into_iter()
                                        .map(|x| member(x, f))
                                        .collect::<Vec<_>>()
                                        .iter(),
                                ),
                            },
                        );
                    }
                }
                for (i, rules) in chains.iter().enumerate() {
                    let Some(rules) = rules else { continue };
                    let mut out = Vec::new();
                    for (kind, target, set) in rules {
                        let t = ObjectName::fixed(CHAINS[*target]);
                        let action = match kind {
                            0 => Action::Accept,
                            1 => Action::Drop,
                            2 if *target > i && chains[*target].is_some() => Action::Jump(t),
                            3 if *target > i && chains[*target].is_some() => Action::Goto(t),
                            _ => Action::Return,
                        };
                        let mut matches = vec![];
                        let s = ObjectName::fixed(SETS[*set]);
                        if rs.sets.contains_key(&s) {
                            matches.push(Match::Family(set_family(*set)));
                            matches.push(Match::SrcSet {
                                set: s,
                                negated: false,
                            });
                        }
                        out.push(GenericRule { matches, action });
                    }
                    rs.chains.insert(ObjectName::fixed(CHAINS[i]), out);
                }
                if rs.chains.contains_key(&ObjectName::fixed(CHAINS[0])) {
                    rs.hooks.insert(Hook::Forward, ObjectName::fixed(CHAINS[0]));
                }
                rs
            })
    }

    /// A strict model of a kernel: checks that every op is legal at its
    /// point in the batch (targets and sets exist; nothing deleted is still
    /// used), with deleted chains flushed first as backends do.
    #[derive(Clone, Default)]
    struct Strict {
        chains: BTreeMap<ObjectName, Vec<GenericRule>>,
        sets: BTreeMap<ObjectName, AddressSet>,
        hooks: BTreeMap<Hook, ObjectName>,
    }

    fn sets_of(rules: &[GenericRule]) -> impl Iterator<Item = &ObjectName> {
        rules
            .iter()
            .flat_map(|r| &r.matches)
            .filter_map(|m| match m {
                Match::SrcSet { set, .. } | Match::DstSet { set, .. } => Some(set),
                _ => None,
            })
    }

    impl Strict {
        fn of(rs: &Ruleset) -> Self {
            Strict {
                chains: rs.chains.clone(),
                sets: rs.sets.clone(),
                hooks: rs.hooks.clone(),
            }
        }

        fn apply(&mut self, ops: &[FirewallOp]) -> Result<(), String> {
            for op in ops {
                if let FirewallOp::DeleteChain { name } = op {
                    if let Some(c) = self.chains.get_mut(name) {
                        c.clear();
                    }
                }
            }
            for op in ops {
                self.op(op)?;
            }
            Ok(())
        }

        fn op(&mut self, op: &FirewallOp) -> Result<(), String> {
            match op {
                FirewallOp::CreateSet { name, family } => {
                    self.sets.insert(
                        name.clone(),
                        AddressSet {
                            family: *family,
                            members: BTreeSet::new(),
                        },
                    );
                }
                FirewallOp::DeleteSet { name } => {
                    if self.chains.values().any(|r| sets_of(r).any(|s| s == name)) {
                        return Err(format!("set {name} deleted while used"));
                    }
                    self.sets.remove(name).ok_or(format!("no set {name}"))?;
                }
                FirewallOp::AddMembers { set, members, .. } => {
                    let s = self.sets.get_mut(set).ok_or(format!("no set {set}"))?;
                    // Like an nftables interval set: no element may overlap
                    // one already there.
                    for m in members {
                        if let Some(o) = s.members.iter().find(|o| o.contains(m) || m.contains(*o))
                        {
                            return Err(format!("{m} overlaps {o} in {set}"));
                        }
                        s.members.insert(*m);
                    }
                }
                FirewallOp::RemoveMembers { set, members, .. } => {
                    let s = self.sets.get_mut(set).ok_or(format!("no set {set}"))?;
                    for m in members {
                        if !s.members.remove(m) {
                            return Err(format!("{m} not in {set}"));
                        }
                    }
                }
                FirewallOp::ReplaceChain { name, rules } => {
                    for t in targets(rules) {
                        if t != name && !self.chains.contains_key(t) {
                            return Err(format!("{name} jumps to missing {t}"));
                        }
                    }
                    for s in sets_of(rules) {
                        if !self.sets.contains_key(s) {
                            return Err(format!("{name} uses missing set {s}"));
                        }
                    }
                    self.chains.insert(name.clone(), rules.clone());
                }
                FirewallOp::DeleteChain { name } => {
                    if self.chains.values().any(|r| targets(r).any(|t| t == name)) {
                        return Err(format!("chain {name} deleted while jumped to"));
                    }
                    if self.hooks.values().any(|c| c == name) {
                        return Err(format!("chain {name} deleted while hooked"));
                    }
                    self.chains.remove(name).ok_or(format!("no chain {name}"))?;
                }
                FirewallOp::AttachHook { hook, chain } => {
                    if !self.chains.contains_key(chain) {
                        return Err(format!("hook to missing {chain}"));
                    }
                    self.hooks.insert(*hook, chain.clone());
                }
            }
            Ok(())
        }
    }

    fn all_names(a: &Ruleset, b: &Ruleset) -> DirtyNames {
        DirtyNames {
            chains: a.chains.keys().chain(b.chains.keys()).cloned().collect(),
            sets: a.sets.keys().chain(b.sets.keys()).cloned().collect(),
            members: BTreeMap::new(),
            hooks: true,
        }
    }

    proptest! {
        #[test]
        fn diff_converges_in_a_legal_order(a in ruleset(), b in ruleset()) {
            let mut observed = observed_of(&a);
            let ops = diff(&b, &observed, None);
            let mut strict = Strict::of(&a);
            // Hooks that b drops have no detach op: keep the test to pairs
            // where b hooks at least what a hooks.
            prop_assume!(a.hooks.keys().all(|h| b.hooks.contains_key(h)));
            strict.apply(&ops).map_err(TestCaseError::fail)?;
            apply_to(&mut observed, &ops);
            prop_assert_eq!(&observed, &observed_of(&b));
            prop_assert_eq!(strict.chains, b.chains.clone());
            prop_assert!(diff(&b, &observed, None).is_empty(), "second diff not empty");
        }

        #[test]
        fn scoped_diff_over_every_name_equals_full_diff(a in ruleset(), b in ruleset()) {
            let observed = observed_of(&a);
            let scope = all_names(&a, &b);
            prop_assert_eq!(diff(&b, &observed, Some(&scope)), diff(&b, &observed, None));
        }

        #[test]
        fn member_scoped_diff_only_touches_named_members(a in ruleset(), b in ruleset()) {
            // Same sets and chains as b, members of a: a member-scoped diff
            // naming every member fixes exactly the members.
            let mut start = b.clone();
            for (name, set) in start.sets.iter_mut() {
                if let Some(other) = a.sets.get(name).filter(|o| o.family == set.family) {
                    set.members = other.members.clone();
                }
            }
            let mut observed = observed_of(&start);
            let mut scope = DirtyNames::default();
            for (name, set) in &b.sets {
                let both: BTreeSet<IpNet> = set.members.iter().chain(&start.sets[name].members).copied().collect();
                scope.members.insert(name.clone(), both);
            }
            let ops = diff(&b, &observed, Some(&scope));
            let only_members = ops
                .iter()
                .all(|o| matches!(o, FirewallOp::AddMembers { .. } | FirewallOp::RemoveMembers { .. }));
            prop_assert!(only_members, "non-member ops: {:?}", ops);
            apply_to(&mut observed, &ops);
            prop_assert_eq!(observed, observed_of(&b));
        }

        #[test]
        fn removing_then_re_adding_converges(a in ruleset()) {
            let mut observed = observed_of(&a);
            let empty = Ruleset { hooks: a.hooks.clone(), ..Ruleset::default() };
            // Hooked chains cannot go (no detach op): remove the rest.
            let mut keep = empty.clone();
            for c in a.hooks.values() {
                keep.chains.insert(c.clone(), vec![]);
            }
            let ops = diff(&keep, &observed, None);
            apply_to(&mut observed, &ops);
            prop_assert_eq!(&observed, &observed_of(&keep));
            let ops = diff(&a, &observed, None);
            let mut strict = Strict::of(&keep);
            strict.apply(&ops).map_err(TestCaseError::fail)?;
            apply_to(&mut observed, &ops);
            prop_assert_eq!(&observed, &observed_of(&a));
            prop_assert!(diff(&a, &observed, None).is_empty());
        }
    }

    #[test]
    fn replaced_chains_come_after_their_targets() {
        let mut rs = Ruleset::default();
        let jump = |t: &'static str| GenericRule {
            matches: vec![],
            action: Action::Jump(ObjectName::fixed(t)),
        };
        rs.chains.insert(
            ObjectName::fixed("margay-a"),
            vec![jump("margay-b"), jump("margay-c")],
        );
        rs.chains
            .insert(ObjectName::fixed("margay-b"), vec![jump("margay-c")]);
        rs.chains.insert(ObjectName::fixed("margay-c"), vec![]);
        let ops = diff(&rs, &ObservedRuleset::default(), None);
        let order: Vec<&str> = ops
            .iter()
            .filter_map(|o| match o {
                FirewallOp::ReplaceChain { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(order, ["margay-c", "margay-b", "margay-a"]);
    }
}
