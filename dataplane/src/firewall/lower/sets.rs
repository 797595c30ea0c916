//! Address sets: per family, members normalised to disjoint nets, updated
//! member by member when only host addresses change.

use std::collections::BTreeSet;

use ipnet::IpNet;
use margay_policy::desired::{DesiredState, IpSetId};

use super::names::{net_family, set_name, FAMILIES};
use super::Lowerer;
use crate::firewall::diff::DirtyNames;
use crate::firewall::model::AddressSet;

fn is_host(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// Members as a set of disjoint nets with the same union: nets inside
/// another member are dropped (interval sets refuse overlapping elements).
pub fn normalize_members<'a>(members: impl Iterator<Item = &'a IpNet>) -> BTreeSet<IpNet> {
    let mut nets: Vec<IpNet> = members.map(IpNet::trunc).collect();
    if nets.iter().all(is_host) {
        return nets.into_iter().collect();
    }
    // CIDRs are nested or disjoint: sorted by (address, prefix length), a
    // covered net always follows the last net kept that covers it.
    nets.sort_by_key(|n| (n.network(), n.prefix_len()));
    let mut kept: Vec<IpNet> = Vec::with_capacity(nets.len());
    for n in nets {
        if kept.last().is_some_and(|k| k.contains(&n)) {
            continue;
        }
        kept.push(n);
    }
    kept.into_iter().collect()
}

impl Lowerer {
    pub(super) fn set_present(desired: &DesiredState, id: &IpSetId) -> bool {
        matches!(id, IpSetId::AllPools | IpSetId::MasqueradePools)
            || desired.ip_sets.contains_key(id)
    }

    pub(super) fn relower_set(
        &mut self,
        desired: &DesiredState,
        id: &IpSetId,
        dirty: &mut DirtyNames,
    ) {
        for family in FAMILIES {
            let name = set_name(id, family);
            if Self::set_present(desired, id) {
                let members = desired
                    .ip_sets
                    .get(id)
                    .map(|m| normalize_members(m.iter().filter(|n| net_family(n) == family)))
                    .unwrap_or_default();
                self.ruleset
                    .sets
                    .insert(name.clone(), AddressSet { family, members });
            } else {
                self.ruleset.sets.remove(&name);
            }
            dirty.sets.insert(name);
        }
    }

    pub(super) fn update_members(
        &mut self,
        desired: &DesiredState,
        id: &IpSetId,
        members: &BTreeSet<IpNet>,
        dirty: &mut DirtyNames,
    ) {
        let pools = matches!(id, IpSetId::AllPools | IpSetId::MasqueradePools);
        if pools || members.iter().any(|m| !is_host(m)) {
            // Nets may cover each other: recompute the whole (small) set.
            return self.relower_set(desired, id, dirty);
        }
        let wanted = desired.ip_sets.get(id);
        for m in members {
            let name = set_name(id, net_family(m));
            let Some(set) = self.ruleset.sets.get_mut(&name) else {
                continue;
            };
            let net = m.trunc();
            let want = wanted.is_some_and(|w| w.contains(m) || w.contains(&net));
            if want {
                set.members.insert(net);
            } else {
                set.members.remove(&net);
            }
            dirty.members.entry(name).or_default().insert(net);
        }
    }
}
