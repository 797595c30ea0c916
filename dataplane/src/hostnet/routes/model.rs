//! Routes as the kernel sees them, and the netlink messages that carry them.
//!
//! Pure: building `RTM_NEWROUTE`/`RTM_DELROUTE` requests for our routes and
//! turning dumped or notified route messages back into [`RawRoute`]s. Every
//! request is stamped with our route protocol number; only routes carrying it
//! are ever read as ours.

use std::net::IpAddr;

use ipnet::IpNet;
use margay_policy::desired::RouteTarget;
use margay_policy::names::InterfaceName;
use netlink_packet_core::{NetlinkMessage, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// The main routing table, the only one we write.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// What one of our routes looks like in the kernel, in the same terms as
/// [`RouteTarget`] so desired and observed compare directly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelRoute {
    /// `dev <iface> scope link`.
    Dev(InterfaceName),
    /// `via <gateway>`.
    Via(IpAddr),
    /// Carries our protocol number but has a shape we never write
    /// (multipath, unknown device, blackhole...): replaced or deleted.
    Unrecognised,
}

impl From<&RouteTarget> for KernelRoute {
    fn from(t: &RouteTarget) -> Self {
        match t {
            RouteTarget::Interface(i) => KernelRoute::Dev(i.clone()),
            RouteTarget::Gateway(gw) => KernelRoute::Via(*gw),
        }
    }
}

impl std::fmt::Display for KernelRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelRoute::Dev(i) => write!(f, "dev {i} scope link"),
            KernelRoute::Via(gw) => write!(f, "via {gw}"),
            KernelRoute::Unrecognised => f.write_str("(unrecognised)"),
        }
    }
}

/// A route message reduced to what we compare, before resolving the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRoute {
    /// Destination prefix.
    pub dst: IpNet,
    /// Route protocol number.
    pub protocol: u8,
    /// Routing table id.
    pub table: u32,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// True for `scope link`.
    pub scope_link: bool,
    /// True for unicast routes with a single next hop.
    pub simple: bool,
}

impl RawRoute {
    /// Reads the parts we care about; `None` for messages without a usable
    /// destination (other families, malformed prefixes).
    pub fn parse(msg: &RouteMessage) -> Option<RawRoute> {
        let h = &msg.header;
        let mut table = u32::from(h.table);
        let mut dst_addr = None;
        let mut oif = None;
        let mut gateway = None;
        let mut multipath = false;
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(a) => dst_addr = route_addr(a),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(a) => gateway = route_addr(a),
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::MultiPath(_) | RouteAttribute::Via(_) => multipath = true,
                _ => {}
            }
        }
        let dst = match (h.address_family, dst_addr) {
            (_, Some(a)) => IpNet::new(a, h.destination_prefix_length).ok()?,
            (AddressFamily::Inet, None) => IpNet::new([0u8; 4].into(), 0).ok()?,
            (AddressFamily::Inet6, None) => IpNet::new([0u16; 8].into(), 0).ok()?,
            _ => return None,
        };
        Some(RawRoute {
            dst,
            protocol: u8::from(h.protocol),
            table,
            oif,
            gateway,
            scope_link: h.scope == RouteScope::Link,
            simple: h.kind == RouteType::Unicast && !multipath && h.source_prefix_length == 0,
        })
    }

    /// True when this route is ours: our protocol, main table.
    pub fn is_ours(&self, protocol: u8) -> bool {
        self.protocol == protocol && self.table == MAIN_TABLE
    }

    /// Our view of the route, resolving the output device with `name_of`.
    pub fn to_kernel_route(&self, name_of: impl Fn(u32) -> Option<InterfaceName>) -> KernelRoute {
        if !self.simple {
            return KernelRoute::Unrecognised;
        }
        match (self.gateway, self.oif) {
            (Some(gw), _) => KernelRoute::Via(gw),
            // IPv6 has no route scopes; IPv4 device routes must be scope link.
            (None, Some(oif)) if self.scope_link || self.dst.addr().is_ipv6() => {
                name_of(oif).map_or(KernelRoute::Unrecognised, KernelRoute::Dev)
            }
            _ => KernelRoute::Unrecognised,
        }
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn to_route_addr(a: IpAddr) -> RouteAddress {
    match a {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

fn family(net: &IpNet) -> AddressFamily {
    match net {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    }
}

fn base_message(dst: IpNet, protocol: u8) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(&dst);
    m.header.destination_prefix_length = dst.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::from(protocol);
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(RouteAttribute::Destination(to_route_addr(dst.network())));
    m
}

/// Where a route goes once its device is resolved to an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nexthop {
    /// Directly out of this interface index, scope link.
    Dev(u32),
    /// Via this gateway (same family as the destination).
    Via(IpAddr),
}

/// How an upsert must treat an existing route for the same destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// We know no route of ours exists: fail with EEXIST rather than
    /// overwrite a route that is not ours.
    Never,
    /// Ours exists with another value: replace it in place.
    Replace,
}

/// `RTM_NEWROUTE` for one of our routes (no ack requested: the batch writer
/// asks for one on the last message of a batch; errors always come back).
pub fn new_route(
    dst: IpNet,
    hop: Nexthop,
    protocol: u8,
    overwrite: Overwrite,
) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut m = base_message(dst, protocol);
    match hop {
        Nexthop::Dev(index) => {
            m.header.scope = RouteScope::Link;
            m.attributes.push(RouteAttribute::Oif(index));
        }
        Nexthop::Via(gw) => {
            m.header.scope = RouteScope::Universe;
            m.attributes
                .push(RouteAttribute::Gateway(to_route_addr(gw)));
        }
    }
    let mode = match overwrite {
        Overwrite::Never => NLM_F_EXCL,
        Overwrite::Replace => NLM_F_REPLACE,
    };
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewRoute(m));
    req.header.flags = NLM_F_REQUEST | NLM_F_CREATE | mode;
    req
}

/// `RTM_DELROUTE` for one of our routes. The kernel matches the protocol
/// number, so this can never delete a route that is not ours.
pub fn del_route(dst: IpNet, protocol: u8) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut m = base_message(dst, protocol);
    m.header.scope = RouteScope::NoWhere;
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::DelRoute(m));
    req.header.flags = NLM_F_REQUEST;
    req
}

/// `RTM_GETROUTE` dump request for the main table, filtered by protocol in
/// the kernel when the socket has strict checking on (and by us anyway).
pub fn dump_request(v6: bool, protocol: u8) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::from(protocol);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkPayload;

    fn iface(s: &str) -> InterfaceName {
        InterfaceName::new(s).expect("valid")
    }

    fn round_trip(req: &NetlinkMessage<RouteNetlinkMessage>) -> RouteMessage {
        let mut req = req.clone();
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf).expect("parses");
        match back.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m))
            | NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(m)) => m,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn device_routes_round_trip_as_ours() {
        let dst: IpNet = "10.65.0.7/32".parse().expect("net");
        let req = new_route(dst, Nexthop::Dev(12), 80, Overwrite::Never);
        assert_eq!(req.header.flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL);
        let raw = RawRoute::parse(&round_trip(&req)).expect("raw");
        assert_eq!(raw.dst, dst);
        assert!(raw.is_ours(80));
        assert!(!raw.is_ours(81));
        assert!(raw.scope_link);
        let name = |i| (i == 12).then(|| iface("cali1"));
        assert_eq!(raw.to_kernel_route(name), KernelRoute::Dev(iface("cali1")));
        assert_eq!(raw.to_kernel_route(|_| None), KernelRoute::Unrecognised);
    }

    #[test]
    fn gateway_routes_and_v6_round_trip() {
        let dst: IpNet = "fd00::5/128".parse().expect("net");
        let gw: IpAddr = "fd00::1".parse().expect("ip");
        let req = new_route(dst, Nexthop::Via(gw), 80, Overwrite::Replace);
        assert_eq!(req.header.flags & NLM_F_REPLACE, NLM_F_REPLACE);
        let raw = RawRoute::parse(&round_trip(&req)).expect("raw");
        assert_eq!(raw.dst, dst);
        assert_eq!(raw.to_kernel_route(|_| None), KernelRoute::Via(gw));
    }

    #[test]
    fn deletes_carry_our_protocol() {
        let dst: IpNet = "10.0.0.1/32".parse().expect("net");
        let raw = RawRoute::parse(&round_trip(&del_route(dst, 99))).expect("raw");
        assert_eq!(raw.protocol, 99);
        assert_eq!(raw.dst, dst);
    }

    #[test]
    fn ipv4_device_routes_with_universe_scope_are_unrecognised() {
        let mut raw = RawRoute {
            dst: "10.0.0.1/32".parse().expect("net"),
            protocol: 80,
            table: MAIN_TABLE,
            oif: Some(3),
            gateway: None,
            scope_link: false,
            simple: true,
        };
        assert_eq!(
            raw.to_kernel_route(|_| Some(iface("cali1"))),
            KernelRoute::Unrecognised
        );
        raw.dst = "fd00::1/128".parse().expect("net");
        assert_eq!(
            raw.to_kernel_route(|_| Some(iface("cali1"))),
            KernelRoute::Dev(iface("cali1"))
        );
    }
}
