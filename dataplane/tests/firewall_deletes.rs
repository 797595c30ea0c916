//! Deletions against the real kernel, on every backend (issue 9, case 1).
//!
//! A chain being deleted may still be jumped to by another chain deleted in
//! the same apply (an endpoint chain and the profile chain only it used).
//! Every backend must flush all of them before deleting any, whatever the
//! names' order, or the apply fails for good and later policy never lands.
//!
//! * `solo_profile_delete_*`: the scenario with real packets: an
//!   endpoint whose profile only it uses is deleted, then a policy change
//!   denying w0 -> w1 must be enforced.
//! * `any_op_order_*`: deletes listed before the rewrite of the chain that
//!   still jumps to them apply too (no backend relies on the diff's order).
//! * `random_sequences_*`: a bounded property test; random add/delete
//!   sequences of profiles and endpoints, each applied to the real kernel
//!   (for iptables: the generated `iptables-restore`/`ipset` input), every
//!   apply must succeed and a fresh read-back must equal the desired state.

mod common;

use common::backends::{nft_netlink, nft_tool};
use common::{wl_if, wl_ip, Lab};
use margay_dataplane::firewall::diff::observed_of;
use margay_dataplane::firewall::lower::lower;
use margay_dataplane::firewall::model::{Action, GenericRule, ObjectName};
use margay_dataplane::firewall::scenario::{changes_between, rule, DesiredBuilder};
use margay_dataplane::firewall::{
    new_backend, BackendKind, FirewallBackend, FirewallError, FirewallManager, FirewallOp,
    FirewallSettings,
};
use margay_dataplane::netns::NetnsTarget;
use margay_policy::desired::{DesiredState, IpSetId, Rule, RuleAction};
use margay_policy::names::Id;
use margay_tests::netns::{require_root, TestNetns};
use std::cell::RefCell;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

type Make = fn(&NetnsTarget) -> Result<Box<dyn FirewallBackend>, FirewallError>;

fn iptables(ns: &NetnsTarget) -> Result<Box<dyn FirewallBackend>, FirewallError> {
    new_backend(BackendKind::Iptables, ns)
}

fn manager(make: Make, target: &NetnsTarget) -> FirewallManager {
    let mut m = FirewallManager::new(make(target).expect("backend"));
    m.start().expect("start");
    m
}

fn tag(t: &str) -> IpSetId {
    IpSetId::Tag(Id::new(t).expect("tag"))
}

fn allow_from(t: &str) -> Rule {
    let mut r = rule(RuleAction::Allow);
    r.src.tag = Some(tag(t));
    r
}

fn ep(b: &mut DesiredBuilder, i: usize, profiles: &[&str]) {
    b.endpoint(&wl_if(i), &format!("{}/32", wl_ip(i)), profiles);
}

/// w0 and w1 use "open" (in and out: allow); w2 (the e3) uses
/// "solo2" = `{"inbound_rules":[{}],"outbound_rules":[{}]}`, which only it uses.
fn with_e3() -> DesiredBuilder {
    let mut b = DesiredBuilder::new();
    b.profile(
        "open",
        vec![rule(RuleAction::Allow)],
        vec![rule(RuleAction::Allow)],
    )
    .profile(
        "solo2",
        vec![rule(RuleAction::Allow)],
        vec![rule(RuleAction::Allow)],
    );
    ep(&mut b, 0, &["open"]);
    ep(&mut b, 1, &["open"]);
    ep(&mut b, 2, &["solo2"]);
    b
}

fn solo_profile_delete(make: Make, test: &str) {
    if !require_root(test) {
        return;
    }
    let lab = Lab::new("fd-solo", 3);
    let settings = FirewallSettings::default();
    let mut m = manager(make, &lab.target);
    let apply = |m: &mut FirewallManager, a: &DesiredState, b: &DesiredState| {
        m.apply(b, &changes_between(a, b), &settings)
    };
    let s0 = with_e3().build();
    apply(&mut m, &DesiredState::default(), &s0).expect("first apply");
    let _l = lab.listen(1, 8080);
    assert!(lab.ping(0, &wl_ip(1)) && lab.connect(0, &wl_ip(1), 8080));

    // Delete e3: its endpoint chains and solo2's chains go in one apply.
    let mut b1 = DesiredBuilder::new();
    b1.profile(
        "open",
        vec![rule(RuleAction::Allow)],
        vec![rule(RuleAction::Allow)],
    );
    ep(&mut b1, 0, &["open"]);
    ep(&mut b1, 1, &["open"]);
    let s1 = b1.build();
    let stats = apply(&mut m, &s0, &s1).expect("deleting e3 applies");
    assert!(stats.chains_deleted >= 4, "{stats:?}");

    // The policy change: w1 ("db") only takes traffic from tag "web",
    // which w0 is not in.
    let mut b2 = b1.clone();
    b2.profile("db", vec![allow_from("web")], vec![rule(RuleAction::Allow)])
        .set(tag("web"), &[&format!("{}/32", wl_ip(2))]);
    ep(&mut b2, 1, &["db"]);
    let s2 = b2.build();
    apply(&mut m, &s1, &s2).expect("policy change applies");
    assert!(!lab.ping(0, &wl_ip(1)), "w0 -> w1 ping is denied");
    assert!(!lab.connect(0, &wl_ip(1), 8080), "w0 -> w1 tcp is denied");
    assert!(lab.ping(1, &wl_ip(0)), "w1 -> w0 still allowed");
    let mut fresh = make(&lab.target).expect("backend");
    assert_eq!(
        fresh.observe().expect("observe"),
        observed_of(&lower(&s2, &settings))
    );
}

#[test]
fn solo_profile_delete_iptables() {
    solo_profile_delete(iptables, "solo_profile_delete_iptables");
}

#[test]
fn solo_profile_delete_nftables() {
    solo_profile_delete(nft_netlink, "solo_profile_delete_nftables");
}

#[test]
fn solo_profile_delete_nftables_tool() {
    solo_profile_delete(nft_tool, "solo_profile_delete_nftables_tool");
}

// ----- op order -----

/// Deletes listed before the rewrite of the chain still jumping to them, and
/// in name order against the jumps: the backend must still flush referrers
/// first and delete last.
fn any_op_order(make: Make, test: &str) {
    if !require_root(test) {
        return;
    }
    let ns = TestNetns::new("fd-order");
    let target = NetnsTarget::named(ns.name()).expect("valid namespace name");
    let mut b = make(&target).expect("backend");
    let n = |s: &'static str| ObjectName::fixed(s);
    let jump = |to: &'static str| GenericRule {
        matches: vec![],
        action: Action::Jump(ObjectName::fixed(to)),
    };
    b.write(&[
        FirewallOp::ReplaceChain {
            name: n("margay-a"),
            rules: vec![],
        },
        FirewallOp::ReplaceChain {
            name: n("margay-b"),
            rules: vec![jump("margay-a")],
        },
        FirewallOp::ReplaceChain {
            name: n("margay-keep"),
            rules: vec![jump("margay-b")],
        },
    ])
    .expect("program");
    b.write(&[
        FirewallOp::DeleteChain {
            name: n("margay-a"),
        },
        FirewallOp::DeleteChain {
            name: n("margay-b"),
        },
        FirewallOp::ReplaceChain {
            name: n("margay-keep"),
            rules: vec![],
        },
    ])
    .expect("deletes before the referrer's rewrite apply");
    let seen = make(&target).expect("backend").observe().expect("observe");
    let chains: Vec<&str> = seen.chains.keys().map(ObjectName::as_str).collect();
    assert_eq!(chains, vec!["margay-keep"]);
}

#[test]
fn any_op_order_iptables() {
    any_op_order(iptables, "any_op_order_iptables");
}

#[test]
fn any_op_order_nftables() {
    any_op_order(nft_netlink, "any_op_order_nftables");
}

#[test]
fn any_op_order_nftables_tool() {
    any_op_order(nft_tool, "any_op_order_nftables_tool");
}

// ----- random sequences -----

const PROFILES: [&str; 4] = ["a", "b", "solo", "zz"];
const ENDPOINTS: usize = 4;

/// One step: per endpoint its profiles (absent when `None`), per profile
/// its inbound rule shape, and the members of tag "t".
#[derive(Debug, Clone)]
struct Step {
    endpoints: Vec<Option<Vec<usize>>>,
    shapes: Vec<u8>,
    tag_members: Vec<bool>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        proptest::collection::vec(
            proptest::option::of(proptest::collection::vec(0..PROFILES.len(), 0..3)),
            ENDPOINTS,
        ),
        proptest::collection::vec(0u8..3, PROFILES.len()),
        proptest::collection::vec(any::<bool>(), ENDPOINTS),
    )
        .prop_map(|(endpoints, shapes, tag_members)| Step {
            endpoints,
            shapes,
            tag_members,
        })
}

fn state_of(s: &Step) -> DesiredState {
    let mut b = DesiredBuilder::new();
    let mut used = std::collections::BTreeSet::new();
    for (i, e) in s.endpoints.iter().enumerate() {
        if let Some(profiles) = e {
            let names: Vec<&str> = profiles.iter().map(|p| PROFILES[*p]).collect();
            used.extend(profiles.iter().copied());
            ep(&mut b, i, &names);
        }
    }
    for p in used {
        let inbound = match s.shapes[p] {
            0 => vec![rule(RuleAction::Allow)],
            1 => vec![allow_from("t")],
            _ => vec![rule(RuleAction::Deny), allow_from("t")],
        };
        b.profile(PROFILES[p], inbound, vec![rule(RuleAction::Allow)]);
    }
    let members: Vec<String> = (0..ENDPOINTS)
        .filter(|i| s.tag_members[*i])
        .map(|i| format!("{}/32", wl_ip(i)))
        .collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    if !refs.is_empty() {
        b.set(tag("t"), &refs);
    }
    b.build()
}

fn random_sequences(make: Make, test: &str) {
    if !require_root(test) {
        return;
    }
    let ns = TestNetns::new("fd-prop");
    let target = NetnsTarget::named(ns.name()).expect("valid namespace name");
    let settings = FirewallSettings::default();
    let state = RefCell::new((manager(make, &target), DesiredState::default()));
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        max_shrink_iters: 20,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(step(), 2..6), |steps| {
        // Every sequence ends with all endpoints gone: the deletes of the
        // whole program in one apply.
        let last = Step {
            endpoints: vec![None; ENDPOINTS],
            shapes: vec![0; PROFILES.len()],
            tag_members: vec![false; ENDPOINTS],
        };
        let mut guard = state.borrow_mut();
        let (m, current) = &mut *guard;
        for s in steps.iter().chain(std::iter::once(&last)) {
            let next = state_of(s);
            let changes = changes_between(current, &next);
            let applied = m.apply(&next, &changes, &settings);
            if let Err(e) = applied {
                // Start the next case from what the kernel holds.
                *m = manager(make, &target);
                *current = DesiredState::default();
                return Err(TestCaseError::fail(format!("apply failed: {e}")));
            }
            *current = next;
            let seen = make(&target).expect("backend").observe().expect("observe");
            prop_assert_eq!(seen, observed_of(&lower(current, &settings)));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn random_sequences_iptables() {
    random_sequences(iptables, "random_sequences_iptables");
}

#[test]
fn random_sequences_nftables() {
    random_sequences(nft_netlink, "random_sequences_nftables");
}

#[test]
fn random_sequences_nftables_tool() {
    random_sequences(nft_tool, "random_sequences_nftables_tool");
}
