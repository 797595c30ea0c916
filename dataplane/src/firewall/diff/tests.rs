//! Diff properties: applying the ops converges, scoped diffs agree with full ones, and ops come in an order the kernel accepts.

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
                    if let Some(o) = s.members.iter().find(|o| o.contains(m) || m.contains(*o)) {
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
            FirewallOp::DetachHook { hook, chain } => {
                if self.hooks.remove(hook).as_ref() != Some(chain) {
                    return Err(format!("detach of {hook:?} not calling {chain}"));
                }
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
        strict.apply(&ops).map_err(TestCaseError::fail)?;
        apply_to(&mut observed, &ops);
        prop_assert_eq!(&observed, &observed_of(&b));
        prop_assert_eq!(strict.chains, b.chains.clone());
        prop_assert_eq!(strict.hooks, b.hooks.clone());
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
        let empty = Ruleset::default();
        let ops = diff(&empty, &observed, None);
        Strict::of(&a).apply(&ops).map_err(TestCaseError::fail)?;
        apply_to(&mut observed, &ops);
        prop_assert_eq!(&observed, &ObservedRuleset::default());
        let ops = diff(&a, &observed, None);
        let mut strict = Strict::of(&empty);
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

/// The output hook's chain, hooked, no longer wanted: the hook is detached
/// before the chain is deleted, by a full diff and by a scoped one naming
/// only the chain.
#[test]
fn an_unused_hook_is_detached_before_its_chain_goes() {
    let output = ObjectName::fixed("margay-output");
    let mut hooked = Ruleset::default();
    hooked.chains.insert(output.clone(), vec![]);
    hooked
        .chains
        .insert(ObjectName::fixed("margay-input"), vec![]);
    hooked.hooks.insert(Hook::Output, output.clone());
    let mut unhooked = hooked.clone();
    unhooked.chains.remove(&output);
    unhooked.hooks.clear();
    let observed = observed_of(&hooked);
    let want = vec![
        FirewallOp::DetachHook {
            hook: Hook::Output,
            chain: output.clone(),
        },
        FirewallOp::DeleteChain {
            name: output.clone(),
        },
    ];
    assert_eq!(diff(&unhooked, &observed, None), want);
    let chain_only = DirtyNames {
        chains: [output.clone()].into(),
        ..DirtyNames::default()
    };
    assert_eq!(diff(&unhooked, &observed, Some(&chain_only)), want);
    let mut strict = Strict::of(&hooked);
    strict.apply(&want).expect("a legal order");
    assert!(strict.hooks.is_empty());
    // The hook alone unused (its chain kept): detached, chain untouched.
    let mut chain_kept = unhooked.clone();
    chain_kept.chains.insert(output.clone(), vec![]);
    assert_eq!(
        diff(&chain_kept, &observed, None),
        vec![FirewallOp::DetachHook {
            hook: Hook::Output,
            chain: output,
        }]
    );
}
