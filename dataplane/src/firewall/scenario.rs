//! Hand-built desired states for tests and benchmarks.
//!
//! The calculation builds [`DesiredState`] in production; tests of the
//! firewall (unit, property, conformance) and the benchmark build it here
//! instead, with [`changes_between`] deriving the [`Changes`] the
//! calculation would have reported. Panics on invalid literals: callers pass
//! constants.
//!
//! Built only for unit tests and with the `test-support` feature (which the
//! dataplane's integration tests and the benchmarks turn on), never into
//! the agent.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use margay_policy::desired::{
    Changes, DesiredState, Direction, DirectionProgram, EndpointProgram, IpSetId, LocalEndpoint,
    LocalHostEndpoint, Rule, RuleAction, RuleSet, RuleSetId, RuleSetOwner, SideMatch, TierProgram,
    WorkloadEndpointKey,
};
use margay_policy::names::{Id, InterfaceName};

/// A validated id from a literal.
pub fn id(s: &str) -> Id {
    Id::new(s).unwrap_or_else(|e| panic!("bad test id: {e}"))
}

/// A validated interface name from a literal.
pub fn iface(s: &str) -> InterfaceName {
    InterfaceName::new(s).unwrap_or_else(|e| panic!("bad test interface: {e}"))
}

/// A net from a literal.
pub fn net(s: &str) -> IpNet {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test net {s}: {e}"))
}

/// A rule doing `action` with no matches.
pub fn rule(action: RuleAction) -> Rule {
    Rule {
        action,
        ip_version: None,
        protocol: None,
        not_protocol: None,
        src: SideMatch::default(),
        dst: SideMatch::default(),
        icmp: None,
        not_icmp: None,
        log_prefix: None,
    }
}

/// The rule set id of a profile's list.
pub fn profile_rs(profile: &str, direction: Direction) -> RuleSetId {
    RuleSetId {
        owner: RuleSetOwner::Profile(id(profile)),
        direction,
    }
}

/// The rule set id of a policy's list.
pub fn policy_rs(tier: &str, policy: &str, direction: Direction) -> RuleSetId {
    RuleSetId {
        owner: RuleSetOwner::Policy {
            tier: id(tier),
            policy: id(policy),
        },
        direction,
    }
}

/// Builds a [`DesiredState`] step by step.
#[derive(Debug, Clone, Default)]
pub struct DesiredBuilder {
    /// The state so far.
    pub state: DesiredState,
}

impl DesiredBuilder {
    /// An empty state with the two (empty) pool sets.
    pub fn new() -> Self {
        let mut b = DesiredBuilder::default();
        b.state.ip_sets.insert(IpSetId::AllPools, BTreeSet::new());
        b.state
            .ip_sets
            .insert(IpSetId::MasqueradePools, BTreeSet::new());
        b
    }

    /// Sets a profile's inbound and outbound rules.
    pub fn profile(&mut self, name: &str, inbound: Vec<Rule>, outbound: Vec<Rule>) -> &mut Self {
        for (d, rules) in [
            (Direction::Inbound, inbound),
            (Direction::Outbound, outbound),
        ] {
            self.state
                .rule_sets
                .insert(profile_rs(name, d), RuleSet { rules });
        }
        self
    }

    /// Sets a policy's inbound and outbound rules.
    pub fn policy(
        &mut self,
        tier: &str,
        name: &str,
        inbound: Vec<Rule>,
        outbound: Vec<Rule>,
    ) -> &mut Self {
        for (d, rules) in [
            (Direction::Inbound, inbound),
            (Direction::Outbound, outbound),
        ] {
            self.state
                .rule_sets
                .insert(policy_rs(tier, name, d), RuleSet { rules });
        }
        self
    }

    /// Adds a local endpoint on `ifname` with IPv4 `addr` (/32) using
    /// `profiles` (none: the program fails closed).
    pub fn endpoint(&mut self, ifname: &str, addr: &str, profiles: &[&str]) -> &mut Self {
        let i = iface(ifname);
        let ep = LocalEndpoint {
            key: WorkloadEndpointKey {
                host: "host1".to_owned(),
                orchestrator: "test".to_owned(),
                workload: ifname.to_owned(),
                endpoint: id(ifname),
            },
            iface: i.clone(),
            mac: None,
            ipv4: vec![addr
                .parse()
                .unwrap_or_else(|e| panic!("bad addr {addr}: {e}"))],
            ipv6: vec![],
        };
        let program = |d: Direction| DirectionProgram {
            tiers: vec![],
            profiles: profiles.iter().map(|p| profile_rs(p, d)).collect(),
            fail_closed: profiles.is_empty(),
        };
        self.state.endpoints.insert(i.clone(), ep);
        self.state.programs.insert(
            i,
            EndpointProgram {
                inbound: program(Direction::Inbound),
                outbound: program(Direction::Outbound),
            },
        );
        self
    }

    /// Adds a host endpoint `id` on interface `name` (or, without one, on
    /// whichever interfaces carry one of `addrs`) using `profiles` (none:
    /// its program fails closed).
    pub fn host_endpoint(
        &mut self,
        hep: &str,
        name: Option<&str>,
        addrs: &[&str],
        profiles: &[&str],
    ) -> &mut Self {
        let mut expected_addrs: Vec<std::net::IpAddr> = addrs
            .iter()
            .map(|a| a.parse().unwrap_or_else(|e| panic!("bad addr {a}: {e}")))
            .collect();
        expected_addrs.sort_by_key(|a| (a.is_ipv6(), *a));
        expected_addrs.dedup();
        let program = |d: Direction| DirectionProgram {
            tiers: vec![],
            profiles: profiles.iter().map(|p| profile_rs(p, d)).collect(),
            fail_closed: profiles.is_empty(),
        };
        let h = LocalHostEndpoint {
            id: id(hep),
            name: name.map(iface),
            expected_addrs,
            program: EndpointProgram {
                inbound: program(Direction::Inbound),
                outbound: program(Direction::Outbound),
            },
        };
        self.state.host_endpoints.insert(id(hep), h);
        self
    }

    /// Puts `policies` of `tier` (in order) in front of a host endpoint's
    /// profiles, both directions.
    pub fn host_tier(&mut self, hep: &str, tier: &str, policies: &[&str]) -> &mut Self {
        let Some(h) = self.state.host_endpoints.get_mut(&id(hep)) else {
            panic!("tier for unknown host endpoint {hep}");
        };
        for (d, prog) in [
            (Direction::Inbound, &mut h.program.inbound),
            (Direction::Outbound, &mut h.program.outbound),
        ] {
            prog.tiers.push(TierProgram {
                tier: id(tier),
                policies: policies.iter().map(|x| policy_rs(tier, x, d)).collect(),
            });
        }
        self
    }

    /// Puts `policies` of `tier` (in order) in front of an endpoint's
    /// profiles, both directions.
    pub fn tier(&mut self, ifname: &str, tier: &str, policies: &[&str]) -> &mut Self {
        let Some(p) = self.state.programs.get_mut(&iface(ifname)) else {
            panic!("tier for unknown endpoint {ifname}");
        };
        for (d, prog) in [
            (Direction::Inbound, &mut p.inbound),
            (Direction::Outbound, &mut p.outbound),
        ] {
            prog.tiers.push(TierProgram {
                tier: id(tier),
                policies: policies.iter().map(|x| policy_rs(tier, x, d)).collect(),
            });
        }
        self
    }

    /// Sets the members of an address set.
    pub fn set(&mut self, set: IpSetId, members: &[&str]) -> &mut Self {
        self.state
            .ip_sets
            .insert(set, members.iter().map(|m| net(m)).collect());
        self
    }

    /// The state built.
    pub fn build(&self) -> DesiredState {
        self.state.clone()
    }
}

fn changed_keys<K: Ord + Clone, V: PartialEq>(
    a: &BTreeMap<K, V>,
    b: &BTreeMap<K, V>,
) -> BTreeSet<K> {
    let mut out: BTreeSet<K> = BTreeSet::new();
    for (k, v) in a {
        if b.get(k) != Some(v) {
            out.insert(k.clone());
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            out.insert(k.clone());
        }
    }
    out
}

/// The [`Changes`] that take `old` to `new`, as the calculation reports
/// them: set creations/removals in `ip_sets`, member flips of surviving sets
/// in `ip_set_members`.
pub fn changes_between(old: &DesiredState, new: &DesiredState) -> Changes {
    let mut c = Changes {
        endpoints: changed_keys(&old.endpoints, &new.endpoints),
        programs: changed_keys(&old.programs, &new.programs),
        rule_sets: changed_keys(&old.rule_sets, &new.rule_sets),
        routes: changed_keys(&old.routes, &new.routes),
        host_endpoints: changed_keys(&old.host_endpoints, &new.host_endpoints),
        ..Changes::default()
    };
    for (set, members) in &new.ip_sets {
        match old.ip_sets.get(set) {
            None => {
                c.ip_sets.insert(set.clone());
            }
            Some(before) if before != members => {
                let flipped: BTreeSet<IpNet> =
                    before.symmetric_difference(members).copied().collect();
                c.ip_set_members.insert(set.clone(), flipped);
            }
            Some(_) => {}
        }
    }
    for set in old.ip_sets.keys() {
        if !new.ip_sets.contains_key(set) {
            c.ip_sets.insert(set.clone());
        }
    }
    c
}

/// The scale scenario of the benchmarks: `endpoints` endpoints over 100
/// profiles of 10 rules per direction (tcp port from a tag), 100 tags of
/// 1,000 members each. With 1,000 endpoints this lowers to about 14,000
/// generic rules and 100,000 set members.
pub fn scale_state(endpoints: usize) -> DesiredState {
    const PROFILES: usize = 100;
    const RULES: usize = 10;
    const TAGS: usize = 100;
    const MEMBERS: usize = 1_000;
    let mut b = DesiredBuilder::new();
    for p in 0..PROFILES {
        let rules = |dir: usize| -> Vec<Rule> {
            (0..RULES)
                .map(|r| {
                    let mut x = rule(RuleAction::Allow);
                    x.ip_version = Some(margay_policy::desired::IpVersion::V4);
                    x.protocol = Some(margay_policy::desired::Protocol(6));
                    x.src.tag = Some(IpSetId::Tag(id(&format!("tag{}", (p + r + dir) % TAGS))));
                    let port = 1000 + u16::try_from(r).unwrap_or(0);
                    x.dst.ports = vec![margay_policy::desired::PortRange { lo: port, hi: port }];
                    x
                })
                .collect()
        };
        b.profile(&format!("prof{p}"), rules(0), rules(1));
    }
    for t in 0..TAGS {
        let members: BTreeSet<IpNet> = (0..MEMBERS)
            .map(|m| {
                let n = t * MEMBERS + m;
                net(&format!(
                    "10.{}.{}.{}/32",
                    100 + n / 65536,
                    (n / 256) % 256,
                    n % 256
                ))
            })
            .collect();
        b.state
            .ip_sets
            .insert(IpSetId::Tag(id(&format!("tag{t}"))), members);
    }
    for e in 0..endpoints {
        let addr = format!("10.0.{}.{}/32", e / 250, 1 + e % 250);
        b.endpoint(
            &format!("cali{e:05}"),
            &addr,
            &[&format!("prof{}", e % PROFILES)],
        );
    }
    b.build()
}
