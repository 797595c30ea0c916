//! The route manager: desired routes in, pipelined netlink writes out.
//!
//! State is an [`IfaceObjects`] of destination → [`KernelRoute`] (the
//! generic per-interface manager, with [`OurRoute`] saying what is
//! route-specific). Planning does no I/O
//! ([`RouteManager::plan_writes`]): each out-of-sync route becomes one
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
use std::net::IpAddr;

use ipnet::IpNet;
use margay_policy::desired::RouteTarget;
use margay_policy::names::InterfaceName;
use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::RouteNetlinkMessage;

use super::model::{self, KernelRoute, Nexthop, Overwrite, RawRoute};
use super::protect::{Protected, RefusedRoute};
use crate::hostnet::iface_objects::{
    DeletePolicy, IfaceObject, IfaceObjects, LinkNeed, Outcome, Step,
};
use crate::hostnet::links::LinkCache;
use crate::hostnet::netlink::{BatchWriter, NetlinkError, WriteResult};
use crate::hostnet::report::{FlushReport, ObjectKind, WriteKind};
use crate::hostnet::tracker::{self, DeltaTracker, Op};

pub use crate::hostnet::iface_objects::Blocked;

/// Route requests built and sent at a time by [`RouteManager::flush`].
const FLUSH_CHUNK: usize = 4096;

const EEXIST: i32 = 17;
const ESRCH: i32 = 3;
const ENOENT: i32 = 2;

/// Routes as per-interface objects: a device route needs its interface
/// up, a gateway route none; deletes go by destination, so always out.
#[derive(Debug, Clone, Copy)]
pub struct OurRoute;

impl IfaceObject for OurRoute {
    type Key = IpNet;
    type Value = KernelRoute;
    const KIND: ObjectKind = ObjectKind::Route;
    const NEEDS: LinkNeed = LinkNeed::Up;
    const DELETE: DeletePolicy = DeletePolicy::Send;

    fn iface<'a>(_: &'a IpNet, route: &'a KernelRoute) -> Option<&'a InterfaceName> {
        match route {
            KernelRoute::Dev(iface) => Some(iface),
            KernelRoute::Via(_) | KernelRoute::Unrecognised => None,
        }
    }

    fn failed_addr(dst: &IpNet) -> Option<IpAddr> {
        Some(dst.addr())
    }
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
    objects: IfaceObjects<OurRoute>,
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
            objects: IfaceObjects::default(),
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
        self.objects.tracker()
    }

    /// Routes blocked after a refusal.
    pub fn blocked(&self) -> &BTreeMap<IpNet, Blocked> {
        self.objects.blocked()
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
        self.objects
            .retain_blocked(|dst, _| routes.contains_key(dst));
    }

    /// Takes the desired state of the `dirty` destinations from `routes`.
    pub fn update_desired(
        &mut self,
        routes: &BTreeMap<IpNet, RouteTarget>,
        dirty: &BTreeSet<IpNet>,
    ) {
        for dst in dirty {
            self.objects.unblock(dst);
            let before = self.refused.remove(dst);
            match routes.get(dst) {
                Some(t) => self.set_one(*dst, KernelRoute::from(t), before),
                None => self.objects.tracker_mut().remove_desired(dst),
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
        let mut all = self.objects.tracker().desired().clone();
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
        self.objects.tracker_mut().replace_desired(allowed);
    }

    fn set_one(&mut self, dst: IpNet, route: KernelRoute, before: Option<RefusedRoute>) {
        match self.refusal(dst, &route) {
            Some(r) => {
                self.objects.tracker_mut().remove_desired(&dst);
                self.refuse(r, before);
            }
            None => self.objects.tracker_mut().set_desired(dst, route),
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
        self.objects
            .tracker()
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
    /// into a request.
    pub fn plan_writes(&mut self, links: &LinkCache) -> Planned {
        let plan = self.objects.plan(links);
        let mut planned = Planned {
            writes: Vec::with_capacity(plan.steps.len()),
            waiting: plan.waiting,
            blocked: plan.blocked,
        };
        for step in plan.steps {
            match self.request(step) {
                Some(write) => planned.writes.push(write),
                None => planned.waiting += 1,
            }
        }
        planned
    }

    /// The request for one step, or `None` when its route has no usable
    /// next hop yet (it waits).
    fn request(&self, step: Step<IpNet, KernelRoute>) -> Option<PlannedWrite> {
        match step {
            Step::Upsert {
                key,
                value,
                existing,
                ifindex,
            } => {
                let hop = nexthop(&key, &value, ifindex)?;
                let overwrite = if existing.is_some() {
                    Overwrite::Replace
                } else {
                    Overwrite::Never
                };
                Some(PlannedWrite {
                    dst: key,
                    kind: WriteKind::Upsert,
                    msg: model::new_route(key, hop, self.protocol, overwrite),
                })
            }
            Step::Delete { key, .. } => Some(PlannedWrite {
                dst: key,
                kind: WriteKind::Delete,
                msg: model::del_route(key, self.protocol),
            }),
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
        let outcome = match (kind, result) {
            (_, WriteResult::Ok) => Outcome::Done,
            (WriteKind::Delete, WriteResult::Errno(ESRCH | ENOENT)) => Outcome::AlreadyGone,
            (WriteKind::Upsert, WriteResult::Errno(EEXIST)) => {
                // Most likely a route that is not ours; a re-read tells.
                self.needs_resync = true;
                Outcome::Failed {
                    errno: Some(EEXIST),
                    block: Some(Blocked::Conflict),
                }
            }
            (_, WriteResult::Errno(e)) => Outcome::Failed {
                errno: Some(e),
                block: Some(Blocked::Rejected(Some(e))),
            },
            (_, WriteResult::Unknown) => {
                self.needs_resync = true;
                Outcome::Failed {
                    errno: None,
                    block: None,
                }
            }
        };
        self.objects.record(dst, kind, outcome, report);
    }

    /// Sends every pending write, pipelined, planning and building the
    /// requests [`FLUSH_CHUNK`] routes at a time (a first apply of 100,000
    /// routes would otherwise hold every step and request at once).
    pub async fn flush(
        &mut self,
        nl: &mut BatchWriter,
        links: &LinkCache,
    ) -> Result<FlushReport, NetlinkError> {
        let mut report = FlushReport::default();
        let mut wrote = false;
        let mut cursor: Option<IpNet> = None;
        loop {
            let (plan, last) = self.objects.plan_after(links, cursor.as_ref(), FLUSH_CHUNK);
            report.waiting += plan.waiting;
            report.blocked += plan.blocked;
            if last.is_none() {
                break;
            }
            cursor = last;
            let mut keys = Vec::with_capacity(plan.steps.len());
            let mut msgs = Vec::with_capacity(plan.steps.len());
            for step in plan.steps {
                match self.request(step) {
                    Some(w) => {
                        keys.push((w.dst, w.kind));
                        msgs.push(w.msg);
                    }
                    None => report.waiting += 1,
                }
            }
            if msgs.is_empty() {
                continue;
            }
            wrote = true;
            let results = nl.execute(msgs).await?;
            for ((dst, kind), result) in keys.into_iter().zip(results) {
                self.record(dst, kind, result, &mut report);
            }
        }
        if wrote {
            report.log_refusals(ObjectKind::Route);
        }
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
            self.objects.unblock_all();
        } else {
            self.objects
                .retain_blocked(|dst, b| !(*b == Blocked::Conflict && observed.contains_key(dst)));
        }
        self.objects.replace_observed(observed);
        self.needs_resync = false;
        Ok(())
    }

    /// Applies a route notification caused by someone else. Returns true
    /// when something may need writing.
    pub fn on_route_event(&mut self, route: &RawRoute, removed: bool, links: &LinkCache) -> bool {
        let dst = route.dst;
        if route.is_ours(self.protocol) {
            if removed {
                self.objects.tracker_mut().remove_observed(&dst);
            } else {
                let seen = route.to_kernel_route(|i| links.name_of(i));
                self.objects.tracker_mut().set_observed(dst, seen);
            }
            return true;
        }
        if removed {
            return self.objects.unblock(&dst);
        }
        if self.objects.tracker().observed().contains_key(&dst) {
            // Someone may have replaced our route: re-read to know.
            self.needs_resync = true;
            return true;
        }
        false
    }

    /// The kernel dropped the routes of interface `name` (gone or down).
    /// Returns true when a gateway route may have gone with it.
    pub fn on_link_vanished(&mut self, name: &str) -> bool {
        self.objects.forget_iface(name);
        let via = self
            .objects
            .tracker()
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
        self.objects.retain_blocked(|_, b| *b == Blocked::Conflict);
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

/// The next hop of an upsert: a device route out of its (up) interface,
/// or a gateway of the destination's family; `None` waits.
fn nexthop(dst: &IpNet, route: &KernelRoute, ifindex: Option<u32>) -> Option<Nexthop> {
    match route {
        KernelRoute::Dev(_) => ifindex.map(Nexthop::Dev),
        KernelRoute::Via(gw) if gw.is_ipv4() == dst.addr().is_ipv4() => Some(Nexthop::Via(*gw)),
        // A gateway of the other family would need RTA_VIA; never desired today.
        KernelRoute::Via(_) | KernelRoute::Unrecognised => None,
    }
}

#[cfg(test)]
mod tests;
