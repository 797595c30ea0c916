//! `DefaultEndpointToHostAction` with the real agent and real packets:
//! TCP from workloads to their host's own address, on both backends, while
//! the setting is changed in the datastore under the running agent (global
//! key, then a host key overriding it, then both deleted). Each change must
//! take effect without a restart:
//! - `DROP` (the default): nothing reaches the host;
//! - `ACCEPT`: the workload's outbound policy first, then accepted — even
//!   past a host rule that would drop it (iptables: margay's jump comes
//!   first in `INPUT`);
//! - `RETURN`: the outbound policy, then the host's own rules decide (with
//!   none the traffic passes; with a dropping host rule it is dropped).

use margay_tests::both_backends;
use margay_tests::sandbox::{allow, allow_all_rules, Cluster, Dataplane, PREFIX};
use serde_json::json;

both_backends!(endpoint_to_host_action_changes_live);

/// The host's service port (outside every failsafe list).
const PORT: u16 = 8081;
const SETTING: &str = "DefaultEndpointToHostAction";

fn endpoint_to_host_action_changes_live(dp: Dataplane) {
    let mut c = Cluster::builder().hosts(1).dataplane(dp).build();
    c.listen_on_host("h1", PORT);
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.put_profile_rules(
        "NARROW",
        &json!({"inbound_rules": [{"action": "allow"}],
                "outbound_rules": [{"action": "allow", "protocol": "tcp", "dst_ports": [80]}]}),
    );
    c.add_workload("a", "h1", "10.65.7.2");
    c.add_workload("n", "h1", "10.65.7.3");
    c.put_endpoint("a", &["OPEN"], &json!({}));
    c.put_endpoint("n", &["NARROW"], &json!({}));
    // A positive event first: both endpoints are programmed.
    c.assert_matrix(&[allow("n", "a", 80), allow("a", "n", 443)]);
    let pid = c.agent_pid("h1");

    // DROP by default.
    c.assert_to_host("h1", PORT, &[("a", false), ("n", false)]);

    let global = format!("{PREFIX}/config/{SETTING}");
    let host_key = format!("{PREFIX}/host/h1/config/{SETTING}");
    c.put(&global, "ACCEPT");
    c.assert_to_host("h1", PORT, &[("a", true), ("n", false)]);

    // The host key overrides the global one.
    c.put(&host_key, "DROP");
    c.assert_to_host("h1", PORT, &[("a", false), ("n", false)]);
    c.put(&host_key, "RETURN");
    c.assert_to_host("h1", PORT, &[("a", true), ("n", false)]);

    if dp == Dataplane::Iptables {
        // A host rule dropping the port: RETURN hands the packet to it...
        let ns = c.host("h1").ns();
        let port = PORT.to_string();
        ns.exec_ok(&[
            "iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", &port, "-j", "DROP",
        ]);
        c.assert_to_host("h1", PORT, &[("a", false), ("n", false)]);
    }
    // ...ACCEPT (the global key again, once the host key goes) does not.
    c.delete(&host_key);
    c.assert_to_host("h1", PORT, &[("a", true), ("n", false)]);

    c.delete(&global);
    c.assert_to_host("h1", PORT, &[("a", false), ("n", false)]);

    assert_eq!(c.agent_pid("h1"), pid, "the agent restarted");
    assert!(c.agent_running("h1"), "the agent exited");
    let log = c.agent_log("h1");
    assert!(
        log.contains("settings changed") && log.contains("default_endpoint_to_host_action"),
        "no live settings change in the log:\n{}",
        c.agent_log_tail("h1", 30)
    );
}
