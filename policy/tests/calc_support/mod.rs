//! Shared helpers for the calculation tests: typed update builders, a
//! brute-force reference calculation (`reference`), and a mirror that
//! replays `Changes`.
#![allow(dead_code)]

mod reference;

// Each test file uses a part of it.
#[allow(unused_imports)]
pub use reference::{drop_all, reference_conflicts, reference_state, World};

use std::collections::{BTreeMap, BTreeSet};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use margay_policy::calc::CalcEngine;
use margay_policy::desired::{
    Changes, DesiredState, Direction, IpSetId, RuleAction, RuleSetId, RuleSetOwner,
    WorkloadEndpointKey,
};
use margay_policy::model::{
    self, EndpointState, IpPool, Labels, Order, Policy, ProfileRules, ResourceKey, TierMetadata,
    Update, Value, WorkloadEndpoint,
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
