//! The four firewall backends the kernel tests run against, as constructors
//! for a namespace: nftables over netlink (the default) and through the
//! `nft` tool, iptables-nft and iptables-legacy.

use margay_dataplane::firewall::iptables::{IptablesBackend, Variant};
use margay_dataplane::firewall::nft::{NftBackend, NftMode};
use margay_dataplane::firewall::{new_backend, BackendKind, FirewallBackend, FirewallError};
use margay_dataplane::netns::NetnsTarget;

/// nftables over netlink (the agent's default).
pub fn nft_netlink(ns: &NetnsTarget) -> Result<Box<dyn FirewallBackend>, FirewallError> {
    new_backend(BackendKind::Nftables, ns)
}

/// nftables through the `nft` tool.
pub fn nft_tool(ns: &NetnsTarget) -> Result<Box<dyn FirewallBackend>, FirewallError> {
    Ok(Box::new(NftBackend::with_mode(ns.clone(), NftMode::Tool)?))
}

/// iptables-nft with ipset.
pub fn ipt_nft(ns: &NetnsTarget) -> Result<Box<dyn FirewallBackend>, FirewallError> {
    Ok(Box::new(IptablesBackend::with_variant(ns, Variant::Nft)))
}

/// iptables-legacy with ipset.
pub fn ipt_legacy(ns: &NetnsTarget) -> Result<Box<dyn FirewallBackend>, FirewallError> {
    Ok(Box::new(IptablesBackend::with_variant(ns, Variant::Legacy)))
}
