//! The engine fed raw datastore keys and JSON through `apply_raw`, as the
//! agent does: invalid values count as absent (fail closed) and fixing them
//! repairs the state live.

mod calc_support;

use calc_support::*;
use margay_policy::calc::CalcEngine;
use margay_policy::desired::{Direction, RouteTarget};
use margay_policy::model::ResourceKey;

const P: &str = "/calico/v1";

fn raw(e: &mut CalcEngine, key: &str, value: Option<&str>) {
    e.apply_raw(P, &format!("{P}{key}"), value)
        .unwrap_or_else(|err| panic!("{key}: {err}"));
}

const EP: &str = "/host/me/workload/k8s/w1/endpoint/eth0";
const EP_DOC: &str = r#"{"state": "active", "name": "cali1", "mac": "ee:ee:ee:ee:ee:01",
    "profile_ids": ["web"], "ipv4_nets": ["10.0.0.1/32"], "ipv6_nets": [],
    "labels": {"app": "web"}}"#;

fn loaded() -> CalcEngine {
    let mut e = CalcEngine::new(ME);
    raw(&mut e, "/Ready", Some("true"));
    raw(
        &mut e,
        "/policy/profile/web/rules",
        Some(
            r#"{"id": "web", "inbound_rules": [{"action": "allow", "src_tag": "db", "protocol": "tcp", "dst_ports": [5432]}], "outbound_rules": [{"action": "allow"}]}"#,
        ),
    );
    raw(&mut e, "/policy/profile/db/tags", Some(r#"["db"]"#));
    raw(&mut e, "/policy/profile/db/rules", Some(r#"{}"#));
    raw(&mut e, EP, Some(EP_DOC));
    raw(
        &mut e,
        "/host/h2/workload/k8s/db1/endpoint/eth0",
        Some(
            r#"{"state": "active", "name": "cali2", "profile_id": "db", "ipv4_nets": ["10.0.2.1/32"]}"#,
        ),
    );
    raw(&mut e, "/host/h2/bird_ip", Some("192.168.0.2"));
    raw(
        &mut e,
        "/ipam/v4/pool/10.0.0.0-16",
        Some(r#"{"cidr": "10.0.0.0/16", "masquerade": true}"#),
    );
    raw(&mut e, "/config/LogSeverityScreen", Some("INFO"));
    e
}

#[test]
fn raw_documents_build_the_state() {
    let e = loaded();
    assert!(e.ready());
    let s = e.state();
    assert!(s.endpoints[&iface("cali1")].mac.is_some());
    assert_eq!(s.ip_sets[&tag_set("db")], nets(&["10.0.2.1/32"]));
    assert_eq!(
        s.routes[&net("10.0.2.1/32")],
        RouteTarget::Gateway("192.168.0.2".parse().unwrap())
    );
    assert_eq!(
        s.programs[&iface("cali1")].inbound.profiles,
        vec![rs_profile("web", Direction::Inbound)]
    );
    assert_eq!(e.stats().pools, 1);
}

#[test]
fn an_invalid_value_is_absent_until_fixed() {
    let mut e = loaded();
    let good = e.state().clone();
    // A rule with an unknown key invalidates the whole profile rules document.
    let err = e
        .apply_raw(
            P,
            &format!("{P}/policy/profile/web/rules"),
            Some(r#"{"inbound_rules": [{"action": "allow", "src_tagz": "db"}]}"#),
        )
        .expect_err("unknown rule key");
    assert_eq!(err.resource, Some(ResourceKey::ProfileRules(id("web"))));
    let prog = &e.state().programs[&iface("cali1")];
    assert!(prog.inbound.fail_closed && prog.outbound.fail_closed);
    assert!(!e.state().ip_sets.contains_key(&tag_set("db")));
    // An invalid endpoint document unplumbs the endpoint.
    assert!(e
        .apply_raw(
            P,
            &format!("{P}{EP}"),
            Some(r#"{"state": "active", "name": "cali1; rm"}"#)
        )
        .is_err());
    assert!(e.state().endpoints.is_empty() && e.state().programs.is_empty());
    assert!(!e.state().routes.contains_key(&net("10.0.0.1/32")));
    // Fixing both restores exactly the earlier state.
    raw(
        &mut e,
        "/policy/profile/web/rules",
        Some(
            r#"{"id": "web", "inbound_rules": [{"action": "allow", "src_tag": "db", "protocol": "tcp", "dst_ports": [5432]}], "outbound_rules": [{"action": "allow"}]}"#,
        ),
    );
    raw(&mut e, EP, Some(EP_DOC));
    assert_eq!(e.state(), &good);
}

#[test]
fn unknown_keys_are_ignored_and_bad_keys_remove_nothing() {
    let mut e = loaded();
    let before = e.state().clone();
    e.take_changes();
    assert!(e
        .apply_raw(P, "/calico/v1/unknown/thing", Some("x"))
        .is_ok());
    assert!(e.apply_raw(P, "/elsewhere/key", Some("x")).is_ok());
    let err = e
        .apply_raw(P, "/calico/v1/policy/profile/bad id/rules", Some("{}"))
        .expect_err("bad id segment");
    assert_eq!(err.resource, None);
    assert_eq!(e.state(), &before);
    assert!(e.take_changes().is_empty());
}

#[test]
fn raw_deletes_remove() {
    let mut e = loaded();
    raw(&mut e, EP, None);
    raw(&mut e, "/Ready", None);
    assert!(!e.ready());
    assert!(e.state().endpoints.is_empty());
    assert!(e.state().rule_sets.is_empty());
    assert_eq!(e.state().ip_sets.len(), 2, "only the pool sets remain");
}

#[test]
fn an_invalid_bird_ip_withdraws_the_routes_via_the_old_one() {
    let mut e = loaded();
    let via = |ip: &str| Some(RouteTarget::Gateway(ip.parse().expect("ip")));
    assert_eq!(
        e.state().routes.get(&net("10.0.2.1/32")).cloned(),
        via("192.168.0.2")
    );
    for bad in [
        "127.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "169.254.1.1",
        "fd00::1",
    ] {
        raw(&mut e, "/host/h2/bird_ip", Some("192.168.0.2"));
        let err = e
            .apply_raw(P, &format!("{P}/host/h2/bird_ip"), Some(bad))
            .expect_err(bad);
        assert_eq!(
            err.resource,
            Some(ResourceKey::HostIp("h2".into())),
            "{bad}"
        );
        assert_eq!(
            e.state().routes.get(&net("10.0.2.1/32")),
            None,
            "{bad}: the route via the previous bird_ip stays"
        );
    }
    raw(&mut e, "/host/h2/bird_ip", Some("192.168.0.22"));
    assert_eq!(
        e.state().routes.get(&net("10.0.2.1/32")).cloned(),
        via("192.168.0.22")
    );
}
