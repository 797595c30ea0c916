//! `margay run` against an etcd that requires mutual TLS, end to end: the
//! syncer lists and watches, routes are programmed, and the status writer
//! (the heartbeat and, with `endpoint_reporting_enabled`, the endpoint
//! status keys under `/calico/felix/v1`) writes over the same mTLS settings
//! from the config file. Certificates are made with `openssl`.
//!
//! Needs root (network namespaces); skips with a message otherwise.

mod common;

use common::Agent;
use margay_tests::etcd::EtcdServer;
use margay_tests::netns::{attach_workload, require_root, TestNetns};

const ENDPOINT: &str = "/calico/v1/host/h1/workload/k8s/pod1/endpoint/eth0";
const STATUS: &str = "/calico/felix/v1/host/h1/status";
const ENDPOINT_STATUS: &str = "/calico/felix/v1/host/h1/workload/k8s/pod1/endpoint/eth0";

#[test]
fn run_and_status_writer_over_mtls() {
    if !require_root("run_and_status_writer_over_mtls") {
        return;
    }
    let host = TestNetns::new("tls-h");
    let wl = TestNetns::new("tls-w");
    attach_workload(&host, "cali1", &wl, "10.65.0.2");
    let etcd = EtcdServer::new_tls_in_netns(host.name());
    assert!(etcd.client_url().starts_with("https://"));
    let tls = etcd.tls().expect("tls").clone();
    etcd.etcdctl_ok(&["put", "/calico/v1/Ready", "true"]);
    etcd.etcdctl_ok(&[
        "put",
        "/calico/v1/policy/profile/p1/rules",
        r#"{"inbound_rules":[{"action":"allow"}],"outbound_rules":[{"action":"allow"}]}"#,
    ]);
    etcd.etcdctl_ok(&[
        "put",
        ENDPOINT,
        r#"{"state":"active","name":"cali1","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["p1"],"ipv4_nets":["10.65.0.2/32"]}"#,
    ]);
    let config = etcd.dir().join("margay.toml");
    std::fs::write(
        &config,
        format!(
            "etcd_ca_file = \"{}\"\netcd_cert_file = \"{}\"\netcd_key_file = \"{}\"\n\
             endpoint_reporting_enabled = true\nreporting_interval_secs = 5\n",
            tls.ca.display(),
            tls.cert.display(),
            tls.key.display()
        ),
    )
    .expect("config");
    let log = etcd.dir().join("margay.log");
    let agent = Agent::run(
        &host,
        &[
            "--hostname",
            "h1",
            "--etcd-endpoints",
            &etcd.client_url(),
            "--config",
            config.to_str().expect("utf8"),
            "--metrics-addr",
            "127.0.0.1:9093",
            "--dataplane",
            "none",
        ],
        &log,
    );

    let routes = || host.exec_ok(&["ip", "route", "show", "proto", "80"]);
    agent.wait_until("the workload route", || {
        routes().contains("10.65.0.2 dev cali1")
    });
    let get = |key: &str| etcd.etcdctl_ok(&["get", "--print-value-only", key]);
    agent.wait_until("the heartbeat over mTLS", || {
        get(STATUS).contains("\"first_update\"")
    });
    agent.wait_until("the endpoint status over mTLS", || {
        get(ENDPOINT_STATUS).contains("\"status\"")
    });

    // The watch runs over mTLS too: a removed endpoint loses its route and
    // its status key.
    etcd.etcdctl_ok(&["del", ENDPOINT]);
    agent.wait_until("the route and the endpoint status to go", || {
        !routes().contains("10.65.0.2") && get(ENDPOINT_STATUS).trim().is_empty()
    });
    assert_eq!(
        host.metric(9093, "margay_datastore_connected"),
        Some(1.0),
        "connected over mTLS"
    );
}
