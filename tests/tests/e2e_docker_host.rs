//! End-to-end, one Docker host (issue 10, point 4): the host namespace gets
//! what `dockerd` does to iptables (`FORWARD` policy `DROP`, the `DOCKER*`
//! chains) and a foreign nftables table with base chains of its own, then
//! the real `margay run` starts. Allowed flows pass and denied ones are
//! dropped (real TCP), across a restart; the foreign state is byte for byte
//! what it was; `margay check` reports the drop and what margay does about
//! it. On both backends.

use margay_tests::both_backends;
use margay_tests::docker::{
    add_foreign_nft, make_docker_host, margay_forward_rules, ForeignState, Iptables,
};
use margay_tests::sandbox::{
    allow, deny, margay_bin, wait_for, Cluster, Dataplane, Probe, CONVERGE_TIMEOUT, ETCD_IP,
};
use serde_json::json;

both_backends!(policy_holds_on_a_docker_host);

fn matrix() -> Vec<Probe> {
    vec![
        allow("friend", "srv", 80),
        deny("stranger", "srv", 80),
        deny("friend", "srv", 81),
        deny("srv", "friend", 80),
    ]
}

/// `margay check` on h1: its whole output.
fn margay_check(c: &Cluster) -> String {
    let out = c.host("h1").ns().exec(&[
        margay_bin().to_str().expect("utf8"),
        "check",
        "--config",
        "/dev/null",
        "--hostname",
        "h1",
        "--etcd-endpoints",
        &format!("http://{ETCD_IP}:2379"),
        "--dataplane",
        c.dataplane().as_str(),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn policy_holds_on_a_docker_host(dp: Dataplane) {
    let mut c = Cluster::builder()
        .hosts(1)
        .dataplane(dp)
        .start_agents(false)
        .agent_arg("--refresh-interval")
        .agent_arg("1")
        .build();
    make_docker_host(c.host("h1").ns(), Iptables::Nft);
    add_foreign_nft(c.host("h1").ns());
    let before = ForeignState::read(c.host("h1").ns());

    let outbound_only = json!({"inbound_rules": [], "outbound_rules": [{"action": "allow"}]});
    c.put_profile_rules(
        "SRV",
        &json!({
            "inbound_rules": [{"action": "allow", "protocol": "tcp", "dst_ports": [80],
                               "src_tag": "FRIEND"}],
            "outbound_rules": [{"action": "allow"}]
        }),
    );
    c.put_profile_rules("FRIENDS", &outbound_only);
    c.put_profile_tags("FRIENDS", &["FRIEND"]);
    c.put_profile_rules("PLAIN", &outbound_only);
    for (name, ip) in [
        ("srv", "10.65.1.10"),
        ("friend", "10.65.1.11"),
        ("stranger", "10.65.1.12"),
    ] {
        c.add_workload(name, "h1", ip);
    }
    c.put_endpoint("srv", &["SRV"], &json!({}));
    c.put_endpoint("friend", &["FRIENDS"], &json!({}));
    c.put_endpoint("stranger", &["PLAIN"], &json!({}));

    c.start_agent("h1");
    c.assert_matrix(&matrix());
    before.assert_unchanged(c.host("h1").ns(), "by the start");

    assert_eq!(c.stop_agent("h1"), Some(0));
    c.start_agent("h1");
    c.assert_matrix(&matrix());
    before.assert_unchanged(c.host("h1").ns(), "by the restart");

    let check = margay_check(&c);
    let expected = match dp {
        Dataplane::Iptables => {
            "foreign forward drop (iptables-nft FORWARD policy DROP (IPv4): margay's chains come first"
        }
        _ => "foreign forward drop (iptables-nft FORWARD policy DROP (IPv4): margay keeps an accept for workload interfaces (cali+)",
    };
    assert!(check.contains(expected), "{check}");
    assert!(check.contains("(IPv6)"), "{check}");

    if dp == Dataplane::Nftables {
        accept_is_repaired(&c);
    }

    // A drop in another nftables table: margay cannot override it; check says so.
    let ns = c.host("h1").ns();
    ns.exec_ok(&["nft", "add", "table", "inet", "strict"]);
    ns.exec_ok(&[
        "nft",
        "add chain inet strict gate { type filter hook forward priority 0; policy drop; }",
    ]);
    let check = margay_check(&c);
    assert!(
        check.contains(
            "PROBLEM  foreign forward drop: nftables chain inet strict gate (hook forward, policy drop)"
        ),
        "{check}"
    );
}

/// Someone deletes the IPv4 accepts: the agent's next refresh puts them
/// back and counts the repair.
fn accept_is_repaired(c: &Cluster) {
    let ns = c.host("h1").ns();
    let rules = margay_forward_rules(ns, Iptables::Nft);
    assert_eq!(rules.len(), 4, "{rules:#?}");
    for flag in ["-i", "-o"] {
        ns.exec_ok(&[
            "iptables-nft",
            "-D",
            "FORWARD",
            flag,
            "cali+",
            "-m",
            "comment",
            "--comment",
            "margay-workload-accept",
            "-j",
            "ACCEPT",
        ]);
    }
    let series = "margay_drift_repairs_total{object=\"forward_accept\"}";
    wait_for("the accept repaired", CONVERGE_TIMEOUT, || {
        c.metric_sum("h1", series) >= 2.0
    });
    assert_eq!(margay_forward_rules(ns, Iptables::Nft), rules);
    c.assert_matrix(&matrix());
}
