//! Endpoint conflicts (issue 9, case 2) and pool-bounded remote routes
//! (case 3): two local endpoints claiming one interface or one address fail
//! closed in any order, change no route, are reported, and resolve live;
//! remote endpoints get routes only inside IP pools.

mod calc_support;

use calc_support::*;
use margay_policy::calc::{CalcEngine, ConflictSubject, EndpointConflict};
use margay_policy::desired::{Direction, RouteTarget, WorkloadEndpointKey};
use margay_policy::model::{ResourceKey, Update, Value, WorkloadEndpoint};

/// `host/me/workload/aaa/x/endpoint/x`: sorts before every `k8s` key.
fn hijacker_key() -> WorkloadEndpointKey {
    WorkloadEndpointKey {
        host: ME.into(),
        orchestrator: "aaa".into(),
        workload: "x".into(),
        endpoint: id("x"),
    }
}

fn e2_key() -> WorkloadEndpointKey {
    ep_key(ME, "w2")
}

fn put(key: &WorkloadEndpointKey, doc: Option<WorkloadEndpoint>) -> Update {
    upd(
        ResourceKey::WorkloadEndpoint(key.clone()),
        doc.map(Value::WorkloadEndpoint),
    )
}

/// w1 (open) on caliw1, e2 on caliw2 with profile `db` that denies w1.
fn base() -> Vec<Update> {
    vec![
        u_rules("allowall", vec![allow()], vec![allow()]),
        u_rules(
            "db",
            vec![src_sel(deny(), "app == 'w1'"), allow()],
            vec![allow()],
        ),
        u_ep(
            ME,
            "w1",
            Some(with_labels(
                wep("caliw1", &["10.99.0.1/32"], &["allowall"]),
                &[("app", "w1")],
            )),
        ),
        put(&e2_key(), Some(wep("caliw2", &["10.99.0.2/32"], &["db"]))),
    ]
}

fn hijacker(addr: &str) -> Update {
    put(&hijacker_key(), Some(wep("caliw2", &[addr], &["allowall"])))
}

fn route(e: &CalcEngine, addr: &str) -> Option<RouteTarget> {
    e.state().routes.get(&net(addr)).cloned()
}

fn dev(i: &str) -> Option<RouteTarget> {
    Some(RouteTarget::Interface(iface(i)))
}

fn assert_e2_in_force(e: &CalcEngine) {
    let s = e.state();
    assert_eq!(s.endpoints[&iface("caliw2")].key, e2_key());
    assert_eq!(
        s.programs[&iface("caliw2")].inbound.profiles,
        vec![rs_profile("db", Direction::Inbound)]
    );
    assert!(e.conflicts().is_empty(), "{:?}", e.conflicts());
}

#[test]
fn the_issues_hijacker_gets_a_drop_all_interface_in_any_order() {
    let before = engine_with(base());
    assert_e2_in_force(&before);
    for hijack_first in [false, true] {
        let mut ups = base();
        if hijack_first {
            ups.insert(0, hijacker("10.99.0.2/32"));
        } else {
            ups.push(hijacker("10.99.0.2/32"));
        }
        let mut e = engine_with(ups);
        let s = e.state();
        assert_eq!(
            s.programs[&iface("caliw2")],
            drop_all(),
            "first: {hijack_first}"
        );
        assert!(!s.endpoints.contains_key(&iface("caliw2")));
        assert_eq!(s.routes, before.state().routes, "no route change");
        assert_eq!(
            e.conflicts(),
            vec![EndpointConflict {
                subject: ConflictSubject::Interface(iface("caliw2")),
                keys: vec![hijacker_key(), e2_key()],
            }]
        );
        let problems = e.problems().join("\n");
        assert!(
            problems.contains("host/me/workload/aaa/x/endpoint/x")
                && problems.contains("host/me/workload/k8s/w2/endpoint/eth0"),
            "{problems}"
        );
        // w1 stays as it was.
        assert_eq!(
            s.programs[&iface("caliw1")],
            before.state().programs[&iface("caliw1")]
        );
        // The hijacker goes: e2's policy is back at once.
        let generation = e.conflicts_generation();
        e.take_changes();
        e.apply(put(&hijacker_key(), None));
        assert_e2_in_force(&e);
        assert_ne!(e.conflicts_generation(), generation);
        assert!(e.take_changes().routes.is_empty(), "no route change");
        assert_eq!(e.state(), before.state());
    }
}

#[test]
fn adding_the_hijacker_changes_no_route() {
    let mut e = engine_with(base());
    e.take_changes();
    e.apply(hijacker("10.99.0.2/32"));
    let c = e.take_changes();
    assert!(c.routes.is_empty(), "{:?}", c.routes);
    assert_eq!(c.programs, [iface("caliw2")].into());
    assert_eq!(c.endpoints, [iface("caliw2")].into());
}

#[test]
fn a_hijacker_with_another_address_does_not_unroute_the_owner() {
    let mut e = engine_with(base().into_iter().chain([hijacker("10.99.0.9/32")]));
    assert_eq!(
        route(&e, "10.99.0.2/32"),
        dev("caliw2"),
        "e2 keeps its route"
    );
    // The newcomer's own address points at the contested (drop-all) interface.
    assert_eq!(route(&e, "10.99.0.9/32"), dev("caliw2"));
    assert_eq!(e.state().programs[&iface("caliw2")], drop_all());
    e.apply(put(&hijacker_key(), None));
    assert_e2_in_force(&e);
    assert_eq!(route(&e, "10.99.0.9/32"), None);
}

#[test]
fn an_address_claimed_on_two_interfaces_fails_closed_and_is_not_routed() {
    let w3 = put(
        &hijacker_key(),
        Some(wep(
            "caliw3",
            &["10.99.0.1/32", "10.99.0.3/32"],
            &["allowall"],
        )),
    );
    let remote = u_ep(
        "h2",
        "r",
        Some(wep("calir", &["10.99.0.1/32"], &["allowall"])),
    );
    let mut extra = vec![
        w3,
        remote,
        u_bird("h2", "192.168.0.2"),
        u_pool("10.99.0.0/16", false),
    ];
    let mut ups = base();
    ups.append(&mut extra.clone());
    let forward = engine_with(ups);
    extra.reverse();
    let mut e = engine_with(extra.into_iter().chain(base()));
    assert_eq!(e.state(), forward.state(), "order-independent");
    assert_eq!(e.conflicts(), forward.conflicts());
    let s = e.state();
    for i in ["caliw1", "caliw3"] {
        assert_eq!(s.programs[&iface(i)], drop_all(), "{i}");
        assert!(!s.endpoints.contains_key(&iface(i)), "{i}");
    }
    assert_eq!(
        route(&e, "10.99.0.1/32"),
        None,
        "no side wins, not even the remote one"
    );
    assert_eq!(route(&e, "10.99.0.3/32"), dev("caliw3"), "uncontested");
    assert_eq!(route(&e, "10.99.0.2/32"), dev("caliw2"), "uninvolved");
    assert_eq!(s.endpoints[&iface("caliw2")].key, e2_key());
    assert_eq!(
        e.conflicts(),
        vec![EndpointConflict {
            subject: ConflictSubject::Address(net("10.99.0.1/32")),
            keys: vec![hijacker_key(), ep_key(ME, "w1")],
        }]
    );
    // Resolved live: the hijacker moves to an address of its own.
    e.apply(put(
        &hijacker_key(),
        Some(wep("caliw3", &["10.99.0.3/32"], &["allowall"])),
    ));
    assert!(e.conflicts().is_empty());
    assert_eq!(route(&e, "10.99.0.1/32"), dev("caliw1"));
    assert_eq!(e.state().endpoints[&iface("caliw1")].key, ep_key(ME, "w1"));
    assert_eq!(e.state().endpoints[&iface("caliw3")].key, hijacker_key());
}

#[test]
fn endpoints_that_claim_nothing_are_no_conflict() {
    let idle = put(
        &hijacker_key(),
        Some(inactive(wep("caliw2", &["10.99.0.2/32"], &["allowall"]))),
    );
    let unprefixed = u_ep(
        ME,
        "t",
        Some(wep("tapw2", &["10.99.0.2/32"], &["allowall"])),
    );
    let e = engine_with(base().into_iter().chain([idle, unprefixed]));
    assert_e2_in_force(&e);
    assert_eq!(route(&e, "10.99.0.2/32"), dev("caliw2"));
}

#[test]
fn remote_endpoints_sharing_an_address_are_no_conflict() {
    let e = engine_with([
        u_pool("10.65.0.0/16", false),
        u_bird("h2", "192.168.0.2"),
        u_bird("h3", "192.168.0.3"),
        u_ep("h3", "old", Some(wep("cali1", &["10.65.2.2/32"], &[]))),
        u_ep("h2", "new", Some(wep("cali1", &["10.65.2.2/32"], &[]))),
    ]);
    assert!(e.conflicts().is_empty());
    assert_eq!(
        route(&e, "10.65.2.2/32"),
        Some(RouteTarget::Gateway("192.168.0.2".parse().unwrap())),
        "the smaller key, as before"
    );
}

#[test]
fn remote_routes_only_inside_pools_and_follow_pools_live() {
    let mut e = engine_with([
        u_bird("h2", "192.168.0.2"),
        u_ep(
            "h2",
            "r",
            Some(with_v6(
                wep("cali1", &["10.65.2.2/32", "198.19.0.2/32"], &[]),
                &["fd00::2/128"],
            )),
        ),
    ]);
    assert!(e.state().routes.is_empty(), "no pool, no remote route");
    e.take_changes();
    e.apply(u_pool("10.65.0.0/16", false));
    let gw = Some(RouteTarget::Gateway("192.168.0.2".parse().unwrap()));
    assert_eq!(route(&e, "10.65.2.2/32"), gw);
    assert_eq!(route(&e, "198.19.0.2/32"), None, "outside every pool");
    assert_eq!(e.take_changes().routes, nets(&["10.65.2.2/32"]));
    // A pool for the other address brings its route; removing pools takes them.
    e.apply(u_pool("198.19.0.0/16", false));
    assert_eq!(route(&e, "198.19.0.2/32"), gw);
    e.remove(&ResourceKey::IpPool(net("198.19.0.0/16")));
    e.remove(&ResourceKey::IpPool(net("10.65.0.0/16")));
    assert!(e.state().routes.is_empty());
    // Local endpoints need no pool.
    e.apply(u_ep(ME, "l", Some(wep("cali9", &["198.19.0.9/32"], &[]))));
    assert_eq!(route(&e, "198.19.0.9/32"), dev("cali9"));
}
