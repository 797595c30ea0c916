//! Tiers and policies, and the per-endpoint filter program built from them.
//!
//! Policy selectors are evaluated against plumbed local endpoints and this
//! host's host endpoints only: each keeps the set of policies matching it,
//! updated when a policy's selector changes (one evaluation per such
//! endpoint) or the endpoint's labels change (one evaluation per policy).

use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::hashing::FastMap;

use super::{CalcEngine, EpIdx};
use crate::desired::{
    Direction, DirectionProgram, EndpointProgram, RuleSetId, RuleSetOwner, TierProgram,
};
use crate::model::{Labels, Order, Policy, TierMetadata};
use crate::names::Id;

/// One tier: its order (when its metadata exists) and its policies.
#[derive(Default)]
pub(super) struct Tier {
    /// `order` from the metadata; `None` without metadata (tier ignored).
    pub order: Option<Order>,
    /// Policies by id.
    pub policies: FastMap<Id, Policy>,
}

/// All tiers.
#[derive(Default)]
pub(super) struct Tiers {
    pub map: FastMap<Id, Tier>,
}

/// Numbers ascending, then `default`.
pub(super) fn order_cmp(a: &Order, b: &Order) -> Ordering {
    match (a, b) {
        (Order::Number(x), Order::Number(y)) => x.total_cmp(y),
        (Order::Number(_), Order::Default) => Ordering::Less,
        (Order::Default, Order::Number(_)) => Ordering::Greater,
        (Order::Default, Order::Default) => Ordering::Equal,
    }
}

/// A tier with its matching policies, for sorting.
type TierGroup<'a> = (&'a Order, &'a Id, Vec<(&'a Order, &'a Id)>);

impl CalcEngine {
    /// Every policy (of any tier) whose selector matches `labels`.
    pub(super) fn match_policies(&self, labels: &Labels) -> BTreeSet<(Id, Id)> {
        let mut out = BTreeSet::new();
        for (t, tier) in &self.tiers.map {
            for (p, pol) in &tier.policies {
                if pol.selector.matches(labels) {
                    out.insert((t.clone(), p.clone()));
                }
            }
        }
        out
    }

    /// Matched policies grouped by tier, tiers with metadata only, both levels sorted.
    fn ordered_tiers<'a>(&'a self, matched: &'a BTreeSet<(Id, Id)>) -> Vec<TierGroup<'a>> {
        let mut groups: Vec<TierGroup<'a>> = Vec::new();
        for (t, p) in matched {
            let Some(tier) = self.tiers.map.get(t) else {
                continue;
            };
            let (Some(order), Some(pol)) = (tier.order.as_ref(), tier.policies.get(p)) else {
                continue;
            };
            match groups.last_mut() {
                Some(last) if last.1 == t => last.2.push((&pol.order, p)),
                _ => groups.push((order, t, vec![(&pol.order, p)])),
            }
        }
        groups.sort_by(|a, b| order_cmp(a.0, b.0).then_with(|| a.1.cmp(b.1)));
        for g in &mut groups {
            g.2.sort_by(|a, b| order_cmp(a.0, b.0).then_with(|| a.1.cmp(b.1)));
        }
        groups
    }

    /// The program of plumbed endpoint `e`: matching tiers, then profiles
    /// (or fail closed).
    pub(super) fn build_program(&self, e: EpIdx) -> EndpointProgram {
        let ep = &self.eps.slab[e];
        let empty = BTreeSet::new();
        let matched = ep.publ.as_ref().map_or(&empty, |p| &p.matched);
        self.program_for(matched, ep.profile_ids())
    }

    /// The program of an endpoint matched by the policies `matched` and
    /// listing `profiles`: the tiers of those policies in order, then the
    /// profiles; failing closed without profiles or with a missing one.
    pub(super) fn program_for(
        &self,
        matched: &BTreeSet<(Id, Id)>,
        profiles: &[Id],
    ) -> EndpointProgram {
        let groups = self.ordered_tiers(matched);
        let profiles_ok = !profiles.is_empty()
            && profiles.iter().all(|p| {
                self.profiles
                    .map
                    .get(p)
                    .is_some_and(|prof| prof.rules.is_some())
            });
        let direction = |d: Direction| DirectionProgram {
            tiers: groups
                .iter()
                .map(|(_, t, pols)| TierProgram {
                    tier: (*t).clone(),
                    policies: pols
                        .iter()
                        .map(|(_, p)| RuleSetId {
                            owner: RuleSetOwner::Policy {
                                tier: (*t).clone(),
                                policy: (*p).clone(),
                            },
                            direction: d,
                        })
                        .collect(),
                })
                .collect(),
            profiles: if profiles_ok {
                profiles
                    .iter()
                    .map(|p| RuleSetId {
                        owner: RuleSetOwner::Profile(p.clone()),
                        direction: d,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            fail_closed: !profiles_ok,
        };
        EndpointProgram {
            inbound: direction(Direction::Inbound),
            outbound: direction(Direction::Outbound),
        }
    }

    /// `/policy/tier/<tier>/metadata` was written or deleted.
    pub(super) fn set_tier_metadata(&mut self, tier: Id, meta: Option<TierMetadata>) {
        let order = meta.map(|m| m.order);
        let entry = self.tiers.map.entry(tier.clone()).or_default();
        if entry.order == order {
            return;
        }
        entry.order = order;
        for e in self.plumbed() {
            let uses_tier = self.eps.slab[e]
                .publ
                .as_ref()
                .is_some_and(|p| p.matched.iter().any(|(t, _)| *t == tier));
            if uses_tier {
                self.rebuild_program(e);
            }
        }
        for e in self.local_hosts() {
            let uses_tier = self
                .host_matched(e)
                .is_some_and(|m| m.iter().any(|(t, _)| *t == tier));
            if uses_tier {
                self.sync_host_entry(e, false);
            }
        }
        self.gc_tier(&tier);
    }

    /// `/policy/tier/<tier>/policy/<id>` was written or deleted.
    pub(super) fn set_policy(&mut self, tier: Id, id: Id, policy: Option<Policy>) {
        let entry = self.tiers.map.entry(tier.clone()).or_default();
        let old = match policy {
            Some(p) => entry.policies.insert(id.clone(), p),
            None => entry.policies.remove(&id),
        };
        let new = entry.policies.get(&id);
        if old.as_ref() == new {
            return;
        }
        let meta = |p: Option<&Policy>| p.map(|p| (p.selector.clone(), p.order));
        let meta_changed = meta(old.as_ref()) != meta(new);
        let rules = |p: Option<&Policy>| p.map(|p| (p.inbound.clone(), p.outbound.clone()));
        let rules_changed = rules(old.as_ref()) != rules(new);
        let selector = new.map(|p| p.selector.clone());
        if meta_changed {
            self.rematch_policy(&tier, &id, selector.as_ref());
        }
        if rules_changed {
            for direction in [Direction::Inbound, Direction::Outbound] {
                self.refresh_rule_set(&RuleSetId {
                    owner: RuleSetOwner::Policy {
                        tier: tier.clone(),
                        policy: id.clone(),
                    },
                    direction,
                });
            }
        }
        self.gc_tier(&tier);
    }

    /// Re-evaluates one policy against every plumbed endpoint and rebuilds
    /// the programs it is (or was) part of.
    fn rematch_policy(&mut self, tier: &Id, id: &Id, selector: Option<&crate::selector::Selector>) {
        let key = (tier.clone(), id.clone());
        for e in self.plumbed() {
            let now = selector.is_some_and(|s| {
                let class = self.eps.slab[e].class;
                s.matches(&self.classes.slab[class].labels)
            });
            let Some(publ) = self.eps.slab[e].publ.as_mut() else {
                continue;
            };
            let was = if now {
                !publ.matched.insert(key.clone())
            } else {
                publ.matched.remove(&key)
            };
            if was || now {
                self.rebuild_program(e);
            }
        }
        for e in self.local_hosts() {
            let class = self.eps.slab[e].class;
            let now = selector.is_some_and(|s| s.matches(&self.classes.slab[class].labels));
            let Some(matched) = self.host_matched_mut(e) else {
                continue;
            };
            let was = if now {
                !matched.insert(key.clone())
            } else {
                matched.remove(&key)
            };
            if was || now {
                self.sync_host_entry(e, false);
            }
        }
    }

    fn gc_tier(&mut self, tier: &Id) {
        if self
            .tiers
            .map
            .get(tier)
            .is_some_and(|t| t.order.is_none() && t.policies.is_empty())
        {
            self.tiers.map.remove(tier);
        }
    }
}
