//! IP pools and the two pool address sets used for NAT-outgoing
//! ([`IpSetId::AllPools`], [`IpSetId::MasqueradePools`]), both families.
//! Pools also bound the remote routes: a remote endpoint's address outside
//! every pool gets no route (see `routes`), so adding or removing a pool
//! re-routes the remote endpoints.

use super::hashing::FastMap;

use ipnet::IpNet;

use super::output::Output;
use super::CalcEngine;
use crate::desired::IpSetId;
use crate::model::IpPool;

/// Pools by key CIDR, with member counts of the two pool sets.
#[derive(Default)]
pub(super) struct Pools {
    pub map: FastMap<IpNet, IpPool>,
    all: FastMap<IpNet, u32>,
    masquerade: FastMap<IpNet, u32>,
}

impl Pools {
    /// True when some pool contains `net`.
    pub fn covers(&self, net: &IpNet) -> bool {
        self.map.values().any(|p| p.cidr.contains(net))
    }
}

/// Adds (`add`) or removes one carrier of `net` in a pool set.
fn count(counts: &mut FastMap<IpNet, u32>, out: &mut Output, id: &IpSetId, net: IpNet, add: bool) {
    if add {
        let n = counts.entry(net).or_insert(0);
        *n += 1;
        if *n == 1 {
            out.set_member(id, net, true);
        }
    } else if let Some(n) = counts.get_mut(&net) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&net);
            out.set_member(id, net, false);
        }
    }
}

impl CalcEngine {
    /// `/ipam/v*/pool/<cidr>` was written or deleted.
    pub(super) fn set_pool(&mut self, key: IpNet, pool: Option<IpPool>) {
        let old = match pool.clone() {
            Some(p) => self.pools.map.insert(key, p),
            None => self.pools.map.remove(&key),
        };
        if old == pool {
            return;
        }
        let moved = old.is_some() != pool.is_some();
        let all = |p: &Option<IpPool>| p.as_ref().map(|p| p.cidr);
        let masq = |p: &Option<IpPool>| p.as_ref().filter(|p| p.masquerade).map(|p| p.cidr);
        let pools = &mut self.pools;
        for (counts, id, old, new) in [
            (&mut pools.all, IpSetId::AllPools, all(&old), all(&pool)),
            (
                &mut pools.masquerade,
                IpSetId::MasqueradePools,
                masq(&old),
                masq(&pool),
            ),
        ] {
            if old == new {
                continue;
            }
            if let Some(net) = old {
                count(counts, &mut self.out, &id, net, false);
            }
            if let Some(net) = new {
                count(counts, &mut self.out, &id, net, true);
            }
        }
        if moved {
            self.out.changes.bgp = true;
            self.reroute_remote();
        }
    }
}
