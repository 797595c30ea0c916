//! Host protection over netlink in a throw-away namespace: endpoint routes
//! never cover the namespace's own addresses, its default gateway or the
//! etcd endpoints; the protected set follows address and default-route
//! changes live; start-up removes such routes of ours left by a run before.

mod routes_support;

use margay_dataplane::hostnet::ProtectReason;
use margay_dataplane::{Dataplane, DataplaneEvent};
use margay_policy::desired::{DesiredState, RouteTarget};
use margay_tests::netns::{require_root, TestNetns};
use routes_support::*;
use tokio::sync::mpsc;

/// etcd's address in these tests.
const ETCD: &str = "10.65.0.3";

async fn guarded(ns: &TestNetns) -> (Dataplane, mpsc::Receiver<DataplaneEvent>) {
    dataplane_guarding(ns, vec![ETCD.parse().expect("ip")]).await
}

/// An uplink `eth0` with 192.0.2.11/24 and a default route via 192.0.2.1.
fn uplink(ns: &TestNetns) {
    veth(ns, "eth0");
    ns.exec_ok(&["ip", "addr", "add", "192.0.2.11/24", "dev", "eth0"]);
    ns.exec_ok(&["ip", "route", "add", "default", "via", "192.0.2.1"]);
}

fn desired() -> DesiredState {
    let mut d = DesiredState::default();
    add_endpoint(
        &mut d,
        endpoint("cali1", None, &["10.65.0.1/32", &format!("{ETCD}/32")]),
    );
    add_endpoint(&mut d, endpoint("cali2", None, &["10.65.0.2/32"]));
    // Remote endpoints: one on the gateway, one on our own address.
    for dst in ["192.0.2.1/32", "192.0.2.11/32", "10.66.0.1/32"] {
        d.routes.insert(
            net(dst),
            RouteTarget::Gateway("192.0.2.12".parse().expect("ip")),
        );
    }
    d
}

#[tokio::test]
async fn routes_on_protected_addresses_are_refused_and_follow_address_changes() {
    if !require_root("routes_on_protected_addresses_are_refused_and_follow_address_changes") {
        return;
    }
    let ns = TestNetns::new("rt-guard");
    uplink(&ns);
    veth(&ns, "cali1");
    veth(&ns, "cali2");
    let (mut dp, mut events) = guarded(&ns).await;
    let facts = dp.host_facts().clone();
    assert!(facts.uplinks.contains("eth0"), "{facts:?}");
    assert!(facts.gateways.contains(&"192.0.2.1".parse().expect("ip")));
    let d = desired();
    let report = apply(&mut dp, &d, &all_changes(&d, None)).await;
    let mut why: Vec<(String, ProtectReason)> = report
        .refused_routes
        .iter()
        .map(|r| (r.dst.to_string(), r.reason))
        .collect();
    why.sort();
    assert_eq!(
        why,
        vec![
            ("10.65.0.3/32".to_owned(), ProtectReason::EtcdEndpoint),
            ("192.0.2.1/32".to_owned(), ProtectReason::DefaultGateway),
            ("192.0.2.11/32".to_owned(), ProtectReason::HostAddress),
        ]
    );
    let shown = our_routes(&ns);
    assert!(shown.contains("10.65.0.1 dev cali1"), "{shown}");
    assert!(shown.contains("10.65.0.2 dev cali2"), "{shown}");
    assert!(shown.contains("10.66.0.1 via 192.0.2.12"), "{shown}");
    for bad in ["10.65.0.3 ", "192.0.2.1 ", "192.0.2.11 "] {
        assert!(!shown.contains(bad), "{bad} in\n{shown}");
    }
    // The host takes cali2's address: its route goes, and comes back when
    // the address does.
    ns.exec_ok(&["ip", "addr", "add", "10.65.0.2/32", "dev", "lo"]);
    pump_until(&mut dp, &mut events, |dp| {
        dp.host()
            .routes()
            .refused()
            .contains_key(&net("10.65.0.2/32"))
            && dp.host().routes().tracker().in_sync()
    })
    .await;
    assert!(!our_routes(&ns).contains("10.65.0.2 "));
    ns.exec_ok(&["ip", "addr", "del", "10.65.0.2/32", "dev", "lo"]);
    pump_until(&mut dp, &mut events, |dp| {
        dp.host().routes().tracker().in_sync()
            && !dp
                .host()
                .routes()
                .refused()
                .contains_key(&net("10.65.0.2/32"))
    })
    .await;
    assert!(our_routes(&ns).contains("10.65.0.2 dev cali2"));
    // The default route moves to another gateway: the old one's route is
    // let through, the new one's refused.
    ns.exec_ok(&["ip", "route", "replace", "default", "via", "192.0.2.254"]);
    let moved = net("192.0.2.1/32");
    pump_until(&mut dp, &mut events, |dp| {
        dp.host().routes().tracker().in_sync() && !dp.host().routes().refused().contains_key(&moved)
    })
    .await;
    assert!(our_routes(&ns).contains("192.0.2.1 via 192.0.2.12"));
}

#[tokio::test]
async fn start_up_removes_our_route_blocking_etcd_and_leaves_others() {
    if !require_root("start_up_removes_our_route_blocking_etcd_and_leaves_others") {
        return;
    }
    let ns = TestNetns::new("rt-gstart");
    uplink(&ns);
    veth(&ns, "cali1");
    let p = PROTO.to_string();
    for dst in [format!("{ETCD}/32"), "10.65.0.1/32".to_owned()] {
        ns.exec_ok(&[
            "ip", "route", "add", &dst, "dev", "cali1", "proto", &p, "scope", "link",
        ]);
    }
    // Someone else's static route on etcd's address is not ours to touch.
    ns.exec_ok(&["ip", "route", "add", "10.65.0.4/32", "dev", "cali1"]);
    let (mut dp, _events) = guarded(&ns).await;
    let removed = dp.remove_blocking_routes().await.expect("removes");
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0].dst, net(&format!("{ETCD}/32")));
    assert_eq!(removed[0].reason, ProtectReason::EtcdEndpoint);
    let shown = our_routes(&ns);
    assert!(!shown.contains(ETCD), "{shown}");
    assert!(shown.contains("10.65.0.1 dev cali1"), "{shown}");
    let all = ns.exec_ok(&["ip", "route"]);
    assert!(all.contains("10.65.0.4 dev cali1"), "{all}");
}
