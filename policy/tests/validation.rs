//! One focused test per validation rule of `shared/DATAMODEL.md`, each with
//! accepted and rejected cases, plus hostile strings.

// The helpers pass `InvalidUpdate` (which carries its ResourceKey) straight through.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;

use margay_policy::desired::{IcmpMatch, IpVersion, PortRange, Protocol, RuleAction};
use margay_policy::model::{
    EndpointState, HostEndpoint, Order, Policy, ResourceKey, Rule, Update, Value, WorkloadEndpoint,
};
use margay_policy::names::{Id, MacAddr};
use margay_policy::selector::Selector;
use margay_policy::update::{parse_update, InvalidUpdate};
use serde_json::{json, Value as Json};

const P: &str = "/calico/v1";
const WEP: &str = "/calico/v1/host/h1/workload/k8s/ns.pod/endpoint/e1";
const HEP: &str = "/calico/v1/host/h1/endpoint/e1";
const RULES: &str = "/calico/v1/policy/profile/p1/rules";
const POLICY: &str = "/calico/v1/policy/tier/t1/policy/pol1";

// ---------------------------------------------------------------- helpers

fn parse(key: &str, value: &str) -> Result<Option<Update>, InvalidUpdate> {
    parse_update(P, key, Some(value))
}

fn ok(key: &str, value: &str) -> Value {
    match parse(key, value) {
        Ok(Some(Update { value: Some(v), .. })) => v,
        other => panic!("{key} = {value}: expected a value, got {other:?}"),
    }
}

fn bad(key: &str, value: &str) -> InvalidUpdate {
    match parse(key, value) {
        Err(e) => e,
        Ok(u) => panic!("{key} = {value}: expected rejection, got {u:?}"),
    }
}

/// A valid workload endpoint document with `changes` merged in (null removes a field).
fn wep_doc(changes: Json) -> String {
    let mut doc = json!({
        "state": "active",
        "name": "cali1234",
        "mac": "aa:bb:cc:dd:ee:ff",
        "profile_ids": ["prof1"],
        "ipv4_nets": ["10.0.0.1/32"],
        "ipv6_nets": ["fd00::1/128"],
    });
    merge(&mut doc, changes);
    doc.to_string()
}

fn merge(doc: &mut Json, changes: Json) {
    let (Some(d), Json::Object(c)) = (doc.as_object_mut(), changes) else {
        panic!("objects only");
    };
    for (k, v) in c {
        if v.is_null() {
            d.remove(&k);
        } else {
            d.insert(k, v);
        }
    }
}

fn wep(changes: Json) -> Result<WorkloadEndpoint, InvalidUpdate> {
    match parse(WEP, &wep_doc(changes))? {
        Some(Update {
            value: Some(Value::WorkloadEndpoint(e)),
            ..
        }) => Ok(e),
        other => panic!("unexpected {other:?}"),
    }
}

fn wep_bad(changes: Json, reason: &str) {
    let doc = wep_doc(changes);
    let e = bad(WEP, &doc);
    assert_eq!(e.kind(), "endpoint", "{doc}");
    assert!(e.reason.contains(reason), "{doc}: {e}");
    assert!(matches!(e.resource, Some(ResourceKey::WorkloadEndpoint(_))));
}

fn hep(doc: Json) -> Result<HostEndpoint, InvalidUpdate> {
    match parse(HEP, &doc.to_string())? {
        Some(Update {
            value: Some(Value::HostEndpoint(h)),
            ..
        }) => Ok(h),
        other => panic!("unexpected {other:?}"),
    }
}

/// Parses one rule, wrapped in a profile rules document.
fn rule(r: Json) -> Result<Rule, InvalidUpdate> {
    let doc = json!({ "inbound_rules": [r] }).to_string();
    match parse(RULES, &doc)? {
        Some(Update {
            value: Some(Value::ProfileRules(mut rules)),
            ..
        }) => Ok(rules.inbound.remove(0)),
        other => panic!("unexpected {other:?}"),
    }
}

fn rule_ok(r: Json) -> Rule {
    let text = r.to_string();
    rule(r).unwrap_or_else(|e| panic!("{text} should be valid: {e}"))
}

fn rule_bad(r: Json, reason: &str) {
    let text = r.to_string();
    match rule(r) {
        Ok(got) => panic!("{text} should be invalid, got {got:?}"),
        Err(e) => {
            assert_eq!(e.kind(), "profile");
            assert!(e.reason.contains(reason), "{text}: {e}");
            assert_eq!(e.resource, Some(ResourceKey::ProfileRules(id("p1"))));
        }
    }
}

fn id(s: &str) -> Id {
    Id::new(s).expect("id")
}

fn pr(lo: u16, hi: u16) -> PortRange {
    PortRange { lo, hi }
}

/// Strings no datastore name may contain.
const HOSTILE: &[&str] = &[
    "a\"b",
    "a'b",
    "a;b",
    "a\nb",
    "a b",
    "a\tb",
    "a$(reboot)",
    "a`id`",
    "a|b",
    "a\u{0}b",
    "ünï",
    "",
];

// ------------------------------------------------------------------- keys

#[test]
fn key_ids_use_the_id_charset() {
    for good in ["p", "prof-1_a.B9", "SGID-default"] {
        let key = format!("/calico/v1/policy/profile/{good}/tags");
        assert!(matches!(parse(&key, "[]"), Ok(Some(_))), "{good}");
    }
    // The contract sets no length limit on ids: dataplanes hash them into
    // kernel names, so a long id is valid (and must not be truncated).
    let long = "x".repeat(5000);
    let key = format!("/calico/v1/policy/profile/{long}/tags");
    let u = parse(&key, "[]").expect("long id").expect("read");
    assert_eq!(u.key, ResourceKey::ProfileTags(id(&long)));
    let long_bad = format!("{long};");
    let mut hostile: Vec<&str> = HOSTILE.to_vec();
    hostile.push(&long_bad);
    for name in hostile {
        for key in [
            format!("/calico/v1/policy/profile/{name}/rules"),
            format!("/calico/v1/policy/tier/{name}/metadata"),
            format!("/calico/v1/policy/tier/t/policy/{name}"),
            format!("/calico/v1/host/h/workload/o/w/endpoint/{name}"),
            format!("/calico/v1/host/h/endpoint/{name}"),
        ] {
            let e = parse_update(P, &key, None).expect_err(&key);
            assert_eq!(e.kind(), "key", "{key:?}");
            assert_eq!(e.resource, None);
            assert!(!e.to_string().contains('\n'), "log line must stay one line");
            assert!(e.reason.len() < 200, "reason quotes the id shortened");
        }
    }
}

#[test]
fn key_host_orchestrator_and_workload_are_anything_non_empty() {
    let key = "/calico/v1/host/node 1.example/workload/k8s/ns:pod name/endpoint/eth0";
    let u = parse_update(P, key, None).expect("ok").expect("read");
    let ResourceKey::WorkloadEndpoint(k) = u.key else {
        panic!("{u:?}")
    };
    assert_eq!(k.host, "node 1.example");
    assert_eq!(k.workload, "ns:pod name");
    for key in [
        "/calico/v1/host//workload/k8s/w/endpoint/e",
        "/calico/v1/host/h/workload//w/endpoint/e",
        "/calico/v1/host/h/workload/k8s//endpoint/e",
        "/calico/v1/host//bird_ip",
        "/calico/v1/host//config/X",
    ] {
        assert_eq!(parse_update(P, key, None).expect_err(key).kind(), "key");
    }
}

#[test]
fn key_config_names_are_alphanumeric() {
    let u = ok("/calico/v1/config/InterfacePrefix", "tap,cali");
    assert_eq!(u, Value::Config("tap,cali".into()));
    let u = parse("/calico/v1/host/h1/config/Log_Severity2", "DEBUG").expect("ok");
    assert_eq!(
        u.map(|u| u.key),
        Some(ResourceKey::HostConfig {
            host: "h1".into(),
            name: "Log_Severity2".into()
        })
    );
    for name in ["a-b", "a.b", "a b", ""] {
        let key = format!("/calico/v1/config/{name}");
        assert_eq!(bad(&key, "x").kind(), "key", "{name:?}");
    }
}

#[test]
fn unread_keys_are_ignored_and_deletions_pass_through() {
    for key in [
        "/calico/felix/v1/host/h/status",
        "/calico/v1/host/h1/metadata",
        "/calico/v1/policy/profile/p/rules/x",
        "/calico/ipam/v2/host/h/ipv4/block/10.0.0.0-26",
        "/calico/v1/ipam/v4/pool",
        "Ready",
    ] {
        assert_eq!(parse(key, "garbage"), Ok(None), "{key}");
        assert_eq!(parse_update(P, key, None), Ok(None), "{key}");
    }
    let u = parse_update(P, RULES, None).expect("ok").expect("read");
    assert_eq!(u.key, ResourceKey::ProfileRules(id("p1")));
    assert_eq!(u.value, None);
    // A deletion is a deletion whatever the last value was.
    let u = parse_update(P, "/calico/v1/ipam/v4/pool/10.0.0.0-8", None).expect("ok");
    assert!(matches!(u, Some(Update { value: None, .. })));
}

#[test]
fn errors_carry_a_stable_kind_per_resource() {
    let cases = [
        (WEP, "{}", "endpoint"),
        (HEP, "{}", "host_endpoint"),
        (RULES, "[]", "profile"),
        ("/calico/v1/policy/profile/p1/tags", "{}", "profile"),
        ("/calico/v1/policy/profile/p1/labels", "[]", "profile"),
        ("/calico/v1/policy/tier/t1/metadata", "[]", "tier"),
        (POLICY, "{}", "policy"),
        ("/calico/v1/ipam/v4/pool/10.0.0.0-8", "{}", "pool"),
        ("/calico/v1/host/h1/bird_ip", "nope", "host_ip"),
    ];
    for (key, value, kind) in cases {
        let e = bad(key, value);
        assert_eq!(e.kind(), kind, "{key}");
        assert_eq!(e.key, key);
        assert!(e.resource.is_some());
    }
    assert_eq!(bad("/calico/v1/config/a b", "x").kind(), "key");
}

#[test]
fn values_must_be_json_of_the_right_shape() {
    for doc in [
        "",
        "{",
        "not json",
        "[1]",
        "\"active\"",
        "null",
        "{\"state\": \"active\",}",
    ] {
        assert!(parse(WEP, doc).is_err(), "{doc:?}");
    }
}

// -------------------------------------------------------- workload endpoint

#[test]
fn endpoint_baseline_is_valid_and_unknown_fields_are_ignored() {
    let e = wep(json!({"something_new": {"x": [1, 2]}, "ipv4_nat": null})).expect("valid");
    assert_eq!(e.state, EndpointState::Active);
    assert_eq!(e.name.as_str(), "cali1234");
    assert_eq!(e.profile_ids, vec![id("prof1")]);
    assert_eq!(e.ipv4_nets, vec!["10.0.0.1/32".parse().expect("net")]);
    assert_eq!(e.ipv6_nets, vec!["fd00::1/128".parse().expect("net")]);
}

#[test]
fn endpoint_state_is_required_and_enumerated() {
    assert_eq!(
        wep(json!({"state": "inactive"})).expect("valid").state,
        EndpointState::Inactive
    );
    wep_bad(json!({"state": null}), "state is required");
    wep_bad(json!({"state": "Active"}), "state");
    wep_bad(json!({"state": "up"}), "state");
    wep_bad(json!({"state": true}), "state");
}

#[test]
fn endpoint_name_is_an_interface_name() {
    for good in [
        "cali1234",
        "tapDEADBEEF-12",
        "a",
        "veth_0-x",
        "cali12345678901",
    ] {
        assert_eq!(wep(json!({"name": good})).expect(good).name.as_str(), good);
    }
    // The prefix (InterfacePrefix) is checked by the calculation, not here.
    assert!(wep(json!({"name": "eth0"})).is_ok());
    wep_bad(json!({"name": null}), "name is required");
    wep_bad(json!({"name": "cali123456789012"}), "interface name");
    wep_bad(json!({"name": "cali.1"}), "interface name");
    wep_bad(json!({"name": "cali/1"}), "interface name");
    wep_bad(json!({"name": 12}), "name must be a string");
    let long = "c".repeat(100_000);
    for hostile in HOSTILE.iter().copied().chain([long.as_str()]) {
        wep_bad(json!({"name": hostile}), "interface name");
    }
}

#[test]
fn endpoint_mac_in_colon_or_dash_form() {
    let want = Some(MacAddr([0xaa, 0xbb, 0xcc, 0x0d, 0xee, 0x0f]));
    for good in [
        "aa:bb:cc:0d:ee:0f",
        "AA:BB:CC:0D:EE:0F",
        "aa-bb-cc-0d-ee-0f",
    ] {
        assert_eq!(wep(json!({"mac": good})).expect(good).mac, want);
    }
    assert_eq!(wep(json!({"mac": null})).expect("no mac").mac, None);
    for bad_mac in [
        "aa:bb:cc:dd:ee",
        "aa:bb:cc:dd:ee:ff:00",
        "aa:bb-cc:dd:ee:ff",
        "aabb.ccdd.eeff",
        "a:bb:cc:dd:ee:fff",
        "+a:bb:cc:dd:ee:ff",
        "gg:bb:cc:dd:ee:ff",
        "aa:bb:cc:dd:ee:f\n",
        "",
    ] {
        wep_bad(json!({"mac": bad_mac}), "MAC");
    }
    wep_bad(json!({"mac": 12}), "mac must be a string");
}

#[test]
fn endpoint_profile_ids_list_or_legacy_profile_id() {
    let e = wep(json!({"profile_ids": ["a", "b.c", "a"]})).expect("list");
    assert_eq!(
        e.profile_ids,
        vec![id("a"), id("b.c"), id("a")],
        "order kept"
    );
    let e = wep(json!({"profile_ids": null, "profile_id": "legacy"})).expect("legacy");
    assert_eq!(e.profile_ids, vec![id("legacy")]);
    let e = wep(json!({"profile_ids": null})).expect("none");
    assert!(
        e.profile_ids.is_empty(),
        "no profiles: the calculation fails closed"
    );
    wep_bad(json!({"profile_id": "x"}), "both");
    wep_bad(json!({"profile_ids": "prof1"}), "must be a list");
    wep_bad(json!({"profile_ids": [1]}), "must be a string");
    wep_bad(
        json!({"profile_ids": null, "profile_id": ["x"]}),
        "must be a string",
    );
    for hostile in HOSTILE {
        wep_bad(json!({"profile_ids": ["ok", hostile]}), "profile_ids[1]");
    }
}

#[test]
fn endpoint_ipv4_nets_are_v4_host_nets_in_full() {
    let e = wep(json!({"ipv4_nets": ["10.0.0.1/32", "192.168.3.2"]})).expect("valid");
    assert_eq!(
        e.ipv4_nets,
        vec![
            "10.0.0.1/32".parse().expect("net"),
            "192.168.3.2/32".parse().expect("net")
        ],
        "a bare address is its /32"
    );
    assert!(wep(json!({"ipv4_nets": []}))
        .expect("empty")
        .ipv4_nets
        .is_empty());
    assert!(wep(json!({"ipv4_nets": null}))
        .expect("null")
        .ipv4_nets
        .is_empty());
    wep_bad(json!({"ipv4_nets": ["10.0.0.0/24"]}), "not an IPv4 /32");
    wep_bad(json!({"ipv4_nets": ["fd00::1/128"]}), "not an IPv4 /32");
    wep_bad(json!({"ipv4_nets": ["10.0.1/32"]}), "written in full");
    wep_bad(json!({"ipv4_nets": ["010.0.0.1/32"]}), "written in full");
    wep_bad(json!({"ipv4_nets": ["10.0.0.1/32 "]}), "written in full");
    wep_bad(json!({"ipv4_nets": "10.0.0.1/32"}), "must be a list");
    wep_bad(json!({"ipv4_nets": [167772161]}), "must be a string");
}

#[test]
fn endpoint_ipv6_nets_are_v6_host_nets() {
    let e = wep(json!({"ipv6_nets": ["2001:0::1/128"]})).expect("valid");
    assert_eq!(e.ipv6_nets, vec!["2001::1/128".parse().expect("net")]);
    wep_bad(json!({"ipv6_nets": ["fd00::/64"]}), "not an IPv6 /128");
    wep_bad(json!({"ipv6_nets": ["10.0.0.1/32"]}), "not an IPv6 /128");
    wep_bad(json!({"ipv6_nets": ["fd00:::1/128"]}), "written in full");
}

#[test]
fn endpoint_gateways_are_addresses_of_their_family_or_null() {
    let e = wep(json!({"ipv4_gateway": "10.0.0.254", "ipv6_gateway": "fe80::1"})).expect("valid");
    assert_eq!(
        e.ipv4_gateway,
        Some("10.0.0.254".parse::<IpAddr>().expect("ip"))
    );
    assert_eq!(
        e.ipv6_gateway,
        Some("fe80::1".parse::<IpAddr>().expect("ip"))
    );
    let e = wep(json!({"ipv4_gateway": null})).expect("null gateway");
    assert_eq!(e.ipv4_gateway, None);
    wep_bad(json!({"ipv4_gateway": "fe80::1"}), "not an IPv4 address");
    wep_bad(json!({"ipv6_gateway": "10.0.0.1"}), "not an IPv6 address");
    wep_bad(json!({"ipv4_gateway": "10.0.1"}), "written in full");
    wep_bad(json!({"ipv4_gateway": "10.0.0.1/32"}), "written in full");
}

#[test]
fn endpoint_special_purpose_addresses_invalidate_the_document() {
    for (addr, class) in [
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.1.1.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("169.254.1.1", "link-local"),
    ] {
        wep_bad(json!({"ipv4_nets": ["10.0.0.1/32", addr]}), class);
        wep_bad(json!({"ipv4_nets": [format!("{addr}/32")]}), class);
    }
    for (addr, class) in [
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("ff02::1", "multicast"),
        ("fe80::1", "link-local"),
        ("::ffff:10.0.0.1", "IPv4-mapped"),
        ("::ffff:198.19.0.2", "IPv4-mapped"),
    ] {
        wep_bad(json!({"ipv6_nets": [format!("{addr}/128")]}), class);
    }
    for (addr, class) in [
        ("127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
    ] {
        wep_bad(json!({"ipv4_gateway": addr}), class);
    }
    for (addr, class) in [
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("ff02::1", "multicast"),
        ("::ffff:10.0.0.1", "IPv4-mapped"),
    ] {
        wep_bad(json!({"ipv6_gateway": addr}), class);
    }
    // A gateway's normal form is link-local; ordinary addresses stay valid.
    let e = wep(
        json!({"ipv4_gateway": "169.254.1.1", "ipv6_gateway": "fe80::1",
                       "ipv4_nets": ["198.19.0.2/32"], "ipv6_nets": ["2001:db8::1/128"]}),
    )
    .expect("valid");
    assert_eq!(e.ipv4_nets, vec!["198.19.0.2/32".parse().expect("net")]);
    // Floating IPs must not be special either.
    wep_bad(
        json!({"ipv4_nat": [{"int_ip": "10.0.0.1", "ext_ip": "127.0.0.1"}]}),
        "loopback",
    );
    let e = bad(WEP, &wep_doc(json!({"ipv4_nets": ["127.0.0.1/32"]})));
    assert!(
        e.reason
            .contains("ipv4_nets[0]: 127.0.0.1 is a special-purpose address"),
        "{e}"
    );
}

#[test]
fn endpoint_labels_are_string_to_string() {
    let e =
        wep(json!({"labels": {"role": "web", "calico/k8s_ns": "default", "": ""}})).expect("ok");
    assert_eq!(e.labels.get("role").map(String::as_str), Some("web"));
    assert_eq!(e.labels.len(), 3);
    wep_bad(json!({"labels": {"a": 1}}), "must be a string");
    wep_bad(json!({"labels": {"a": null}}), "must be a string");
    wep_bad(json!({"labels": ["a"]}), "must be an object");
}

#[test]
fn endpoint_floating_ips_must_be_consistent() {
    let nat = json!({"ipv4_nat": [{"int_ip": "10.0.0.1", "ext_ip": "192.168.0.1"}]});
    assert!(wep(nat).is_ok());
    wep_bad(
        json!({"ipv4_nat": [{"int_ip": "10.0.0.1", "ext_ip": "192.168.1"}]}),
        "written in full",
    );
    wep_bad(
        json!({"ipv4_nat": [{"int_ip": "10.0.0.9", "ext_ip": "192.168.0.1"}]}),
        "not one of the endpoint's addresses",
    );
    wep_bad(
        json!({"ipv6_nat": [{"int_ip": "fd00::1"}]}),
        "ext_ip is required",
    );
    wep_bad(
        json!({"ipv6_nat": [{"int_ip": "fd00::1", "ext_ip": "1.2.3.4"}]}),
        "not an IPv6 address",
    );
}

// ------------------------------------------------------------ host endpoint

#[test]
fn host_endpoint_needs_a_name_or_expected_addresses() {
    let by_name = hep(json!({"name": "eth0", "profile_ids": ["p"]})).expect("by name");
    assert_eq!(
        by_name.name.map(|n| n.as_str().to_owned()),
        Some("eth0".into())
    );
    let by_ip = hep(json!({"expected_ipv6_addrs": ["fd00::1"]})).expect("by address");
    assert_eq!(by_ip.name, None);
    assert_eq!(
        by_ip.expected_ipv6_addrs,
        vec!["fd00::1".parse::<IpAddr>().expect("ip")]
    );
    let legacy = hep(json!({"name": "eth0", "profile_id": "p"})).expect("legacy profile_id");
    assert_eq!(legacy.profile_ids, vec![id("p")]);
    for doc in [
        json!({"labels": {"foo": "bar"}, "profile_ids": ["prof1"]}),
        json!({"name": null, "expected_ipv4_addrs": [], "expected_ipv6_addrs": []}),
    ] {
        let e = hep(doc).expect_err("neither name nor addresses");
        assert_eq!(e.kind(), "host_endpoint");
        assert!(e.reason.contains("needs a name"), "{e}");
    }
    let e = hep(json!({"expected_ipv4_addrs": ["fd00::1"]})).expect_err("family");
    assert!(e.reason.contains("not an IPv4 address"), "{e}");
    let e = hep(json!({"expected_ipv4_addrs": ["10.0.1"]})).expect_err("short form");
    assert!(e.reason.contains("written in full"), "{e}");
    let e = hep(json!({"name": "eth0;reboot"})).expect_err("bad name");
    assert!(e.reason.contains("interface name"), "{e}");
}

// -------------------------------------------------------------------- rules

#[test]
fn rule_unknown_keys_invalidate_the_whole_document() {
    let doc =
        json!({"inbound_rules": [{"action": "allow"}, {"dst_port": [80], "protocol": "tcp"}]});
    let e = bad(RULES, &doc.to_string());
    assert!(
        e.reason
            .contains("inbound_rules[1]: unknown rule key \"dst_port\""),
        "{e}"
    );
    rule_bad(json!({"Action": "allow"}), "unknown rule key");
    rule_bad(json!({"typo": null}), "unknown rule key");
    rule_bad(json!({"!action": "deny"}), "unknown rule key \"!action\"");
    rule_bad(json!({"!ip_version": 4}), "unknown rule key");
    rule_bad(json!({"!log_prefix": "x"}), "unknown rule key");
    rule_bad(json!({"!!protocol": "tcp"}), "unknown rule key");
    rule_bad(
        json!({"src_net\n": "10.0.0.0/8"}),
        "unknown rule key \"src_net\\n\"",
    );
}

#[test]
fn rule_lists_are_capped_per_direction_with_the_limit_in_the_reason() {
    use margay_policy::update::MAX_RULES_PER_DIRECTION as MAX;
    let rules = |n: usize| Json::Array(vec![json!({}); n]);
    // At the cap: valid, in both directions, for profiles and policies.
    let at = json!({"inbound_rules": rules(MAX), "outbound_rules": rules(MAX)});
    match ok(RULES, &at.to_string()) {
        Value::ProfileRules(p) => {
            assert_eq!((p.inbound.len(), p.outbound.len()), (MAX, MAX));
        }
        other => panic!("{other:?}"),
    }
    let mut pol = json!({"selector": "all()", "inbound_rules": rules(MAX)});
    assert!(matches!(ok(POLICY, &pol.to_string()), Value::Policy(_)));
    // One above: the whole document is invalid and the reason names the limit.
    for (key, dir) in [
        (RULES, "inbound_rules"),
        (RULES, "outbound_rules"),
        (POLICY, "outbound_rules"),
    ] {
        let mut doc = if key == RULES { json!({}) } else { pol.clone() };
        doc[dir] = rules(MAX + 1);
        let e = bad(key, &doc.to_string());
        assert!(e.resource.is_some(), "{e}");
        assert!(
            e.reason.contains(&format!(
                "{dir} has {} rules, more than the limit of {MAX} per direction",
                MAX + 1
            )),
            "{e}"
        );
    }
    // The issue's 50k + 50k profile and 20,000 src_tag rules are refused.
    let tags: Vec<Json> = (0..20_000)
        .map(|i| json!({"src_tag": format!("t{i}")}))
        .collect();
    pol["inbound_rules"] = Json::Array(tags.clone());
    assert!(bad(POLICY, &pol.to_string()).reason.contains("limit of"));
    assert!(bad(RULES, &json!({"inbound_rules": tags}).to_string())
        .reason
        .contains("limit of"));
    let big = json!({"inbound_rules": rules(50_000), "outbound_rules": rules(50_000)});
    assert!(bad(RULES, &big.to_string())
        .reason
        .contains("limit of 10000"));
}

#[test]
fn rule_null_values_are_dropped() {
    let r = rule_ok(json!({"action": null, "protocol": null, "src_net": null, "icmp_type": null}));
    assert_eq!(r.action, RuleAction::Allow);
    assert_eq!(r.protocol, None);
    assert_eq!(r.src.net, None);
    assert_eq!(r.icmp, None);
    // Dropping a null protocol must not let ports through unprotected.
    rule_bad(
        json!({"protocol": null, "dst_ports": [80]}),
        "needs protocol",
    );
}

#[test]
fn rule_actions() {
    for (text, action) in [
        ("allow", RuleAction::Allow),
        ("deny", RuleAction::Deny),
        ("next-tier", RuleAction::NextTier),
        ("log", RuleAction::Log),
    ] {
        assert_eq!(rule_ok(json!({"action": text})).action, action);
    }
    assert_eq!(rule_ok(json!({})).action, RuleAction::Allow, "default");
    for bad_action in [
        json!("Allow"),
        json!("drop"),
        json!("accept"),
        json!(""),
        json!(1),
    ] {
        rule_bad(json!({"action": bad_action}), "action");
    }
}

#[test]
fn rule_protocols_by_name_or_number() {
    for (name, n) in [
        ("tcp", 6),
        ("udp", 17),
        ("icmp", 1),
        ("icmpv6", 58),
        ("sctp", 132),
        ("udplite", 136),
    ] {
        assert_eq!(
            rule_ok(json!({"protocol": name})).protocol,
            Some(Protocol(n)),
            "{name}"
        );
        assert_eq!(
            rule_ok(json!({"!protocol": name})).not_protocol,
            Some(Protocol(n)),
            "!{name}"
        );
    }
    for n in [1u8, 6, 47, 255] {
        assert_eq!(rule_ok(json!({"protocol": n})).protocol, Some(Protocol(n)));
    }
    for bad_proto in [
        json!(0),
        json!(256),
        json!(-1),
        json!(6.0),
        json!("6"),
        json!("TCP"),
        json!("all"),
        json!(""),
        json!(true),
    ] {
        rule_bad(json!({"protocol": bad_proto.clone()}), "protocol");
        rule_bad(json!({"!protocol": bad_proto}), "!protocol");
    }
}

#[test]
fn rule_ports_ints_and_ranges() {
    let r = rule_ok(
        json!({"protocol": "tcp", "dst_ports": [0, 80, "1000:2000", "5:5", 65535], "src_ports": ["0:65535"]}),
    );
    assert_eq!(
        r.dst.ports,
        vec![
            pr(0, 0),
            pr(80, 80),
            pr(1000, 2000),
            pr(5, 5),
            pr(65535, 65535)
        ]
    );
    assert_eq!(r.src.ports, vec![pr(0, 65535)]);
    let r = rule_ok(json!({"protocol": "udp", "!dst_ports": [53], "!src_ports": ["1:1023"]}));
    assert_eq!(r.dst.not_ports, vec![pr(53, 53)]);
    assert_eq!(r.src.not_ports, vec![pr(1, 1023)]);
    for bad_port in [
        json!(65536),
        json!(-1),
        json!(80.0),
        json!("80"),
        json!("2000:1000"),
        json!("1:65536"),
        json!(":80"),
        json!("80:"),
        json!("+1:2"),
        json!(" 1:2"),
        json!("1:2:3"),
        json!("0x10:0x20"),
        json!(null),
        json!([80]),
    ] {
        rule_bad(
            json!({"protocol": "tcp", "dst_ports": [bad_port]}),
            "dst_ports[0]",
        );
    }
    rule_bad(
        json!({"protocol": "tcp", "dst_ports": 80}),
        "must be a list",
    );
}

#[test]
fn rule_ports_only_with_a_port_protocol() {
    for proto in [
        json!("tcp"),
        json!("udp"),
        json!("sctp"),
        json!("udplite"),
        json!(6),
        json!(17),
        json!(132),
        json!(136),
    ] {
        assert_eq!(
            rule_ok(json!({"protocol": proto, "dst_ports": [1]}))
                .dst
                .ports,
            vec![pr(1, 1)]
        );
    }
    rule_bad(
        json!({"dst_ports": [80]}),
        "dst_ports needs protocol tcp, udp, sctp or udplite (protocol is not set)",
    );
    rule_bad(json!({"src_ports": []}), "src_ports needs protocol");
    rule_bad(
        json!({"protocol": "icmp", "dst_ports": [80]}),
        "(protocol is icmp)",
    );
    rule_bad(
        json!({"protocol": 47, "src_ports": [80]}),
        "(protocol is 47)",
    );
    rule_bad(
        json!({"!protocol": "tcp", "dst_ports": [80]}),
        "needs protocol",
    );
    rule_bad(json!({"!dst_ports": [80]}), "!dst_ports needs protocol");
    rule_bad(
        json!({"protocol": "icmpv6", "!src_ports": [80]}),
        "!src_ports needs protocol",
    );
}

#[test]
fn rule_icmp_type_and_code() {
    let r = rule_ok(json!({"protocol": "icmp", "icmp_type": 8, "icmp_code": 0}));
    assert_eq!(
        r.icmp,
        Some(IcmpMatch {
            icmp_type: 8,
            code: Some(0)
        })
    );
    let r = rule_ok(
        json!({"protocol": "icmpv6", "icmp_type": 254, "!icmp_type": 0, "!icmp_code": 255}),
    );
    assert_eq!(
        r.icmp,
        Some(IcmpMatch {
            icmp_type: 254,
            code: None
        })
    );
    assert_eq!(
        r.not_icmp,
        Some(IcmpMatch {
            icmp_type: 0,
            code: Some(255)
        })
    );
    rule_bad(
        json!({"protocol": "icmp", "icmp_type": 255}),
        "icmp_type must be an integer from 0 to 254",
    );
    rule_bad(json!({"protocol": "icmp", "icmp_type": -1}), "icmp_type");
    rule_bad(json!({"protocol": "icmp", "icmp_type": "8"}), "icmp_type");
    rule_bad(
        json!({"protocol": "icmp", "icmp_type": 3, "icmp_code": 256}),
        "icmp_code must be an integer from 0 to 255",
    );
    rule_bad(
        json!({"protocol": "icmp", "icmp_code": 0}),
        "icmp_code needs icmp_type",
    );
    rule_bad(
        json!({"protocol": "icmp", "!icmp_code": 0}),
        "!icmp_code needs !icmp_type",
    );
    rule_bad(
        json!({"protocol": "icmp", "icmp_type": 8, "!icmp_code": 0}),
        "!icmp_code needs !icmp_type",
    );
    // Only with protocol icmp/icmpv6: never silently dropped (that would widen the rule).
    rule_bad(
        json!({"protocol": "udp", "icmp_type": 30}),
        "icmp_type needs protocol icmp or icmpv6 (protocol is udp)",
    );
    rule_bad(json!({"icmp_type": 8}), "(protocol is not set)");
    rule_bad(
        json!({"!protocol": "icmp", "icmp_type": 8}),
        "needs protocol icmp",
    );
    rule_bad(
        json!({"protocol": "tcp", "!icmp_type": 8}),
        "!icmp_type needs protocol icmp",
    );
}

#[test]
fn rule_ip_version() {
    assert_eq!(
        rule_ok(json!({"ip_version": 4})).ip_version,
        Some(IpVersion::V4)
    );
    assert_eq!(
        rule_ok(json!({"ip_version": 6})).ip_version,
        Some(IpVersion::V6)
    );
    for bad_version in [json!(5), json!("4"), json!(4.0), json!(0), json!("v4")] {
        rule_bad(
            json!({"ip_version": bad_version}),
            "ip_version must be 4 or 6",
        );
    }
}

#[test]
fn rule_family_is_resolved_and_never_widened() {
    let fam = |r: Json| rule_ok(r).ip_version;
    assert_eq!(
        fam(json!({"src_tag": "t", "dst_selector": "a == 'b'"})),
        None
    );
    assert_eq!(fam(json!({"protocol": "tcp"})), None);
    assert_eq!(fam(json!({"src_net": "10.0.0.0/8"})), Some(IpVersion::V4));
    assert_eq!(fam(json!({"!dst_net": "10.0.0.0/8"})), Some(IpVersion::V4));
    assert_eq!(fam(json!({"dst_net": "fd00::/8"})), Some(IpVersion::V6));
    assert_eq!(fam(json!({"!src_net": "::/0"})), Some(IpVersion::V6));
    assert_eq!(fam(json!({"protocol": "icmp"})), Some(IpVersion::V4));
    assert_eq!(fam(json!({"protocol": 58})), Some(IpVersion::V6));
    assert_eq!(
        fam(json!({"!protocol": "icmp"})),
        None,
        "a negated protocol implies no family"
    );
    assert_eq!(
        fam(json!({"ip_version": 4, "src_net": "10.0.0.0/8", "protocol": "icmp"})),
        Some(IpVersion::V4)
    );
    rule_bad(
        json!({"ip_version": 6, "src_net": "10.0.0.0/8"}),
        "mixes IP families",
    );
    rule_bad(
        json!({"ip_version": 4, "protocol": "icmpv6"}),
        "mixes IP families",
    );
    rule_bad(
        json!({"protocol": "icmp", "dst_net": "fd00::/8"}),
        "mixes IP families",
    );
    rule_bad(
        json!({"src_net": "10.0.0.0/8", "dst_net": "fd00::/8"}),
        "mixes IP families",
    );
    rule_bad(
        json!({"src_net": "10.0.0.0/8", "!src_net": "fd00::/8"}),
        "mixes IP families",
    );
}

#[test]
fn rule_nets_in_full_normalised_to_their_network() {
    let r = rule_ok(json!({"src_net": "10.0.0.1/24", "!dst_net": "192.168.0.7"}));
    assert_eq!(
        r.src.net,
        Some("10.0.0.0/24".parse().expect("net")),
        "host bits cleared"
    );
    assert_eq!(
        r.dst.not_net,
        Some("192.168.0.7/32".parse().expect("net")),
        "bare address = /32"
    );
    let r = rule_ok(json!({"dst_net": "2001:db8::1/32"}));
    assert_eq!(r.dst.net, Some("2001:db8::/32".parse().expect("net")));
    for bad_net in [
        "10.0.1/32",
        "192.168.1",
        "10.0.0.0/33",
        "10.0.0.0/",
        "010.0.0.0/8",
        "10.0.0.0/8;",
        "10.0.0.0 /8",
        "any",
        "",
    ] {
        rule_bad(json!({"src_net": bad_net}), "not a CIDR written in full");
        rule_bad(json!({"!dst_net": bad_net}), "!dst_net");
    }
    rule_bad(
        json!({"src_net": ["10.0.0.0/8"]}),
        "src_net must be a string",
    );
}

#[test]
fn rule_negated_matches_fill_the_not_fields() {
    let r = rule_ok(json!({
        "protocol": "tcp",
        "!protocol": 17,
        "!src_net": "10.0.0.0/8",
        "!dst_net": "10.1.0.0/16",
        "!src_tag": "bad-guys",
        "!dst_tag": "db",
        "!src_selector": "role == 'x'",
        "!dst_selector": "has(y)",
        "!src_ports": [1],
        "!dst_ports": ["2:3"],
    }));
    assert_eq!(r.not_protocol, Some(Protocol(17)));
    assert_eq!(r.src.not_net, Some("10.0.0.0/8".parse().expect("net")));
    assert_eq!(r.dst.not_net, Some("10.1.0.0/16".parse().expect("net")));
    assert_eq!(r.src.not_tag, Some(id("bad-guys")));
    assert_eq!(r.dst.not_tag, Some(id("db")));
    assert_eq!(
        r.src.not_selector,
        Some(Selector::parse("role == \"x\"").expect("sel"))
    );
    assert_eq!(
        r.dst.not_selector,
        Some(Selector::parse("has(y)").expect("sel"))
    );
    assert_eq!(r.src.not_ports, vec![pr(1, 1)]);
    assert_eq!(r.dst.not_ports, vec![pr(2, 3)]);
    assert_eq!(
        (r.src.net, r.src.tag.clone(), r.src.selector.clone()),
        (None, None, None)
    );
    assert!(r.src.ports.is_empty());
}

#[test]
fn rule_tags_are_ids() {
    assert_eq!(
        rule_ok(json!({"src_tag": "PROF_GROUP1"})).src.tag,
        Some(id("PROF_GROUP1"))
    );
    assert_eq!(
        rule_ok(json!({"dst_tag": "a.b-c"})).dst.tag,
        Some(id("a.b-c"))
    );
    let long = "t".repeat(10_000);
    assert_eq!(rule_ok(json!({"src_tag": long})).src.tag, Some(id(&long)));
    let long_bad = format!("{long}\n");
    for hostile in HOSTILE.iter().copied().chain([long_bad.as_str()]) {
        rule_bad(json!({"src_tag": hostile}), "src_tag");
        rule_bad(json!({"!dst_tag": hostile}), "!dst_tag");
    }
    rule_bad(json!({"src_tag": ["a"]}), "must be a string");
}

#[test]
fn rule_selectors_must_parse() {
    let r = rule_ok(json!({"src_selector": "role == 'db' && !has(test)", "dst_selector": ""}));
    assert_eq!(
        r.src.selector.expect("sel").canonical(),
        "role == \"db\" && !has(test)"
    );
    assert!(
        r.dst.selector.expect("sel").is_all(),
        "empty selector = all()"
    );
    for bad_sel in [
        "role = 'db'",
        "role == db",
        "has(",
        "a == 'b' ||",
        "a == \"b\"; drop",
        "(a == 'b'",
    ] {
        rule_bad(
            json!({"src_selector": bad_sel}),
            "src_selector: selector: at byte",
        );
    }
    rule_bad(json!({"dst_selector": 1}), "must be a string");
}

#[test]
fn rule_log_prefix_charset_and_length() {
    for good in ["", "calico", "DROP: tier-1 pol_2.x", &"x".repeat(27)] {
        assert_eq!(
            rule_ok(json!({"action": "log", "log_prefix": good}))
                .log_prefix
                .as_deref(),
            Some(good)
        );
    }
    for bad_prefix in [
        "x".repeat(28),
        "a\"b".into(),
        "a'b".into(),
        "a;b".into(),
        "a\nb".into(),
        "a/b".into(),
        "a%b".into(),
        "ünï".into(),
        "a\\b".into(),
    ] {
        rule_bad(
            json!({"action": "log", "log_prefix": bad_prefix}),
            "log_prefix",
        );
    }
    rule_bad(json!({"log_prefix": 5}), "must be a string");
}

#[test]
fn rules_document_shape() {
    let Value::ProfileRules(r) = ok(RULES, r#"{"id": "x", "other": [1], "inbound_rules": [{}]}"#)
    else {
        panic!("rules")
    };
    assert_eq!(r.inbound.len(), 1);
    assert!(r.outbound.is_empty(), "a missing list is []");
    let Value::ProfileRules(r) = ok(RULES, r#"{"inbound_rules": null, "outbound_rules": []}"#)
    else {
        panic!("rules")
    };
    assert!(r.inbound.is_empty());
    assert!(bad(RULES, r#"{"inbound_rules": {}}"#)
        .reason
        .contains("inbound_rules must be a list"));
    assert!(bad(RULES, r#"{"outbound_rules": ["allow"]}"#)
        .reason
        .contains("outbound_rules[0]: a rule must be an object"));
    assert!(bad(RULES, r#"{"outbound_rules": [null]}"#)
        .reason
        .contains("a rule must be an object"));
    assert!(bad(RULES, "[]").reason.contains("expected a JSON object"));
}

// ------------------------------------------------------- profiles, tiers, policies

#[test]
fn profile_tags_are_a_list_of_ids() {
    let key = "/calico/v1/policy/profile/p1/tags";
    assert_eq!(
        ok(key, r#"["a", "b-c.d"]"#),
        Value::ProfileTags(vec![id("a"), id("b-c.d")])
    );
    assert_eq!(ok(key, "[]"), Value::ProfileTags(vec![]));
    for doc in [
        r#"["a b"]"#,
        r#"["a", 1]"#,
        r#""a""#,
        r#"{"a": 1}"#,
        "null",
        r#"["a;b"]"#,
        r#"["a\nb"]"#,
    ] {
        assert_eq!(bad(key, doc).kind(), "profile", "{doc}");
    }
}

#[test]
fn profile_labels_are_string_to_string() {
    let key = "/calico/v1/policy/profile/p1/labels";
    let Value::ProfileLabels(l) = ok(key, r#"{"a": "b", "c/d": ""}"#) else {
        panic!("labels")
    };
    assert_eq!(l.get("c/d").map(String::as_str), Some(""));
    assert!(matches!(ok(key, "{}"), Value::ProfileLabels(l) if l.is_empty()));
    for doc in [
        r#"{"a": 1}"#,
        r#"{"a": null}"#,
        r#"["a"]"#,
        "null",
        r#"{"a": {"b": "c"}}"#,
    ] {
        assert_eq!(bad(key, doc).kind(), "profile", "{doc}");
    }
}

#[test]
fn tier_metadata_order() {
    let key = "/calico/v1/policy/tier/t1/metadata";
    let order = |doc: &str| match ok(key, doc) {
        Value::TierMetadata(t) => t.order,
        other => panic!("{other:?}"),
    };
    assert_eq!(order(r#"{"order": 10}"#), Order::Number(10.0));
    assert_eq!(order(r#"{"order": -2.5}"#), Order::Number(-2.5));
    assert_eq!(order(r#"{"order": "default"}"#), Order::Default);
    assert_eq!(order(r#"{}"#), Order::Default);
    assert_eq!(order(r#"{"order": null, "extra": 1}"#), Order::Default);
    for doc in [
        r#"{"order": "10"}"#,
        r#"{"order": "Default"}"#,
        r#"{"order": true}"#,
        r#"{"order": [1]}"#,
        "[]",
        r#"{"order": 1e999}"#,
    ] {
        assert_eq!(bad(key, doc).kind(), "tier", "{doc}");
    }
}

#[test]
fn policy_documents() {
    let policy = |doc: &str| -> Policy {
        match ok(POLICY, doc) {
            Value::Policy(p) => p,
            other => panic!("{other:?}"),
        }
    };
    let p = policy(r#"{"selector": "a == 'b'", "inbound_rules": [{"action": "deny"}]}"#);
    assert_eq!(p.order, Order::Default, "absent order = default");
    assert_eq!(p.inbound.len(), 1);
    assert!(p.outbound.is_empty());
    assert!(p
        .selector
        .matches(&[("a".to_owned(), "b".to_owned())].into_iter().collect()));
    assert!(policy(r#"{"selector": "", "order": 1}"#).selector.is_all());
    let cases = [
        (r#"{"order": 1}"#, "selector is required"),
        (r#"{"selector": null}"#, "selector is required"),
        (r#"{"selector": "a =="}"#, "selector: selector: at byte 4"),
        (r#"{"selector": 1}"#, "must be a string"),
        (r#"{"selector": "", "order": "first"}"#, "order"),
        (
            r#"{"selector": "", "outbound_rules": [{"bogus": 1}]}"#,
            "outbound_rules[0]: unknown rule key",
        ),
    ];
    for (doc, reason) in cases {
        let e = bad(POLICY, doc);
        assert_eq!(e.kind(), "policy");
        assert!(e.reason.contains(reason), "{doc}: {e}");
        assert_eq!(
            e.resource,
            Some(ResourceKey::Policy {
                tier: id("t1"),
                policy: id("pol1")
            })
        );
    }
}

// ------------------------------------------------------------- pools, hosts

#[test]
fn pool_fields() {
    let pool = |key: &str, doc: &str| match ok(key, doc) {
        Value::IpPool(p) => p,
        other => panic!("{other:?}"),
    };
    let v4 = "/calico/v1/ipam/v4/pool/10.0.0.0-16";
    let p = pool(
        v4,
        r#"{"cidr": "10.0.0.0/16", "ipip": "tunl0", "ipam": false, "disabled": true}"#,
    );
    assert_eq!(p.cidr, "10.0.0.0/16".parse().expect("net"));
    assert!(!p.masquerade, "masquerade defaults to false");
    assert!(pool(v4, r#"{"cidr": "10.0.0.0/16", "masquerade": true}"#).masquerade);
    assert!(!pool(v4, r#"{"cidr": "10.0.0.0/16", "masquerade": null}"#).masquerade);
    let v6 = "/calico/v1/ipam/v6/pool/fd80:24e2:f998:72d6::-64";
    let p = pool(
        v6,
        r#"{"cidr": "fd80:24e2:f998:72d6::/64", "masquerade": true}"#,
    );
    assert_eq!(p.cidr, "fd80:24e2:f998:72d6::/64".parse().expect("net"));
    let cases = [
        (r#"{"cidr": "10.0.0.0/24"}"#, "does not match"),
        (r#"{"cidr": "10.0.0.0"}"#, "does not match"),
        (r#"{"cidr": "10.0/16"}"#, "written in full"),
        (r#"{"masquerade": true}"#, "cidr is required"),
        (
            r#"{"cidr": "10.0.0.0/16", "masquerade": "true"}"#,
            "masquerade must be true or false",
        ),
        (
            r#"{"cidr": "10.0.0.0/16", "masquerade": 1}"#,
            "masquerade must be true or false",
        ),
        ("[]", "expected a JSON object"),
    ];
    for (doc, reason) in cases {
        let e = bad(v4, doc);
        assert_eq!(e.kind(), "pool");
        assert!(e.reason.contains(reason), "{doc}: {e}");
    }
    for key in [
        "/calico/v1/ipam/v4/pool/fd00::-8",
        "/calico/v1/ipam/v6/pool/10.0.0.0-8",
        "/calico/v1/ipam/v4/pool/10.0.0.1-8",
        "/calico/v1/ipam/v4/pool/10.0.0.0_8",
        "/calico/v1/ipam/v4/pool/10.0-8",
    ] {
        assert_eq!(bad(key, r#"{"cidr": "10.0.0.0/8"}"#).kind(), "key", "{key}");
    }
}

#[test]
fn host_bird_ip_is_a_plain_ipv4_address() {
    let key = "/calico/v1/host/node-1/bird_ip";
    assert_eq!(
        ok(key, "172.16.0.5"),
        Value::HostIp("172.16.0.5".parse().expect("ip"))
    );
    let u = parse(key, "").expect("empty").expect("read");
    assert_eq!(u.key, ResourceKey::HostIp("node-1".into()));
    assert_eq!(u.value, None, "empty bird_ip = no address");
    for text in [
        "fd00::1",
        "172.16.0",
        "172.16.0.5/32",
        " 172.16.0.5",
        "172.16.0.5\n",
        "\"172.16.0.5\"",
        "host",
    ] {
        assert_eq!(bad(key, text).kind(), "host_ip", "{text:?}");
    }
}

#[test]
fn host_bird_ip_must_be_an_ordinary_unicast_address() {
    let key = "/calico/v1/host/node-1/bird_ip";
    for (text, class) in [
        ("0.0.0.0", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("169.254.1.1", "link-local"),
    ] {
        let e = bad(key, text);
        assert_eq!(e.kind(), "host_ip", "{text}");
        assert_eq!(e.resource, Some(ResourceKey::HostIp("node-1".into())));
        assert!(e.reason.contains(class), "{text}: {e}");
    }
}

#[test]
fn config_values_are_plain_strings_and_ready_needs_true() {
    assert_eq!(
        ok("/calico/v1/config/LogSeverityScreen", "INFO"),
        Value::Config("INFO".into())
    );
    assert_eq!(
        ok("/calico/v1/host/h/config/InterfacePrefix", ""),
        Value::Config(String::new())
    );
    assert_eq!(ok("/calico/v1/Ready", "true"), Value::Ready(true));
    assert_eq!(ok("/calico/v1/Ready", "True"), Value::Ready(false));
    assert_eq!(ok("/calico/v1/Ready", ""), Value::Ready(false));
}

#[test]
fn reasons_quote_hostile_text_escaped_and_short() {
    let evil = format!("{}\n\u{1b}[31m;rm -rf /", "x".repeat(300));
    let doc = json!({"state": "active", "name": evil}).to_string();
    let e = bad(WEP, &doc);
    let line = e.to_string();
    assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
    assert!(line.len() < 400, "{} bytes", line.len());
    let e = bad(
        RULES,
        &json!({"inbound_rules": [{"log_prefix": evil}]}).to_string(),
    );
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn deleting_then_fixing_a_key_is_just_another_update() {
    let doc = wep_doc(json!({"mac": "nope"}));
    let e = bad(WEP, &doc);
    let resource = e.resource.expect("well-formed key");
    let fixed = parse(WEP, &wep_doc(json!({}))).expect("ok").expect("read");
    assert_eq!(fixed.key, resource, "the fix names the same resource");
}

#[test]
fn mac_parser_rejects_signs() {
    // names.rs relies on from_str_radix, which accepts a leading '+'.
    assert!(MacAddr::parse("+a:bb:cc:dd:ee:ff").is_err());
    assert!(MacAddr::parse("aa-+b-cc-dd-ee-ff").is_err());
}
