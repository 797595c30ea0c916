//! The route manager: desired routes in, pipelined netlink writes out.
//!
//! State is a [`DeltaTracker`] of destination → [`KernelRoute`]. Planning is
//! pure ([`RouteManager::plan_writes`]): each out-of-sync route becomes one
//! request, or waits (its interface is missing or down), or stays blocked
//! (the kernel refused it; see [`Blocked`]). [`RouteManager::flush`] sends
//! the requests in one pipelined batch and records every result; one bad
//! route never holds up the rest.
//!
//! Protection: desired routes covering a protected address (this host's
//! own, a default gateway, an etcd endpoint; see [`super::protect`]) are
//! set aside as refused before diffing, so they are never written and one of
//! ours already there is deleted. They come back when the address stops
//! being protected.
//!
//! Ownership: we only read routes carrying our protocol number in the main
//! table; we delete with that number (the kernel matches it); and we create
//! with `NLM_F_EXCL` unless we know the existing route is ours, so a route
//! somebody else put on the same destination is never overwritten.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use margay_policy::desired::RouteTarget;
use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::RouteNetlinkMessage;

use super::model::{self, KernelRoute, Nexthop, Overwrite, RawRoute};
use super::protect::{Protected, RefusedRoute};
use crate::hostnet::links::LinkCache;
use crate::hostnet::netlink::{BatchWriter, NetlinkError, WriteResult};
use crate::hostnet::report::{FlushReport, WriteFailure, WriteKind};
use crate::hostnet::tracker::{self, DeltaTracker, Op};

const EEXIST: i32 = 17;
const ESRCH: i32 = 3;
const ENOENT: i32 = 2;

/// Why an out-of-sync route is not being retried right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// A route that is not ours holds the destination; retried when a route
    /// for it is deleted, or at the next full repair.
    Conflict,
    /// The kernel refused it with this errno (e.g. gateway not directly
    /// reachable); retried on link or address changes and full repairs.
    Rejected(i32),
}

/// One request to send, with what it is about.
#[derive(Debug, Clone)]
pub struct PlannedWrite {
    /// Destination.
    pub dst: IpNet,
    /// Create/replace or delete.
    pub kind: WriteKind,
    /// The request.
    pub msg: NetlinkMessage<RouteNetlinkMessage>,
}

/// The result of planning: requests to send, and what must wait.
#[derive(Debug, Default)]
pub struct Planned {
    /// Requests, in destination order.
    pub writes: Vec<PlannedWrite>,
    /// Routes whose interface is missing or down.
    pub waiting: usize,
    /// Routes blocked after a refusal.
    pub blocked: usize,
}

/// Our routes: desired, observed, and what is blocked.
#[derive(Debug, Clone)]
pub struct RouteManager {
    protocol: u8,
    tracker: DeltaTracker<IpNet, KernelRoute>,
    blocked: BTreeMap<IpNet, Blocked>,
    needs_resync: bool,
    protected: Protected,
    /// Desired routes set aside because they cover a protected address.
    refused: BTreeMap<IpNet, RefusedRoute>,
    /// Refusals not reported yet (taken by the next flush).
    newly_refused: Vec<RefusedRoute>,
}

impl RouteManager {
    /// A manager stamping routes with `protocol`.
    pub fn new(protocol: u8) -> Self {
        RouteManager {
            protocol,
            tracker: DeltaTracker::new(),
            blocked: BTreeMap::new(),
            needs_resync: false,
            protected: Protected::default(),
            refused: BTreeMap::new(),
            newly_refused: Vec::new(),
        }
    }

    /// Our route protocol number.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// The tracker (for stats and tests).
    pub fn tracker(&self) -> &DeltaTracker<IpNet, KernelRoute> {
        &self.tracker
    }

    /// Routes blocked after a refusal.
    pub fn blocked(&self) -> &BTreeMap<IpNet, Blocked> {
        &self.blocked
    }

    /// True when a refusal or a lost reply calls for re-reading our routes.
    pub fn needs_resync(&self) -> bool {
        self.needs_resync
    }

    /// Desired routes refused because they cover a protected address.
    pub fn refused(&self) -> &BTreeMap<IpNet, RefusedRoute> {
        &self.refused
    }

    /// Replaces every desired route.
    pub fn set_desired_all(&mut self, routes: &BTreeMap<IpNet, RouteTarget>) {
        let all = routes
            .iter()
            .map(|(dst, t)| (*dst, KernelRoute::from(t)))
            .collect();
        self.set_all(all);
        self.blocked.retain(|dst, _| routes.contains_key(dst));
    }

    /// Takes the desired state of the `dirty` destinations from `routes`.
    pub fn update_desired(
        &mut self,
        routes: &BTreeMap<IpNet, RouteTarget>,
        dirty: &BTreeSet<IpNet>,
    ) {
        for dst in dirty {
            self.blocked.remove(dst);
            let before = self.refused.remove(dst);
            match routes.get(dst) {
                Some(t) => self.set_one(*dst, KernelRoute::from(t), before),
                None => self.tracker.remove_desired(dst),
            }
        }
    }

    /// Replaces the protected addresses and re-sorts every desired route
    /// into written and refused. Pure.
    pub fn set_protected(&mut self, protected: Protected) {
        if protected == self.protected {
            return;
        }
        self.protected = protected;
        let mut all = self.tracker.desired().clone();
        all.extend(self.refused.iter().map(|(dst, r)| (*dst, r.route.clone())));
        self.set_all(all);
    }

    /// The addresses routes must not cover.
    pub fn protected(&self) -> &Protected {
        &self.protected
    }

    fn set_all(&mut self, all: BTreeMap<IpNet, KernelRoute>) {
        let mut before = std::mem::take(&mut self.refused);
        let mut allowed = BTreeMap::new();
        for (dst, route) in all {
            match self.refusal(dst, &route) {
                Some(r) => self.refuse(r, before.remove(&dst)),
                None => {
                    allowed.insert(dst, route);
                }
            }
        }
        self.tracker.replace_desired(allowed);
    }

    fn set_one(&mut self, dst: IpNet, route: KernelRoute, before: Option<RefusedRoute>) {
        match self.refusal(dst, &route) {
            Some(r) => {
                self.tracker.remove_desired(&dst);
                self.refuse(r, before);
            }
            None => self.tracker.set_desired(dst, route),
        }
    }

    fn refusal(&self, dst: IpNet, route: &KernelRoute) -> Option<RefusedRoute> {
        let (addr, reason) = self.protected.covering(&dst)?;
        Some(RefusedRoute {
            dst,
            route: route.clone(),
            addr,
            reason,
        })
    }

    /// Records a refusal; it is reported once, unless it changed.
    fn refuse(&mut self, refused: RefusedRoute, before: Option<RefusedRoute>) {
        if before.as_ref() != Some(&refused) {
            self.newly_refused.push(refused.clone());
        }
        self.refused.insert(refused.dst, refused);
    }

    /// Refusals not yet reported (the next flush reports them).
    pub fn take_newly_refused(&mut self) -> Vec<RefusedRoute> {
        std::mem::take(&mut self.newly_refused)
    }

    /// Our routes in the kernel that cover a protected address, as
    /// refusals (what start-up deletes before connecting to etcd). Pure.
    pub fn observed_covering_protected(&self) -> Vec<RefusedRoute> {
        self.tracker
            .observed()
            .iter()
            .filter_map(|(dst, route)| self.refusal(*dst, route))
            .collect()
    }

    /// A delete request for one of our routes.
    pub fn delete_request(&self, dst: IpNet) -> NetlinkMessage<RouteNetlinkMessage> {
        model::del_route(dst, self.protocol)
    }

    /// Turns every out-of-sync, unblocked route whose interface is usable
    /// into a request. Pure.
    pub fn plan_writes(&self, links: &LinkCache) -> Planned {
        let mut planned = Planned::default();
        for op in self.tracker.pending() {
            if self.blocked.contains_key(op.key()) {
                planned.blocked += 1;
                continue;
            }
            match op {
                Op::Upsert {
                    key,
                    value,
                    existing,
                } => match self.nexthop(&key, &value, links) {
                    Some(hop) => {
                        let overwrite = if existing.is_some() {
                            Overwrite::Replace
                        } else {
                            Overwrite::Never
                        };
                        planned.writes.push(PlannedWrite {
                            dst: key,
                            kind: WriteKind::Upsert,
                            msg: model::new_route(key, hop, self.protocol, overwrite),
                        });
                    }
                    None => planned.waiting += 1,
                },
                Op::Delete { key, .. } => planned.writes.push(PlannedWrite {
                    dst: key,
                    kind: WriteKind::Delete,
                    msg: model::del_route(key, self.protocol),
                }),
            }
        }
        planned
    }

    fn nexthop(&self, dst: &IpNet, route: &KernelRoute, links: &LinkCache) -> Option<Nexthop> {
        match route {
            KernelRoute::Dev(iface) => links.usable(iface).map(Nexthop::Dev),
            KernelRoute::Via(gw) if gw.is_ipv4() == dst.addr().is_ipv4() => Some(Nexthop::Via(*gw)),
            // A gateway of the other family would need RTA_VIA; never desired today.
            KernelRoute::Via(_) | KernelRoute::Unrecognised => None,
        }
    }

    /// Records the kernel's answer to one planned write.
    pub fn record(
        &mut self,
        dst: IpNet,
        kind: WriteKind,
        result: WriteResult,
        report: &mut FlushReport,
    ) {
        match (kind, result) {
            (WriteKind::Upsert, WriteResult::Ok) => {
                self.tracker.mark_upserted(&dst);
                report.upserts += 1;
            }
            (WriteKind::Delete, WriteResult::Ok) => {
                self.tracker.mark_deleted(&dst);
                report.deletes += 1;
            }
            (WriteKind::Delete, WriteResult::Errno(ESRCH | ENOENT)) => {
                self.tracker.mark_deleted(&dst)
            }
            (WriteKind::Upsert, WriteResult::Errno(EEXIST)) => {
                // Most likely a route that is not ours; a re-read tells.
                self.blocked.insert(dst, Blocked::Conflict);
                self.needs_resync = true;
                report.failures.push(failure(dst, kind, Some(EEXIST)));
            }
            (_, WriteResult::Errno(e)) => {
                self.blocked.insert(dst, Blocked::Rejected(e));
                report.failures.push(failure(dst, kind, Some(e)));
            }
            (_, WriteResult::Unknown) => {
                self.needs_resync = true;
                report.failures.push(failure(dst, kind, None));
            }
        }
    }

    /// Sends every pending write in one pipelined batch.
    pub async fn flush(
        &mut self,
        nl: &mut BatchWriter,
        links: &LinkCache,
    ) -> Result<FlushReport, NetlinkError> {
        let planned = self.plan_writes(links);
        let mut report = FlushReport {
            waiting: planned.waiting,
            blocked: planned.blocked,
            ..FlushReport::default()
        };
        if planned.writes.is_empty() {
            return Ok(report);
        }
        let (keys, msgs): (Vec<_>, Vec<_>) = planned
            .writes
            .into_iter()
            .map(|w| ((w.dst, w.kind), w.msg))
            .unzip();
        let results = nl.execute(msgs).await?;
        for ((dst, kind), result) in keys.into_iter().zip(results) {
            self.record(dst, kind, result, &mut report);
        }
        report.blocked += report.failures.len();
        report.log_refusals("route");
        Ok(report)
    }

    /// Re-reads our routes from the kernel. `clear_blocked` also gives every
    /// blocked route another chance (full repair); otherwise only conflicts
    /// that turned out to be ours are lifted.
    pub async fn resync(
        &mut self,
        handle: &rtnetlink::Handle,
        links: &LinkCache,
        clear_blocked: bool,
    ) -> Result<(), NetlinkError> {
        let observed = super::dumps::dump_ours(handle, self.protocol, links).await?;
        if clear_blocked {
            self.blocked.clear();
        } else {
            self.blocked
                .retain(|dst, b| !(*b == Blocked::Conflict && observed.contains_key(dst)));
        }
        self.tracker.replace_observed(observed);
        self.needs_resync = false;
        Ok(())
    }

    /// Applies a route notification caused by someone else. Returns true
    /// when something may need writing.
    pub fn on_route_event(&mut self, route: &RawRoute, removed: bool, links: &LinkCache) -> bool {
        let dst = route.dst;
        if route.is_ours(self.protocol) {
            if removed {
                self.tracker.remove_observed(&dst);
            } else {
                let seen = route.to_kernel_route(|i| links.name_of(i));
                self.tracker.set_observed(dst, seen);
            }
            return true;
        }
        if removed {
            return self.blocked.remove(&dst).is_some();
        }
        if self.tracker.observed().contains_key(&dst) {
            // Someone may have replaced our route: re-read to know.
            self.needs_resync = true;
            return true;
        }
        false
    }

    /// The kernel dropped the routes of interface `name` (gone or down).
    /// Returns true when a gateway route may have gone with it.
    pub fn on_link_vanished(&mut self, name: &str) -> bool {
        self.tracker
            .forget_observed(|_, r| matches!(r, KernelRoute::Dev(i) if i.as_str() == name));
        let via = self
            .tracker
            .observed()
            .values()
            .any(|r| matches!(r, KernelRoute::Via(_)));
        if via {
            self.needs_resync = true;
        }
        via
    }

    /// Gives every refused (not conflicting) route another chance.
    pub fn unblock_rejected(&mut self) {
        self.blocked.retain(|_, b| *b == Blocked::Conflict);
    }

    /// The pure diff between `desired` and a fresh `observed` (for plans).
    pub fn diff(
        desired: &BTreeMap<IpNet, RouteTarget>,
        observed: &BTreeMap<IpNet, KernelRoute>,
    ) -> Vec<Op<IpNet, KernelRoute>> {
        let want: BTreeMap<IpNet, KernelRoute> = desired
            .iter()
            .map(|(d, t)| (*d, KernelRoute::from(t)))
            .collect();
        tracker::diff(&want, observed)
    }
}

fn failure(dst: IpNet, kind: WriteKind, errno: Option<i32>) -> WriteFailure {
    WriteFailure {
        object: dst.to_string(),
        kind,
        errno,
    }
}

#[cfg(test)]
mod tests;
