//! Scale harness shared by the benchmarks: synthetic Calico v1 datastores
//! built as typed [`Update`]s, at the scale the issue asks for, plus the
//! single updates the calculation benchmark times.
//!
//! The generated world is deterministic. With [`CalcScale::issue`]:
//! 100 local endpoints on [`LOCAL_HOST`], 50,000 remote endpoints on 500
//! hosts (each with a `bird_ip`), 2,000 profiles with 5 rules each (tags,
//! selectors, ports, nets), 5 tiers holding 200 policies, three pools.
//! Endpoint labels come from small vocabularies (`app` × `env` × the
//! profile's `ns`), giving a few hundred distinct label sets, as
//! deployments sharing pod templates do.

pub mod estimates;
pub mod report;
pub mod table;
pub mod timing;
pub mod verdict;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use margay_policy::desired::{Direction, PortRange, Protocol, RuleAction, WorkloadEndpointKey};
use margay_policy::model::{
    BgpKey, EndpointState, IpPool, Labels, Order, Policy, ProfileRules, ResourceKey, Rule,
    RuleSide, TierMetadata, Update, Value, WorkloadEndpoint,
};
use margay_policy::names::{Id, InterfaceName};
use margay_policy::selector::Selector;

/// The host the calculation runs for.
pub const LOCAL_HOST: &str = "bench-local";

/// Distinct `app` label values.
const APPS: usize = 200;
/// Distinct `env` label values.
const ENVS: usize = 3;
/// Distinct `ns` label values (carried by profiles).
const NAMESPACES: usize = 50;
/// Distinct tags.
const TAGS: usize = 500;

/// How big a world to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalcScale {
    /// Endpoints on [`LOCAL_HOST`].
    pub local_endpoints: usize,
    /// Endpoints on other hosts.
    pub remote_endpoints: usize,
    /// Number of other hosts.
    pub remote_hosts: usize,
    /// Profiles (5 rules each).
    pub profiles: usize,
    /// Tiers.
    pub tiers: usize,
    /// Policies, spread over the tiers.
    pub policies: usize,
}

impl CalcScale {
    /// The scale of the issue's performance targets.
    pub fn issue() -> Self {
        CalcScale {
            local_endpoints: 100,
            remote_endpoints: 50_000,
            remote_hosts: 500,
            profiles: 2_000,
            tiers: 5,
            policies: 200,
        }
    }

    /// A small world for quick checks.
    pub fn small() -> Self {
        CalcScale {
            local_endpoints: 10,
            remote_endpoints: 500,
            remote_hosts: 10,
            profiles: 50,
            tiers: 2,
            policies: 10,
        }
    }
}

fn id(s: &str) -> Id {
    Id::new(s).expect("generated ids use the id charset")
}

fn selector(s: &str) -> Selector {
    Selector::parse(s).expect("generated selectors parse")
}

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn v4(base: u32, i: usize) -> Ipv4Net {
    let addr = Ipv4Addr::from(base.wrapping_add(i as u32));
    Ipv4Net::new(addr, 32).expect("/32")
}

fn v6(base: u128, i: usize) -> Ipv6Net {
    let addr = Ipv6Addr::from(base.wrapping_add(i as u128));
    Ipv6Net::new(addr, 128).expect("/128")
}

/// Name of profile `p`.
pub fn profile_name(p: usize) -> String {
    format!("prof-{p}")
}

/// Name of remote host `h`.
pub fn host_name(h: usize) -> String {
    format!("host-{h}")
}

/// Key of remote endpoint `i`.
pub fn remote_key(scale: &CalcScale, i: usize) -> WorkloadEndpointKey {
    WorkloadEndpointKey {
        host: host_name(i % scale.remote_hosts),
        orchestrator: "k8s".into(),
        workload: format!("pod-{i}"),
        endpoint: id("eth0"),
    }
}

/// Key of local endpoint `i`.
pub fn local_key(i: usize) -> WorkloadEndpointKey {
    WorkloadEndpointKey {
        host: LOCAL_HOST.into(),
        orchestrator: "k8s".into(),
        workload: format!("local-{i}"),
        endpoint: id("eth0"),
    }
}

/// The profile a local endpoint uses: spread over all profiles.
fn local_profile(scale: &CalcScale, i: usize) -> usize {
    (i * scale.profiles / scale.local_endpoints.max(1)) % scale.profiles
}

fn endpoint(
    name: String,
    v4: Ipv4Net,
    v6: Option<Ipv6Net>,
    profile: usize,
    labels: Labels,
) -> WorkloadEndpoint {
    WorkloadEndpoint {
        state: EndpointState::Active,
        name: InterfaceName::new(&name).expect("generated interface names are valid"),
        mac: None,
        profile_ids: vec![id(&profile_name(profile))],
        ipv4_nets: vec![v4],
        ipv6_nets: v6.into_iter().collect(),
        ipv4_gateway: None,
        ipv6_gateway: None,
        labels,
    }
}

/// Remote endpoint `i`. `variant` 0 is the loaded document; 1 moves its
/// IPv4 address; 2 changes its `app` label; 3 both.
pub fn remote_endpoint(scale: &CalcScale, i: usize, variant: u8) -> Update {
    let addr_base = if variant & 1 == 0 {
        0x0a80_0000
    } else {
        0x0ac0_0000
    }; // 10.128/10.192
    let app = if variant & 2 == 0 {
        i % APPS
    } else {
        (i + 1) % APPS
    };
    let doc = endpoint(
        format!("cali{i:011x}"),
        v4(addr_base, i),
        matches!(i % 4, 0).then(|| v6(0xfd00_0128 << 96, i)),
        i % scale.profiles,
        labels(&[
            ("app", format!("app-{app}")),
            ("env", format!("env-{}", i % ENVS)),
        ]),
    );
    Update {
        key: ResourceKey::WorkloadEndpoint(remote_key(scale, i)),
        value: Some(Value::WorkloadEndpoint(doc)),
    }
}

/// Deletes remote endpoint `i`.
pub fn remote_endpoint_delete(scale: &CalcScale, i: usize) -> Update {
    Update {
        key: ResourceKey::WorkloadEndpoint(remote_key(scale, i)),
        value: None,
    }
}

/// Local endpoint `i`.
pub fn local_endpoint(scale: &CalcScale, i: usize) -> Update {
    let doc = endpoint(
        format!("cali{i:011x}"),
        v4(0x0a40_0000, i), // 10.64.0.0
        matches!(i % 2, 0).then(|| v6(0xfd00_0064 << 96, i)),
        local_profile(scale, i),
        labels(&[
            ("app", format!("app-{}", i % APPS)),
            ("env", format!("env-{}", i % ENVS)),
            ("local", "yes".into()),
        ]),
    );
    Update {
        key: ResourceKey::WorkloadEndpoint(local_key(i)),
        value: Some(Value::WorkloadEndpoint(doc)),
    }
}

fn allow() -> Rule {
    Rule {
        action: RuleAction::Allow,
        ip_version: None,
        protocol: None,
        not_protocol: None,
        src: RuleSide::default(),
        dst: RuleSide::default(),
        icmp: None,
        not_icmp: None,
        log_prefix: None,
    }
}

/// The 5 rules of profile `p`. `variant` changes the port of the first rule
/// (bit 0) and the selector of the second (bit 1: a selector no other rule
/// uses, so its set must be created and filled).
pub fn profile_rules(p: usize, variant: u8) -> Update {
    let port = 80 + (p % 10) as u16 + if variant & 1 == 0 { 0 } else { 1000 };
    let from_tag = Rule {
        protocol: Some(Protocol(6)),
        src: RuleSide {
            tag: Some(id(&format!("tag-{}", (p + 1) % TAGS))),
            ..RuleSide::default()
        },
        dst: RuleSide {
            ports: vec![PortRange { lo: port, hi: port }],
            ..RuleSide::default()
        },
        ..allow()
    };
    let sel_text = if variant & 2 == 0 {
        format!("app == 'app-{}'", (p * 7) % APPS)
    } else {
        format!(
            "app == 'app-{}' && env != 'env-{}'",
            (p * 7) % APPS,
            p % ENVS
        )
    };
    let from_selector = Rule {
        src: RuleSide {
            selector: Some(selector(&sel_text)),
            ..RuleSide::default()
        },
        ..allow()
    };
    let deny_net = Rule {
        action: RuleAction::Deny,
        src: RuleSide {
            net: Some(IpNet::V4(
                Ipv4Net::new(Ipv4Addr::new(192, 168, (p % 256) as u8, 0), 24).expect("/24"),
            )),
            ..RuleSide::default()
        },
        ..allow()
    };
    let to_ns = Rule {
        dst: RuleSide {
            selector: Some(selector(&format!(
                "ns == 'ns-{}' && env != 'env-0'",
                p % NAMESPACES
            ))),
            ..RuleSide::default()
        },
        ..allow()
    };
    Update {
        key: ResourceKey::ProfileRules(id(&profile_name(p))),
        value: Some(Value::ProfileRules(ProfileRules {
            inbound: vec![from_tag, from_selector, deny_net],
            outbound: vec![to_ns, allow()],
        })),
    }
}

fn profile_docs(p: usize) -> [Update; 3] {
    let name = id(&profile_name(p));
    [
        profile_rules(p, 0),
        Update {
            key: ResourceKey::ProfileTags(name.clone()),
            value: Some(Value::ProfileTags(vec![
                id(&format!("tag-{}", p % TAGS)),
                id(&format!("all-{}", p % 10)),
            ])),
        },
        Update {
            key: ResourceKey::ProfileLabels(name),
            value: Some(Value::ProfileLabels(labels(&[(
                "ns",
                format!("ns-{}", p % NAMESPACES),
            )]))),
        },
    ]
}

/// Policy `j` (in tier `j % tiers`).
pub fn policy(scale: &CalcScale, j: usize) -> Update {
    let tier = j % scale.tiers.max(1);
    let sel = if j % 10 == 9 {
        format!("env == 'env-{}' && has(local)", j % ENVS)
    } else {
        format!("app == 'app-{}'", j % APPS)
    };
    let from = Rule {
        src: RuleSide {
            selector: Some(selector(&format!("app == 'app-{}'", (j + 3) % APPS))),
            ..RuleSide::default()
        },
        ..allow()
    };
    let next = Rule {
        action: RuleAction::NextTier,
        ..allow()
    };
    let log = Rule {
        action: RuleAction::Log,
        log_prefix: Some(format!("pol-{j}")),
        ..allow()
    };
    Update {
        key: ResourceKey::Policy {
            tier: id(&format!("tier-{tier}")),
            policy: id(&format!("pol-{j}")),
        },
        value: Some(Value::Policy(Policy {
            selector: selector(&sel),
            order: Order::Number((j / scale.tiers.max(1)) as f64),
            inbound: vec![log, from, next.clone()],
            outbound: vec![next],
        })),
    }
}

fn pool(cidr: &str, masquerade: bool) -> Update {
    let cidr: IpNet = cidr.parse().expect("pool cidr");
    Update {
        key: ResourceKey::IpPool(cidr),
        value: Some(Value::IpPool(IpPool { cidr, masquerade })),
    }
}

/// The whole world, in the order a datastore snapshot would list it
/// (configuration and policy first, then endpoints).
pub fn calc_load(scale: &CalcScale) -> Vec<Update> {
    let mut out = vec![
        Update {
            key: ResourceKey::Ready,
            value: Some(Value::Ready(true)),
        },
        Update {
            key: ResourceKey::GlobalConfig("InterfacePrefix".into()),
            value: Some(Value::Config("cali".into())),
        },
        pool("10.64.0.0/10", true),
        pool("10.128.0.0/9", false),
        pool("fd00::/16", true),
    ];
    for h in 0..scale.remote_hosts {
        let ip = Ipv4Addr::new(172, 16, (h / 256) as u8, (h % 256) as u8);
        out.push(Update {
            key: ResourceKey::HostIp(host_name(h)),
            value: Some(Value::HostIp(IpAddr::V4(ip))),
        });
    }
    for p in 0..scale.profiles {
        out.extend(profile_docs(p));
    }
    for t in 0..scale.tiers {
        out.push(Update {
            key: ResourceKey::TierMetadata(id(&format!("tier-{t}"))),
            value: Some(Value::TierMetadata(TierMetadata {
                order: Order::Number((t * 10) as f64),
            })),
        });
    }
    for j in 0..scale.policies {
        out.push(policy(scale, j));
    }
    for i in 0..scale.local_endpoints {
        out.push(local_endpoint(scale, i));
    }
    for i in 0..scale.remote_endpoints {
        out.push(remote_endpoint(scale, i, 0));
    }
    out
}

/// The datastore path of a key (relative to `/calico/v1`), as etcd would
/// list it: a snapshot arrives sorted by this.
pub fn etcd_path(key: &ResourceKey) -> String {
    match key {
        ResourceKey::Ready => "/Ready".into(),
        ResourceKey::GlobalConfig(n) => format!("/config/{n}"),
        ResourceKey::HostConfig { host, name } => format!("/host/{host}/config/{name}"),
        ResourceKey::HostIp(h) => format!("/host/{h}/bird_ip"),
        ResourceKey::WorkloadEndpoint(k) => format!(
            "/host/{}/workload/{}/{}/endpoint/{}",
            k.host, k.orchestrator, k.workload, k.endpoint
        ),
        ResourceKey::HostEndpoint(k) => format!("/host/{}/endpoint/{}", k.host, k.endpoint),
        ResourceKey::ProfileRules(p) => format!("/policy/profile/{p}/rules"),
        ResourceKey::ProfileTags(p) => format!("/policy/profile/{p}/tags"),
        ResourceKey::ProfileLabels(p) => format!("/policy/profile/{p}/labels"),
        ResourceKey::TierMetadata(t) => format!("/policy/tier/{t}/metadata"),
        ResourceKey::Policy { tier, policy } => format!("/policy/tier/{tier}/policy/{policy}"),
        ResourceKey::IpPool(net) => {
            let v = if matches!(net, IpNet::V4(_)) {
                "v4"
            } else {
                "v6"
            };
            format!("/ipam/{v}/pool/{}", net.to_string().replace('/', "-"))
        }
        ResourceKey::Bgp(k) => format!("/../bgp/v1/{}", bgp_path(k)),
    }
}

/// The path of a BGP key under `/calico/bgp/v1` (beside `/calico/v1`, hence
/// the `/..` in [`etcd_path`]).
pub fn bgp_path(key: &BgpKey) -> String {
    let family = |ip: &IpAddr| if ip.is_ipv4() { "v4" } else { "v6" };
    match key {
        BgpKey::GlobalAsNumber => "global/as_num".into(),
        BgpKey::NodeMesh => "global/node_mesh".into(),
        BgpKey::GlobalPeer(ip) => format!("global/peer_{}/{ip}", family(ip)),
        BgpKey::HostAddressV4(h) => format!("host/{h}/ip_addr_v4"),
        BgpKey::HostAddressV6(h) => format!("host/{h}/ip_addr_v6"),
        BgpKey::HostAsNumber(h) => format!("host/{h}/as_num"),
        BgpKey::HostPeer { host, peer } => format!("host/{host}/peer_{}/{peer}", family(peer)),
    }
}

/// The whole world in etcd's order (sorted by path): endpoints arrive
/// before the profiles and policies they use.
pub fn calc_load_etcd_order(scale: &CalcScale) -> Vec<Update> {
    let mut v: Vec<(String, Update)> = calc_load(scale)
        .into_iter()
        .map(|u| (etcd_path(&u.key), u))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.into_iter().map(|(_, u)| u).collect()
}

/// Profiles used by local endpoints (their rule changes are visible).
pub fn used_profiles(scale: &CalcScale) -> Vec<usize> {
    let mut v: Vec<usize> = (0..scale.local_endpoints)
        .map(|i| local_profile(scale, i))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Which direction-rule sets a profile contributes (for assertions).
pub fn profile_rule_set_ids(p: usize) -> [margay_policy::desired::RuleSetId; 2] {
    let owner = margay_policy::desired::RuleSetOwner::Profile(id(&profile_name(p)));
    [
        margay_policy::desired::RuleSetId {
            owner: owner.clone(),
            direction: Direction::Inbound,
        },
        margay_policy::desired::RuleSetId {
            owner,
            direction: Direction::Outbound,
        },
    ]
}

/// Counts of what a loaded world holds, for reports.
pub fn describe(updates: &[Update]) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for u in updates {
        let kind = match &u.key {
            ResourceKey::WorkloadEndpoint(k) if k.host == LOCAL_HOST => "local endpoints",
            ResourceKey::WorkloadEndpoint(_) => "remote endpoints",
            ResourceKey::ProfileRules(_) => "profiles",
            ResourceKey::Policy { .. } => "policies",
            ResourceKey::TierMetadata(_) => "tiers",
            _ => "other keys",
        };
        *out.entry(kind).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_policy::calc::CalcEngine;

    #[test]
    fn the_small_world_loads_and_single_updates_apply() {
        let scale = CalcScale::small();
        let load = calc_load(&scale);
        let counts = describe(&load);
        assert_eq!(counts["local endpoints"], 10);
        assert_eq!(counts["remote endpoints"], 500);
        assert_eq!(counts["profiles"], 50);
        let mut e = CalcEngine::new(LOCAL_HOST);
        for u in load {
            e.apply(u);
        }
        let stats = e.stats();
        assert_eq!(stats.local_endpoints, 10);
        assert_eq!(stats.remote_endpoints, 500);
        assert!(stats.ip_sets > 2 && stats.ip_set_members > 0, "{stats:?}");
        assert!(e.problems().is_empty(), "{:?}", e.problems());
        let p = used_profiles(&scale)[0];
        assert!(e
            .state()
            .rule_sets
            .contains_key(&profile_rule_set_ids(p)[0]));
        e.take_changes();
        e.apply(remote_endpoint(&scale, 3, 1));
        let c = e.take_changes();
        assert_eq!(c.routes.len(), 2, "the old and the new address");
        e.apply(profile_rules(p, 1));
        assert!(!e.take_changes().rule_sets.is_empty());
    }

    #[test]
    fn etcd_order_reaches_the_same_state() {
        let scale = CalcScale::small();
        let load = |updates: Vec<Update>| {
            let mut e = CalcEngine::new(LOCAL_HOST);
            for u in updates {
                e.apply(u);
            }
            e
        };
        let etcd = calc_load_etcd_order(&scale);
        assert!(matches!(etcd[0].key, ResourceKey::Ready));
        assert!(matches!(
            etcd.last().map(|u| &u.key),
            Some(ResourceKey::Policy { .. })
        ));
        assert_eq!(load(etcd).state(), load(calc_load(&scale)).state());
    }
}
