//! Firewall read-back (issue 9, case 5) on the real kernel, both backends:
//!
//! * a refresh with no foreign change does not dump our objects (nftables:
//!   the manager skips on the nf_tables generation; iptables-nft: the
//!   backend reuses its last `iptables-save`), and a change made by someone
//!   else with the kernel tools is still found and repaired;
//! * a read-back runs beside the writer: an apply lands while a read-back
//!   of a big ruleset is still running (seen as events: the apply returned
//!   while the read-back had not), the stale read-back is dropped, and the
//!   next refresh repairs the foreign change.
//!
//! Needs root (network namespaces); under CI a missing root fails.

mod common;

use common::{base_state, wl_if, wl_ip, Lab};
use margay_dataplane::firewall::iptables::{IptablesBackend, Variant};
use margay_dataplane::firewall::lower::endpoint_chain;
use margay_dataplane::firewall::scenario::{changes_between, iface, rule, DesiredBuilder};
use margay_dataplane::firewall::{
    new_backend, BackendKind, FirewallBackend, FirewallManager, FirewallSettings,
};
use margay_dataplane::{Dataplane, DataplaneConfig};
use margay_policy::desired::{Direction, PortRange, Protocol, RuleAction};
use margay_tests::netns::{require_root, TestNetns};

/// Our outbound chain of workload 1, as the kernel names it.
fn victim() -> String {
    endpoint_chain(Direction::Outbound, &iface(&wl_if(1)))
        .as_str()
        .to_owned()
}

/// Someone else appends a rule to one of our chains with the kernel tool.
fn tamper(ns: &TestNetns, kind: BackendKind, variant: Variant) {
    let chain = victim();
    match kind {
        BackendKind::Nftables => {
            ns.exec_ok(&["nft", "add", "rule", "inet", "margay", &chain, "accept"]);
        }
        _ => {
            let bin = match variant {
                Variant::Nft => "iptables-nft",
                Variant::Legacy => "iptables-legacy",
            };
            ns.exec_ok(&[bin, "-w", "-A", &chain, "-j", "ACCEPT"]);
        }
    }
}

#[test]
fn nftables_refresh_dumps_only_after_a_foreign_change() {
    if !require_root("nftables_refresh_dumps_only_after_a_foreign_change") {
        return;
    }
    let lab = Lab::new("rb-nft", 2);
    let settings = FirewallSettings::default();
    let s0 = base_state(2).build();
    let mut m = FirewallManager::new(new_backend(BackendKind::Nftables, &lab.target).expect("nft"));
    m.start().expect("start");
    m.apply(&s0, &changes_between(&Default::default(), &s0), &settings)
        .expect("apply");
    let before = m.readback_stats();
    for _ in 0..3 {
        assert!(m.repair_drift(&s0, &settings).expect("refresh").is_clean());
    }
    let quiet = m.readback_stats();
    assert_eq!(
        quiet.performed, before.performed,
        "no dump without a change: {quiet:?}"
    );
    assert_eq!(quiet.skipped, before.skipped + 3, "{quiet:?}");

    // An incremental apply of ours keeps the generation known.
    let mut b1 = base_state(2);
    b1.profile(
        "client",
        vec![rule(RuleAction::Allow)],
        vec![rule(RuleAction::Allow)],
    );
    let s1 = b1.build();
    m.apply(&s1, &changes_between(&s0, &s1), &settings)
        .expect("apply");
    assert!(m.repair_drift(&s1, &settings).expect("refresh").is_clean());
    assert_eq!(
        m.readback_stats().performed,
        before.performed,
        "own write: no dump"
    );

    tamper(&lab.host, BackendKind::Nftables, Variant::Nft);
    let report = m.repair_drift(&s1, &settings).expect("repair");
    assert_eq!(
        report.chains.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        vec![victim().as_str()],
        "{report:?}"
    );
    assert_eq!(m.readback_stats().performed, before.performed + 1);
    assert!(m.repair_drift(&s1, &settings).expect("check").is_clean());
    assert_eq!(
        m.readback_stats().performed,
        before.performed + 1,
        "clean again after our own repair"
    );
    assert!(!lab
        .host
        .exec_ok(&["nft", "list", "chain", "inet", "margay", &victim()])
        .lines()
        .any(|l| l.trim() == "accept"));
}

fn iptables_saves_only_after_a_foreign_change(variant: Variant) {
    let lab = Lab::new("rb-ipt", 2);
    let settings = FirewallSettings::default();
    let s0 = base_state(2).build();
    let mut be = IptablesBackend::with_variant(&lab.target, variant);
    be.observe().expect("observe");
    let mut m = FirewallManager::new(Box::new(IptablesBackend::with_variant(
        &lab.target,
        variant,
    )));
    m.start().expect("start");
    m.apply(&s0, &changes_between(&Default::default(), &s0), &settings)
        .expect("apply");
    // A separate backend watching the same kernel: read twice, no change between.
    let first = be.observe().expect("observe");
    let n = be.save_runs();
    let second = be.observe().expect("observe");
    assert_eq!(first, second);
    match variant {
        Variant::Nft => assert_eq!(be.save_runs(), n, "nothing changed: iptables-save not run"),
        Variant::Legacy => assert_eq!(be.save_runs(), n + 1, "legacy has no generation"),
    }
    assert!(m.repair_drift(&s0, &settings).expect("refresh").is_clean());

    tamper(&lab.host, BackendKind::Iptables, variant);
    let third = be.observe().expect("observe");
    assert_eq!(
        be.save_runs(),
        n + 1 + u64::from(variant == Variant::Legacy)
    );
    assert_ne!(third, second, "the foreign rule is seen");
    let report = m.repair_drift(&s0, &settings).expect("repair");
    assert_eq!(
        report.chains.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        vec![victim().as_str()],
        "{report:?}"
    );
    assert!(m.repair_drift(&s0, &settings).expect("check").is_clean());
}

#[test]
fn iptables_nft_refresh_saves_only_after_a_foreign_change() {
    if require_root("iptables_nft_refresh_saves_only_after_a_foreign_change") {
        iptables_saves_only_after_a_foreign_change(Variant::Nft);
    }
}

#[test]
fn iptables_legacy_refresh_always_saves_and_finds_a_foreign_change() {
    if require_root("iptables_legacy_refresh_always_saves_and_finds_a_foreign_change") {
        iptables_saves_only_after_a_foreign_change(Variant::Legacy);
    }
}

/// Base state plus profile "big" with `n` inbound rules on workload 0.
fn big_state(n: usize, extra_client_rule: bool) -> margay_policy::desired::DesiredState {
    let mut b: DesiredBuilder = base_state(2);
    let rules = (0..n)
        .map(|i| {
            let mut r = rule(RuleAction::Allow);
            r.protocol = Some(Protocol(6));
            let port = 1000 + (i % 60_000) as u16;
            r.dst.ports = vec![PortRange { lo: port, hi: port }];
            r
        })
        .collect();
    b.profile("big", rules, vec![rule(RuleAction::Allow)]);
    b.endpoint(&wl_if(0), &format!("{}/32", wl_ip(0)), &["web", "big"]);
    if extra_client_rule {
        b.profile(
            "client",
            vec![rule(RuleAction::Allow)],
            vec![rule(RuleAction::Allow)],
        );
    }
    b.build()
}

async fn an_apply_lands_while_a_big_readback_runs(kind: BackendKind, n: usize) {
    let lab = Lab::new("rb-loop", 2);
    let settings = FirewallSettings::default();
    let mut dp = Dataplane::new(DataplaneConfig {
        backend: kind,
        route_protocol: 80,
        netns: Some(lab.host.name().to_owned()),
    })
    .await
    .expect("dataplane");
    dp.start().await.expect("start");
    let s0 = big_state(n, false);
    dp.apply(&s0, &changes_between(&Default::default(), &s0), &settings)
        .await
        .expect("apply big");
    tamper(&lab.host, kind, Variant::Nft);

    // The refresh only starts the read-back and returns.
    let started = dp
        .repair_firewall_drift(&s0, &settings)
        .await
        .expect("refresh");
    assert!(started.is_clean(), "nothing found yet: {started:?}");
    // An unrelated change lands while it runs.
    let s1 = big_state(n, true);
    let applied = dp
        .apply(&s1, &changes_between(&s0, &s1), &settings)
        .await
        .expect("apply small");
    assert!(applied.firewall.ops > 0);
    let still_running = tokio::select! {
        biased;
        _ = dp.firewall_readback_done() => false,
        () = std::future::ready(()) => true,
    };
    assert!(still_running, "the apply waited for the read-back");
    // The read-back ends; it started before our write, so it is dropped.
    let r = dp.firewall_readback_done().await;
    let dropped = dp
        .finish_firewall_readback(r, &s1, &settings)
        .await
        .expect("finish");
    assert!(dropped.is_clean());
    assert_eq!(dp.readback_stats().stale, 1, "{:?}", dp.readback_stats());
    // The next refresh reads again and repairs the foreign rule.
    dp.repair_firewall_drift(&s1, &settings)
        .await
        .expect("refresh");
    let r = dp.firewall_readback_done().await;
    let report = dp
        .finish_firewall_readback(r, &s1, &settings)
        .await
        .expect("finish");
    assert_eq!(
        report.chains.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        vec![victim().as_str()],
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nftables_apply_lands_while_a_big_readback_runs() {
    if require_root("nftables_apply_lands_while_a_big_readback_runs") {
        an_apply_lands_while_a_big_readback_runs(BackendKind::Nftables, 20_000).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_apply_lands_while_a_big_readback_runs() {
    if require_root("iptables_apply_lands_while_a_big_readback_runs") {
        an_apply_lands_while_a_big_readback_runs(BackendKind::Iptables, 20_000).await;
    }
}
