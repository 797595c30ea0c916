//! Firewall backends behind one trait: nftables (default), iptables+ipset, none.
//!
//! The pure parts (`model`, lowering, diff) decide *what* to write; a backend
//! only renders [`FirewallOp`]s into its own syntax and commits them, one
//! transaction per table, and reads back the objects it owns.

pub mod model;

use std::collections::BTreeSet;

use ipnet::IpNet;
use margay_policy::desired::IpVersion;
use thiserror::Error;

use model::{GenericRule, Hook, ObjectName, ObservedRuleset};

/// One change to the firewall, as computed by the pure diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallOp {
    /// Create an empty address set.
    CreateSet { name: ObjectName, family: IpVersion },
    /// Delete a set (after every chain referencing it was rewritten or deleted).
    DeleteSet { name: ObjectName },
    /// Add members to a set.
    AddMembers {
        set: ObjectName,
        family: IpVersion,
        members: BTreeSet<IpNet>,
    },
    /// Remove members from a set.
    RemoveMembers {
        set: ObjectName,
        family: IpVersion,
        members: BTreeSet<IpNet>,
    },
    /// Create the chain if missing, then replace its whole content (flush and refill).
    ReplaceChain {
        name: ObjectName,
        rules: Vec<GenericRule>,
    },
    /// Delete a chain (after every rule jumping to it was rewritten).
    DeleteChain { name: ObjectName },
    /// Make the hook call this chain (first in the hook's chain/base chain).
    AttachHook { hook: Hook, chain: ObjectName },
    /// Stop the hook calling anything: take out the attachment that calls
    /// `chain` (nftables: our base chain of the hook; iptables: our rule in
    /// the built-in chain), before `chain` itself may be deleted.
    DetachHook { hook: Hook, chain: ObjectName },
}

/// Which backend programs the firewall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// nftables: our own `inet margay` table (nat included).
    Nftables,
    /// iptables-restore + ipset, `margay-` prefixed chains.
    Iptables,
    /// Writes nothing; for tests and for hosts where another tool owns the firewall.
    None,
}

/// Why a firewall read or write failed.
#[derive(Debug, Error)]
pub enum FirewallError {
    /// A kernel tool could not be started.
    #[error("could not run {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    /// A kernel tool refused our input.
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },
    /// We could not make sense of what the kernel showed us.
    #[error("could not parse {what}: {detail}")]
    Parse { what: String, detail: String },
    /// A value could not be rendered safely (outside the allowed charset or range).
    #[error("refusing to render {what} {value:?}")]
    Invalid { what: &'static str, value: String },
    /// The target network namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    /// A netlink exchange with the kernel failed.
    #[error("netlink {op} failed: {detail}")]
    Netlink { op: String, detail: String },
}

/// A firewall backend: renders ops in its syntax and owns a set of kernel objects.
pub trait FirewallBackend: Send {
    /// Short name for logs and metric labels (`nftables`, `iptables`, `none`).
    fn name(&self) -> &'static str;

    /// Reads back every object we own (and nothing else): chains as rule
    /// fingerprints, sets with members, hook attachments.
    fn observe(&mut self) -> Result<ObservedRuleset, FirewallError>;

    /// Commits `ops` in one transaction per table. Either all of them take
    /// effect or none do.
    fn write(&mut self, ops: &[FirewallOp]) -> Result<(), FirewallError>;

    /// A cheap token that changes whenever anyone may have changed what
    /// [`FirewallBackend::observe`] reads (nftables: the nf_tables ruleset
    /// generation). `None`: there is none; every read-back reads everything.
    fn generation(&mut self) -> Result<Option<u64>, FirewallError> {
        Ok(None)
    }

    /// The generation right after the last successful
    /// [`FirewallBackend::write`], when that write was one transaction that
    /// bumped it by exactly one (so the generation before it is this minus
    /// one unless someone else committed meanwhile). `None`: unknown.
    fn generation_after_write(&self) -> Option<u64> {
        None
    }

    /// A second backend on the same kernel objects, used only to read them
    /// back on another thread while this one keeps writing. `None`: read-back
    /// runs inline on this one.
    fn observer(&self) -> Result<Option<Box<dyn FirewallBackend>>, FirewallError> {
        Ok(None)
    }
}

pub mod diff;
pub mod iptables;
pub mod lower;
pub mod manager;
pub mod nft;
pub mod noop;
pub mod readback;
#[cfg(any(test, feature = "test-support"))]
pub mod scenario;
#[cfg(test)]
mod sim;
pub mod switch;

pub use diff::DirtyNames;
pub use lower::{EndpointToHostAction, FirewallSettings};
pub use manager::{new_backend, DriftReport, FirewallApplyStats, FirewallManager, FirewallStats};
