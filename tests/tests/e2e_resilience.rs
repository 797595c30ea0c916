//! End-to-end, one host: the agent survives what production throws at it.
//! kill -9 and restart under a continuous ping that must lose nothing; etcd
//! stopped and restarted; etcd compacted while the agent was cut off; a route
//! and the firewall wiped by hand and repaired.

use std::time::Duration;

use margay_tests::both_backends;
use margay_tests::sandbox::{
    allow, allow_all_rules, deny, eventually, wait_for, Cluster, Dataplane, CONVERGE_TIMEOUT,
};
use serde_json::json;

both_backends!(
    kill9_and_restart_lose_no_packets,
    route_and_firewall_wiped_are_repaired,
);

/// Tests the nftables backend only: the datastore side does not depend on it.
macro_rules! nftables_only {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if margay_tests::netns::require_root(stringify!($name)) {
                    scenarios::$name(Dataplane::Nftables);
                }
            }
        )*
    };
}

nftables_only!(etcd_stopped_and_restarted, etcd_compacted_while_cut_off);

/// Two open workloads and one that accepts nothing, converged.
fn three_workloads(dp: Dataplane, extra_args: &[&str]) -> Cluster {
    let mut b = Cluster::builder().hosts(1).dataplane(dp);
    for arg in extra_args {
        b = b.agent_arg(arg);
    }
    let mut c = b.build();
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.put_profile_rules("CLOSED", &json!({"outbound_rules": [{"action": "allow"}]}));
    c.add_workload("a", "h1", "10.65.1.2");
    c.add_workload("b", "h1", "10.65.1.3");
    c.add_workload("z", "h1", "10.65.1.4");
    c.put_endpoint("a", &["OPEN"], &json!({}));
    c.put_endpoint("b", &["OPEN"], &json!({}));
    c.put_endpoint("z", &["CLOSED"], &json!({}));
    c.assert_matrix(&baseline());
    c
}

fn baseline() -> Vec<margay_tests::sandbox::Probe> {
    vec![
        allow("a", "b", 80),
        allow("b", "a", 443),
        allow("z", "a", 80),
        deny("a", "z", 80),
        deny("b", "z", 443),
    ]
}

/// SIGKILL and a restart change nothing in the kernel on the way: a ping at
/// 100/s across both loses no packet, and the restarted agent adopts what is
/// there (same ruleset text, same routes) instead of rebuilding it.
fn kill9_and_restart_lose_no_packets(dp: Dataplane) {
    let mut c = three_workloads(dp, &[]);
    let before = c.firewall_dump("h1");
    let routes_before = c.host("h1").ns().exec_ok(&["ip", "-4", "route"]);

    let ping = c.start_ping("a", "b", Duration::from_millis(10), 400);
    std::thread::sleep(Duration::from_millis(500));
    c.kill_agent("h1");
    std::thread::sleep(Duration::from_millis(300));
    c.start_agent("h1");
    let (sent, received) = ping.finish();
    assert_eq!(sent, 400, "ping did not run to the end");
    assert_eq!(received, sent, "lost {} of {sent} pings", sent - received);

    c.assert_matrix(&baseline());
    assert_eq!(
        c.firewall_dump("h1"),
        before,
        "restart rewrote the firewall"
    );
    assert_eq!(
        c.host("h1").ns().exec_ok(&["ip", "-4", "route"]),
        routes_before,
        "restart changed the routes"
    );
}

/// A route deleted and the whole firewall removed by hand come back: the
/// route at once (netlink watch) or at the next refresh, the firewall at the
/// next refresh, and with it the deny.
fn route_and_firewall_wiped_are_repaired(dp: Dataplane) {
    let c = three_workloads(dp, &["--refresh-interval", "1"]);
    let repairs_before = c.metric_sum("h1", "margay_drift_repairs_total");
    let ip_b = c.workload("b").ip().to_string();
    c.host("h1")
        .ns()
        .exec_ok(&["ip", "route", "del", &format!("{ip_b}/32")]);
    c.wipe_firewall("h1");
    wait_for("route to b to come back", CONVERGE_TIMEOUT, || {
        c.has_route_to("h1", "b")
    });
    c.assert_matrix(&baseline());
    assert!(
        c.metric_sum("h1", "margay_drift_repairs_total") > repairs_before,
        "repairs not counted:\n{}",
        c.metrics("h1")
    );
}

mod scenarios {
    use super::*;

    /// etcd goes away: the dataplane stays as it was, the agent says it is
    /// disconnected; etcd comes back: changes made meanwhile and after apply.
    pub fn etcd_stopped_and_restarted(dp: Dataplane) {
        let mut c = three_workloads(dp, &[]);
        c.stop_etcd();
        assert!(
            eventually(Duration::from_secs(15), || c
                .metric("h1", "margay_datastore_connected")
                == Some(0.0)),
            "agent still claims a datastore connection"
        );
        assert!(c.agent_running("h1"), "agent exited without etcd");
        c.assert_matrix(&baseline());

        c.start_etcd();
        c.put_profile_rules("CLOSED", &allow_all_rules());
        c.put_profile_rules("OPEN", &json!({"outbound_rules": [{"action": "allow"}]}));
        c.assert_matrix(&[allow("a", "z", 80), deny("z", "a", 80), deny("a", "b", 80)]);
        assert_eq!(c.metric_sum("h1", "margay_datastore_connected"), 1.0);
    }

    /// While the agent cannot reach etcd, endpoints come and go, rules change
    /// and the history is compacted past the agent's revision: on reconnect
    /// its watch cannot resume, it must resync, and end in the new state.
    pub fn etcd_compacted_while_cut_off(dp: Dataplane) {
        let mut c = three_workloads(dp, &[]);
        let compacted_before = c.metric_sum("h1", COMPACTED_RESYNCS);
        let reconnect_resyncs_before = c.metric_sum("h1", RECONNECT_RESYNCS);
        c.cut_etcd();
        assert!(
            eventually(Duration::from_secs(15), || c
                .metric("h1", "margay_datastore_connected")
                == Some(0.0)),
            "agent did not notice it was cut off"
        );
        c.delete(&c.endpoint_key("b"));
        c.add_workload("n", "h1", "10.65.1.5");
        c.put_endpoint("n", &["OPEN"], &json!({}));
        c.put_profile_rules(
            "OPEN",
            &json!({"inbound_rules": [{"protocol": "tcp", "dst_ports": [80]}],
                    "outbound_rules": [{"action": "allow"}]}),
        );
        c.bury_history();
        // Still the old state while cut off.
        c.assert_matrix(&[allow("a", "b", 443)]);

        c.restore_etcd();
        wait_for("route to n, none to b", CONVERGE_TIMEOUT, || {
            c.has_route_to("h1", "n") && c.route("h1", c.workload("b").ip()).is_empty()
        });
        c.assert_matrix(&[
            allow("a", "n", 80),
            deny("a", "n", 443),
            deny("a", "b", 80),
            deny("a", "z", 80),
        ]);
        // The resumed watch was told "compacted": exactly one resync, for
        // that reason, and the agent says so in its log.
        assert_eq!(
            c.metric_sum("h1", COMPACTED_RESYNCS),
            compacted_before + 1.0,
            "no compacted resync counted:\n{}",
            c.metrics("h1")
        );
        assert_eq!(
            c.metric_sum("h1", RECONNECT_RESYNCS),
            reconnect_resyncs_before
        );
        assert!(
            c.agent_log("h1")
                .contains("etcd watch fell behind a compaction"),
            "{}",
            c.agent_log_tail("h1", 30)
        );
    }

    const COMPACTED_RESYNCS: &str = "margay_datastore_resyncs_total{reason=\"compacted\"}";
    const RECONNECT_RESYNCS: &str = "margay_datastore_resyncs_total{reason=\"reconnect\"}";
}
