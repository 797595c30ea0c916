//! End-to-end, routing between hosts over BGP through BIRD (issue 12): hosts
//! on two subnets behind a router that runs its own BIRD as a route reflector
//! (tests/src/sandbox/bgp.rs), every host running BIRD and margay with
//! `--inter-host-routes bgp`. Real BIRD, real kernel, real etcd.
//!
//! Waits poll with deadlines; the deadlines are the (3 s for an
//! endpoint's route) or the sandbox's convergence timeout.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use margay_tests::netns::require_root;
use margay_tests::sandbox::{
    allow, allow_all_rules, eventually, wait_for, BgpOptions, Cluster, CONVERGE_TIMEOUT, ROUTER_IP,
    ROUTER_IP_B,
};
use serde_json::json;

const RELOADS: &str = "margay_bird_config_reloads_total";
const REJECTED: &str = "margay_bird_config_rejected_total";
/// Every kind: a key that does not parse counts as `unknown`, a BGP key
/// with a bad value as `bgp`.
const INVALID: &str = "margay_invalid_updates_total";
/// The bound from an endpoint write to its route elsewhere.
const ROUTE_DEADLINE: Duration = Duration::from_secs(3);
const POOL: &str = "10.65.0.0/16";
/// The router as every host's global peer, named as margay names it.
const ROUTER_SESSION: &str = "Global_192_0_2_1";

/// A BGP cluster of `hosts` with the pool and an open profile written
/// before the agents start, each agent ready.
fn bgp_cluster(hosts: usize, options: BgpOptions) -> Cluster {
    let mut c = Cluster::builder()
        .hosts(hosts)
        .bgp(options)
        .start_agents(false)
        .build();
    c.put_pool(POOL, false);
    c.put_profile_rules("OPEN", &allow_all_rules());
    for i in 1..=hosts {
        c.start_agent(&format!("h{i}"));
    }
    c
}

fn add_open_workload(c: &mut Cluster, name: &str, host: &str, ip: &str) {
    c.add_workload(name, host, ip);
    c.put_endpoint(name, &["OPEN"], &json!({}));
}

/// Waits until every (host, workload) pair has a BIRD route, and the router
/// one to every workload named; panics with the BGP state otherwise.
fn wait_bgp_routes(c: &Cluster, pairs: &[(&str, &str)], timeout: Duration) {
    let converged = eventually(timeout, || {
        pairs
            .iter()
            .all(|(host, wl)| c.has_bgp_route_to(host, wl) && c.router_has_route_to(wl))
    });
    assert!(
        converged,
        "BGP routes {pairs:?} not there after {timeout:?}:\n{}\n{}",
        c.debug_dump(),
        c.bgp_debug_dump()
    );
}

/// Waits until `host`'s BIRD has a session established with the router.
fn wait_router_session(c: &Cluster, host: &str) {
    wait_for(
        &format!("{host}'s session with the router"),
        CONVERGE_TIMEOUT,
        || {
            c.established_sessions(host)
                .iter()
                .any(|s| s == ROUTER_SESSION)
        },
    );
}

fn reloads(c: &Cluster, host: &str) -> f64 {
    c.metric_sum(host, RELOADS)
}

/// Two hosts on different subnets: with BIRD not running yet, margay
/// programs no route to the other host's workload and nothing gets
/// through; once the BIRDs run and BGP has converged, traffic flows both
/// ways over `proto bird` routes via the router, and `margay status` shows
/// the sessions.
#[test]
fn cross_subnet_traffic_flows_once_bgp_has_converged() {
    if !require_root("cross_subnet_traffic_flows_once_bgp_has_converged") {
        return;
    }
    let options = BgpOptions {
        start_bird: false,
        ..BgpOptions::default()
    };
    let mut c = bgp_cluster(2, options);
    add_open_workload(&mut c, "a", "h1", "10.65.1.2");
    add_open_workload(&mut c, "b", "h2", "10.65.2.2");
    wait_for("local routes on both hosts", CONVERGE_TIMEOUT, || {
        c.has_route_to("h1", "a") && c.has_route_to("h2", "b")
    });
    assert_eq!(
        c.route("h1", c.workload("b").ip()),
        "",
        "a remote route without BGP"
    );
    assert!(!c.can_connect("a", "b", 80), "a reached b without BGP");

    c.start_bird("h1");
    c.start_bird("h2");
    wait_bgp_routes(&c, &[("h1", "b"), ("h2", "a")], CONVERGE_TIMEOUT);
    c.assert_matrix(&[allow("a", "b", 80), allow("b", "a", 443)]);
    assert!(c.can_ping("a", "b"));
    let on_h1 = c.route("h1", c.workload("b").ip());
    assert!(
        on_h1.contains(&format!("via {ROUTER_IP} ")),
        "h1 -> b: {on_h1}"
    );
    let on_h2 = c.route("h2", c.workload("a").ip());
    assert!(
        on_h2.contains(&format!("via {ROUTER_IP_B} ")),
        "h2 -> a: {on_h2}"
    );
    assert!(
        c.peers("b").contains(&IpAddr::V4(c.workload("a").ip())),
        "b saw {:?}, not a's own address",
        c.peers("b")
    );
    // The routes may have come through the router before the mesh session
    // was up.
    wait_for(
        "h1's sessions with the router and h2",
        CONVERGE_TIMEOUT,
        || {
            let sessions = c.established_sessions("h1");
            [ROUTER_SESSION, "Mesh_203_0_113_12"]
                .iter()
                .all(|name| sessions.iter().any(|s| s == name))
        },
    );
    assert_eq!(c.metric("h1", REJECTED), Some(0.0));

    let status = c.margay_status("h1");
    for (peer, kind) in [
        ("192.0.2.1 ", "global"),
        ("203.0.113.12 ", "node-to-node mesh"),
    ] {
        let row = status
            .lines()
            .find(|l| l.starts_with(peer))
            .unwrap_or_default();
        assert!(
            row.contains(kind) && row.contains(" up ") && row.trim_end().ends_with("Established"),
            "no established {kind} session with {peer}in margay status:\n{status}"
        );
    }
}

/// Node mesh off and the router as the global peer: each host has only the
/// router session, and routes still flow between subnets and within one
/// (next hop kept by the reflector). Turning the mesh on live adds the
/// host-to-host sessions.
#[test]
fn mesh_off_routes_flow_through_the_router() {
    if !require_root("mesh_off_routes_flow_through_the_router") {
        return;
    }
    let options = BgpOptions {
        node_mesh: false,
        ..BgpOptions::default()
    };
    let mut c = bgp_cluster(3, options);
    add_open_workload(&mut c, "a", "h1", "10.65.1.2");
    add_open_workload(&mut c, "b", "h2", "10.65.2.2");
    add_open_workload(&mut c, "x", "h3", "10.65.3.2");
    wait_bgp_routes(
        &c,
        &[("h1", "b"), ("h1", "x"), ("h2", "a"), ("h3", "a")],
        CONVERGE_TIMEOUT,
    );
    for host in ["h1", "h2", "h3"] {
        assert_eq!(c.established_sessions(host), [ROUTER_SESSION], "{host}");
        assert!(!c.bird_config(host).contains("Mesh_"), "{host} has a mesh");
    }
    let on_h1 = c.route("h1", c.workload("x").ip());
    assert!(on_h1.contains("via 192.0.2.13 "), "h1 -> x: {on_h1}");
    c.assert_matrix(&[
        allow("a", "b", 80),
        allow("b", "x", 80),
        allow("x", "a", 80),
    ]);

    c.set_node_mesh(true);
    wait_for("the mesh sessions on h1", CONVERGE_TIMEOUT, || {
        let sessions = c.established_sessions("h1");
        ["Mesh_203_0_113_12", "Mesh_192_0_2_13", ROUTER_SESSION]
            .iter()
            .all(|name| sessions.iter().any(|s| s == name))
    });
}

/// `InterHostRoutes` switched from `direct` to `bgp` in the datastore while
/// the agents run: margay removes the routes it programmed to the other
/// host's workload, and BIRD's take their place (one route per workload,
/// `proto bird`).
#[test]
fn switching_from_direct_to_bgp_live_hands_the_routes_to_bird() {
    if !require_root("switching_from_direct_to_bgp_live_hands_the_routes_to_bird") {
        return;
    }
    let options = BgpOptions {
        mode_on_command_line: false,
        ..BgpOptions::default()
    };
    let mut c = Cluster::builder()
        .hosts(3)
        .bgp(options)
        .start_agents(false)
        .build();
    c.put("/calico/v1/config/InterHostRoutes", "direct");
    c.put_pool(POOL, false);
    c.put_profile_rules("OPEN", &allow_all_rules());
    for host in ["h1", "h2", "h3"] {
        c.start_agent(host);
    }
    // h1 and h3 share subnet A, so direct routes work between them.
    add_open_workload(&mut c, "a", "h1", "10.65.1.2");
    add_open_workload(&mut c, "x", "h3", "10.65.3.2");
    wait_for("margay's direct routes", CONVERGE_TIMEOUT, || {
        c.has_route_to("h1", "x") && c.has_route_to("h3", "a")
    });
    let direct = c.route("h1", c.workload("x").ip());
    assert!(!direct.contains("proto bird"), "{direct}");
    c.assert_matrix(&[allow("a", "x", 80)]);

    c.put("/calico/v1/config/InterHostRoutes", "bgp");
    let only_bird = |host: &str, wl: &str| {
        let route = c.route(host, c.workload(wl).ip());
        route.lines().count() == 1 && route.contains("proto bird")
    };
    let handed_over = eventually(CONVERGE_TIMEOUT, || {
        only_bird("h1", "x") && only_bird("h3", "a")
    });
    assert!(
        handed_over,
        "not one BIRD route each after the switch:\nh1: {}\nh3: {}\n{}",
        c.route("h1", c.workload("x").ip()),
        c.route("h3", c.workload("a").ip()),
        c.bgp_debug_dump()
    );
    c.assert_matrix(&[allow("a", "x", 80), allow("x", "a", 443)]);
}

/// An endpoint deleted: its route leaves the other host's kernel and the
/// router's; written again, or a new one added: there, all within 3 s.
#[test]
fn endpoint_routes_follow_the_datastore_within_3s() {
    if !require_root("endpoint_routes_follow_the_datastore_within_3s") {
        return;
    }
    let mut c = bgp_cluster(2, BgpOptions::default());
    add_open_workload(&mut c, "a", "h1", "10.65.1.2");
    add_open_workload(&mut c, "b", "h2", "10.65.2.2");
    wait_bgp_routes(&c, &[("h1", "b"), ("h2", "a")], CONVERGE_TIMEOUT);
    let b_ip = c.workload("b").ip();

    let start = Instant::now();
    c.delete(&c.endpoint_key("b"));
    let gone = eventually(ROUTE_DEADLINE, || {
        c.route("h1", b_ip).is_empty() && c.router_route(b_ip).is_empty()
    });
    assert!(
        gone,
        "b's route still there after {ROUTE_DEADLINE:?}:\n{}",
        c.bgp_debug_dump()
    );
    eprintln!(
        "endpoint deleted -> route gone elsewhere: {:?}",
        start.elapsed()
    );

    let start = Instant::now();
    c.put_endpoint("b", &["OPEN"], &json!({}));
    wait_bgp_routes(&c, &[("h1", "b")], ROUTE_DEADLINE);
    eprintln!("endpoint written -> route elsewhere: {:?}", start.elapsed());

    c.add_workload("d", "h2", "10.65.2.3");
    let start = Instant::now();
    c.put_endpoint("d", &["OPEN"], &json!({}));
    wait_bgp_routes(&c, &[("h1", "d")], ROUTE_DEADLINE);
    eprintln!("endpoint added -> route elsewhere: {:?}", start.elapsed());
    c.assert_matrix(&[allow("a", "d", 80), allow("a", "b", 80)]);
}

/// h3's margay and BIRD killed: its workload's route leaves h1, h2 and the
/// router; both restarted: back. A ping between workloads on h1 and h2,
/// running all along, loses nothing.
#[test]
fn killed_host_is_withdrawn_and_returns_without_loss_elsewhere() {
    if !require_root("killed_host_is_withdrawn_and_returns_without_loss_elsewhere") {
        return;
    }
    let mut c = bgp_cluster(3, BgpOptions::default());
    add_open_workload(&mut c, "a", "h1", "10.65.1.2");
    add_open_workload(&mut c, "b", "h2", "10.65.2.2");
    add_open_workload(&mut c, "x", "h3", "10.65.3.2");
    let everywhere = [
        ("h1", "b"),
        ("h1", "x"),
        ("h2", "a"),
        ("h2", "x"),
        ("h3", "a"),
    ];
    wait_bgp_routes(&c, &everywhere, CONVERGE_TIMEOUT);
    let x_ip = c.workload("x").ip();

    let mut ping = c.start_ping("a", "b", Duration::from_millis(10), 1000);
    let start = Instant::now();
    c.kill_agent("h3");
    c.kill_bird("h3");
    wait_for(
        "x's route withdrawn from h1, h2, the router",
        CONVERGE_TIMEOUT,
        || {
            c.route("h1", x_ip).is_empty()
                && c.route("h2", x_ip).is_empty()
                && c.router_route(x_ip).is_empty()
        },
    );
    eprintln!("killed -> withdrawn: {:?}", start.elapsed());
    assert!(!c.can_connect("a", "x", 80));

    let start = Instant::now();
    c.start_bird("h3");
    c.start_agent("h3");
    wait_bgp_routes(&c, &everywhere, CONVERGE_TIMEOUT);
    eprintln!("restarted -> routes back: {:?}", start.elapsed());
    c.assert_matrix(&[allow("a", "x", 80), allow("x", "b", 80)]);

    assert!(
        ping.running(),
        "the ping ended before the scenario did: raise its count"
    );
    let (sent, received) = ping.finish();
    assert_eq!(
        received,
        sent,
        "lost {} of {sent} pings a -> b",
        sent - received
    );
}

/// Waits until `applied` holds and the reload counter moved, then checks
/// it moved by exactly one.
fn expect_one_reload(
    c: &Cluster,
    expected: &mut f64,
    what: &str,
    mut applied: impl FnMut() -> bool,
) {
    *expected += 1.0;
    wait_for(what, CONVERGE_TIMEOUT, || {
        applied() && c.metric("h1", RELOADS).is_some_and(|n| n >= *expected)
    });
    assert_eq!(
        reloads(c, "h1"),
        *expected,
        "{what}: not exactly one reload"
    );
}

/// A peer added, its AS changed, a host-specific peer added, a peer
/// removed: each applied live to the running BIRD with exactly one reload,
/// and the router session untouched throughout.
#[test]
fn peer_changes_apply_live_with_one_reload_each() {
    if !require_root("peer_changes_apply_live_with_one_reload_each") {
        return;
    }
    let c = bgp_cluster(1, BgpOptions::default());
    wait_router_session(&c, "h1");
    let router_since = session_line(&c, ROUTER_SESSION);
    let mut expected = reloads(&c, "h1");
    let protocols = || c.birdc("h1", &["show", "protocols"]);

    c.put_global_peer("192.0.2.250", "64512");
    expect_one_reload(&c, &mut expected, "global peer added", || {
        protocols().contains("Global_192_0_2_250")
    });
    // The same document again: a new etcd revision, nothing to reload.
    c.put_global_peer("192.0.2.250", "64512");
    c.put_global_peer("192.0.2.250", "64513");
    expect_one_reload(&c, &mut expected, "its AS changed", || {
        c.birdc("h1", &["show", "protocols", "all", "Global_192_0_2_250"])
            .contains("64513")
    });
    c.put_bgp(
        "host/h1/peer_v4/192.0.2.251",
        &json!({"ip": "192.0.2.251", "as_num": 64514}).to_string(),
    );
    expect_one_reload(&c, &mut expected, "host peer added", || {
        protocols().contains("Node_192_0_2_251")
    });
    c.delete_bgp("global/peer_v4/192.0.2.250");
    expect_one_reload(&c, &mut expected, "global peer removed", || {
        !protocols().contains("Global_192_0_2_250")
    });

    assert_eq!(
        session_line(&c, ROUTER_SESSION),
        router_since,
        "router session restarted"
    );
    assert_eq!(c.metric("h1", REJECTED), Some(0.0));
}

/// `name`'s line of `show protocols` on h1 (state and since).
fn session_line(c: &Cluster, name: &str) -> String {
    c.birdc("h1", &["show", "protocols", name])
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_default()
        .to_owned()
}

/// A peer IP `1.2.3.4; protocol`, an AS `-1`, a 300-character hostname,
/// and a link-local IPv6 peer without an interface (which BIRD itself would
/// refuse): rejected by validation, counted, logged once, never in BIRD's
/// file; nothing reloaded for them, and BGP keeps working.
#[test]
fn hostile_bgp_values_never_reach_the_file() {
    if !require_root("hostile_bgp_values_never_reach_the_file") {
        return;
    }
    let c = bgp_cluster(1, BgpOptions::default());
    wait_router_session(&c, "h1");
    let invalid = c.metric_sum("h1", INVALID);
    let before = reloads(&c, "h1");
    let long = "h".repeat(300);

    c.put_global_peer("1.2.3.4; protocol", "64511");
    c.put_global_peer("192.0.2.77", "-1");
    c.put_bgp(&format!("host/{long}/ip_addr_v4"), "192.0.2.99");
    c.put_bgp(
        "global/peer_v6/fe80::1",
        &json!({"ip": "fe80::1", "as_num": "64511"}).to_string(),
    );
    let counted = eventually(CONVERGE_TIMEOUT, || {
        c.metric("h1", INVALID) == Some(invalid + 4.0)
    });
    let page = c.metrics("h1");
    let page: Vec<&str> = page.lines().filter(|l| l.contains("invalid")).collect();
    assert!(
        counted,
        "not 4 more invalid updates than {invalid}:\n{page:#?}"
    );
    // A valid change makes margay render again, with the hostile keys present.
    c.put_global_peer("192.0.2.250", "64512");
    wait_for("the valid peer in BIRD", CONVERGE_TIMEOUT, || {
        c.birdc("h1", &["show", "protocols"])
            .contains("Global_192_0_2_250")
    });
    assert_eq!(
        reloads(&c, "h1"),
        before + 1.0,
        "reloaded for hostile values"
    );

    let text = c.bird_config("h1");
    for bad in [
        "1.2.3.4",
        "192.0.2.77",
        "192_0_2_77",
        "-1;",
        "192.0.2.99",
        "fe80",
        &long[..40],
    ] {
        assert!(!text.contains(bad), "{bad:?} reached BIRD's file:\n{text}");
    }
    let log = c.agent_log("h1");
    for key in [
        "peer_v4/1.2.3.4; protocol",
        "peer_v4/192.0.2.77",
        "peer_v6/fe80::1",
        &long[..40],
    ] {
        let lines = log.lines().filter(|l| l.contains(key)).count();
        assert_eq!(lines, 1, "{key:?} logged {lines} times:\n{log}");
    }
    assert_eq!(c.established_sessions("h1"), [ROUTER_SESSION]);
}

/// BIRD's file broken by hand while BIRD runs: BIRD keeps its working
/// configuration (nobody reloads it), and margay's next change replaces the
/// file with a valid one and reloads once; nothing is ever refused.
#[test]
fn a_hand_broken_file_is_replaced_on_the_next_change() {
    if !require_root("a_hand_broken_file_is_replaced_on_the_next_change") {
        return;
    }
    let c = bgp_cluster(1, BgpOptions::default());
    wait_router_session(&c, "h1");
    let router_since = session_line(&c, ROUTER_SESSION);
    let mut expected = reloads(&c, "h1");

    c.write_bird_config("h1", "protocol bgp { this is not BIRD's language\n");
    c.put_global_peer("192.0.2.250", "64512");
    expect_one_reload(
        &c,
        &mut expected,
        "a peer added after the file broke",
        || {
            c.birdc("h1", &["show", "protocols"])
                .contains("Global_192_0_2_250")
        },
    );
    let text = c.bird_config("h1");
    assert!(
        !text.contains("this is not"),
        "the broken text stayed:\n{text}"
    );
    assert!(text.contains("neighbor 192.0.2.250 as 64512;"), "{text}");
    assert_eq!(session_line(&c, ROUTER_SESSION), router_since);
    assert_eq!(c.metric("h1", REJECTED), Some(0.0));
}

/// 1,000 endpoints written in a burst on one host cause at most 3 reloads;
/// the last of them (a real workload) is then routed on the other host,
/// which proves the final configuration is loaded.
#[test]
fn a_burst_of_1000_endpoints_causes_at_most_3_reloads() {
    if !require_root("a_burst_of_1000_endpoints_causes_at_most_3_reloads") {
        return;
    }
    let mut c = bgp_cluster(2, BgpOptions::default());
    add_open_workload(&mut c, "a", "h1", "10.65.1.2");
    wait_bgp_routes(&c, &[("h2", "a")], CONVERGE_TIMEOUT);
    let before = reloads(&c, "h1");

    c.add_workload("z", "h1", "10.65.1.3");
    let mut burst: Vec<(String, String)> = (0..999u32)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 65, 100, 0)) + i + 1);
            let key = format!("/calico/v1/host/h1/workload/cni/e{i}/endpoint/e{i}");
            let doc = json!({
                "state": "active", "name": format!("calie{i}"), "mac": "ee:ee:ee:ee:ee:ee",
                "profile_ids": ["OPEN"], "ipv4_nets": [format!("{ip}/32")],
            });
            (key, doc.to_string())
        })
        .collect();
    burst.push((
        c.endpoint_key("z"),
        c.endpoint_doc("z", &["OPEN"], &json!({})).to_string(),
    ));
    // 100 etcd revisions of 10 endpoints each, as fast as the test's
    // client goes (one write per endpoint takes the client over a second,
    // longer than a burst).
    let start = Instant::now();
    for chunk in burst.chunks(10) {
        c.txn(chunk, &[]);
    }
    let written = start.elapsed();
    wait_bgp_routes(&c, &[("h2", "z")], CONVERGE_TIMEOUT);
    wait_for("the reload counted", CONVERGE_TIMEOUT, || {
        c.metric("h1", RELOADS).is_some_and(|n| n > before)
    });
    let burst_reloads = reloads(&c, "h1") - before;
    eprintln!(
        "1,000 endpoints written in {written:?} -> {burst_reloads} reloads, z routed on h2 after {:?}",
        start.elapsed()
    );
    assert!(
        burst_reloads <= 3.0,
        "{burst_reloads} reloads for one burst"
    );
    c.assert_matrix(&[allow("z", "a", 80), allow("a", "z", 80)]);
}
