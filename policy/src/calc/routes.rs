//! Routes to workload addresses.
//!
//! Each endpoint may *claim* its addresses: a local endpoint that claims an
//! interface (active, with an interface prefix; see `locals`) via that
//! interface, an active remote endpoint (while remote routes are on, see
//! `CalcEngine::set_remote_routes`) via its host's `bird_ip` (only the
//! addresses of the gateway's family, and only those inside an IP pool, as
//! BIRD's export filter did for Calico: a remote record cannot route the
//! host's own fabric, etcd or gateway addresses away). The route of one
//! address is decided from its claims alone, so the result does not depend
//! on the order the updates came in:
//!
//! - local claims win over remote ones (a stale remote record is normal);
//! - when every local claim names the same interface, the route goes there,
//!   even while that interface is contested (its program then drops all, and
//!   the address keeps pointing where it pointed: no route change);
//! - local claims naming different interfaces are an *address conflict*:
//!   no route at all until one goes away (neither claimant gets the
//!   traffic, and no remote record takes it over either);
//! - between remote claims, the smaller endpoint key wins.

use super::hashing::FastMap;

use ipnet::IpNet;

use super::conflicts::Conflicts;
use super::endpoints::Endpoints;
use super::output::Output;
use super::pools::Pools;
use super::{CalcEngine, EpIdx};
use crate::desired::{RouteTarget, WorkloadEndpointKey};
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
    /// The claimants.
    pub(super) fn as_slice(&self) -> &[EpIdx] {
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

/// True when `net` is routed via `target`: a gateway routes its own family
/// only, and only addresses inside an IP pool.
fn routable(target: &RouteTarget, net: &IpNet, pools: &Pools) -> bool {
    match target {
        RouteTarget::Interface(_) => true,
        RouteTarget::Gateway(gw) => net.addr().is_ipv4() == gw.is_ipv4() && pools.covers(net),
    }
}

/// The addresses of `addrs` routed via `target`.
fn wanted<'a>(
    addrs: &'a [IpNet],
    target: &'a RouteTarget,
    pools: &'a Pools,
) -> impl Iterator<Item = &'a IpNet> {
    addrs.iter().filter(move |n| routable(target, n, pools))
}

impl CalcEngine {
    /// Where endpoint `e`'s addresses should be routed now, if anywhere.
    fn route_target(&self, e: EpIdx) -> Option<RouteTarget> {
        let ep = &self.eps.slab[e];
        let (key, doc) = ep.workload()?;
        if ep.local {
            return ep.claim.clone().map(RouteTarget::Interface);
        }
        if doc.state != EndpointState::Active || !self.remote_routes {
            return None;
        }
        self.host_ips
            .get(&key.host)
            .map(|&gw| RouteTarget::Gateway(gw))
    }

    /// Re-registers the route claim of `e` from its current state.
    pub(super) fn sync_route(&mut self, e: EpIdx) {
        let target = self.route_target(e);
        let ep = &self.eps.slab[e];
        let pools = &self.pools;
        let current = match (&ep.route, &target) {
            (Some(claim), Some(t)) => {
                claim.target == *t && claim.nets.iter().eq(wanted(&ep.addrs, t, pools))
            }
            (None, Some(t)) => wanted(&ep.addrs, t, pools).next().is_none(),
            (claim, None) => claim.is_none(),
        };
        if current {
            return;
        }
        let claim = target.and_then(|t| {
            let mut nets: Vec<IpNet> = wanted(&self.eps.slab[e].addrs, &t, &self.pools)
                .copied()
                .collect();
            // Kept for the endpoint's life: no room for more (a filtered
            // collect starts at four).
            nets.shrink_to_fit();
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
        let (routes, eps, out, conflicts) =
            (&self.routes, &self.eps, &mut self.out, &mut self.conflicts);
        for net in &old {
            decide_route(routes, eps, out, conflicts, *net);
        }
        for net in new.iter().filter(|n| old.binary_search(n).is_err()) {
            decide_route(routes, eps, out, conflicts, *net);
        }
    }

    /// A pool appeared or went, or remote routing was switched on or off:
    /// re-route the remote endpoints, whose routes are limited to pool
    /// addresses (O(remote endpoints); both change rarely).
    pub(super) fn reroute_remote(&mut self) {
        let remote: Vec<EpIdx> = self
            .eps
            .by_host
            .values()
            .flat_map(|s| s.iter().copied())
            .collect();
        for e in remote {
            self.sync_route(e);
        }
    }

    /// `bird_ip` of `host` changed: re-route that host's endpoints.
    pub(super) fn set_host_ip(&mut self, host: String, ip: Option<std::net::IpAddr>) {
        let old = match ip {
            Some(ip) => self.host_ips.insert(host.clone(), ip),
            None => self.host_ips.remove(&host),
        };
        if old == ip {
            return;
        }
        // Every host's address is a mesh neighbour's or this host's source.
        self.out.changes.bgp = true;
        if host == self.hostname {
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

/// Writes the route for `net` into the state (see the module doc), and
/// records whether `net` is an address conflict between local endpoints.
fn decide_route(
    routes: &RouteClaims,
    eps: &Endpoints,
    out: &mut Output,
    conflicts: &mut Conflicts,
    net: IpNet,
) {
    let claims = routes.by_net.get(&net).map_or(&[][..], Claimants::as_slice);
    let mut local: Option<&RouteTarget> = None;
    let mut disagree = false;
    let mut remote: Option<(&RouteTarget, &WorkloadEndpointKey)> = None;
    for &c in claims {
        let ep = &eps.slab[c];
        let (Some(claim), Some((key, _))) = (ep.route.as_ref(), ep.workload()) else {
            continue;
        };
        if ep.local {
            match local {
                Some(t) if *t != claim.target => disagree = true,
                Some(_) => {}
                None => local = Some(&claim.target),
            }
        } else if !matches!(remote, Some((_, k)) if *k < **key) {
            remote = Some((&claim.target, &**key));
        }
    }
    let contested = disagree.then(|| {
        claims
            .iter()
            .filter(|&&c| eps.slab[c].local)
            .filter_map(|&c| eps.slab[c].workload())
            .map(|(key, _)| (**key).clone())
            .collect()
    });
    conflicts.set_address(net, contested);
    let winner = match local {
        Some(_) if disagree => None,
        Some(t) => Some(t),
        None => remote.map(|(t, _)| t),
    };
    out.set_route(net, winner);
}
