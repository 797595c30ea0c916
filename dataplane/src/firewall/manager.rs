//! The firewall manager: lowering, diff and one backend, with the observed
//! state kept between applies.
//!
//! [`FirewallManager::start`] reads what a previous run left (only our own
//! objects) and adopts it, so the first apply converges by diff and never
//! flushes: established traffic sees no gap across a restart. Each apply
//! re-lowers only what [`Changes`] names and diffs only the touched objects;
//! a settings change or a failed write makes the next apply re-observe and
//! diff everything. Nothing is torn down on exit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use margay_policy::desired::{Changes, DesiredState};
use margay_policy::names::{Id, InterfaceName};
use tracing::{debug, warn};

use super::diff::{apply_to, diff};
use super::lower::{interfaces_by_endpoint, FirewallSettings, InterfaceAddresses, Lowerer};
use super::model::{Hook, ObjectName, ObservedRuleset};
use super::nft::NftBackend;
use super::noop::NoopBackend;
use super::readback::{
    observe_with_generation, PendingReadback, Readback, ReadbackStart, ReadbackStats,
};
use super::{BackendKind, FirewallBackend, FirewallError, FirewallOp};
use crate::netns::NetnsTarget;

/// Builds the backend selected by the `dataplane` setting.
pub fn new_backend(
    kind: BackendKind,
    netns: &NetnsTarget,
) -> Result<Box<dyn FirewallBackend>, FirewallError> {
    match kind {
        BackendKind::Nftables => Ok(Box::new(NftBackend::new(netns.clone())?)),
        BackendKind::Iptables => Ok(Box::new(super::iptables::IptablesBackend::new(netns)?)),
        BackendKind::None => Ok(Box::new(NoopBackend::new())),
    }
}

/// What one apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallApplyStats {
    /// Everything was compared (first apply, settings change, recovery).
    pub full: bool,
    /// Ops written (0: nothing to do, no transaction).
    pub ops: usize,
    /// Chains created or rewritten.
    pub chains_replaced: usize,
    /// Rules in those chains.
    pub rules_written: usize,
    /// Chains deleted.
    pub chains_deleted: usize,
    /// Sets created.
    pub sets_created: usize,
    /// Sets deleted.
    pub sets_deleted: usize,
    /// Set members added.
    pub members_added: usize,
    /// Set members removed.
    pub members_removed: usize,
    /// Hooks (re)attached.
    pub hooks_attached: usize,
    /// Hooks detached (no longer used).
    pub hooks_detached: usize,
    /// Wall time of lowering + diff + write, in microseconds.
    pub micros: u64,
}

impl FirewallApplyStats {
    /// Adds the counts of `other`, a write made for the same call.
    pub fn merge(&mut self, other: FirewallApplyStats) {
        self.full |= other.full;
        self.ops += other.ops;
        self.chains_replaced += other.chains_replaced;
        self.rules_written += other.rules_written;
        self.chains_deleted += other.chains_deleted;
        self.sets_created += other.sets_created;
        self.sets_deleted += other.sets_deleted;
        self.members_added += other.members_added;
        self.members_removed += other.members_removed;
        self.hooks_attached += other.hooks_attached;
        self.hooks_detached += other.hooks_detached;
        self.micros += other.micros;
    }

    fn count(ops: &[FirewallOp], full: bool) -> Self {
        let mut s = FirewallApplyStats {
            full,
            ops: ops.len(),
            ..Self::default()
        };
        for op in ops {
            match op {
                FirewallOp::CreateSet { .. } => s.sets_created += 1,
                FirewallOp::DeleteSet { .. } => s.sets_deleted += 1,
                FirewallOp::AddMembers { members, .. } => s.members_added += members.len(),
                FirewallOp::RemoveMembers { members, .. } => s.members_removed += members.len(),
                FirewallOp::ReplaceChain { rules, .. } => {
                    s.chains_replaced += 1;
                    s.rules_written += rules.len();
                }
                FirewallOp::DeleteChain { .. } => s.chains_deleted += 1,
                FirewallOp::AttachHook { .. } => s.hooks_attached += 1,
                FirewallOp::DetachHook { .. } => s.hooks_detached += 1,
            }
        }
        s
    }
}

/// What a drift check found (and repaired).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriftReport {
    /// Chains missing, extra or with different rules.
    pub chains: Vec<ObjectName>,
    /// Sets missing or extra.
    pub sets: Vec<ObjectName>,
    /// Members that were missing.
    pub members_missing: usize,
    /// Members that should not have been there.
    pub members_extra: usize,
    /// Hooks not calling our chain, or calling one they should not.
    pub hooks: Vec<Hook>,
    /// Workload accept rules in iptables `FORWARD` added or removed
    /// (nftables backend; see [`super::iptables::forward_accept`]).
    pub forward_accepts: usize,
    /// Ops written to repair it.
    pub ops: usize,
}

impl DriftReport {
    /// True when the kernel matched.
    pub fn is_clean(&self) -> bool {
        self.ops == 0 && self.forward_accepts == 0
    }

    fn from_ops(ops: &[FirewallOp]) -> Self {
        let mut r = DriftReport {
            ops: ops.len(),
            ..Self::default()
        };
        for op in ops {
            match op {
                FirewallOp::CreateSet { name, .. } | FirewallOp::DeleteSet { name } => {
                    r.sets.push(name.clone())
                }
                FirewallOp::AddMembers { members, .. } => r.members_missing += members.len(),
                FirewallOp::RemoveMembers { members, .. } => r.members_extra += members.len(),
                FirewallOp::ReplaceChain { name, .. } | FirewallOp::DeleteChain { name } => {
                    r.chains.push(name.clone())
                }
                FirewallOp::AttachHook { hook, .. } | FirewallOp::DetachHook { hook, .. } => {
                    r.hooks.push(*hook)
                }
            }
        }
        r
    }
}

/// Sizes of what we own in the kernel, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FirewallStats {
    /// Chains (hook chains not counted).
    pub chains: usize,
    /// Rules in them.
    pub rules: usize,
    /// Address sets.
    pub sets: usize,
    /// Members of those sets.
    pub set_members: usize,
}

/// Keeps one backend in line with the desired state.
pub struct FirewallManager {
    backend: Box<dyn FirewallBackend>,
    lowerer: Lowerer,
    observed: ObservedRuleset,
    started: bool,
    /// The observed state may be wrong (a write failed): re-read and compare
    /// everything on the next apply.
    resync: bool,
    /// The nf_tables generation at which `observed` is known to match the
    /// kernel (`None`: unknown, the next refresh reads back).
    clean_gen: Option<u64>,
    /// Bumped by every write attempt and every read-back adopted: a
    /// background read-back started at another epoch is stale.
    epoch: u64,
    /// The observer backend between read-backs (created on first use).
    observer: Option<Box<dyn FirewallBackend>>,
    /// The read-back running on its own thread, if any.
    pending: Option<PendingReadback>,
    readbacks: ReadbackStats,
}

impl FirewallManager {
    /// A manager over `backend`; call [`FirewallManager::start`] next.
    pub fn new(backend: Box<dyn FirewallBackend>) -> Self {
        FirewallManager {
            backend,
            lowerer: Lowerer::new(),
            observed: ObservedRuleset::default(),
            started: false,
            resync: false,
            clean_gen: None,
            epoch: 0,
            observer: None,
            pending: None,
            readbacks: ReadbackStats::default(),
        }
    }

    /// A lowerer that has lowered nothing yet but knows the interfaces
    /// (host endpoints bind by them).
    fn fresh_lowerer(&self) -> Lowerer {
        let mut l = Lowerer::new();
        l.set_interface_addresses(self.lowerer.interface_addresses());
        l
    }

    /// The backend's name, for logs and metric labels.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Reads what a previous run left and adopts it as the starting point.
    pub fn start(&mut self) -> Result<(), FirewallError> {
        self.epoch += 1;
        let (observed, generation) = observe_with_generation(self.backend.as_mut())?;
        self.observed = observed;
        self.clean_gen = generation;
        self.started = true;
        self.resync = false;
        debug!(
            backend = self.backend.name(),
            chains = self.observed.chains.len(),
            sets = self.observed.sets.len(),
            "adopted existing firewall state"
        );
        Ok(())
    }

    /// Makes the kernel match `desired`, looking only at what `changes`
    /// names unless this is the first apply, the settings changed, or the
    /// last write failed.
    pub fn apply(
        &mut self,
        desired: &DesiredState,
        changes: &Changes,
        settings: &FirewallSettings,
    ) -> Result<FirewallApplyStats, FirewallError> {
        let t0 = Instant::now();
        if !self.started || self.resync {
            self.start()?;
        }
        let full =
            self.lowerer.settings() != Some(settings) || changes.settings || self.resync_pending();
        let ops = if full {
            self.lowerer.lower_all(desired, settings);
            diff(self.lowerer.ruleset(), &self.observed, None)
        } else {
            let dirty = self.lowerer.update(desired, changes);
            diff(self.lowerer.ruleset(), &self.observed, Some(&dirty))
        };
        self.write(&ops)?;
        let mut stats = FirewallApplyStats::count(&ops, full);
        stats.micros = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        debug!(
            backend = self.backend.name(),
            full,
            ops = stats.ops,
            micros = stats.micros,
            "firewall applied"
        );
        Ok(stats)
    }

    /// Tells the firewall which addresses each host interface carries now.
    /// Host endpoints bound by expected address follow it: when a binding
    /// changes (after the first apply), the chains involved are rewritten at
    /// once, in one transaction. Returns what was written. Before the first
    /// apply, or while a resync is owed, it only stores them: the next
    /// apply lowers with them. After an error the next apply re-reads and
    /// rewrites everything, as after any failed write.
    pub fn set_interface_addresses(
        &mut self,
        ifaces: &InterfaceAddresses,
    ) -> Result<FirewallApplyStats, FirewallError> {
        let t0 = Instant::now();
        let dirty = self.lowerer.set_interface_addresses(ifaces);
        if dirty.is_empty() || !self.started || self.resync {
            return Ok(FirewallApplyStats::default());
        }
        let ops = diff(self.lowerer.ruleset(), &self.observed, Some(&dirty));
        self.write(&ops)?;
        let mut stats = FirewallApplyStats::count(&ops, false);
        stats.micros = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        debug!(
            backend = self.backend.name(),
            ops = stats.ops,
            micros = stats.micros,
            "host endpoint bindings applied"
        );
        Ok(stats)
    }

    /// The interfaces each of this host's host endpoints is bound to now
    /// (endpoints bound to none are absent).
    pub fn host_endpoint_bindings(&self) -> BTreeMap<Id, BTreeSet<InterfaceName>> {
        interfaces_by_endpoint(self.lowerer.host_bindings())
    }

    /// True when the state last lowered has host endpoints (only then can
    /// an interface address change move a binding).
    pub fn has_host_endpoints(&self) -> bool {
        self.lowerer.has_host_endpoints()
    }

    /// True until the first full lowering after a (re)start.
    fn resync_pending(&self) -> bool {
        self.lowerer.settings().is_none()
    }

    /// The ops a full apply of `desired` would write now (nothing is written
    /// and the manager's state does not change).
    pub fn plan(&self, desired: &DesiredState, settings: &FirewallSettings) -> Vec<FirewallOp> {
        let mut l = self.fresh_lowerer();
        l.lower_all(desired, settings);
        diff(l.ruleset(), &self.observed, None)
    }

    /// Re-reads our kernel objects (unless the generation shows nobody
    /// changed them since our last read or write), reports what differs
    /// from the last applied state and writes the repair, all inline.
    /// `desired` and `settings` are only lowered when nothing was applied
    /// yet (or the settings differ): call it after
    /// [`FirewallManager::apply`] with the same state.
    pub fn repair_drift(
        &mut self,
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<DriftReport, FirewallError> {
        if !self.readback_needed(settings) {
            return Ok(DriftReport::default());
        }
        let observed = observe_with_generation(self.backend.as_mut())?;
        self.readbacks.performed += 1;
        self.repair_from(observed, desired, settings)
    }

    /// Starts a refresh: skipped when the generation did not move since our
    /// last read or write, else a read-back on the observer's thread (or
    /// inline, repairing at once, for backends without an observer).
    pub fn begin_readback(
        &mut self,
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<ReadbackStart, FirewallError> {
        if self.pending.is_some() {
            return Ok(ReadbackStart::Running);
        }
        if !self.readback_needed(settings) {
            return Ok(ReadbackStart::Skipped);
        }
        let observer = match self.observer.take() {
            Some(o) => Some(o),
            None => self.backend.observer()?,
        };
        match observer {
            Some(o) => {
                self.pending = Some(PendingReadback::spawn(o, self.epoch));
                Ok(ReadbackStart::Spawned)
            }
            None => self
                .repair_drift(desired, settings)
                .map(ReadbackStart::Inline),
        }
    }

    /// Resolves when the background read-back ends (never when none runs).
    /// Cancel-safe.
    pub async fn readback_finished(&mut self) -> Readback {
        let Some(p) = self.pending.as_mut() else {
            return std::future::pending().await;
        };
        let r = p.done().await;
        self.pending = None;
        r
    }

    /// Adopts a finished background read-back: diffs it and writes the
    /// repair. `Ok(None)`: a write happened while it ran, so it was dropped.
    pub fn finish_readback(
        &mut self,
        mut r: Readback,
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<Option<DriftReport>, FirewallError> {
        let observed = r.result?;
        self.readbacks.performed += 1;
        let Some(mut observer) = r.backend.take() else {
            return Ok(None);
        };
        if r.epoch != self.epoch || self.resync {
            self.readbacks.stale += 1;
            self.observer = Some(observer);
            return Ok(None);
        }
        // The observer's view is the fresher one (the iptables backend
        // plans from what it last read): it becomes the writer.
        std::mem::swap(&mut self.backend, &mut observer);
        self.observer = Some(observer);
        self.repair_from(observed, desired, settings).map(Some)
    }

    /// Refresh outcomes so far.
    pub fn readback_stats(&self) -> ReadbackStats {
        self.readbacks
    }

    /// False when the kernel cannot have changed since we last read or
    /// wrote it (counted as skipped).
    fn readback_needed(&mut self, settings: &FirewallSettings) -> bool {
        if !self.started || self.resync || self.lowerer.settings() != Some(settings) {
            return true;
        }
        match (self.clean_gen, self.backend.generation()) {
            (Some(clean), Ok(Some(now))) if clean == now => {
                self.readbacks.skipped += 1;
                false
            }
            _ => true,
        }
    }

    fn repair_from(
        &mut self,
        (observed, generation): (ObservedRuleset, Option<u64>),
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<DriftReport, FirewallError> {
        self.epoch += 1;
        self.observed = observed;
        self.clean_gen = generation;
        self.started = true;
        self.resync = false;
        if self.lowerer.settings() != Some(settings) {
            self.lowerer.lower_all(desired, settings);
        }
        let ops = diff(self.lowerer.ruleset(), &self.observed, None);
        let report = DriftReport::from_ops(&ops);
        if !report.is_clean() {
            warn!(
                backend = self.backend.name(),
                chains = report.chains.len(),
                sets = report.sets.len(),
                members_missing = report.members_missing,
                members_extra = report.members_extra,
                "firewall drift found, repairing"
            );
        }
        self.write(&ops)?;
        Ok(report)
    }

    /// Counts of what we own, as last observed or written.
    pub fn stats(&self) -> FirewallStats {
        FirewallStats {
            chains: self.observed.chains.len(),
            rules: self.observed.chains.values().map(Vec::len).sum(),
            sets: self.observed.sets.len(),
            set_members: self.observed.sets.values().map(|s| s.members.len()).sum(),
        }
    }

    /// The state we believe the kernel holds.
    pub fn observed(&self) -> &ObservedRuleset {
        &self.observed
    }

    fn write(&mut self, ops: &[FirewallOp]) -> Result<(), FirewallError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.epoch += 1;
        match self.backend.write(ops) {
            Ok(()) => {
                apply_to(&mut self.observed, ops);
                // Still known-clean only if our commit was the only one.
                self.clean_gen = match (self.clean_gen, self.backend.generation_after_write()) {
                    (Some(before), Some(after)) if after == before.wrapping_add(1) => Some(after),
                    _ => None,
                };
                Ok(())
            }
            Err(e) => {
                self.clean_gen = None;
                warn!(backend = self.backend.name(), error = %e, "firewall write failed");
                self.resync = true;
                // Force a full lowering and diff after the re-read.
                self.lowerer = self.fresh_lowerer();
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
