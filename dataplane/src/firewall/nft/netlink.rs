//! nf_tables over netlink, in process (work in progress).

use crate::firewall::model::ObservedRuleset;
use crate::firewall::{FirewallError, FirewallOp};
use crate::netns::NetnsTarget;

/// An open nf_tables netlink socket in the target namespace.
pub struct Session {}

impl Session {
    /// Opens the socket inside `netns`.
    pub fn open(_netns: &NetnsTarget) -> Result<Self, FirewallError> {
        Err(FirewallError::Netlink { op: "open".into(), detail: "not implemented".into() })
    }
    /// Reads our table.
    pub fn observe(&mut self) -> Result<ObservedRuleset, FirewallError> {
        unimplemented!()
    }
    /// Writes one batch.
    pub fn write(&mut self, _ops: &[FirewallOp]) -> Result<(), FirewallError> {
        unimplemented!()
    }
}
