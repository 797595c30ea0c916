//! Host protection (pure): the addresses this host needs to stay on its
//! network, and the check that keeps endpoint routes off them.
//!
//! An endpoint route (local `dev caliX` or remote `via <host>`) that covers
//! one of this host's own addresses, one of its default gateways or a
//! configured etcd endpoint would cut the host off (from the fabric, from
//! etcd, and after a restart from the fix). Such a route is never written:
//! the route manager filters desired routes through [`Protected::covering`]
//! before diffing, and reports each newly refused one as a
//! [`RefusedRoute`].
//!
//! [`HostFacts`] are derived from what the kernel reports (addresses and
//! main-table routes, read by the thin `facts` module); everything here is
//! pure and unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::model::{KernelRoute, RawRoute};

/// Why an address is protected (most important first: when an address is
/// several things, the first reason is reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtectReason {
    /// The address of a configured etcd endpoint.
    EtcdEndpoint,
    /// A next hop of one of this host's default routes.
    DefaultGateway,
    /// An address on one of this host's interfaces.
    HostAddress,
}

impl ProtectReason {
    /// Every reason, for pre-created metric labels.
    pub const ALL: [ProtectReason; 3] = [
        ProtectReason::EtcdEndpoint,
        ProtectReason::DefaultGateway,
        ProtectReason::HostAddress,
    ];

    /// The metric label / log value.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtectReason::EtcdEndpoint => "etcd_endpoint",
            ProtectReason::DefaultGateway => "default_gateway",
            ProtectReason::HostAddress => "host_address",
        }
    }
}

impl fmt::Display for ProtectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the kernel says about this host that matters for protection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Addresses on this host's interfaces.
    pub addresses: BTreeSet<IpAddr>,
    /// Next hops of the main table's default routes.
    pub gateways: BTreeSet<IpAddr>,
    /// Interfaces carrying a default route or the route to an etcd endpoint.
    pub uplinks: BTreeSet<String>,
}

impl HostFacts {
    /// Derives the facts from this host's `addresses` and main-table
    /// `routes` (every protocol). Routes stamped with `our_protocol` are
    /// ignored: one of ours covering etcd must not make its interface look
    /// like the way to etcd. `name_of` resolves interface indexes.
    pub fn derive(
        addresses: impl IntoIterator<Item = IpAddr>,
        routes: &[RawRoute],
        etcd: &[IpAddr],
        our_protocol: u8,
        name_of: impl Fn(u32) -> Option<String>,
    ) -> HostFacts {
        let theirs: Vec<&RawRoute> = routes
            .iter()
            .filter(|r| r.protocol != our_protocol)
            .collect();
        let mut facts = HostFacts {
            addresses: addresses.into_iter().collect(),
            ..HostFacts::default()
        };
        for r in theirs.iter().filter(|r| r.dst.prefix_len() == 0) {
            facts.gateways.extend(r.gateway);
            facts.uplinks.extend(r.oif.and_then(&name_of));
        }
        for ip in etcd {
            if let Some(oif) = longest_match(&theirs, *ip).and_then(|r| r.oif) {
                facts.uplinks.extend(name_of(oif));
            }
        }
        facts
    }
}

/// The route a lookup of `ip` in `routes` would pick (longest prefix).
pub fn longest_match<'a>(routes: &[&'a RawRoute], ip: IpAddr) -> Option<&'a RawRoute> {
    routes
        .iter()
        .filter(|r| r.dst.contains(&ip))
        .max_by_key(|r| r.dst.prefix_len())
        .copied()
}

/// The protected addresses, each with its reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    addrs: BTreeMap<IpAddr, ProtectReason>,
}

impl Protected {
    /// The addresses of `facts` plus the etcd endpoints' addresses.
    pub fn new(facts: &HostFacts, etcd: &[IpAddr]) -> Protected {
        let mut addrs = BTreeMap::new();
        let tagged = etcd
            .iter()
            .map(|a| (*a, ProtectReason::EtcdEndpoint))
            .chain(
                facts
                    .gateways
                    .iter()
                    .map(|a| (*a, ProtectReason::DefaultGateway)),
            )
            .chain(
                facts
                    .addresses
                    .iter()
                    .map(|a| (*a, ProtectReason::HostAddress)),
            );
        for (addr, reason) in tagged {
            addrs
                .entry(canonical(addr))
                .and_modify(|r: &mut ProtectReason| *r = (*r).min(reason))
                .or_insert(reason);
        }
        Protected { addrs }
    }

    /// True when nothing is protected (facts not read yet).
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Every protected address and why.
    pub fn addresses(&self) -> &BTreeMap<IpAddr, ProtectReason> {
        &self.addrs
    }

    /// The first protected address `dst` covers, with its reason.
    pub fn covering(&self, dst: &IpNet) -> Option<(IpAddr, ProtectReason)> {
        let (lo, hi) = (dst.network(), dst.broadcast());
        self.addrs
            .range(lo..=hi)
            .map(|(a, r)| (*a, *r))
            .find(|(a, _)| dst.contains(a))
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (the kernel reports etcd's as such
/// only if asked; hostnames may resolve to either).
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// An endpoint route that was not written because it covers a protected
/// address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRoute {
    /// The route's destination.
    pub dst: IpNet,
    /// Where it would have gone.
    pub route: KernelRoute,
    /// The protected address it covers.
    pub addr: IpAddr,
    /// Why that address is protected.
    pub reason: ProtectReason,
}

impl fmt::Display for RefusedRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "route {} {} covers {} ({})",
            self.dst, self.route, self.addr, self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostnet::routes::model::MAIN_TABLE;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn route(dst: &str, gw: Option<&str>, oif: u32, protocol: u8) -> RawRoute {
        RawRoute {
            dst: net(dst),
            protocol,
            table: MAIN_TABLE,
            oif: Some(oif),
            gateway: gw.map(ip),
            scope_link: gw.is_none(),
            simple: true,
        }
    }

    fn names(i: u32) -> Option<String> {
        match i {
            1 => Some("lo".into()),
            2 => Some("eth0".into()),
            3 => Some("eth1".into()),
            7 => Some("caliw3".into()),
            _ => None,
        }
    }

    fn kernel() -> Vec<RawRoute> {
        vec![
            route("0.0.0.0/0", Some("198.19.0.1"), 2, 3),
            route("198.19.0.0/24", None, 2, 2),
            route("10.0.0.0/8", None, 3, 2),
            route("10.1.2.3/32", None, 7, 80),
        ]
    }

    #[test]
    fn facts_name_gateways_and_the_interfaces_to_the_world_and_etcd() {
        let facts = HostFacts::derive(
            [ip("198.19.0.11"), ip("127.0.0.1")],
            &kernel(),
            &[ip("10.1.2.3")],
            80,
            names,
        );
        assert_eq!(facts.gateways, BTreeSet::from([ip("198.19.0.1")]));
        // etcd is reached over eth1 (10/8), not over our own /32 on caliw3.
        assert_eq!(
            facts.uplinks,
            BTreeSet::from(["eth0".to_owned(), "eth1".to_owned()])
        );
    }

    #[test]
    fn longest_prefix_wins() {
        let k = kernel();
        let all: Vec<&RawRoute> = k.iter().collect();
        assert_eq!(
            longest_match(&all, ip("10.1.2.3")).map(|r| r.dst),
            Some(net("10.1.2.3/32"))
        );
        assert_eq!(
            longest_match(&all, ip("8.8.8.8")).map(|r| r.dst),
            Some(net("0.0.0.0/0"))
        );
        assert_eq!(longest_match(&all, ip("::1")), None);
    }

    #[test]
    fn routes_covering_a_protected_address_are_caught_with_the_first_reason() {
        let facts = HostFacts {
            addresses: BTreeSet::from([ip("198.19.0.11"), ip("198.19.0.2"), ip("::1")]),
            gateways: BTreeSet::from([ip("198.19.0.1")]),
            uplinks: BTreeSet::new(),
        };
        let p = Protected::new(&facts, &[ip("198.19.0.2"), ip("::ffff:198.19.0.3")]);
        let cover = |s: &str| p.covering(&net(s));
        assert_eq!(
            cover("198.19.0.2/32"),
            Some((ip("198.19.0.2"), ProtectReason::EtcdEndpoint))
        );
        assert_eq!(
            cover("198.19.0.3/32"),
            Some((ip("198.19.0.3"), ProtectReason::EtcdEndpoint))
        );
        assert_eq!(
            cover("198.19.0.1/32"),
            Some((ip("198.19.0.1"), ProtectReason::DefaultGateway))
        );
        assert_eq!(
            cover("198.19.0.11/32"),
            Some((ip("198.19.0.11"), ProtectReason::HostAddress))
        );
        assert!(cover("198.19.0.0/16").is_some(), "a supernet covers too");
        assert!(cover("0.0.0.0/0").is_some());
        assert!(cover("::1/128").is_some());
        assert_eq!(cover("198.19.0.4/32"), None);
        assert_eq!(cover("10.0.0.0/8"), None);
        assert_eq!(cover("fd00::1/128"), None);
        assert!(Protected::default().covering(&net("0.0.0.0/0")).is_none());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn covering_agrees_with_a_linear_scan(
                addrs in prop::collection::btree_set(any::<u32>(), 0..8),
                base in any::<u32>(),
                len in 0u8..=32,
            ) {
                let facts = HostFacts {
                    addresses: addrs.iter().map(|a| IpAddr::from(a.to_be_bytes())).collect(),
                    ..HostFacts::default()
                };
                let p = Protected::new(&facts, &[]);
                let dst = IpNet::new(IpAddr::from(base.to_be_bytes()), len)
                    .expect("valid prefix")
                    .trunc();
                let linear = facts.addresses.iter().any(|a| dst.contains(a));
                prop_assert_eq!(p.covering(&dst).is_some(), linear);
            }
        }
    }
}
