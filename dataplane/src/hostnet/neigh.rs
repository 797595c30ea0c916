//! Static neighbour entries for local workloads that have a MAC address.
//!
//! For each address of an endpoint with a `mac`, a permanent entry
//! `<ip> lladdr <mac> dev <iface>`, stamped with our protocol number
//! (`NDA_PROTOCOL`) so a dump tells ours from everything else. Same shape as
//! the route manager: an [`IfaceObjects`] of [`NeighEntry`]s, a pure plan,
//! one pipelined batch per flush, per-entry failures that never block the
//! rest, and entries that wait for their interface.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use futures::TryStreamExt;
use margay_policy::desired::LocalEndpoint;
use margay_policy::names::{InterfaceName, MacAddr};
use netlink_packet_core::{NetlinkMessage, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteProtocol, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::iface_objects::{
    Blocked, DeletePolicy, IfaceObject, IfaceObjects, KeyedByIface, LinkNeed, Outcome, Step,
};
use super::links::LinkCache;
use super::netlink::{BatchWriter, NetlinkError, WriteResult};
use super::report::{FlushReport, ObjectKind, WriteKind};
use super::tracker::DeltaTracker;

const ENOENT: i32 = 2;

/// A neighbour entry: an address on an interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighKey {
    /// Host-side interface.
    pub iface: InterfaceName,
    /// The workload's address.
    pub ip: IpAddr,
}

impl fmt::Display for NeighKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dev {}", self.ip, self.iface)
    }
}

fn keys_of(iface: &InterfaceName) -> RangeInclusive<NeighKey> {
    let lo = NeighKey {
        iface: iface.clone(),
        ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let hi = NeighKey {
        iface: iface.clone(),
        ip: IpAddr::V6(Ipv6Addr::from(u128::MAX)),
    };
    lo..=hi
}

/// The neighbour entries an endpoint needs (none without a MAC).
pub fn desired_for(ep: &LocalEndpoint) -> Vec<(NeighKey, MacAddr)> {
    let Some(mac) = ep.mac else {
        return Vec::new();
    };
    let v4 = ep.ipv4.iter().map(|n| IpAddr::V4(n.addr()));
    let v6 = ep.ipv6.iter().map(|n| IpAddr::V6(n.addr()));
    v4.chain(v6)
        .map(|ip| {
            (
                NeighKey {
                    iface: ep.iface.clone(),
                    ip,
                },
                mac,
            )
        })
        .collect()
}

fn neigh_message(ifindex: u32, ip: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.ifindex = ifindex;
    m.header.kind = RouteType::Unspec;
    m.attributes.push(NeighbourAttribute::Destination(match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }));
    m
}

/// `RTM_NEWNEIGH`: a permanent entry, created or replaced, stamped as ours.
pub fn new_neigh(
    ifindex: u32,
    ip: IpAddr,
    mac: MacAddr,
    protocol: u8,
) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut m = neigh_message(ifindex, ip);
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Protocol(RouteProtocol::from(protocol)));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(m));
    req.header.flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE;
    req
}

/// `RTM_DELNEIGH` for one entry.
pub fn del_neigh(ifindex: u32, ip: IpAddr) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::DelNeighbour(neigh_message(
        ifindex, ip,
    )));
    req.header.flags = NLM_F_REQUEST;
    req
}

/// Reads one of our permanent entries from a dumped message.
pub fn parse_ours(
    msg: &NeighbourMessage,
    protocol: u8,
    links: &LinkCache,
) -> Option<(NeighKey, MacAddr)> {
    let mut ip = None;
    let mut mac = None;
    let mut proto = None;
    for a in &msg.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(b) => mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
            NeighbourAttribute::Protocol(p) => proto = Some(u8::from(*p)),
            _ => {}
        }
    }
    if proto != Some(protocol) || msg.header.state != NeighbourState::Permanent {
        return None;
    }
    let iface = links.name_of(msg.header.ifindex)?;
    Some((NeighKey { iface, ip: ip? }, MacAddr(mac?)))
}

/// Neighbour entries as per-interface objects: they need their interface
/// up, and go with it.
#[derive(Debug, Clone, Copy)]
pub struct NeighEntry;

impl IfaceObject for NeighEntry {
    type Key = NeighKey;
    type Value = MacAddr;
    const KIND: ObjectKind = ObjectKind::Neighbour;
    const NEEDS: LinkNeed = LinkNeed::Up;
    const DELETE: DeletePolicy = DeletePolicy::SendWhileUp;

    fn iface<'a>(key: &'a NeighKey, _: &'a MacAddr) -> Option<&'a InterfaceName> {
        Some(&key.iface)
    }

    fn failed_iface(key: &NeighKey) -> Option<InterfaceName> {
        Some(key.iface.clone())
    }

    fn failed_addr(key: &NeighKey) -> Option<IpAddr> {
        Some(key.ip)
    }
}

impl KeyedByIface for NeighEntry {
    fn keys_of(iface: &InterfaceName) -> RangeInclusive<NeighKey> {
        keys_of(iface)
    }
}

/// Our static neighbour entries.
#[derive(Debug, Clone)]
pub struct NeighManager {
    protocol: u8,
    objects: IfaceObjects<NeighEntry>,
}

/// Planned neighbour writes, plus how many entries wait and are blocked.
type Planned = (
    Vec<(NeighKey, WriteKind, NetlinkMessage<RouteNetlinkMessage>)>,
    usize,
    usize,
);

impl NeighManager {
    /// A manager stamping entries with `protocol`.
    pub fn new(protocol: u8) -> Self {
        NeighManager {
            protocol,
            objects: IfaceObjects::default(),
        }
    }

    /// The tracker (for stats and tests).
    pub fn tracker(&self) -> &DeltaTracker<NeighKey, MacAddr> {
        self.objects.tracker()
    }

    /// Replaces every desired entry.
    pub fn set_all(&mut self, endpoints: &BTreeMap<InterfaceName, LocalEndpoint>) {
        let desired = endpoints.values().flat_map(desired_for).collect();
        self.objects.replace_desired(desired);
    }

    /// Takes the desired entries of one interface (`None`: endpoint gone).
    pub fn set_endpoint(&mut self, iface: &InterfaceName, ep: Option<&LocalEndpoint>) {
        self.objects
            .set_iface(iface, ep.map(desired_for).unwrap_or_default());
    }

    /// Requests for every out-of-sync entry whose interface is up, plus the
    /// numbers that wait and are blocked. Entries of vanished interfaces are
    /// already gone from the kernel, so their deletes are recorded without a
    /// request.
    fn plan(&mut self, links: &LinkCache) -> Planned {
        let plan = self.objects.plan(links);
        // Neighbour steps always carry their interface's index (they need it up).
        let writes = plan
            .steps
            .into_iter()
            .filter_map(|step| match step {
                Step::Upsert {
                    key,
                    value,
                    ifindex: Some(i),
                    ..
                } => {
                    let msg = new_neigh(i, key.ip, value, self.protocol);
                    Some((key, WriteKind::Upsert, msg))
                }
                Step::Delete {
                    key,
                    ifindex: Some(i),
                } => {
                    let msg = del_neigh(i, key.ip);
                    Some((key, WriteKind::Delete, msg))
                }
                _ => None,
            })
            .collect();
        (writes, plan.waiting, plan.blocked)
    }

    /// Sends every pending write in one pipelined batch.
    pub async fn flush(
        &mut self,
        nl: &mut BatchWriter,
        links: &LinkCache,
    ) -> Result<FlushReport, NetlinkError> {
        let (writes, waiting, blocked) = self.plan(links);
        let mut report = FlushReport {
            waiting,
            blocked,
            ..FlushReport::default()
        };
        if writes.is_empty() {
            return Ok(report);
        }
        let (keys, msgs): (Vec<_>, Vec<_>) =
            writes.into_iter().map(|(k, w, m)| ((k, w), m)).unzip();
        let results = nl.execute(msgs).await?;
        for ((key, op), result) in keys.into_iter().zip(results) {
            let outcome = outcome(op, result);
            self.objects.record(key, op, outcome, &mut report);
        }
        report.log_refusals(ObjectKind::Neighbour);
        Ok(report)
    }

    /// Re-reads our entries from the kernel and gives refused ones another chance.
    pub async fn resync(
        &mut self,
        handle: &rtnetlink::Handle,
        links: &LinkCache,
    ) -> Result<(), NetlinkError> {
        let msgs: Vec<_> = handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Dump {
                what: "neighbours",
                source,
            })?;
        let observed = msgs
            .iter()
            .filter_map(|m| parse_ours(m, self.protocol, links))
            .collect();
        self.objects.replace_observed(observed);
        self.objects.unblock_all();
        Ok(())
    }

    /// The kernel flushed the entries of `name` (gone or down).
    pub fn on_link_vanished(&mut self, name: &str) {
        self.objects.forget_iface(name);
    }

    /// Gives refused entries another chance (on link and address changes).
    pub fn unblock(&mut self) {
        self.objects.unblock_all();
    }
}

/// What the kernel's answer means for one entry: a missing entry counts as
/// deleted; any refusal blocks the entry until the next link or address
/// change.
fn outcome(op: WriteKind, result: WriteResult) -> Outcome {
    match (op, result) {
        (_, WriteResult::Ok) => Outcome::Done,
        (WriteKind::Delete, WriteResult::Errno(ENOENT)) => Outcome::AlreadyGone,
        (_, WriteResult::Errno(e)) => Outcome::Failed {
            errno: Some(e),
            block: Some(Blocked::Rejected(Some(e))),
        },
        (_, WriteResult::Unknown) => Outcome::Failed {
            errno: None,
            block: Some(Blocked::Rejected(None)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostnet::links::Link;
    use margay_policy::desired::WorkloadEndpointKey;
    use margay_policy::names::Id;
    use netlink_packet_core::NetlinkPayload;

    fn endpoint(name: &str, mac: Option<&str>, v4: &[&str], v6: &[&str]) -> LocalEndpoint {
        LocalEndpoint {
            key: WorkloadEndpointKey {
                host: "h".into(),
                orchestrator: "k8s".into(),
                workload: "w".into(),
                endpoint: Id::new("e").expect("id"),
            },
            iface: InterfaceName::new(name).expect("iface"),
            mac: mac.map(|m| MacAddr::parse(m).expect("mac")),
            ipv4: v4.iter().map(|s| s.parse().expect("v4")).collect(),
            ipv6: v6.iter().map(|s| s.parse().expect("v6")).collect(),
        }
    }

    fn links() -> LinkCache {
        LinkCache::from_links([(
            7,
            Link {
                name: "cali1".into(),
                up: true,
            },
        )])
    }

    #[test]
    fn endpoints_without_mac_need_no_entries() {
        assert!(desired_for(&endpoint("cali1", None, &["10.0.0.1/32"], &[])).is_empty());
        let d = desired_for(&endpoint(
            "cali1",
            Some("aa:bb:cc:dd:ee:01"),
            &["10.0.0.1/32"],
            &["fd00::1/128"],
        ));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn entries_round_trip_as_ours_only_with_our_protocol() {
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let mac = MacAddr::parse("aa:bb:cc:dd:ee:01").expect("mac");
        let mut req = new_neigh(7, ip, mac, 80);
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf).expect("parses");
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) = back.payload
        else {
            panic!("not a neighbour message");
        };
        let (key, got) = parse_ours(&m, 80, &links()).expect("ours");
        assert_eq!(key.ip, ip);
        assert_eq!(key.iface.as_str(), "cali1");
        assert_eq!(got, mac);
        assert!(parse_ours(&m, 81, &links()).is_none());
    }

    #[test]
    fn a_refused_entry_is_reported_with_its_interface_and_address() {
        let key = NeighKey {
            iface: InterfaceName::new("cali1").expect("iface"),
            ip: "10.0.0.1".parse().expect("ip"),
        };
        let f = NeighEntry::failure(&key, WriteKind::Upsert, Some(22));
        assert_eq!(f.kind, ObjectKind::Neighbour);
        assert_eq!(f.object, "10.0.0.1 dev cali1");
        assert_eq!(f.iface, Some(key.iface.clone()));
        assert_eq!(f.addr, Some(key.ip));
    }

    #[test]
    fn changing_an_endpoint_replaces_only_its_entries() {
        let mut n = NeighManager::new(80);
        let a = endpoint(
            "cali1",
            Some("aa:bb:cc:dd:ee:01"),
            &["10.0.0.1/32", "10.0.0.2/32"],
            &[],
        );
        let b = endpoint("cali2", Some("aa:bb:cc:dd:ee:02"), &["10.0.0.3/32"], &[]);
        n.set_all(&BTreeMap::from([
            (a.iface.clone(), a.clone()),
            (b.iface.clone(), b),
        ]));
        assert_eq!(n.tracker().desired().len(), 3);
        let a2 = endpoint("cali1", Some("aa:bb:cc:dd:ee:01"), &["10.0.0.2/32"], &[]);
        n.set_endpoint(&a.iface, Some(&a2));
        assert_eq!(n.tracker().desired().len(), 2);
        n.set_endpoint(&a.iface, None);
        assert_eq!(n.tracker().desired().len(), 1);
    }

    #[test]
    fn entries_wait_for_their_interface_and_stale_ones_of_gone_links_are_dropped() {
        let mut n = NeighManager::new(80);
        let a = endpoint("cali9", Some("aa:bb:cc:dd:ee:01"), &["10.0.0.1/32"], &[]);
        n.set_endpoint(&a.iface, Some(&a));
        let stale = NeighKey {
            iface: InterfaceName::new("cali8").expect("iface"),
            ip: "10.0.0.8".parse().expect("ip"),
        };
        n.objects.tracker_mut().set_observed(stale, MacAddr([0; 6]));
        let (writes, waiting, _) = n.plan(&links());
        assert!(writes.is_empty());
        assert_eq!(waiting, 1);
        assert_eq!(n.tracker().observed().len(), 0);
    }
}
