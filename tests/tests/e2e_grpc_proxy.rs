//! End-to-end, one host: the agent reaches etcd only through etcd's own
//! `grpc-proxy` (`etcd grpc-proxy start`, the fan-out layout of the README's
//! "Large clusters"), unchanged. It syncs and programs the kernel through
//! the proxy; when the proxy is killed and started again on the same
//! address it resumes its watch from its last revision (no re-list) and
//! applies everything written during the outage and after; when the history
//! was compacted during the outage it lists again through the proxy and
//! converges.

use std::time::Duration;

use margay_tests::sandbox::{
    allow, allow_all_rules, deny, eventually, wait_for, Cluster, Dataplane, Probe,
    CONVERGE_TIMEOUT, GRPC_PROXY_PORT,
};
use serde_json::json;

const CONNECTED: &str = "margay_datastore_connected";
const RECONNECT_RESYNCS: &str = "margay_datastore_resyncs_total{reason=\"reconnect\"}";
const COMPACTED_RESYNCS: &str = "margay_datastore_resyncs_total{reason=\"compacted\"}";
/// How long the agent may take to notice the proxy is gone.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(15);

/// Kill the proxy, write, start it again: the watch resumes from the last
/// revision through the new proxy process, and every write is applied.
#[test]
fn watch_resumes_through_a_restarted_grpc_proxy() {
    if !margay_tests::netns::require_root("watch_resumes_through_a_restarted_grpc_proxy") {
        return;
    }
    let mut c = three_workloads_through_proxy();
    let reconnects_before = c.metric_sum("h1", RECONNECT_RESYNCS);
    let compacted_before = c.metric_sum("h1", COMPACTED_RESYNCS);

    kill_proxy_and_wait_disconnected(&mut c);
    // Written while the proxy is down: the two profiles swap their rules.
    c.put_profile_rules("CLOSED", &allow_all_rules());
    c.put_profile_rules("OPEN", &json!({"outbound_rules": [{"action": "allow"}]}));
    // Still the old state: nothing reaches the agent.
    c.assert_matrix(&[allow("a", "b", 80), deny("a", "z", 80)]);

    c.start_grpc_proxy();
    // Written after the restart: a new endpoint.
    c.add_workload("n", "h1", "10.65.1.5");
    c.put_endpoint("n", &["CLOSED"], &json!({}));
    c.assert_matrix(&[
        allow("a", "z", 80),
        allow("a", "n", 443),
        deny("z", "a", 80),
        deny("a", "b", 80),
    ]);
    assert_eq!(c.metric_sum("h1", CONNECTED), 1.0);
    // Resumed, not re-listed: no resync of any kind, and the log says so.
    assert_eq!(
        c.metric_sum("h1", RECONNECT_RESYNCS),
        reconnects_before,
        "the agent listed again instead of resuming its watch:\n{}",
        c.agent_log_tail("h1", 30)
    );
    assert_eq!(c.metric_sum("h1", COMPACTED_RESYNCS), compacted_before);
    assert!(
        c.agent_log("h1").contains("etcd watch resumed"),
        "no resumed watch in the log:\n{}",
        c.agent_log_tail("h1", 30)
    );
}

/// Kill the proxy, write, compact the history past the agent's revision,
/// start the proxy again: the resumed watch is told "compacted" through the
/// proxy, the agent lists again through it once and converges.
#[test]
fn compaction_during_a_grpc_proxy_outage_relists_through_it() {
    if !margay_tests::netns::require_root(
        "compaction_during_a_grpc_proxy_outage_relists_through_it",
    ) {
        return;
    }
    let mut c = three_workloads_through_proxy();
    let compacted_before = c.metric_sum("h1", COMPACTED_RESYNCS);

    kill_proxy_and_wait_disconnected(&mut c);
    c.delete(&c.endpoint_key("b"));
    c.put_profile_rules(
        "OPEN",
        &json!({"inbound_rules": [{"protocol": "tcp", "dst_ports": [80]}],
                "outbound_rules": [{"action": "allow"}]}),
    );
    c.bury_history();

    c.start_grpc_proxy();
    wait_for("the route to b to go", CONVERGE_TIMEOUT, || {
        c.route("h1", c.workload("b").ip()).is_empty()
    });
    c.assert_matrix(&[allow("z", "a", 80), deny("z", "a", 443), deny("a", "b", 80)]);
    assert_eq!(
        c.metric_sum("h1", COMPACTED_RESYNCS),
        compacted_before + 1.0,
        "no compacted resync counted:\n{}",
        c.metrics("h1")
    );
    assert!(
        c.agent_log("h1")
            .contains("etcd watch fell behind a compaction"),
        "{}",
        c.agent_log_tail("h1", 30)
    );
}

/// One host whose agent is pointed at the grpc-proxy only, with two open
/// workloads and one that accepts nothing, converged through the proxy.
fn three_workloads_through_proxy() -> Cluster {
    let mut c = Cluster::builder()
        .hosts(1)
        .dataplane(Dataplane::Nftables)
        .through_grpc_proxy()
        .build();
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.put_profile_rules("CLOSED", &json!({"outbound_rules": [{"action": "allow"}]}));
    c.add_workload("a", "h1", "10.65.1.2");
    c.add_workload("b", "h1", "10.65.1.3");
    c.add_workload("z", "h1", "10.65.1.4");
    c.put_endpoint("a", &["OPEN"], &json!({}));
    c.put_endpoint("b", &["OPEN"], &json!({}));
    c.put_endpoint("z", &["CLOSED"], &json!({}));
    c.assert_matrix(&baseline());
    let via_proxy = format!(":{GRPC_PROXY_PORT}");
    assert!(
        c.agent_log("h1")
            .lines()
            .any(|l| l.contains("connected to etcd") && l.contains(&via_proxy)),
        "the agent did not connect through the proxy:\n{}",
        c.agent_log_tail("h1", 30)
    );
    c
}

fn baseline() -> Vec<Probe> {
    vec![
        allow("a", "b", 80),
        allow("b", "a", 443),
        allow("z", "a", 80),
        deny("a", "z", 80),
    ]
}

/// Kills the proxy and waits until the agent says it lost etcd (and is
/// still running, keeping the dataplane as it was).
fn kill_proxy_and_wait_disconnected(c: &mut Cluster) {
    c.kill_grpc_proxy();
    assert!(
        eventually(NOTICE_TIMEOUT, || c.metric("h1", CONNECTED) == Some(0.0)),
        "the agent did not notice the proxy was gone:\n{}",
        c.agent_log_tail("h1", 30)
    );
    assert!(c.agent_running("h1"), "the agent exited without its proxy");
}
