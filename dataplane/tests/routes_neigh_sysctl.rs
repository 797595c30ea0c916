//! Static neighbour entries and per-interface sysctls in a throw-away namespace.

mod routes_support;

use margay_policy::desired::{Changes, DesiredState};
use margay_tests::netns::{require_root, TestNetns};
use routes_support::*;

fn read_sysctl(ns: &TestNetns, path: &str) -> String {
    ns.exec_ok(&["cat", &format!("/proc/sys/{path}")])
        .trim()
        .to_owned()
}

#[tokio::test]
async fn neighbour_entries_are_written_for_endpoints_with_a_mac() {
    if !require_root("neighbour_entries_are_written_for_endpoints_with_a_mac") {
        return;
    }
    let ns = TestNetns::new("nb");
    veth(&ns, "cali1");
    veth(&ns, "cali2");
    let (mut dp, _ev) = dataplane(&ns).await;
    let mut d = DesiredState::default();
    add_endpoint(
        &mut d,
        endpoint(
            "cali1",
            Some("ee:ee:ee:00:00:01"),
            &["10.65.0.1/32", "fd00:65::1/128"],
        ),
    );
    add_endpoint(&mut d, endpoint("cali2", None, &["10.65.0.2/32"]));
    let r = apply(&mut dp, &d, &all_changes(&d, None)).await;
    assert_eq!(r.neighbours, 2, "{r:?}");
    let v4 = ns.exec_ok(&["ip", "neigh", "show", "dev", "cali1"]);
    assert!(
        v4.contains("10.65.0.1 lladdr ee:ee:ee:00:00:01 PERMANENT"),
        "{v4}"
    );
    let v6 = ns.exec_ok(&["ip", "-6", "neigh", "show", "dev", "cali1"]);
    assert!(
        v6.contains("fd00:65::1 lladdr ee:ee:ee:00:00:01 PERMANENT"),
        "{v6}"
    );
    assert!(ns
        .exec_ok(&["ip", "neigh", "show", "dev", "cali2"])
        .trim()
        .is_empty());
    // A new MAC replaces the entry; a restart adopts it.
    let mut d2 = d.clone();
    add_endpoint(
        &mut d2,
        endpoint("cali1", Some("ee:ee:ee:00:00:02"), &["10.65.0.1/32"]),
    );
    let mut c = Changes::default();
    c.endpoints.insert(iface("cali1"));
    c.routes.insert(net("fd00:65::1/128"));
    d2.routes.remove(&net("fd00:65::1/128"));
    let r = apply(&mut dp, &d2, &c).await;
    assert_eq!(r.neighbours, 2, "one replaced, one deleted: {r:?}");
    let v4 = ns.exec_ok(&["ip", "neigh", "show", "dev", "cali1"]);
    assert!(v4.contains("lladdr ee:ee:ee:00:00:02"), "{v4}");
    assert!(!ns
        .exec_ok(&["ip", "-6", "neigh", "show", "dev", "cali1"])
        .contains("fd00:65::1"));
    drop(dp);
    let (mut dp, _ev) = dataplane(&ns).await;
    assert_eq!(dp.stats().neighbours, 1);
    let r = apply(&mut dp, &d2, &all_changes(&d2, None)).await;
    assert_eq!(host_writes(&r), 0, "{r:?}");
}

#[tokio::test]
async fn sysctls_are_set_on_the_interface_once_it_exists() {
    if !require_root("sysctls_are_set_on_the_interface_once_it_exists") {
        return;
    }
    let ns = TestNetns::new("sc");
    veth(&ns, "cali1");
    let (mut dp, mut events) = dataplane(&ns).await;
    let mut d = DesiredState::default();
    add_endpoint(
        &mut d,
        endpoint("cali1", None, &["10.65.0.1/32", "fd00:65::1/128"]),
    );
    add_endpoint(&mut d, endpoint("cali4", None, &["10.65.0.4/32"]));
    let r = apply(&mut dp, &d, &all_changes(&d, None)).await;
    assert_eq!(r.sysctls, 5, "{r:?}");
    assert_eq!(read_sysctl(&ns, "net/ipv4/conf/cali1/rp_filter"), "1");
    assert_eq!(read_sysctl(&ns, "net/ipv4/conf/cali1/proxy_arp"), "1");
    assert_eq!(read_sysctl(&ns, "net/ipv4/conf/cali1/route_localnet"), "1");
    assert_eq!(read_sysctl(&ns, "net/ipv4/neigh/cali1/proxy_delay"), "0");
    assert_eq!(read_sysctl(&ns, "net/ipv6/conf/cali1/proxy_ndp"), "1");
    // cali4 does not exist yet: its sysctls wait and follow its creation.
    ns.exec_ok(&[
        "ip", "link", "add", "cali4", "type", "veth", "peer", "name", "cali4p",
    ]);
    pump_until(&mut dp, &mut events, |dp| {
        dp.host().sysctls().tracker().in_sync()
    })
    .await;
    assert_eq!(read_sysctl(&ns, "net/ipv4/conf/cali4/proxy_arp"), "1");
    // Everything happened inside the namespace: our own has no cali4.
    assert!(!std::path::Path::new("/proc/sys/net/ipv4/conf/cali4").exists());
}
