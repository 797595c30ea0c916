//! `margay run` against a 3-member etcd: the member the agent watches is
//! killed mid-watch, and a change made after that still reaches the kernel
//! within 10 s (the agent moves to another member and resumes its watch).
//!
//! Needs root (network namespaces); skips with a message otherwise. The
//! members run on the test namespace's loopback.

mod common;

use std::time::{Duration, Instant};

use common::Agent;
use margay_tests::etcd_cluster::EtcdCluster;
use margay_tests::netns::{attach_workload, require_root, TestNetns};

fn endpoint_doc(iface: &str, addr: &str) -> String {
    format!(
        r#"{{"state":"active","name":"{iface}","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["p1"],"ipv4_nets":["{addr}/32"]}}"#
    )
}

/// The endpoint of the agent's last "connected to etcd" line.
fn connected_endpoint(log: &str) -> Option<String> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("connected to etcd"))?;
    let field = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("endpoint="))?;
    Some(field.trim_matches('"').to_owned())
}

#[test]
fn a_change_lands_within_10s_after_the_watched_member_dies() {
    if !require_root("a_change_lands_within_10s_after_the_watched_member_dies") {
        return;
    }
    let host = TestNetns::new("fo-h");
    let wl1 = TestNetns::new("fo-w1");
    let wl2 = TestNetns::new("fo-w2");
    attach_workload(&host, "cali1", &wl1, "10.65.0.2");
    attach_workload(&host, "cali2", &wl2, "10.65.0.3");
    let mut cluster = EtcdCluster::new_in_netns(3, host.name());
    cluster.etcdctl_ok(&["put", "/calico/v1/Ready", "true"]);
    cluster.etcdctl_ok(&[
        "put",
        "/calico/v1/policy/profile/p1/rules",
        r#"{"inbound_rules":[{"action":"allow"}],"outbound_rules":[{"action":"allow"}]}"#,
    ]);
    cluster.etcdctl_ok(&[
        "put",
        "/calico/v1/host/h1/workload/k8s/pod1/endpoint/eth0",
        &endpoint_doc("cali1", "10.65.0.2"),
    ]);
    let scratch = Scratch::new();
    let scratch = scratch.0.as_path();
    let log = scratch.join("margay.log");
    let endpoints = cluster.client_urls().join(",");
    let agent = Agent::run(
        &host,
        &[
            "--hostname",
            "h1",
            "--etcd-endpoints",
            &endpoints,
            "--config",
            scratch.join("none.toml").to_str().expect("utf8"),
            "--metrics-addr",
            "127.0.0.1:9094",
            "--dataplane",
            "none",
        ],
        &log,
    );
    let routes = || host.exec_ok(&["ip", "route", "show", "proto", "80"]);
    agent.wait_until_by(
        "the first route",
        Instant::now() + Duration::from_secs(20),
        || routes().contains("10.65.0.2 dev cali1"),
    );

    let watched = connected_endpoint(&agent.log()).expect("a connected endpoint in the log");
    let member = cluster
        .member_of(&watched)
        .unwrap_or_else(|| panic!("{watched} is no member"));
    cluster.kill(member);
    let killed = Instant::now();
    cluster.put_retrying(
        "/calico/v1/host/h1/workload/k8s/pod2/endpoint/eth0",
        &endpoint_doc("cali2", "10.65.0.3"),
        Duration::from_secs(8),
    );
    agent.wait_until_by(
        "the change made after the kill, within 10 s",
        killed + Duration::from_secs(10),
        || routes().contains("10.65.0.3 dev cali2"),
    );
    let now = connected_endpoint(&agent.log()).expect("connected");
    assert_ne!(now, watched, "still on the dead member:\n{}", agent.log());
    assert!(
        agent.log().contains("etcd watch resumed"),
        "{}",
        agent.log()
    );
    assert_eq!(host.metric(9094, "margay_datastore_connected"), Some(1.0));
}

/// A scratch directory (the log and an empty config file), removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("mgy-failover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        std::fs::write(dir.join("none.toml"), "").expect("config");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
