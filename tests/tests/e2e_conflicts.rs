//! End-to-end, issue 9: datastore documents that would hijack traffic or
//! routes, against the real `margay` on both backends with real packets.
//! - Case 2: a second endpoint naming another's interface (under a key that
//!   sorts first) must not open what the owner's profile denies: the
//!   interface drops all, its route stays, the conflict is counted, and
//!   deleting the key restores the owner's policy live.
//! - Case 3: a special-purpose address invalidates an endpoint; a remote
//!   endpoint's address outside every IP pool gets no route, and pool
//!   addresses are routed as pools come and go.

use margay_tests::both_backends;
use margay_tests::sandbox::{
    allow, allow_all_rules, deny, wait_for, Cluster, Dataplane, CONVERGE_TIMEOUT,
};
use serde_json::json;

both_backends!(
    hijacked_interface_fails_closed,
    special_and_out_of_pool_addresses_get_no_route,
);

const HIJACKER: &str = "/calico/v1/host/h1/workload/aaa/x/endpoint/x";

fn conflicts(c: &Cluster) -> f64 {
    c.metric_sum("h1", "margay_endpoint_conflicts")
}

/// The issue's scenario: w2's profile `db` denies w1; the hijacker names
/// caliw2 with `allowall` and w2's own address.
fn hijacked_interface_fails_closed(dp: Dataplane) {
    let mut c = Cluster::builder().hosts(1).dataplane(dp).build();
    c.put_profile_rules("allowall", &allow_all_rules());
    c.add_workload("w1", "h1", "10.65.1.1");
    c.add_workload("w2", "h1", "10.65.1.2");
    c.add_workload("w3", "h1", "10.65.1.3");
    c.put_profile_rules(
        "db",
        &json!({"inbound_rules": [{"action": "deny", "src_net": "10.65.1.1/32"}, {"action": "allow"}],
                "outbound_rules": [{"action": "allow"}]}),
    );
    c.put_endpoint("w1", &["allowall"], &json!({}));
    c.put_endpoint("w2", &["db"], &json!({}));
    c.put_endpoint("w3", &["allowall"], &json!({}));
    c.assert_matrix(&[
        deny("w1", "w2", 80),
        allow("w3", "w2", 80),
        allow("w2", "w1", 80),
    ]);
    let route = c.route("h1", c.workload("w2").ip());
    assert!(route.contains("dev caliw2"), "route: {route}");
    assert_eq!(conflicts(&c), 0.0);

    c.put_json(
        HIJACKER,
        &json!({"state": "active", "name": "caliw2", "profile_ids": ["allowall"],
                "ipv4_nets": ["10.65.1.2/32"]}),
    );
    // Once db is no longer in force on caliw2 its chain goes (old and new code alike).
    wait_for("profile db to leave the firewall", CONVERGE_TIMEOUT, || {
        !c.firewall_dump("h1").contains("margay-pi-db")
    });
    c.assert_matrix(&[
        deny("w1", "w2", 80),
        deny("w3", "w2", 80),
        deny("w2", "w1", 80),
    ]);
    assert!(
        !c.can_ping("w1", "w2"),
        "ping w1 -> w2 through a hijacked interface"
    );
    let route = c.route("h1", c.workload("w2").ip());
    assert!(route.contains("dev caliw2"), "route changed: {route}");
    wait_for("the conflict to be counted", CONVERGE_TIMEOUT, || {
        conflicts(&c) == 1.0
    });
    let log = c.agent_log("h1");
    assert!(
        log.lines().any(|l| l.contains("endpoint conflict")
            && l.contains("host/h1/workload/aaa/x/endpoint/x")
            && l.contains("host/h1/workload/cni/w2/endpoint/w2")),
        "no conflict line naming both keys:\n{log}"
    );

    c.delete(HIJACKER);
    c.assert_matrix(&[
        deny("w1", "w2", 80),
        allow("w3", "w2", 80),
        allow("w2", "w1", 80),
    ]);
    wait_for("the conflict to clear", CONVERGE_TIMEOUT, || {
        conflicts(&c) == 0.0
    });
}

/// A local endpoint listing a multicast address is invalid as a whole; a
/// remote endpoint (host h2, bird_ip on the fabric) is routed only for its
/// pool addresses, live as the pool comes and goes.
fn special_and_out_of_pool_addresses_get_no_route(dp: Dataplane) {
    let mut c = Cluster::builder().hosts(1).dataplane(dp).build();
    c.put("/calico/v1/host/h2/bird_ip", "192.0.2.12");
    c.put_pool("10.65.0.0/16", false);
    c.put_profile_rules("allowall", &allow_all_rules());
    c.add_workload("sp", "h1", "10.65.1.7");
    c.add_workload("w1", "h1", "10.65.1.1");
    let mut special = c.endpoint_doc("sp", &["allowall"], &json!({}));
    special["ipv4_nets"] = json!(["10.65.1.7/32", "224.0.0.1/32"]);
    c.put_json(&c.endpoint_key("sp"), &special);
    c.put_json(
        "/calico/v1/host/h2/workload/cni/r/endpoint/r",
        &json!({"state": "active", "name": "calir", "profile_ids": ["allowall"],
                "ipv4_nets": ["198.19.0.2/32", "10.65.2.9/32"]}),
    );
    c.put_endpoint("w1", &["allowall"], &json!({}));
    // Written last: once it is routed, the agent has seen everything above.
    wait_for(
        "routes to w1 and the remote pool address",
        CONVERGE_TIMEOUT,
        || {
            c.has_route_to("h1", "w1")
                && c.route("h1", "10.65.2.9".parse().expect("ip"))
                    .contains("via 192.0.2.12")
        },
    );
    let outside = c.route("h1", "198.19.0.2".parse().expect("ip"));
    assert!(outside.is_empty(), "route outside every pool: {outside}");
    let sp = c.route("h1", c.workload("sp").ip());
    assert!(
        sp.is_empty(),
        "endpoint with a multicast address routed: {sp}"
    );
    assert!(
        c.metric_sum("h1", "margay_invalid_objects") >= 1.0,
        "invalid endpoint not counted:\n{}",
        c.metrics("h1")
    );
    c.assert_matrix(&[deny("w1", "sp", 80)]);

    // Pools bound remote routes live.
    c.delete("/calico/v1/ipam/v4/pool/10.65.0.0-16");
    wait_for(
        "the remote route to go with the pool",
        CONVERGE_TIMEOUT,
        || c.route("h1", "10.65.2.9".parse().expect("ip")).is_empty(),
    );
    assert!(c.has_route_to("h1", "w1"), "local routes need no pool");
    c.put_pool("198.19.0.0/16", false);
    wait_for("a route once a pool covers it", CONVERGE_TIMEOUT, || {
        c.route("h1", "198.19.0.2".parse().expect("ip"))
            .contains("via 192.0.2.12")
    });
    // The fix of the invalid endpoint applies live.
    c.put_endpoint("sp", &["allowall"], &json!({}));
    c.assert_matrix(&[allow("w1", "sp", 80)]);
}
