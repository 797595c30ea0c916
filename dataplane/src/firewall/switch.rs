//! Clearing out the firewall backend we are *not* using.
//!
//! After a switch of the `dataplane` setting, what the previous backend
//! programmed would keep filtering beside the new one (a drop in either is
//! final). At start-up [`remove_other_backends`] removes it, touching only
//! what the other backend identifies as its own:
//!
//! * using iptables: the nftables table `inet margay` (one transaction),
//!   and the nftables backend's workload accept in iptables `FORWARD`
//!   ([`forward_accept`]: the rules tagged `margay-workload-accept`);
//! * using nftables: in each iptables variant (nf_tables and legacy), the
//!   `margay-` chains and the hook rules in built-in chains that jump to
//!   them, then the `margay-` ipsets. The workload accept in `FORWARD` is
//!   not one of those (no `margay-` chain) and stays.
//!
//! With the `none` backend nothing is removed (another tool owns the
//! firewall). A missing tool means that backend was never used here; any
//! other failure is logged and start-up goes on: the new backend works
//! either way.

use super::iptables::forward_accept::{self, ForwardAccept};
use super::iptables::{IptablesBackend, Variant};
use super::nft::netlink::Session;
use super::{BackendKind, FirewallError};
use crate::netns::NetnsTarget;

/// What was removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// The nftables table `inet margay` was there and is gone.
    pub nft_table: bool,
    /// iptables chains of ours removed (both variants, both families count once).
    pub iptables_chains: usize,
    /// ipsets of ours removed.
    pub ipsets: usize,
    /// Workload accept rules of ours removed from iptables `FORWARD`.
    pub forward_accepts: usize,
    /// Steps that failed (already logged).
    pub failures: usize,
}

impl Removed {
    /// True when nothing was found to remove.
    pub fn is_empty(&self) -> bool {
        !self.nft_table
            && self.iptables_chains == 0
            && self.ipsets == 0
            && self.forward_accepts == 0
    }
}

/// Removes our objects from every backend but `using` (see the module doc).
pub fn remove_other_backends(using: BackendKind, netns: &NetnsTarget) -> Removed {
    let mut removed = Removed::default();
    match using {
        BackendKind::Iptables => {
            remove_nft(netns, &mut removed);
            remove_forward_accepts(netns, &mut removed);
        }
        BackendKind::Nftables => remove_iptables(netns, &mut removed),
        BackendKind::None => {}
    }
    if !removed.is_empty() {
        tracing::info!(
            using = ?using,
            nft_table = removed.nft_table,
            iptables_chains = removed.iptables_chains,
            ipsets = removed.ipsets,
            forward_accepts = removed.forward_accepts,
            "removed what the previous firewall backend left"
        );
    }
    removed
}

fn remove_nft(netns: &NetnsTarget, removed: &mut Removed) {
    match Session::open(netns).and_then(|mut s| s.delete_table()) {
        Ok(gone) => removed.nft_table = gone,
        Err(e) => failed(removed, "nftables table inet margay", &e),
    }
}

fn remove_forward_accepts(netns: &NetnsTarget, removed: &mut Removed) {
    match ForwardAccept::new(netns).remove() {
        Ok(n) => removed.forward_accepts = n,
        Err(e) => failed(removed, forward_accept::TAG, &e),
    }
}

fn remove_iptables(netns: &NetnsTarget, removed: &mut Removed) {
    let mut sets_by = None;
    for variant in [Variant::Nft, Variant::Legacy] {
        let mut b = IptablesBackend::with_variant(netns, variant);
        match b.remove_chains() {
            Ok(n) => {
                removed.iptables_chains += n;
                sets_by.get_or_insert(b);
            }
            Err(e) if tool_missing(&e) => {}
            Err(e) => failed(removed, variant_what(variant), &e),
        }
    }
    // Sets are shared by both variants: destroyed once no chain uses them.
    if let Some(mut b) = sets_by {
        match b.remove_sets() {
            Ok(n) => removed.ipsets = n,
            Err(e) => failed(removed, "ipsets margay-*", &e),
        }
    }
}

fn variant_what(v: Variant) -> &'static str {
    match v {
        Variant::Nft => "iptables-nft chains margay-*",
        Variant::Legacy => "iptables-legacy chains margay-*",
    }
}

/// The tool is not installed: that backend was never used on this host.
fn tool_missing(e: &FirewallError) -> bool {
    matches!(e, FirewallError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

fn failed(removed: &mut Removed, what: &str, e: &FirewallError) {
    removed.failures += 1;
    tracing::warn!(
        object = what,
        error = %e,
        "could not remove what the previous firewall backend left"
    );
}
