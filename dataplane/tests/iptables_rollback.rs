//! A refused iptables apply leaves the firewall as it was (issue 9, case 1):
//! the ipset changes that run before `iptables-restore` are rolled back
//! when it fails, so sets and rules go in together or not at all.
//!
//! The failure is injected with real kernel objects: a foreign chain jumps
//! to one of our chains, so deleting that chain is refused (EBUSY), in the
//! same apply that adds a member to a tag set. Real packets show that the
//! member did not go in alone; once the foreign jump is gone, the next
//! apply converges. When only the IPv6 restore is refused, IPv4 (rules and
//! its sets) goes in whole and IPv6 (rules and its sets) stays whole.

mod common;

use common::{wl_if, wl_ip, Lab};
use margay_dataplane::firewall::iptables::{IptablesBackend, Variant};
use margay_dataplane::firewall::lower::rule_set_chain;
use margay_dataplane::firewall::scenario::{changes_between, profile_rs, rule, DesiredBuilder};
use margay_dataplane::firewall::{FirewallManager, FirewallSettings};
use margay_policy::desired::{DesiredState, Direction, IpSetId, IpVersion, Rule, RuleAction};
use margay_policy::names::Id;
use margay_tests::netns::{require_root, TestNetns};

fn tag(t: &str) -> IpSetId {
    IpSetId::Tag(Id::new(t).expect("tag"))
}

fn allow_from(t: &str) -> Rule {
    let mut r = rule(RuleAction::Allow);
    r.src.tag = Some(tag(t));
    r
}

/// w1 ("db") takes traffic only from tag "web"; w0 uses "open"; w2 uses
/// "solo", which goes with it. `web_members` are the workloads in tag "web".
fn state(with_w2: bool, web_members: &[usize]) -> DesiredState {
    state_v6(with_w2, web_members, &[])
}

/// [`state`] with IPv6 members in tag "web" too.
fn state_v6(with_w2: bool, web_members: &[usize], web_v6: &[&str]) -> DesiredState {
    let mut b = DesiredBuilder::new();
    let allow = || vec![rule(RuleAction::Allow)];
    b.profile("open", allow(), allow())
        .profile("db", vec![allow_from("web")], allow());
    b.endpoint(&wl_if(0), &format!("{}/32", wl_ip(0)), &["open"]);
    b.endpoint(&wl_if(1), &format!("{}/32", wl_ip(1)), &["db"]);
    if with_w2 {
        b.profile("solo", allow(), allow());
        b.endpoint(&wl_if(2), &format!("{}/32", wl_ip(2)), &["solo"]);
    }
    let members: Vec<String> = web_members
        .iter()
        .map(|i| format!("{}/32", wl_ip(*i)))
        .chain(web_v6.iter().map(|a| (*a).to_owned()))
        .collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    b.set(tag("web"), &refs);
    b.build()
}

/// What an observer sees of our objects: every set with its members and
/// every rule of both families (counters left out).
fn snapshot(ns: &TestNetns, v: Variant) -> String {
    let mut out = ns.exec_ok(&["ipset", "save"]);
    for f in [IpVersion::V4, IpVersion::V6] {
        out.push_str(&ns.exec_ok(&[v.save_bin(f)]));
    }
    out.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn bin(v: Variant, family: IpVersion) -> &'static str {
    match (v, family) {
        (Variant::Nft, IpVersion::V4) => "iptables-nft",
        (Variant::Nft, IpVersion::V6) => "ip6tables-nft",
        (Variant::Legacy, IpVersion::V4) => "iptables-legacy",
        (Variant::Legacy, IpVersion::V6) => "ip6tables-legacy",
    }
}

/// Our sets of `family` with their members, as `ipset save` lists them.
fn sets_of(ns: &TestNetns, family: &str) -> String {
    let save = ns.exec_ok(&["ipset", "save"]);
    let names: Vec<&str> = save
        .lines()
        .filter(|l| l.starts_with("create margay-") && l.contains(&format!("family {family} ")))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    save.lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|n| names.contains(&n))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A lab of 3 workloads whose firewall a started manager on variant `v`
/// has programmed with `s0`.
fn programmed(tag: &str, v: Variant, s0: &DesiredState) -> (Lab, FirewallManager) {
    let lab = Lab::new(&format!("{tag}-{}", v.name()), 3);
    let mut m = FirewallManager::new(Box::new(IptablesBackend::with_variant(&lab.target, v)));
    m.start().expect("start");
    m.apply(
        s0,
        &changes_between(&DesiredState::default(), s0),
        &FirewallSettings::default(),
    )
    .expect("first apply");
    (lab, m)
}

/// Only the IPv6 restore is refused: IPv4 goes in whole (rules and sets),
/// IPv6 stays whole as it was (rules and sets).
fn refused_v6_leaves_each_family_whole(v: Variant, test: &str) {
    if !require_root(test) {
        return;
    }
    let settings = FirewallSettings::default();
    let s0 = state_v6(true, &[2], &["fd00::2/128"]);
    let (lab, mut m) = programmed("r6", v, &s0);
    assert!(!lab.ping(0, &wl_ip(1)), "w0 is not in tag web");
    let solo = rule_set_chain(&profile_rs("solo", Direction::Inbound));
    let b6 = bin(v, IpVersion::V6);
    lab.host.exec_ok(&[b6, "-N", "FOREIGN"]);
    lab.host
        .exec_ok(&[b6, "-A", "FOREIGN", "-j", solo.as_str()]);
    let v6_before = (
        sets_of(&lab.host, "inet6"),
        lab.host.exec_ok(&[v.save_bin(IpVersion::V6)]),
    );
    let v4_before = sets_of(&lab.host, "inet");

    let s1 = state_v6(false, &[0], &["fd00::5/128"]);
    m.apply(&s1, &changes_between(&s0, &s1), &settings)
        .expect_err("the IPv6 delete is refused");
    let strip = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        sets_of(&lab.host, "inet6"),
        v6_before.0,
        "IPv6 sets changed alone"
    );
    assert_eq!(
        strip(&lab.host.exec_ok(&[v.save_bin(IpVersion::V6)])),
        strip(&v6_before.1)
    );
    assert_ne!(sets_of(&lab.host, "inet"), v4_before, "IPv4 went in");
    assert!(lab.ping(0, &wl_ip(1)), "IPv4: w0 in tag web, rules and set");
    assert!(!lab
        .host
        .exec_ok(&[v.save_bin(IpVersion::V4)])
        .contains(solo.as_str()));

    lab.host.exec_ok(&[b6, "-F", "FOREIGN"]);
    m.apply(&s1, &Default::default(), &settings)
        .expect("retry applies");
    assert!(sets_of(&lab.host, "inet6").contains("fd00::5"));
}

#[test]
fn refused_v6_leaves_each_family_whole_nft_variant() {
    refused_v6_leaves_each_family_whole(
        Variant::Nft,
        "refused_v6_leaves_each_family_whole_nft_variant",
    );
}

#[test]
fn refused_v6_leaves_each_family_whole_legacy_variant() {
    refused_v6_leaves_each_family_whole(
        Variant::Legacy,
        "refused_v6_leaves_each_family_whole_legacy_variant",
    );
}

fn refused_apply_changes_nothing(v: Variant, test: &str) {
    if !require_root(test) {
        return;
    }
    let settings = FirewallSettings::default();
    let s0 = state(true, &[2]);
    let (lab, mut m) = programmed("rb", v, &s0);
    assert!(!lab.ping(0, &wl_ip(1)), "w0 is not in tag web");

    // Someone else's chain jumps to solo's inbound chain.
    let solo = rule_set_chain(&profile_rs("solo", Direction::Inbound));
    let bin = bin(v, IpVersion::V4);
    lab.host.exec_ok(&[bin, "-N", "FOREIGN"]);
    lab.host
        .exec_ok(&[bin, "-A", "FOREIGN", "-j", solo.as_str()]);
    let before = snapshot(&lab.host, v);

    // One apply: w2 goes (its chains and solo's are deleted: refused) and
    // w0 joins tag web (a set member: must not go in alone).
    let s1 = state(false, &[0]);
    let err = m
        .apply(&s1, &changes_between(&s0, &s1), &settings)
        .expect_err("the delete is refused");
    assert!(
        err.to_string().contains(solo.as_str()),
        "the error names the chain: {err}"
    );
    assert_eq!(snapshot(&lab.host, v), before, "half an apply stayed");
    assert!(!lab.ping(0, &wl_ip(1)), "w0 -> w1 still denied");

    // The obstacle goes; the retry converges.
    lab.host.exec_ok(&[bin, "-F", "FOREIGN"]);
    m.apply(&s1, &Default::default(), &settings)
        .expect("retry applies");
    assert!(lab.ping(0, &wl_ip(1)), "w0 now in tag web");
}

#[test]
fn refused_apply_changes_nothing_nft_variant() {
    refused_apply_changes_nothing(Variant::Nft, "refused_apply_changes_nothing_nft_variant");
}

#[test]
fn refused_apply_changes_nothing_legacy_variant() {
    refused_apply_changes_nothing(
        Variant::Legacy,
        "refused_apply_changes_nothing_legacy_variant",
    );
}

/// `ipset restore` itself stops part-way (a set still used by a rule
/// cannot change family): what the lines before the refused one did is
/// taken back, and no rule was written.
fn refused_set_change_is_taken_back(v: Variant, test: &str) {
    use margay_dataplane::firewall::model::{Action, GenericRule, Match, ObjectName};
    use margay_dataplane::firewall::{FirewallBackend, FirewallOp};
    if !require_root(test) {
        return;
    }
    let ns = TestNetns::new(&format!("rs-{}", v.name()));
    let target = margay_dataplane::netns::NetnsTarget::named(ns.name()).expect("namespace");
    let mut b = IptablesBackend::with_variant(&target, v);
    let n = ObjectName::fixed;
    let uses = |set: &'static str| GenericRule {
        matches: vec![Match::SrcSet {
            set: ObjectName::fixed(set),
            negated: false,
        }],
        action: Action::Accept,
    };
    let members = |m: &str| [m.parse().expect("net")].into();
    b.write(&[
        FirewallOp::CreateSet {
            name: n("margay-t-a"),
            family: IpVersion::V4,
        },
        FirewallOp::AddMembers {
            set: n("margay-t-a"),
            family: IpVersion::V4,
            members: members("10.1.1.1/32"),
        },
        FirewallOp::CreateSet {
            name: n("margay-t-z"),
            family: IpVersion::V6,
        },
        FirewallOp::ReplaceChain {
            name: n("margay-c"),
            rules: vec![uses("margay-t-a"), uses("margay-t-z")],
        },
    ])
    .expect("program");
    let before = snapshot(&ns, v);
    let err = b
        .write(&[
            FirewallOp::AddMembers {
                set: n("margay-t-a"),
                family: IpVersion::V4,
                members: members("10.9.9.9/32"),
            },
            FirewallOp::CreateSet {
                name: n("margay-t-new"),
                family: IpVersion::V4,
            },
            FirewallOp::AddMembers {
                set: n("margay-t-new"),
                family: IpVersion::V4,
                members: members("10.2.2.2/32"),
            },
            FirewallOp::DeleteSet {
                name: n("margay-t-z"),
            },
            FirewallOp::CreateSet {
                name: n("margay-t-z"),
                family: IpVersion::V4,
            },
            FirewallOp::ReplaceChain {
                name: n("margay-c"),
                rules: vec![uses("margay-t-new")],
            },
        ])
        .expect_err("margay-t-z is in use");
    assert!(err.to_string().contains("margay-t-z"), "{err}");
    assert_eq!(snapshot(&ns, v), before, "part of the sets changed");
}

#[test]
fn refused_set_change_is_taken_back_nft_variant() {
    refused_set_change_is_taken_back(Variant::Nft, "refused_set_change_is_taken_back_nft_variant");
}

#[test]
fn refused_set_change_is_taken_back_legacy_variant() {
    refused_set_change_is_taken_back(
        Variant::Legacy,
        "refused_set_change_is_taken_back_legacy_variant",
    );
}
