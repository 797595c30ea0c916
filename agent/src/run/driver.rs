//! What the event loop needs from a dataplane ([`Driver`]), and its
//! implementation by [`margay_dataplane::Dataplane`].

use std::collections::{BTreeMap, BTreeSet};

use margay_dataplane::firewall::lower::FirewallSettings;
use margay_dataplane::firewall::manager::DriftReport;
use margay_dataplane::{
    ApplyReport, Dataplane, DataplaneError, DataplaneEvent, DataplaneStats, Readback,
};
use margay_policy::desired::{Changes, DesiredState};
use margay_policy::names::{Id, InterfaceName};

/// What the loop needs from a dataplane. Implemented by
/// [`margay_dataplane::Dataplane`]; tests use a fake.
// Only used with static dispatch in this crate and its tests, where the
// futures' auto traits are known; no `Send` bound needed.
#[allow(async_fn_in_trait)]
pub trait Driver {
    /// The firewall backend's name, for metrics.
    fn backend_name(&self) -> &'static str;
    /// Makes the kernel match `desired` for what `changes` names.
    async fn apply(
        &mut self,
        desired: &DesiredState,
        changes: &Changes,
        settings: &FirewallSettings,
    ) -> Result<ApplyReport, DataplaneError>;
    /// Re-reads the firewall and repairs drift (or only starts a
    /// background read-back, finished by [`Driver::finish_readback`]).
    async fn repair_firewall(
        &mut self,
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<DriftReport, DataplaneError>;
    /// Resolves when a background firewall read-back ends (cancel-safe).
    async fn readback_done(&mut self) -> Readback {
        std::future::pending().await
    }
    /// Diffs a finished read-back and repairs drift.
    async fn finish_readback(
        &mut self,
        readback: Readback,
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<DriftReport, DataplaneError> {
        let _ = (readback, desired, settings);
        Ok(DriftReport::default())
    }
    /// Re-reads routes, neighbours and sysctls and repairs them; returns writes.
    async fn repair_routes(&mut self, desired: &DesiredState) -> Result<usize, DataplaneError>;
    /// Reacts to netlink events.
    async fn handle_events(
        &mut self,
        events: Vec<DataplaneEvent>,
    ) -> Result<ApplyReport, DataplaneError>;
    /// Sizes of what is programmed.
    fn stats(&self) -> DataplaneStats;
    /// Interfaces carrying the host's default route or its route to etcd.
    fn uplinks(&self) -> BTreeSet<String> {
        BTreeSet::new()
    }

    /// Firewall checks so far: skipped, performed, stale.
    fn readback_totals(&self) -> [u64; 3] {
        [0; 3]
    }

    /// The interfaces each host endpoint of this host is bound to now.
    fn host_endpoint_bindings(&self) -> BTreeMap<Id, BTreeSet<InterfaceName>> {
        BTreeMap::new()
    }
}

impl Driver for Dataplane {
    fn backend_name(&self) -> &'static str {
        Dataplane::backend_name(self)
    }

    async fn apply(
        &mut self,
        desired: &DesiredState,
        changes: &Changes,
        settings: &FirewallSettings,
    ) -> Result<ApplyReport, DataplaneError> {
        Dataplane::apply(self, desired, changes, settings).await
    }

    async fn repair_firewall(
        &mut self,
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<DriftReport, DataplaneError> {
        self.repair_firewall_drift(desired, settings).await
    }

    async fn readback_done(&mut self) -> Readback {
        self.firewall_readback_done().await
    }

    async fn finish_readback(
        &mut self,
        readback: Readback,
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<DriftReport, DataplaneError> {
        self.finish_firewall_readback(readback, desired, settings)
            .await
    }

    async fn repair_routes(&mut self, desired: &DesiredState) -> Result<usize, DataplaneError> {
        Dataplane::repair_routes(self, desired).await
    }

    async fn handle_events(
        &mut self,
        events: Vec<DataplaneEvent>,
    ) -> Result<ApplyReport, DataplaneError> {
        Dataplane::handle_events(self, events).await
    }

    fn stats(&self) -> DataplaneStats {
        Dataplane::stats(self)
    }

    fn uplinks(&self) -> BTreeSet<String> {
        self.host_facts().uplinks.clone()
    }

    fn readback_totals(&self) -> [u64; 3] {
        let r = self.readback_stats();
        [r.skipped, r.performed, r.stale]
    }

    fn host_endpoint_bindings(&self) -> BTreeMap<Id, BTreeSet<InterfaceName>> {
        Dataplane::host_endpoint_bindings(self)
    }
}
