//! `margay check`: drops of other firewalls that would hit workload traffic.
//!
//! A packet is forwarded only if every base chain on the forward hook lets
//! it through, whoever owns the chain. Two kinds of foreign drop are looked
//! for, read-only:
//!
//! * an iptables filter `FORWARD` policy `DROP`, in either variant
//!   (nf_tables or legacy) and family (Docker sets it). The nftables backend
//!   compensates (an accept for workload interfaces there, see
//!   `margay_dataplane::firewall::iptables::forward_accept`); the iptables
//!   backend compensates in the variant it writes to, not in the other one.
//! * an nftables base chain on the forward hook with policy `drop`, in a
//!   table other than `inet margay` (iptables-nft's own `FORWARD` chains
//!   are reported as iptables). margay cannot override it on any backend.
//!
//! [`results`] is pure (unit-tested); [`gather`] runs the tools.

use margay_config::DataplaneKind;
use margay_dataplane::firewall::iptables::forward_accept::{parse_forward, TAG};
use margay_dataplane::firewall::iptables::variant::{self, Variant};
use margay_dataplane::netns::NetnsTarget;
use margay_policy::desired::IpVersion;

use crate::preflight::{find_tool, CheckResult};

const NAME: &str = "foreign forward drop";

/// An iptables filter `FORWARD` chain with policy `DROP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IptablesDrop {
    /// The variant showing it.
    pub variant: Variant,
    /// The family.
    pub family: IpVersion,
}

/// A foreign nftables base chain on the forward hook with policy drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftDrop {
    /// `family table chain`, as `nft list chain` takes them.
    pub chain: String,
}

/// The check lines for what was found (one per finding; one `ok` line
/// when nothing was). `margay_variant`: the variant the iptables backend
/// would write to.
pub fn results(
    backend: DataplaneKind,
    prefixes: &[String],
    margay_variant: Option<Variant>,
    iptables: &[IptablesDrop],
    nft: &[NftDrop],
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let ifaces: Vec<String> = prefixes.iter().map(|p| format!("{p}+")).collect();
    let ifaces = ifaces.join(", ");
    for d in iptables {
        let what = format!(
            "iptables-{} FORWARD policy DROP ({})",
            d.variant.name(),
            family_name(d.family)
        );
        out.push(match backend {
            DataplaneKind::Nftables => CheckResult::ok(
                NAME,
                format!(
                    "{what}: margay keeps an accept for workload interfaces ({ifaces}) \
                     there, comment {TAG}; its nftables chains still enforce policy"
                ),
            ),
            DataplaneKind::Iptables if Some(d.variant) == margay_variant => CheckResult::ok(
                NAME,
                format!("{what}: margay's chains come first there and accept allowed workload traffic"),
            ),
            _ => CheckResult::problem(
                NAME,
                format!("{what}: margay does not write to that variant; allowed workload traffic is dropped"),
                "use one iptables variant on this host, or the nftables backend",
            ),
        });
    }
    for d in nft {
        out.push(CheckResult::problem(
            NAME,
            format!(
                "nftables chain {} (hook forward, policy drop): margay cannot accept in \
                 another table; allowed workload traffic is dropped",
                d.chain
            ),
            format!(
                "accept the workload interfaces ({ifaces}) in that chain, or set its policy to accept"
            ),
        ));
    }
    if out.is_empty() {
        out.push(CheckResult::ok(
            NAME,
            "none: no iptables FORWARD policy DROP, no other nftables forward chain with policy drop",
        ));
    }
    out
}

fn family_name(f: IpVersion) -> &'static str {
    match f {
        IpVersion::V4 => "IPv4",
        IpVersion::V6 => "IPv6",
    }
}

/// The iptables `FORWARD` chains with policy `DROP` (variants whose tools
/// are missing or fail show none).
pub fn iptables_drops() -> Vec<IptablesDrop> {
    let mut out = Vec::new();
    for variant in [Variant::Nft, Variant::Legacy] {
        for family in [IpVersion::V4, IpVersion::V6] {
            let Some(save) = find_tool(variant.save_bin(family)) else {
                continue;
            };
            let Ok(o) = std::process::Command::new(save)
                .stdin(std::process::Stdio::null())
                .output()
            else {
                continue;
            };
            if parse_forward(&String::from_utf8_lossy(&o.stdout)).drops() {
                out.push(IptablesDrop { variant, family });
            }
        }
    }
    out
}

/// Foreign forward-hook base chains with policy drop in `nft -j list
/// chains` output.
pub fn parse_nft_chains(json: &str) -> Vec<NftDrop> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let items = doc
        .get("nftables")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|item| item.get("chain"))
        .filter(|c| field(c, "hook") == "forward" && field(c, "policy") == "drop")
        .filter(|c| !(field(c, "family") == "inet" && field(c, "table") == "margay"))
        // iptables-nft's own FORWARD: reported from iptables-save.
        .filter(|c| {
            !(matches!(field(c, "family"), "ip" | "ip6")
                && field(c, "table") == "filter"
                && field(c, "name") == "FORWARD")
        })
        .map(|c| NftDrop {
            chain: format!(
                "{} {} {}",
                field(c, "family"),
                field(c, "table"),
                field(c, "name")
            ),
        })
        .collect()
}

fn field<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v.get(key).and_then(|x| x.as_str()).unwrap_or_default()
}

/// Runs the tools and returns the check lines.
pub fn gather(backend: DataplaneKind, prefixes: &[String]) -> Vec<CheckResult> {
    if backend == DataplaneKind::None {
        return Vec::new();
    }
    let nft = find_tool("nft")
        .and_then(|nft| {
            std::process::Command::new(nft)
                .args(["-j", "list", "chains"])
                .stdin(std::process::Stdio::null())
                .output()
                .ok()
        })
        .map(|o| parse_nft_chains(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default();
    let margay_variant = match backend {
        DataplaneKind::Iptables => variant::detect(&NetnsTarget::current()).ok(),
        _ => None,
    };
    results(backend, prefixes, margay_variant, &iptables_drops(), &nft)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cali() -> Vec<String> {
        vec!["cali".to_owned()]
    }

    #[test]
    fn nothing_found_is_one_ok_line() {
        let r = results(DataplaneKind::Nftables, &cali(), None, &[], &[]);
        assert_eq!(r.len(), 1);
        assert!(r[0].ok && r[0].detail.starts_with("none"));
    }

    #[test]
    fn iptables_drop_says_what_margay_does() {
        let d = [IptablesDrop {
            variant: Variant::Legacy,
            family: IpVersion::V4,
        }];
        let r = results(DataplaneKind::Nftables, &cali(), None, &d, &[]);
        assert!(r[0].ok, "{r:?}");
        assert!(r[0]
            .detail
            .contains("iptables-legacy FORWARD policy DROP (IPv4): margay keeps an accept"));
        assert!(r[0].detail.contains("cali+"));
        let same = results(
            DataplaneKind::Iptables,
            &cali(),
            Some(Variant::Legacy),
            &d,
            &[],
        );
        assert!(same[0].ok);
        let other = results(
            DataplaneKind::Iptables,
            &cali(),
            Some(Variant::Nft),
            &d,
            &[],
        );
        assert!(!other[0].ok && other[0].detail.contains("does not write to that variant"));
    }

    #[test]
    fn foreign_nft_drop_is_a_problem() {
        let json = r#"{"nftables":[{"metainfo":{}},
          {"chain":{"family":"inet","table":"fw","name":"fwd","hook":"forward","prio":0,"policy":"drop"}},
          {"chain":{"family":"inet","table":"margay","name":"hook-forward","hook":"forward","policy":"drop"}},
          {"chain":{"family":"ip","table":"filter","name":"FORWARD","hook":"forward","policy":"drop"}},
          {"chain":{"family":"inet","table":"ok","name":"fwd","hook":"forward","policy":"accept"}},
          {"chain":{"family":"inet","table":"fw","name":"in","hook":"input","policy":"drop"}},
          {"chain":{"family":"inet","table":"fw","name":"plain"}}]}"#;
        let found = parse_nft_chains(json);
        assert_eq!(
            found,
            vec![NftDrop {
                chain: "inet fw fwd".into()
            }]
        );
        let r = results(DataplaneKind::Nftables, &cali(), None, &[], &found);
        assert!(!r[0].ok && r[0].detail.contains("inet fw fwd"), "{r:?}");
        assert!(parse_nft_chains("not json").is_empty());
    }
}
