//! Routes to workload addresses.
//!
//! Each endpoint may *claim* its addresses: a plumbed local endpoint via its
//! interface, an active remote endpoint via its host's `bird_ip` (only the
//! addresses of the gateway's family). Several endpoints may claim the same
//! address (a stale record, an address moving between hosts); the winner is
//! chosen deterministically, local before remote, then by endpoint key, so the
//! result does not depend on the order the updates came in.

use std::cmp::Ordering;
use std::collections::HashMap;

use ipnet::IpNet;

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
    pub by_net: HashMap<IpNet, Vec<EpIdx>>,
}

fn rank(target: &RouteTarget) -> u8 {
    match target {
        RouteTarget::Interface(_) => 0,
        RouteTarget::Gateway(_) => 1,
    }
}

impl CalcEngine {
    /// The claim endpoint `e` should hold now.
    fn desired_route(&self, e: EpIdx) -> Option<RouteClaim> {
        let ep = &self.eps.slab[e];
        if ep.local {
            let publ = ep.publ.as_ref()?;
            return (!ep.addrs.is_empty()).then(|| RouteClaim {
                target: RouteTarget::Interface(publ.iface.clone()),
                nets: ep.addrs.clone(),
            });
        }
        if ep.doc.state != EndpointState::Active {
            return None;
        }
        let gw = *self.host_ips.get(&ep.key.host)?;
        let nets: Vec<IpNet> = ep
            .addrs
            .iter()
            .copied()
            .filter(|n| n.addr().is_ipv4() == gw.is_ipv4())
            .collect();
        (!nets.is_empty()).then_some(RouteClaim {
            target: RouteTarget::Gateway(gw),
            nets,
        })
    }

    /// Re-registers the route claim of `e` from its current state.
    pub(super) fn sync_route(&mut self, e: EpIdx) {
        let claim = self.desired_route(e);
        self.apply_route(e, claim);
    }

    /// Replaces the claim of `e` and re-decides the touched addresses.
    pub(super) fn apply_route(&mut self, e: EpIdx, claim: Option<RouteClaim>) {
        let ep = &mut self.eps.slab[e];
        if ep.route == claim {
            return;
        }
        let old = std::mem::replace(&mut ep.route, claim);
        let mut touched: Vec<IpNet> = Vec::new();
        if let Some(old) = old {
            for net in old.nets {
                if let Some(claims) = self.routes.by_net.get_mut(&net) {
                    claims.retain(|&c| c != e);
                    if claims.is_empty() {
                        self.routes.by_net.remove(&net);
                    }
                }
                touched.push(net);
            }
        }
        if let Some(new) = &self.eps.slab[e].route {
            for &net in &new.nets {
                self.routes.by_net.entry(net).or_default().push(e);
                touched.push(net);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for net in touched {
            self.decide_route(net);
        }
    }

    /// Writes the winning claim for `net` into the state.
    fn decide_route(&mut self, net: IpNet) {
        let winner = self.routes.by_net.get(&net).and_then(|claims| {
            claims
                .iter()
                .filter_map(|&c| {
                    let ep = &self.eps.slab[c];
                    Some((ep.route.as_ref()?, &ep.key))
                })
                .min_by(|a, b| match rank(&a.0.target).cmp(&rank(&b.0.target)) {
                    Ordering::Equal => a.1.cmp(b.1),
                    other => other,
                })
                .map(|(claim, _)| claim.target.clone())
        });
        self.out.set_route(net, winner);
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
