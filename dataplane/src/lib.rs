//! margay's dataplane: desired state in, kernel state out.
//!
//! For each kind of kernel object (routes, neighbours, sysctls, firewall
//! chains and sets) there is a pure diff of desired against observed state,
//! and a thin layer that reads and writes the kernel. Only the thin layers
//! do I/O.
//!
//! [`Dataplane`] is the facade the agent drives: host networking
//! ([`hostnet::HostNetwork`]: routes, neighbours, sysctls over netlink) plus
//! the firewall ([`firewall::manager::FirewallManager`]). The firewall
//! manager is synchronous (it runs `nft`/`iptables-restore`); on a
//! multi-threaded runtime it is called through `block_in_place`, otherwise
//! directly.
//!
//! Driving it: `new` → `start` (adopt what is there) → `apply` for every
//! batch of [`Changes`]. Take the watcher's receiver once with
//! `take_events` and hand what it yields to `handle_events` (drain with
//! `try_recv` to batch); this retries objects waiting for an interface
//! that appeared, forgets those of one that vanished, and puts back a route
//! of ours someone deleted. Call `repair_routes` / `repair_firewall_drift`
//! on a timer as a safety net.
//!
//! The addresses of each host interface, which host endpoints bound by
//! expected address follow, go from host networking to the firewall: at
//! start (before the first apply) and whenever an event batch, a repair
//! or an apply finds them changed.

pub mod bird;
pub mod firewall;
pub mod hostnet;
pub mod netns;

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use margay_policy::desired::{Changes, DesiredState};
use margay_policy::names::{Id, InterfaceName};
use thiserror::Error;
use tokio::sync::mpsc;

use firewall::iptables::forward_accept::ManagedAccept;
use firewall::lower::FirewallSettings;
use firewall::manager::{DriftReport, FirewallApplyStats, FirewallManager};
use firewall::readback::ReadbackStart;
pub use firewall::readback::{Readback, ReadbackStats};
use firewall::{BackendKind, FirewallError, FirewallOp};
use hostnet::tracker::Op;
use hostnet::{
    HostFacts, HostNetError, HostNetwork, HostReport, KernelRoute, RefusedRoute, WriteFailure,
};
use netns::{NetnsError, NetnsTarget};

pub use hostnet::DataplaneEvent;

/// Route protocol numbers we refuse: unspec, redirect, kernel, boot, static
/// (routes made by the kernel, by `ip route` and by network scripts).
const RESERVED_PROTOCOLS: std::ops::RangeInclusive<u8> = 0..=4;

/// How to build a [`Dataplane`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// Firewall backend.
    pub backend: BackendKind,
    /// Route protocol number stamped on our routes and neighbour entries.
    pub route_protocol: u8,
    /// Network namespace to act in (`/var/run/netns/<name>`); `None` = ours.
    pub netns: Option<String>,
}

/// Why the dataplane failed.
#[derive(Debug, Error)]
pub enum DataplaneError {
    /// The route protocol number belongs to someone else.
    #[error("route protocol {0} is reserved (0-4: kernel, boot and static routes); pick another")]
    ReservedProtocol(u8),
    /// The namespace is invalid or cannot be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Routes, neighbours or sysctls.
    #[error("host networking: {0}")]
    Host(#[from] HostNetError),
    /// The firewall.
    #[error("firewall: {0}")]
    Firewall(#[from] FirewallError),
}

/// What one apply wrote, per kind of object (for
/// `margay_dataplane_writes_total{object}`), plus what failed or waits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Routes created, replaced or deleted.
    pub routes: usize,
    /// Neighbour entries created, replaced or deleted.
    pub neighbours: usize,
    /// Sysctls written.
    pub sysctls: usize,
    /// Chains replaced or deleted, and hooks attached.
    pub chains: usize,
    /// Sets created or deleted.
    pub sets: usize,
    /// Set members added or removed.
    pub set_members: usize,
    /// Objects waiting for their interface.
    pub waiting: usize,
    /// Writes the kernel refused (retried on link/address changes or repair).
    pub failures: Vec<WriteFailure>,
    /// Endpoint routes newly refused because they cover an address of this
    /// host, a default gateway or an etcd endpoint (each reported once).
    pub refused_routes: Vec<RefusedRoute>,
    /// Firewall details.
    pub firewall: FirewallApplyStats,
    /// Workload accept rules added to or removed from iptables `FORWARD`
    /// (nftables backend on a host whose `FORWARD` policy is `DROP`).
    pub forward_accepts: usize,
}

impl ApplyReport {
    fn from_parts(host: HostReport, fw: FirewallApplyStats) -> Self {
        let mut failures = host.routes.failures;
        failures.extend(host.neighbours.failures);
        failures.extend(host.sysctls.failures);
        ApplyReport {
            refused_routes: host.refused_routes,
            routes: host.routes.upserts + host.routes.deletes,
            neighbours: host.neighbours.upserts + host.neighbours.deletes,
            sysctls: host.sysctls.upserts,
            chains: fw.chains_replaced + fw.chains_deleted + fw.hooks_attached + fw.hooks_detached,
            sets: fw.sets_created + fw.sets_deleted,
            set_members: fw.members_added + fw.members_removed,
            waiting: host.routes.waiting + host.neighbours.waiting + host.sysctls.waiting,
            failures,
            firewall: fw,
            forward_accepts: 0,
        }
    }

    /// Every write that took effect.
    pub fn writes(&self) -> usize {
        self.routes
            + self.neighbours
            + self.sysctls
            + self.chains
            + self.sets
            + self.set_members
            + self.forward_accepts
    }
}

/// Sizes of what we own, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataplaneStats {
    /// Our routes in the kernel (as last seen or written).
    pub routes: usize,
    /// Our neighbour entries.
    pub neighbours: usize,
    /// Firewall chains.
    pub chains: usize,
    /// Rules in them.
    pub rules: usize,
    /// Address sets.
    pub sets: usize,
    /// Members of those sets.
    pub set_members: usize,
}

/// One route change a full sync would make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutePlan {
    /// A route to create.
    Add { dst: IpNet, route: KernelRoute },
    /// One of ours to change.
    Replace {
        dst: IpNet,
        from: KernelRoute,
        to: KernelRoute,
    },
    /// One of ours to delete.
    Delete { dst: IpNet, route: KernelRoute },
}

impl From<Op<IpNet, KernelRoute>> for RoutePlan {
    fn from(op: Op<IpNet, KernelRoute>) -> Self {
        match op {
            Op::Upsert {
                key,
                value,
                existing: None,
            } => RoutePlan::Add {
                dst: key,
                route: value,
            },
            Op::Upsert {
                key,
                value,
                existing: Some(from),
            } => RoutePlan::Replace {
                dst: key,
                from,
                to: value,
            },
            Op::Delete { key, existing } => RoutePlan::Delete {
                dst: key,
                route: existing,
            },
        }
    }
}

/// What a full sync would write now (nothing is written to make it); plain
/// data, shown by the agent's `margay plan`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Route changes, by destination.
    pub routes: Vec<RoutePlan>,
    /// Firewall operations, in commit order.
    pub firewall: Vec<FirewallOp>,
}

impl Plan {
    /// True when the kernel already matches.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.firewall.is_empty()
    }
}

/// Runs a synchronous firewall call without stalling other tasks when the
/// runtime has threads to spare.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The whole dataplane of one namespace.
pub struct Dataplane {
    host: HostNetwork,
    firewall: FirewallManager,
    backend: BackendKind,
    target: NetnsTarget,
    /// nftables backend only: the workload accept in a foreign iptables
    /// `FORWARD` chain with policy `DROP` (Docker hosts).
    forward_accept: Option<ManagedAccept>,
    /// The generation of the interface addresses the firewall last took
    /// (`None`: not handed over yet).
    addresses_handed: Option<u64>,
}

impl Dataplane {
    /// Opens netlink sockets in the namespace, starts the link watcher and
    /// builds the firewall backend. Reads nothing yet: call [`Self::start`].
    pub async fn new(cfg: DataplaneConfig) -> Result<Dataplane, DataplaneError> {
        if RESERVED_PROTOCOLS.contains(&cfg.route_protocol) {
            return Err(DataplaneError::ReservedProtocol(cfg.route_protocol));
        }
        let target = match &cfg.netns {
            Some(name) => NetnsTarget::named(name)?,
            None => NetnsTarget::current(),
        };
        let host = HostNetwork::open(target.clone(), cfg.route_protocol).await?;
        let backend = firewall::manager::new_backend(cfg.backend, &target)?;
        Ok(Dataplane {
            host,
            firewall: FirewallManager::new(backend),
            backend: cfg.backend,
            forward_accept: (cfg.backend == BackendKind::Nftables)
                .then(|| ManagedAccept::new(&target)),
            target,
            addresses_handed: None,
        })
    }

    /// The etcd endpoints' addresses (resolved): no endpoint route may
    /// cover them, and the interfaces towards them are uplinks (see
    /// [`Self::host_facts`]). Call before [`Self::start`].
    pub fn set_etcd_addresses(&mut self, etcd: Vec<std::net::IpAddr>) {
        self.host.set_etcd_addresses(etcd);
    }

    /// This host's addresses, default gateways and uplink interfaces, as
    /// last read (kept current from address and route events).
    pub fn host_facts(&self) -> &HostFacts {
        self.host.facts()
    }

    /// Deletes routes of ours that cover an address of this host, a default
    /// gateway or an etcd endpoint (left by a previous run fed bad data),
    /// so margay can reach etcd to learn the fix. Call after
    /// [`Self::start`], before connecting. Returns what was removed.
    pub async fn remove_blocking_routes(&mut self) -> Result<Vec<RefusedRoute>, DataplaneError> {
        Ok(self.host.remove_blocking_routes().await?)
    }

    /// The daemon's start-up: removes what a previously used *other*
    /// firewall backend left ([`firewall::switch`]), then adopts what a
    /// previous run left ([`Self::start_read_only`]).
    pub async fn start(&mut self) -> Result<(), DataplaneError> {
        let (kind, target) = (self.backend, &self.target);
        blocking(|| firewall::switch::remove_other_backends(kind, target));
        self.start_read_only().await
    }

    /// Adopts what a previous run left: our routes, neighbours and firewall
    /// objects become the observed state, so an unchanged restart writes
    /// nothing. Writes nothing itself (for `margay plan`).
    pub async fn start_read_only(&mut self) -> Result<(), DataplaneError> {
        self.host.start().await?;
        let fw = &mut self.firewall;
        blocking(|| fw.start())?;
        self.addresses_handed = None;
        self.hand_over_interface_addresses()?;
        Ok(())
    }

    /// Hands the host's interface addresses to the firewall when they
    /// changed since it last took them (host endpoints bound by address
    /// follow them). Returns what the firewall wrote; on failure the
    /// addresses are handed again next time.
    fn hand_over_interface_addresses(&mut self) -> Result<FirewallApplyStats, FirewallError> {
        let generation = self.host.interface_addresses_generation();
        if self.addresses_handed == Some(generation) {
            return Ok(FirewallApplyStats::default());
        }
        let (fw, addrs) = (&mut self.firewall, self.host.interface_addresses());
        let stats = blocking(|| fw.set_interface_addresses(addrs))?;
        self.addresses_handed = Some(generation);
        Ok(stats)
    }

    /// Makes the kernel match `desired` for the keys `changes` names
    /// (everything on the first call). The firewall goes first, so a new
    /// workload is filtered before it becomes reachable; host networking is
    /// written even when the firewall fails (then the firewall error is returned).
    /// Interface addresses the firewall has not taken yet (a failed
    /// hand-over) are handed over first; before the first apply the
    /// interfaces and addresses are re-read, as the caller may have skipped
    /// events while it waited for the first desired state.
    pub async fn apply(
        &mut self,
        desired: &DesiredState,
        changes: &Changes,
        settings: &FirewallSettings,
    ) -> Result<ApplyReport, DataplaneError> {
        if !self.host.is_primed() {
            // Events may have been skipped while the first state was built.
            self.host.reread_interfaces().await?;
        }
        let moved = self.hand_over_interface_addresses();
        let fw = &mut self.firewall;
        let applied = blocking(|| fw.apply(desired, changes, settings));
        let fw_result = match (moved, applied) {
            (Ok(mut moved), Ok(applied)) => {
                moved.merge(applied);
                Ok(moved)
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let accepts = match (self.forward_accept.as_mut(), &fw_result) {
            (Some(fa), Ok(_)) => blocking(|| fa.after_apply(&settings.valid_prefixes())),
            _ => 0,
        };
        let host = self.host.apply(desired, changes).await?;
        let mut report = ApplyReport::from_parts(host, fw_result?);
        report.forward_accepts = accepts;
        Ok(report)
    }

    /// What a full sync of `desired` would write now (fresh route dump;
    /// firewall against its last observed state). Writes nothing.
    pub async fn plan(
        &mut self,
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<Plan, DataplaneError> {
        let routes = self.host.plan_routes(desired).await?;
        Ok(Plan {
            routes: routes.into_iter().map(RoutePlan::from).collect(),
            firewall: self.firewall.plan(desired, settings),
        })
    }

    /// Full repair of routes, neighbours and sysctls: re-reads them all,
    /// diffs against `desired` and writes the difference. Returns those
    /// writes (the re-read interface addresses also reach the firewall,
    /// whose writes for them are not counted as drift).
    pub async fn repair_routes(&mut self, desired: &DesiredState) -> Result<usize, DataplaneError> {
        let report = self.host.repair(desired).await?;
        let moved = self.hand_over_interface_addresses()?;
        if moved.ops > 0 {
            tracing::debug!(
                ops = moved.ops,
                "interface addresses changed; host endpoint chains rewritten"
            );
        }
        Ok(report.writes())
    }

    /// The periodic firewall check. Skipped when the nf_tables generation
    /// shows nobody changed the ruleset since our last read or write;
    /// otherwise the read-back starts on its own thread and this returns a
    /// clean report at once: the drift it finds is reported (and repaired)
    /// by [`Self::finish_firewall_readback`] once
    /// [`Self::firewall_readback_done`] resolves. Backends without an
    /// observer read back and repair inline. On nftables the workload
    /// accept in iptables `FORWARD` is re-read and repaired every time
    /// (legacy iptables changes do not move the generation).
    pub async fn repair_firewall_drift(
        &mut self,
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<DriftReport, DataplaneError> {
        let fw = &mut self.firewall;
        let mut report = match blocking(|| fw.begin_readback(desired, settings))? {
            ReadbackStart::Inline(report) => report,
            _ => DriftReport::default(),
        };
        if let Some(fa) = self.forward_accept.as_mut() {
            report.forward_accepts = blocking(|| fa.refresh());
        }
        Ok(report)
    }

    /// Resolves when a background firewall read-back ends; pending forever
    /// when none runs. Cancel-safe (for `select!`).
    pub async fn firewall_readback_done(&mut self) -> Readback {
        self.firewall.readback_finished().await
    }

    /// Diffs a finished read-back against the applied state and repairs
    /// drift (a clean report when the read-back was stale: a write happened
    /// while it ran, and the next refresh reads again).
    pub async fn finish_firewall_readback(
        &mut self,
        readback: Readback,
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<DriftReport, DataplaneError> {
        let fw = &mut self.firewall;
        Ok(blocking(|| fw.finish_readback(readback, desired, settings))?.unwrap_or_default())
    }

    /// Firewall refresh outcomes so far (skipped, performed, stale).
    pub fn readback_stats(&self) -> ReadbackStats {
        self.firewall.readback_stats()
    }

    /// The link watcher's events (available once). Feed each to
    /// [`Self::handle_event`] (or a drained batch to [`Self::handle_events`]).
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<DataplaneEvent>> {
        self.host.take_events()
    }

    /// Reacts to one watcher event: retries objects of an interface that
    /// appeared, forgets those of one that vanished, re-adds a route of ours
    /// that someone deleted. Returns what it wrote.
    pub async fn handle_event(
        &mut self,
        event: DataplaneEvent,
    ) -> Result<ApplyReport, DataplaneError> {
        self.handle_events([event]).await
    }

    /// Like [`Self::handle_event`] for several events, writing once. When
    /// they changed an interface's addresses and the state last applied has
    /// host endpoints, the firewall learns it (host endpoints bound by
    /// address move) and what it wrote is in the report.
    pub async fn handle_events(
        &mut self,
        events: impl IntoIterator<Item = DataplaneEvent>,
    ) -> Result<ApplyReport, DataplaneError> {
        let host = self.host.handle_events(events).await?;
        // Without host endpoints no binding depends on the addresses (the
        // next apply hands them over): workload veths coming and going cost
        // the firewall nothing.
        let fw = if self.firewall.has_host_endpoints() {
            self.hand_over_interface_addresses()?
        } else {
            FirewallApplyStats::default()
        };
        Ok(ApplyReport::from_parts(host, fw))
    }

    /// Sizes of what we own.
    pub fn stats(&self) -> DataplaneStats {
        let fw = self.firewall.stats();
        DataplaneStats {
            routes: self.host.routes().tracker().observed().len(),
            neighbours: self.host.neighbours().tracker().observed().len(),
            chains: fw.chains,
            rules: fw.rules,
            sets: fw.sets,
            set_members: fw.set_members,
        }
    }

    /// The interfaces each of this host's host endpoints is bound to now
    /// (for status reports; endpoints bound to none are absent).
    pub fn host_endpoint_bindings(&self) -> BTreeMap<Id, BTreeSet<InterfaceName>> {
        self.firewall.host_endpoint_bindings()
    }

    /// Host networking (for tests and diagnostics).
    pub fn host(&self) -> &HostNetwork {
        &self.host
    }

    /// The firewall backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.firewall.backend_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reserved_protocols_are_refused() {
        let cfg = DataplaneConfig {
            backend: BackendKind::None,
            route_protocol: 4,
            netns: None,
        };
        assert!(matches!(
            Dataplane::new(cfg).await,
            Err(DataplaneError::ReservedProtocol(4))
        ));
    }
}
