//! The real `margay run` on the iptables backend (issue 9, case 1):
//!
//! * the issue's sequence (profile `solo2` used only by endpoint e3, then e3
//!   deleted) applies, and the agent stays ready;
//! * an apply the kernel keeps refusing (a foreign chain jumps to one of
//!   our chains that has to go) is visible: `/readyz` turns 503 after
//!   3 failures in a row, the gauge `margay_dataplane_apply_failures_consecutive`
//!   counts them, and the log line names the chain; once the obstacle is
//!   gone the agent recovers by itself.
//!
//! Needs root; only the test's own namespaces are touched.

mod common;

use common::Agent;
use margay_tests::etcd::EtcdServer;
use margay_tests::netns::{attach_workload, require_root, TestNetns};

const SOLO2: &str = r#"{"inbound_rules":[{}],"outbound_rules":[{}]}"#;

fn endpoint_doc(iface: &str, addr: &str, profile: &str) -> String {
    format!(
        r#"{{"state":"active","name":"{iface}","profile_ids":["{profile}"],"ipv4_nets":["{addr}/32"]}}"#
    )
}

/// `margay run` for host h1 on the iptables backend, metrics on
/// 127.0.0.1:9091, its log in etcd's scratch directory.
fn start(ns: &TestNetns, etcd: &EtcdServer) -> Agent {
    let log = etcd.dir().join("margay.log");
    Agent::run_h1(ns, &etcd.client_url(), "iptables", &log)
}

/// `GET path` on the agent's metrics address inside `ns`.
fn http_get(ns: &TestNetns, path: &str) -> String {
    ns.http_get(9091, path)
}

fn metric(ns: &TestNetns, series: &str) -> Option<f64> {
    ns.metric(9091, series)
}

fn ready(ns: &TestNetns) -> bool {
    http_get(ns, "/readyz").starts_with("HTTP/1.1 200")
}

const CONSECUTIVE: &str = "margay_dataplane_apply_failures_consecutive";

#[test]
fn iptables_deletes_apply_and_a_wedged_dataplane_is_not_ready() {
    if !require_root("iptables_deletes_apply_and_a_wedged_dataplane_is_not_ready") {
        return;
    }
    let host = TestNetns::new("af-h");
    let wl = TestNetns::new("af-w3");
    attach_workload(&host, "caliw3", &wl, "10.65.0.3");
    let etcd = EtcdServer::new_in_netns(host.name());
    etcd.etcdctl_ok(&["put", "/calico/v1/Ready", "true"]);
    etcd.etcdctl_ok(&["put", "/calico/v1/policy/profile/solo2/rules", SOLO2]);
    let e3 = "/calico/v1/host/h1/workload/k8s/w3/endpoint/e3";
    etcd.etcdctl_ok(&["put", e3, &endpoint_doc("caliw3", "10.65.0.3", "solo2")]);
    let agent = start(&host, &etcd);
    agent.wait_until("/readyz 200", || ready(&host));

    // The issue's sequence: e3 goes, and with it solo2's chains.
    etcd.etcdctl_ok(&["del", e3]);
    agent.wait_until("solo2's chains to go", || {
        !host.exec_ok(&["iptables-save"]).contains("margay-pi-solo2")
    });
    assert!(ready(&host));
    assert_eq!(metric(&host, CONSECUTIVE), Some(0.0));

    // e3 again; then a foreign chain jumps to solo2's inbound chain, so the
    // next delete is refused, again and again.
    etcd.etcdctl_ok(&["put", e3, &endpoint_doc("caliw3", "10.65.0.3", "solo2")]);
    agent.wait_until("solo2's chains", || {
        host.exec_ok(&["iptables-save"])
            .contains(":margay-pi-solo2")
    });
    host.exec_ok(&["iptables", "-N", "FOREIGN"]);
    host.exec_ok(&["iptables", "-A", "FOREIGN", "-j", "margay-pi-solo2"]);
    etcd.etcdctl_ok(&["del", e3]);
    agent.wait_until("/readyz 503", || {
        http_get(&host, "/readyz").starts_with("HTTP/1.1 503")
    });
    assert!(metric(&host, CONSECUTIVE).unwrap_or(0.0) >= 3.0);
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("dataplane apply failed"))
        .unwrap_or_else(|| panic!("no failure line:\n{log}"));
    assert!(line.contains("margay-pi-solo2"), "{line}");

    // The obstacle goes: the retry lands, ready again.
    host.exec_ok(&["iptables", "-F", "FOREIGN"]);
    agent.wait_until("/readyz 200 again", || ready(&host));
    assert_eq!(metric(&host, CONSECUTIVE), Some(0.0));
    assert!(!host.exec_ok(&["iptables-save"]).contains("margay-pi-solo2"));
}
