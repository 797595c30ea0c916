//! The BGP part of the calculation: the `/calico/bgp/v1` keys' state and
//! [`CalcEngine::bgp_config`], this host's [`BgpConfig`].
//!
//! The configuration is derived on demand from maps keyed by what the keys
//! name, so it does not depend on the order updates arrived in. The engine
//! sets [`crate::desired::Changes::bgp`] whenever an input may have moved:
//! a BGP key, any host's `bird_ip`, a pool appearing or going, a route to a
//! local interface, the interface prefixes. Remote endpoints and profiles
//! never set it.
//!
//! Rules (`DATAMODEL.md`, "BGP", and the lead's decisions):
//! - source: this host's `ip_addr_v4`, else its `bird_ip`; `ip_addr_v6`;
//! - AS: the host's `as_num`, else `global/as_num`, else 64511, for this
//!   host and for each mesh neighbour;
//! - mesh (unless `node_mesh` is disabled): every other host with an address
//!   (IPv4: `ip_addr_v4` else `bird_ip`; IPv6: `ip_addr_v6`, only when this
//!   host has one);
//! - one session per address: node-specific over global over mesh; never one
//!   to an address of this host;
//! - IPv6 peers of any kind only when this host has an IPv6 source (a
//!   session needs a local address of its family).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::CalcEngine;
use crate::bgp::{AsNumber, BgpConfig, BgpPeer, BgpUnavailable, PeerKind, DEFAULT_AS_NUMBER};
use crate::desired::RouteTarget;
use crate::model::{BgpKey, BgpValue};

/// What the BGP keys say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct BgpState {
    global_as: Option<AsNumber>,
    node_mesh: Option<bool>,
    global_peers: BTreeMap<IpAddr, AsNumber>,
    hosts: BTreeMap<String, HostBgp>,
}

/// One host's BGP keys.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct HostBgp {
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    as_num: Option<AsNumber>,
    peers: BTreeMap<IpAddr, AsNumber>,
}

impl HostBgp {
    fn is_empty(&self) -> bool {
        self == &HostBgp::default()
    }
}

/// The part of [`BgpState`] one key writes, compared before and after.
#[derive(PartialEq)]
enum Snapshot {
    Global(Option<AsNumber>, Option<bool>),
    GlobalPeer(Option<AsNumber>),
    Host(Option<HostBgp>),
}

/// Sets or clears one map entry.
fn set_entry<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, value: Option<V>) {
    match value {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}

impl BgpState {
    /// Applies one key (`None`, or a value of the wrong kind: absent).
    /// Returns true when the state changed.
    pub(super) fn apply(&mut self, key: BgpKey, value: Option<BgpValue>) -> bool {
        let before = self.snapshot(&key);
        let as_num = match value {
            Some(BgpValue::AsNumber(a) | BgpValue::Peer { as_num: a }) => Some(a),
            _ => None,
        };
        let address = match value {
            Some(BgpValue::Address(a)) => Some(a),
            _ => None,
        };
        match &key {
            BgpKey::GlobalAsNumber => self.global_as = as_num,
            BgpKey::NodeMesh => {
                self.node_mesh = match value {
                    Some(BgpValue::NodeMesh { enabled }) => Some(enabled),
                    _ => None,
                }
            }
            BgpKey::GlobalPeer(ip) => set_entry(&mut self.global_peers, *ip, as_num),
            BgpKey::HostAddressV4(h) => {
                self.host_mut(h).v4 = address.and_then(|a| match a {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
            }
            BgpKey::HostAddressV6(h) => {
                self.host_mut(h).v6 = address.and_then(|a| match a {
                    IpAddr::V6(v6) => Some(v6),
                    IpAddr::V4(_) => None,
                })
            }
            BgpKey::HostAsNumber(h) => self.host_mut(h).as_num = as_num,
            BgpKey::HostPeer { host, peer } => {
                set_entry(&mut self.host_mut(host).peers, *peer, as_num)
            }
        }
        if let BgpKey::HostAddressV4(h)
        | BgpKey::HostAddressV6(h)
        | BgpKey::HostAsNumber(h)
        | BgpKey::HostPeer { host: h, .. } = &key
        {
            if self.hosts.get(h).is_some_and(HostBgp::is_empty) {
                self.hosts.remove(h);
            }
        }
        before != self.snapshot(&key)
    }

    /// The part of the state `key` writes, for change detection.
    fn snapshot(&self, key: &BgpKey) -> Snapshot {
        match key {
            BgpKey::GlobalAsNumber | BgpKey::NodeMesh => {
                Snapshot::Global(self.global_as, self.node_mesh)
            }
            BgpKey::GlobalPeer(ip) => Snapshot::GlobalPeer(self.global_peers.get(ip).copied()),
            BgpKey::HostAddressV4(h)
            | BgpKey::HostAddressV6(h)
            | BgpKey::HostAsNumber(h)
            | BgpKey::HostPeer { host: h, .. } => Snapshot::Host(self.hosts.get(h).cloned()),
        }
    }

    fn host_mut(&mut self, host: &str) -> &mut HostBgp {
        self.hosts.entry(host.to_owned()).or_default()
    }

    /// The AS of `host`: its own, else the global one, else the default.
    fn as_of(&self, host: Option<&HostBgp>) -> AsNumber {
        host.and_then(|h| h.as_num)
            .or(self.global_as)
            .unwrap_or(DEFAULT_AS_NUMBER)
    }
}

/// Sessions by neighbour address; inserting a later kind replaces an earlier one.
type Sessions = BTreeMap<IpAddr, BgpPeer>;

fn add_session(sessions: &mut Sessions, kind: PeerKind, address: IpAddr, as_num: AsNumber) {
    sessions.insert(
        address,
        BgpPeer {
            kind,
            address,
            as_num,
        },
    );
}

impl CalcEngine {
    /// A BGP key was written or deleted.
    pub(super) fn set_bgp(&mut self, key: BgpKey, value: Option<BgpValue>) {
        if self.bgp.apply(key, value) {
            self.out.changes.bgp = true;
        }
    }

    /// This host's BGP configuration, from the BGP keys, the hosts'
    /// addresses, the pools and this host's local workload routes.
    pub fn bgp_config(&self) -> Result<BgpConfig, BgpUnavailable> {
        let me = self.bgp.hosts.get(&self.hostname);
        let source_v4 = me
            .and_then(|h| h.v4)
            .or_else(|| match self.host_ips.get(&self.hostname) {
                Some(IpAddr::V4(a)) => Some(*a),
                _ => None,
            })
            .ok_or(BgpUnavailable::NoIpv4Address)?;
        let source_v6 = me.and_then(|h| h.v6);
        let mut own: BTreeSet<IpAddr> = [IpAddr::V4(source_v4)].into();
        own.extend(source_v6.map(IpAddr::V6));
        own.extend(self.host_ips.get(&self.hostname).copied());

        let mut sessions = Sessions::new();
        if self.bgp.node_mesh.unwrap_or(true) {
            self.add_mesh(&mut sessions, source_v6.is_some());
        }
        for (&ip, &as_num) in &self.bgp.global_peers {
            add_session(&mut sessions, PeerKind::Global, ip, as_num);
        }
        for (&ip, &as_num) in me.iter().flat_map(|h| &h.peers) {
            add_session(&mut sessions, PeerKind::Node, ip, as_num);
        }
        let mut peers: Vec<BgpPeer> = sessions
            .into_values()
            .filter(|p| !own.contains(&p.address))
            .filter(|p| p.address.is_ipv4() || source_v6.is_some())
            .collect();
        peers.sort_unstable();

        let (local_v4, local_v6) = self.local_pool_routes();
        let mut pools: Vec<IpNet> = self.pools.map.keys().copied().collect();
        pools.sort_unstable();
        Ok(BgpConfig {
            router_id: source_v4,
            local_as: self.bgp.as_of(me),
            source_v4,
            source_v6,
            peers,
            pools_v4: pools.iter().filter_map(only_v4).collect(),
            pools_v6: pools.iter().filter_map(only_v6).collect(),
            local_v4,
            local_v6,
            workload_interface_prefixes: self.prefixes.clone(),
        })
    }

    /// Mesh sessions to every other host with an address.
    fn add_mesh(&self, sessions: &mut Sessions, with_v6: bool) {
        let bgp_hosts = self.bgp.hosts.keys().map(String::as_str);
        let bird_hosts = self.host_ips.keys().map(String::as_str);
        let hosts: BTreeSet<&str> = bgp_hosts.chain(bird_hosts).collect();
        for host in hosts.into_iter().filter(|h| *h != self.hostname) {
            let keys = self.bgp.hosts.get(host);
            let as_num = self.bgp.as_of(keys);
            let bird_v4 = match self.host_ips.get(host) {
                Some(IpAddr::V4(a)) => Some(*a),
                _ => None,
            };
            if let Some(v4) = keys.and_then(|k| k.v4).or(bird_v4) {
                add_session(sessions, PeerKind::Mesh, IpAddr::V4(v4), as_num);
            }
            if let Some(v6) = keys.and_then(|k| k.v6).filter(|_| with_v6) {
                add_session(sessions, PeerKind::Mesh, IpAddr::V6(v6), as_num);
            }
        }
    }

    /// This host's routes to local interfaces inside a pool, by family, sorted.
    fn local_pool_routes(&self) -> (Vec<ipnet::Ipv4Net>, Vec<ipnet::Ipv6Net>) {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let local = self
            .out
            .state
            .routes
            .iter()
            .filter(|(_, t)| matches!(t, RouteTarget::Interface(_)))
            .map(|(net, _)| net)
            .filter(|net| self.pools.covers(net));
        for net in local {
            match net {
                IpNet::V4(n) => v4.push(*n),
                IpNet::V6(n) => v6.push(*n),
            }
        }
        (v4, v6)
    }
}

fn only_v4(net: &IpNet) -> Option<ipnet::Ipv4Net> {
    match net {
        IpNet::V4(n) => Some(*n),
        IpNet::V6(_) => None,
    }
}

fn only_v6(net: &IpNet) -> Option<ipnet::Ipv6Net> {
    match net {
        IpNet::V6(n) => Some(*n),
        IpNet::V4(_) => None,
    }
}
