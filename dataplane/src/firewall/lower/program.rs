//! Endpoint programs: the chains `margay-to-<iface>` (inbound) and
//! `margay-fr-<iface>` (outbound) that run an endpoint's tiers of policies
//! and then its profiles, passing verdicts between chains as marks.

use std::collections::BTreeSet;

use margay_policy::desired::{DesiredState, Direction, DirectionProgram, RuleSetId};
use margay_policy::names::InterfaceName;

use super::names::{endpoint_chain, rule_set_chain};
use super::{rule, Lowerer, MARK_ACCEPT, MARK_MASK};
use crate::firewall::diff::DirtyNames;
use crate::firewall::model::{Action, GenericRule, Match};

impl Lowerer {
    pub(super) fn relower_program(
        &mut self,
        desired: &DesiredState,
        iface: &InterfaceName,
        dirty: &mut DirtyNames,
        dirty_groups: &mut BTreeSet<usize>,
    ) {
        let chains = [
            endpoint_chain(Direction::Inbound, iface),
            endpoint_chain(Direction::Outbound, iface),
        ];
        if let Some(old) = self.program_rule_sets.remove(iface) {
            for rs in old {
                if let Some(users) = self.rule_set_users.get_mut(&rs) {
                    users.remove(iface);
                    if users.is_empty() {
                        self.rule_set_users.remove(&rs);
                    }
                }
            }
        }
        let group = self.group_of(iface);
        let program = desired.programs.get(iface).filter(|_| group.is_some());
        match program {
            Some(p) => {
                let present = |id: &RuleSetId| desired.rule_sets.contains_key(id);
                let inbound = lower_direction(&p.inbound, &present);
                let outbound = lower_direction(&p.outbound, &present);
                let used = rule_sets_used(&p.inbound)
                    .chain(rule_sets_used(&p.outbound))
                    .cloned()
                    .collect::<BTreeSet<_>>();
                for rs in &used {
                    self.rule_set_users
                        .entry(rs.clone())
                        .or_default()
                        .insert(iface.clone());
                }
                self.program_rule_sets.insert(iface.clone(), used);
                self.ruleset.chains.insert(chains[0].clone(), inbound);
                self.ruleset.chains.insert(chains[1].clone(), outbound);
            }
            None => {
                for c in &chains {
                    self.ruleset.chains.remove(c);
                }
            }
        }
        dirty.chains.extend(chains);
        if let Some(g) = group {
            let members = &mut self.groups[g];
            let changed = if program.is_some() {
                members.insert(iface.clone())
            } else {
                members.remove(iface)
            };
            if changed {
                dirty_groups.insert(g);
            }
        }
    }
}

pub(super) fn rule_sets_used(p: &DirectionProgram) -> impl Iterator<Item = &RuleSetId> {
    p.tiers
        .iter()
        .flat_map(|t| t.policies.iter())
        .chain(p.profiles.iter())
}

fn no_verdict() -> Match {
    Match::Mark {
        value: 0,
        mask: MARK_MASK,
    }
}

fn clear_marks() -> GenericRule {
    rule(
        vec![],
        Action::SetMark {
            value: 0,
            mask: MARK_MASK,
        },
    )
}

fn accepted_return() -> GenericRule {
    let m = vec![Match::Mark {
        value: MARK_ACCEPT,
        mask: MARK_ACCEPT,
    }];
    rule(m, Action::Return)
}

/// One endpoint direction's chain: tiers, then profiles, then drop.
pub(super) fn lower_direction(
    p: &DirectionProgram,
    present: &dyn Fn(&RuleSetId) -> bool,
) -> Vec<GenericRule> {
    let mut rules = Vec::new();
    for tier in &p.tiers {
        rules.push(clear_marks());
        for policy in &tier.policies {
            // A missing policy decides nothing: leaving it out is exact.
            if present(policy) {
                rules.push(rule(
                    vec![no_verdict()],
                    Action::Jump(rule_set_chain(policy)),
                ));
            }
        }
        rules.push(accepted_return());
        rules.push(rule(vec![no_verdict()], Action::Drop));
    }
    if !p.fail_closed {
        rules.push(clear_marks());
        for profile in &p.profiles {
            if !present(profile) {
                // A missing profile fails closed.
                break;
            }
            rules.push(rule(vec![], Action::Jump(rule_set_chain(profile))));
            rules.push(accepted_return());
        }
    }
    rules.push(rule(vec![], Action::Drop));
    rules
}
