//! [`HostNetwork`]: routes, neighbours and sysctls of one namespace, kept in
//! line with the desired state and repaired from link, address and route
//! notifications.
//!
//! It owns the sockets, the interface cache and the three managers, and is
//! driven from one task: `apply` for desired-state changes, `handle_event(s)`
//! for what the watcher reports, `repair` for a full re-read.
//!
//! It also keeps the [`HostFacts`] (own addresses, default gateways, the
//! interfaces to the world and to etcd) current: read at start, re-read when
//! an address or a default route changes and on full repairs, and handed to
//! the route manager as the addresses no endpoint route may cover.
//!
//! And the addresses of each interface by name ([`InterfaceAddresses`]),
//! for host endpoints bound by expected address: regrouped from the same
//! address dump, and without a dump when an interface is created, renamed
//! or deleted; [`HostNetwork::interface_addresses_generation`] moves when
//! the map changes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use margay_policy::desired::{Changes, DesiredState};
use thiserror::Error;
use tokio::sync::mpsc;

use super::addresses::{self, AddressEntry};
use super::links::{self, LinkCache, LinkChange};
use super::neigh::NeighManager;
use super::netlink::{self, BatchWriter, NetlinkError};
use super::report::{FlushReport, ObjectKind, WriteKind};
use super::routes::model::{KernelRoute, RawRoute};
use super::routes::protect::{HostFacts, Protected, RefusedRoute};
use super::routes::{dumps, facts, RouteManager};
use super::sysctl::SysctlManager;
use super::tracker::Op;
use super::watch::{self, DataplaneEvent};
use crate::firewall::lower::InterfaceAddresses;
use crate::netns::{NetnsError, NetnsTarget};

/// Why host networking could not be read or written.
#[derive(Debug, Error)]
pub enum HostNetError {
    /// A netlink socket failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The target namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// What one apply, event or repair wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostReport {
    /// Routes.
    pub routes: FlushReport,
    /// Neighbour entries.
    pub neighbours: FlushReport,
    /// Sysctls.
    pub sysctls: FlushReport,
    /// Routes newly refused because they cover a protected address.
    pub refused_routes: Vec<RefusedRoute>,
}

impl HostReport {
    /// All writes that took effect.
    pub fn writes(&self) -> usize {
        self.routes.writes() + self.neighbours.writes() + self.sysctls.writes()
    }

    fn merge(&mut self, other: HostReport) {
        self.routes.merge(other.routes);
        self.neighbours.merge(other.neighbours);
        self.sysctls.merge(other.sysctls);
        self.refused_routes.extend(other.refused_routes);
    }
}

/// Routes, neighbours and sysctls of one namespace.
pub struct HostNetwork {
    target: NetnsTarget,
    writer: BatchWriter,
    handle: rtnetlink::Handle,
    links: LinkCache,
    routes: RouteManager,
    neigh: NeighManager,
    sysctls: SysctlManager,
    events: Option<mpsc::Receiver<DataplaneEvent>>,
    watcher: tokio::task::JoinHandle<()>,
    primed: bool,
    etcd: Vec<IpAddr>,
    facts: HostFacts,
    /// What the facts are derived from (addresses, relevant routes).
    address_entries: Vec<AddressEntry>,
    fact_routes: Vec<RawRoute>,
    /// The own addresses of each interface, by kernel name.
    iface_addrs: InterfaceAddresses,
    /// Bumped whenever `iface_addrs` changes.
    iface_addrs_generation: u64,
}

impl Drop for HostNetwork {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl HostNetwork {
    /// Opens the sockets in `target` and starts the watcher. Reads nothing yet.
    pub async fn open(target: NetnsTarget, protocol: u8) -> Result<Self, HostNetError> {
        let socks = netlink::open(&target)?;
        let (events, watcher) = watch::spawn(socks.events, socks.writer.port_id())?;
        Ok(HostNetwork {
            target,
            writer: socks.writer,
            handle: socks.handle,
            links: LinkCache::default(),
            routes: RouteManager::new(protocol),
            neigh: NeighManager::new(protocol),
            sysctls: SysctlManager::new(),
            events: Some(events),
            watcher,
            primed: false,
            etcd: Vec::new(),
            facts: HostFacts::default(),
            address_entries: Vec::new(),
            fact_routes: Vec::new(),
            iface_addrs: InterfaceAddresses::new(),
            iface_addrs_generation: 0,
        })
    }

    /// The etcd endpoints' addresses: protected like the host's own, and
    /// the interfaces towards them count as uplinks. Call before `start`.
    pub fn set_etcd_addresses(&mut self, etcd: Vec<IpAddr>) {
        self.etcd = etcd;
    }

    /// What we last read about this host.
    pub fn facts(&self) -> &HostFacts {
        &self.facts
    }

    /// The own addresses of each interface (kernel names, up or down;
    /// interfaces without an address are absent), as of the last address
    /// dump and link event handled.
    pub fn interface_addresses(&self) -> &InterfaceAddresses {
        &self.iface_addrs
    }

    /// Moves (by one) each time [`Self::interface_addresses`] changes:
    /// compare with the generation last handed on to know whether to
    /// hand it on again.
    pub fn interface_addresses_generation(&self) -> u64 {
        self.iface_addrs_generation
    }

    /// Regroups the address entries by interface name (after an address
    /// dump or a link change); bumps the generation when the map changed.
    fn regroup_interface_addresses(&mut self) {
        let fresh = addresses::by_interface(&self.address_entries, &self.links);
        if fresh != self.iface_addrs {
            tracing::debug!(interfaces = fresh.len(), "interface addresses changed");
            self.iface_addrs = fresh;
            self.iface_addrs_generation += 1;
        }
    }

    /// Re-reads the host's addresses and (when `routes`) the routes that
    /// matter, and hands the protected addresses to the route manager.
    async fn refresh_facts(&mut self, routes: bool) -> Result<(), HostNetError> {
        let entries = addresses::dump(&self.handle).await?;
        if entries != self.address_entries {
            self.address_entries = entries;
            self.regroup_interface_addresses();
        }
        if routes {
            self.fact_routes = facts::relevant_routes(&self.handle, &self.etcd).await?;
        }
        let fact_addrs: Vec<IpAddr> = self
            .address_entries
            .iter()
            .flat_map(AddressEntry::all_ips)
            .collect();
        let facts = facts::derive(
            &fact_addrs,
            &self.fact_routes,
            &self.links,
            &self.etcd,
            self.routes.protocol(),
        );
        if facts != self.facts {
            tracing::debug!(
                addresses = facts.addresses.len(),
                gateways = ?facts.gateways,
                uplinks = ?facts.uplinks,
                "host facts changed"
            );
        }
        self.routes
            .set_protected(Protected::new(&facts, &self.etcd));
        self.facts = facts;
        Ok(())
    }

    /// Deletes our routes that cover a protected address (own address,
    /// default gateway, etcd endpoint), as a previous run may have left
    /// them; meant for start-up, before connecting to etcd. Returns them.
    pub async fn remove_blocking_routes(&mut self) -> Result<Vec<RefusedRoute>, HostNetError> {
        let found = self.routes.observed_covering_protected();
        if found.is_empty() {
            return Ok(found);
        }
        let msgs = found
            .iter()
            .map(|r| self.routes.delete_request(r.dst))
            .collect();
        let results = self.writer.execute(msgs).await?;
        let mut report = FlushReport::default();
        for (r, result) in found.iter().zip(results) {
            self.routes
                .record(r.dst, WriteKind::Delete, result, &mut report);
        }
        report.log_refusals(ObjectKind::Route);
        Ok(found)
    }

    /// Adopts what is there: reads interfaces, host facts, our routes and
    /// our neighbours.
    pub async fn start(&mut self) -> Result<(), HostNetError> {
        self.reload_links().await?;
        self.refresh_facts(true).await?;
        self.routes.resync(&self.handle, &self.links, true).await?;
        self.neigh.resync(&self.handle, &self.links).await?;
        Ok(())
    }

    /// True once the desired state was taken (first apply or repair).
    pub fn is_primed(&self) -> bool {
        self.primed
    }

    /// Re-reads the interfaces and their addresses (and the host facts
    /// derived from them), for a caller that may have skipped events since
    /// [`Self::start`], e.g. while waiting for the first desired state.
    pub async fn reread_interfaces(&mut self) -> Result<(), HostNetError> {
        self.reload_links().await?;
        self.refresh_facts(false).await
    }

    /// The watcher's events (once); each should go to [`Self::handle_event`].
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<DataplaneEvent>> {
        self.events.take()
    }

    /// The route manager (stats, tests).
    pub fn routes(&self) -> &RouteManager {
        &self.routes
    }

    /// The neighbour manager.
    pub fn neighbours(&self) -> &NeighManager {
        &self.neigh
    }

    /// The sysctl manager.
    pub fn sysctls(&self) -> &SysctlManager {
        &self.sysctls
    }

    /// Takes the dirty keys of `changes` from `desired` (everything on the
    /// first call) and writes what is out of sync.
    pub async fn apply(
        &mut self,
        desired: &DesiredState,
        changes: &Changes,
    ) -> Result<HostReport, HostNetError> {
        if self.primed {
            self.routes.update_desired(&desired.routes, &changes.routes);
            for iface in &changes.endpoints {
                let ep = desired.endpoints.get(iface);
                self.neigh.set_endpoint(iface, ep);
                self.sysctls.set_endpoint(iface, ep);
            }
        } else {
            self.set_all(desired);
        }
        self.flush().await
    }

    fn set_all(&mut self, desired: &DesiredState) {
        self.routes.set_desired_all(&desired.routes);
        self.neigh.set_all(&desired.endpoints);
        self.sysctls.set_all(&desired.endpoints);
        self.primed = true;
    }

    /// Writes everything out of sync (and not waiting or blocked). Until
    /// the first apply or repair the desired state is unknown, so nothing
    /// is written (events before that only update what we know).
    pub async fn flush(&mut self) -> Result<HostReport, HostNetError> {
        if !self.primed {
            return Ok(HostReport::default());
        }
        let mut routes = self.routes.flush(&mut self.writer, &self.links).await?;
        if self.routes.needs_resync() {
            self.routes.resync(&self.handle, &self.links, false).await?;
            routes.merge(self.routes.flush(&mut self.writer, &self.links).await?);
        }
        let neighbours = self.neigh.flush(&mut self.writer, &self.links).await?;
        let sysctls = self.sysctls.flush(&self.target, &self.links)?;
        Ok(HostReport {
            routes,
            neighbours,
            sysctls,
            refused_routes: self.routes.take_newly_refused(),
        })
    }

    /// Full repair: re-reads interfaces, routes, neighbours and sysctls,
    /// retakes the whole desired state and writes the difference.
    pub async fn repair(&mut self, desired: &DesiredState) -> Result<HostReport, HostNetError> {
        self.set_all(desired);
        self.resync_all().await?;
        self.flush().await
    }

    async fn resync_all(&mut self) -> Result<(), HostNetError> {
        self.reload_links().await?;
        self.refresh_facts(true).await?;
        self.routes.resync(&self.handle, &self.links, true).await?;
        self.neigh.resync(&self.handle, &self.links).await?;
        self.sysctls.resync();
        Ok(())
    }

    async fn reload_links(&mut self) -> Result<(), HostNetError> {
        self.links = links::dump_links(&self.handle).await?;
        self.regroup_interface_addresses();
        Ok(())
    }

    /// Applies one watcher event and writes what it calls for.
    pub async fn handle_event(
        &mut self,
        event: DataplaneEvent,
    ) -> Result<HostReport, HostNetError> {
        self.handle_events([event]).await
    }

    /// Applies several events, then writes once.
    pub async fn handle_events(
        &mut self,
        events: impl IntoIterator<Item = DataplaneEvent>,
    ) -> Result<HostReport, HostNetError> {
        let mut dirty = false;
        let mut facts_stale = None;
        let mut names_moved = false;
        let mut report = HostReport::default();
        for ev in events {
            if let Some(routes) = changes_facts(&ev, self.routes.protocol(), &self.etcd) {
                facts_stale = Some(routes || facts_stale.unwrap_or(false));
            }
            names_moved |= self.moves_a_name(&ev);
            match ev {
                DataplaneEvent::Overrun => {
                    self.resync_all().await?;
                    dirty = true;
                }
                other => dirty |= self.note_event(other),
            }
        }
        if let Some(routes) = facts_stale {
            self.refresh_facts(routes).await?;
            dirty = true;
        }
        if names_moved {
            // Even after a dump: one that found the same entries regroups nothing.
            self.regroup_interface_addresses();
        }
        if dirty {
            report.merge(self.flush().await?);
        }
        Ok(report)
    }

    /// True when `event` gives an interface index a name it did not have
    /// (created, renamed) or takes its name away (deleted): the addresses
    /// by interface name must be regrouped. Call before applying it.
    fn moves_a_name(&self, event: &DataplaneEvent) -> bool {
        match event {
            DataplaneEvent::Link { index, link } => {
                self.links.kernel_name(*index) != Some(link.name.as_str())
            }
            DataplaneEvent::LinkGone { index } => self.links.kernel_name(*index).is_some(),
            _ => false,
        }
    }

    /// Updates caches for one event; true when something may need writing.
    fn note_event(&mut self, event: DataplaneEvent) -> bool {
        match event {
            DataplaneEvent::Link { index, link } => {
                let change = self.links.update(index, link);
                self.note_link_change(change)
            }
            DataplaneEvent::LinkGone { index } => {
                let change = self.links.remove(index);
                self.note_link_change(change)
            }
            DataplaneEvent::AddressChanged { .. } => {
                self.unblock();
                true
            }
            DataplaneEvent::Route { route, removed } => {
                self.routes.on_route_event(&route, removed, &self.links)
            }
            DataplaneEvent::Overrun => true,
        }
    }

    fn note_link_change(&mut self, change: LinkChange) -> bool {
        match change {
            LinkChange::Unchanged => false,
            LinkChange::Appeared(_) => {
                self.unblock();
                true
            }
            LinkChange::Vanished(name) => {
                self.vanish(&name);
                true
            }
            LinkChange::Renamed { old, .. } => {
                self.vanish(&old);
                self.unblock();
                true
            }
        }
    }

    fn vanish(&mut self, name: &str) {
        tracing::debug!(
            iface = name,
            "interface gone or down; forgetting its objects"
        );
        self.routes.on_link_vanished(name);
        self.neigh.on_link_vanished(name);
        self.sysctls.on_link_vanished(name);
    }

    fn unblock(&mut self) {
        self.routes.unblock_rejected();
        self.neigh.unblock();
        self.sysctls.unblock();
    }

    /// What a full route sync would do now: a fresh dump diffed against
    /// `desired` (writes nothing; the dump refreshes what we know).
    pub async fn plan_routes(
        &mut self,
        desired: &DesiredState,
    ) -> Result<Vec<Op<IpNet, KernelRoute>>, HostNetError> {
        self.reload_links().await?;
        let observed: BTreeMap<IpNet, KernelRoute> =
            dumps::dump_ours(&self.handle, self.routes.protocol(), &self.links).await?;
        let protected = self.routes.protected();
        let mut allowed = desired.routes.clone();
        allowed.retain(|dst, _| protected.covering(dst).is_none());
        Ok(RouteManager::diff(&allowed, &observed))
    }
}

/// Whether `event` may change the host facts: `Some(false)` for an address
/// (re-read addresses), `Some(true)` for a default route or one towards
/// etcd someone else added or removed (re-read routes too), else `None`.
fn changes_facts(event: &DataplaneEvent, our_protocol: u8, etcd: &[IpAddr]) -> Option<bool> {
    match event {
        DataplaneEvent::AddressChanged { .. } => Some(false),
        DataplaneEvent::Route { route, .. }
            if !route.is_ours(our_protocol) && facts::is_relevant(&route.dst, etcd) =>
        {
            Some(true)
        }
        _ => None,
    }
}
