//! Routes to workload addresses.
//!
//! Each endpoint may *claim* its addresses: a plumbed local endpoint via its
//! interface, an active remote endpoint via its host's `bird_ip` (only the
//! addresses of the gateway's family). Several endpoints may claim the same
//! address (a stale record, an address moving between hosts); the winner is
//! chosen deterministically, local before remote, then by endpoint key, so the
//! result does not depend on the order the updates came in.

use super::hashing::FastMap;
use std::cmp::Ordering;

use ipnet::IpNet;

use super::endpoints::Endpoints;
use super::output::Output;
use super::{CalcEngine, EpIdx};
use crate::desired::RouteTarget;
use crate::model::EndpointState;

/// The addresses an endpoint routes, and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RouteClaim {
    /// Interface (local) or gateway (remote).
    pub target: RouteTarget,
    /// Addresses claimed (sorted, distinct).
    pub nets: Vec<IpNet>,
}

/// Address → endpoints claiming it.
#[derive(Default)]
pub(super) struct RouteClaims {
    pub by_net: FastMap<IpNet, Claimants>,
}

/// The endpoints claiming one address: almost always exactly one, kept
/// inline so the common case allocates nothing.
#[derive(Debug)]
pub(super) enum Claimants {
    /// A single claimant.
    One(EpIdx),
    /// Several (a conflict, or an address moving).
    Many(Vec<EpIdx>),
}

impl Claimants {
    fn as_slice(&self) -> &[EpIdx] {
        match self {
            Claimants::One(e) => std::slice::from_ref(e),
            Claimants::Many(v) => v,
        }
    }

    fn push(&mut self, e: EpIdx) {
        match self {
            Claimants::One(first) => *self = Claimants::Many(vec![*first, e]),
            Claimants::Many(v) => v.push(e),
        }
    }

    /// Removes `e`; true when nobody is left.
    fn remove(&mut self, e: EpIdx) -> bool {
        match self {
            Claimants::One(first) => *first == e,
            Claimants::Many(v) => {
                v.retain(|&c| c != e);
                match v[..] {
                    [] => true,
                    [only] => {
                        *self = Claimants::One(only);
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

fn rank(target: &RouteTarget) -> u8 {
    match target {
        RouteTarget::Interface(_) => 0,
        RouteTarget::Gateway(_) => 1,
    }
}

/// True when `net` is routed via `target` (a gateway routes its own family only).
fn routable(target: &RouteTarget, net: &IpNet) -> bool {
    match target {
        RouteTarget::Interface(_) => true,
        RouteTarget::Gateway(gw) => net.addr().is_ipv4() == gw.is_ipv4(),
    }
}

/// The addresses of `addrs` routed via `target`.
fn wanted<'a>(addrs: &'a [IpNet], target: &'a RouteTarget) -> impl Iterator<Item = &'a IpNet> {
    addrs.iter().filter(move |n| routable(target, n))
}

impl CalcEngine {
    /// Where endpoint `e`'s addresses should be routed now, if anywhere.
    fn route_target(&self, e: EpIdx) -> Option<RouteTarget> {
        let ep = &self.eps.slab[e];
        if ep.local {
            let publ = ep.publ.as_ref()?;
            return Some(RouteTarget::Interface(publ.iface.clone()));
        }
        if ep.doc.state != EndpointState::Active {
            return None;
        }
        self.host_ips
            .get(&ep.key.host)
            .map(|&gw| RouteTarget::Gateway(gw))
    }

    /// Re-registers the route claim of `e` from its current state.
    pub(super) fn sync_route(&mut self, e: EpIdx) {
        let target = self.route_target(e);
        let ep = &self.eps.slab[e];
        let current = match (&ep.route, &target) {
            (Some(claim), Some(t)) => {
                claim.target == *t && claim.nets.iter().eq(wanted(&ep.addrs, t))
            }
            (None, Some(t)) => wanted(&ep.addrs, t).next().is_none(),
            (claim, None) => claim.is_none(),
        };
        if current {
            return;
        }
        let claim = target.and_then(|t| {
            let nets: Vec<IpNet> = wanted(&self.eps.slab[e].addrs, &t).copied().collect();
            (!nets.is_empty()).then_some(RouteClaim { target: t, nets })
        });
        self.apply_route(e, claim);
    }

    /// Replaces the claim of `e` and re-decides the addresses involved.
    pub(super) fn apply_route(&mut self, e: EpIdx, claim: Option<RouteClaim>) {
        let ep = &mut self.eps.slab[e];
        if ep.route == claim {
            return;
        }
        let old = std::mem::replace(&mut ep.route, claim).map_or_else(Vec::new, |c| c.nets);
        let new: &[IpNet] = self.eps.slab[e].route.as_ref().map_or(&[], |c| &c.nets);
        for net in old.iter().filter(|n| new.binary_search(n).is_err()) {
            if let Some(claims) = self.routes.by_net.get_mut(net) {
                if claims.remove(e) {
                    self.routes.by_net.remove(net);
                }
            }
        }
        for net in new.iter().filter(|n| old.binary_search(n).is_err()) {
            match self.routes.by_net.get_mut(net) {
                Some(claims) => claims.push(e),
                None => {
                    self.routes.by_net.insert(*net, Claimants::One(e));
                }
            }
        }
        for net in &old {
            decide_route(&self.routes, &self.eps, &mut self.out, *net);
        }
        for net in new.iter().filter(|n| old.binary_search(n).is_err()) {
            decide_route(&self.routes, &self.eps, &mut self.out, *net);
        }
    }

    /// `bird_ip` of `host` changed: re-route that host's endpoints.
    pub(super) fn set_host_ip(&mut self, host: String, ip: Option<std::net::IpAddr>) {
        let old = match ip {
            Some(ip) => self.host_ips.insert(host.clone(), ip),
            None => self.host_ips.remove(&host),
        };
        if old == ip || host == self.hostname {
            return;
        }
        let eps: Vec<EpIdx> = self
            .eps
            .by_host
            .get(&host)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for e in eps {
            self.sync_route(e);
        }
    }
}

/// Writes the winning claim for `net` into the state: local before remote,
/// then the smaller endpoint key.
fn decide_route(routes: &RouteClaims, eps: &Endpoints, out: &mut Output, net: IpNet) {
    let claims = routes.by_net.get(&net).map_or(&[][..], Claimants::as_slice);
    let winner = claims
        .iter()
        .filter_map(|&c| {
            let ep = &eps.slab[c];
            Some((ep.route.as_ref()?, &ep.key))
        })
        .min_by(|a, b| match rank(&a.0.target).cmp(&rank(&b.0.target)) {
            Ordering::Equal => a.1.cmp(b.1),
            other => other,
        })
        .map(|(claim, _)| &claim.target);
    out.set_route(net, winner);
}
