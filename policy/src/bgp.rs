//! BGP: what this host's BGP speaker (BIRD) must be configured with.
//!
//! The calculation derives a [`BgpConfig`] from the `/calico/bgp/v1` keys,
//! the hosts' addresses, the IP pools and this host's local workload routes
//! (see `DATAMODEL.md`, "BGP"); the dataplane renders it into BIRD's
//! configuration text. Everything here is already validated: addresses are
//! typed, AS numbers are in range, and no datastore string (host names
//! included) is carried, so nothing from the datastore can reach the
//! rendered text unchecked.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// A BGP autonomous system number: 1 to 4294967295.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AsNumber(u32);

/// The AS used when `global/as_num` is absent.
pub const DEFAULT_AS_NUMBER: AsNumber = AsNumber(64511);

impl AsNumber {
    /// `n` as an AS number; `None` for 0 (reserved, and BIRD refuses it).
    pub fn new(n: u32) -> Option<AsNumber> {
        (n != 0).then_some(AsNumber(n))
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for AsNumber {
    /// Plain decimal (asplain), the form BIRD reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a peer is configured: the three kinds `calicoctl status` showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKind {
    /// Another host of the node-to-node mesh.
    Mesh,
    /// A global peer (`global/peer_v4|v6/<ip>`): a peer of every host.
    Global,
    /// A peer of this host only (`host/<host>/peer_v4|v6/<ip>`).
    Node,
}

impl PeerKind {
    /// The words `calicoctl status` used: `node-to-node mesh`, `global`,
    /// `node specific`.
    pub fn describe(self) -> &'static str {
        match self {
            PeerKind::Mesh => "node-to-node mesh",
            PeerKind::Global => "global",
            PeerKind::Node => "node specific",
        }
    }

    /// The prefix of BIRD protocol names for this kind (`Mesh`, `Global`,
    /// `Node`): an operator reading `birdc show protocols` tells them apart.
    pub fn protocol_prefix(self) -> &'static str {
        match self {
            PeerKind::Mesh => "Mesh",
            PeerKind::Global => "Global",
            PeerKind::Node => "Node",
        }
    }
}

/// One BGP session this host should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BgpPeer {
    /// Why it exists.
    pub kind: PeerKind,
    /// The neighbour's address (never one of this host's own).
    pub address: IpAddr,
    /// The neighbour's AS (iBGP when equal to [`BgpConfig::local_as`]).
    pub as_num: AsNumber,
}

/// Everything this host's BIRD configuration is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    /// BIRD's router id: this host's IPv4 BGP address.
    pub router_id: Ipv4Addr,
    /// This host's AS (`host/<h>/as_num`, else `global/as_num`, else 64511).
    pub local_as: AsNumber,
    /// This host's IPv4 BGP address (`ip_addr_v4`, defaulting to `bird_ip`),
    /// the source of IPv4 sessions.
    pub source_v4: Ipv4Addr,
    /// This host's IPv6 BGP address (`ip_addr_v6`), the source of IPv6
    /// sessions; without it no IPv6 mesh session is configured.
    pub source_v6: Option<Ipv6Addr>,
    /// The sessions, one per neighbour address, sorted by (kind, address).
    /// A node-specific peer wins over a global one with the same address,
    /// and a global one over a mesh neighbour.
    pub peers: Vec<BgpPeer>,
    /// IPv4 pools, sorted.
    pub pools_v4: Vec<Ipv4Net>,
    /// IPv6 pools, sorted.
    pub pools_v6: Vec<Ipv6Net>,
    /// This host's local workload routes inside a pool (/32), sorted: the
    /// only prefixes exported, and no imported prefix may cover one.
    pub local_v4: Vec<Ipv4Net>,
    /// The same for IPv6 (/128).
    pub local_v6: Vec<Ipv6Net>,
    /// Workload interface prefixes (validated `[A-Za-z0-9_-]`): BIRD's
    /// direct protocol skips these interfaces.
    pub workload_interface_prefixes: Vec<String>,
}

/// Why no configuration can be rendered for this host yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BgpUnavailable {
    /// Neither `ip_addr_v4` nor `bird_ip` is set for this host: BIRD needs
    /// an IPv4 router id and a session source.
    #[error("this host has no IPv4 BGP address (neither /calico/bgp/v1/host/<host>/ip_addr_v4 nor /calico/v1/host/<host>/bird_ip is set)")]
    NoIpv4Address,
}
