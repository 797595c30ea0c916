//! Host endpoint lowering checked by running packets through the lowered
//! ruleset: failsafe first, then the program; unbound interfaces, `lo` and
//! forwarded traffic untouched; the workload-to-host `RETURN` path.

use std::net::SocketAddr;

use super::tests::assert_same;
use super::*;
use crate::firewall::diff::targets;
use crate::firewall::model::{CtState, Hook};
use crate::firewall::scenario::{changes_between, rule, DesiredBuilder};
use crate::firewall::sim::{run_hook, Packet, Verdict};
use margay_policy::desired::{PortRange, Protocol, Rule, RuleAction};

const HOST_ADDR: &str = "192.0.2.10";
const PEER: &str = "192.0.2.1";
const ETCD: &str = "198.51.100.7:12379";

fn tcp_port(action: RuleAction, port: u16) -> Rule {
    let mut r = rule(action);
    r.protocol = Some(Protocol(6));
    r.dst.ports = vec![PortRange { lo: port, hi: port }];
    r
}

/// A workload (cali-a) and a host endpoint "fabric" on eth0 whose profile
/// lets tcp/80 in and tcp/443 out.
fn host_scenario() -> DesiredBuilder {
    let mut b = DesiredBuilder::new();
    b.profile(
        "wl",
        vec![rule(RuleAction::Allow)],
        vec![rule(RuleAction::Allow)],
    )
    .endpoint("cali-a", "10.0.0.1/32", &["wl"])
    .profile(
        "web",
        vec![tcp_port(RuleAction::Allow, 80)],
        vec![tcp_port(RuleAction::Allow, 443)],
    )
    .host_endpoint("fabric", Some("eth0"), &[], &["web"]);
    b
}

fn ifaces(list: &[(&str, &[&str])]) -> InterfaceAddresses {
    list.iter()
        .map(|(n, a)| {
            let addrs = a.iter().map(|x| x.parse().expect("addr")).collect();
            ((*n).to_owned(), addrs)
        })
        .collect()
}

fn host_ifaces() -> InterfaceAddresses {
    ifaces(&[
        ("lo", &["127.0.0.1"]),
        ("eth0", &[HOST_ADDR]),
        ("eth1", &["198.51.100.10"]),
    ])
}

fn settings() -> FirewallSettings {
    FirewallSettings {
        own_endpoints: vec![ETCD.parse::<SocketAddr>().expect("endpoint")],
        ..FirewallSettings::default()
    }
}

fn lower_with(
    desired: &DesiredState,
    settings: &FirewallSettings,
    addrs: &InterfaceAddresses,
) -> Ruleset {
    let mut l = Lowerer::new();
    l.set_interface_addresses(addrs);
    l.lower_all(desired, settings);
    l.ruleset
}

fn input(rs: &Ruleset, mut p: Packet) -> Verdict {
    run_hook(rs, Hook::Input, &mut p)
}

fn output(rs: &Ruleset, mut p: Packet) -> Verdict {
    run_hook(rs, Hook::Output, &mut p)
}

fn to_host(iif: &str, dport: u16) -> Packet {
    Packet::tcp(iif, "", PEER, HOST_ADDR, dport)
}

fn from_host(oif: &str, dport: u16) -> Packet {
    Packet::tcp("", oif, HOST_ADDR, PEER, dport)
}

#[test]
fn inbound_failsafe_then_policy_on_the_bound_interface_only() {
    let rs = lower_with(&host_scenario().build(), &settings(), &host_ifaces());
    assert_eq!(input(&rs, to_host("eth0", 80)), Verdict::Accept, "allowed");
    assert_eq!(
        input(&rs, to_host("eth0", 8080)),
        Verdict::Drop,
        "not allowed"
    );
    assert_eq!(input(&rs, to_host("eth0", 22)), Verdict::Accept, "failsafe");
    let mut dhcp = to_host("eth0", 68);
    dhcp.proto = 17;
    assert_eq!(input(&rs, dhcp), Verdict::Accept, "failsafe udp/68");
    let mut reply = to_host("eth0", 8080);
    reply.ct = Some(CtState::EstablishedRelated);
    assert_eq!(input(&rs, reply), Verdict::Accept, "replies come back");
    let mut etcd_reply = Packet::tcp("eth0", "", "198.51.100.7", HOST_ADDR, 40000);
    etcd_reply.sport = 12379;
    assert_eq!(input(&rs, etcd_reply), Verdict::Accept, "own endpoint");
    let mut nd = Packet::tcp("eth0", "", "fe80::1", "fe80::2", 0);
    (nd.proto, nd.icmp) = (58, Some((135, 0)));
    assert_eq!(input(&rs, nd), Verdict::Accept, "neighbour solicitation");
    assert_eq!(
        input(&rs, to_host("eth1", 8080)),
        Verdict::Accept,
        "unbound"
    );
    assert_eq!(input(&rs, to_host("lo", 8080)), Verdict::Accept, "loopback");
}

#[test]
fn outbound_failsafe_then_policy_on_the_bound_interface_only() {
    let rs = lower_with(&host_scenario().build(), &settings(), &host_ifaces());
    assert_eq!(
        output(&rs, from_host("eth0", 443)),
        Verdict::Accept,
        "allowed"
    );
    assert_eq!(
        output(&rs, from_host("eth0", 80)),
        Verdict::Drop,
        "not allowed"
    );
    assert_eq!(output(&rs, from_host("eth0", 179)), Verdict::Accept, "BGP");
    let etcd = Packet::tcp("", "eth0", HOST_ADDR, "198.51.100.7", 12379);
    assert_eq!(output(&rs, etcd), Verdict::Accept, "own endpoint");
    let other = Packet::tcp("", "eth0", HOST_ADDR, "198.51.100.8", 12379);
    assert_eq!(output(&rs, other), Verdict::Drop, "only the own endpoint");
    assert_eq!(
        output(&rs, from_host("eth1", 80)),
        Verdict::Accept,
        "unbound"
    );
    assert_eq!(
        output(&rs, from_host("lo", 80)),
        Verdict::Accept,
        "loopback"
    );
    assert_eq!(
        output(&rs, from_host("cali-a", 80)),
        Verdict::Accept,
        "workload"
    );
}

#[test]
fn a_fail_closed_host_endpoint_keeps_only_the_failsafe_open() {
    let mut b = host_scenario();
    b.host_endpoint("fabric", Some("eth0"), &[], &[]);
    let rs = lower_with(&b.build(), &settings(), &host_ifaces());
    assert_eq!(input(&rs, to_host("eth0", 80)), Verdict::Drop);
    assert_eq!(input(&rs, to_host("eth0", 22)), Verdict::Accept);
    let failsafe_off = FirewallSettings {
        failsafe_inbound: vec![],
        ..settings()
    };
    let rs = lower_with(&b.build(), &failsafe_off, &host_ifaces());
    assert_eq!(input(&rs, to_host("eth0", 22)), Verdict::Drop);
}

#[test]
fn a_tier_decides_before_the_profiles() {
    let mut b = host_scenario();
    b.policy(
        "ops",
        "mgmt",
        vec![
            tcp_port(RuleAction::Allow, 8080),
            tcp_port(RuleAction::Deny, 80),
        ],
        vec![rule(RuleAction::NextTier)],
    )
    .host_tier("fabric", "ops", &["mgmt"]);
    let rs = lower_with(&b.build(), &settings(), &host_ifaces());
    assert_eq!(input(&rs, to_host("eth0", 8080)), Verdict::Accept);
    assert_eq!(input(&rs, to_host("eth0", 80)), Verdict::Drop, "tier deny");
    assert_eq!(output(&rs, from_host("eth0", 443)), Verdict::Accept, "pass");
}

/// The chains reachable from `hook`, with their rules.
fn reachable(rs: &Ruleset, hook: Hook) -> BTreeMap<ObjectName, Vec<GenericRule>> {
    let mut out = BTreeMap::new();
    let mut todo: Vec<ObjectName> = rs.hooks.get(&hook).into_iter().cloned().collect();
    while let Some(name) = todo.pop() {
        let rules = rs.chains[&name].clone();
        todo.extend(targets(&rules).filter(|t| !out.contains_key(*t)).cloned());
        out.insert(name, rules);
    }
    out
}

#[test]
fn forwarded_traffic_meets_exactly_the_same_rules() {
    let with = lower_with(&host_scenario().build(), &settings(), &host_ifaces());
    let mut b = host_scenario();
    b.state.host_endpoints.clear();
    let without = lower_with(&b.build(), &settings(), &host_ifaces());
    assert_eq!(
        reachable(&with, Hook::Forward),
        reachable(&without, Hook::Forward)
    );
    let fwd = Packet::tcp("eth0", "cali-a", PEER, "10.0.0.1", 8080);
    assert_eq!(
        run_hook(&with, Hook::Forward, &mut fwd.clone()),
        Verdict::Accept
    );
}

#[test]
fn nothing_bound_lowers_exactly_the_workload_ruleset() {
    let mut b = host_scenario();
    b.host_endpoint("fabric", None, &["203.0.113.1"], &["web"]);
    let unbound = lower_with(&b.build(), &settings(), &host_ifaces());
    b.state.host_endpoints.clear();
    assert_same(&unbound, &lower(&b.build(), &settings()));
    assert!(!unbound.hooks.contains_key(&Hook::Output));
}

#[test]
fn workload_to_host_with_return_meets_the_host_endpoint_inbound_program() {
    let desired = host_scenario().build();
    let wl = |dst: &str, port| Packet::tcp("cali-a", "", "10.0.0.1", dst, port);
    for (action, allowed, denied, elsewhere) in [
        (
            EndpointToHostAction::Return,
            Verdict::Accept,
            Verdict::Drop,
            Verdict::Accept,
        ),
        (
            EndpointToHostAction::Drop,
            Verdict::Drop,
            Verdict::Drop,
            Verdict::Drop,
        ),
        (
            EndpointToHostAction::Accept,
            Verdict::Accept,
            Verdict::Accept,
            Verdict::Accept,
        ),
    ] {
        let s = FirewallSettings {
            endpoint_to_host: action,
            ..settings()
        };
        let rs = lower_with(&desired, &s, &host_ifaces());
        assert_eq!(input(&rs, wl(HOST_ADDR, 80)), allowed, "{action:?}");
        // No failsafe for workloads: 22 is not in the program.
        assert_eq!(input(&rs, wl(HOST_ADDR, 22)), denied, "{action:?}");
        let unbound_addr = wl("198.51.100.10", 22);
        assert_eq!(input(&rs, unbound_addr), elsewhere, "{action:?}");
    }
}

#[test]
fn an_address_moving_interface_moves_the_policy() {
    let mut b = host_scenario();
    b.state.host_endpoints.clear();
    b.host_endpoint("by-addr", None, &[HOST_ADDR], &["web"]);
    let desired = b.build();
    let mut l = Lowerer::new();
    l.set_interface_addresses(&host_ifaces());
    l.lower_all(&desired, &settings());
    assert_eq!(input(&l.ruleset, to_host("eth0", 8080)), Verdict::Drop);
    assert_eq!(input(&l.ruleset, to_host("eth1", 8080)), Verdict::Accept);
    let moved = ifaces(&[("eth0", &[]), ("eth1", &[HOST_ADDR])]);
    let dirty = l.set_interface_addresses(&moved);
    assert_same(&l.ruleset, &lower_with(&desired, &settings(), &moved));
    assert_eq!(input(&l.ruleset, to_host("eth0", 8080)), Verdict::Accept);
    assert_eq!(input(&l.ruleset, to_host("eth1", 8080)), Verdict::Drop);
    assert!(dirty
        .chains
        .contains(&host_chain(HostChain::InProgram, &scenario_iface("eth1"))));
    assert!(!dirty.hooks, "still bound somewhere: the output hook stays");
    let bound = interfaces_by_endpoint(l.host_bindings());
    assert_eq!(bound.len(), 1);
}

fn scenario_iface(name: &str) -> InterfaceName {
    crate::firewall::scenario::iface(name)
}

#[test]
fn host_endpoint_changes_relower_incrementally() {
    let s = settings();
    let mut b = host_scenario();
    let mut l = Lowerer::new();
    l.set_interface_addresses(&host_ifaces());
    l.lower_all(&b.build(), &s);
    let steps: [&dyn Fn(&mut DesiredBuilder); 4] = [
        &|b| {
            b.profile("web", vec![tcp_port(RuleAction::Allow, 81)], vec![]);
        },
        &|b| {
            b.state
                .rule_sets
                .retain(|id, _| id.owner != profile_owner("web"));
        },
        &|b| {
            b.host_endpoint("other", Some("eth1"), &[], &["wl"]);
        },
        &|b| {
            b.state.host_endpoints.clear();
        },
    ];
    for step in steps {
        let before = b.build();
        step(&mut b);
        let after = b.build();
        l.update(&after, &changes_between(&before, &after));
        assert_same(&l.ruleset, &lower_with(&after, &s, &host_ifaces()));
    }
    assert!(l.host_bindings().is_empty());
}

fn profile_owner(p: &str) -> margay_policy::desired::RuleSetOwner {
    margay_policy::desired::RuleSetOwner::Profile(crate::firewall::scenario::id(p))
}

#[test]
fn host_endpoints_add_no_rule_to_the_forward_path() {
    let mut b = host_scenario();
    b.state.host_endpoints.clear();
    let mut addrs = host_ifaces();
    let without = lower_with(&b.build(), &settings(), &addrs);
    for i in 0..20 {
        let name = format!("eth{}", i + 10);
        addrs.insert(
            name.clone(),
            [format!("198.18.0.{i}").parse().expect("addr")].into(),
        );
        b.host_endpoint(&format!("hep{i}"), Some(&name), &[], &["web"]);
    }
    let with = lower_with(&b.build(), &settings(), &addrs);
    let walk = |rs: &Ruleset, iif: &str, oif: &str| {
        let mut p = Packet::tcp(iif, oif, PEER, "10.0.0.1", 80);
        let v = run_hook(rs, Hook::Forward, &mut p);
        (v, p.walked)
    };
    for (iif, oif) in [("eth10", "cali-a"), ("eth0", "cali-a"), ("cali-a", "eth11")] {
        let (a, b) = (walk(&without, iif, oif), walk(&with, iif, oif));
        assert_eq!(a, b, "{iif} -> {oif}: (verdict, rules walked)");
    }
    assert_eq!(
        reachable(&with, Hook::Forward),
        reachable(&without, Hook::Forward)
    );
}

#[test]
fn one_host_endpoint_change_touches_only_its_program_chains() {
    let s = settings();
    let mut b = host_scenario();
    for i in 0..10 {
        b.host_endpoint(
            &format!("hep{i}"),
            Some(&format!("eth{}", i + 10)),
            &[],
            &["web"],
        );
    }
    let before = b.build();
    let mut l = Lowerer::new();
    l.set_interface_addresses(&host_ifaces());
    l.lower_all(&before, &s);
    b.host_endpoint("hep3", Some("eth13"), &[], &["wl"]);
    let after = b.build();
    let dirty = l.update(&after, &changes_between(&before, &after));
    assert_same(&l.ruleset, &lower_with(&after, &s, &host_ifaces()));
    let eth13 = scenario_iface("eth13");
    let expected: BTreeSet<ObjectName> = [HostChain::InProgram, HostChain::OutProgram]
        .into_iter()
        .map(|k| host_chain(k, &eth13))
        .collect();
    assert_eq!(dirty.chains, expected);
    assert!(dirty.sets.is_empty() && !dirty.hooks);
}
