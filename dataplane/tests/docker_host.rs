//! Docker hosts (issue 10, point 4), against the real kernel.
//!
//! The lab's host namespace is made to look like a Docker host (`iptables -P
//! FORWARD DROP` and the `DOCKER*` chains, for IPv4 and IPv6, with one
//! iptables variant's commands); then the real dataplane programs the base
//! scenario on either backend. Real packets: what the policy allows flows,
//! what it denies is dropped. On nftables that takes margay's accept in the
//! iptables `FORWARD` chain, which is managed like margay's other objects:
//! adopted on restart, repaired on drift, removed on a switch to iptables.
//! Foreign state (a foreign nft table with base chains, the DOCKER chains)
//! is byte for byte the same after start, refresh, drift repair and restart.

mod common;

use std::time::Duration;

use common::{base_state, wl_ip, Lab};
use margay_dataplane::firewall::scenario::changes_between;
use margay_dataplane::firewall::{BackendKind, DriftReport, FirewallSettings};
use margay_dataplane::{ApplyReport, Dataplane, DataplaneConfig};
use margay_policy::desired::DesiredState;
use margay_tests::docker::{
    add_foreign_nft, make_docker_host, margay_forward_rules, ForeignState, Iptables,
};
use margay_tests::netns::require_root;

async fn start(lab: &Lab, backend: BackendKind, desired: &DesiredState) -> Dataplane {
    start_report(lab, backend, desired).await.0
}

/// [`start`], also returning what the first apply wrote.
async fn start_report(
    lab: &Lab,
    backend: BackendKind,
    desired: &DesiredState,
) -> (Dataplane, ApplyReport) {
    let mut dp = Dataplane::new(DataplaneConfig {
        backend,
        route_protocol: 77,
        netns: Some(lab.host.name().to_owned()),
    })
    .await
    .expect("dataplane opens");
    dp.start().await.expect("dataplane starts");
    let report = dp
        .apply(
            desired,
            &changes_between(&DesiredState::default(), desired),
            &FirewallSettings::default(),
        )
        .await
        .expect("apply");
    (dp, report)
}

/// One periodic refresh, waited for to its end (the background read-back
/// too, when one was started).
async fn refresh(dp: &mut Dataplane, desired: &DesiredState) -> DriftReport {
    let settings = FirewallSettings::default();
    let skipped = dp.readback_stats().skipped;
    let mut report = dp
        .repair_firewall_drift(desired, &settings)
        .await
        .expect("refresh");
    if dp.readback_stats().skipped == skipped {
        let r = tokio::time::timeout(Duration::from_secs(20), dp.firewall_readback_done())
            .await
            .expect("the read-back ends");
        let more = dp
            .finish_firewall_readback(r, desired, &settings)
            .await
            .expect("finish read-back");
        report.ops += more.ops;
        report.chains.extend(more.chains);
        report.hooks.extend(more.hooks);
    }
    report
}

/// Allowed flows pass, denied ones are dropped (base scenario: "client"
/// (1) may ping and reach tcp/8080 on "web" (0); nothing gets into client).
fn assert_policy_holds(lab: &Lab, when: &str) {
    let _web = lab.listen(0, 8080);
    assert!(lab.ping(1, &wl_ip(0)), "{when}: allowed ping dropped");
    assert!(
        lab.connect(1, &wl_ip(0), 8080),
        "{when}: allowed tcp/8080 dropped"
    );
    assert!(!lab.ping(0, &wl_ip(1)), "{when}: denied ping passed");
    assert!(
        !lab.connect(0, &wl_ip(1), 8080),
        "{when}: denied tcp passed"
    );
}

fn accept_rules(lab: &Lab, v: Iptables) -> Vec<String> {
    margay_forward_rules(&lab.host, v)
}

fn other(v: Iptables) -> Iptables {
    match v {
        Iptables::Nft => Iptables::Legacy,
        Iptables::Legacy => Iptables::Nft,
    }
}

async fn nftables_on_docker_host(v: Iptables, tag: &str) {
    let lab = Lab::new(tag, 2);
    make_docker_host(&lab.host, v);
    let desired = base_state(2).build();
    let (dp, first) = start_report(&lab, BackendKind::Nftables, &desired).await;
    assert_eq!(first.forward_accepts, 4, "{first:?}");
    assert_policy_holds(&lab, "started");
    // Two rules (in and out of cali+) per family, where Docker's drop is only.
    let rules = accept_rules(&lab, v);
    assert_eq!(rules.len(), 4, "{rules:#?}");
    assert!(rules.iter().all(|r| r.ends_with("-j ACCEPT")), "{rules:#?}");
    for v6 in [false, true] {
        let other = lab.host.exec_ok(&[&other(v).save_bin(v6)]);
        assert!(
            other.trim().is_empty(),
            "a table appeared in the other variant:\n{other}"
        );
    }

    // Restart: adopted, nothing rewritten.
    drop(dp);
    let (mut dp, again) = start_report(&lab, BackendKind::Nftables, &desired).await;
    assert_eq!(again.forward_accepts, 0, "restart rewrote the accept");
    assert_eq!(again.firewall.ops, 0, "restart rewrote the firewall");
    assert_eq!(accept_rules(&lab, v), rules);
    assert!(refresh(&mut dp, &desired).await.is_clean());

    // Drift: someone deletes both IPv4 accepts; allowed traffic stops until
    // the next refresh puts them back.
    for flag in ["-i", "-o"] {
        lab.host.exec_ok(&[
            v.bin(false),
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
    assert!(!lab.ping(1, &wl_ip(0)), "Docker's policy drops again");
    let report = refresh(&mut dp, &desired).await;
    assert_eq!(report.forward_accepts, 2, "{report:?}");
    assert_eq!(accept_rules(&lab, v), rules);
    assert_policy_holds(&lab, "repaired");

    // Docker's policy back to ACCEPT: the accepts are not needed and go.
    for v6 in [false, true] {
        lab.host.exec_ok(&[v.bin(v6), "-P", "FORWARD", "ACCEPT"]);
    }
    let report = refresh(&mut dp, &desired).await;
    assert_eq!(report.forward_accepts, 4, "{report:?}");
    assert!(accept_rules(&lab, v).is_empty());
    assert_policy_holds(&lab, "policy accept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nftables_backend_on_iptables_nft_docker_host() {
    if require_root("nftables_backend_on_iptables_nft_docker_host") {
        nftables_on_docker_host(Iptables::Nft, "dk-nn").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nftables_backend_on_iptables_legacy_docker_host() {
    if require_root("nftables_backend_on_iptables_legacy_docker_host") {
        nftables_on_docker_host(Iptables::Legacy, "dk-nl").await;
    }
}

async fn iptables_on_docker_host(v: Iptables, tag: &str) {
    let lab = Lab::new(tag, 2);
    make_docker_host(&lab.host, v);
    let desired = base_state(2).build();
    let _dp = start(&lab, BackendKind::Iptables, &desired).await;
    assert_policy_holds(&lab, "started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_backend_on_iptables_nft_docker_host() {
    if require_root("iptables_backend_on_iptables_nft_docker_host") {
        iptables_on_docker_host(Iptables::Nft, "dk-in").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_backend_on_iptables_legacy_docker_host() {
    if require_root("iptables_backend_on_iptables_legacy_docker_host") {
        iptables_on_docker_host(Iptables::Legacy, "dk-il").await;
    }
}

/// Switching nftables -> iptables removes the accept; iptables ->
/// nftables (the clean-up of iptables objects at start) keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_switch_removes_or_keeps_the_accept() {
    if !require_root("backend_switch_removes_or_keeps_the_accept") {
        return;
    }
    let lab = Lab::new("dk-sw", 2);
    let v = Iptables::Nft;
    make_docker_host(&lab.host, v);
    let desired = base_state(2).build();
    let dp = start(&lab, BackendKind::Nftables, &desired).await;
    assert_eq!(accept_rules(&lab, v).len(), 4);
    drop(dp);
    let dp = start(&lab, BackendKind::Iptables, &desired).await;
    assert!(
        accept_rules(&lab, v)
            .iter()
            .all(|r| !r.contains("margay-workload-accept")),
        "the iptables backend left the accept"
    );
    assert_policy_holds(&lab, "on iptables");
    drop(dp);
    let _dp = start(&lab, BackendKind::Nftables, &desired).await;
    let rules = accept_rules(&lab, v);
    assert_eq!(rules.len(), 4, "{rules:#?}");
    assert!(rules.iter().all(|r| r.contains("margay-workload-accept")));
    assert_policy_holds(&lab, "back on nftables");
}

/// Deletes one object of margay's, per backend.
fn tamper(lab: &Lab, backend: BackendKind) {
    match backend {
        BackendKind::Nftables => {
            lab.host
                .exec_ok(&["nft", "flush", "chain", "inet", "margay", "hook-forward"]);
        }
        _ => {
            let save = lab.host.exec_ok(&["iptables-nft-save", "-t", "filter"]);
            let hook = save
                .lines()
                .find(|l| l.starts_with("-A FORWARD") && l.contains("-j margay-"))
                .expect("margay's FORWARD hook rule");
            let mut args = vec!["iptables-nft", "-D"];
            args.extend(hook.trim_start_matches("-A ").split_whitespace());
            lab.host.exec_ok(&args);
        }
    }
}

async fn foreign_state_survives(backend: BackendKind, tag: &str) {
    let lab = Lab::new(tag, 2);
    make_docker_host(&lab.host, Iptables::Nft);
    add_foreign_nft(&lab.host);
    let before = ForeignState::read(&lab.host);
    assert!(
        before.iptables_nft.contains(":FORWARD DROP")
            && before.iptables_nft.contains("DOCKER-USER")
    );

    let desired = base_state(2).build();
    let mut dp = start(&lab, BackendKind::Nftables, &desired).await;
    if backend == BackendKind::Iptables {
        drop(dp);
        dp = start(&lab, backend, &desired).await;
    }
    assert_policy_holds(&lab, "started");
    before.assert_unchanged(&lab.host, "after start");
    assert!(refresh(&mut dp, &desired).await.is_clean());
    before.assert_unchanged(&lab.host, "after refresh");
    tamper(&lab, backend);
    assert!(!refresh(&mut dp, &desired).await.is_clean(), "drift found");
    before.assert_unchanged(&lab.host, "after drift repair");
    drop(dp);
    let mut dp = start(&lab, backend, &desired).await;
    assert!(refresh(&mut dp, &desired).await.is_clean());
    before.assert_unchanged(&lab.host, "after restart");
    assert_policy_holds(&lab, "restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nftables_leaves_foreign_state_byte_for_byte() {
    if require_root("nftables_leaves_foreign_state_byte_for_byte") {
        foreign_state_survives(BackendKind::Nftables, "dk-fn").await;
    }
}

/// Also covers the switch from nftables: the clean-up removes only margay's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_leaves_foreign_state_byte_for_byte() {
    if require_root("iptables_leaves_foreign_state_byte_for_byte") {
        foreign_state_survives(BackendKind::Iptables, "dk-fi").await;
    }
}
