//! Validation of the BGP keys (`/calico/bgp/v1`, `DATAMODEL.md` "BGP"):
//! every key layout, accepted values and rejected ones, including the
//! hostile values of issue 12 (a peer IP carrying BIRD syntax, AS `-1`, a
//! 300-character host name): none of them yields a value.

// The helpers pass `InvalidUpdate` (which carries its ResourceKey) straight through.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;

use margay_policy::bgp::AsNumber;
use margay_policy::model::{BgpKey, BgpValue, ResourceKey, Update, Value};
use margay_policy::update::{parse_key, parse_update, InvalidUpdate};

const P: &str = "/calico/v1";
const B: &str = "/calico/bgp/v1";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn asn(n: u32) -> AsNumber {
    AsNumber::new(n).expect("nonzero")
}

fn key(rest: &str) -> String {
    format!("{B}/{rest}")
}

/// The key's resource and value, for a value that must be accepted.
fn ok(rest: &str, value: &str) -> (BgpKey, Option<BgpValue>) {
    match parse_update(P, &key(rest), Some(value)) {
        Ok(Some(Update {
            key: ResourceKey::Bgp(k),
            value,
        })) => {
            let value = value.map(|v| match v {
                Value::Bgp(b) => b,
                other => panic!("{rest}: not a BGP value: {other:?}"),
            });
            (k, value)
        }
        other => panic!("{rest} = {value}: expected a BGP update, got {other:?}"),
    }
}

fn bad(rest: &str, value: &str) -> InvalidUpdate {
    match parse_update(P, &key(rest), Some(value)) {
        Err(e) => e,
        Ok(u) => panic!("{rest} = {value:?}: expected rejection, got {u:?}"),
    }
}

/// A rejected value of a well-formed key: the key's object becomes absent.
fn bad_value(rest: &str, value: &str) -> InvalidUpdate {
    let e = bad(rest, value);
    assert_eq!(e.kind(), "bgp", "{rest} = {value:?}: {e}");
    assert!(e.resource.is_some());
    e
}

/// A rejected key: nothing to remove.
fn bad_key(rest: &str) -> InvalidUpdate {
    let e = bad(rest, "{}");
    assert_eq!(e.kind(), "key", "{rest}: {e}");
    assert_eq!(
        parse_update(P, &key(rest), None).map(|_| ()),
        Err(e.clone())
    );
    e
}

#[test]
fn every_layout_is_recognised() {
    let peer = r#"{"ip": "10.0.0.9", "as_num": "64512"}"#;
    let peer6 = r#"{"ip": "fd00::9", "as_num": 64512}"#;
    let cases: Vec<(&str, &str, BgpKey, Option<BgpValue>)> = vec![
        (
            "global/as_num",
            "64511",
            BgpKey::GlobalAsNumber,
            Some(BgpValue::AsNumber(asn(64511))),
        ),
        (
            "global/node_mesh",
            r#"{"enabled": false}"#,
            BgpKey::NodeMesh,
            Some(BgpValue::NodeMesh { enabled: false }),
        ),
        (
            "global/peer_v4/10.0.0.9",
            peer,
            BgpKey::GlobalPeer(ip("10.0.0.9")),
            Some(BgpValue::Peer { as_num: asn(64512) }),
        ),
        (
            "global/peer_v6/fd00::9",
            peer6,
            BgpKey::GlobalPeer(ip("fd00::9")),
            Some(BgpValue::Peer { as_num: asn(64512) }),
        ),
        (
            "host/h1/ip_addr_v4",
            "192.168.1.1",
            BgpKey::HostAddressV4("h1".into()),
            Some(BgpValue::Address(ip("192.168.1.1"))),
        ),
        (
            "host/h1/ip_addr_v6",
            "2001:db8::1",
            BgpKey::HostAddressV6("h1".into()),
            Some(BgpValue::Address(ip("2001:db8::1"))),
        ),
        (
            "host/h1/as_num",
            "65000",
            BgpKey::HostAsNumber("h1".into()),
            Some(BgpValue::AsNumber(asn(65000))),
        ),
        (
            "host/h1/peer_v4/10.0.0.9",
            peer,
            BgpKey::HostPeer {
                host: "h1".into(),
                peer: ip("10.0.0.9"),
            },
            Some(BgpValue::Peer { as_num: asn(64512) }),
        ),
        (
            "host/h1/peer_v6/fd00::9",
            peer6,
            BgpKey::HostPeer {
                host: "h1".into(),
                peer: ip("fd00::9"),
            },
            Some(BgpValue::Peer { as_num: asn(64512) }),
        ),
    ];
    for (rest, value, want_key, want_value) in cases {
        assert_eq!(ok(rest, value), (want_key.clone(), want_value), "{rest}");
        // Deletions of every layout read as deletions of the same object.
        let deleted = parse_update(P, &key(rest), None)
            .expect("ok")
            .expect("read");
        assert_eq!(deleted.key, ResourceKey::Bgp(want_key));
        assert_eq!(deleted.value, None);
    }
}

#[test]
fn other_paths_of_the_bgp_tree_are_ignored() {
    for rest in [
        "global",
        "global/other",
        "global/peer_v4",
        "global/peer_v4/10.0.0.1/extra",
        "global/peer_v5/10.0.0.1",
        "host/h1",
        "host/h1/other",
        "host/h1/peer_v4",
        "host/h1/ip_addr_v4/extra",
    ] {
        assert_eq!(parse_key(P, &key(rest)), Ok(None), "{rest}");
    }
    // Only beside the data prefix: another root, or the v1 tree itself.
    assert_eq!(parse_key(P, "/other/bgp/v1/global/as_num"), Ok(None));
    assert_eq!(parse_key(P, "/calico/v1/global/as_num"), Ok(None));
    assert_eq!(parse_key(P, "/calico/bgp/v2/global/as_num"), Ok(None));
    assert!(matches!(
        parse_key("/x/v1/", "/x/bgp/v1/global/as_num"),
        Ok(Some(ResourceKey::Bgp(BgpKey::GlobalAsNumber)))
    ));
}

#[test]
fn as_numbers_plain_asdot_and_range() {
    let as_of = |v: &str| match ok("global/as_num", v).1 {
        Some(BgpValue::AsNumber(a)) => a.get(),
        other => panic!("{other:?}"),
    };
    assert_eq!(as_of("1"), 1);
    assert_eq!(as_of("4294967295"), 4_294_967_295);
    assert_eq!(as_of("1.10"), 65546);
    assert_eq!(as_of("65535.65535"), u32::MAX);
    for v in [
        "0",
        "-1",
        "+1",
        " 64511",
        "64511 ",
        "4294967296",
        "18446744073709551616",
        "1.65536",
        "0.0",
        "064511",
        "",
        "\"64511\"",
        "64511; protocol",
    ] {
        bad_value("global/as_num", v);
        bad_value("host/h1/as_num", v);
    }
}

#[test]
fn peer_as_numbers_are_strings_or_integers() {
    let doc = |as_num: &str| format!(r#"{{"ip": "10.0.0.9", "as_num": {as_num}}}"#);
    let peer_as = |as_num: &str| match ok("global/peer_v4/10.0.0.9", &doc(as_num)).1 {
        Some(BgpValue::Peer { as_num }) => as_num.get(),
        other => panic!("{other:?}"),
    };
    assert_eq!(peer_as("64512"), 64512);
    assert_eq!(peer_as("\"64512\""), 64512);
    assert_eq!(peer_as("\"1.10\""), 65546);
    assert_eq!(peer_as("4294967295"), u32::MAX);
    for v in [
        "0",
        "-1",
        "\"-1\"",
        "4294967296",
        "1.5",
        "64512.0",
        "1e3",
        "true",
        "null",
        "[1]",
        "\"\"",
    ] {
        bad_value("global/peer_v4/10.0.0.9", &doc(v));
    }
    bad_value("global/peer_v4/10.0.0.9", r#"{"ip": "10.0.0.9"}"#);
}

#[test]
fn peer_ip_must_match_the_key_and_its_family() {
    // The document's ip differs from the key's.
    let e = bad_value(
        "global/peer_v4/10.0.0.9",
        r#"{"ip": "10.0.0.8", "as_num": 1}"#,
    );
    assert!(e.reason.contains("does not match"), "{e}");
    bad_value(
        "host/h1/peer_v6/fd00::9",
        r#"{"ip": "fd00::8", "as_num": 1}"#,
    );
    bad_value("global/peer_v4/10.0.0.9", r#"{"as_num": 1}"#);
    bad_value(
        "global/peer_v4/10.0.0.9",
        r#"{"ip": 167772169, "as_num": 1}"#,
    );
    // Family mismatch between the key kind and its address: a bad key.
    bad_key("global/peer_v4/fd00::9");
    bad_key("global/peer_v6/10.0.0.9");
    bad_key("host/h1/peer_v6/10.0.0.9");
    // A written-in-full address of the right family, but special-purpose.
    for special in [
        "127.0.0.1",
        "224.0.0.5",
        "0.0.0.0",
        "255.255.255.255",
        "169.254.1.1",
    ] {
        let doc = format!(r#"{{"ip": "{special}", "as_num": 1}}"#);
        bad_value(&format!("global/peer_v4/{special}"), &doc);
    }
    for special in ["::1", "::", "ff02::1", "fe80::1", "::ffff:10.0.0.1"] {
        let doc = format!(r#"{{"ip": "{special}", "as_num": 1}}"#);
        bad_value(&format!("host/h1/peer_v6/{special}"), &doc);
    }
}

#[test]
fn hostile_peer_addresses_never_make_a_key() {
    for segment in [
        "1.2.3.4; protocol",
        "1.2.3.4;",
        "1.2.3.4 ",
        "010.0.0.1",
        "10.0.1",
        "1.2.3.4\nprotocol",
        "\"1.2.3.4\"",
        "",
    ] {
        let e = bad_key(&format!("global/peer_v4/{segment}"));
        assert!(!e.reason.contains('\n'), "raw newline in {e}");
        bad_key(&format!("host/h1/peer_v4/{segment}"));
    }
    // The same text in the document of a well-formed key.
    bad_value(
        "global/peer_v4/1.2.3.4",
        r#"{"ip": "1.2.3.4; protocol", "as_num": 1}"#,
    );
}

#[test]
fn host_names_longer_than_a_dns_name_are_refused() {
    let longest = "a".repeat(253);
    let (k, _) = ok(&format!("host/{longest}/as_num"), "1");
    assert_eq!(k, BgpKey::HostAsNumber(longest));
    let hostile = "h".repeat(300);
    for layout in ["ip_addr_v4", "ip_addr_v6", "as_num", "peer_v4/10.0.0.9"] {
        let e = bad_key(&format!("host/{hostile}/{layout}"));
        assert!(e.reason.contains("253"), "{e}");
        assert!(e.reason.len() < 200, "reason quotes too much: {e}");
    }
    bad_key("host//as_num");
}

#[test]
fn host_addresses_of_their_family_and_not_special() {
    assert_eq!(ok("host/h1/ip_addr_v4", "").1, None, "empty means absent");
    assert_eq!(ok("host/h1/ip_addr_v6", "").1, None, "empty means absent");
    for v in [
        "fd00::1",
        "127.0.0.1",
        "0.0.0.0",
        "169.254.0.1",
        "224.0.0.1",
        " 10.0.0.1",
        "10.0.0.1/32",
        "\"10.0.0.1\"",
        "10.0.0.1; protocol",
    ] {
        bad_value("host/h1/ip_addr_v4", v);
    }
    for v in [
        "10.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "ff02::1",
        "::ffff:10.0.0.1",
    ] {
        bad_value("host/h1/ip_addr_v6", v);
    }
}

#[test]
fn node_mesh_needs_a_boolean_enabled() {
    assert_eq!(
        ok("global/node_mesh", r#"{"enabled": true, "other": 1}"#).1,
        Some(BgpValue::NodeMesh { enabled: true })
    );
    for v in [
        "{}",
        r#"{"enabled": null}"#,
        r#"{"enabled": "true"}"#,
        r#"{"enabled": 1}"#,
        "true",
        "[]",
        "",
    ] {
        bad_value("global/node_mesh", v);
    }
}
