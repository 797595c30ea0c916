//! Calculation scenarios with explicit expected pieces of the desired state:
//! plumbing, programs (tiers, ordering, verdicts, fail-closed), label
//! inheritance, tag/selector sets across hosts, routes, pools, settings keys
//! (which change nothing here: the datastore layer owns the settings), and
//! the exactness of the reported changes.

mod calc_support;

use calc_support::*;
use margay_policy::desired::{
    Changes, Direction, InterfaceSetting, IpSetId, RouteTarget, RuleAction, TierProgram,
};
use margay_policy::model::{Order, ResourceKey, Update};

use Direction::{Inbound, Outbound};

fn one_local(profiles: &[&str]) -> Vec<Update> {
    vec![u_ep(
        ME,
        "w1",
        Some(wep("cali1", &["10.0.0.1/32"], profiles)),
    )]
}

#[test]
fn local_endpoint_is_plumbed_with_route_sysctls_and_program() {
    let mut e = engine_with(
        [u_rules("p", vec![allow()], vec![allow()])]
            .into_iter()
            .chain(one_local(&["p"])),
    );
    let s = e.state();
    let le = &s.endpoints[&iface("cali1")];
    assert_eq!(le.key, ep_key(ME, "w1"));
    assert_eq!(le.ipv4, vec!["10.0.0.1/32".parse().unwrap()]);
    assert!(le
        .interface_settings()
        .contains(&InterfaceSetting::ProxyArp));
    assert_eq!(
        s.routes.get(&net("10.0.0.1/32")),
        Some(&RouteTarget::Interface(iface("cali1")))
    );
    let prog = &s.programs[&iface("cali1")];
    assert!(prog.inbound.tiers.is_empty());
    assert_eq!(prog.inbound.profiles, vec![rs_profile("p", Inbound)]);
    assert_eq!(prog.outbound.profiles, vec![rs_profile("p", Outbound)]);
    assert!(!prog.inbound.fail_closed && !prog.outbound.fail_closed);
    assert_eq!(
        s.rule_sets.keys().cloned().collect::<Vec<_>>(),
        vec![rs_profile("p", Inbound), rs_profile("p", Outbound)]
    );
    assert_eq!(
        s.rule_sets[&rs_profile("p", Inbound)].rules[0].action,
        RuleAction::Allow
    );
    // Only the two pool sets, empty.
    assert_eq!(s.ip_sets.len(), 2);
    assert!(s.ip_sets.values().all(|m| m.is_empty()));
    assert!(e.problems().is_empty(), "{:?}", e.problems());
    let stats = e.stats();
    assert_eq!(
        (stats.local_endpoints, stats.rule_sets, stats.ip_sets),
        (1, 2, 2)
    );

    // Deleting the endpoint removes everything it brought.
    e.take_changes();
    e.apply(u_ep(ME, "w1", None));
    let s = e.state();
    assert!(s.endpoints.is_empty() && s.programs.is_empty() && s.routes.is_empty());
    assert!(s.rule_sets.is_empty(), "unreferenced rule sets disappear");
    let c = e.take_changes();
    assert_eq!(c.endpoints, [iface("cali1")].into());
    assert_eq!(c.programs, [iface("cali1")].into());
    assert_eq!(c.routes, [net("10.0.0.1/32")].into());
    assert_eq!(c.rule_sets.len(), 2);
}

#[test]
fn endpoint_without_profiles_fails_closed() {
    let e = engine_with(one_local(&[]));
    let prog = &e.state().programs[&iface("cali1")];
    assert!(prog.inbound.fail_closed && prog.outbound.fail_closed);
    assert!(prog.inbound.profiles.is_empty());
    assert!(e.problems().iter().any(|p| p.contains("no profiles")));
}

#[test]
fn missing_or_invalid_profile_fails_closed_until_fixed() {
    let mut e = engine_with(
        [u_rules("p1", vec![allow()], vec![])]
            .into_iter()
            .chain(one_local(&["p1", "p2"])),
    );
    let prog = &e.state().programs[&iface("cali1")];
    assert!(prog.inbound.fail_closed);
    assert!(prog.inbound.profiles.is_empty());
    assert!(e.state().rule_sets.is_empty());
    assert!(e.problems().iter().any(|p| p.contains("profile p2")));

    // A profile with rules but no tags/labels documents is fine.
    e.apply(u_rules("p2", vec![deny()], vec![]));
    let prog = &e.state().programs[&iface("cali1")];
    assert!(!prog.inbound.fail_closed);
    assert_eq!(
        prog.inbound.profiles,
        vec![rs_profile("p1", Inbound), rs_profile("p2", Inbound)]
    );
    assert_eq!(e.state().rule_sets.len(), 4);
    assert!(e.problems().is_empty());

    // The rules of p1 become invalid: treated as absent, fail closed again.
    e.remove(&ResourceKey::ProfileRules(id("p1")));
    let prog = &e.state().programs[&iface("cali1")];
    assert!(prog.inbound.fail_closed && prog.outbound.fail_closed);
    assert!(e.state().rule_sets.is_empty());
}

#[test]
fn tiers_are_ordered_and_only_matching_tiers_appear() {
    let n = Order::Number;
    let mut ups = vec![u_rules("p", vec![], vec![])];
    ups.extend(one_local(&["p"]));
    ups[1] = u_ep(
        ME,
        "w1",
        Some(with_labels(
            wep("cali1", &["10.0.0.1/32"], &["p"]),
            &[("app", "web")],
        )),
    );
    ups.extend([
        u_tier("a", n(10.0)),
        u_tier("b", Order::Default),
        u_tier("c", n(5.0)),
        u_tier("e", n(1.0)),
        u_tier("f", n(10.0)),
        // Tier "d" has no metadata: its policies are ignored.
        u_policy("d", "pd", "all()", n(1.0), vec![allow()], vec![]),
        u_policy("a", "pa2", "app == 'web'", n(2.0), vec![], vec![]),
        u_policy("a", "pa1", "has(app)", n(1.0), vec![], vec![]),
        u_policy("a", "pa3", "", Order::Default, vec![], vec![]),
        u_policy("a", "pa0", "", n(2.0), vec![], vec![]),
        u_policy("a", "px", "app == 'db'", n(0.0), vec![], vec![]),
        u_policy("b", "pb", "all()", n(1.0), vec![], vec![]),
        u_policy("c", "pc", "app != 'db'", n(1.0), vec![], vec![]),
        // Tier "e" comes first but nothing in it matches: skipped.
        u_policy("e", "pe", "app == 'db'", n(1.0), vec![], vec![]),
        // Same order as "a": sorted by name after it.
        u_policy("f", "pf", "all()", n(1.0), vec![], vec![]),
    ]);
    let mut e = engine_with(ups);
    let expected = |d| {
        vec![
            TierProgram {
                tier: id("c"),
                policies: vec![rs_policy("c", "pc", d)],
            },
            TierProgram {
                tier: id("a"),
                policies: vec![
                    rs_policy("a", "pa1", d),
                    rs_policy("a", "pa0", d),
                    rs_policy("a", "pa2", d),
                    rs_policy("a", "pa3", d),
                ],
            },
            TierProgram {
                tier: id("f"),
                policies: vec![rs_policy("f", "pf", d)],
            },
            TierProgram {
                tier: id("b"),
                policies: vec![rs_policy("b", "pb", d)],
            },
        ]
    };
    let prog = &e.state().programs[&iface("cali1")];
    assert_eq!(prog.inbound.tiers, expected(Inbound));
    assert_eq!(prog.outbound.tiers, expected(Outbound));
    assert!(!has_rule_set(&e, &rs_policy("d", "pd", Inbound)));
    assert!(!has_rule_set(&e, &rs_policy("a", "px", Inbound)));
    assert!(has_rule_set(&e, &rs_policy("a", "pa3", Outbound)));

    // Giving tier "d" metadata brings it in; removing it from "c" drops it.
    e.apply(u_tier("d", n(0.5)));
    e.remove(&ResourceKey::TierMetadata(id("c")));
    let tiers: Vec<_> = e.state().programs[&iface("cali1")]
        .inbound
        .tiers
        .iter()
        .map(|t| t.tier.clone())
        .collect();
    assert_eq!(tiers, vec![id("d"), id("a"), id("f"), id("b")]);
    assert!(has_rule_set(&e, &rs_policy("d", "pd", Inbound)));
    assert!(!has_rule_set(&e, &rs_policy("c", "pc", Inbound)));

    // A policy selector change re-matches.
    e.apply(u_policy("b", "pb", "app == 'db'", n(1.0), vec![], vec![]));
    let tiers = &e.state().programs[&iface("cali1")].inbound.tiers;
    assert!(tiers.iter().all(|t| t.tier != id("b")));
    assert!(!has_rule_set(&e, &rs_policy("b", "pb", Inbound)));
}

/// True when the engine's desired state holds rule set `key`.
fn has_rule_set(
    e: &margay_policy::calc::CalcEngine,
    key: &margay_policy::desired::RuleSetId,
) -> bool {
    e.state().rule_sets.contains_key(key)
}

#[test]
fn verdicts_next_tier_log_and_deny_are_kept_in_rule_order() {
    let mut log = rule(RuleAction::Log);
    log.log_prefix = Some("seen:".into());
    let mut ups = vec![
        u_rules("p", vec![rule(RuleAction::NextTier)], vec![]),
        u_tier("t", Order::Number(1.0)),
        u_policy(
            "t",
            "pol",
            "all()",
            Order::Number(1.0),
            vec![log, rule(RuleAction::NextTier), deny()],
            vec![],
        ),
    ];
    ups.extend(one_local(&["p"]));
    let e = engine_with(ups);
    let rs = &e.state().rule_sets[&rs_policy("t", "pol", Inbound)];
    let actions: Vec<_> = rs.rules.iter().map(|r| r.action.clone()).collect();
    assert_eq!(
        actions,
        vec![RuleAction::Log, RuleAction::NextTier, RuleAction::Deny]
    );
    assert_eq!(rs.rules[0].log_prefix.as_deref(), Some("seen:"));
    // The outbound list is empty: the tier still applies (and so drops).
    let out = &e.state().programs[&iface("cali1")].outbound;
    assert_eq!(out.tiers.len(), 1);
    assert!(e.state().rule_sets[&rs_policy("t", "pol", Outbound)]
        .rules
        .is_empty());
    assert_eq!(
        e.state().rule_sets[&rs_profile("p", Inbound)].rules[0].action,
        RuleAction::NextTier
    );
}

#[test]
fn labels_are_inherited_from_profiles_in_order_and_overridden_by_the_endpoint() {
    let n = Order::Number;
    let mut e = engine_with([
        u_rules("p1", vec![], vec![]),
        u_rules("p2", vec![], vec![]),
        u_plabels("p1", &[("app", "a"), ("role", "x")]),
        u_plabels("p2", &[("role", "y")]),
        u_tier("t", n(1.0)),
        u_policy("t", "role-x", "role == 'x'", n(1.0), vec![], vec![]),
        u_policy("t", "role-y", "role == 'y'", n(2.0), vec![], vec![]),
        u_policy("t", "role-z", "role == 'z'", n(3.0), vec![], vec![]),
        u_policy(
            "t",
            "app-env",
            "app == 'a' && env == 'prod'",
            n(4.0),
            vec![],
            vec![],
        ),
        u_ep(
            ME,
            "w1",
            Some(with_labels(
                wep("cali1", &["10.0.0.1/32"], &["p1", "p2"]),
                &[("env", "prod")],
            )),
        ),
    ]);
    let matched = |e: &margay_policy::calc::CalcEngine| -> Vec<String> {
        e.state().programs[&iface("cali1")].inbound.tiers[0]
            .policies
            .iter()
            .map(|p| match &p.owner {
                margay_policy::desired::RuleSetOwner::Policy { policy, .. } => policy.to_string(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(matched(&e), vec!["role-y", "app-env"]);
    // The endpoint's own label wins.
    e.apply(u_ep(
        ME,
        "w1",
        Some(with_labels(
            wep("cali1", &["10.0.0.1/32"], &["p1", "p2"]),
            &[("env", "prod"), ("role", "z")],
        )),
    ));
    assert_eq!(matched(&e), vec!["role-z", "app-env"]);
    // Profile order reversed: p1's role wins over p2's... but the own label still wins.
    e.apply(u_ep(
        ME,
        "w1",
        Some(with_labels(
            wep("cali1", &["10.0.0.1/32"], &["p2", "p1"]),
            &[("env", "prod")],
        )),
    ));
    assert_eq!(matched(&e), vec!["role-x", "app-env"]);
    // Changing a profile's labels relabels its endpoints.
    e.apply(u_plabels("p1", &[("app", "b"), ("role", "x")]));
    assert_eq!(matched(&e), vec!["role-x"]);
}

/// A local endpoint whose profile allows from tag "db" and from selector
/// `role == "db"`, plus database endpoints on other hosts.
fn db_world() -> Vec<Update> {
    vec![
        u_rules(
            "web",
            vec![src_tag(allow(), "db"), src_sel(allow(), "role == 'db'")],
            vec![],
        ),
        u_rules("dbp", vec![], vec![]),
        u_tags("dbp", &["db"]),
        u_plabels("dbp", &[("role", "db")]),
        u_ep(ME, "web1", Some(wep("cali1", &["10.0.0.1/32"], &["web"]))),
        u_ep("h2", "db1", Some(wep("cali9", &["10.0.2.1/32"], &["dbp"]))),
        u_ep(
            "h3",
            "db2",
            Some(inactive(wep("cali9", &["10.0.3.1/32"], &["dbp"]))),
        ),
        u_ep(
            "h3",
            "db3",
            Some(with_labels(
                wep("cali8", &["10.0.3.2/32"], &[]),
                &[("role", "db")],
            )),
        ),
        u_ep(
            "h2",
            "other",
            Some(wep("cali7", &["10.0.2.9/32"], &["web"])),
        ),
    ]
}

#[test]
fn tag_and_selector_sets_take_members_from_all_hosts_and_states() {
    let e = engine_with(db_world());
    let s = e.state();
    assert_eq!(
        s.ip_sets[&tag_set("db")],
        nets(&["10.0.2.1/32", "10.0.3.1/32"])
    );
    assert_eq!(
        s.ip_sets[&sel_set("role == 'db'")],
        nets(&["10.0.2.1/32", "10.0.3.1/32", "10.0.3.2/32"])
    );
    let rule = &s.rule_sets[&rs_profile("web", Inbound)].rules[0];
    assert_eq!(rule.src.tag, Some(tag_set("db")));
    assert_eq!(s.ip_sets.len(), 4);
    assert_eq!(e.stats().ip_set_members, 5);
}

#[test]
fn inactive_local_endpoints_are_listed_and_counted_but_not_plumbed() {
    let mut ups = db_world();
    ups.push(u_ep(
        ME,
        "db-local",
        Some(inactive(wep("cali5", &["10.0.0.5/32"], &["dbp"]))),
    ));
    let e = engine_with(ups);
    assert!(!e.state().endpoints.contains_key(&iface("cali5")));
    assert!(!e.state().routes.contains_key(&net("10.0.0.5/32")));
    assert!(e.state().ip_sets[&tag_set("db")].contains(&net("10.0.0.5/32")));
    let keys: Vec<_> = e.local_endpoint_keys().cloned().collect();
    assert_eq!(keys, vec![ep_key(ME, "db-local"), ep_key(ME, "web1")]);
    assert_eq!(e.stats().local_endpoints, 1);
    assert_eq!(e.stats().remote_endpoints, 4);
}

#[test]
fn relabelling_a_remote_endpoint_moves_exactly_its_address() {
    let mut e = engine_with(db_world());
    e.take_changes();
    e.apply(u_ep(
        "h3",
        "db3",
        Some(with_labels(
            wep("cali8", &["10.0.3.2/32"], &[]),
            &[("role", "web")],
        )),
    ));
    let c = e.take_changes();
    let expected = Changes {
        ip_set_members: [(sel_set("role == 'db'"), nets(&["10.0.3.2/32"]))].into(),
        ..Changes::default()
    };
    assert_eq!(c, expected);
    assert!(!e.state().ip_sets[&sel_set("role == 'db'")].contains(&net("10.0.3.2/32")));
}

#[test]
fn a_remote_address_move_touches_only_its_sets_and_routes() {
    let mut ups = db_world();
    ups.push(u_bird("h2", "192.168.0.2"));
    ups.push(u_pool("10.0.0.0/16", false));
    let mut e = engine_with(ups);
    e.take_changes();
    e.apply(u_ep(
        "h2",
        "db1",
        Some(wep("cali9", &["10.0.2.2/32"], &["dbp"])),
    ));
    let c = e.take_changes();
    let moved = nets(&["10.0.2.1/32", "10.0.2.2/32"]);
    let expected = Changes {
        ip_set_members: [
            (tag_set("db"), moved.clone()),
            (sel_set("role == 'db'"), moved.clone()),
        ]
        .into(),
        routes: moved,
        ..Changes::default()
    };
    assert_eq!(c, expected);
    // Re-applying the same document changes nothing.
    e.apply(u_ep(
        "h2",
        "db1",
        Some(wep("cali9", &["10.0.2.2/32"], &["dbp"])),
    ));
    assert!(e.take_changes().is_empty());
}

#[test]
fn tag_membership_follows_profile_tags_and_endpoint_profiles() {
    let mut e = engine_with(db_world());
    e.apply(u_tags("dbp", &["other"]));
    assert!(e.state().ip_sets[&tag_set("db")].is_empty());
    e.apply(u_tags("dbp", &["other", "db"]));
    assert_eq!(e.state().ip_sets[&tag_set("db")].len(), 2);
    // The remote "other" endpoint gains the db profile.
    e.apply(u_ep(
        "h2",
        "other",
        Some(wep("cali7", &["10.0.2.9/32"], &["web", "dbp"])),
    ));
    assert!(e.state().ip_sets[&tag_set("db")].contains(&net("10.0.2.9/32")));
    // Deleting an endpoint removes its address.
    e.apply(u_ep("h2", "db1", None));
    assert_eq!(
        e.state().ip_sets[&tag_set("db")],
        nets(&["10.0.2.9/32", "10.0.3.1/32"])
    );
}

#[test]
fn sets_are_shared_between_rules_and_vanish_with_the_last_use() {
    let mut ups = db_world();
    ups.push(u_rules("web2", vec![src_tag(deny(), "db")], vec![]));
    ups.push(u_ep(
        ME,
        "web2",
        Some(wep("cali2", &["10.0.0.2/32"], &["web2"])),
    ));
    let mut e = engine_with(ups);
    assert_eq!(e.state().ip_sets.len(), 4);
    e.take_changes();
    // One user drops the tag: the shared set stays, untouched.
    e.apply(u_rules(
        "web",
        vec![src_sel(allow(), "role == 'db'")],
        vec![],
    ));
    let c = e.take_changes();
    assert!(c.ip_sets.is_empty() && c.ip_set_members.is_empty());
    assert_eq!(c.rule_sets, [rs_profile("web", Inbound)].into());
    assert!(e.state().ip_sets.contains_key(&tag_set("db")));
    // The last user goes: the set is removed.
    e.apply(u_ep(ME, "web2", None));
    let c = e.take_changes();
    assert!(!e.state().ip_sets.contains_key(&tag_set("db")));
    assert_eq!(c.ip_sets, [tag_set("db")].into());
    // Spelling differences share one selector set.
    e.apply(u_rules("web", vec![src_sel(allow(), "role=='db'")], vec![]));
    assert!(e.take_changes().ip_sets.is_empty());
}

#[test]
fn remote_routes_follow_bird_ip_and_local_addresses_win() {
    let mut e = engine_with([
        u_pool("10.0.0.0/16", false),
        u_pool("fd00::/64", false),
        u_ep(
            "h2",
            "r1",
            Some(with_v6(
                wep("cali1", &["10.0.9.1/32"], &[]),
                &["fd00::9/128"],
            )),
        ),
        u_ep(
            "h3",
            "r2",
            Some(inactive(wep("cali1", &["10.0.9.2/32"], &[]))),
        ),
        u_bird("h3", "192.168.0.3"),
    ]);
    assert!(
        e.state().routes.is_empty(),
        "no bird_ip for h2, h3 endpoint inactive"
    );
    e.apply(u_bird("h2", "192.168.0.2"));
    let gw = |s: &str| RouteTarget::Gateway(s.parse().unwrap());
    assert_eq!(
        e.state().routes.get(&net("10.0.9.1/32")),
        Some(&gw("192.168.0.2"))
    );
    assert!(
        !e.state().routes.contains_key(&net("fd00::9/128")),
        "no IPv6 route via an IPv4 gateway"
    );
    e.apply(u_bird("h2", "192.168.0.22"));
    assert_eq!(
        e.state().routes.get(&net("10.0.9.1/32")),
        Some(&gw("192.168.0.22"))
    );
    // A local endpoint with the same address wins.
    e.apply(u_ep(ME, "l1", Some(wep("cali1", &["10.0.9.1/32"], &[]))));
    assert_eq!(
        e.state().routes.get(&net("10.0.9.1/32")),
        Some(&RouteTarget::Interface(iface("cali1")))
    );
    e.apply(u_ep(ME, "l1", None));
    assert_eq!(
        e.state().routes.get(&net("10.0.9.1/32")),
        Some(&gw("192.168.0.22"))
    );
    e.remove(&ResourceKey::HostIp("h2".into()));
    assert!(e.state().routes.is_empty());
}

#[test]
fn interface_prefix_decides_plumbing_and_is_reported() {
    let mut e = engine_with([u_ep(ME, "w1", Some(wep("tap1", &["10.0.0.1/32"], &[])))]);
    assert!(e.state().endpoints.is_empty());
    assert!(
        e.problems()[0].contains("lacks an interface prefix"),
        "{:?}",
        e.problems()
    );
    e.set_interface_prefixes(vec!["cali".into(), "tap".into()]);
    assert!(e.state().endpoints.contains_key(&iface("tap1")));
    assert!(e.state().routes.contains_key(&net("10.0.0.1/32")));
    e.set_interface_prefixes(vec!["cali".into()]);
    assert!(e.state().endpoints.is_empty() && e.state().routes.is_empty());
    assert!(e.state().programs.is_empty());
}

#[test]
fn pool_sets_cover_both_families_and_masquerade() {
    let mut e = engine_with([
        u_pool("10.0.0.0/16", true),
        u_pool("10.1.0.0/16", false),
        u_pool("fd00::/64", true),
    ]);
    let s = e.state();
    assert_eq!(
        s.ip_sets[&IpSetId::AllPools],
        nets(&["10.0.0.0/16", "10.1.0.0/16", "fd00::/64"])
    );
    assert_eq!(
        s.ip_sets[&IpSetId::MasqueradePools],
        nets(&["10.0.0.0/16", "fd00::/64"])
    );
    e.take_changes();
    e.apply(u_pool("10.0.0.0/16", false));
    let c = e.take_changes();
    assert_eq!(
        c.ip_set_members,
        [(IpSetId::MasqueradePools, nets(&["10.0.0.0/16"]))].into()
    );
    e.remove(&ResourceKey::IpPool(net("fd00::/64")));
    assert_eq!(
        e.state().ip_sets[&IpSetId::AllPools],
        nets(&["10.0.0.0/16", "10.1.0.0/16"])
    );
    assert!(e.state().ip_sets[&IpSetId::MasqueradePools].is_empty());
    assert_eq!(e.stats().pools, 2);
}

#[test]
fn settings_keys_change_nothing_in_the_calculation() {
    // Settings belong to the datastore layer (margay_datastore::settings);
    // the agent resolves them and calls the calculation's setters. A
    // settings key alone must not report a change: it would make the
    // firewall re-lower for e.g. a new LogSeverityScreen.
    let mut e = margay_policy::calc::CalcEngine::new(ME);
    let first = e.take_changes();
    assert_eq!(
        first.ip_sets,
        [IpSetId::AllPools, IpSetId::MasqueradePools].into(),
        "the first take creates the pool sets"
    );
    let before = e.state().clone();
    e.apply(u_config(None, "LogSeverityScreen", Some("INFO")));
    e.apply(u_config(None, "InterfacePrefix", Some("tap")));
    e.apply(u_config(
        Some(ME),
        "DefaultEndpointToHostAction",
        Some("ACCEPT"),
    ));
    e.apply(u_config(Some("other"), "InterfacePrefix", Some("tap")));
    e.apply(u_config(Some(ME), "LogSeverityScreen", None));
    assert!(e.take_changes().is_empty());
    assert_eq!(e.state(), &before);
    assert_eq!(e.interface_prefixes(), ["cali"], "only the agent sets them");
}

#[test]
fn ready_follows_the_ready_key() {
    use margay_policy::model::Value;
    let mut e = margay_policy::calc::CalcEngine::new(ME);
    assert!(!e.ready());
    e.apply(upd(ResourceKey::Ready, Some(Value::Ready(true))));
    assert!(e.ready());
    e.apply(upd(ResourceKey::Ready, Some(Value::Ready(false))));
    assert!(!e.ready());
    e.apply(upd(ResourceKey::Ready, Some(Value::Ready(true))));
    e.remove(&ResourceKey::Ready);
    assert!(!e.ready());
}

#[test]
fn a_profile_rule_change_dirties_only_its_rule_set() {
    let mut ups = db_world();
    ups.push(u_ep(
        ME,
        "web2",
        Some(wep("cali2", &["10.0.0.2/32"], &["web"])),
    ));
    let mut e = engine_with(ups);
    e.take_changes();
    let mut r = src_tag(allow(), "db");
    r.dst.ports = vec![margay_policy::desired::PortRange { lo: 80, hi: 80 }];
    e.apply(u_rules(
        "web",
        vec![r, src_sel(allow(), "role == 'db'")],
        vec![],
    ));
    let c = e.take_changes();
    assert_eq!(
        c,
        Changes {
            rule_sets: [rs_profile("web", Inbound)].into(),
            ..Changes::default()
        }
    );
    // Changing an unreferenced profile changes nothing visible.
    e.apply(u_rules("unused", vec![src_tag(allow(), "x")], vec![]));
    assert!(e.take_changes().is_empty());
    assert!(!e.state().ip_sets.contains_key(&tag_set("x")));
}

#[test]
fn a_new_selector_set_is_filled_from_existing_endpoints() {
    let mut e = engine_with(db_world());
    e.take_changes();
    e.apply(u_rules("web", vec![src_sel(allow(), "has(role)")], vec![]));
    let c = e.take_changes();
    assert!(c.ip_sets.contains(&sel_set("has(role)")));
    assert!(c.ip_sets.contains(&tag_set("db")), "tag set removed");
    assert!(c.ip_set_members.is_empty(), "new sets are read whole");
    assert_eq!(
        e.state().ip_sets[&sel_set("has(role)")],
        nets(&["10.0.2.1/32", "10.0.3.1/32", "10.0.3.2/32"])
    );
    // New endpoints join the new set.
    e.apply(u_ep(
        "h2",
        "x",
        Some(with_labels(
            wep("cali3", &["10.0.2.3/32"], &[]),
            &[("role", "q")],
        )),
    ));
    assert!(e.state().ip_sets[&sel_set("has(role)")].contains(&net("10.0.2.3/32")));
}

#[test]
fn duplicate_addresses_stay_in_a_set_until_the_last_carrier_leaves() {
    let mut e = engine_with(db_world());
    e.apply(u_ep(
        "h2",
        "dup",
        Some(wep("cali4", &["10.0.2.1/32"], &["dbp"])),
    ));
    e.apply(u_ep("h2", "db1", None));
    assert!(e.state().ip_sets[&tag_set("db")].contains(&net("10.0.2.1/32")));
    e.apply(u_ep("h2", "dup", None));
    assert!(!e.state().ip_sets[&tag_set("db")].contains(&net("10.0.2.1/32")));
}

#[test]
fn a_local_endpoint_going_inactive_and_back_reports_exact_changes() {
    let mut e = engine_with(
        [u_rules("p", vec![allow()], vec![])]
            .into_iter()
            .chain(one_local(&["p"])),
    );
    e.take_changes();
    e.apply(u_ep(
        ME,
        "w1",
        Some(inactive(wep("cali1", &["10.0.0.1/32"], &["p"]))),
    ));
    let c = e.take_changes();
    assert_eq!(
        c,
        Changes {
            endpoints: [iface("cali1")].into(),
            programs: [iface("cali1")].into(),
            rule_sets: [rs_profile("p", Inbound), rs_profile("p", Outbound)].into(),
            routes: [net("10.0.0.1/32")].into(),
            // A local workload route went: BIRD's exports may change.
            bgp: true,
            ..Changes::default()
        }
    );
    assert!(e.state().endpoints.is_empty() && e.state().rule_sets.is_empty());
    assert_eq!(e.local_endpoint_keys().count(), 1);
    e.apply(u_ep(ME, "w1", Some(wep("cali1", &["10.0.0.1/32"], &["p"]))));
    assert_eq!(e.take_changes(), c, "coming back touches the same keys");
    // Renaming the interface moves everything to the new name.
    e.apply(u_ep(ME, "w1", Some(wep("cali2", &["10.0.0.1/32"], &["p"]))));
    let c = e.take_changes();
    assert_eq!(c.endpoints, [iface("cali1"), iface("cali2")].into());
    assert_eq!(c.programs, [iface("cali1"), iface("cali2")].into());
    assert_eq!(c.routes, [net("10.0.0.1/32")].into());
    assert!(c.rule_sets.is_empty(), "the rule sets stay referenced");
    assert_eq!(
        e.state().routes[&net("10.0.0.1/32")],
        RouteTarget::Interface(iface("cali2"))
    );
}
