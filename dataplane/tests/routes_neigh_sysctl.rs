//! Static neighbour entries and per-interface sysctls in a throw-away namespace.

mod routes_support;

use margay_policy::desired::{Changes, DesiredState};
use margay_tests::netns::{attach_workload, require_root, TestNetns};
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

/// The routes layer on its own carries real packets: two workloads attached
/// the way a CNI plugin does it (a /32 and a default route via 169.254.1.1,
/// nothing on the host side) cannot reach each other until margay programs
/// the host routes and the interface sysctls (proxy ARP), and stop again when
/// one endpoint goes away.
#[tokio::test]
async fn programmed_routes_and_sysctls_carry_packets() {
    if !require_root("programmed_routes_and_sysctls_carry_packets") {
        return;
    }
    let host = TestNetns::new("rp-h");
    host.sysctl("net.ipv4.ip_forward", "1");
    // Proxy ARP answers for 169.254.1.1 only when the host has a route to it.
    veth(&host, "up0");
    host.exec_ok(&["ip", "addr", "add", "192.0.2.1/24", "dev", "up0"]);
    host.exec_ok(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        "192.0.2.2",
        "dev",
        "up0",
    ]);
    let w0 = TestNetns::new("rp-w0");
    let w1 = TestNetns::new("rp-w1");
    attach_workload(&host, "cali0", &w0, "10.65.0.10");
    attach_workload(&host, "cali1", &w1, "10.65.0.11");
    let ping = |from: &TestNetns, to: &str| {
        from.exec(&["ping", "-n", "-q", "-c1", "-W1", to])
            .status
            .success()
    };
    assert!(
        !ping(&w0, "10.65.0.11"),
        "reachable before margay did anything"
    );
    // That attempt left 169.254.1.1 unresolved in w0's neighbour table (the
    // kernel waits before asking again); forget it, as a fresh workload would.
    w0.exec_ok(&["ip", "neigh", "flush", "dev", "eth0"]);

    let (mut dp, _events) = dataplane(&host).await;
    let mut d = DesiredState::default();
    add_endpoint(&mut d, endpoint("cali0", None, &["10.65.0.10/32"]));
    add_endpoint(&mut d, endpoint("cali1", None, &["10.65.0.11/32"]));
    apply(&mut dp, &d, &all_changes(&d, None)).await;
    assert!(ping(&w0, "10.65.0.11"), "w0 -> w1 after programming");
    assert!(ping(&w1, "10.65.0.10"), "w1 -> w0 after programming");

    let mut gone = d.clone();
    gone.endpoints.remove(&iface("cali1"));
    gone.routes.remove(&net("10.65.0.11/32"));
    apply(&mut dp, &gone, &all_changes(&gone, Some(&d))).await;
    assert!(
        !ping(&w0, "10.65.0.11"),
        "w1 still reachable after its endpoint was removed"
    );
    assert!(our_routes(&host).contains("10.65.0.10 dev cali0"));
}
