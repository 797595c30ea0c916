//! The BGP part of the calculation: `CalcEngine::bgp_config` from the BGP
//! keys, the hosts' `bird_ip`s, the pools and the local routes;
//! `Changes.bgp`; `CalcEngine::set_remote_routes`. The BGP keys go in as raw
//! datastore text, through the same parser the agent uses.

mod calc_support;

use std::net::IpAddr;

use calc_support::*;
use ipnet::{Ipv4Net, Ipv6Net};
use margay_policy::bgp::{AsNumber, BgpPeer, BgpUnavailable, PeerKind, DEFAULT_AS_NUMBER};
use margay_policy::calc::CalcEngine;
use margay_policy::desired::RouteTarget;

const P: &str = "/calico/v1";

/// Applies `value` (None: delete) to `/calico/bgp/v1/<rest>`; must be valid.
fn bgp(e: &mut CalcEngine, rest: &str, value: Option<&str>) {
    e.apply_raw(P, &format!("/calico/bgp/v1/{rest}"), value)
        .unwrap_or_else(|err| panic!("{rest}: {err}"));
}

fn peer_doc(ip: &str, as_num: u32) -> String {
    format!(r#"{{"ip": "{ip}", "as_num": "{as_num}"}}"#)
}

fn asn(n: u32) -> AsNumber {
    AsNumber::new(n).expect("nonzero")
}

fn peer(kind: PeerKind, address: &str, as_num: u32) -> BgpPeer {
    BgpPeer {
        kind,
        address: address.parse().expect("ip"),
        as_num: asn(as_num),
    }
}

fn peers(e: &CalcEngine) -> Vec<BgpPeer> {
    e.bgp_config().expect("config").peers
}

/// This host at 192.168.0.1 with two neighbours and one address-less host.
fn small_cluster() -> CalcEngine {
    let mut e = engine_with([
        u_bird(ME, "192.168.0.1"),
        u_bird("h2", "192.168.0.2"),
        u_bird("h3", "192.168.0.3"),
    ]);
    bgp(&mut e, "host/h4/as_num", Some("65004"));
    e
}

#[test]
fn no_config_without_an_ipv4_address() {
    let mut e = engine_with([u_bird("h2", "192.168.0.2")]);
    assert_eq!(e.bgp_config(), Err(BgpUnavailable::NoIpv4Address));
    bgp(&mut e, &format!("host/{ME}/ip_addr_v6"), Some("fd00::1"));
    assert_eq!(e.bgp_config(), Err(BgpUnavailable::NoIpv4Address));
    e.apply(u_bird(ME, "192.168.0.1"));
    let c = e.bgp_config().expect("bird_ip is enough");
    assert_eq!(
        (c.router_id, c.source_v4),
        (ip4("192.168.0.1"), ip4("192.168.0.1"))
    );
    bgp(&mut e, &format!("host/{ME}/ip_addr_v4"), Some("10.1.0.1"));
    let c = e.bgp_config().expect("config");
    assert_eq!(
        (c.router_id, c.source_v4),
        (ip4("10.1.0.1"), ip4("10.1.0.1"))
    );
    assert_eq!(c.source_v6, Some("fd00::1".parse().expect("v6")));
    // An empty ip_addr_v4 is no address: back to bird_ip.
    bgp(&mut e, &format!("host/{ME}/ip_addr_v4"), Some(""));
    assert_eq!(
        e.bgp_config().expect("config").source_v4,
        ip4("192.168.0.1")
    );
}

fn ip4(s: &str) -> std::net::Ipv4Addr {
    s.parse().expect("v4")
}

#[test]
fn the_mesh_is_every_other_host_with_an_address() {
    let mut e = small_cluster();
    let d = DEFAULT_AS_NUMBER.get();
    assert_eq!(
        peers(&e),
        vec![
            peer(PeerKind::Mesh, "192.168.0.2", d),
            peer(PeerKind::Mesh, "192.168.0.3", d),
        ],
        "not to itself, not to h4 (no address)"
    );
    // ip_addr_v4 wins over bird_ip; a host with only ip_addr_v4 joins.
    bgp(&mut e, "host/h3/ip_addr_v4", Some("10.9.0.3"));
    bgp(&mut e, "host/h4/ip_addr_v4", Some("10.9.0.4"));
    assert_eq!(
        peers(&e),
        vec![
            peer(PeerKind::Mesh, "10.9.0.3", d),
            peer(PeerKind::Mesh, "10.9.0.4", 65004),
            peer(PeerKind::Mesh, "192.168.0.2", d),
        ]
    );
    // Mesh off: no mesh sessions; on again: back.
    bgp(&mut e, "global/node_mesh", Some(r#"{"enabled": false}"#));
    assert_eq!(peers(&e), vec![]);
    bgp(&mut e, "global/node_mesh", Some(r#"{"enabled": true}"#));
    assert_eq!(peers(&e).len(), 3);
    bgp(&mut e, "global/node_mesh", None);
    assert_eq!(peers(&e).len(), 3, "enabled by default");
}

#[test]
fn as_numbers_come_from_the_host_then_global_then_default() {
    let mut e = small_cluster();
    assert_eq!(e.bgp_config().expect("config").local_as, DEFAULT_AS_NUMBER);
    bgp(&mut e, "global/as_num", Some("65000"));
    bgp(&mut e, "host/h2/as_num", Some("1.10"));
    let c = e.bgp_config().expect("config");
    assert_eq!(c.local_as, asn(65000));
    assert_eq!(
        c.peers,
        vec![
            peer(PeerKind::Mesh, "192.168.0.2", 65546),
            peer(PeerKind::Mesh, "192.168.0.3", 65000),
        ]
    );
    bgp(&mut e, &format!("host/{ME}/as_num"), Some("65001"));
    assert_eq!(e.bgp_config().expect("config").local_as, asn(65001));
    bgp(&mut e, "global/as_num", None);
    bgp(&mut e, &format!("host/{ME}/as_num"), None);
    let c = e.bgp_config().expect("config");
    assert_eq!(c.local_as, DEFAULT_AS_NUMBER);
    assert_eq!(c.peers[1].as_num, DEFAULT_AS_NUMBER);
}

#[test]
fn one_session_per_address_node_over_global_over_mesh() {
    let mut e = small_cluster();
    // A global peer on h2's address takes over the mesh session.
    bgp(
        &mut e,
        "global/peer_v4/192.168.0.2",
        Some(&peer_doc("192.168.0.2", 65100)),
    );
    bgp(
        &mut e,
        "global/peer_v4/10.0.0.254",
        Some(&peer_doc("10.0.0.254", 65200)),
    );
    // A node-specific peer on the router's address takes over the global one.
    let mine = "host/me/peer_v4/10.0.0.254";
    bgp(&mut e, mine, Some(&peer_doc("10.0.0.254", 65300)));
    // Another host's node-specific peer is not ours.
    bgp(
        &mut e,
        "host/h2/peer_v4/10.0.0.253",
        Some(&peer_doc("10.0.0.253", 1)),
    );
    // Never a session to an address of this host.
    bgp(
        &mut e,
        "global/peer_v4/192.168.0.1",
        Some(&peer_doc("192.168.0.1", 1)),
    );
    bgp(
        &mut e,
        "host/me/peer_v4/192.168.0.1",
        Some(&peer_doc("192.168.0.1", 1)),
    );
    assert_eq!(
        peers(&e),
        vec![
            peer(PeerKind::Mesh, "192.168.0.3", DEFAULT_AS_NUMBER.get()),
            peer(PeerKind::Global, "192.168.0.2", 65100),
            peer(PeerKind::Node, "10.0.0.254", 65300),
        ],
        "sorted by (kind, address)"
    );
    bgp(&mut e, mine, None);
    bgp(&mut e, "global/peer_v4/192.168.0.2", None);
    assert_eq!(
        peers(&e),
        vec![
            peer(PeerKind::Mesh, "192.168.0.2", DEFAULT_AS_NUMBER.get()),
            peer(PeerKind::Mesh, "192.168.0.3", DEFAULT_AS_NUMBER.get()),
            peer(PeerKind::Global, "10.0.0.254", 65200),
        ]
    );
}

#[test]
fn ipv6_sessions_only_when_this_host_has_an_ipv6_address() {
    let mut e = small_cluster();
    bgp(&mut e, "host/h2/ip_addr_v6", Some("fd00::2"));
    bgp(
        &mut e,
        "global/peer_v6/fd00::fe",
        Some(&peer_doc("fd00::fe", 65200)),
    );
    let v6 = |e: &CalcEngine| -> Vec<IpAddr> {
        peers(e)
            .into_iter()
            .map(|p| p.address)
            .filter(IpAddr::is_ipv6)
            .collect()
    };
    assert_eq!(v6(&e), Vec::<IpAddr>::new());
    bgp(&mut e, &format!("host/{ME}/ip_addr_v6"), Some("fd00::1"));
    assert_eq!(
        v6(&e),
        vec![
            "fd00::2".parse::<IpAddr>().expect("ip"),
            "fd00::fe".parse().expect("ip")
        ]
    );
    // Its own v6 address is never a peer, whoever names it.
    bgp(
        &mut e,
        "global/peer_v6/fd00::1",
        Some(&peer_doc("fd00::1", 1)),
    );
    assert_eq!(v6(&e).len(), 2);
}

#[test]
fn exports_are_local_routes_inside_pools() {
    let mut e = small_cluster();
    e.apply(u_pool("10.65.0.0/16", false));
    e.apply(u_pool("fd65::/64", false));
    e.apply(u_ep(
        ME,
        "in",
        Some(with_v6(
            wep("cali1", &["10.65.0.1/32"], &[]),
            &["fd65::1/128"],
        )),
    ));
    e.apply(u_ep(ME, "out", Some(wep("cali2", &["172.16.0.1/32"], &[]))));
    e.apply(u_ep(
        "h2",
        "remote",
        Some(wep("cali1", &["10.65.1.1/32"], &[])),
    ));
    assert!(
        e.state().routes.contains_key(&net("10.65.1.1/32")),
        "direct mode"
    );
    let c = e.bgp_config().expect("config");
    assert_eq!(
        c.local_v4,
        vec!["10.65.0.1/32".parse::<Ipv4Net>().expect("net")]
    );
    assert_eq!(
        c.local_v6,
        vec!["fd65::1/128".parse::<Ipv6Net>().expect("net")]
    );
    assert_eq!(
        c.pools_v4,
        vec!["10.65.0.0/16".parse::<Ipv4Net>().expect("net")]
    );
    assert_eq!(
        c.pools_v6,
        vec!["fd65::/64".parse::<Ipv6Net>().expect("net")]
    );
    assert_eq!(c.workload_interface_prefixes, vec!["cali".to_owned()]);
    // A second pool brings the other local address in.
    e.apply(u_pool("172.16.0.0/12", true));
    let c = e.bgp_config().expect("config");
    assert_eq!(c.local_v4.len(), 2);
    assert_eq!(c.pools_v4.len(), 2);
    e.set_interface_prefixes(vec!["cali".into(), "tap".into()]);
    assert_eq!(
        e.bgp_config().expect("config").workload_interface_prefixes,
        ["cali", "tap"]
    );
}

#[test]
fn changes_bgp_is_set_by_what_the_config_depends_on() {
    let mut e = small_cluster();
    e.apply(u_pool("10.65.0.0/16", false));
    e.apply(u_rules("p", vec![allow()], vec![]));
    e.take_changes();
    let dirty = |e: &mut CalcEngine, what: &str, want: bool| {
        assert_eq!(e.take_changes().bgp, want, "{what}");
    };
    bgp(&mut e, "global/as_num", Some("65000"));
    dirty(&mut e, "global as_num", true);
    bgp(&mut e, "global/as_num", Some("65000"));
    dirty(&mut e, "the same value again", false);
    bgp(
        &mut e,
        "host/h9/peer_v4/10.0.0.9",
        Some(&peer_doc("10.0.0.9", 1)),
    );
    dirty(&mut e, "a host's peer", true);
    bgp(&mut e, "host/h9/peer_v4/10.0.0.9", None);
    dirty(&mut e, "its deletion", true);
    bgp(&mut e, "host/h9/peer_v4/10.0.0.9", None);
    dirty(&mut e, "deleting an absent key", false);
    e.apply(u_bird("h5", "192.168.0.5"));
    dirty(&mut e, "another host's bird_ip", true);
    e.apply(u_pool("10.66.0.0/16", false));
    dirty(&mut e, "a new pool", true);
    e.apply(u_pool("10.66.0.0/16", true));
    dirty(&mut e, "a pool's masquerade flag", false);
    e.apply(u_ep(
        "h2",
        "r",
        Some(wep("cali1", &["10.65.1.1/32"], &["p"])),
    ));
    dirty(&mut e, "a remote endpoint", false);
    e.apply(u_rules("p", vec![deny()], vec![]));
    dirty(&mut e, "a profile", false);
    e.apply(u_ep(ME, "l", Some(wep("cali1", &["10.65.0.1/32"], &["p"]))));
    dirty(&mut e, "a local endpoint", true);
    e.apply(u_ep(
        ME,
        "l",
        Some(with_labels(
            wep("cali1", &["10.65.0.1/32"], &["p"]),
            &[("a", "b")],
        )),
    ));
    dirty(&mut e, "a local endpoint's labels", false);
    e.apply(u_ep(ME, "l", None));
    dirty(&mut e, "a local endpoint removed", true);
    e.set_interface_prefixes(vec!["tap".into()]);
    dirty(&mut e, "interface prefixes", true);
    // An invalid value makes its key absent: a change.
    bgp(&mut e, "global/node_mesh", Some(r#"{"enabled": false}"#));
    e.take_changes();
    let err = e.apply_raw(P, "/calico/bgp/v1/global/node_mesh", Some("{}"));
    assert!(err.is_err());
    dirty(&mut e, "invalid node_mesh", true);
    assert_eq!(peers(&e).len(), 3, "mesh back to its default");
}

#[test]
fn hostile_keys_never_reach_the_config() {
    let mut e = small_cluster();
    e.take_changes();
    let before = e.bgp_config();
    for (key, value) in [
        (
            "global/peer_v4/1.2.3.4; protocol",
            r#"{"ip": "1.2.3.4; protocol", "as_num": 1}"#,
        ),
        ("global/as_num", "-1"),
        ("host/me/as_num", "4294967296"),
    ] {
        let err = e.apply_raw(P, &format!("/calico/bgp/v1/{key}"), Some(value));
        assert!(err.is_err(), "{key} accepted");
    }
    let long = "h".repeat(300);
    let err = e.apply_raw(
        P,
        &format!("/calico/bgp/v1/host/{long}/ip_addr_v4"),
        Some("10.0.0.7"),
    );
    assert!(err.is_err());
    assert_eq!(e.bgp_config(), before);
    assert!(!e.take_changes().bgp);
}

#[test]
fn remote_routes_switch_off_and_on() {
    let mut e = small_cluster();
    e.apply(u_pool("10.65.0.0/16", false));
    e.apply(u_ep(ME, "l", Some(wep("cali1", &["10.65.0.1/32"], &[]))));
    e.apply(u_ep(
        "h2",
        "a",
        Some(wep("cali1", &["10.65.2.1/32", "10.65.2.2/32"], &[])),
    ));
    e.apply(u_ep("h3", "b", Some(wep("cali1", &["10.65.3.1/32"], &[]))));
    // A remote record claiming the local address: the local route wins either way.
    e.apply(u_ep(
        "h3",
        "stale",
        Some(wep("cali1", &["10.65.0.1/32"], &[])),
    ));
    e.apply(u_ep(
        "h3",
        "outside",
        Some(wep("cali1", &["172.16.0.1/32"], &[])),
    ));
    let with_remote = e.state().routes.clone();
    e.take_changes();
    assert!(e.remote_routes());

    e.set_remote_routes(false);
    let c = e.take_changes();
    assert_eq!(
        c.routes,
        nets(&["10.65.2.1/32", "10.65.2.2/32", "10.65.3.1/32"])
    );
    assert!(!c.bgp, "local routes unchanged");
    let local = [(net("10.65.0.1/32"), RouteTarget::Interface(iface("cali1")))].into();
    assert_eq!(e.state().routes, local);
    // While off, a new remote endpoint gets no route either.
    e.apply(u_ep("h2", "c", Some(wep("cali1", &["10.65.2.9/32"], &[]))));
    assert!(e.take_changes().routes.is_empty());
    e.set_remote_routes(false);
    assert!(e.take_changes().is_empty(), "no-op");

    e.apply(u_ep("h2", "c", None));
    e.take_changes();
    e.set_remote_routes(true);
    let c = e.take_changes();
    assert_eq!(
        c.routes,
        nets(&["10.65.2.1/32", "10.65.2.2/32", "10.65.3.1/32"])
    );
    assert_eq!(e.state().routes, with_remote);
}

#[test]
fn changes_bgp_survives_merge_and_counts_as_a_change() {
    let mut e = small_cluster();
    let first = e.take_changes();
    assert!(first.bgp && !first.is_empty());
    let mut merged = margay_policy::desired::Changes::default();
    merged.merge(first);
    merged.merge(e.take_changes());
    assert!(merged.bgp, "a later empty batch keeps the flag");
}
