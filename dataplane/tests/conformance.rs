//! Firewall conformance: one suite (`common`), run against every backend.
//!
//! Needs root (network namespaces); under CI a missing root fails instead
//! of skipping. Add a backend with one line:
//! `conformance_suite!(name, make_backend_fn, dump_fn);`

mod common;

use common::Backend;
use margay_dataplane::firewall::iptables::{IptablesBackend, Variant};
use margay_dataplane::firewall::nft::{NftBackend, NftMode};
use margay_dataplane::firewall::{new_backend, BackendKind, FirewallBackend, FirewallError};
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
        }
    };
}

fn nft_default(ns: &NetnsTarget) -> Result<Box<dyn FirewallBackend>, FirewallError> {
    new_backend(BackendKind::Nftables, ns)
}

fn nft_tool(ns: &NetnsTarget) -> Result<Box<dyn FirewallBackend>, FirewallError> {
    Ok(Box::new(NftBackend::with_mode(ns.clone(), NftMode::Tool)?))
}

fn nft_dump(ns: &TestNetns) -> String {
    ns.exec_ok(&["nft", "list", "table", "inet", "margay"])
}

conformance_suite!(nftables, nft_default, nft_dump);
conformance_suite!(nftables_tool, nft_tool, nft_dump);

fn ipt_default(ns: &NetnsTarget) -> Result<Box<dyn FirewallBackend>, FirewallError> {
    new_backend(BackendKind::Iptables, ns)
}

fn ipt_legacy(ns: &NetnsTarget) -> Result<Box<dyn FirewallBackend>, FirewallError> {
    Ok(Box::new(IptablesBackend::with_variant(ns, Variant::Legacy)))
}

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

// A fresh namespace has no rules, so detection follows `iptables -V` (nf_tables here).
conformance_suite!(iptables, ipt_default, ipt_dump);
conformance_suite!(iptables_legacy, ipt_legacy, ipt_dump_legacy);
