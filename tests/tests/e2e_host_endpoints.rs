//! Host endpoints and failsafe ports end to end (issue 13): the real agent in
//! a host namespace, real etcd, real TCP handshakes, on both backends.
//!
//! The "machine on the fabric" is the outside namespace (`192.0.2.1`, the
//! hosts' router). Each host reaches etcd (`192.0.2.2:2379`) over its uplink
//! `eth0`, the interface the host endpoints below protect, so failsafe and
//! own-endpoint rules carry the agent's real etcd traffic. A probe counts as
//! blocked only when the handshake goes unanswered (margay drops); a
//! refused one fails the test (no listener: a test bug).
//!
//! - a profile allowing tcp 80 on `eth0`: 80 reachable, 8080 not; the host's
//!   own connections out get their replies;
//! - deny-all on `eth0`: tcp 22 still reaches the host (failsafe), loopback
//!   is untouched (also by host endpoints naming `lo` or `127.0.0.1`), and
//!   the agent reconnects to a restarted etcd through the endpoint (no
//!   failsafe covers 2379 outbound: only the own-endpoint rule) and applies
//!   later changes;
//! - failsafe lists changed in etcd, both forms, applied live;
//! - binding by expected address; the address moved to another interface:
//!   the firewall follows within [`REBIND_BUDGET`], traffic shows it, and
//!   a restarted agent binds it from its first apply;
//! - a deleted host endpoint leaves the firewall as it was before;
//! - a tier's policy selecting host endpoints by label (bare-metal docs);
//! - workload to host with `RETURN`: the inbound policy of the interface
//!   owning the destination address, and no failsafe for workloads;
//! - invalid host endpoints rejected, logged, counted, alone;
//! - status `up`/`down` with `EndpointReportingEnabled`;
//! - workload traffic forwarded between hosts crosses deny-all host
//!   endpoints untouched;
//! - IPv6: binding by an expected IPv6 address alone, neighbour discovery
//!   through an endpoint that allows nothing else of ICMPv6.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use margay_tests::both_backends;
use margay_tests::sandbox::{
    allow, allow_all_rules, eventually, fixture, line_changes, reach, wait_for, Cluster, Dataplane,
    Origin, CONVERGE_TIMEOUT, FABRIC_IFACE, OUTSIDE_IP, OUTSIDE_PORT, PREFIX, SIDE_IFACE,
    SIDE_PEER_IP,
};
use serde_json::{json, Value};

both_backends!(
    profile_on_the_fabric_interface_allows_only_its_port,
    deny_all_keeps_failsafe_ports_and_the_agents_etcd,
    failsafe_lists_change_live,
    binding_by_address_follows_the_address,
    deleted_host_endpoint_leaves_nothing_behind,
    tiered_policy_selects_host_endpoints_by_label,
    workload_to_host_with_return_meets_the_host_endpoint,
    invalid_host_endpoints_are_rejected_alone,
    host_endpoint_status_is_reported,
    forwarded_workload_traffic_ignores_host_endpoints,
    ipv6_expected_address_and_neighbour_discovery,
);

/// Ports the host serves on its fabric address: ssh (failsafe by default),
/// a web port and one no policy below allows.
const HOST_PORTS: [u16; 3] = [22, 80, 8080];
/// How long the firewall may take to move a binding after its address
/// moved to another interface (the issue: within a second, from netlink
/// events, no polling).
const REBIND_BUDGET: Duration = Duration::from_secs(1);
/// How long the traffic may take to show it (probe rounds of a dropped
/// handshake take half a second each).
const FOLLOW_BUDGET: Duration = Duration::from_secs(3);
/// An address outside every pool that moves between the host's interfaces.
const MOVING_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// Inbound tcp 80, outbound everything.
const WEB: &str = "WEB";

/// One host whose agent starts with the global `settings` already in etcd,
/// serving [`HOST_PORTS`] on its fabric address.
fn one_host(dp: Dataplane, settings: &[(&str, &str)]) -> Cluster {
    let mut c = Cluster::builder()
        .hosts(1)
        .dataplane(dp)
        .start_agents(false)
        .build();
    for (name, value) in settings {
        c.put(&format!("{PREFIX}/config/{name}"), value);
    }
    for port in HOST_PORTS {
        c.listen_on_host("h1", port);
    }
    c.put_profile_rules(WEB, &inbound_tcp(&[80], true));
    c.start_agent("h1");
    c
}

fn h1(c: &Cluster, port: u16) -> SocketAddr {
    SocketAddr::from((c.host("h1").ip(), port))
}

fn moving(port: u16) -> SocketAddr {
    SocketAddr::from((MOVING_IP, port))
}

/// The outside server, for connections the host opens.
fn outside_server() -> SocketAddr {
    SocketAddr::from((OUTSIDE_IP, OUTSIDE_PORT))
}

fn from_h1() -> Origin {
    Origin::Host("h1".to_owned())
}

fn from_outside() -> Origin {
    Origin::Outside
}

/// Profile rules allowing inbound tcp to `ports`, and all outbound traffic
/// when `outbound` (else none).
fn inbound_tcp(ports: &[u16], outbound: bool) -> Value {
    let outbound_rules = if outbound {
        json!([{"action": "allow"}])
    } else {
        json!([])
    };
    json!({
        "inbound_rules": [{"action": "allow", "protocol": "tcp", "dst_ports": ports}],
        "outbound_rules": outbound_rules,
    })
}

/// A host endpoint on interface `iface`.
fn by_name(iface: &str, profiles: &[&str], labels: &Value) -> Value {
    json!({"name": iface, "profile_ids": profiles, "labels": labels})
}

/// A host endpoint without a name, expecting `addr`.
fn by_address(addr: Ipv4Addr, profiles: &[&str]) -> Value {
    json!({"expected_ipv4_addrs": [addr.to_string()], "profile_ids": profiles})
}

fn doc(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("fixture is not JSON: {e}"))
}

fn wait_connected(c: &Cluster, connected: bool) {
    let want = if connected { 1.0 } else { 0.0 };
    wait_for(
        &format!("margay_datastore_connected == {want}"),
        CONVERGE_TIMEOUT,
        || c.metric("h1", "margay_datastore_connected") == Some(want),
    );
}

/// A profile allowing tcp 80 in and everything out on the fabric interface.
fn profile_on_the_fabric_interface_allows_only_its_port(dp: Dataplane) {
    let c = one_host(dp, &[]);
    // Baseline: no host endpoint, nothing filtered.
    c.assert_reach(&[reach(from_outside(), h1(&c, 8080), true)]);

    c.put_host_endpoint("h1", "fabric", &by_name(FABRIC_IFACE, &[WEB], &json!({})));
    c.assert_reach(&[
        reach(from_outside(), h1(&c, 80), true),
        reach(from_outside(), h1(&c, 8080), false),
        // The replies come from port 8080, which no inbound rule allows:
        // only the established-connection rule lets them in.
        reach(from_h1(), outside_server(), true),
    ]);
    assert!(
        c.outside_peers().contains(&c.host("h1").ip().into()),
        "the outside server never saw h1"
    );
}

/// Deny-all on the interface etcd is reached through, with no outbound
/// failsafe covering etcd's port: only the own-endpoint rule lets the agent
/// reconnect after etcd restarts.
fn deny_all_keeps_failsafe_ports_and_the_agents_etcd(dp: Dataplane) {
    let mut c = one_host(dp, &[("FailsafeOutboundHostPorts", "udp:53")]);
    let pid = c.agent_pid("h1");
    // No profile: fails closed both ways. Loopback is never bound, neither
    // by name nor by address (written first, so in force with the last).
    c.put_host_endpoint("h1", "loop", &by_name("lo", &[], &json!({})));
    c.put_host_endpoint("h1", "loopaddr", &by_address(Ipv4Addr::LOCALHOST, &[]));
    c.put_host_endpoint("h1", "fabric", &by_name(FABRIC_IFACE, &[], &json!({})));
    c.assert_reach(&[
        reach(from_outside(), h1(&c, 22), true),
        reach(from_outside(), h1(&c, 80), false),
        reach(from_outside(), h1(&c, 8080), false),
        reach(from_h1(), outside_server(), false),
    ]);
    assert!(c.agent_ready("h1"), "loopback (/readyz) is filtered");
    let dump = c.firewall_dump("h1");
    assert!(!dump.contains("margay-hi-lo"), "loopback bound:\n{dump}");

    // The connection the agent already had carries a change.
    c.put_profile_rules("INONLY", &inbound_tcp(&[80], false));
    c.put_host_endpoint(
        "h1",
        "fabric",
        &by_name(FABRIC_IFACE, &["INONLY"], &json!({})),
    );
    c.assert_reach(&[reach(from_outside(), h1(&c, 80), true)]);

    // A new connection: etcd goes away and comes back.
    c.stop_etcd();
    wait_connected(&c, false);
    c.start_etcd();
    c.put_profile_rules("INONLY", &inbound_tcp(&[80, 8080], false));
    c.assert_reach(&[
        reach(from_outside(), h1(&c, 8080), true),
        // Outbound is still denied: the reconnect went through no hole.
        reach(from_h1(), outside_server(), false),
    ]);
    wait_connected(&c, true);
    assert_eq!(c.agent_pid("h1"), pid, "the agent restarted");
    assert!(c.agent_running("h1"), "the agent exited");
}

/// Both failsafe lists, both forms, changed under the running agent.
fn failsafe_lists_change_live(dp: Dataplane) {
    let mut c = one_host(dp, &[]);
    let pid = c.agent_pid("h1");
    c.put_host_endpoint("h1", "fabric", &by_name(FABRIC_IFACE, &[], &json!({})));
    let closed = [
        reach(from_outside(), h1(&c, 22), true),
        reach(from_outside(), h1(&c, 8080), false),
        reach(from_h1(), outside_server(), false),
    ];
    c.assert_reach(&closed);

    let inbound = format!("{PREFIX}/config/FailsafeInboundHostPorts");
    let outbound = format!("{PREFIX}/config/FailsafeOutboundHostPorts");
    c.put(&inbound, "tcp:22,tcp:8080");
    c.assert_reach(&[
        reach(from_outside(), h1(&c, 8080), true),
        reach(from_outside(), h1(&c, 22), true),
    ]);
    // The Felix 1.4 form (bare ports are tcp).
    c.put(&inbound, "22");
    c.assert_reach(&[
        reach(from_outside(), h1(&c, 8080), false),
        reach(from_outside(), h1(&c, 22), true),
    ]);
    c.put(&inbound, "80, 8080");
    c.assert_reach(&[
        reach(from_outside(), h1(&c, 8080), true),
        reach(from_outside(), h1(&c, 22), false),
    ]);
    c.put(&outbound, "tcp:8080");
    c.assert_reach(&[reach(from_h1(), outside_server(), true)]);

    // Back to the defaults.
    c.delete(&inbound);
    c.delete(&outbound);
    c.assert_reach(&closed);
    assert_eq!(c.agent_pid("h1"), pid, "the agent restarted");
    assert!(c.agent_running("h1"), "the agent exited");
}

/// A host endpoint with only an expected address binds to the interface
/// carrying it, and follows the address to another interface.
fn binding_by_address_follows_the_address(dp: Dataplane) {
    let mut c = one_host(dp, &[]);
    c.add_side_link("h1");
    c.place_host_address("h1", MOVING_IP, FABRIC_IFACE);
    for port in [80, 8080] {
        c.listen_on_host_addr("h1", moving(port));
    }
    c.assert_reach(&[reach(from_outside(), moving(8080), true)]);

    c.put_host_endpoint("h1", "byaddr", &by_address(MOVING_IP, &[WEB]));
    c.assert_reach(&[
        reach(from_outside(), moving(80), true),
        reach(from_outside(), moving(8080), false),
        // The whole interface is bound, not just the address.
        reach(from_outside(), h1(&c, 8080), false),
    ]);

    let moved = Instant::now();
    c.place_host_address("h1", MOVING_IP, SIDE_IFACE);
    wait_for("the binding to move to eth1", REBIND_BUDGET, || {
        let dump = c.firewall_dump("h1");
        dump.contains("margay-hi-eth1") && !dump.contains("margay-hi-eth0")
    });
    let rebound = moved.elapsed();
    let followed = [
        reach(from_outside(), moving(80), true),
        reach(from_outside(), moving(8080), false),
        reach(from_outside(), h1(&c, 8080), true),
    ];
    let mut wrong = Vec::new();
    let ok = c.reach_within(&followed, FOLLOW_BUDGET, &mut wrong);
    let took = moved.elapsed();
    assert!(
        ok,
        "the policy did not follow the address to {SIDE_IFACE} in {FOLLOW_BUDGET:?}:\n{}\n{}",
        c.describe_reach(&wrong),
        c.host_firewall_dump()
    );
    eprintln!("binding moved in {rebound:?}; traffic followed (probes) in {took:?}");
    assert!(
        c.peers("host-h1").contains(&SIDE_PEER_IP.into()),
        "no connection came over the side link"
    );

    // A restarted agent binds by address from its first apply on: right
    // after it is ready the port is closed, and stays so (a dropped probe
    // cannot be a false alarm under load; the allowed facts may converge).
    assert_eq!(
        c.stop_agent("h1"),
        Some(0),
        "the agent did not stop cleanly"
    );
    c.start_agent("h1");
    for _ in 0..3 {
        assert!(
            !c.can_reach(&from_outside(), moving(8080)),
            "right after a restart the address is unbound:\n{}",
            c.host_firewall_dump()
        );
    }
    c.assert_reach(&followed);

    // And back.
    c.place_host_address("h1", MOVING_IP, FABRIC_IFACE);
    c.assert_reach(&[
        reach(from_outside(), moving(8080), false),
        reach(from_outside(), h1(&c, 8080), false),
        reach(from_outside(), moving(80), true),
    ]);
}

/// Deleting the last host endpoint gives back the firewall there was before.
fn deleted_host_endpoint_leaves_nothing_behind(dp: Dataplane) {
    let c = one_host(dp, &[]);
    c.assert_reach(&[reach(from_outside(), h1(&c, 8080), true)]);
    let before = c.firewall_dump_without_counters("h1");

    c.put_host_endpoint("h1", "fabric", &by_name(FABRIC_IFACE, &[], &json!({})));
    c.assert_reach(&[
        reach(from_outside(), h1(&c, 8080), false),
        reach(from_h1(), outside_server(), false),
    ]);
    let with = c.firewall_dump_without_counters("h1");
    assert!(with.contains("margay-hi-eth0"), "no host chain:\n{with}");

    c.delete_host_endpoint("h1", "fabric");
    c.assert_reach(&[
        reach(from_outside(), h1(&c, 8080), true),
        reach(from_h1(), outside_server(), true),
    ]);
    let mut after = String::new();
    let same = eventually(CONVERGE_TIMEOUT, || {
        after = c.firewall_dump_without_counters("h1");
        after == before
    });
    assert!(
        same,
        "the firewall differs from before the host endpoint (- only before, + only after):\n{}\n--- after:\n{after}",
        line_changes(&before, &after)
    );
    for leftover in [
        "margay-hi-",
        "margay-ho-",
        "margay-hin-",
        "margay-hout-",
        "margay-fsafe",
        "margay-hep-dst",
    ] {
        assert!(!after.contains(leftover), "{leftover} left:\n{after}");
    }
}

/// The bare-metal docs' tier and webserver policy select the host endpoint
/// by its label; relabelled, the profile decides again.
fn tiered_policy_selects_host_endpoints_by_label(dp: Dataplane) {
    let c = one_host(dp, &[]);
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.put_json(
        &format!("{PREFIX}/policy/tier/my-tier/metadata"),
        &doc(&fixture("baremetal-doc-tier-my-tier-metadata.json")),
    );
    c.put_policy(
        "my-tier",
        "webserver",
        &doc(&fixture("baremetal-doc-policy-webserver.json")),
    );
    let webserver = json!({"role": "webserver"});
    c.put_host_endpoint(
        "h1",
        "fabric",
        &by_name(FABRIC_IFACE, &["OPEN"], &webserver),
    );
    let selected = [
        reach(from_outside(), h1(&c, 80), true),
        reach(from_outside(), h1(&c, 8080), false),
        reach(from_h1(), outside_server(), true),
    ];
    c.assert_reach(&selected);

    let other = json!({"role": "database"});
    c.put_host_endpoint("h1", "fabric", &by_name(FABRIC_IFACE, &["OPEN"], &other));
    c.assert_reach(&[
        reach(from_outside(), h1(&c, 8080), true),
        reach(from_outside(), h1(&c, 80), true),
    ]);
    c.put_host_endpoint(
        "h1",
        "fabric",
        &by_name(FABRIC_IFACE, &["OPEN"], &webserver),
    );
    c.assert_reach(&selected);
}

/// `DefaultEndpointToHostAction = RETURN`: a workload's traffic to one of
/// the host's addresses meets the inbound policy of the host endpoint on
/// the interface owning that address, without the failsafe ports.
fn workload_to_host_with_return_meets_the_host_endpoint(dp: Dataplane) {
    let mut c = one_host(dp, &[("DefaultEndpointToHostAction", "RETURN")]);
    c.add_side_link("h1");
    c.place_host_address("h1", MOVING_IP, SIDE_IFACE);
    for port in [80, 8080] {
        c.listen_on_host_addr("h1", moving(port));
    }
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.add_workload("a", "h1", "10.65.3.2");
    c.put_endpoint("a", &["OPEN"], &json!({}));
    let a = || Origin::Workload("a".to_owned());
    // Without host endpoints RETURN hands over to the host's (empty) rules.
    c.assert_reach(&[reach(a(), h1(&c, 8080), true), reach(a(), moving(80), true)]);

    c.put_profile_rules("ALT", &inbound_tcp(&[8080], true));
    c.put_host_endpoint("h1", "fabric", &by_name(FABRIC_IFACE, &[WEB], &json!({})));
    c.put_host_endpoint("h1", "side", &by_name(SIDE_IFACE, &["ALT"], &json!({})));
    c.assert_reach(&[
        reach(a(), h1(&c, 80), true),
        reach(a(), h1(&c, 8080), false),
        reach(a(), moving(8080), true),
        reach(a(), moving(80), false),
        // Failsafe ports are for the outside, not for workloads.
        reach(a(), h1(&c, 22), false),
        reach(from_outside(), h1(&c, 22), true),
    ]);
}

/// Invalid host endpoints (the docs' rejected one, and Felix's test one
/// with a short-form address) are ignored, logged and counted; the valid
/// one beside them works; an invalid document over a valid key removes it.
fn invalid_host_endpoints_are_rejected_alone(dp: Dataplane) {
    let c = one_host(dp, &[]);
    let rejected = fixture("baremetal-doc-host-endpoint-REJECTED.json");
    c.put(&c.host_endpoint_key("h1", "rejected"), &rejected);
    c.put(
        &c.host_endpoint_key("h1", "shortform"),
        &fixture("felix-test-host-endpoint-expected-ips-input.json"),
    );
    c.put_host_endpoint("h1", "fabric", &by_name(FABRIC_IFACE, &[WEB], &json!({})));
    let valid_applies = [
        reach(from_outside(), h1(&c, 80), true),
        reach(from_outside(), h1(&c, 8080), false),
    ];
    c.assert_reach(&valid_applies);

    let series = "margay_invalid_updates_total{kind=\"host_endpoint\"}";
    wait_for(&format!("{series} >= 2"), CONVERGE_TIMEOUT, || {
        c.metric("h1", series).is_some_and(|n| n >= 2.0)
    });
    let log = c.agent_log("h1");
    for id in ["rejected", "shortform"] {
        let key = c.host_endpoint_key("h1", id);
        assert!(
            log.lines()
                .any(|l| l.contains("invalid datastore key ignored") && l.contains(&key)),
            "no log line for {key}:\n{}",
            c.agent_log_tail("h1", 30)
        );
    }

    // An invalid document over the valid key: treated as absent.
    c.put(&c.host_endpoint_key("h1", "fabric"), &rejected);
    c.assert_reach(&[reach(from_outside(), h1(&c, 8080), true)]);
    c.put_host_endpoint("h1", "fabric", &by_name(FABRIC_IFACE, &[WEB], &json!({})));
    c.assert_reach(&valid_applies);
}

/// The status document of host endpoint `id`, or `None` when absent.
fn status(c: &Cluster, id: &str) -> Option<String> {
    let text = c.host_endpoint_status("h1", id)?;
    let value: Value = serde_json::from_str(&text).ok()?;
    value.get("status")?.as_str().map(str::to_owned)
}

fn wait_status(c: &Cluster, id: &str, want: Option<&str>) {
    let mut seen = None;
    let ok = eventually(CONVERGE_TIMEOUT, || {
        seen = status(c, id);
        seen.as_deref() == want
    });
    assert!(ok, "status of {id}: {seen:?}, expected {want:?}");
}

/// With `EndpointReportingEnabled`: `up` while bound to an interface,
/// `down` while not, gone with the host endpoint.
fn host_endpoint_status_is_reported(dp: Dataplane) {
    let c = one_host(dp, &[("EndpointReportingEnabled", "true")]);
    c.add_side_link("h1");
    c.put_host_endpoint("h1", "fabric", &by_name(FABRIC_IFACE, &[WEB], &json!({})));
    c.put_host_endpoint("h1", "spare", &by_address(MOVING_IP, &[WEB]));
    wait_status(&c, "fabric", Some("up"));
    wait_status(&c, "spare", Some("down"));

    c.place_host_address("h1", MOVING_IP, SIDE_IFACE);
    wait_status(&c, "spare", Some("up"));
    c.delete_host_endpoint("h1", "fabric");
    wait_status(&c, "fabric", None);
    wait_status(&c, "spare", Some("up"));
}

/// Deny-all host endpoints on both hosts' fabric interfaces: workload
/// traffic forwarded between the hosts through them is not theirs to
/// judge, traffic to a host itself (also from a remote workload) is.
fn forwarded_workload_traffic_ignores_host_endpoints(dp: Dataplane) {
    let mut c = Cluster::builder().hosts(2).dataplane(dp).build();
    // Routes to other hosts' workloads are for pool addresses only.
    c.put_pool("10.65.0.0/16", false);
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.add_workload("a", "h1", "10.65.4.2");
    c.add_workload("b", "h2", "10.65.5.2");
    c.put_endpoint("a", &["OPEN"], &json!({}));
    c.put_endpoint("b", &["OPEN"], &json!({}));
    let across = [
        allow("a", "b", 80),
        allow("b", "a", 443),
        allow("a", "b", 5432),
    ];
    c.assert_matrix(&across);

    let h2 = SocketAddr::from((c.host("h2").ip(), 8080));
    for host in ["h1", "h2"] {
        c.listen_on_host(host, 8080);
        c.put_host_endpoint(host, "fabric", &by_name(FABRIC_IFACE, &[], &json!({})));
    }
    c.assert_reach(&[
        reach(from_outside(), h1(&c, 8080), false),
        reach(from_outside(), h2, false),
        reach(Origin::Workload("a".to_owned()), h2, false),
    ]);
    c.assert_matrix(&across);
}

/// IPv6 on the fabric: a host endpoint bound by its expected IPv6 address
/// alone, allowing tcp 80 in and nothing out. With the neighbour caches
/// flushed, port 80 still answers over IPv6 (neighbour solicitations and
/// advertisements cross the endpoint both ways) while 8080 is dropped, on
/// both families: the whole interface is bound.
fn ipv6_expected_address_and_neighbour_discovery(dp: Dataplane) {
    let c = one_host(dp, &[]);
    let v6 = c.add_fabric_v6("h1");
    let at = |port| SocketAddr::from((v6, port));
    for port in [80, 8080] {
        c.listen_on_host_addr("h1", at(port));
    }
    c.assert_reach(&[reach(from_outside(), at(8080), true)]);

    c.put_profile_rules("INONLY", &inbound_tcp(&[80], false));
    let endpoint = json!({"expected_ipv6_addrs": [v6.to_string()], "profile_ids": ["INONLY"]});
    c.put_host_endpoint("h1", "v6", &endpoint);
    c.assert_reach(&[
        reach(from_outside(), at(8080), false),
        reach(from_outside(), h1(&c, 8080), false),
    ]);
    for ns in [c.outside(), c.host("h1").ns()] {
        ns.exec_ok(&["ip", "-6", "neigh", "flush", "all"]);
    }
    c.assert_reach(&[reach(from_outside(), at(80), true)]);
    let neighbours = c
        .outside()
        .exec_ok(&["ip", "-6", "neigh", "show", &v6.to_string()]);
    assert!(
        neighbours.contains("lladdr"),
        "the outside has no neighbour entry for {v6}: {neighbours}"
    );
}
