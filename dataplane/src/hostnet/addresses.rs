//! The addresses of a namespace's interfaces: one netlink dump read into
//! [`AddressEntry`]s (interface index, own address, point-to-point peer),
//! and the pure grouping of those entries by interface name
//! ([`by_interface`]) that host endpoints bound by expected address follow.
//!
//! The owner ([`super::HostNetwork`]) dumps on address events (once per
//! batch) and regroups without a dump when an interface is renamed,
//! created or deleted, since the entries are keyed by index.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};

use super::links::LinkCache;
use super::netlink::NetlinkError;
use crate::firewall::lower::InterfaceAddresses;

/// One address as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddressEntry {
    /// Index of the interface carrying it.
    pub index: u32,
    /// The interface's own address (`IFA_LOCAL` when present, else `IFA_ADDRESS`).
    pub local: IpAddr,
    /// The far end of a point-to-point link (`IFA_ADDRESS` when it differs
    /// from `IFA_LOCAL`): not an address of this host's interface.
    pub peer: Option<IpAddr>,
}

impl AddressEntry {
    /// Reads one address message; `None` when it names no address.
    pub fn parse(msg: &AddressMessage) -> Option<AddressEntry> {
        let mut local = None;
        let mut address = None;
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                _ => {}
            }
        }
        let (local, peer) = match (local, address) {
            (Some(l), Some(a)) if l != a => (l, Some(a)),
            (Some(l), _) => (l, None),
            (None, Some(a)) => (a, None),
            (None, None) => return None,
        };
        Some(AddressEntry {
            index: msg.header.index,
            local,
            peer,
        })
    }

    /// Every address the entry names (own and peer), as the host facts
    /// have always counted them.
    pub fn all_ips(&self) -> impl Iterator<Item = IpAddr> {
        std::iter::once(self.local).chain(self.peer)
    }
}

/// Every address on the namespace's interfaces, in dump order.
pub async fn dump(handle: &rtnetlink::Handle) -> Result<Vec<AddressEntry>, NetlinkError> {
    let msgs: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|source| NetlinkError::Dump {
            what: "addresses",
            source,
        })?;
    Ok(msgs.iter().filter_map(AddressEntry::parse).collect())
}

/// The own addresses of `entries` grouped by the kernel name of their
/// interface (up or down alike). Interfaces carrying no address, and
/// entries whose interface index is not (or no longer) in `links`, are
/// left out.
pub fn by_interface(entries: &[AddressEntry], links: &LinkCache) -> InterfaceAddresses {
    let mut out = InterfaceAddresses::new();
    for entry in entries {
        let Some(name) = links.kernel_name(entry.index) else {
            continue;
        };
        match out.get_mut(name) {
            Some(on_it) => {
                on_it.insert(entry.local);
            }
            None => {
                out.insert(name.to_owned(), BTreeSet::from([entry.local]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostnet::links::Link;
    use netlink_packet_route::address::AddressAttribute as A;
    use std::collections::BTreeSet;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn message(index: u32, attributes: Vec<AddressAttribute>) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.attributes = attributes;
        msg
    }

    fn entry(index: u32, local: &str) -> AddressEntry {
        AddressEntry {
            index,
            local: ip(local),
            peer: None,
        }
    }

    fn links(list: &[(u32, &str, bool)]) -> LinkCache {
        LinkCache::from_links(list.iter().map(|(i, name, up)| {
            (
                *i,
                Link {
                    name: (*name).to_owned(),
                    up: *up,
                },
            )
        }))
    }

    #[test]
    fn local_is_the_own_address_and_a_different_address_the_peer() {
        let plain = message(
            3,
            vec![A::Address(ip("10.0.0.1")), A::Local(ip("10.0.0.1"))],
        );
        assert_eq!(AddressEntry::parse(&plain), Some(entry(3, "10.0.0.1")));
        let v6 = message(4, vec![A::Address(ip("fd00::1"))]);
        assert_eq!(AddressEntry::parse(&v6), Some(entry(4, "fd00::1")));
        let ptp = message(
            5,
            vec![A::Address(ip("10.9.9.9")), A::Local(ip("10.0.0.2"))],
        );
        let parsed = AddressEntry::parse(&ptp).expect("entry");
        assert_eq!(parsed.local, ip("10.0.0.2"));
        assert_eq!(parsed.peer, Some(ip("10.9.9.9")));
        assert_eq!(parsed.all_ips().count(), 2);
        assert_eq!(AddressEntry::parse(&message(6, vec![])), None);
    }

    #[test]
    fn addresses_group_by_kernel_name_whatever_the_link_state() {
        let cache = links(&[(1, "lo", true), (2, "eth0", true), (3, "eth0.100", false)]);
        let entries = [
            entry(1, "127.0.0.1"),
            entry(2, "10.0.0.1"),
            entry(2, "fd00::1"),
            entry(2, "10.0.0.1"),
            entry(3, "192.168.1.1"),
            entry(9, "10.9.9.9"),
        ];
        let map = by_interface(&entries, &cache);
        assert_eq!(map.len(), 3, "{map:?}");
        assert_eq!(map["lo"], BTreeSet::from([ip("127.0.0.1")]));
        assert_eq!(map["eth0"], BTreeSet::from([ip("10.0.0.1"), ip("fd00::1")]));
        assert_eq!(map["eth0.100"], BTreeSet::from([ip("192.168.1.1")]));
    }

    #[test]
    fn a_rename_moves_the_addresses_and_a_removal_drops_them() {
        let mut cache = links(&[(2, "eth0", true), (3, "eth1", true)]);
        let entries = [entry(2, "10.0.0.1"), entry(3, "10.0.1.1")];
        cache.update(
            2,
            Link {
                name: "uplink".into(),
                up: true,
            },
        );
        cache.remove(3);
        let map = by_interface(&entries, &cache);
        assert_eq!(
            map,
            InterfaceAddresses::from([("uplink".into(), BTreeSet::from([ip("10.0.0.1")]))])
        );
    }
}
