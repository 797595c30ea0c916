//! End-to-end, two hosts on one fabric: cross-host traffic over routes margay
//! programs via the other host's `bird_ip` (for pool addresses only, so each
//! scenario writes the pool its workloads use), policy enforced at both ends,
//! NAT-outgoing to a server outside the pools, a workload moving between
//! hosts, and a host going away.

use std::net::{IpAddr, Ipv4Addr};

use margay_tests::both_backends;
use margay_tests::sandbox::{
    allow, allow_all_rules, deny, fixture, wait_for, Cluster, Dataplane, CONVERGE_TIMEOUT,
};
use serde_json::{json, Value};

both_backends!(
    cross_host_traffic_and_policy,
    nat_outgoing,
    workload_moves_between_hosts,
    host_goes_away
);

fn two_hosts(dp: Dataplane) -> Cluster {
    Cluster::builder().hosts(2).dataplane(dp).build()
}

fn doc(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("fixture is not JSON: {e}"))
}

fn ip(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().unwrap_or_else(|e| panic!("{s}: {e}")))
}

/// Routes to the other host's endpoints via its fabric address; a tag and
/// the real calico-containers "WEB" profile enforced across hosts; ping;
/// no address translation between pool addresses.
fn cross_host_traffic_and_policy(dp: Dataplane) {
    let mut c = two_hosts(dp);
    c.put_pool("10.65.0.0/16", true);
    c.put_profile_rules(
        "WEB",
        &doc(&fixture("calico-containers-doc-web_rules.json")),
    );
    c.put_profile_rules("CLIENT", &json!({"outbound_rules": [{"action": "allow"}]}));
    c.put_profile_tags("CLIENT", &["CL"]);
    c.put_profile_rules(
        "DB",
        &json!({"inbound_rules": [{"protocol": "tcp", "dst_ports": [5432], "src_tag": "CL"}],
                "outbound_rules": [{"action": "allow"}]}),
    );
    c.add_workload("a", "h1", "10.65.1.2");
    c.add_workload("b", "h2", "10.65.2.2");
    c.add_workload("d", "h2", "10.65.2.3");
    c.put_endpoint("a", &["CLIENT"], &json!({}));
    c.put_endpoint("b", &["WEB"], &json!({}));
    c.put_endpoint("d", &["DB"], &json!({}));

    wait_for("routes on both hosts", CONVERGE_TIMEOUT, || {
        ["h1", "h2"]
            .iter()
            .all(|h| ["a", "b", "d"].iter().all(|w| c.has_route_to(h, w)))
    });
    let remote = c.route("h1", c.workload("b").ip());
    assert!(remote.contains("via 192.0.2.12"), "h1 -> b: {remote}");

    c.assert_matrix(&[
        allow("a", "b", 80),
        allow("a", "b", 443),
        deny("a", "b", 5432),
        allow("a", "d", 5432),
        deny("b", "d", 5432),
        deny("b", "a", 80),
        deny("d", "a", 80),
    ]);
    assert!(c.can_ping("a", "b"), "WEB allows icmp echo");
    assert!(!c.can_ping("a", "d"), "DB allows no icmp");
    assert!(
        c.peers("b").contains(&ip("10.65.1.2")),
        "b saw {:?}, not a's own address",
        c.peers("b")
    );
}

/// A masquerading pool lets workloads reach a server outside every pool,
/// which sees the host's address; without masquerade (or without the pool)
/// the server's answers have no way back.
fn nat_outgoing(dp: Dataplane) {
    let mut c = two_hosts(dp);
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.add_workload("a", "h1", "10.65.1.2");
    c.add_workload("b", "h2", "10.65.2.2");
    c.put_endpoint("a", &["OPEN"], &json!({}));
    c.put_endpoint("b", &["OPEN"], &json!({}));
    c.put_json(
        "/calico/v1/ipam/v4/pool/10.65.0.0-16",
        &json!({"cidr": "10.65.0.0/16", "masquerade": true, "ipip": "tunl0", "ipam": true}),
    );
    c.assert_matrix(&[
        allow("a", "outside", 0),
        allow("b", "outside", 0),
        allow("a", "b", 80),
    ]);
    let seen = c.outside_peers();
    assert!(seen.contains(&ip("192.0.2.11")), "outside saw {seen:?}");
    assert!(seen.contains(&ip("192.0.2.12")), "outside saw {seen:?}");
    assert!(
        !seen.iter().any(|a| a.to_string().starts_with("10.65.")),
        "pool address leaked: {seen:?}"
    );
    // Inside the pools nothing is translated.
    assert!(
        c.peers("b").contains(&ip("10.65.1.2")),
        "b saw {:?}",
        c.peers("b")
    );

    c.put_pool("10.65.0.0/16", false);
    c.assert_matrix(&[deny("a", "outside", 0), allow("a", "b", 80)]);
    c.delete("/calico/v1/ipam/v4/pool/10.65.0.0-16");
    c.assert_matrix(&[deny("b", "outside", 0)]);
    c.put_pool("10.65.0.0/16", true);
    c.assert_matrix(&[allow("a", "outside", 0), allow("b", "outside", 0)]);
}

/// A workload leaves h1 and comes back on h2 with the same address (what
/// a live migration or a reschedule does): both hosts re-route, clients
/// on both hosts reach it at its new place.
fn workload_moves_between_hosts(dp: Dataplane) {
    let mut c = two_hosts(dp);
    c.put_pool("10.65.0.0/16", false);
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.add_workload("m", "h1", "10.65.1.5");
    c.add_workload("x", "h1", "10.65.1.6");
    c.add_workload("y", "h2", "10.65.2.6");
    for w in ["m", "x", "y"] {
        c.put_endpoint(w, &["OPEN"], &json!({}));
    }
    c.assert_matrix(&[
        allow("x", "m", 80),
        allow("y", "m", 80),
        allow("m", "y", 443),
    ]);

    // CNI DEL on h1, CNI ADD on h2, orchestrator writes the new endpoint.
    c.delete(&c.endpoint_key("m"));
    c.remove_workload_ns("m");
    c.add_workload("m", "h2", "10.65.1.5");
    c.put_endpoint("m", &["OPEN"], &json!({}));

    wait_for("routes to m's new place", CONVERGE_TIMEOUT, || {
        c.has_route_to("h1", "m") && c.has_route_to("h2", "m")
    });
    let r = c.route("h1", c.workload("m").ip());
    assert!(r.contains("via 192.0.2.12"), "h1 -> m: {r}");
    c.assert_matrix(&[
        allow("x", "m", 80),
        allow("y", "m", 80),
        allow("m", "x", 443),
    ]);
    assert!(c.can_ping("x", "m"), "ping x -> m after the move");
}

/// A host dies and its data is deleted: the other host drops the routes
/// and forgets its endpoints' addresses everywhere, and keeps working.
fn host_goes_away(dp: Dataplane) {
    let mut c = two_hosts(dp);
    c.put_pool("10.65.0.0/16", false);
    c.put_profile_rules(
        "P",
        &json!({"inbound_rules": [{"src_tag": "MEMBERS"}],
                "outbound_rules": [{"action": "allow"}]}),
    );
    c.put_profile_tags("P", &["MEMBERS"]);
    c.add_workload("a", "h1", "10.65.1.2");
    c.add_workload("c", "h1", "10.65.1.3");
    c.add_workload("b", "h2", "10.65.2.2");
    for w in ["a", "b", "c"] {
        c.put_endpoint(w, &["P"], &json!({}));
    }
    c.assert_matrix(&[
        allow("a", "b", 80),
        allow("b", "a", 80),
        allow("a", "c", 80),
    ]);
    assert!(
        c.firewall_dump("h1").contains("10.65.2.2"),
        "b not in h1's tag set"
    );

    c.kill_agent("h2");
    c.delete_prefix("/calico/v1/host/h2/");
    wait_for("h1 to drop the route to b", CONVERGE_TIMEOUT, || {
        c.route("h1", c.workload("b").ip()).is_empty()
    });
    wait_for("h1 to forget b's address", CONVERGE_TIMEOUT, || {
        !c.firewall_dump("h1").contains("10.65.2.2")
    });
    c.assert_matrix(&[allow("a", "c", 80), allow("c", "a", 443)]);
}
