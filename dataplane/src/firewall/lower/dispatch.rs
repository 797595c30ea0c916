//! Dispatch: from the top chains `margay-disp-fr` / `margay-disp-to`,
//! through a tree of chains split by interface-name characters, to each
//! workload's endpoint chain; every node ends in a drop.

use std::collections::{BTreeMap, BTreeSet};

use margay_policy::desired::Direction;
use margay_policy::names::InterfaceName;

use super::names::{endpoint_chain, CHAIN_DISPATCH_FROM, CHAIN_DISPATCH_TO};
use super::{rule, Lowerer};
use crate::firewall::diff::DirtyNames;
use crate::firewall::model::{Action, GenericRule, Match, ObjectName};

/// Most interfaces a dispatch tree node matches one by one.
pub const DISPATCH_LEAF: usize = 16;

impl Lowerer {
    /// The prefix group of an interface: the first configured prefix it has.
    pub(super) fn group_of(&self, iface: &InterfaceName) -> Option<usize> {
        self.prefixes
            .iter()
            .position(|p| iface.as_str().starts_with(p.as_str()))
    }

    /// Re-lowers the dispatch trees of `groups` and the top dispatch
    /// chains, marking only the chains whose rules changed.
    pub(super) fn relower_dispatch(&mut self, groups: &BTreeSet<usize>, dirty: &mut DirtyNames) {
        for &g in groups {
            let mut chains = BTreeMap::new();
            for direction in [Direction::Inbound, Direction::Outbound] {
                let names: Vec<&InterfaceName> = self.groups[g].iter().collect();
                if !names.is_empty() {
                    dispatch_node(direction, g, &names, &mut chains);
                }
            }
            for old in &self.group_chains[g] {
                if !chains.contains_key(old) {
                    self.ruleset.chains.remove(old);
                    dirty.chains.insert(old.clone());
                }
            }
            self.group_chains[g] = chains.keys().cloned().collect();
            for (name, rules) in chains {
                self.set_chain(name, rules, dirty);
            }
        }
        for (direction, top) in [
            (Direction::Inbound, CHAIN_DISPATCH_TO),
            (Direction::Outbound, CHAIN_DISPATCH_FROM),
        ] {
            let mut rules = Vec::with_capacity(self.prefixes.len() + 1);
            for (g, p) in self.prefixes.iter().enumerate() {
                let names: Vec<&InterfaceName> = self.groups[g].iter().collect();
                if !names.is_empty() {
                    let root = dispatch_node_name(direction, g, common_prefix(&names));
                    rules.push(dispatch_rule(direction, p, true, root));
                }
            }
            rules.push(rule(vec![], Action::Drop));
            self.set_chain(ObjectName::fixed(top), rules, dirty);
        }
    }

    pub(super) fn set_chain(
        &mut self,
        name: ObjectName,
        rules: Vec<GenericRule>,
        dirty: &mut DirtyNames,
    ) {
        if self.ruleset.chains.get(&name) != Some(&rules) {
            self.ruleset.chains.insert(name.clone(), rules);
            dirty.chains.insert(name);
        }
    }
}

pub(super) fn iface_match(direction: Direction, name: &str, prefix: bool) -> Match {
    let name = name.to_owned();
    match direction {
        // Inbound = towards the workload: the packet leaves via its interface.
        Direction::Inbound => Match::OutInterface { name, prefix },
        Direction::Outbound => Match::InInterface { name, prefix },
    }
}

fn dispatch_rule(
    direction: Direction,
    name: &str,
    prefix: bool,
    target: ObjectName,
) -> GenericRule {
    rule(
        vec![iface_match(direction, name, prefix)],
        Action::Goto(target),
    )
}

fn dispatch_node_name(direction: Direction, group: usize, key: &str) -> ObjectName {
    let kind = match direction {
        Direction::Inbound => format!("dt{group}"),
        Direction::Outbound => format!("df{group}"),
    };
    ObjectName::generate(&kind, key)
}

/// The longest common prefix of sorted, non-empty `names`.
fn common_prefix<'a>(names: &[&'a InterfaceName]) -> &'a str {
    let (Some(first), Some(last)) = (names.first(), names.last()) else {
        return "";
    };
    let (a, b) = (first.as_str(), last.as_str());
    let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    // Interface names are ASCII: any byte index is a char boundary.
    &a[..n]
}

/// Lowers the dispatch tree node for sorted `names` (and its children)
/// into `out`; returns the node's chain.
fn dispatch_node(
    direction: Direction,
    group: usize,
    names: &[&InterfaceName],
    out: &mut BTreeMap<ObjectName, Vec<GenericRule>>,
) -> ObjectName {
    let lcp = common_prefix(names);
    let chain = dispatch_node_name(direction, group, lcp);
    let exact = |i: &InterfaceName| {
        dispatch_rule(direction, i.as_str(), false, endpoint_chain(direction, i))
    };
    let mut rules = Vec::new();
    if names.len() <= DISPATCH_LEAF {
        rules.extend(names.iter().map(|i| exact(i)));
    } else {
        let at = lcp.len();
        let (whole, longer): (Vec<&InterfaceName>, Vec<&InterfaceName>) =
            names.iter().partition(|i| i.as_str().len() == at);
        rules.extend(whole.into_iter().map(exact));
        for part in longer.chunk_by(|a, b| a.as_str().as_bytes()[at] == b.as_str().as_bytes()[at]) {
            match part {
                [only] => rules.push(exact(only)),
                _ => {
                    let child = dispatch_node(direction, group, part, out);
                    let key = &part[0].as_str()[..=at];
                    rules.push(dispatch_rule(direction, key, true, child));
                }
            }
        }
    }
    rules.push(rule(vec![], Action::Drop));
    out.insert(chain.clone(), rules);
    chain
}
