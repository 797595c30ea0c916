//! Shared helpers for the calculation tests: typed update builders, a
//! brute-force reference calculation, and a mirror that replays `Changes`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use margay_policy::calc::{CalcEngine, ConflictSubject, EndpointConflict};
use margay_policy::desired::{
    Changes, DesiredState, Direction, DirectionProgram, EndpointProgram, IpSetId, LocalEndpoint,
    LocalHostEndpoint, RouteTarget, Rule, RuleAction, RuleSet, RuleSetId, RuleSetOwner, SideMatch,
    TierProgram, WorkloadEndpointKey,
};
use margay_policy::model::{
    self, EndpointState, HostEndpoint, HostEndpointKey, IpPool, Labels, Order, Policy,
    ProfileRules, ResourceKey, TierMetadata, Update, Value, WorkloadEndpoint,
};
use margay_policy::names::{Id, InterfaceName};
use margay_policy::selector::Selector;

pub const ME: &str = "me";

// ------------------------------------------------------------------ builders

pub fn id(s: &str) -> Id {
    Id::new(s).expect("test id")
}

pub fn iface(s: &str) -> InterfaceName {
    InterfaceName::new(s).expect("test interface")
}

pub fn net(s: &str) -> IpNet {
    s.parse().expect("test net")
}

pub fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("test selector")
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn ep_key(host: &str, workload: &str) -> WorkloadEndpointKey {
    WorkloadEndpointKey {
        host: host.into(),
        orchestrator: "k8s".into(),
        workload: workload.into(),
        endpoint: id("eth0"),
    }
}

/// An active endpoint with IPv4 addresses and profiles.
pub fn wep(name: &str, v4: &[&str], profiles: &[&str]) -> WorkloadEndpoint {
    WorkloadEndpoint {
        state: EndpointState::Active,
        name: iface(name),
        mac: None,
        profile_ids: profiles.iter().map(|p| id(p)).collect(),
        ipv4_nets: v4
            .iter()
            .map(|a| a.parse::<Ipv4Net>().expect("v4"))
            .collect(),
        ipv6_nets: Vec::new(),
        ipv4_gateway: None,
        ipv6_gateway: None,
        labels: Labels::new(),
    }
}

pub fn with_labels(mut ep: WorkloadEndpoint, pairs: &[(&str, &str)]) -> WorkloadEndpoint {
    ep.labels = labels(pairs);
    ep
}

pub fn inactive(mut ep: WorkloadEndpoint) -> WorkloadEndpoint {
    ep.state = EndpointState::Inactive;
    ep
}

pub fn with_v6(mut ep: WorkloadEndpoint, v6: &[&str]) -> WorkloadEndpoint {
    ep.ipv6_nets = v6
        .iter()
        .map(|a| a.parse::<Ipv6Net>().expect("v6"))
        .collect();
    ep
}

pub fn rule(action: RuleAction) -> model::Rule {
    model::Rule {
        action,
        ip_version: None,
        protocol: None,
        not_protocol: None,
        src: model::RuleSide::default(),
        dst: model::RuleSide::default(),
        icmp: None,
        not_icmp: None,
        log_prefix: None,
    }
}

pub fn allow() -> model::Rule {
    rule(RuleAction::Allow)
}

pub fn deny() -> model::Rule {
    rule(RuleAction::Deny)
}

pub fn src_tag(mut r: model::Rule, tag: &str) -> model::Rule {
    r.src.tag = Some(id(tag));
    r
}

pub fn src_sel(mut r: model::Rule, s: &str) -> model::Rule {
    r.src.selector = Some(sel(s));
    r
}

pub fn dst_sel(mut r: model::Rule, s: &str) -> model::Rule {
    r.dst.selector = Some(sel(s));
    r
}

pub fn upd(key: ResourceKey, value: Option<Value>) -> Update {
    Update { key, value }
}

pub fn u_ep(host: &str, workload: &str, ep: Option<WorkloadEndpoint>) -> Update {
    upd(
        ResourceKey::WorkloadEndpoint(ep_key(host, workload)),
        ep.map(Value::WorkloadEndpoint),
    )
}

pub fn u_rules(p: &str, inbound: Vec<model::Rule>, outbound: Vec<model::Rule>) -> Update {
    upd(
        ResourceKey::ProfileRules(id(p)),
        Some(Value::ProfileRules(ProfileRules { inbound, outbound })),
    )
}

pub fn u_tags(p: &str, tags: &[&str]) -> Update {
    upd(
        ResourceKey::ProfileTags(id(p)),
        Some(Value::ProfileTags(tags.iter().map(|t| id(t)).collect())),
    )
}

pub fn u_plabels(p: &str, pairs: &[(&str, &str)]) -> Update {
    upd(
        ResourceKey::ProfileLabels(id(p)),
        Some(Value::ProfileLabels(labels(pairs))),
    )
}

pub fn u_tier(t: &str, order: Order) -> Update {
    upd(
        ResourceKey::TierMetadata(id(t)),
        Some(Value::TierMetadata(TierMetadata { order })),
    )
}

pub fn u_policy(
    t: &str,
    p: &str,
    selector: &str,
    order: Order,
    inbound: Vec<model::Rule>,
    outbound: Vec<model::Rule>,
) -> Update {
    upd(
        ResourceKey::Policy {
            tier: id(t),
            policy: id(p),
        },
        Some(Value::Policy(Policy {
            selector: sel(selector),
            order,
            inbound,
            outbound,
        })),
    )
}

pub fn u_pool(cidr: &str, masquerade: bool) -> Update {
    upd(
        ResourceKey::IpPool(net(cidr)),
        Some(Value::IpPool(IpPool {
            cidr: net(cidr),
            masquerade,
        })),
    )
}

pub fn u_bird(host: &str, ip: &str) -> Update {
    upd(
        ResourceKey::HostIp(host.into()),
        Some(Value::HostIp(ip.parse().expect("ip"))),
    )
}

pub fn u_config(host: Option<&str>, name: &str, value: Option<&str>) -> Update {
    let key = match host {
        Some(h) => ResourceKey::HostConfig {
            host: h.into(),
            name: name.into(),
        },
        None => ResourceKey::GlobalConfig(name.into()),
    };
    upd(key, value.map(|v| Value::Config(v.into())))
}

pub fn rs_profile(p: &str, direction: Direction) -> RuleSetId {
    RuleSetId {
        owner: RuleSetOwner::Profile(id(p)),
        direction,
    }
}

pub fn rs_policy(t: &str, p: &str, direction: Direction) -> RuleSetId {
    RuleSetId {
        owner: RuleSetOwner::Policy {
            tier: id(t),
            policy: id(p),
        },
        direction,
    }
}

pub fn tag_set(t: &str) -> IpSetId {
    IpSetId::Tag(id(t))
}

pub fn sel_set(s: &str) -> IpSetId {
    IpSetId::Selector(sel(s).canonical().to_owned())
}

pub fn nets(list: &[&str]) -> BTreeSet<IpNet> {
    list.iter().map(|s| net(s)).collect()
}

pub fn engine_with(updates: impl IntoIterator<Item = Update>) -> CalcEngine {
    let mut e = CalcEngine::new(ME);
    for u in updates {
        e.apply(u);
    }
    e
}

// -------------------------------------------------------------------- mirror

/// Copies exactly the keys `changes` names from `state` into `mirror`.
pub fn apply_changes(mirror: &mut DesiredState, state: &DesiredState, changes: &Changes) {
    fn copy<K: Ord + Clone, V: Clone>(dst: &mut BTreeMap<K, V>, src: &BTreeMap<K, V>, k: &K) {
        match src.get(k) {
            Some(v) => {
                dst.insert(k.clone(), v.clone());
            }
            None => {
                dst.remove(k);
            }
        }
    }
    for k in &changes.endpoints {
        copy(&mut mirror.endpoints, &state.endpoints, k);
    }
    for k in &changes.programs {
        copy(&mut mirror.programs, &state.programs, k);
    }
    for k in &changes.rule_sets {
        copy(&mut mirror.rule_sets, &state.rule_sets, k);
    }
    for k in &changes.ip_sets {
        copy(&mut mirror.ip_sets, &state.ip_sets, k);
    }
    for (set, members) in &changes.ip_set_members {
        assert!(
            !changes.ip_sets.contains(set),
            "member changes reported for a recreated set {set:?}"
        );
        let src = state
            .ip_sets
            .get(set)
            .unwrap_or_else(|| panic!("member changes for absent set {set:?}"));
        let dst = mirror
            .ip_sets
            .get_mut(set)
            .unwrap_or_else(|| panic!("member changes for a set the mirror lacks {set:?}"));
        for m in members {
            if src.contains(m) {
                dst.insert(*m);
            } else {
                dst.remove(m);
            }
        }
    }
    for k in &changes.routes {
        copy(&mut mirror.routes, &state.routes, k);
    }
    for k in &changes.host_endpoints {
        copy(&mut mirror.host_endpoints, &state.host_endpoints, k);
    }
}

// ----------------------------------------------------------------- reference

/// The final datastore content: key → value (absent keys are not listed).
pub type World = BTreeMap<ResourceKey, Value>;

/// A deliberately naive, non-incremental calculation of the desired state,
/// written from the data model's rules, to check the engine against.
pub fn reference_state(world: &World, host: &str, prefixes: &[String]) -> DesiredState {
    let mut endpoints: BTreeMap<WorkloadEndpointKey, &WorkloadEndpoint> = BTreeMap::new();
    let mut host_endpoints: BTreeMap<HostEndpointKey, &HostEndpoint> = BTreeMap::new();
    let mut rules: BTreeMap<Id, &ProfileRules> = BTreeMap::new();
    let mut tags: BTreeMap<Id, &Vec<Id>> = BTreeMap::new();
    let mut plabels: BTreeMap<Id, &Labels> = BTreeMap::new();
    let mut tiers: BTreeMap<Id, Order> = BTreeMap::new();
    let mut policies: BTreeMap<(Id, Id), &Policy> = BTreeMap::new();
    let mut pools: Vec<&IpPool> = Vec::new();
    let mut bird: BTreeMap<String, IpAddr> = BTreeMap::new();
    for (k, v) in world {
        match (k, v) {
            (ResourceKey::WorkloadEndpoint(k), Value::WorkloadEndpoint(ep)) => {
                endpoints.insert(k.clone(), ep);
            }
            (ResourceKey::HostEndpoint(k), Value::HostEndpoint(hep)) => {
                host_endpoints.insert(k.clone(), hep);
            }
            (ResourceKey::ProfileRules(p), Value::ProfileRules(r)) => {
                rules.insert(p.clone(), r);
            }
            (ResourceKey::ProfileTags(p), Value::ProfileTags(t)) => {
                tags.insert(p.clone(), t);
            }
            (ResourceKey::ProfileLabels(p), Value::ProfileLabels(l)) => {
                plabels.insert(p.clone(), l);
            }
            (ResourceKey::TierMetadata(t), Value::TierMetadata(m)) => {
                tiers.insert(t.clone(), m.order);
            }
            (ResourceKey::Policy { tier, policy }, Value::Policy(p)) => {
                policies.insert((tier.clone(), policy.clone()), p);
            }
            (ResourceKey::IpPool(_), Value::IpPool(p)) => pools.push(p),
            (ResourceKey::HostIp(h), Value::HostIp(ip)) => {
                bird.insert(h.clone(), *ip);
            }
            _ => {}
        }
    }
    let eff_labels = |own: &Labels, profile_ids: &[Id]| {
        let mut l = Labels::new();
        for p in profile_ids {
            if let Some(pl) = plabels.get(p) {
                l.extend(pl.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        l.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        l
    };
    let cmp_order = |a: &Order, b: &Order| match (a, b) {
        (Order::Number(x), Order::Number(y)) => x.total_cmp(y),
        (Order::Number(_), Order::Default) => std::cmp::Ordering::Less,
        (Order::Default, Order::Number(_)) => std::cmp::Ordering::Greater,
        (Order::Default, Order::Default) => std::cmp::Ordering::Equal,
    };

    // The program of an endpoint with effective labels `l` listing `profile_ids`.
    let program = |l: &Labels, profile_ids: &[Id]| {
        let mut tier_list: Vec<(&Id, Order)> = tiers.iter().map(|(t, o)| (t, *o)).collect();
        tier_list.sort_by(|a, b| cmp_order(&a.1, &b.1).then(a.0.cmp(b.0)));
        let ok = !profile_ids.is_empty() && profile_ids.iter().all(|p| rules.contains_key(p));
        let dir = |d: Direction| {
            let mut tiers_out = Vec::new();
            for (t, _) in &tier_list {
                let mut pols: Vec<(&Id, Order)> = policies
                    .iter()
                    .filter(|((pt, _), p)| pt == *t && p.selector.matches(l))
                    .map(|((_, pid), p)| (pid, p.order))
                    .collect();
                pols.sort_by(|a, b| cmp_order(&a.1, &b.1).then(a.0.cmp(b.0)));
                if !pols.is_empty() {
                    tiers_out.push(TierProgram {
                        tier: (*t).clone(),
                        policies: pols
                            .iter()
                            .map(|(p, _)| RuleSetId {
                                owner: RuleSetOwner::Policy {
                                    tier: (*t).clone(),
                                    policy: (*p).clone(),
                                },
                                direction: d,
                            })
                            .collect(),
                    });
                }
            }
            DirectionProgram {
                tiers: tiers_out,
                profiles: if ok {
                    profile_ids
                        .iter()
                        .map(|p| RuleSetId {
                            owner: RuleSetOwner::Profile(p.clone()),
                            direction: d,
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                fail_closed: !ok,
            }
        };
        EndpointProgram {
            inbound: dir(Direction::Inbound),
            outbound: dir(Direction::Outbound),
        }
    };

    let mut state = DesiredState::default();
    // Local claims: active endpoints with an interface prefix.
    let local = local_claims(world, host, prefixes);
    let contested_addr = |n: &IpNet| local.addrs.get(n).is_some_and(|c| c.ifaces.len() > 1);
    // Plumbed: the only claimant of its interface, none of its addresses contested.
    let mut owners: BTreeMap<InterfaceName, WorkloadEndpointKey> = BTreeMap::new();
    for (ifc, keys) in &local.ifaces {
        let [k] = &keys[..] else {
            state.programs.insert(ifc.clone(), drop_all());
            continue;
        };
        if ep_nets(endpoints[k]).iter().any(contested_addr) {
            state.programs.insert(ifc.clone(), drop_all());
        } else {
            owners.insert(ifc.clone(), k.clone());
        }
    }
    for (ifc, k) in &owners {
        let ep = endpoints[k];
        state.endpoints.insert(
            ifc.clone(),
            LocalEndpoint {
                key: k.clone(),
                iface: ifc.clone(),
                mac: ep.mac,
                ipv4: ep.ipv4_nets.clone(),
                ipv6: ep.ipv6_nets.clone(),
            },
        );
        state.programs.insert(
            ifc.clone(),
            program(&eff_labels(&ep.labels, &ep.profile_ids), &ep.profile_ids),
        );
    }
    // This host's host endpoints.
    for (k, hep) in &host_endpoints {
        if k.host != host {
            continue;
        }
        let mut expected_addrs: Vec<IpAddr> = hep
            .expected_ipv4_addrs
            .iter()
            .chain(&hep.expected_ipv6_addrs)
            .copied()
            .collect();
        expected_addrs.sort();
        expected_addrs.dedup();
        state.host_endpoints.insert(
            k.endpoint.clone(),
            LocalHostEndpoint {
                id: k.endpoint.clone(),
                name: hep.name.clone(),
                expected_addrs,
                program: program(&eff_labels(&hep.labels, &hep.profile_ids), &hep.profile_ids),
            },
        );
    }
    // Rule sets referenced by programs.
    let host_programs = state.host_endpoints.values().map(|h| &h.program);
    for prog in state.programs.values().chain(host_programs) {
        for d in [&prog.inbound, &prog.outbound] {
            for id in d.tiers.iter().flat_map(|t| &t.policies).chain(&d.profiles) {
                let src: &[model::Rule] = match (&id.owner, id.direction) {
                    (RuleSetOwner::Profile(p), Direction::Inbound) => &rules[p].inbound,
                    (RuleSetOwner::Profile(p), Direction::Outbound) => &rules[p].outbound,
                    (RuleSetOwner::Policy { tier, policy }, dir) => {
                        let pol = policies[&(tier.clone(), policy.clone())];
                        if dir == Direction::Inbound {
                            &pol.inbound
                        } else {
                            &pol.outbound
                        }
                    }
                };
                state.rule_sets.insert(
                    id.clone(),
                    RuleSet {
                        rules: src.iter().map(ref_rule).collect(),
                    },
                );
            }
        }
    }
    // Sets used by rule sets, members from every endpoint.
    let mut used: BTreeSet<IpSetId> = BTreeSet::new();
    for rs in state.rule_sets.values() {
        for r in &rs.rules {
            for side in [&r.src, &r.dst] {
                for s in [&side.tag, &side.not_tag, &side.selector, &side.not_selector]
                    .into_iter()
                    .flatten()
                {
                    used.insert(s.clone());
                }
            }
        }
    }
    // Every endpoint of either kind: its profiles, own labels and set addresses.
    let mut all: Vec<(&[Id], &Labels, Vec<IpNet>)> = endpoints
        .values()
        .map(|ep| (&ep.profile_ids[..], &ep.labels, ep_nets(ep)))
        .collect();
    all.extend(host_endpoints.values().map(|h| {
        let addrs = h.expected_ipv4_addrs.iter().chain(&h.expected_ipv6_addrs);
        (
            &h.profile_ids[..],
            &h.labels,
            addrs.map(|&a| IpNet::from(a)).collect(),
        )
    }));
    for set in used {
        let mut members = BTreeSet::new();
        for (profile_ids, own, addrs) in &all {
            let member = match &set {
                IpSetId::Tag(t) => profile_ids
                    .iter()
                    .any(|p| tags.get(p).is_some_and(|ts| ts.contains(t))),
                IpSetId::Selector(s) => sel(s).matches(&eff_labels(own, profile_ids)),
                _ => false,
            };
            if member {
                members.extend(addrs.iter().copied());
            }
        }
        state.ip_sets.insert(set, members);
    }
    state
        .ip_sets
        .insert(IpSetId::AllPools, pools.iter().map(|p| p.cidr).collect());
    state.ip_sets.insert(
        IpSetId::MasqueradePools,
        pools
            .iter()
            .filter(|p| p.masquerade)
            .map(|p| p.cidr)
            .collect(),
    );
    // Routes: local claims first (none while they disagree), then remote
    // active ones via bird_ip inside a pool, the smaller key first.
    let mut claims: BTreeMap<IpNet, (WorkloadEndpointKey, RouteTarget)> = BTreeMap::new();
    for (k, ep) in &endpoints {
        if k.host == host || ep.state != EndpointState::Active {
            continue;
        }
        let Some(gw) = bird.get(&k.host) else {
            continue;
        };
        for n in ep_nets(ep) {
            let in_pool = pools.iter().any(|p| p.cidr.contains(&n));
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
