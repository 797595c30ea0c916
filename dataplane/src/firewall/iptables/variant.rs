//! Which iptables variant (nf_tables or legacy) this host uses.
//!
//! Two variants writing to one host would give two rule sets the kernel both
//! runs, so we never mix: like kube-proxy and Felix we count the rules each
//! variant's `-save` shows and follow the busier one; on a tie (a fresh
//! host) we follow the `iptables` on `PATH` (`iptables -V` names `nf_tables`, else legacy). Every later command uses the
//! chosen variant's own binaries (`iptables-nft-restore`, ...).

use margay_policy::desired::IpVersion;

use super::{dump, exec};
use crate::firewall::FirewallError;
use crate::netns::NetnsTarget;

/// An iptables flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// iptables over nf_tables (`iptables-nft`).
    Nft,
    /// The legacy x_tables kernel interface (`iptables-legacy`).
    Legacy,
}

impl Variant {
    /// Short name (`nft` / `legacy`).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Nft => "nft",
            Variant::Legacy => "legacy",
        }
    }

    /// The `-save` binary for `family`.
    pub fn save_bin(self, family: IpVersion) -> &'static str {
        match (self, family) {
            (Variant::Nft, IpVersion::V4) => "iptables-nft-save",
            (Variant::Nft, IpVersion::V6) => "ip6tables-nft-save",
            (Variant::Legacy, IpVersion::V4) => "iptables-legacy-save",
            (Variant::Legacy, IpVersion::V6) => "ip6tables-legacy-save",
        }
    }

    /// The `-restore` binary for `family`.
    pub fn restore_bin(self, family: IpVersion) -> &'static str {
        match (self, family) {
            (Variant::Nft, IpVersion::V4) => "iptables-nft-restore",
            (Variant::Nft, IpVersion::V6) => "ip6tables-nft-restore",
            (Variant::Legacy, IpVersion::V4) => "iptables-legacy-restore",
            (Variant::Legacy, IpVersion::V6) => "ip6tables-legacy-restore",
        }
    }

    /// Arguments of every restore: keep what is not ours, wait for the xtables lock.
    pub const RESTORE_ARGS: &'static [&'static str] = &["--noflush", "-w", "10"];
}

/// Picks the variant for `netns` (see the module doc).
pub fn detect(netns: &NetnsTarget) -> Result<Variant, FirewallError> {
    let legacy = count_rules(netns, Variant::Legacy);
    let nft = count_rules(netns, Variant::Nft);
    let version = exec::run(netns, "iptables", &["-V"], None)?;
    Ok(choose(legacy, nft, &version))
}

/// The decision: the variant with more rules, else what `iptables -V` says.
pub fn choose(legacy_rules: usize, nft_rules: usize, iptables_version: &str) -> Variant {
    if legacy_rules > nft_rules {
        Variant::Legacy
    } else if nft_rules > legacy_rules || iptables_version.contains("nf_tables") {
        Variant::Nft
    } else {
        Variant::Legacy
    }
}

/// Rules (`-A` lines) a variant shows for both families; a variant whose
/// tools are missing or fail shows none.
fn count_rules(netns: &NetnsTarget, variant: Variant) -> usize {
    [IpVersion::V4, IpVersion::V6]
        .into_iter()
        .filter_map(|f| dump::save(netns, variant, f).ok())
        .map(|text| text.lines().filter(|l| l.starts_with("-A ")).count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busier_variant_wins_then_path_default() {
        assert_eq!(choose(5, 0, "iptables v1.8.9 (nf_tables)"), Variant::Legacy);
        assert_eq!(choose(0, 5, "iptables v1.8.9 (legacy)"), Variant::Nft);
        assert_eq!(choose(0, 0, "iptables v1.8.9 (nf_tables)"), Variant::Nft);
        assert_eq!(choose(2, 2, "iptables v1.8.9 (legacy)"), Variant::Legacy);
        // Before nf_tables there was only legacy.
        assert_eq!(choose(0, 0, "iptables v1.4.21"), Variant::Legacy);
    }

    #[test]
    fn binaries_match_variant_and_family() {
        assert_eq!(
            Variant::Legacy.restore_bin(IpVersion::V6),
            "ip6tables-legacy-restore"
        );
        assert_eq!(Variant::Nft.save_bin(IpVersion::V4), "iptables-nft-save");
    }
}
