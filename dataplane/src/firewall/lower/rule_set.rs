//! Rule set chains: a profile's or policy's rules, one datastore rule
//! becoming one or more generic rules (one per family when it names sets).
//! `allow` sets the accept mark and returns (`next-tier` too, in a profile);
//! `next-tier` in a policy sets the pass mark and returns; `deny` drops;
//! `log` logs and goes on.

use std::collections::BTreeSet;

use ipnet::IpNet;
use margay_policy::desired::{
    DesiredState, IpSetId, IpVersion, PortRange, Rule, RuleAction, RuleSet, RuleSetId,
    RuleSetOwner, SideMatch,
};

use super::names::{net_family, rule_set_chain, set_name, FAMILIES};
use super::{rule, Lowerer, MARK_ACCEPT, MARK_PASS};
use crate::firewall::diff::DirtyNames;
use crate::firewall::model::{Action, GenericRule, Match, ObjectName};

/// Log prefix of a `log` rule without `log_prefix` (Felix's default).
pub const DEFAULT_LOG_PREFIX: &str = "calico-packet";

impl Lowerer {
    pub(super) fn relower_rule_set(
        &mut self,
        desired: &DesiredState,
        id: &RuleSetId,
        dirty: &mut DirtyNames,
    ) {
        let chain = rule_set_chain(id);
        if let Some(old) = self.rule_set_sets.remove(id) {
            for set in old {
                if let Some(users) = self.set_users.get_mut(&set) {
                    users.remove(id);
                    if users.is_empty() {
                        self.set_users.remove(&set);
                    }
                }
            }
        }
        match desired.rule_sets.get(id) {
            Some(rs) => {
                let used = sets_used(rs);
                for set in &used {
                    self.set_users
                        .entry(set.clone())
                        .or_default()
                        .insert(id.clone());
                }
                let present = |s: &IpSetId| Self::set_present(desired, s);
                let is_profile = matches!(id.owner, RuleSetOwner::Profile(_));
                let rules = lower_rule_set(rs, is_profile, &present);
                self.rule_set_sets.insert(id.clone(), used);
                self.ruleset.chains.insert(chain.clone(), rules);
            }
            None => {
                self.ruleset.chains.remove(&chain);
            }
        }
        dirty.chains.insert(chain);
    }
}

fn side_sets(s: &SideMatch) -> impl Iterator<Item = &IpSetId> {
    [&s.tag, &s.not_tag, &s.selector, &s.not_selector]
        .into_iter()
        .flatten()
}

fn rule_sets(r: &Rule) -> impl Iterator<Item = &IpSetId> {
    side_sets(&r.src).chain(side_sets(&r.dst))
}

fn sets_used(rs: &RuleSet) -> BTreeSet<IpSetId> {
    rs.rules.iter().flat_map(rule_sets).cloned().collect()
}

fn lower_rule_set(
    rs: &RuleSet,
    is_profile: bool,
    present: &dyn Fn(&IpSetId) -> bool,
) -> Vec<GenericRule> {
    rs.rules
        .iter()
        .flat_map(|r| lower_rule(r, is_profile, present))
        .collect()
}

/// The families a rule is rendered for: its own, or both when it names
/// sets (which are per family) without one.
fn rule_families(r: &Rule) -> Vec<Option<IpVersion>> {
    if let Some(v) = r.ip_version {
        return vec![Some(v)];
    }
    if r.icmp.is_some() || r.not_icmp.is_some() {
        // ICMP matches need a family; protocol tells which.
        return match r.protocol.map(|p| p.0) {
            Some(58) => vec![Some(IpVersion::V6)],
            _ => vec![Some(IpVersion::V4)],
        };
    }
    if rule_sets(r).next().is_some() {
        return FAMILIES.iter().map(|f| Some(*f)).collect();
    }
    vec![None]
}

/// Lowers one datastore rule into generic rules (none if it can never match).
pub fn lower_rule(
    r: &Rule,
    is_profile: bool,
    present: &dyn Fn(&IpSetId) -> bool,
) -> Vec<GenericRule> {
    let mut out = Vec::new();
    for family in rule_families(r) {
        let Some(matches) = lower_matches(r, family, present) else {
            continue;
        };
        out.extend(action_rules(
            &r.action,
            is_profile,
            r.log_prefix.as_deref(),
            matches,
        ));
    }
    out
}

fn action_rules(
    action: &RuleAction,
    is_profile: bool,
    log_prefix: Option<&str>,
    matches: Vec<Match>,
) -> Vec<GenericRule> {
    let mark_and_return = |bit: u32, matches: Vec<Match>| {
        vec![
            rule(
                matches,
                Action::SetMark {
                    value: bit,
                    mask: bit,
                },
            ),
            rule(
                vec![Match::Mark {
                    value: bit,
                    mask: bit,
                }],
                Action::Return,
            ),
        ]
    };
    match action {
        RuleAction::Allow => mark_and_return(MARK_ACCEPT, matches),
        RuleAction::NextTier if is_profile => mark_and_return(MARK_ACCEPT, matches),
        RuleAction::NextTier => mark_and_return(MARK_PASS, matches),
        RuleAction::Deny => vec![rule(matches, Action::Drop)],
        RuleAction::Log => {
            let prefix = log_prefix
                .filter(|p| valid_log_prefix(p))
                .unwrap_or(DEFAULT_LOG_PREFIX)
                .to_owned();
            vec![rule(matches, Action::Log { prefix })]
        }
    }
}

/// The log prefix charset the policy crate validates (`[A-Za-z0-9 _.:-]{0,27}`).
pub fn valid_log_prefix(p: &str) -> bool {
    p.len() <= 27
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'_' | b'.' | b':' | b'-'))
}

/// The matches of `r` for one family; `None` when the rule cannot match
/// in that family (a positive match on a missing set, or a net of the
/// other family).
fn lower_matches(
    r: &Rule,
    family: Option<IpVersion>,
    present: &dyn Fn(&IpSetId) -> bool,
) -> Option<Vec<Match>> {
    let mut m = Vec::new();
    if let Some(f) = family {
        m.push(Match::Family(f));
    }
    if let Some(p) = r.protocol {
        m.push(Match::Protocol {
            proto: p.0,
            negated: false,
        });
    }
    if let Some(p) = r.not_protocol {
        m.push(Match::Protocol {
            proto: p.0,
            negated: true,
        });
    }
    side_matches(&r.src, true, family, present, &mut m)?;
    side_matches(&r.dst, false, family, present, &mut m)?;
    if let Some(i) = r.icmp {
        m.push(Match::Icmp {
            icmp_type: i.icmp_type,
            code: i.code,
            negated: false,
        });
    }
    if let Some(i) = r.not_icmp {
        m.push(Match::Icmp {
            icmp_type: i.icmp_type,
            code: i.code,
            negated: true,
        });
    }
    Some(m)
}

fn net_match(net: IpNet, src: bool, negated: bool) -> Match {
    if src {
        Match::SrcNet { net, negated }
    } else {
        Match::DstNet { net, negated }
    }
}

fn set_match(set: ObjectName, src: bool, negated: bool) -> Match {
    if src {
        Match::SrcSet { set, negated }
    } else {
        Match::DstSet { set, negated }
    }
}

fn side_matches(
    s: &SideMatch,
    src: bool,
    family: Option<IpVersion>,
    present: &dyn Fn(&IpSetId) -> bool,
    out: &mut Vec<Match>,
) -> Option<()> {
    let same_family = |n: &IpNet| family.is_none_or(|f| f == net_family(n));
    if let Some(n) = s.net {
        if !same_family(&n) {
            return None;
        }
        out.push(net_match(n.trunc(), src, false));
    }
    if let Some(n) = s.not_net {
        // A net of the other family never contains the address: always true.
        if same_family(&n) {
            out.push(net_match(n.trunc(), src, true));
        }
    }
    for (id, negated) in [
        (&s.tag, false),
        (&s.selector, false),
        (&s.not_tag, true),
        (&s.not_selector, true),
    ] {
        let Some(id) = id else { continue };
        // Sets are per family; rule_families guarantees one here.
        let f = family?;
        match (present(id), negated) {
            (true, _) => out.push(set_match(set_name(id, f), src, negated)),
            // A missing set is empty: "in it" never holds, "not in it" always does.
            (false, false) => return None,
            (false, true) => {}
        }
    }
    if !s.ports.is_empty() {
        out.push(port_match(s.ports.clone(), src, false));
    }
    if !s.not_ports.is_empty() {
        out.push(port_match(s.not_ports.clone(), src, true));
    }
    Some(())
}

fn port_match(ports: Vec<PortRange>, src: bool, negated: bool) -> Match {
    if src {
        Match::SrcPorts { ports, negated }
    } else {
        Match::DstPorts { ports, negated }
    }
}
