//! The backend that writes nothing (`dataplane = none`).
//!
//! For hosts where another tool owns the firewall, and for tests of
//! everything above the backend. It remembers what it was asked to write, so
//! [`FirewallBackend::observe`] returns exactly that and diffs converge as
//! with a real kernel.

use super::diff::apply_to;
use super::model::ObservedRuleset;
use super::{FirewallBackend, FirewallError, FirewallOp};

/// A complete do-nothing backend.
#[derive(Debug, Default)]
pub struct NoopBackend {
    state: ObservedRuleset,
    writes: usize,
}

impl NoopBackend {
    /// A backend with nothing written yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend that reads back `state` as if it had written it (for tests
    /// that start from what another program, or release, left).
    #[cfg(test)]
    pub(crate) fn holding(state: ObservedRuleset) -> Self {
        NoopBackend { state, writes: 0 }
    }

    /// How many non-empty writes it took (for tests).
    pub fn writes(&self) -> usize {
        self.writes
    }
}

impl FirewallBackend for NoopBackend {
    fn name(&self) -> &'static str {
        "none"
    }

    fn observe(&mut self) -> Result<ObservedRuleset, FirewallError> {
        Ok(self.state.clone())
    }

    fn write(&mut self, ops: &[FirewallOp]) -> Result<(), FirewallError> {
        if !ops.is_empty() {
            self.writes += 1;
        }
        apply_to(&mut self.state, ops);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::model::ObjectName;

    #[test]
    fn observe_returns_what_was_written() {
        let mut b = NoopBackend::new();
        assert_eq!(b.observe().expect("observe"), ObservedRuleset::default());
        let name = ObjectName::fixed("margay-forward");
        b.write(&[FirewallOp::ReplaceChain {
            name: name.clone(),
            rules: vec![],
        }])
        .expect("write");
        let seen = b.observe().expect("observe");
        assert_eq!(seen.chains.get(&name), Some(&vec![]));
        assert_eq!(b.writes(), 1);
        b.write(&[FirewallOp::DeleteChain { name }]).expect("write");
        assert!(b.observe().expect("observe").chains.is_empty());
    }
}
