//! The nftables facts both transports share: our table's name, the base
//! chain of each hook, the fingerprint comment, and the checks every value
//! passes before it reaches the kernel, whether as `nft -f` text
//! ([`super::render`]) or as netlink attributes ([`super::netlink`]).
//!
//! Read-back helpers used by both readers (the JSON listing of `nft -j` and
//! the netlink dump) live here too: what a chain or a rule of our table
//! means for the observed ruleset, reading a fingerprint back out of a
//! comment, and turning an address range back into prefixes.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};
use margay_policy::desired::{IpVersion, PortRange};

use crate::firewall::model::{Hook, ObjectName, ObservedRuleset};
use crate::firewall::FirewallError;

/// Our table (family inet).
pub const TABLE: &str = "margay";

/// Every hook we attach to.
pub const HOOKS: [Hook; 4] = [
    Hook::Forward,
    Hook::Input,
    Hook::Output,
    Hook::NatPostrouting,
];

/// What a base chain is: its type, the netfilter hook and the priority.
/// The policy of all of ours is accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    /// The chain's name in our table.
    pub name: &'static str,
    /// The chain type, `filter` or `nat`.
    pub kind: &'static str,
    /// The hook's name in nft syntax.
    pub hook_name: &'static str,
    /// The hook's number (`NF_INET_*`).
    pub hook_number: u32,
    /// The priority's name in nft syntax.
    pub priority_name: &'static str,
    /// The priority's value.
    pub priority: i32,
}

/// The base chain that attaches to `hook`.
pub fn base_chain(hook: Hook) -> BaseChain {
    let filter = |name, hook_name, hook_number| BaseChain {
        name,
        kind: "filter",
        hook_name,
        hook_number,
        priority_name: "filter",
        priority: 0,
    };
    match hook {
        Hook::Input => filter("hook-input", "input", 1),
        Hook::Forward => filter("hook-forward", "forward", 2),
        Hook::Output => filter("hook-output", "output", 3),
        Hook::NatPostrouting => BaseChain {
            name: "hook-nat-post",
            kind: "nat",
            hook_name: "postrouting",
            hook_number: 4,
            priority_name: "srcnat",
            priority: 100,
        },
    }
}

/// The name of the base chain that attaches to `hook`.
pub fn hook_chain(hook: Hook) -> &'static str {
    base_chain(hook).name
}

/// The hook whose base chain is `name`, if it is one of ours.
pub fn hook_of_chain(name: &str) -> Option<Hook> {
    HOOKS.into_iter().find(|h| hook_chain(*h) == name)
}

/// The nft chain spec of `hook`'s base chain.
pub fn hook_spec(hook: Hook) -> String {
    let c = base_chain(hook);
    format!(
        "type {} hook {} priority {}; policy accept",
        c.kind, c.hook_name, c.priority_name
    )
}

/// The comment a rule carries: its fingerprint, 16 hex digits.
pub fn fingerprint_comment(fingerprint: u64) -> String {
    format!("{fingerprint:016x}")
}

/// Reads a rule comment as our fingerprint (0 when it is not one).
pub fn fingerprint_of(comment: Option<&str>) -> u64 {
    comment
        .filter(|c| c.len() == 16)
        .and_then(|c| u64::from_str_radix(c, 16).ok())
        .unwrap_or(0)
}

/// Records a chain of our table seen on read-back: a regular chain of ours
/// is observed (with no rules yet); base chains and foreign names are not.
pub fn record_chain(name: &str, base: bool, out: &mut ObservedRuleset) {
    if base {
        return;
    }
    if let Some(n) = ObjectName::from_kernel(name) {
        out.chains.entry(n).or_default();
    }
}

/// What one rule of our table says on read-back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSeen {
    /// A rule of a base chain, with the chain it jumps to (None: no jump).
    Hook(Hook, Option<ObjectName>),
    /// A rule of one of our regular chains, with its fingerprint (0: none).
    Ours(ObjectName, u64),
}

impl RuleSeen {
    /// Reads a rule of `chain`: `jump` finds the chain it jumps to (only
    /// asked for base chains), `comment` is its comment. None for rules of
    /// chains that are not ours.
    pub fn of(
        chain: &str,
        jump: impl FnOnce() -> Option<ObjectName>,
        comment: Option<&str>,
    ) -> Option<Self> {
        if let Some(hook) = hook_of_chain(chain) {
            return Some(RuleSeen::Hook(hook, jump()));
        }
        let name = ObjectName::from_kernel(chain)?;
        Some(RuleSeen::Ours(name, fingerprint_of(comment)))
    }

    /// Adds the rule to `out`: a hook's jump, or a fingerprint appended to
    /// its chain. False for a base chain rule without a jump (nothing added).
    pub fn record(self, out: &mut ObservedRuleset) -> bool {
        match self {
            RuleSeen::Hook(hook, Some(target)) => {
                out.hooks.insert(hook, target);
            }
            RuleSeen::Hook(_, None) => return false,
            RuleSeen::Ours(name, fp) => out.chains.entry(name).or_default().push(fp),
        }
        true
    }
}

/// The CIDRs covering `lo..=hi` exactly.
pub fn range_to_nets(lo: IpAddr, hi: IpAddr) -> Result<Vec<IpNet>, FirewallError> {
    match (lo, hi) {
        (IpAddr::V4(a), IpAddr::V4(b)) => Ok(Ipv4Subnets::new(a, b, 0).map(IpNet::V4).collect()),
        (IpAddr::V6(a), IpAddr::V6(b)) => Ok(Ipv6Subnets::new(a, b, 0).map(IpNet::V6).collect()),
        _ => Err(FirewallError::Parse {
            what: "nft address range".to_owned(),
            detail: format!("mixed-family range {lo}-{hi}"),
        }),
    }
}

/// The family of an address or prefix.
pub fn net_family(net: &IpNet) -> IpVersion {
    match net {
        IpNet::V4(_) => IpVersion::V4,
        IpNet::V6(_) => IpVersion::V6,
    }
}

/// The rule's family, which a set or ICMP match needs (`what` names the match).
pub fn need_family(
    family: Option<IpVersion>,
    what: &'static str,
) -> Result<IpVersion, FirewallError> {
    family.ok_or(FirewallError::Invalid {
        what,
        value: "match without a family".to_owned(),
    })
}

/// Interface names and prefixes: the Linux charset, at most 15 bytes.
pub fn check_iface(name: &str) -> Result<(), FirewallError> {
    let ok = (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(FirewallError::Invalid {
            what: "interface name",
            value: name.to_owned(),
        })
    }
}

/// Log prefixes: the charset the policy crate validates, bounded.
pub fn check_log_prefix(prefix: &str) -> Result<(), FirewallError> {
    let ok = prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(FirewallError::Invalid {
            what: "log prefix",
            value: prefix.to_owned(),
        })
    }
}

/// Port lists: at least one range, each with `lo <= hi`.
pub fn check_ports(ports: &[PortRange]) -> Result<(), FirewallError> {
    if ports.is_empty() || ports.iter().any(|p| p.lo > p.hi) {
        return Err(FirewallError::Invalid {
            what: "port list",
            value: format!("{ports:?}"),
        });
    }
    Ok(())
}

/// Ports as disjoint sorted ranges (an anonymous interval set must not overlap).
pub fn merge_ports(ports: &[PortRange]) -> Vec<PortRange> {
    let mut v: Vec<PortRange> = ports.to_vec();
    v.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(v.len());
    for p in v {
        match out.last_mut() {
            Some(last) if u32::from(p.lo) <= u32::from(last.hi) + 1 => {
                last.hi = last.hi.max(p.hi);
            }
            _ => out.push(p),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_chains_and_specs_are_the_ones_nft_expects() {
        for h in HOOKS {
            assert_eq!(hook_of_chain(hook_chain(h)), Some(h));
        }
        assert_eq!(hook_of_chain("margay-a"), None);
        assert_eq!(
            hook_spec(Hook::Forward),
            "type filter hook forward priority filter; policy accept"
        );
        assert_eq!(
            hook_spec(Hook::NatPostrouting),
            "type nat hook postrouting priority srcnat; policy accept"
        );
    }

    #[test]
    fn fingerprint_comments_read_back() {
        let c = fingerprint_comment(0x0123_4567_89ab_cdef);
        assert_eq!(c, "0123456789abcdef");
        assert_eq!(fingerprint_of(Some(&c)), 0x0123_4567_89ab_cdef);
        assert_eq!(fingerprint_of(Some("not ours")), 0);
        assert_eq!(fingerprint_of(None), 0);
    }

    #[test]
    fn rules_read_back_as_hook_jumps_or_fingerprints() {
        let a = ObjectName::fixed("margay-a");
        let mut out = ObservedRuleset::default();
        let hook = RuleSeen::of("hook-forward", || Some(a.clone()), None);
        assert_eq!(hook, Some(RuleSeen::Hook(Hook::Forward, Some(a.clone()))));
        assert!(hook.is_some_and(|r| r.record(&mut out)));
        let ours = RuleSeen::of("margay-a", || None, Some("0000000000000007"));
        assert!(ours.is_some_and(|r| r.record(&mut out)));
        assert!(!RuleSeen::Hook(Hook::Input, None).record(&mut out));
        assert_eq!(RuleSeen::of("docker-x", || None, None), None);
        record_chain("hook-input", true, &mut out);
        record_chain("margay-b", false, &mut out);
        assert_eq!(out.hooks.get(&Hook::Forward), Some(&a));
        assert_eq!(out.chains.get(&a), Some(&vec![7]));
        assert_eq!(out.chains.len(), 2);
    }

    #[test]
    fn ports_merge_and_bad_lists_are_refused() {
        let p = |lo, hi| PortRange { lo, hi };
        assert_eq!(
            merge_ports(&[p(8000, 8080), p(80, 80), p(81, 90)]),
            vec![p(80, 90), p(8000, 8080)]
        );
        assert!(check_ports(&[]).is_err());
        assert!(check_ports(&[p(2, 1)]).is_err());
        assert!(check_ports(&[p(1, 2)]).is_ok());
    }
}
