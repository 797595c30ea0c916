//! The addresses of each interface by name, as host networking learns them
//! from netlink events in a throw-away namespace: an address moved between
//! interfaces, an interface deleted or renamed, an interface taken down,
//! and the things that must leave the map alone. Events are fed to the
//! dataplane the way the agent does (`take_events` + `handle_events`);
//! nothing polls, so before the events are handled the map must still show
//! the old state.

mod routes_support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use margay_dataplane::firewall::lower::InterfaceAddresses;
use margay_dataplane::Dataplane;
use margay_tests::netns::{require_root, TestNetns};
use routes_support::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn addrs(dp: &Dataplane) -> &InterfaceAddresses {
    dp.host().interface_addresses()
}

/// The addresses `dp` knows on `iface` (empty when it has no entry).
fn on(dp: &Dataplane, iface: &str) -> BTreeSet<IpAddr> {
    addrs(dp).get(iface).cloned().unwrap_or_default()
}

/// A namespace without IPv6 link-local addresses (only the addresses a
/// test adds exist) and two veths, `hep1` and `hep2`, up.
fn namespace(tag: &str) -> TestNetns {
    let ns = TestNetns::new(tag);
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
    ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
    veth(&ns, "hep1");
    veth(&ns, "hep2");
    ns
}

#[tokio::test]
async fn an_address_moved_to_another_interface_moves_in_the_map_within_a_second() {
    if !require_root("an_address_moved_to_another_interface_moves_in_the_map_within_a_second") {
        return;
    }
    let ns = namespace("ia-move");
    ns.exec_ok(&["ip", "addr", "add", "10.77.0.1/24", "dev", "hep1"]);
    let (mut dp, mut events) = dataplane(&ns).await;
    assert_eq!(on(&dp, "hep1"), BTreeSet::from([ip("10.77.0.1")]));
    assert!(!addrs(&dp).contains_key("hep2"), "{:?}", addrs(&dp));
    let before = dp.host().interface_addresses_generation();

    ns.exec_ok(&["ip", "addr", "del", "10.77.0.1/24", "dev", "hep1"]);
    ns.exec_ok(&["ip", "addr", "add", "10.77.0.1/24", "dev", "hep2"]);
    let moved_at = Instant::now();
    assert_eq!(
        on(&dp, "hep1"),
        BTreeSet::from([ip("10.77.0.1")]),
        "nothing polls: the map changes only when the events are handled"
    );
    pump_until(&mut dp, &mut events, |dp| {
        on(dp, "hep2").contains(&ip("10.77.0.1")) && !addrs(dp).contains_key("hep1")
    })
    .await;
    let took = moved_at.elapsed();
    assert!(took < Duration::from_secs(1), "followed after {took:?}");
    assert!(dp.host().interface_addresses_generation() > before);
}

#[tokio::test]
async fn a_deleted_interface_leaves_the_map() {
    if !require_root("a_deleted_interface_leaves_the_map") {
        return;
    }
    let ns = namespace("ia-del");
    ns.exec_ok(&["ip", "addr", "add", "10.77.1.1/24", "dev", "hep1"]);
    ns.exec_ok(&["ip", "addr", "add", "10.77.2.1/24", "dev", "hep2"]);
    let (mut dp, mut events) = dataplane(&ns).await;
    assert!(addrs(&dp).contains_key("hep1"), "{:?}", addrs(&dp));
    ns.exec_ok(&["ip", "link", "del", "hep1"]);
    pump_until(&mut dp, &mut events, |dp| !addrs(dp).contains_key("hep1")).await;
    assert_eq!(on(&dp, "hep2"), BTreeSet::from([ip("10.77.2.1")]));
}

#[tokio::test]
async fn a_renamed_interface_takes_its_addresses_to_the_new_name() {
    if !require_root("a_renamed_interface_takes_its_addresses_to_the_new_name") {
        return;
    }
    // IPv6 only: the kernel re-announces IPv4 addresses on a rename (their
    // label changes) but not IPv6 ones, so only the link event says it.
    let ns = namespace("ia-ren");
    ns.sysctl("net.ipv6.conf.hep2.disable_ipv6", "0");
    ns.sysctl("net.ipv6.conf.hep2.keep_addr_on_down", "1");
    ns.exec_ok(&[
        "ip",
        "addr",
        "add",
        "fd00:77:3::1/64",
        "dev",
        "hep2",
        "nodad",
    ]);
    let (mut dp, mut events) = dataplane(&ns).await;
    assert!(
        on(&dp, "hep2").contains(&ip("fd00:77:3::1")),
        "{:?}",
        addrs(&dp)
    );
    // Down first (that removes the link-local address: an address event),
    // handled; then the rename alone.
    ns.exec_ok(&["ip", "link", "set", "hep2", "down"]);
    pump_pending(&ns, &mut dp, &mut events).await;
    ns.exec_ok(&["ip", "link", "set", "hep2", "name", "uplink9"]);
    pump_until(&mut dp, &mut events, |dp| addrs(dp).contains_key("uplink9")).await;
    assert!(!addrs(&dp).contains_key("hep2"), "{:?}", addrs(&dp));
    assert!(
        on(&dp, "uplink9").contains(&ip("fd00:77:3::1")),
        "{:?}",
        addrs(&dp)
    );
    // A rename in the same batch as address events that leave the
    // addresses as they were: the rename still counts.
    ns.exec_ok(&["ip", "addr", "add", "10.77.3.9/32", "dev", "hep1"]);
    ns.exec_ok(&["ip", "addr", "del", "10.77.3.9/32", "dev", "hep1"]);
    ns.exec_ok(&["ip", "link", "set", "uplink9", "name", "uplink8"]);
    pump_pending(&ns, &mut dp, &mut events).await;
    assert!(
        on(&dp, "uplink8").contains(&ip("fd00:77:3::1")) && !addrs(&dp).contains_key("uplink9"),
        "{:?}",
        addrs(&dp)
    );
}

#[tokio::test]
async fn addresses_on_an_interface_that_is_down_still_count() {
    if !require_root("addresses_on_an_interface_that_is_down_still_count") {
        return;
    }
    let ns = namespace("ia-down");
    let (mut dp, mut events) = dataplane(&ns).await;
    ns.exec_ok(&["ip", "link", "set", "hep1", "down"]);
    ns.exec_ok(&["ip", "addr", "add", "10.77.4.1/24", "dev", "hep1"]);
    pump_until(&mut dp, &mut events, |dp| addrs(dp).contains_key("hep1")).await;
    assert_eq!(on(&dp, "hep1"), BTreeSet::from([ip("10.77.4.1")]));
}

#[tokio::test]
async fn both_families_are_kept_and_a_peer_address_is_not_the_interfaces() {
    if !require_root("both_families_are_kept_and_a_peer_address_is_not_the_interfaces") {
        return;
    }
    let ns = namespace("ia-fam");
    ns.sysctl("net.ipv6.conf.hep1.disable_ipv6", "0");
    let (mut dp, mut events) = dataplane(&ns).await;
    ns.exec_ok(&["ip", "addr", "add", "fd00:77::1/64", "dev", "hep1", "nodad"]);
    ns.exec_ok(&[
        "ip",
        "addr",
        "add",
        "10.77.5.1",
        "peer",
        "10.77.5.2",
        "dev",
        "hep1",
    ]);
    pump_until(&mut dp, &mut events, |dp| {
        on(dp, "hep1").contains(&ip("fd00:77::1")) && on(dp, "hep1").contains(&ip("10.77.5.1"))
    })
    .await;
    let hep1 = on(&dp, "hep1");
    assert!(!hep1.contains(&ip("10.77.5.2")), "peer counted: {hep1:?}");
}

#[tokio::test]
async fn interfaces_without_addresses_and_foreign_routes_leave_the_map_alone() {
    if !require_root("interfaces_without_addresses_and_foreign_routes_leave_the_map_alone") {
        return;
    }
    let ns = namespace("ia-calm");
    ns.exec_ok(&["ip", "addr", "add", "10.77.6.1/24", "dev", "hep1"]);
    let (mut dp, mut events) = dataplane(&ns).await;
    let before = (
        addrs(&dp).clone(),
        dp.host().interface_addresses_generation(),
    );
    // A workload veth comes and goes; a marker route is added and removed.
    veth(&ns, "cali5");
    ns.exec_ok(&["ip", "link", "del", "cali5"]);
    pump_pending(&ns, &mut dp, &mut events).await;
    let after = (
        addrs(&dp).clone(),
        dp.host().interface_addresses_generation(),
    );
    assert_eq!(after, before);
}
