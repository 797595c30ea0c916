//! `margay run` as the e2e tests use it: started with `ip netns exec` inside
//! a test namespace, talking to an etcd on that namespace's loopback, it must
//! program that namespace, repair drift, survive etcd going away, exit 0 on
//! SIGTERM leaving everything in place, and adopt it all on restart.
//!
//! Needs root (network namespaces, nftables); skips with a message otherwise.
//! Only the test's own namespaces are touched.

mod common;

use std::path::Path;

use common::{Agent, MARGAY};
use margay_tests::etcd::EtcdServer;
use margay_tests::netns::{attach_workload, require_root, TestNetns};

const PROFILE: &str =
    r#"{"inbound_rules":[{"action":"allow"}],"outbound_rules":[{"action":"allow"}]}"#;

fn endpoint_doc(iface: &str, addr: &str) -> String {
    format!(
        r#"{{"state":"active","name":"{iface}","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["p1"],"ipv4_nets":["{addr}/32"]}}"#
    )
}

/// `margay run` for host h1 against `etcd`, with a 1 s refresh, metrics on
/// 127.0.0.1:9091 and the log appended to `log`.
fn start_agent(
    ns: &TestNetns,
    etcd: &EtcdServer,
    backend: Backend,
    config: &Path,
    log: &Path,
) -> Agent {
    Agent::run(
        ns,
        &[
            "--hostname",
            "h1",
            "--etcd-endpoints",
            &etcd.client_url(),
            "--config",
            config.to_str().expect("utf8"),
            "--refresh-interval",
            "1",
            "--metrics-addr",
            "127.0.0.1:9091",
            "--dataplane",
            backend.name(),
        ],
        log,
    )
}

/// True when the (text) log holds a line at debug level.
fn has_debug_lines(log: &str) -> bool {
    log.lines()
        .any(|l| l.split_whitespace().nth(1) == Some("DEBUG"))
}

fn our_routes(ns: &TestNetns) -> String {
    ns.exec_ok(&["ip", "route", "show", "proto", "80"])
}

/// The firewall backend under test, with how to see and break its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Nftables,
    Iptables,
    None,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
            Backend::None => "none",
        }
    }

    /// True when our firewall objects are in place (always for `none`).
    fn present(self, ns: &TestNetns) -> bool {
        match self {
            Backend::Nftables => ns
                .exec_ok(&["nft", "list", "tables"])
                .contains("table inet margay"),
            Backend::Iptables => ns
                .exec_ok(&["iptables", "-S", "FORWARD"])
                .contains("margay"),
            Backend::None => true,
        }
    }

    /// Removes our objects (or our hook) behind the agent's back.
    fn break_it(self, ns: &TestNetns) {
        match self {
            Backend::Nftables => {
                ns.exec_ok(&["nft", "delete", "table", "inet", "margay"]);
            }
            Backend::Iptables => {
                ns.exec_ok(&["iptables", "-F", "FORWARD"]);
            }
            Backend::None => {}
        }
    }
}

/// `GET path` on the agent's metrics address inside `ns`.
fn http_get(ns: &TestNetns, path: &str) -> String {
    ns.http_get(9091, path)
}

fn metric(ns: &TestNetns, series: &str) -> Option<f64> {
    ns.metric(9091, series)
}

fn plan_json(ns: &TestNetns, etcd: &EtcdServer, backend: Backend) -> serde_json::Value {
    let out = ns.exec_ok(&[
        MARGAY,
        "plan",
        "--json",
        "--hostname",
        "h1",
        "--etcd-endpoints",
        &etcd.client_url(),
        "--dataplane",
        backend.name(),
    ]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("plan output {out:?}: {e}"))
}

#[test]
fn run_with_nftables() {
    if require_root("run_with_nftables") {
        scenario(Backend::Nftables);
    }
}

#[test]
fn run_with_iptables() {
    if require_root("run_with_iptables") {
        scenario(Backend::Iptables);
    }
}

#[test]
fn run_without_firewall_still_programs_routes() {
    if require_root("run_without_firewall_still_programs_routes") {
        scenario(Backend::None);
    }
}

/// Start, watch, drift repair, invalid data, SIGHUP, etcd away and back,
/// SIGTERM, plan after exit, restart without writes.
fn scenario(backend: Backend) {
    let host = TestNetns::new("run-h");
    let wl1 = TestNetns::new("run-w1");
    let wl2 = TestNetns::new("run-w2");
    attach_workload(&host, "cali1", &wl1, "10.65.0.2");
    attach_workload(&host, "cali2", &wl2, "10.65.0.3");
    let mut etcd = EtcdServer::new_in_netns(host.name());
    etcd.etcdctl_ok(&["put", "/calico/v1/Ready", "true"]);
    etcd.etcdctl_ok(&["put", "/calico/v1/policy/profile/p1/rules", PROFILE]);
    etcd.etcdctl_ok(&[
        "put",
        "/calico/v1/host/h1/workload/k8s/pod1/endpoint/eth0",
        &endpoint_doc("cali1", "10.65.0.2"),
    ]);
    let config = etcd.dir().join("margay.toml");
    std::fs::write(&config, "log_level = \"info\"\n").expect("config");
    let log = etcd.dir().join("margay.log");

    // Start: programs the namespace and becomes ready.
    let mut agent = start_agent(&host, &etcd, backend, &config, &log);
    agent.wait_until("the workload route", || {
        our_routes(&host).contains("10.65.0.2 dev cali1")
    });
    agent.wait_until("/readyz 200", || {
        http_get(&host, "/readyz").starts_with("HTTP/1.1 200")
    });
    assert!(backend.present(&host), "{} objects missing", backend.name());
    assert!(http_get(&host, "/livez").starts_with("HTTP/1.1 200"));
    assert_eq!(metric(&host, "margay_datastore_connected"), Some(1.0));
    agent.wait_until("the heartbeat", || {
        etcd.etcdctl_ok(&[
            "get",
            "--print-value-only",
            "/calico/felix/v1/host/h1/status",
        ])
        .contains("\"first_update\"")
    });

    // Watch: an endpoint added and removed live.
    let ep2 = "/calico/v1/host/h1/workload/k8s/pod2/endpoint/eth0";
    etcd.etcdctl_ok(&["put", ep2, &endpoint_doc("cali2", "10.65.0.3")]);
    agent.wait_until("the second route", || {
        our_routes(&host).contains("10.65.0.3 dev cali2")
    });
    etcd.etcdctl_ok(&["del", ep2]);
    agent.wait_until("the second route to go", || {
        !our_routes(&host).contains("10.65.0.3")
    });

    // Drift: a deleted route comes back at once, a deleted table on refresh.
    host.exec_ok(&["ip", "route", "del", "10.65.0.2/32", "dev", "cali1"]);
    agent.wait_until("the route to be repaired", || {
        our_routes(&host).contains("10.65.0.2 dev cali1")
    });
    backend.break_it(&host);
    agent.wait_until("the firewall to be repaired", || backend.present(&host));
    // Quiet refreshes: on nftables the read-back is skipped (nobody moved
    // the nf_tables generation); the others read back every time.
    let readbacks = |result: &str| {
        let series = format!("margay_firewall_readbacks_total{{result=\"{result}\"}}");
        metric(&host, &series).unwrap_or_else(|| panic!("{series} not exposed"))
    };
    let quiet = if matches!(backend, Backend::Nftables) {
        "skipped"
    } else {
        "performed"
    };
    let before = readbacks(quiet);
    agent.wait_until("quiet refreshes counted", || {
        readbacks(quiet) >= before + 2.0
    });

    // Invalid data is counted, never fatal.
    etcd.etcdctl_ok(&["put", "/calico/v1/policy/profile/bad/rules", "{nope"]);
    agent.wait_until("the invalid update to be counted", || {
        metric(
            &host,
            "margay_invalid_updates_total{kind=\"profile_rules\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    agent.assert_alive();

    // SIGHUP re-reads the config file, and the new log level is in force:
    // every apply so far logged "applied" at debug, filtered out at info.
    assert!(
        agent.log().contains("first snapshot applied") && !has_debug_lines(&agent.log()),
        "debug lines at info level:\n{}",
        agent.log()
    );
    std::fs::write(&config, "log_level = \"debug\"\n").expect("config");
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    agent.wait_for_log_line("reloading the config file");
    agent.assert_alive();

    // etcd away: nothing changes; back: updates flow again.
    etcd.stop();
    agent.wait_until("the agent to notice etcd is gone", || {
        metric(&host, "margay_datastore_connected") == Some(0.0)
    });
    // Reconnect attempts are logged at debug: the reloaded level shows them.
    agent.wait_until("debug lines after the reload", || {
        has_debug_lines(&agent.log())
    });
    // Two refreshes pass while etcd is away, and change nothing.
    let away = readbacks(quiet);
    agent.wait_until("refreshes while etcd is away", || {
        readbacks(quiet) >= away + 2.0
    });
    assert!(our_routes(&host).contains("10.65.0.2 dev cali1"));
    assert!(backend.present(&host));
    etcd.start();
    etcd.etcdctl_ok(&["put", ep2, &endpoint_doc("cali2", "10.65.0.3")]);
    agent.wait_until("an update after etcd came back", || {
        our_routes(&host).contains("10.65.0.3 dev cali2")
    });

    // SIGTERM: exit 0, everything stays.
    let status = agent.stop();
    assert!(status.success(), "exit status {status}");
    let routes = our_routes(&host);
    assert!(routes.contains("10.65.0.2 dev cali1") && routes.contains("10.65.0.3 dev cali2"));
    assert!(backend.present(&host));

    // What a restart would change: nothing.
    let plan = plan_json(&host, &etcd, backend);
    assert_eq!(plan["plan"]["routes"], serde_json::json!([]), "{plan}");
    assert_eq!(plan["plan"]["firewall"], serde_json::json!([]), "{plan}");
    assert_eq!(plan["ready"], true);
    assert!(plan["invalid"].as_array().is_some_and(|a| a
        .iter()
        .any(|i| i["key"] == "/calico/v1/policy/profile/bad/rules")));

    // Restart: adopts what is there and writes nothing.
    let agent = start_agent(&host, &etcd, backend, &config, &log);
    agent.wait_until("/readyz 200 after restart", || {
        http_get(&host, "/readyz").starts_with("HTTP/1.1 200")
    });
    let objects: &[&str] = match backend {
        // The no-op firewall "writes" everything again; only routes are real.
        Backend::None => &["route", "neighbour"],
        _ => &["route", "neighbour", "chain", "set", "set_member"],
    };
    for object in objects {
        let series = format!("margay_dataplane_writes_total{{object=\"{object}\"}}");
        assert_eq!(metric(&host, &series), Some(0.0), "{series} after restart");
    }
    assert!(our_routes(&host).contains("10.65.0.2 dev cali1"));
    assert!(agent.stop().success());
}
