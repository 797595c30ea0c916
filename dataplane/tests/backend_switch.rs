//! Switching firewall backends (issue 9, case 6), against the real kernel.
//!
//! A host programmed by one backend is restarted on the other: at start-up
//! the dataplane removes what the old backend left (only its own objects),
//! so real packets follow the new policy alone, and foreign tables, chains,
//! hook rules and sets are exactly as before.

mod common;

use common::{base_state, wl_ip, Lab};
use margay_dataplane::firewall::iptables::{IptablesBackend, Variant};
use margay_dataplane::firewall::scenario::{changes_between, rule};
use margay_dataplane::firewall::{new_backend, BackendKind, FirewallManager, FirewallSettings};
use margay_dataplane::{Dataplane, DataplaneConfig};
use margay_policy::desired::{DesiredState, RuleAction};
use margay_tests::netns::{require_root, TestNetns};

/// Workload 1 ("client") lets everything in: the old backend's state
/// (client takes nothing in) must no longer block workload 0 -> 1.
fn open_client() -> DesiredState {
    let mut b = base_state(2);
    b.profile(
        "client",
        vec![rule(RuleAction::Allow)],
        vec![rule(RuleAction::Allow)],
    );
    b.build()
}

/// Starts the real dataplane on `backend` in the lab's host namespace and
/// applies `desired`.
async fn start_dataplane(lab: &Lab, backend: BackendKind, desired: &DesiredState) -> Dataplane {
    let mut dp = Dataplane::new(DataplaneConfig {
        backend,
        route_protocol: 77,
        netns: Some(lab.host.name().to_owned()),
    })
    .await
    .expect("dataplane opens");
    dp.start().await.expect("dataplane starts");
    dp.apply(
        desired,
        &changes_between(&DesiredState::default(), desired),
        &FirewallSettings::default(),
    )
    .await
    .expect("apply");
    dp
}

fn old_state_blocks(lab: &Lab, mut m: FirewallManager) {
    let s0 = base_state(2).build();
    m.apply(
        &s0,
        &changes_between(&DesiredState::default(), &s0),
        &FirewallSettings::default(),
    )
    .expect("old backend applies");
    assert!(
        !lab.ping(0, &wl_ip(1)),
        "old policy: client takes nothing in"
    );
}

fn nft_tables(ns: &TestNetns) -> String {
    ns.exec_ok(&["nft", "list", "tables"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nftables_to_iptables_removes_table_inet_margay() {
    if !require_root("nftables_to_iptables_removes_table_inet_margay") {
        return;
    }
    let lab = Lab::new("bs-n2i", 2);
    let nft = new_backend(BackendKind::Nftables, &lab.target).expect("nft backend");
    let mut m = FirewallManager::new(nft);
    m.start().expect("start");
    old_state_blocks(&lab, m);
    // A foreign table with a base chain and a rule: must survive unchanged.
    let foreign = "table inet foreign {\n\tchain c {\n\t\ttype filter hook forward priority 10; \
                   policy accept;\n\t\tip saddr 203.0.113.9 drop\n\t}\n}\n";
    let mut child = lab.host.command(&["nft", "-f", "-"]);
    run_with_stdin(&mut child, foreign);
    let before = lab
        .host
        .exec_ok(&["nft", "list", "table", "inet", "foreign"]);
    assert!(nft_tables(&lab.host).contains("inet margay"));

    let _dp = start_dataplane(&lab, BackendKind::Iptables, &open_client()).await;
    assert!(lab.ping(0, &wl_ip(1)), "the new policy alone decides");
    let tables = nft_tables(&lab.host);
    assert!(!tables.contains("inet margay"), "old table left:\n{tables}");
    assert_eq!(
        lab.host
            .exec_ok(&["nft", "list", "table", "inet", "foreign"]),
        before
    );
}

fn run_with_stdin(cmd: &mut std::process::Command, input: &str) {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    assert!(child.wait().expect("wait").success(), "{input}");
}

fn iptables_bin(v: Variant) -> &'static str {
    match v {
        Variant::Nft => "iptables-nft",
        Variant::Legacy => "iptables-legacy",
    }
}

/// The foreign objects, as listed: the FOREIGN chain, the built-in
/// chains' foreign rules, the foreign set.
fn foreign_listing(ns: &TestNetns, v: Variant) -> String {
    let save = ns.exec_ok(&[v.save_bin(margay_policy::desired::IpVersion::V4)]);
    let mut out: Vec<String> = save
        .lines()
        .filter(|l| l.starts_with("-A ") && !l.contains("margay"))
        .map(str::to_owned)
        .collect();
    out.push(ns.exec_ok(&["ipset", "save", "foreignset"]));
    out.join("\n")
}

async fn iptables_to_nftables(v: Variant, tag: &str) {
    let lab = Lab::new(tag, 2);
    let ipt = IptablesBackend::with_variant(&lab.target, v);
    let mut m = FirewallManager::new(Box::new(ipt));
    m.start().expect("start");
    old_state_blocks(&lab, m);
    let bin = iptables_bin(v);
    lab.host
        .exec_ok(&["ipset", "create", "foreignset", "hash:ip"]);
    lab.host
        .exec_ok(&["ipset", "add", "foreignset", "203.0.113.7"]);
    lab.host.exec_ok(&[bin, "-N", "FOREIGN"]);
    lab.host.exec_ok(&[
        bin,
        "-A",
        "FOREIGN",
        "-m",
        "set",
        "--match-set",
        "foreignset",
        "src",
        "-j",
        "DROP",
    ]);
    lab.host.exec_ok(&[bin, "-A", "FORWARD", "-j", "FOREIGN"]);
    let before = foreign_listing(&lab.host, v);
    assert!(before.contains("-A FOREIGN") && before.contains("203.0.113.7"));
    let save = lab
        .host
        .exec_ok(&[v.save_bin(margay_policy::desired::IpVersion::V4)]);
    assert!(save.contains("margay-"), "old chains are there:\n{save}");

    let _dp = start_dataplane(&lab, BackendKind::Nftables, &open_client()).await;
    assert!(lab.ping(0, &wl_ip(1)), "the new policy alone decides");
    for family in [
        margay_policy::desired::IpVersion::V4,
        margay_policy::desired::IpVersion::V6,
    ] {
        let save = lab.host.exec_ok(&[v.save_bin(family)]);
        assert!(!save.contains("margay"), "old chains left:\n{save}");
    }
    let sets = lab.host.exec_ok(&["ipset", "list", "-n"]);
    assert!(!sets.contains("margay"), "old sets left:\n{sets}");
    assert_eq!(foreign_listing(&lab.host, v), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_nft_to_nftables_removes_chains_hooks_and_sets() {
    if !require_root("iptables_nft_to_nftables_removes_chains_hooks_and_sets") {
        return;
    }
    iptables_to_nftables(Variant::Nft, "bs-i2n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_legacy_to_nftables_removes_chains_hooks_and_sets() {
    if !require_root("iptables_legacy_to_nftables_removes_chains_hooks_and_sets") {
        return;
    }
    iptables_to_nftables(Variant::Legacy, "bs-l2n").await;
}
