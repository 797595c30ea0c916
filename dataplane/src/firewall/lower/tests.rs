//! Lowering checked by running packets through the lowered ruleset.

use super::*;
use crate::firewall::model::{CtState, Hook};
use crate::firewall::scenario::{changes_between, net, rule, DesiredBuilder};
use crate::firewall::sim::{run_hook, Packet, Verdict};
use margay_policy::desired::{
    Direction, IcmpMatch, IpVersion, PortRange, Protocol, Rule, RuleAction,
};
use margay_policy::names::Id;

fn tag(t: &str) -> IpSetId {
    IpSetId::Tag(Id::new(t).expect("tag"))
}

fn allow_tcp_from_tag(port: u16, t: &str) -> Rule {
    let mut r = rule(RuleAction::Allow);
    r.protocol = Some(Protocol(6));
    r.dst.ports = vec![PortRange { lo: port, hi: port }];
    r.src.tag = Some(tag(t));
    r
}

/// web (cali-a, 10.0.0.1) takes tcp/80 from tag "client"; client
/// (cali-b, 10.0.0.2) takes nothing in; both send anything out.
fn two_endpoints() -> DesiredBuilder {
    let mut b = DesiredBuilder::new();
    b.profile(
        "web",
        vec![allow_tcp_from_tag(80, "client")],
        vec![rule(RuleAction::Allow)],
    )
    .profile("client", vec![], vec![rule(RuleAction::Allow)])
    .endpoint("cali-a", "10.0.0.1/32", &["web"])
    .endpoint("cali-b", "10.0.0.2/32", &["client"])
    .set(tag("client"), &["10.0.0.2/32"]);
    b
}

/// Compares two rulesets, naming only what differs.
pub(crate) fn assert_same(a: &Ruleset, b: &Ruleset) {
    let names: BTreeSet<&ObjectName> = a.chains.keys().chain(b.chains.keys()).collect();
    let bad: Vec<_> = names
        .into_iter()
        .filter(|n| a.chains.get(*n) != b.chains.get(*n))
        .map(|n| (n, a.chains.get(n), b.chains.get(n)))
        .collect();
    assert!(bad.is_empty(), "chains differ: {bad:#?}");
    let sets: Vec<_> = a
        .sets
        .keys()
        .chain(b.sets.keys())
        .filter(|n| a.sets.get(*n) != b.sets.get(*n))
        .collect();
    assert!(sets.is_empty(), "sets differ: {sets:?}");
    assert_eq!(a.hooks, b.hooks);
}

fn forward(rs: &Ruleset, mut p: Packet) -> Verdict {
    run_hook(rs, Hook::Forward, &mut p)
}

#[test]
fn profiles_tags_and_ports_decide_forwarded_traffic() {
    let rs = lower(&two_endpoints().build(), &FirewallSettings::default());
    let b_to_a = |port| Packet::tcp("cali-b", "cali-a", "10.0.0.2", "10.0.0.1", port);
    assert_eq!(forward(&rs, b_to_a(80)), Verdict::Accept);
    assert_eq!(forward(&rs, b_to_a(81)), Verdict::Drop);
    let a_to_b = Packet::tcp("cali-a", "cali-b", "10.0.0.1", "10.0.0.2", 80);
    assert_eq!(
        forward(&rs, a_to_b.clone()),
        Verdict::Drop,
        "client takes nothing in"
    );
    let mut reply = a_to_b;
    reply.ct = Some(CtState::EstablishedRelated);
    assert_eq!(forward(&rs, reply), Verdict::Accept, "replies pass");
    // Not from a tagged address.
    let spoof = Packet::tcp("cali-b", "cali-a", "10.0.0.9", "10.0.0.1", 80);
    assert_eq!(forward(&rs, spoof), Verdict::Drop);
    // Unknown workload interfaces get nothing through, either way.
    let unknown = Packet::tcp("cali-zz", "eth0", "10.0.0.7", "192.0.2.1", 80);
    assert_eq!(forward(&rs, unknown), Verdict::Drop);
    let to_unknown = Packet::tcp("eth0", "cali-q", "192.0.2.1", "10.0.0.7", 80);
    assert_eq!(forward(&rs, to_unknown), Verdict::Drop);
    // Traffic not involving workloads is not ours to judge.
    let other = Packet::tcp("eth0", "eth1", "192.0.2.1", "198.51.100.1", 80);
    assert_eq!(forward(&rs, other), Verdict::Accept);
}

#[test]
fn tiers_allow_pass_and_drop_when_undecided() {
    let mut b = two_endpoints();
    let mut deny22 = rule(RuleAction::Deny);
    deny22.protocol = Some(Protocol(6));
    deny22.dst.ports = vec![PortRange { lo: 22, hi: 22 }];
    let mut allow81 = rule(RuleAction::Allow);
    allow81.protocol = Some(Protocol(6));
    allow81.dst.ports = vec![PortRange { lo: 81, hi: 81 }];
    let mut pass80 = rule(RuleAction::NextTier);
    pass80.protocol = Some(Protocol(6));
    pass80.dst.ports = vec![PortRange { lo: 80, hi: 80 }];
    b.policy(
        "t1",
        "p1",
        vec![deny22, allow81, pass80],
        vec![rule(RuleAction::NextTier)],
    )
    .tier("cali-a", "t1", &["p1"]);
    let rs = lower(&b.build(), &FirewallSettings::default());
    let b_to_a = |port| Packet::tcp("cali-b", "cali-a", "10.0.0.2", "10.0.0.1", port);
    assert_eq!(
        forward(&rs, b_to_a(81)),
        Verdict::Accept,
        "tier allow beats profile"
    );
    assert_eq!(
        forward(&rs, b_to_a(80)),
        Verdict::Accept,
        "next-tier leaves it to the profile"
    );
    assert_eq!(forward(&rs, b_to_a(22)), Verdict::Drop, "tier deny");
    assert_eq!(
        forward(&rs, b_to_a(82)),
        Verdict::Drop,
        "undecided in a matching tier"
    );
}

#[test]
fn fail_closed_and_missing_profiles_drop() {
    let mut b = two_endpoints();
    b.endpoint("cali-c", "10.0.0.3/32", &[])
        .endpoint("cali-d", "10.0.0.4/32", &["missing"]);
    let rs = lower(&b.build(), &FirewallSettings::default());
    for oif in ["cali-c", "cali-d"] {
        let p = Packet::tcp("cali-b", oif, "10.0.0.2", "10.0.0.3", 80);
        assert_eq!(forward(&rs, p), Verdict::Drop, "to {oif}");
    }
    let out = Packet::tcp("cali-c", "eth0", "10.0.0.3", "192.0.2.1", 80);
    assert_eq!(forward(&rs, out), Verdict::Drop);
}

#[test]
fn endpoint_to_host_follows_the_setting_and_lets_dhcp_in() {
    let mut b = two_endpoints();
    b.profile("mute", vec![], vec![])
        .endpoint("cali-m", "10.0.0.5/32", &["mute"]);
    let desired = b.build();
    let to_host = |iif: &str| Packet::tcp(iif, "", "10.0.0.1", "192.0.2.10", 22);
    let mut dhcp = to_host("cali-m");
    dhcp.proto = 17;
    dhcp.sport = 68;
    dhcp.dport = 67;
    for (action, open, muted) in [
        (EndpointToHostAction::Drop, Verdict::Drop, Verdict::Drop),
        (EndpointToHostAction::Return, Verdict::Accept, Verdict::Drop),
        (EndpointToHostAction::Accept, Verdict::Accept, Verdict::Drop),
    ] {
        let settings = FirewallSettings {
            endpoint_to_host: action,
            ..FirewallSettings::default()
        };
        let rs = lower(&desired, &settings);
        assert_eq!(
            run_hook(&rs, Hook::Input, &mut to_host("cali-a")),
            open,
            "{action:?}"
        );
        assert_eq!(
            run_hook(&rs, Hook::Input, &mut to_host("cali-m")),
            muted,
            "{action:?}"
        );
        assert_eq!(
            run_hook(&rs, Hook::Input, &mut dhcp.clone()),
            Verdict::Accept
        );
        let host = Packet::tcp("eth0", "", "192.0.2.1", "192.0.2.10", 22);
        assert_eq!(
            run_hook(&rs, Hook::Input, &mut host.clone()),
            Verdict::Accept
        );
    }
}

#[test]
fn masquerade_from_masq_pools_to_outside_all_pools() {
    let mut b = two_endpoints();
    b.set(IpSetId::AllPools, &["10.0.0.0/16", "10.1.0.0/16"])
        .set(IpSetId::MasqueradePools, &["10.0.0.0/16"]);
    let rs = lower(&b.build(), &FirewallSettings::default());
    let nat = |src: &str, dst: &str| {
        run_hook(
            &rs,
            Hook::NatPostrouting,
            &mut Packet::tcp("x", "y", src, dst, 80),
        )
    };
    assert_eq!(nat("10.0.0.1", "8.8.8.8"), Verdict::Masquerade);
    assert_eq!(nat("10.0.0.1", "10.1.0.1"), Verdict::Accept);
    assert_eq!(nat("10.1.0.1", "8.8.8.8"), Verdict::Accept);
}

#[test]
fn familyless_rules_with_sets_split_per_family() {
    let mut b = DesiredBuilder::new();
    let mut r = rule(RuleAction::Allow);
    r.src.tag = Some(tag("peers"));
    b.profile("p", vec![r], vec![rule(RuleAction::Allow)])
        .endpoint("cali-a", "10.0.0.1/32", &["p"])
        .set(tag("peers"), &["10.0.0.2/32", "fd00::2/128"]);
    let rs = lower(&b.build(), &FirewallSettings::default());
    let t4 = set_name(&tag("peers"), IpVersion::V4);
    let t6 = set_name(&tag("peers"), IpVersion::V6);
    assert_eq!(rs.sets[&t4].members.len(), 1);
    assert_eq!(rs.sets[&t6].members.len(), 1);
    let v6 = Packet::tcp("eth0", "cali-a", "fd00::2", "fd00::1", 1);
    assert_eq!(forward(&rs, v6), Verdict::Accept);
    let v6_other = Packet::tcp("eth0", "cali-a", "fd00::3", "fd00::1", 1);
    assert_eq!(forward(&rs, v6_other), Verdict::Drop);
}

#[test]
fn missing_sets_read_as_empty() {
    let mut b = DesiredBuilder::new();
    let mut pos = rule(RuleAction::Allow);
    pos.src.tag = Some(tag("nosuch"));
    let mut neg = rule(RuleAction::Allow);
    neg.ip_version = Some(IpVersion::V4);
    neg.src.not_tag = Some(tag("nosuch"));
    b.profile("p", vec![pos], vec![])
        .profile("q", vec![neg], vec![]);
    let rs = lower(&b.build(), &FirewallSettings::default());
    let pi = rule_set_chain(&crate::firewall::scenario::profile_rs(
        "p",
        Direction::Inbound,
    ));
    let qi = rule_set_chain(&crate::firewall::scenario::profile_rs(
        "q",
        Direction::Inbound,
    ));
    assert!(rs.chains[&pi].is_empty(), "in an empty set never matches");
    assert_eq!(
        rs.chains[&qi].len(),
        2,
        "not in an empty set always matches"
    );
    assert!(!format!("{:?}", rs.chains[&qi]).contains("SrcSet"));
}

#[test]
fn names_are_hashed_and_icmp_rules_get_a_family() {
    let mut r = rule(RuleAction::Deny);
    r.protocol = Some(Protocol(58));
    r.icmp = Some(IcmpMatch {
        icmp_type: 128,
        code: None,
    });
    r.src.selector = Some(IpSetId::Selector("role == \"db\"; drop".to_owned()));
    let present = |_: &IpSetId| true;
    let out = lower_rule(&r, false, &present);
    assert_eq!(out.len(), 1);
    assert!(out[0].matches.contains(&Match::Family(IpVersion::V6)));
    let Some(Match::SrcSet { set, .. }) = out[0]
        .matches
        .iter()
        .find(|m| matches!(m, Match::SrcSet { .. }))
    else {
        panic!("no set match");
    };
    assert!(set.as_str().starts_with("margay-s6_"));
    assert!(!set.as_str().contains(' '));
}

#[test]
fn overlapping_pool_cidrs_are_normalised() {
    let nets = [
        net("10.0.0.0/8"),
        net("10.1.0.0/16"),
        net("10.1.2.3/32"),
        net("11.0.0.0/24"),
    ];
    let n = normalize_members(nets.iter());
    assert_eq!(
        n,
        [net("10.0.0.0/8"), net("11.0.0.0/24")]
            .into_iter()
            .collect()
    );
}

#[test]
fn dispatch_trees_reach_every_endpoint_and_stay_small() {
    let settings = FirewallSettings::default();
    let mut b = DesiredBuilder::new();
    b.profile(
        "open",
        vec![rule(RuleAction::Allow)],
        vec![rule(RuleAction::Allow)],
    );
    let mut names: Vec<String> = (0..300).map(|i| format!("cali{i:05}")).collect();
    names.extend((0..200u64).map(|i| {
        format!(
            "cali{:011x}",
            crate::firewall::model::fnv1a64(&i.to_le_bytes()) >> 20
        )
    }));
    names.push("cali".to_owned());
    let mut l = Lowerer::new();
    l.lower_all(&b.build(), &settings);
    for (n, name) in names.iter().enumerate() {
        let before = b.build();
        b.endpoint(name, &format!("10.1.{}.{}/32", n / 250, n % 250), &["open"]);
        let after = b.build();
        if n % 37 == 0 || n + 1 == names.len() {
            // Incremental and full lowering agree as the trees split.
            l.update(&after, &changes_between(&before, &after));
            assert_same(l.ruleset(), &lower(&after, &settings));
        } else {
            l.update(&after, &changes_between(&before, &after));
        }
    }
    let rs = l.ruleset().clone();
    for name in &names {
        let p = Packet::tcp(name, "eth0", "10.1.0.1", "192.0.2.1", 80);
        assert_eq!(forward(&rs, p), Verdict::Accept, "{name}");
    }
    for unknown in ["cali99999", "cali0000", "calix", "cali000001"] {
        let p = Packet::tcp(unknown, "eth0", "10.1.0.1", "192.0.2.1", 80);
        assert_eq!(forward(&rs, p), Verdict::Drop, "{unknown}");
    }
    let biggest = rs
        .chains
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("margay-df") || n.as_str().starts_with("margay-dt"))
        .map(|(_, r)| r.len())
        .max()
        .unwrap_or(0);
    assert!(
        biggest <= DISPATCH_LEAF + 1 + 16,
        "dispatch chain of {biggest} rules"
    );
}

#[test]
fn one_endpoint_change_touches_few_names() {
    let settings = FirewallSettings::default();
    let mut b = two_endpoints();
    for i in 0..50 {
        b.endpoint(
            &format!("cali{i:02x}x"),
            &format!("10.0.1.{i}/32"),
            &["web"],
        );
    }
    let before = b.build();
    let mut l = Lowerer::new();
    l.lower_all(&before, &settings);
    b.endpoint("cali7fnew", "10.0.2.1/32", &["web"]);
    let after = b.build();
    let dirty = l.update(&after, &changes_between(&before, &after));
    assert_same(l.ruleset(), &lower(&after, &settings));
    // Two endpoint chains and the two dispatch roots.
    assert!(dirty.chains.len() <= 6, "{:?}", dirty.chains);
    assert!(dirty.sets.is_empty());
}
