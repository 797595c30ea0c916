//! Rule sets: resolving datastore rules into desired rules (tags and
//! selectors become set ids) and keeping exactly the referenced rule sets in
//! the desired state, each holding references on the sets it uses.

use super::hashing::FastMap;

use super::sets::SetSpec;
use super::CalcEngine;
use crate::desired::{Direction, IpSetId, Rule, RuleSet, RuleSetId, RuleSetOwner, SideMatch};
use crate::model;

/// Reference counts of rule sets, by the programs that list them.
#[derive(Default)]
pub(super) struct RuleSetRefs {
    pub counts: FastMap<RuleSetId, u32>,
}

/// Resolves datastore rules; also returns, in rule order, one [`SetSpec`]
/// per set id the result mentions (so acquiring them mirrors [`set_ids`]).
pub(super) fn resolve_rules(rules: &[model::Rule]) -> (RuleSet, Vec<SetSpec>) {
    let mut specs = Vec::new();
    let rules = rules
        .iter()
        .map(|r| Rule {
            action: r.action.clone(),
            ip_version: r.ip_version,
            protocol: r.protocol,
            not_protocol: r.not_protocol,
            src: resolve_side(&r.src, &mut specs),
            dst: resolve_side(&r.dst, &mut specs),
            icmp: r.icmp,
            not_icmp: r.not_icmp,
            log_prefix: r.log_prefix.clone(),
        })
        .collect();
    (RuleSet { rules }, specs)
}

fn resolve_side(side: &model::RuleSide, specs: &mut Vec<SetSpec>) -> SideMatch {
    let mut tag = |t: &Option<crate::names::Id>| {
        t.as_ref().map(|t| {
            specs.push(SetSpec::Tag(t.clone()));
            IpSetId::Tag(t.clone())
        })
    };
    let tag_set = tag(&side.tag);
    let not_tag_set = tag(&side.not_tag);
    let mut sel = |s: &Option<crate::selector::Selector>| {
        s.as_ref().map(|s| {
            specs.push(SetSpec::Selector(s.clone()));
            IpSetId::Selector(s.canonical().to_owned())
        })
    };
    let sel_set = sel(&side.selector);
    let not_sel_set = sel(&side.not_selector);
    SideMatch {
        net: side.net,
        not_net: side.not_net,
        tag: tag_set,
        not_tag: not_tag_set,
        selector: sel_set,
        not_selector: not_sel_set,
        ports: side.ports.clone(),
        not_ports: side.not_ports.clone(),
    }
}

/// Every set id a rule set mentions, once per mention, in the order
/// [`resolve_rules`] returns their specs.
pub(super) fn set_ids(rs: &RuleSet) -> impl Iterator<Item = &IpSetId> {
    rs.rules.iter().flat_map(|r| {
        [&r.src, &r.dst].into_iter().flat_map(|s| {
            [&s.tag, &s.not_tag, &s.selector, &s.not_selector]
                .into_iter()
                .flatten()
        })
    })
}

impl CalcEngine {
    /// The datastore rules behind a rule set id, when its document is present.
    fn source_rules(&self, id: &RuleSetId) -> Option<&[model::Rule]> {
        let (inbound, outbound) = match &id.owner {
            RuleSetOwner::Profile(p) => {
                let rules = self.profiles.map.get(p)?.rules.as_ref()?;
                (&rules.inbound, &rules.outbound)
            }
            RuleSetOwner::Policy { tier, policy } => {
                let pol = self.tiers.map.get(tier)?.policies.get(policy)?;
                (&pol.inbound, &pol.outbound)
            }
        };
        Some(match id.direction {
            Direction::Inbound => inbound,
            Direction::Outbound => outbound,
        })
    }

    fn resolve(&self, id: &RuleSetId) -> (RuleSet, Vec<SetSpec>) {
        resolve_rules(self.source_rules(id).unwrap_or(&[]))
    }

    /// A program now lists `id`: the first reference resolves it into the state.
    pub(super) fn acquire_rule_set(&mut self, id: &RuleSetId) {
        let n = self.rule_sets.counts.entry(id.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            return;
        }
        let (rs, specs) = self.resolve(id);
        for spec in &specs {
            self.acquire_set(spec);
        }
        self.out.replace_rule_set(id, Some(rs));
    }

    /// A program no longer lists `id`: the last reference removes it.
    pub(super) fn release_rule_set(&mut self, id: &RuleSetId) {
        let Some(n) = self.rule_sets.counts.get_mut(id) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        self.rule_sets.counts.remove(id);
        if let Some(old) = self.out.replace_rule_set(id, None) {
            self.release_sets_of(&old);
        }
    }

    /// The source of `id` changed: re-resolve it if it is referenced.
    pub(super) fn refresh_rule_set(&mut self, id: &RuleSetId) {
        if !self.rule_sets.counts.contains_key(id) {
            return;
        }
        let (rs, specs) = self.resolve(id);
        if self.out.state.rule_sets.get(id) == Some(&rs) {
            return;
        }
        // Acquire before releasing, so sets used by both versions stay put.
        for spec in &specs {
            self.acquire_set(spec);
        }
        if let Some(old) = self.out.replace_rule_set(id, Some(rs)) {
            self.release_sets_of(&old);
        }
    }

    fn release_sets_of(&mut self, rs: &RuleSet) {
        for set in set_ids(rs) {
            self.release_set(set);
        }
    }
}
