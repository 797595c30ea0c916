//! End-to-end: no datastore key cuts a host off (issue 9, cases 3 and 4).
//!
//! In the sandbox etcd lives at `192.0.2.2` on the fabric and every host's
//! default route goes via `192.0.2.1` on its uplink `eth0`:
//! - endpoints claiming etcd's address, the gateway's or the host's own
//!   (local on a real interface, or remote under another host) get no
//!   route; the agents stay connected and ready, count and log the refusal;
//! - a route of ours left on etcd's address by an earlier run is removed at
//!   start, before margay connects;
//! - `InterfacePrefix = eth` (the uplink) and `= lo` are rejected: the
//!   previous prefix stays in the firewall, traffic over the uplink and
//!   loopback (`/livez`) still flows, the rejection is counted, and
//!   `margay check` reports it.

use std::net::Ipv4Addr;

use margay_tests::both_backends;
use margay_tests::sandbox::{
    allow, allow_all_rules, margay_bin, wait_for, Cluster, Dataplane, CONVERGE_TIMEOUT, ETCD_IP,
    PREFIX, ROUTER_IP,
};
use serde_json::json;

both_backends!(
    endpoints_claiming_host_addresses_get_no_route,
    a_route_of_ours_blocking_etcd_is_removed_at_start,
    interface_prefixes_matching_the_uplink_or_lo_are_rejected,
);

/// Our route protocol (the default `route_protocol`).
const OUR_PROTOCOL: &str = "80";

/// The value of the sample `name{labels}` on `host` (0 when absent).
fn sample(c: &Cluster, host: &str, series: &str) -> f64 {
    c.metrics(host)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn refused(reason: &str) -> String {
    format!("margay_routes_refused_total{{reason=\"{reason}\"}}")
}

fn rejected(reason: &str) -> String {
    format!("margay_settings_rejected_total{{setting=\"interface_prefix\",reason=\"{reason}\"}}")
}

fn wait_metric(c: &Cluster, host: &str, series: &str, at_least: f64) {
    wait_for(
        &format!("{series} >= {at_least} on {host}"),
        CONVERGE_TIMEOUT,
        || sample(c, host, series) >= at_least,
    );
}

/// An endpoint document for `iface` claiming `nets`.
fn claim(iface: &str, nets: &[String]) -> serde_json::Value {
    json!({
        "state": "active",
        "name": iface,
        "profile_ids": ["OPEN"],
        "ipv4_nets": nets,
    })
}

fn endpoint_key(host: &str, workload: &str) -> String {
    format!("{PREFIX}/host/{host}/workload/cni/{workload}/endpoint/{workload}")
}

/// A normal workload with its endpoint; waits until `hosts` route to it.
fn sentinel(c: &mut Cluster, name: &str, ip: &str, hosts: &[&str]) {
    c.add_workload(name, "h1", ip);
    c.put_endpoint(name, &["OPEN"], &json!({}));
    for h in hosts {
        wait_for(&format!("route to {name} on {h}"), CONVERGE_TIMEOUT, || {
            c.has_route_to(h, name)
        });
    }
}

fn assert_no_route(c: &Cluster, host: &str, ip: Ipv4Addr) {
    let route = c.route(host, ip);
    assert!(
        route.is_empty(),
        "{host} has a route for {ip}/32: {route}\n{}",
        c.agent_log_tail(host, 20)
    );
}

fn endpoints_claiming_host_addresses_get_no_route(dp: Dataplane) {
    let mut c = Cluster::builder().hosts(2).dataplane(dp).build();
    // Pools covering everything claimed: only the host guard may refuse.
    c.put_pool("192.0.2.0/24", false);
    c.put_pool("10.65.0.0/16", false);
    c.put_profile_rules("OPEN", &allow_all_rules());
    let h1_ip = c.host("h1").ip();
    // Local on h1, on a real interface: etcd's address.
    c.add_workload("x", "h1", "10.65.1.9");
    let iface = c.workload("x").iface().to_owned();
    c.put_json(
        &endpoint_key("h1", "x"),
        &claim(&iface, &[format!("{ETCD_IP}/32")]),
    );
    // Under h2 (remote for h1): h1's gateway and h1's own address.
    c.put_json(
        &endpoint_key("h2", "r"),
        &claim("calir", &[format!("{ROUTER_IP}/32"), format!("{h1_ip}/32")]),
    );
    // Written after the bad ones: once its route is in, they were applied.
    sentinel(&mut c, "a", "10.65.1.2", &["h1", "h2"]);
    for host in ["h1", "h2"] {
        for ip in [ETCD_IP, ROUTER_IP] {
            assert_no_route(&c, host, ip);
        }
    }
    assert_no_route(&c, "h1", h1_ip);
    wait_metric(&c, "h1", &refused("etcd_endpoint"), 1.0);
    wait_metric(&c, "h1", &refused("default_gateway"), 1.0);
    wait_metric(&c, "h1", &refused("host_address"), 1.0);
    wait_metric(&c, "h2", &refused("etcd_endpoint"), 1.0);
    let log = c.agent_log("h1");
    assert!(
        log.contains("endpoint route refused") && log.contains("h1/cni/x/x"),
        "no log line naming the endpoint:\n{}",
        c.agent_log_tail("h1", 20)
    );
    // Still connected and ready: a later change lands on both hosts.
    for host in ["h1", "h2"] {
        assert_eq!(sample(&c, host, "margay_datastore_connected"), 1.0);
        assert!(c.agent_ready(host));
    }
    sentinel(&mut c, "b", "10.65.1.3", &["h1", "h2"]);
    c.assert_matrix(&[allow("a", "b", 80)]);
    // And after a restart.
    assert_eq!(c.stop_agent("h1"), Some(0));
    c.start_agent("h1");
    assert_no_route(&c, "h1", ETCD_IP);
    assert!(c.has_route_to("h1", "b"));
}

fn a_route_of_ours_blocking_etcd_is_removed_at_start(dp: Dataplane) {
    let mut c = Cluster::builder()
        .hosts(1)
        .dataplane(dp)
        .start_agents(false)
        .build();
    c.put_profile_rules("OPEN", &allow_all_rules());
    // What a run before the fix left: etcd's address on a workload interface,
    // with the endpoint claiming it still in the datastore.
    c.add_workload("x", "h1", "10.65.1.9");
    c.host("h1").ns().exec_ok(&[
        "ip",
        "route",
        "add",
        &format!("{ETCD_IP}/32"),
        "dev",
        "calix",
        "proto",
        OUR_PROTOCOL,
        "scope",
        "link",
    ]);
    c.put_json(
        &endpoint_key("h1", "x"),
        &claim("calix", &[format!("{ETCD_IP}/32")]),
    );
    c.start_agent("h1");
    assert_no_route(&c, "h1", ETCD_IP);
    let log = c.agent_log("h1");
    assert!(
        log.contains("removed a route of ours that would cut this host off"),
        "{}",
        c.agent_log_tail("h1", 20)
    );
    wait_metric(&c, "h1", &refused("etcd_endpoint"), 1.0);
    sentinel(&mut c, "a", "10.65.1.2", &["h1"]);
}

/// `margay check` in `host`: its whole output.
fn margay_check(c: &Cluster, host: &str) -> String {
    let out = c.host(host).ns().exec(&[
        margay_bin().to_str().expect("utf8"),
        "check",
        "--config",
        "/dev/null",
        "--hostname",
        host,
        "--etcd-endpoints",
        &format!("http://{ETCD_IP}:2379"),
        "--dataplane",
        c.dataplane().as_str(),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when the firewall matches interfaces by `prefix` (nft `"eth*"`,
/// iptables `-i eth+` / `-o eth+`).
fn matches_prefix(dump: &str, prefix: &str) -> bool {
    dump.contains(&format!("\"{prefix}*\"")) || dump.contains(&format!(" {prefix}+ "))
}

/// New traffic arriving on h1's uplink (a ping from the router) is answered.
fn uplink_answers(c: &Cluster, h1: Ipv4Addr) -> bool {
    c.outside()
        .exec(&["ping", "-c", "1", "-W", "1", &h1.to_string()])
        .status
        .success()
}

fn interface_prefixes_matching_the_uplink_or_lo_are_rejected(dp: Dataplane) {
    let mut c = Cluster::builder().hosts(1).dataplane(dp).build();
    let h1 = c.host("h1").ip();
    c.put_profile_rules("OPEN", &allow_all_rules());
    sentinel(&mut c, "a", "10.65.1.2", &["h1"]);
    sentinel(&mut c, "b", "10.65.1.3", &["h1"]);
    c.assert_matrix(&[allow("a", "b", 80)]);
    assert!(uplink_answers(&c, h1), "baseline: the uplink answers");
    assert!(matches_prefix(&c.firewall_dump("h1"), "cali"));

    let key = format!("{PREFIX}/config/InterfacePrefix");
    c.put(&key, "eth");
    // Written after it: once its route is in, the setting was dealt with
    // (and etcd is still reachable over the uplink).
    sentinel(&mut c, "c", "10.65.1.4", &["h1"]);
    let dump = c.firewall_dump("h1");
    assert!(
        !matches_prefix(&dump, "eth"),
        "uplink prefix applied:\n{dump}"
    );
    assert!(
        matches_prefix(&dump, "cali"),
        "previous prefix gone:\n{dump}"
    );
    assert!(uplink_answers(&c, h1), "the uplink is firewalled");
    c.assert_matrix(&[allow("a", "b", 80), allow("c", "a", 443)]);
    wait_metric(&c, "h1", &rejected("host_interface"), 1.0);
    assert!(c.agent_log("h1").contains("setting rejected"));
    let report = margay_check(&c, "h1");
    assert!(
        report.contains("PROBLEM  interface prefix") && report.contains("\"eth\" matches eth0"),
        "{report}"
    );

    c.put(&key, "lo");
    sentinel(&mut c, "d", "10.65.1.5", &["h1"]);
    let dump = c.firewall_dump("h1");
    assert!(
        !matches_prefix(&dump, "lo"),
        "loopback prefix applied:\n{dump}"
    );
    assert!(
        matches_prefix(&dump, "cali"),
        "previous prefix gone:\n{dump}"
    );
    // A new loopback connection: /livez.
    assert_eq!(
        c.agent_http("h1", "/livez").map(|(status, _)| status),
        Some(200)
    );
    assert!(uplink_answers(&c, h1));
    wait_metric(&c, "h1", &rejected("invalid"), 1.0);
    let report = margay_check(&c, "h1");
    assert!(
        report.contains("PROBLEM  interface prefix") && report.contains("loopback"),
        "{report}"
    );
    // A good value is taken again.
    c.put(&key, "cali,tap");
    wait_for("prefix tap in the firewall", CONVERGE_TIMEOUT, || {
        matches_prefix(&c.firewall_dump("h1"), "tap")
    });
}
