//! Firewall conformance: one suite (`common`), run against every backend.
//!
//! Needs root (network namespaces); under CI a missing root fails instead
//! of skipping. Add a backend with one line:
//! `conformance_suite!(name, make_backend_fn, dump_fn);`

mod common;

use common::backends::{ipt_legacy, ipt_nft, nft_netlink, nft_tool};
use common::Backend;
use margay_dataplane::firewall::iptables::Variant;
use margay_dataplane::firewall::nft::{NftBackend, NftMode};
use margay_dataplane::firewall::{new_backend, BackendKind, FirewallBackend};
use margay_dataplane::netns::NetnsTarget;
use margay_policy::desired::IpVersion;
use margay_tests::netns::TestNetns;

macro_rules! conformance_suite {
    ($name:ident, $make:expr, $dump:expr) => {
        mod $name {
            use super::*;
            const B: Backend = Backend {
                make: $make,
                dump: $dump,
            };
            #[test]
            fn programs_and_shows_state() {
                common::programs_and_shows_state(B)
            }
            #[test]
            fn packets_follow_policy() {
                common::packets_follow_policy(B)
            }
            #[test]
            fn tiers_decide_first() {
                common::tiers_decide_first(B)
            }
            #[test]
            fn changes_write_only_the_delta() {
                common::changes_write_only_the_delta(B)
            }
            #[test]
            fn restart_is_seamless() {
                common::restart_is_seamless(B)
            }
            #[test]
            fn drift_is_repaired() {
                common::drift_is_repaired(B)
            }
            #[test]
            fn host_access_and_nat() {
                common::host_access_and_nat(B)
            }
            #[test]
            fn nested_pools_apply_first_time() {
                common::nested_pools_apply_first_time(B)
            }
        }
    };
}

fn nft_dump(ns: &TestNetns) -> String {
    ns.exec_ok(&["nft", "list", "table", "inet", "margay"])
}

conformance_suite!(nftables, nft_netlink, nft_dump);
conformance_suite!(nftables_tool, nft_tool, nft_dump);

fn ipt_dump_with(ns: &TestNetns, variant: Variant) -> String {
    let mut out = String::new();
    for family in [IpVersion::V4, IpVersion::V6] {
        out.push_str(&ns.exec_ok(&[variant.save_bin(family)]));
    }
    out + &ns.exec_ok(&["ipset", "save"])
}

fn ipt_dump(ns: &TestNetns) -> String {
    ipt_dump_with(ns, Variant::Nft)
}

fn ipt_dump_legacy(ns: &TestNetns) -> String {
    ipt_dump_with(ns, Variant::Legacy)
}

// Both variants by name, whichever one the machine's `iptables` alternative
// points to.
conformance_suite!(iptables, ipt_nft, ipt_dump);
conformance_suite!(iptables_legacy, ipt_legacy, ipt_dump_legacy);

/// nftables only: both transports write and read the same kernel state.
#[test]
fn nft_netlink_and_tool_agree() {
    use margay_dataplane::firewall::diff::observed_of;
    use margay_dataplane::firewall::lower::lower;
    use margay_dataplane::firewall::{FirewallManager, FirewallSettings};
    if !margay_tests::netns::require_root("nft_netlink_and_tool_agree") {
        return;
    }
    let settings = FirewallSettings::default();
    let mut b = common::base_state(3);
    b.set(
        margay_policy::desired::IpSetId::AllPools,
        &["10.65.0.0/16", "fd00::/64", "10.66.0.0/24"],
    );
    let desired = b.build();
    let want = observed_of(&lower(&desired, &settings));
    for (writer, reader) in [
        (NftMode::Netlink, NftMode::Tool),
        (NftMode::Tool, NftMode::Netlink),
    ] {
        let ns = TestNetns::new("cf-agree");
        let target = NetnsTarget::named(ns.name()).expect("name");
        let w = NftBackend::with_mode(target.clone(), writer).expect("backend");
        let mut m = FirewallManager::new(Box::new(w));
        m.apply(&desired, &Default::default(), &settings)
            .expect("apply");
        let mut r = NftBackend::with_mode(target, reader).expect("backend");
        assert_eq!(
            r.observe().expect("observe"),
            want,
            "{writer:?} then {reader:?}"
        );
        let text = nft_dump(&ns);
        assert!(
            text.contains("10.65.0.0/16") && text.contains("fd00::/64"),
            "{text}"
        );
    }
}

/// nftables only: tables that are not ours are never touched.
#[test]
fn nft_leaves_other_tables_alone() {
    use margay_dataplane::firewall::scenario::changes_between;
    use margay_dataplane::firewall::{FirewallManager, FirewallSettings};
    if !margay_tests::netns::require_root("nft_leaves_other_tables_alone") {
        return;
    }
    let ns = TestNetns::new("cf-other");
    let target = NetnsTarget::named(ns.name()).expect("name");
    ns.exec_ok(&["nft", "add table inet other; add chain inet other c { type filter hook forward priority 10; }; add rule inet other c tcp dport 22 counter accept; add set inet other s { type ipv4_addr; elements = { 192.0.2.7 }; }"]);
    let before = ns.exec_ok(&["nft", "list", "table", "inet", "other"]);
    let settings = FirewallSettings::default();
    let s0 = common::base_state(2).build();
    let s1 = common::base_state(3).build();
    let mut m = FirewallManager::new(new_backend(BackendKind::Nftables, &target).expect("backend"));
    m.start().expect("start");
    m.apply(&s0, &changes_between(&Default::default(), &s0), &settings)
        .expect("apply");
    m.apply(&s1, &changes_between(&s0, &s1), &settings)
        .expect("apply");
    assert!(m.repair_drift(&s1, &settings).expect("drift").is_clean());
    let stats = m.stats();
    assert!(stats.chains > 0 && stats.sets > 0);
    let after = ns.exec_ok(&["nft", "list", "table", "inet", "other"]);
    assert_eq!(before, after);
}
