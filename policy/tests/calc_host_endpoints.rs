//! Host endpoints in the calculation: the real Calico documents
//! (`felix-test-host-endpoint-*`, `baremetal-doc-*`) under this host and
//! another one; expected addresses as tag and selector members (profile
//! labels inherited); this host's entries with their programs (tiers,
//! profiles, fail closed); deletes, invalid values, and rule sets shared
//! with workloads.

mod calc_support;

use std::net::IpAddr;
use std::path::PathBuf;

use calc_support::*;
use margay_policy::calc::CalcEngine;
use margay_policy::desired::{Direction, DirectionProgram, LocalHostEndpoint, TierProgram};
use margay_policy::model::{HostEndpointKey, ResourceKey};

const P: &str = "/calico/v1";

/// A document of the repository's copy of the shared fixtures.
fn fixture(name: &str) -> String {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/calico-v1"
    ))
    .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn raw(e: &mut CalcEngine, key: &str, value: Option<&str>) {
    e.apply_raw(P, &format!("{P}{key}"), value)
        .unwrap_or_else(|err| panic!("{key}: {err}"));
}

fn hep_key(host: &str, id: &str) -> String {
    format!("/host/{host}/endpoint/{id}")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test ip")
}

/// Profiles `prof1` (tag `t1`, label role=web) and `prof2`, both with rules.
fn with_profiles() -> CalcEngine {
    let mut e = CalcEngine::new(ME);
    e.apply(u_rules("prof1", vec![allow()], vec![allow()]));
    e.apply(u_rules("prof2", vec![deny()], vec![allow()]));
    e.apply(u_tags("prof1", &["t1"]));
    e.apply(u_plabels("prof1", &[("role", "web")]));
    e
}

/// A local workload whose profile `user` refers to tag `t` and selector `s`
/// (making both sets active).
fn with_user_of(e: &mut CalcEngine, t: &str, s: &str) {
    e.apply(u_rules(
        "user",
        vec![src_tag(allow(), t), src_sel(allow(), s)],
        vec![],
    ));
    e.apply(u_ep(
        ME,
        "w1",
        Some(wep("cali1", &["10.1.0.1/32"], &["user"])),
    ));
}

fn entry<'a>(e: &'a CalcEngine, id_text: &str) -> &'a LocalHostEndpoint {
    e.state()
        .host_endpoints
        .get(&id(id_text))
        .unwrap_or_else(|| panic!("no host endpoint {id_text}: {:?}", e.state().host_endpoints))
}

fn profiles_only(names: &[&str], direction: Direction) -> DirectionProgram {
    DirectionProgram {
        tiers: Vec::new(),
        profiles: names.iter().map(|p| rs_profile(p, direction)).collect(),
        fail_closed: false,
    }
}

#[test]
fn by_name_fixture_on_this_host_gets_an_entry_with_its_profiles() {
    let mut e = with_profiles();
    e.take_changes();
    let doc = fixture("felix-test-host-endpoint-by-name-input.json");
    raw(&mut e, &hep_key(ME, "eth0"), Some(&doc));
    let hep = entry(&e, "eth0");
    assert_eq!(hep.id, id("eth0"));
    assert_eq!(hep.name, Some(iface("eth0")));
    assert!(hep.expected_addrs.is_empty());
    assert_eq!(
        hep.program.inbound,
        profiles_only(&["prof1", "prof2"], Direction::Inbound)
    );
    assert_eq!(
        hep.program.outbound,
        profiles_only(&["prof1", "prof2"], Direction::Outbound)
    );
    for p in ["prof1", "prof2"] {
        for d in [Direction::Inbound, Direction::Outbound] {
            assert!(
                e.state().rule_sets.contains_key(&rs_profile(p, d)),
                "{p} {d:?}"
            );
        }
    }
    assert_eq!(e.stats().host_endpoints, 1);
    assert_eq!(e.stats().local_endpoints, 0);
    let c = e.take_changes();
    assert_eq!(c.host_endpoints, [id("eth0")].into());
    assert!(e.problems().is_empty(), "{:?}", e.problems());
}

#[test]
fn another_hosts_host_endpoint_gets_no_entry_and_no_rule_sets() {
    let mut e = with_profiles();
    let doc = fixture("felix-test-host-endpoint-by-name-input.json");
    raw(&mut e, &hep_key("h2", "eth0"), Some(&doc));
    assert!(e.state().host_endpoints.is_empty());
    assert!(e.state().rule_sets.is_empty());
    assert_eq!(e.stats().host_endpoints, 0);
    assert_eq!(e.stats().remote_endpoints, 0);
    assert!(e.take_changes().host_endpoints.is_empty());
}

#[test]
fn expected_addresses_of_any_host_join_tag_and_inherited_label_sets() {
    let mut e = with_profiles();
    with_user_of(&mut e, "t1", "role == 'web'");
    let doc = fixture("felix-test-host-endpoint.json");
    raw(&mut e, &hep_key("h2", "tap1234"), Some(&doc));
    raw(&mut e, &hep_key(ME, "tap1234"), Some(&doc));
    let members = nets(&["10.0.0.1/32", "dead::beef/128"]);
    assert_eq!(e.state().ip_sets[&tag_set("t1")], members);
    // role=web is inherited from prof1's labels.
    assert_eq!(e.state().ip_sets[&sel_set("role == 'web'")], members);
    // A selector set created afterwards finds them too.
    e.apply(u_rules("user", vec![src_sel(allow(), "has(role)")], vec![]));
    assert_eq!(e.state().ip_sets[&sel_set("has(role)")], members);
    // This host's entry lists them IPv4 first.
    assert_eq!(
        entry(&e, "tap1234").expected_addrs,
        vec![ip("10.0.0.1"), ip("dead::beef")]
    );
    // Neither host endpoint gets a route.
    assert!(e.state().routes.keys().all(|n| n.addr() == ip("10.1.0.1")));
}

#[test]
fn own_labels_override_profile_labels_and_membership_follows_changes() {
    let mut e = with_profiles();
    with_user_of(&mut e, "t9", "role == 'web'");
    let key = hep_key("h2", "e1");
    raw(
        &mut e,
        &key,
        Some(
            r#"{"expected_ipv4_addrs": ["10.2.0.1"], "profile_ids": ["prof1"], "labels": {"role": "db"}}"#,
        ),
    );
    assert!(e.state().ip_sets[&sel_set("role == 'web'")].is_empty());
    raw(
        &mut e,
        &key,
        Some(r#"{"expected_ipv4_addrs": ["10.2.0.1"], "profile_ids": ["prof1"]}"#),
    );
    assert_eq!(
        e.state().ip_sets[&sel_set("role == 'web'")],
        nets(&["10.2.0.1/32"])
    );
    // The profile's labels change: the inherited label goes.
    e.apply(u_plabels("prof1", &[("role", "db")]));
    assert!(e.state().ip_sets[&sel_set("role == 'web'")].is_empty());
    // The profile gains the tag: the expected address joins its set.
    assert!(e.state().ip_sets[&tag_set("t9")].is_empty());
    e.apply(u_tags("prof1", &["t1", "t9"]));
    assert_eq!(e.state().ip_sets[&tag_set("t9")], nets(&["10.2.0.1/32"]));
    // The address moves: the set follows.
    raw(
        &mut e,
        &key,
        Some(r#"{"expected_ipv4_addrs": ["10.2.0.2"], "profile_ids": ["prof1"]}"#),
    );
    assert_eq!(e.state().ip_sets[&tag_set("t9")], nets(&["10.2.0.2/32"]));
}

/// The baremetal guide's tier and web-server policy, and a host endpoint
/// labelled role=webserver.
fn baremetal() -> CalcEngine {
    let mut e = with_profiles();
    raw(
        &mut e,
        "/policy/tier/my-tier/metadata",
        Some(&fixture("baremetal-doc-tier-my-tier-metadata.json")),
    );
    raw(
        &mut e,
        "/policy/tier/my-tier/policy/webserver",
        Some(&fixture("baremetal-doc-policy-webserver.json")),
    );
    raw(
        &mut e,
        &hep_key(ME, "web1"),
        Some(r#"{"name": "eth0", "profile_ids": ["prof2"], "labels": {"role": "webserver"}}"#),
    );
    e
}

fn webserver_tier(direction: Direction) -> Vec<TierProgram> {
    vec![TierProgram {
        tier: id("my-tier"),
        policies: vec![rs_policy("my-tier", "webserver", direction)],
    }]
}

#[test]
fn baremetal_tier_policy_selects_the_host_endpoint_by_label() {
    let mut e = baremetal();
    let program = &entry(&e, "web1").program;
    assert_eq!(program.inbound.tiers, webserver_tier(Direction::Inbound));
    assert_eq!(program.outbound.tiers, webserver_tier(Direction::Outbound));
    assert_eq!(
        program.inbound.profiles,
        vec![rs_profile("prof2", Direction::Inbound)]
    );
    let inbound = &e.state().rule_sets[&rs_policy("my-tier", "webserver", Direction::Inbound)];
    assert_eq!(inbound.rules.len(), 1);
    e.take_changes();
    // Relabelled: the policy no longer applies, its rule sets go.
    raw(
        &mut e,
        &hep_key(ME, "web1"),
        Some(r#"{"name": "eth0", "profile_ids": ["prof2"], "labels": {"role": "db"}}"#),
    );
    assert!(entry(&e, "web1").program.inbound.tiers.is_empty());
    assert!(!e.state().rule_sets.contains_key(&rs_policy(
        "my-tier",
        "webserver",
        Direction::Inbound
    )));
    assert_eq!(e.take_changes().host_endpoints, [id("web1")].into());
}

#[test]
fn policy_and_tier_changes_rebuild_the_host_endpoint_program() {
    let mut e = baremetal();
    // The selector changes to one it does not match, then back.
    e.apply(u_policy(
        "my-tier",
        "webserver",
        "role == 'x'",
        order(100),
        vec![allow()],
        vec![],
    ));
    assert!(entry(&e, "web1").program.inbound.tiers.is_empty());
    e.take_changes();
    raw(
        &mut e,
        "/policy/tier/my-tier/policy/webserver",
        Some(&fixture("baremetal-doc-policy-webserver.json")),
    );
    assert_eq!(
        entry(&e, "web1").program.inbound.tiers,
        webserver_tier(Direction::Inbound)
    );
    assert_eq!(e.take_changes().host_endpoints, [id("web1")].into());
    // Without tier metadata the tier is ignored; with it, back.
    raw(&mut e, "/policy/tier/my-tier/metadata", None);
    assert!(entry(&e, "web1").program.inbound.tiers.is_empty());
    raw(
        &mut e,
        "/policy/tier/my-tier/metadata",
        Some(r#"{"order": 5}"#),
    );
    assert_eq!(
        entry(&e, "web1").program.inbound.tiers,
        webserver_tier(Direction::Inbound)
    );
}

fn order(n: u8) -> margay_policy::model::Order {
    margay_policy::model::Order::Number(f64::from(n))
}

#[test]
fn changes_name_the_host_endpoint_only_when_its_entry_changes() {
    let mut e = baremetal();
    e.take_changes();
    let doc = r#"{"name": "eth0", "profile_ids": ["prof2"], "labels": {"role": "webserver"}}"#;
    raw(&mut e, &hep_key(ME, "web1"), Some(doc));
    assert!(e.take_changes().is_empty());
    // A label no policy looks at: same entry.
    raw(
        &mut e,
        &hep_key(ME, "web1"),
        Some(
            r#"{"name": "eth0", "profile_ids": ["prof2"], "labels": {"role": "webserver", "x": "y"}}"#,
        ),
    );
    assert!(e.take_changes().host_endpoints.is_empty());
    // New profile rules (still present): the rule set changes, the entry does not.
    e.apply(u_rules("prof2", vec![allow()], vec![]));
    let c = e.take_changes();
    assert!(c.host_endpoints.is_empty());
    assert!(c
        .rule_sets
        .contains(&rs_profile("prof2", Direction::Inbound)));
    // The name changes: the entry does.
    raw(
        &mut e,
        &hep_key(ME, "web1"),
        Some(r#"{"name": "eth1", "profile_ids": ["prof2"], "labels": {"role": "webserver"}}"#),
    );
    assert_eq!(e.take_changes().host_endpoints, [id("web1")].into());
    assert_eq!(entry(&e, "web1").name, Some(iface("eth1")));
}

#[test]
fn host_endpoints_fail_closed_without_valid_profiles_and_say_so() {
    let mut e = with_profiles();
    raw(&mut e, &hep_key(ME, "bare"), Some(r#"{"name": "eth0"}"#));
    raw(
        &mut e,
        &hep_key(ME, "missing"),
        Some(r#"{"name": "eth1", "profile_ids": ["prof1", "nope"]}"#),
    );
    for name in ["bare", "missing"] {
        let p = &entry(&e, name).program;
        assert!(p.inbound.fail_closed && p.outbound.fail_closed, "{name}");
        assert!(p.inbound.profiles.is_empty(), "{name}");
    }
    let problems = e.problems();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("host endpoint bare: no profiles"),
        "{problems:?}"
    );
    assert!(
        problems[0].contains("except failsafe ports"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("host endpoint missing: profile nope is missing"),
        "{problems:?}"
    );
    // The missing profile appears: the program opens up.
    e.take_changes();
    e.apply(u_rules("nope", vec![allow()], vec![]));
    let p = &entry(&e, "missing").program;
    assert!(!p.inbound.fail_closed);
    assert_eq!(e.take_changes().host_endpoints, [id("missing")].into());
    // It goes invalid again: closed again.
    e.remove(&ResourceKey::ProfileRules(id("nope")));
    assert!(entry(&e, "missing").program.inbound.fail_closed);
}

#[test]
fn deleted_or_invalid_host_endpoints_leave_nothing_and_spare_the_others() {
    let mut e = with_profiles();
    with_user_of(&mut e, "t1", "role == 'web'");
    let before = e.state().clone();
    let doc = fixture("felix-test-host-endpoint.json");
    raw(&mut e, &hep_key(ME, "tap1234"), Some(&doc));
    raw(
        &mut e,
        &hep_key(ME, "other"),
        Some(r#"{"expected_ipv4_addrs": ["10.3.0.1"], "profile_ids": ["prof1"]}"#),
    );
    e.take_changes();
    // The baremetal guide's rejected document: no name, no addresses.
    let rejected = fixture("baremetal-doc-host-endpoint-REJECTED.json");
    let key = format!("{P}{}", hep_key(ME, "tap1234"));
    let err = e
        .apply_raw(P, &key, Some(&rejected))
        .expect_err("the REJECTED fixture is invalid");
    assert_eq!(err.kind(), "host_endpoint");
    assert!(!e.state().host_endpoints.contains_key(&id("tap1234")));
    assert_eq!(e.take_changes().host_endpoints, [id("tap1234")].into());
    assert!(e.state().host_endpoints.contains_key(&id("other")));
    assert_eq!(e.state().ip_sets[&tag_set("t1")], nets(&["10.3.0.1/32"]));
    // Fixed again, then deleted along with the other: back to before.
    raw(&mut e, &hep_key(ME, "tap1234"), Some(&doc));
    e.remove(&ResourceKey::HostEndpoint(HostEndpointKey {
        host: ME.into(),
        endpoint: id("tap1234"),
    }));
    raw(&mut e, &hep_key(ME, "other"), None);
    assert_eq!(e.state(), &before);
    assert_eq!(e.stats().host_endpoints, 0);
}

fn delete_host_endpoint_h1(e: &mut CalcEngine) {
    raw(e, &hep_key(ME, "h1"), None);
}

fn delete_workload_w1(e: &mut CalcEngine) {
    e.apply(u_ep(ME, "w1", None));
}

#[test]
fn a_rule_set_shared_by_a_workload_and_a_host_endpoint_survives_either_going() {
    type Delete = fn(&mut CalcEngine);
    let orders: [[Delete; 2]; 2] = [
        [delete_host_endpoint_h1, delete_workload_w1],
        [delete_workload_w1, delete_host_endpoint_h1],
    ];
    for (n, [first, second]) in orders.into_iter().enumerate() {
        let mut e = with_profiles();
        e.apply(u_ep(
            ME,
            "w1",
            Some(wep("cali1", &["10.1.0.1/32"], &["prof1"])),
        ));
        raw(
            &mut e,
            &hep_key(ME, "h1"),
            Some(r#"{"name": "eth0", "profile_ids": ["prof1"]}"#),
        );
        let shared = rs_profile("prof1", Direction::Inbound);
        first(&mut e);
        assert!(e.state().rule_sets.contains_key(&shared), "order {n}");
        second(&mut e);
        assert!(e.state().rule_sets.is_empty(), "order {n}");
    }
}
