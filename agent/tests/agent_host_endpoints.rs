//! Host endpoints from the agent's side, with the real binary, a real etcd
//! and the real kernel in a test namespace:
//! - `margay run` reports each host endpoint of its host `up` while it is
//!   bound to an interface and `down` otherwise (a name-less one follows its
//!   expected address between interfaces), deletes the key when the host
//!   endpoint goes and removes a previous run's leftovers;
//! - `margay check` warns when a host endpoint would block the etcd port
//!   and no failsafe covers it, and stops warning once the datastore's
//!   failsafe list does;
//! - `margay plan` names the host endpoints, their bindings and chains;
//! - the etcd endpoints margay uses stay reachable through a deny-all host
//!   endpoint with no failsafe port at all: a restarted agent (the firewall
//!   left in place) connects anew and applies a later change.
//!
//! Needs root; skips with a message otherwise. Only the test's own
//! namespaces are touched.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, MARGAY};
use margay_tests::etcd::EtcdServer;
use margay_tests::netns::{require_root, veth_pair, TestNetns};

/// tcp 80 inbound only; everything outbound.
const WEB_PROFILE: &str = r#"{"inbound_rules":[{"action":"allow","protocol":"tcp","dst_ports":[80]}],"outbound_rules":[{"action":"allow"}]}"#;
/// How long a binding change may take to show in the status key (the
/// binding itself follows within 1 s; the status writer adds an etcd write).
const BINDING_WAIT: Duration = Duration::from_secs(5);

fn named_host_endpoint(iface: &str) -> String {
    format!(r#"{{"name":"{iface}","profile_ids":["web"],"labels":{{"role":"mgmt"}}}}"#)
}

fn addressed_host_endpoint(addr: &str) -> String {
    format!(r#"{{"expected_ipv4_addrs":["{addr}"],"profile_ids":["web"]}}"#)
}

/// An interface `name` (up) in `ns`, with `addr` when given: one end of a
/// veth pair whose other end (`<name>p`) stays in `ns` too.
fn host_interface(ns: &TestNetns, name: &str, addr: Option<&str>) {
    let peer = format!("{name}p");
    ns.exec_ok(&[
        "ip", "link", "add", name, "type", "veth", "peer", "name", &peer,
    ]);
    ns.exec_ok(&["ip", "link", "set", &peer, "up"]);
    ns.exec_ok(&["ip", "link", "set", name, "up"]);
    if let Some(addr) = addr {
        ns.exec_ok(&["ip", "addr", "add", addr, "dev", name]);
    }
}

/// The value at `key` (empty when absent).
fn value(etcd: &EtcdServer, key: &str) -> String {
    etcd.etcdctl_ok(&["get", "--print-value-only", key])
        .trim()
        .to_owned()
}

fn status_key(id: &str) -> String {
    format!("/calico/felix/v1/host/h1/endpoint/{id}")
}

fn start_agent(ns: &TestNetns, etcd: &EtcdServer, backend: &str) -> Agent {
    let log = etcd.dir().join(format!("margay-{backend}.log"));
    Agent::run_h1(ns, &etcd.client_url(), backend, &log)
}

#[test]
fn host_endpoint_status_follows_bindings_nftables() {
    if require_root("host_endpoint_status_follows_bindings_nftables") {
        status_scenario("nftables");
    }
}

#[test]
fn host_endpoint_status_follows_bindings_iptables() {
    if require_root("host_endpoint_status_follows_bindings_iptables") {
        status_scenario("iptables");
    }
}

fn status_scenario(backend: &str) {
    let host = TestNetns::new("hep-st");
    host_interface(&host, "hep0", None);
    host_interface(&host, "hep1", Some("10.99.0.1/24"));
    host_interface(&host, "hep2", None);
    let etcd = EtcdServer::new_in_netns(host.name());
    for (key, doc) in [
        ("/calico/v1/Ready", "true".to_owned()),
        (
            "/calico/v1/config/EndpointReportingEnabled",
            "true".to_owned(),
        ),
        (
            "/calico/v1/policy/profile/web/rules",
            WEB_PROFILE.to_owned(),
        ),
        (
            "/calico/v1/host/h1/endpoint/byname",
            named_host_endpoint("hep0"),
        ),
        (
            "/calico/v1/host/h1/endpoint/byaddr",
            addressed_host_endpoint("10.99.0.1"),
        ),
        (&status_key("stale"), r#"{"status":"up"}"#.to_owned()),
    ] {
        etcd.etcdctl_ok(&["put", key, &doc]);
    }
    let agent = start_agent(&host, &etcd, backend);
    agent.wait_until("both host endpoints up, the leftover gone", || {
        value(&etcd, &status_key("byname")) == r#"{"status":"up"}"#
            && value(&etcd, &status_key("byaddr")) == r#"{"status":"up"}"#
            && value(&etcd, &status_key("stale")).is_empty()
    });

    // The address leaves hep1: the name-less host endpoint is bound nowhere.
    host.exec_ok(&["ip", "addr", "del", "10.99.0.1/24", "dev", "hep1"]);
    let deadline = Instant::now() + BINDING_WAIT;
    agent.wait_until_by("byaddr down", deadline, || {
        value(&etcd, &status_key("byaddr")) == r#"{"status":"down"}"#
    });
    assert_eq!(value(&etcd, &status_key("byname")), r#"{"status":"up"}"#);
    // It arrives on hep2: bound again.
    host.exec_ok(&["ip", "addr", "add", "10.99.0.1/24", "dev", "hep2"]);
    let deadline = Instant::now() + BINDING_WAIT;
    agent.wait_until_by("byaddr up on hep2", deadline, || {
        value(&etcd, &status_key("byaddr")) == r#"{"status":"up"}"#
    });

    // A deleted host endpoint's status goes.
    etcd.etcdctl_ok(&["del", "/calico/v1/host/h1/endpoint/byname"]);
    agent.wait_until("byname's status removed", || {
        value(&etcd, &status_key("byname")).is_empty()
    });
    assert!(agent.stop().success());
}

#[test]
fn check_warns_about_the_etcd_port_and_plan_shows_host_endpoints() {
    if !require_root("check_warns_about_the_etcd_port_and_plan_shows_host_endpoints") {
        return;
    }
    let host = TestNetns::new("hep-ck");
    host_interface(&host, "hep0", Some("10.99.0.1/24"));
    let etcd = EtcdServer::new_in_netns(host.name());
    let port = etcd.client_port();
    for (key, doc) in [
        ("/calico/v1/Ready", "true".to_owned()),
        (
            "/calico/v1/config/FailsafeInboundHostPorts",
            "tcp:22".to_owned(),
        ),
        (
            "/calico/v1/policy/profile/web/rules",
            WEB_PROFILE.to_owned(),
        ),
        (
            "/calico/v1/host/h1/endpoint/mgmt",
            named_host_endpoint("hep0"),
        ),
    ] {
        etcd.etcdctl_ok(&["put", key, &doc]);
    }
    let url = etcd.client_url();
    let margay = |args: &[&str]| {
        let mut argv = vec![MARGAY];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--hostname", "h1", "--etcd-endpoints", &url]);
        argv.extend_from_slice(&["--dataplane", "nftables"]);
        let out = host.exec(&argv);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let report = margay(&["check"]);
    let line = report
        .lines()
        .find(|l| l.contains("host endpoints and etcd"))
        .unwrap_or_else(|| panic!("no host endpoint line in:\n{report}"));
    assert!(
        line.starts_with(&format!(
            "WARNING  host endpoints and etcd: host endpoint mgmt on hep0 may block etcd port {port} (inbound)"
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!("add tcp:{port} to FailsafeInboundHostPorts")),
        "{line}"
    );
    assert!(!line.contains("Outbound"), "outbound allows all: {line}");

    // The datastore's failsafe list now covers the port: no warning.
    let covered = format!("tcp:22,tcp:{port}");
    etcd.etcdctl_ok(&[
        "put",
        "/calico/v1/config/FailsafeInboundHostPorts",
        &covered,
    ]);
    let report = margay(&["check"]);
    assert!(
        report.contains(&format!(
            "ok       host endpoints and etcd (1 host endpoint(s); etcd port(s) tcp:{port} allowed or failsafe)"
        )),
        "{report}"
    );

    let text = margay(&["plan"]);
    assert!(
        text.contains("  host endpoint mgmt (name hep0): bound to hep0\n"),
        "{text}"
    );
    assert!(text.contains("hep0: chain margay-hi-hep0 ("), "{text}");
    let doc: serde_json::Value = serde_json::from_str(margay(&["plan", "--json"]).trim())
        .expect("plan --json is one JSON document");
    assert_eq!(
        doc["host_endpoints"][0]["bound_to"],
        serde_json::json!(["hep0"])
    );
    let chains: Vec<&str> = doc["plan"]["firewall"]
        .as_array()
        .expect("firewall ops")
        .iter()
        .filter_map(|op| op["name"].as_str())
        .collect();
    assert!(chains.contains(&"margay-hi-hep0"), "{chains:?}");
    assert!(chains.contains(&"margay-hin-hep0"), "{chains:?}");
}

/// Inbound and outbound: deny everything.
const DENY_PROFILE: &str =
    r#"{"inbound_rules":[{"action":"deny"}],"outbound_rules":[{"action":"deny"}]}"#;

#[test]
fn own_etcd_endpoints_pass_a_deny_all_host_endpoint_nftables() {
    if require_root("own_etcd_endpoints_pass_a_deny_all_host_endpoint_nftables") {
        own_endpoint_scenario("nftables");
    }
}

#[test]
fn own_etcd_endpoints_pass_a_deny_all_host_endpoint_iptables() {
    if require_root("own_etcd_endpoints_pass_a_deny_all_host_endpoint_iptables") {
        own_endpoint_scenario("iptables");
    }
}

/// etcd in its own namespace, reached from the agent's through `hep0` at
/// 10.98.0.2 (DNAT to etcd's loopback listener there), so the agent's etcd
/// traffic crosses the interface the deny-all host endpoint is bound to.
fn own_endpoint_scenario(backend: &str) {
    let host = TestNetns::new("hep-own-h");
    let remote = TestNetns::new("hep-own-e");
    veth_pair(&host, "hep0", &remote, "eth0");
    host.exec_ok(&["ip", "addr", "add", "10.98.0.1/24", "dev", "hep0"]);
    remote.exec_ok(&["ip", "addr", "add", "10.98.0.2/24", "dev", "eth0"]);
    let etcd = EtcdServer::new_in_netns(remote.name());
    let port = etcd.client_port().to_string();
    remote.sysctl("net.ipv4.conf.eth0.route_localnet", "1");
    let to = format!("127.0.0.1:{port}");
    remote.exec_ok(&["nft", "add", "table", "ip", "etcdfwd"]);
    let hook = "{ type nat hook prerouting priority -100; }";
    remote.exec_ok(&["nft", "add", "chain", "ip", "etcdfwd", "pre", hook]);
    remote.exec_ok(&[
        "nft",
        "add",
        "rule",
        "ip",
        "etcdfwd",
        "pre",
        "ip",
        "daddr",
        "10.98.0.2",
        "tcp",
        "dport",
        &port,
        "dnat",
        "to",
        &to,
    ]);
    for (key, doc) in [
        ("/calico/v1/Ready", "true".to_owned()),
        (
            "/calico/v1/config/EndpointReportingEnabled",
            "true".to_owned(),
        ),
        (
            "/calico/v1/config/FailsafeInboundHostPorts",
            "none".to_owned(),
        ),
        (
            "/calico/v1/config/FailsafeOutboundHostPorts",
            "none".to_owned(),
        ),
        (
            "/calico/v1/policy/profile/deny/rules",
            DENY_PROFILE.to_owned(),
        ),
        (
            "/calico/v1/host/h1/endpoint/uplink",
            r#"{"name":"hep0","profile_ids":["deny"]}"#.to_owned(),
        ),
    ] {
        etcd.etcdctl_ok(&["put", key, &doc]);
    }
    let url = format!("http://10.98.0.2:{port}");
    let log = etcd.dir().join(format!("margay-own-{backend}.log"));
    let start = || Agent::run_h1(&host, &url, backend, &log);
    let agent = start();
    agent.wait_until("the deny-all host endpoint up", || {
        value(&etcd, &status_key("uplink")) == r#"{"status":"up"}"#
    });
    // The policy is in force: anything else across hep0 is dropped.
    let ping = host.exec(&["ping", "-c", "1", "-W", "1", "10.98.0.2"]);
    assert!(!ping.status.success(), "ping should be denied");
    assert!(agent.stop().success());

    // A new agent, the firewall as the last one left it: it must connect
    // anew through hep0 and apply a change made meanwhile.
    etcd.etcdctl_ok(&[
        "put",
        "/calico/v1/host/h1/endpoint/later",
        r#"{"name":"hep9","profile_ids":["deny"]}"#,
    ]);
    let agent = start();
    agent.wait_until("the later host endpoint reported", || {
        value(&etcd, &status_key("later")) == r#"{"status":"up"}"#
    });
    assert!(agent.stop().success());
}
