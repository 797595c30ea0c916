//! A deliberately naive, non-incremental calculation of the desired state
//! and the conflicts, written from the data model's rules, to check the
//! engine against.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use margay_policy::calc::{ConflictSubject, EndpointConflict};
use margay_policy::desired::{
    DesiredState, Direction, DirectionProgram, EndpointProgram, IpSetId, LocalEndpoint,
    LocalHostEndpoint, RouteTarget, Rule, RuleSet, RuleSetId, RuleSetOwner, SideMatch, TierProgram,
    WorkloadEndpointKey,
};
use margay_policy::model::{
    self, EndpointState, HostEndpoint, HostEndpointKey, IpPool, Labels, Order, Policy,
    ProfileRules, ResourceKey, Value, WorkloadEndpoint,
};
use margay_policy::names::{Id, InterfaceName};

use super::sel;

/// The final datastore content: key → value (absent keys are not listed).
pub type World = BTreeMap<ResourceKey, Value>;

/// The documents of a [`World`], by kind.
#[derive(Default)]
struct Docs<'a> {
    endpoints: BTreeMap<WorkloadEndpointKey, &'a WorkloadEndpoint>,
    host_endpoints: BTreeMap<HostEndpointKey, &'a HostEndpoint>,
    rules: BTreeMap<Id, &'a ProfileRules>,
    tags: BTreeMap<Id, &'a Vec<Id>>,
    plabels: BTreeMap<Id, &'a Labels>,
    tiers: BTreeMap<Id, Order>,
    policies: BTreeMap<(Id, Id), &'a Policy>,
    pools: Vec<&'a IpPool>,
    bird: BTreeMap<String, IpAddr>,
}

/// Numbers ascending, then `default`.
fn cmp_order(a: &Order, b: &Order) -> Ordering {
    match (a, b) {
        (Order::Number(x), Order::Number(y)) => x.total_cmp(y),
        (Order::Number(_), Order::Default) => Ordering::Less,
        (Order::Default, Order::Number(_)) => Ordering::Greater,
        (Order::Default, Order::Default) => Ordering::Equal,
    }
}

impl<'a> Docs<'a> {
    fn new(world: &'a World) -> Self {
        let mut d = Docs::default();
        for (k, v) in world {
            match (k, v) {
                (ResourceKey::WorkloadEndpoint(k), Value::WorkloadEndpoint(ep)) => {
                    d.endpoints.insert(k.clone(), ep);
                }
                (ResourceKey::HostEndpoint(k), Value::HostEndpoint(hep)) => {
                    d.host_endpoints.insert(k.clone(), hep);
                }
                (ResourceKey::ProfileRules(p), Value::ProfileRules(r)) => {
                    d.rules.insert(p.clone(), r);
                }
                (ResourceKey::ProfileTags(p), Value::ProfileTags(t)) => {
                    d.tags.insert(p.clone(), t);
                }
                (ResourceKey::ProfileLabels(p), Value::ProfileLabels(l)) => {
                    d.plabels.insert(p.clone(), l);
                }
                (ResourceKey::TierMetadata(t), Value::TierMetadata(m)) => {
                    d.tiers.insert(t.clone(), m.order);
                }
                (ResourceKey::Policy { tier, policy }, Value::Policy(p)) => {
                    d.policies.insert((tier.clone(), policy.clone()), p);
                }
                (ResourceKey::IpPool(_), Value::IpPool(p)) => d.pools.push(p),
                (ResourceKey::HostIp(h), Value::HostIp(ip)) => {
                    d.bird.insert(h.clone(), *ip);
                }
                _ => {}
            }
        }
        d
    }

    /// Profile labels in profile order, then the endpoint's own.
    fn effective_labels(&self, own: &Labels, profile_ids: &[Id]) -> Labels {
        let mut l = Labels::new();
        for p in profile_ids {
            if let Some(pl) = self.plabels.get(p) {
                l.extend(pl.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        l.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        l
    }

    /// The program of an endpoint with these labels and profiles.
    fn program(&self, own: &Labels, profile_ids: &[Id]) -> EndpointProgram {
        let labels = self.effective_labels(own, profile_ids);
        EndpointProgram {
            inbound: self.direction(&labels, profile_ids, Direction::Inbound),
            outbound: self.direction(&labels, profile_ids, Direction::Outbound),
        }
    }

    fn direction(&self, labels: &Labels, profile_ids: &[Id], d: Direction) -> DirectionProgram {
        let mut tier_list: Vec<(&Id, Order)> = self.tiers.iter().map(|(t, o)| (t, *o)).collect();
        tier_list.sort_by(|a, b| cmp_order(&a.1, &b.1).then(a.0.cmp(b.0)));
        let mut tiers = Vec::new();
        for (t, _) in &tier_list {
            let mut pols: Vec<(&Id, Order)> = self
                .policies
                .iter()
                .filter(|((pt, _), p)| pt == *t && p.selector.matches(labels))
                .map(|((_, pid), p)| (pid, p.order))
                .collect();
            pols.sort_by(|a, b| cmp_order(&a.1, &b.1).then(a.0.cmp(b.0)));
            if pols.is_empty() {
                continue;
            }
            let policy = |p: &Id| RuleSetId {
                owner: RuleSetOwner::Policy {
                    tier: (*t).clone(),
                    policy: p.clone(),
                },
                direction: d,
            };
            tiers.push(TierProgram {
                tier: (*t).clone(),
                policies: pols.iter().map(|(p, _)| policy(p)).collect(),
            });
        }
        let ok = !profile_ids.is_empty() && profile_ids.iter().all(|p| self.rules.contains_key(p));
        let profile = |p: &Id| RuleSetId {
            owner: RuleSetOwner::Profile(p.clone()),
            direction: d,
        };
        DirectionProgram {
            tiers,
            profiles: if ok {
                profile_ids.iter().map(profile).collect()
            } else {
                Vec::new()
            },
            fail_closed: !ok,
        }
    }

    /// Plumbed workload endpoints and their programs; contested interfaces drop all.
    fn plumb(&self, state: &mut DesiredState, local: &LocalClaims) {
        let contested_addr = |n: &IpNet| local.addrs.get(n).is_some_and(|c| c.ifaces.len() > 1);
        for (ifc, keys) in &local.ifaces {
            // Plumbed: the only claimant of its interface, none of its addresses contested.
            let owner = match &keys[..] {
                [k] if !ep_nets(self.endpoints[k]).iter().any(contested_addr) => k,
                _ => {
                    state.programs.insert(ifc.clone(), drop_all());
                    continue;
                }
            };
            let ep = self.endpoints[owner];
            let value = LocalEndpoint {
                key: owner.clone(),
                iface: ifc.clone(),
                mac: ep.mac,
                ipv4: ep.ipv4_nets.clone(),
                ipv6: ep.ipv6_nets.clone(),
            };
            state.endpoints.insert(ifc.clone(), value);
            let program = self.program(&ep.labels, &ep.profile_ids);
            state.programs.insert(ifc.clone(), program);
        }
    }

    /// The entries of `host`'s host endpoints.
    fn host_entries(&self, state: &mut DesiredState, host: &str) {
        for (k, hep) in self.host_endpoints.iter().filter(|(k, _)| k.host == host) {
            let mut expected_addrs: Vec<IpAddr> = hep
                .expected_ipv4_addrs
                .iter()
                .chain(&hep.expected_ipv6_addrs)
                .copied()
                .collect();
            expected_addrs.sort();
            expected_addrs.dedup();
            let entry = LocalHostEndpoint {
                id: k.endpoint.clone(),
                name: hep.name.clone(),
                expected_addrs,
                program: self.program(&hep.labels, &hep.profile_ids),
            };
            state.host_endpoints.insert(k.endpoint.clone(), entry);
        }
    }

    /// The rule sets the programs (of workloads and host endpoints) list.
    fn rule_sets(&self, state: &mut DesiredState) {
        let host_programs = state.host_endpoints.values().map(|h| &h.program);
        let mut ids: Vec<RuleSetId> = Vec::new();
        for prog in state.programs.values().chain(host_programs) {
            for d in [&prog.inbound, &prog.outbound] {
                ids.extend(d.tiers.iter().flat_map(|t| &t.policies).cloned());
                ids.extend(d.profiles.iter().cloned());
            }
        }
        for id in ids {
            let src: &[model::Rule] = match (&id.owner, id.direction) {
                (RuleSetOwner::Profile(p), Direction::Inbound) => &self.rules[p].inbound,
                (RuleSetOwner::Profile(p), Direction::Outbound) => &self.rules[p].outbound,
                (RuleSetOwner::Policy { tier, policy }, dir) => {
                    let pol = self.policies[&(tier.clone(), policy.clone())];
                    if dir == Direction::Inbound {
                        &pol.inbound
                    } else {
                        &pol.outbound
                    }
                }
            };
            let rules = src.iter().map(ref_rule).collect();
            state.rule_sets.insert(id, RuleSet { rules });
        }
    }

    /// The sets the rule sets use, members from every endpoint of every
    /// host and either kind; and the two pool sets.
    fn sets(&self, state: &mut DesiredState) {
        let mut used: BTreeSet<IpSetId> = BTreeSet::new();
        for r in state.rule_sets.values().flat_map(|rs| &rs.rules) {
            for side in [&r.src, &r.dst] {
                let ids = [&side.tag, &side.not_tag, &side.selector, &side.not_selector];
                used.extend(ids.into_iter().flatten().cloned());
            }
        }
        // Every endpoint: its profiles, own labels and set addresses.
        let mut all: Vec<(&[Id], &Labels, Vec<IpNet>)> = self
            .endpoints
            .values()
            .map(|ep| (&ep.profile_ids[..], &ep.labels, ep_nets(ep)))
            .collect();
        all.extend(self.host_endpoints.values().map(|h| {
            let addrs = h.expected_ipv4_addrs.iter().chain(&h.expected_ipv6_addrs);
            let nets = addrs.map(|&a| IpNet::from(a)).collect();
            (&h.profile_ids[..], &h.labels, nets)
        }));
        for set in used {
            let mut members = BTreeSet::new();
            for (profile_ids, own, addrs) in &all {
                let member = match &set {
                    IpSetId::Tag(t) => profile_ids
                        .iter()
                        .any(|p| self.tags.get(p).is_some_and(|ts| ts.contains(t))),
                    IpSetId::Selector(s) => {
                        sel(s).matches(&self.effective_labels(own, profile_ids))
                    }
                    _ => false,
                };
                if member {
                    members.extend(addrs.iter().copied());
                }
            }
            state.ip_sets.insert(set, members);
        }
        let all_pools = self.pools.iter().map(|p| p.cidr).collect();
        state.ip_sets.insert(IpSetId::AllPools, all_pools);
        let masquerade = self.pools.iter().filter(|p| p.masquerade).map(|p| p.cidr);
        state
            .ip_sets
            .insert(IpSetId::MasqueradePools, masquerade.collect());
    }

    /// Routes: local claims first (none while they disagree), then remote
    /// active ones via bird_ip inside a pool, the smaller key first.
    fn routes(&self, state: &mut DesiredState, host: &str, local: &LocalClaims) {
        let mut claims: BTreeMap<IpNet, (WorkloadEndpointKey, RouteTarget)> = BTreeMap::new();
        for (k, ep) in &self.endpoints {
            if k.host == host || ep.state != EndpointState::Active {
                continue;
            }
            let Some(gw) = self.bird.get(&k.host) else {
                continue;
            };
            for n in ep_nets(ep) {
                let in_pool = self.pools.iter().any(|p| p.cidr.contains(&n));
                let better = !matches!(claims.get(&n), Some((old, _)) if old <= k);
                if n.addr().is_ipv4() == gw.is_ipv4() && in_pool && better {
                    claims.insert(n, (k.clone(), RouteTarget::Gateway(*gw)));
                }
            }
        }
        let mut routes: BTreeMap<IpNet, RouteTarget> =
            claims.into_iter().map(|(n, (_, t))| (n, t)).collect();
        for (n, c) in &local.addrs {
            match &c.ifaces.iter().collect::<Vec<_>>()[..] {
                [only] => routes.insert(*n, RouteTarget::Interface((*only).clone())),
                _ => routes.remove(n),
            };
        }
        state.routes = routes;
    }
}

/// The desired state of `host` for the datastore `world`.
pub fn reference_state(world: &World, host: &str, prefixes: &[String]) -> DesiredState {
    let docs = Docs::new(world);
    // Local claims: active endpoints with an interface prefix.
    let local = local_claims(world, host, prefixes);
    let mut state = DesiredState::default();
    docs.plumb(&mut state, &local);
    docs.host_entries(&mut state, host);
    docs.rule_sets(&mut state);
    docs.sets(&mut state);
    docs.routes(&mut state, host, &local);
    state
}

/// The program of a contested interface.
pub fn drop_all() -> EndpointProgram {
    let closed = DirectionProgram {
        tiers: Vec::new(),
        profiles: Vec::new(),
        fail_closed: true,
    };
    EndpointProgram {
        inbound: closed.clone(),
        outbound: closed,
    }
}

fn ep_nets(ep: &WorkloadEndpoint) -> Vec<IpNet> {
    ep.ipv4_nets
        .iter()
        .map(|&n| IpNet::V4(n))
        .chain(ep.ipv6_nets.iter().map(|&n| IpNet::V6(n)))
        .collect()
}

/// Who claims what on this host: the active local endpoints with an interface prefix.
#[derive(Default)]
struct LocalClaims {
    /// Interface → claimant keys (sorted).
    ifaces: BTreeMap<InterfaceName, Vec<WorkloadEndpointKey>>,
    /// Address → its claimants.
    addrs: BTreeMap<IpNet, AddrClaims>,
}

#[derive(Default)]
struct AddrClaims {
    ifaces: BTreeSet<InterfaceName>,
    keys: Vec<WorkloadEndpointKey>,
}

fn local_claims(world: &World, host: &str, prefixes: &[String]) -> LocalClaims {
    let mut out = LocalClaims::default();
    for (k, v) in world {
        let (ResourceKey::WorkloadEndpoint(k), Value::WorkloadEndpoint(ep)) = (k, v) else {
            continue;
        };
        if k.host != host || ep.state != EndpointState::Active || !ep.name.has_prefix(prefixes) {
            continue;
        }
        out.ifaces
            .entry(ep.name.clone())
            .or_default()
            .push(k.clone());
        let mut nets = ep_nets(ep);
        nets.sort();
        nets.dedup();
        for n in nets {
            let c = out.addrs.entry(n).or_default();
            c.ifaces.insert(ep.name.clone());
            c.keys.push(k.clone());
        }
    }
    out
}

/// The conflicts the reference sees: interfaces with several claimants,
/// addresses claimed on several interfaces.
pub fn reference_conflicts(
    world: &World,
    host: &str,
    prefixes: &[String],
) -> Vec<EndpointConflict> {
    let local = local_claims(world, host, prefixes);
    let mut out: Vec<EndpointConflict> = local
        .ifaces
        .into_iter()
        .filter(|(_, keys)| keys.len() > 1)
        .map(|(i, keys)| EndpointConflict {
            subject: ConflictSubject::Interface(i),
            keys,
        })
        .collect();
    out.extend(
        local
            .addrs
            .into_iter()
            .filter(|(_, c)| c.ifaces.len() > 1)
            .map(|(n, c)| EndpointConflict {
                subject: ConflictSubject::Address(n),
                keys: c.keys,
            }),
    );
    out.sort();
    out
}

fn ref_side(s: &model::RuleSide) -> SideMatch {
    SideMatch {
        net: s.net,
        not_net: s.not_net,
        tag: s.tag.clone().map(IpSetId::Tag),
        not_tag: s.not_tag.clone().map(IpSetId::Tag),
        selector: s
            .selector
            .as_ref()
            .map(|x| IpSetId::Selector(x.canonical().into())),
        not_selector: s
            .not_selector
            .as_ref()
            .map(|x| IpSetId::Selector(x.canonical().into())),
        ports: s.ports.clone(),
        not_ports: s.not_ports.clone(),
    }
}

fn ref_rule(r: &model::Rule) -> Rule {
    Rule {
        action: r.action.clone(),
        ip_version: r.ip_version,
        protocol: r.protocol,
        not_protocol: r.not_protocol,
        src: ref_side(&r.src),
        dst: ref_side(&r.dst),
        icmp: r.icmp,
        not_icmp: r.not_icmp,
        log_prefix: r.log_prefix.clone(),
    }
}
