//! Routes over netlink in a throw-away namespace: programming, waiting for
//! interfaces, forgetting vanished ones, repairing hand deletions, never
//! touching routes that are not ours, adopting on restart, gateways.

mod routes_support;

use margay_dataplane::{DataplaneEvent, RoutePlan};
use margay_policy::desired::{Changes, DesiredState, RouteTarget};
use margay_tests::netns::{require_root, TestNetns};
use routes_support::*;

fn two_endpoints() -> DesiredState {
    let mut d = DesiredState::default();
    add_endpoint(
        &mut d,
        endpoint("cali1", None, &["10.65.0.1/32", "fd00:65::1/128"]),
    );
    add_endpoint(&mut d, endpoint("cali2", None, &["10.65.0.2/32"]));
    d
}

#[tokio::test]
async fn routes_for_existing_interfaces_are_programmed_once() {
    if !require_root("routes_for_existing_interfaces_are_programmed_once") {
        return;
    }
    let ns = TestNetns::new("rt-prog");
    veth(&ns, "cali1");
    veth(&ns, "cali2");
    let (mut dp, _events) = dataplane(&ns).await;
    let d = two_endpoints();
    let report = apply(&mut dp, &d, &all_changes(&d, None)).await;
    assert_eq!(report.routes, 3, "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    let shown = our_routes(&ns);
    assert!(shown.contains("10.65.0.1 dev cali1 scope link"), "{shown}");
    assert!(shown.contains("10.65.0.2 dev cali2 scope link"), "{shown}");
    assert!(shown.contains("fd00:65::1 dev cali1"), "{shown}");
    // Nothing changed: nothing written.
    let again = apply(&mut dp, &d, &all_changes(&d, None)).await;
    assert_eq!(again.routes, 0);
    // Removing an endpoint deletes exactly its routes.
    let mut d2 = d.clone();
    d2.routes.remove(&net("10.65.0.2/32"));
    d2.endpoints.remove(&iface("cali2"));
    let mut c = Changes::default();
    c.routes.insert(net("10.65.0.2/32"));
    c.endpoints.insert(iface("cali2"));
    let gone = apply(&mut dp, &d2, &c).await;
    assert_eq!(gone.routes, 1);
    let shown = our_routes(&ns);
    assert!(!shown.contains("10.65.0.2"), "{shown}");
    assert!(shown.contains("10.65.0.1 dev cali1"), "{shown}");
    assert_eq!(dp.stats().routes, 2);
}

#[tokio::test]
async fn a_route_to_a_missing_interface_is_installed_when_it_appears() {
    if !require_root("a_route_to_a_missing_interface_is_installed_when_it_appears") {
        return;
    }
    let ns = TestNetns::new("rt-wait");
    let (mut dp, mut events) = dataplane(&ns).await;
    let mut d = DesiredState::default();
    add_endpoint(&mut d, endpoint("cali7", None, &["10.65.7.1/32"]));
    let report = apply(&mut dp, &d, &all_changes(&d, None)).await;
    assert_eq!(report.routes, 0);
    assert!(report.waiting >= 1, "{report:?}");
    assert!(our_routes(&ns).is_empty());
    veth(&ns, "cali7");
    pump_until(&mut dp, &mut events, |dp| {
        dp.host().routes().tracker().in_sync()
    })
    .await;
    let shown = our_routes(&ns);
    assert!(shown.contains("10.65.7.1 dev cali7 scope link"), "{shown}");
}

#[tokio::test]
async fn routes_of_a_deleted_interface_are_forgotten_and_come_back_with_it() {
    if !require_root("routes_of_a_deleted_interface_are_forgotten_and_come_back_with_it") {
        return;
    }
    let ns = TestNetns::new("rt-gone");
    veth(&ns, "cali1");
    veth(&ns, "cali2");
    let (mut dp, mut events) = dataplane(&ns).await;
    let d = two_endpoints();
    apply(&mut dp, &d, &all_changes(&d, None)).await;
    pump_pending(&ns, &mut dp, &mut events).await;
    ns.exec_ok(&["ip", "link", "del", "cali1"]);
    pump_until(&mut dp, &mut events, |dp| {
        !dp.host()
            .routes()
            .tracker()
            .observed()
            .contains_key(&net("10.65.0.1/32"))
    })
    .await;
    let observed = dp.host().routes().tracker().observed().clone();
    assert_eq!(
        observed.len(),
        1,
        "only cali2's route is left: {observed:?}"
    );
    assert!(!our_routes(&ns).contains("cali1"));
    veth(&ns, "cali1");
    pump_until(&mut dp, &mut events, |dp| {
        dp.host().routes().tracker().in_sync()
    })
    .await;
    let shown = our_routes(&ns);
    assert!(shown.contains("10.65.0.1 dev cali1"), "{shown}");
    assert!(shown.contains("fd00:65::1 dev cali1"), "{shown}");
}

#[tokio::test]
async fn a_route_deleted_by_hand_is_repaired_from_the_event() {
    if !require_root("a_route_deleted_by_hand_is_repaired_from_the_event") {
        return;
    }
    let ns = TestNetns::new("rt-fix");
    veth(&ns, "cali1");
    veth(&ns, "cali2");
    let (mut dp, mut events) = dataplane(&ns).await;
    let d = two_endpoints();
    apply(&mut dp, &d, &all_changes(&d, None)).await;
    // Our own writes produce no events worth acting on.
    assert_eq!(pump_pending(&ns, &mut dp, &mut events).await, 0);
    ns.exec_ok(&["ip", "route", "del", "10.65.0.2/32", "proto", "80"]);
    assert!(!our_routes(&ns).contains("10.65.0.2"));
    let mut saw_removal = false;
    let ev = events.recv().await.expect("an event");
    if let DataplaneEvent::Route { route, removed } = &ev {
        saw_removal = *removed && route.dst == net("10.65.0.2/32");
    }
    assert!(saw_removal, "first event is the removal: {ev:?}");
    let report = dp.handle_event(ev).await.expect("handled");
    assert_eq!(report.routes, 1);
    assert!(our_routes(&ns).contains("10.65.0.2 dev cali2 scope link"));
}

#[tokio::test]
async fn routes_that_are_not_ours_are_never_touched() {
    if !require_root("routes_that_are_not_ours_are_never_touched") {
        return;
    }
    let ns = TestNetns::new("rt-foreign");
    veth(&ns, "cali1");
    veth(&ns, "cali2");
    ns.exec_ok(&[
        "ip",
        "route",
        "add",
        "10.65.9.9/32",
        "dev",
        "cali1",
        "proto",
        "static",
    ]);
    ns.exec_ok(&[
        "ip",
        "route",
        "add",
        "10.65.0.2/32",
        "dev",
        "cali1",
        "proto",
        "81",
    ]);
    let (mut dp, mut events) = dataplane(&ns).await;
    let d = two_endpoints(); // wants 10.65.0.2 on cali2: held by someone else
    let report = apply(&mut dp, &d, &all_changes(&d, None)).await;
    assert_eq!(report.routes, 2, "{report:?}");
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert!(report.failures[0].object.contains("10.65.0.2"));
    let foreign = ns.exec_ok(&["ip", "route", "show", "10.65.0.2/32"]);
    assert!(foreign.contains("dev cali1 proto 81"), "{foreign}");
    assert!(ns
        .exec_ok(&["ip", "route", "show", "proto", "static"])
        .contains("10.65.9.9 dev cali1"));
    // Removing all desired routes deletes ours only.
    let empty = DesiredState::default();
    apply(&mut dp, &empty, &all_changes(&empty, Some(&d))).await;
    assert!(our_routes(&ns).is_empty());
    assert!(ns
        .exec_ok(&["ip", "route", "show", "10.65.0.2/32"])
        .contains("proto 81"));
    assert!(ns
        .exec_ok(&["ip", "route", "show", "10.65.9.9/32"])
        .contains("proto static"));
    // Once the other route goes, ours takes its place (from the event).
    apply(&mut dp, &d, &all_changes(&d, None)).await;
    pump_pending(&ns, &mut dp, &mut events).await;
    ns.exec_ok(&["ip", "route", "del", "10.65.0.2/32", "proto", "81"]);
    pump_until(&mut dp, &mut events, |dp| {
        dp.host().routes().tracker().in_sync()
    })
    .await;
    assert!(our_routes(&ns).contains("10.65.0.2 dev cali2"));
}

#[tokio::test]
async fn a_restart_adopts_existing_routes_without_writing() {
    if !require_root("a_restart_adopts_existing_routes_without_writing") {
        return;
    }
    let ns = TestNetns::new("rt-adopt");
    veth(&ns, "cali1");
    veth(&ns, "cali2");
    let mut d = two_endpoints();
    add_endpoint(&mut d, endpoint("cali3", None, &["10.65.0.3/32"])); // waits
    {
        let (mut dp, _ev) = dataplane(&ns).await;
        let r = apply(&mut dp, &d, &all_changes(&d, None)).await;
        assert_eq!(r.routes, 3);
        assert!(r.sysctls > 0);
    }
    // A stale route of ours from the previous life must go.
    ns.exec_ok(&[
        "ip",
        "route",
        "add",
        "10.65.0.99/32",
        "dev",
        "cali2",
        "proto",
        "80",
        "scope",
        "link",
    ]);
    let (mut dp, _ev) = dataplane(&ns).await;
    assert_eq!(dp.stats().routes, 4, "adopted from the dump");
    let r = apply(&mut dp, &d, &all_changes(&d, None)).await;
    assert_eq!(r.routes, 1, "only the stale route is deleted: {r:?}");
    assert_eq!(r.sysctls, 0, "sysctls already in place: {r:?}");
    assert_eq!(r.neighbours, 0);
    assert!(!our_routes(&ns).contains("10.65.0.99"));
    let r = apply(&mut dp, &d, &all_changes(&d, None)).await;
    assert_eq!(host_writes(&r), 0, "{r:?}");
    // A full repair against an unchanged kernel writes nothing either.
    assert_eq!(dp.repair_routes(&d).await.expect("repair"), 0);
}

#[tokio::test]
async fn gateway_routes_are_retried_when_the_gateway_becomes_reachable() {
    if !require_root("gateway_routes_are_retried_when_the_gateway_becomes_reachable") {
        return;
    }
    let ns = TestNetns::new("rt-gw");
    veth(&ns, "eth1");
    ns.exec_ok(&["ip", "addr", "add", "192.168.77.1/24", "dev", "eth1"]);
    let (mut dp, mut events) = dataplane(&ns).await;
    let mut d = DesiredState::default();
    d.routes.insert(
        net("10.70.0.5/32"),
        RouteTarget::Gateway("192.168.77.2".parse().expect("ip")),
    );
    d.routes.insert(
        net("10.70.1.5/32"),
        RouteTarget::Gateway("192.168.88.2".parse().expect("ip")),
    );
    let report = apply(&mut dp, &d, &all_changes(&d, None)).await;
    assert_eq!(report.routes, 1, "{report:?}");
    assert_eq!(
        report.failures.len(),
        1,
        "unreachable gateway is refused, not fatal"
    );
    assert!(our_routes(&ns).contains("10.70.0.5 via 192.168.77.2 dev eth1"));
    ns.exec_ok(&["ip", "addr", "add", "192.168.88.1/24", "dev", "eth1"]);
    pump_until(&mut dp, &mut events, |dp| {
        dp.host().routes().tracker().in_sync()
    })
    .await;
    assert!(our_routes(&ns).contains("10.70.1.5 via 192.168.88.2 dev eth1"));
}

#[tokio::test]
async fn plans_show_the_route_diff_and_write_nothing() {
    if !require_root("plans_show_the_route_diff_and_write_nothing") {
        return;
    }
    let ns = TestNetns::new("rt-plan");
    veth(&ns, "cali1");
    veth(&ns, "cali2");
    let (mut dp, _ev) = dataplane(&ns).await;
    let d = two_endpoints();
    let settings = Default::default();
    let plan = dp.plan(&d, &settings).await.expect("plan");
    assert_eq!(plan.routes.len(), 3);
    assert!(our_routes(&ns).is_empty(), "planning writes nothing");
    assert!(
        plan.routes.iter().any(|r| matches!(
            r,
            RoutePlan::Add { dst, route }
                if dst.to_string() == "10.65.0.1/32" && route.to_string() == "dev cali1 scope link"
        )),
        "{plan:?}"
    );
    apply(&mut dp, &d, &all_changes(&d, None)).await;
    let plan = dp.plan(&d, &settings).await.expect("plan");
    assert!(plan.routes.is_empty(), "{plan:?}");
}

#[tokio::test]
async fn our_own_writes_cause_no_events_even_in_bulk() {
    if !require_root("our_own_writes_cause_no_events_even_in_bulk") {
        return;
    }
    let ns = TestNetns::new("rt-echo");
    veth(&ns, "cali1");
    let (mut dp, mut events) = dataplane(&ns).await;
    let mut d = DesiredState::default();
    for i in 0..20_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a42_0000 + i);
        d.routes.insert(
            net(&format!("{ip}/32")),
            RouteTarget::Interface(iface("cali1")),
        );
    }
    let r = apply(&mut dp, &d, &all_changes(&d, None)).await;
    assert_eq!(r.routes, 20_000);
    let empty = DesiredState::default();
    let r = apply(&mut dp, &empty, &all_changes(&empty, Some(&d))).await;
    assert_eq!(r.routes, 20_000);
    // Everything up to a marker route written after ours: no echo in it.
    // Only routes inside what we wrote count: the kernel's own routes (the
    // veth's fe80::/64, added when IPv6 comes up on it) may arrive at any
    // moment and are not echoes.
    let ours = net("10.66.0.0/16");
    events_until_marker(&ns, &mut events, |ev| {
        let echo = match ev {
            DataplaneEvent::Route { route, .. } => ours.contains(&route.dst),
            DataplaneEvent::Overrun => true,
            _ => false,
        };
        assert!(!echo, "echo of our own write: {ev:?}");
    })
    .await;
}

#[tokio::test]
async fn events_before_the_first_apply_never_delete_adopted_routes() {
    if !require_root("events_before_the_first_apply_never_delete_adopted_routes") {
        return;
    }
    let ns = TestNetns::new("rt-early");
    veth(&ns, "cali1");
    ns.exec_ok(&[
        "ip",
        "route",
        "add",
        "10.65.0.1/32",
        "dev",
        "cali1",
        "proto",
        "80",
        "scope",
        "link",
    ]);
    let (mut dp, mut events) = dataplane(&ns).await;
    assert_eq!(dp.stats().routes, 1);
    // A link appearing before any desired state is known must not make us
    // "converge" to an empty desired state.
    veth(&ns, "cali2");
    pump_until(&mut dp, &mut events, |dp| {
        dp.host().routes().tracker().observed().len() == 1 && dp.stats().routes == 1
    })
    .await;
    pump_pending(&ns, &mut dp, &mut events).await;
    assert!(our_routes(&ns).contains("10.65.0.1 dev cali1"));
}
