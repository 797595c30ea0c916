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
use std::fmt;

use ipnet::IpNet;
use margay_policy::desired::RouteTarget;
use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::RouteNetlinkMessage;

use super::links::LinkCache;
use super::model::{self, KernelRoute, Nexthop, Overwrite, RawRoute};
use super::netlink::{BatchWriter, NetlinkError, WriteResult};
use super::protect::{Protected, RefusedRoute};
use super::tracker::{DeltaTracker, Op};

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

/// Whether a write created/replaced or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Create or replace.
    Upsert,
    /// Delete.
    Delete,
}

/// A write the kernel refused (logged, counted, retried later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    /// The object, as text (`10.0.0.1/32`, `cali1 10.0.0.1`, a sysctl path).
    pub object: String,
    /// What we tried.
    pub kind: WriteKind,
    /// The errno, or `None` when the reply was lost.
    pub errno: Option<i32>,
}

impl fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            WriteKind::Upsert => "write",
            WriteKind::Delete => "delete",
        };
        match self.errno {
            Some(e) => write!(
                f,
                "{what} {}: {}",
                self.object,
                std::io::Error::from_raw_os_error(e)
            ),
            None => write!(f, "{what} {}: reply lost", self.object),
        }
    }
}

/// What one flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Objects created or replaced.
    pub upserts: usize,
    /// Objects deleted.
    pub deletes: usize,
    /// Out-of-sync objects waiting for their interface.
    pub waiting: usize,
    /// Out-of-sync objects blocked after a refusal.
    pub blocked: usize,
    /// Refusals in this flush.
    pub failures: Vec<WriteFailure>,
    /// Routes newly refused because they cover a protected address.
    pub refused: Vec<RefusedRoute>,
}

/// At most this many refusals are logged one by one per flush; the rest are
/// counted in one line (datastore content can cause many at once).
pub const REFUSALS_LOGGED_PER_FLUSH: usize = 5;

impl FlushReport {
    /// Logs this flush's refusals of `what` (`route`, `neighbour`,
    /// `sysctl`): the first [`REFUSALS_LOGGED_PER_FLUSH`] one per line, then
    /// a count of the others.
    pub fn log_refusals(&self, what: &str) {
        for f in self.failures.iter().take(REFUSALS_LOGGED_PER_FLUSH) {
            tracing::warn!(kind = what, object = %f.object, failure = %f, "kernel refused a write; will retry");
        }
        let more = self
            .failures
            .len()
            .saturating_sub(REFUSALS_LOGGED_PER_FLUSH);
        if more > 0 {
            tracing::warn!(
                kind = what,
                more,
                "kernel refused more writes in this flush; will retry"
            );
        }
    }
}

impl FlushReport {
    /// Writes that took effect.
    pub fn writes(&self) -> usize {
        self.upserts + self.deletes
    }

    /// Folds another report into this one.
    pub fn merge(&mut self, other: FlushReport) {
        self.upserts += other.upserts;
        self.deletes += other.deletes;
        self.waiting += other.waiting;
        self.blocked += other.blocked;
        self.failures.extend(other.failures);
        self.refused.extend(other.refused);
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
            refused: self.take_newly_refused(),
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
        let observed = dump(handle, self.protocol, links).await?;
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
        super::tracker::diff(&want, observed)
    }
}

fn failure(dst: IpNet, kind: WriteKind, errno: Option<i32>) -> WriteFailure {
    WriteFailure {
        object: dst.to_string(),
        kind,
        errno,
    }
}

/// Dumps our routes (both families, main table, our protocol).
pub async fn dump(
    handle: &rtnetlink::Handle,
    protocol: u8,
    links: &LinkCache,
) -> Result<BTreeMap<IpNet, KernelRoute>, NetlinkError> {
    let mut out = BTreeMap::new();
    for raw in super::dumps::dump_routes(handle, protocol).await? {
        if raw.is_ours(protocol) {
            out.insert(raw.dst, raw.to_kernel_route(|i| links.name_of(i)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::links::Link;
    use margay_policy::names::InterfaceName;

    fn iface(s: &str) -> InterfaceName {
        InterfaceName::new(s).expect("valid")
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn links() -> LinkCache {
        LinkCache::from_links([
            (
                2,
                Link {
                    name: "cali1".into(),
                    up: true,
                },
            ),
            (
                3,
                Link {
                    name: "cali2".into(),
                    up: false,
                },
            ),
        ])
    }

    fn desired() -> BTreeMap<IpNet, RouteTarget> {
        BTreeMap::from([
            (net("10.0.0.1/32"), RouteTarget::Interface(iface("cali1"))),
            (net("10.0.0.2/32"), RouteTarget::Interface(iface("cali2"))),
            (net("10.0.0.3/32"), RouteTarget::Interface(iface("cali3"))),
            (
                net("10.0.1.0/32"),
                RouteTarget::Gateway("192.168.0.2".parse().expect("ip")),
            ),
        ])
    }

    /// Plays the kernel: every planned write succeeds.
    fn accept_all(m: &mut RouteManager, links: &LinkCache) -> FlushReport {
        let planned = m.plan_writes(links);
        let mut report = FlushReport::default();
        for w in planned.writes {
            m.record(w.dst, w.kind, WriteResult::Ok, &mut report);
        }
        report
    }

    #[test]
    fn routes_wait_for_usable_interfaces() {
        let mut m = RouteManager::new(80);
        m.set_desired_all(&desired());
        let planned = m.plan_writes(&links());
        let dsts: Vec<_> = planned.writes.iter().map(|w| w.dst.to_string()).collect();
        assert_eq!(dsts, vec!["10.0.0.1/32", "10.0.1.0/32"]);
        assert_eq!(planned.waiting, 2);
        accept_all(&mut m, &links());
        assert_eq!(m.tracker().pending_len(), 2);
        let mut l = links();
        l.update(
            9,
            Link {
                name: "cali3".into(),
                up: true,
            },
        );
        let r = accept_all(&mut m, &l);
        assert_eq!(r.upserts, 1);
        assert_eq!(m.tracker().pending_len(), 1);
    }

    #[test]
    fn new_routes_never_overwrite_and_known_ones_are_replaced() {
        let mut m = RouteManager::new(80);
        let one = BTreeMap::from([(net("10.0.0.1/32"), RouteTarget::Interface(iface("cali1")))]);
        m.set_desired_all(&one);
        let w = &m.plan_writes(&links()).writes[0];
        assert_eq!(
            w.msg.header.flags & netlink_packet_core::NLM_F_EXCL,
            netlink_packet_core::NLM_F_EXCL
        );
        m.tracker
            .set_observed(net("10.0.0.1/32"), KernelRoute::Unrecognised);
        let w = &m.plan_writes(&links()).writes[0];
        assert_eq!(
            w.msg.header.flags & netlink_packet_core::NLM_F_REPLACE,
            netlink_packet_core::NLM_F_REPLACE
        );
    }

    #[test]
    fn refusals_block_until_their_trigger() {
        let mut m = RouteManager::new(80);
        m.set_desired_all(&desired());
        let mut r = FlushReport::default();
        m.record(
            net("10.0.0.1/32"),
            WriteKind::Upsert,
            WriteResult::Errno(EEXIST),
            &mut r,
        );
        m.record(
            net("10.0.1.0/32"),
            WriteKind::Upsert,
            WriteResult::Errno(101),
            &mut r,
        );
        assert_eq!(r.failures.len(), 2);
        assert!(m.needs_resync());
        assert!(m.plan_writes(&links()).writes.is_empty());
        m.unblock_rejected();
        assert_eq!(m.plan_writes(&links()).writes.len(), 1);
        let foreign_gone = RawRoute {
            dst: net("10.0.0.1/32"),
            protocol: 4,
            table: model::MAIN_TABLE,
            oif: Some(2),
            gateway: None,
            scope_link: true,
            simple: true,
        };
        assert!(m.on_route_event(&foreign_gone, true, &links()));
        assert_eq!(m.plan_writes(&links()).writes.len(), 2);
    }

    #[test]
    fn deletes_of_missing_routes_count_as_done_and_others_route_events_apply() {
        let mut m = RouteManager::new(80);
        m.tracker
            .set_observed(net("10.9.9.9/32"), KernelRoute::Dev(iface("cali1")));
        let mut r = FlushReport::default();
        m.record(
            net("10.9.9.9/32"),
            WriteKind::Delete,
            WriteResult::Errno(ESRCH),
            &mut r,
        );
        assert!(m.tracker().in_sync());
        assert_eq!(r.writes(), 0);
        // Someone deletes one of our routes by hand: it becomes pending again.
        m.set_desired_all(&BTreeMap::from([(
            net("10.0.0.1/32"),
            RouteTarget::Interface(iface("cali1")),
        )]));
        accept_all(&mut m, &links());
        let ours = RawRoute {
            dst: net("10.0.0.1/32"),
            protocol: 80,
            table: model::MAIN_TABLE,
            oif: Some(2),
            gateway: None,
            scope_link: true,
            simple: true,
        };
        assert!(m.on_route_event(&ours, true, &links()));
        assert_eq!(m.tracker().pending_len(), 1);
        assert!(m.on_route_event(&ours, false, &links()));
        assert!(m.tracker().in_sync());
    }

    #[test]
    fn vanished_links_forget_their_routes() {
        let mut m = RouteManager::new(80);
        m.set_desired_all(&desired());
        accept_all(&mut m, &links());
        assert!(m.on_link_vanished("cali1"));
        assert_eq!(m.tracker().observed().len(), 1);
        assert!(m.needs_resync());
        let mut l = links();
        l.remove(2);
        let planned = m.plan_writes(&l);
        assert!(planned.writes.is_empty());
        assert_eq!(planned.waiting, 3);
    }

    fn protecting(addrs: &[&str], etcd: &[&str]) -> Protected {
        let facts = crate::routes::protect::HostFacts {
            addresses: addrs.iter().map(|a| a.parse().expect("ip")).collect(),
            ..Default::default()
        };
        let etcd: Vec<std::net::IpAddr> = etcd.iter().map(|a| a.parse().expect("ip")).collect();
        Protected::new(&facts, &etcd)
    }

    #[test]
    fn routes_covering_protected_addresses_are_never_written_and_ours_are_deleted() {
        use crate::routes::protect::ProtectReason;
        let mut m = RouteManager::new(80);
        m.set_protected(protecting(&["10.0.0.3"], &["10.0.1.0"]));
        // One of ours already covers the etcd address (a previous run wrote it).
        m.tracker.set_observed(
            net("10.0.1.0/32"),
            KernelRoute::Via("192.168.0.2".parse().expect("ip")),
        );
        m.set_desired_all(&desired());
        let mut l = links();
        l.update(
            9,
            Link {
                name: "cali3".into(),
                up: true,
            },
        );
        let planned = m.plan_writes(&l);
        let writes: Vec<_> = planned
            .writes
            .iter()
            .map(|w| (w.dst.to_string(), w.kind))
            .collect();
        assert_eq!(
            writes,
            vec![
                ("10.0.0.1/32".to_owned(), WriteKind::Upsert),
                ("10.0.1.0/32".to_owned(), WriteKind::Delete),
            ]
        );
        let refused = m.take_newly_refused();
        let why: Vec<_> = refused
            .iter()
            .map(|r| (r.dst.to_string(), r.reason))
            .collect();
        assert_eq!(
            why,
            vec![
                ("10.0.0.3/32".to_owned(), ProtectReason::HostAddress),
                ("10.0.1.0/32".to_owned(), ProtectReason::EtcdEndpoint),
            ]
        );
        // Reported once: the same desired state again reports nothing.
        m.set_desired_all(&desired());
        assert!(m.take_newly_refused().is_empty());
        // An incremental update refuses too.
        let more = BTreeMap::from([(net("10.0.0.0/24"), RouteTarget::Interface(iface("cali1")))]);
        m.update_desired(&more, &BTreeSet::from([net("10.0.0.0/24")]));
        assert_eq!(m.take_newly_refused().len(), 1);
        assert!(!m.tracker().desired().contains_key(&net("10.0.0.0/24")));
        // The host gives the address up: the route comes back.
        m.set_protected(protecting(&[], &["10.0.1.0"]));
        assert!(m.tracker().desired().contains_key(&net("10.0.0.3/32")));
        assert!(m.tracker().desired().contains_key(&net("10.0.0.0/24")));
        assert_eq!(m.refused().len(), 1);
        // And it is refused again when the address returns.
        m.set_protected(protecting(&["10.0.0.3"], &["10.0.1.0"]));
        assert_eq!(m.take_newly_refused().len(), 2);
        assert_eq!(m.refused().len(), 3);
    }

    #[test]
    fn start_up_finds_our_routes_covering_protected_addresses() {
        let mut m = RouteManager::new(80);
        m.tracker
            .set_observed(net("198.19.0.2/32"), KernelRoute::Dev(iface("caliw3")));
        m.tracker
            .set_observed(net("10.0.0.1/32"), KernelRoute::Dev(iface("cali1")));
        assert!(m.observed_covering_protected().is_empty());
        m.set_protected(protecting(&[], &["198.19.0.2"]));
        let found = m.observed_covering_protected();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].dst, net("198.19.0.2/32"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn all_up() -> LinkCache {
            LinkCache::from_links((0..4).map(|i| {
                (
                    i + 10,
                    Link {
                        name: format!("cali{i}"),
                        up: true,
                    },
                )
            }))
        }

        fn target() -> impl Strategy<Value = RouteTarget> {
            prop_oneof![
                (0u8..4).prop_map(|i| RouteTarget::Interface(iface(&format!("cali{i}")))),
                (1u8..4).prop_map(|g| RouteTarget::Gateway(
                    format!("192.168.0.{g}").parse().expect("ip")
                )),
            ]
        }

        fn routes() -> impl Strategy<Value = BTreeMap<IpNet, RouteTarget>> {
            prop::collection::btree_map(
                (0u8..24).prop_map(|i| net(&format!("10.0.0.{i}/32"))),
                target(),
                0..16,
            )
        }

        fn observed() -> impl Strategy<Value = BTreeMap<IpNet, KernelRoute>> {
            routes().prop_map(|m| m.iter().map(|(d, t)| (*d, KernelRoute::from(t))).collect())
        }

        proptest! {
            #[test]
            fn a_flush_writes_exactly_the_diff_and_converges(
                desired in routes(),
                seen in observed(),
            ) {
                let links = all_up();
                let mut m = RouteManager::new(80);
                m.tracker.replace_observed(seen.clone());
                m.set_desired_all(&desired);
                let want = RouteManager::diff(&desired, &seen);
                let planned = m.plan_writes(&links);
                prop_assert_eq!(planned.writes.len(), want.len());
                let r = accept_all(&mut m, &links);
                prop_assert_eq!(r.writes(), want.len());
                prop_assert!(m.tracker().in_sync());
                prop_assert!(m.plan_writes(&links).writes.is_empty());
            }

            #[test]
            fn removing_and_readding_a_route_converges(desired in routes(), pick in 0usize..16) {
                let links = all_up();
                let mut m = RouteManager::new(80);
                m.set_desired_all(&desired);
                accept_all(&mut m, &links);
                let Some((dst, t)) = desired.iter().nth(pick % desired.len().max(1)) else {
                    return Ok(());
                };
                let (dst, t) = (*dst, t.clone());
                let dirty = BTreeSet::from([dst]);
                let mut less = desired.clone();
                less.remove(&dst);
                m.update_desired(&less, &dirty);
                prop_assert_eq!(accept_all(&mut m, &links).deletes, 1);
                m.update_desired(&desired, &dirty);
                prop_assert_eq!(accept_all(&mut m, &links).upserts, 1);
                prop_assert_eq!(m.tracker().observed().get(&dst), Some(&KernelRoute::from(&t)));
                prop_assert!(m.tracker().in_sync());
            }
        }
    }

    #[test]
    fn the_pure_diff_matches_what_a_flush_would_write() {
        let observed = BTreeMap::from([
            (net("10.0.0.1/32"), KernelRoute::Dev(iface("cali1"))),
            (net("10.5.5.5/32"), KernelRoute::Dev(iface("cali1"))),
        ]);
        let ops = RouteManager::diff(&desired(), &observed);
        assert_eq!(ops.len(), 4);
        assert!(matches!(&ops[3], Op::Delete { key, .. } if *key == net("10.5.5.5/32")));
    }
}
