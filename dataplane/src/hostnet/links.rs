//! What we know of the namespace's interfaces: index, name and whether they
//! are up. Fed by a dump at start and by link events afterwards; the
//! managers use it to resolve interface names and to know which objects
//! must wait for their interface.

use std::collections::HashMap;

use futures::TryStreamExt;
use margay_policy::names::InterfaceName;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

use super::netlink::NetlinkError;

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Kernel name (may fall outside our interface charset).
    pub name: String,
    /// Administratively up (`IFF_UP`): routes and neighbours can live on it.
    pub up: bool,
}

impl Link {
    /// Reads index, name and flags from a link message.
    pub fn parse(msg: &LinkMessage) -> Option<(u32, Link)> {
        let name = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })?;
        let up = msg.header.flags.contains(LinkFlags::Up);
        Some((msg.header.index, Link { name, up }))
    }
}

/// What an update did to an interface's usability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    /// Nothing that matters changed.
    Unchanged,
    /// The interface became usable (new, up, or renamed to this name).
    Appeared(String),
    /// The interface stopped being usable under this name (gone, down, renamed away).
    Vanished(String),
    /// Renamed while usable: the old name vanished, the new one appeared.
    Renamed { old: String, new: String },
}

/// Interfaces by index and by name.
#[derive(Debug, Clone, Default)]
pub struct LinkCache {
    by_index: HashMap<u32, Link>,
    by_name: HashMap<String, u32>,
}

impl LinkCache {
    /// Builds the cache from a full dump.
    pub fn from_links(links: impl IntoIterator<Item = (u32, Link)>) -> Self {
        let mut c = LinkCache::default();
        for (index, link) in links {
            c.update(index, link);
        }
        c
    }

    /// Records a new or changed interface.
    pub fn update(&mut self, index: u32, link: Link) -> LinkChange {
        let old = self.by_index.insert(index, link.clone());
        if let Some(o) = &old {
            if o.name != link.name {
                self.by_name.remove(&o.name);
            }
        }
        self.by_name.insert(link.name.clone(), index);
        match old {
            Some(o) if o.name != link.name && o.up && link.up => LinkChange::Renamed {
                old: o.name,
                new: link.name,
            },
            Some(o) if o.up && o.name != link.name => LinkChange::Vanished(o.name),
            Some(o) if o.up && !link.up => LinkChange::Vanished(o.name),
            Some(o) if o.up == link.up && o.name == link.name => LinkChange::Unchanged,
            _ if link.up => LinkChange::Appeared(link.name),
            _ => LinkChange::Unchanged,
        }
    }

    /// Records that an interface is gone (up or not: its sysctls went too).
    pub fn remove(&mut self, index: u32) -> LinkChange {
        match self.by_index.remove(&index) {
            Some(o) => {
                if self.by_name.get(&o.name) == Some(&index) {
                    self.by_name.remove(&o.name);
                }
                LinkChange::Vanished(o.name)
            }
            None => LinkChange::Unchanged,
        }
    }

    /// Index of `name` if it exists and is up.
    pub fn usable(&self, name: &InterfaceName) -> Option<u32> {
        let index = *self.by_name.get(name.as_str())?;
        self.by_index.get(&index).filter(|l| l.up).map(|_| index)
    }

    /// True when `name` exists and is up.
    pub fn is_usable(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .and_then(|i| self.by_index.get(i))
            .is_some_and(|l| l.up)
    }

    /// True when `name` exists (up or not).
    pub fn exists(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Name of interface `index`, if it is a valid interface name.
    pub fn name_of(&self, index: u32) -> Option<InterfaceName> {
        let link = self.by_index.get(&index)?;
        InterfaceName::new(&link.name).ok()
    }

    /// The kernel's name of interface `index`, whatever its characters.
    pub fn kernel_name(&self, index: u32) -> Option<&str> {
        self.by_index.get(&index).map(|l| l.name.as_str())
    }

    /// Number of interfaces known.
    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    /// True when no interface is known.
    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }
}

/// Every link of the namespace, as a name/index cache.
pub async fn dump_links(handle: &rtnetlink::Handle) -> Result<LinkCache, NetlinkError> {
    let msgs: Vec<_> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|source| NetlinkError::Dump {
            what: "links",
            source,
        })?;
    Ok(LinkCache::from_links(msgs.iter().filter_map(Link::parse)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, up: bool) -> Link {
        Link {
            name: name.to_owned(),
            up,
        }
    }

    fn iface(s: &str) -> InterfaceName {
        InterfaceName::new(s).expect("valid")
    }

    #[test]
    fn interfaces_appear_when_up_and_vanish_when_down_or_gone() {
        let mut c = LinkCache::default();
        assert_eq!(c.update(5, link("cali1", false)), LinkChange::Unchanged);
        assert_eq!(c.usable(&iface("cali1")), None);
        assert_eq!(
            c.update(5, link("cali1", true)),
            LinkChange::Appeared("cali1".into())
        );
        assert_eq!(c.usable(&iface("cali1")), Some(5));
        assert_eq!(c.update(5, link("cali1", true)), LinkChange::Unchanged);
        assert_eq!(
            c.update(5, link("cali1", false)),
            LinkChange::Vanished("cali1".into())
        );
        assert_eq!(
            c.update(5, link("cali1", true)),
            LinkChange::Appeared("cali1".into())
        );
        assert_eq!(c.remove(5), LinkChange::Vanished("cali1".into()));
        assert_eq!(c.usable(&iface("cali1")), None);
        assert_eq!(c.remove(5), LinkChange::Unchanged);
    }

    #[test]
    fn renames_move_the_name() {
        let mut c = LinkCache::from_links([(3, link("tmp0", true))]);
        assert_eq!(
            c.update(3, link("cali9", true)),
            LinkChange::Renamed {
                old: "tmp0".into(),
                new: "cali9".into()
            }
        );
        assert!(!c.is_usable("tmp0"));
        assert_eq!(c.usable(&iface("cali9")), Some(3));
        assert_eq!(c.name_of(3), Some(iface("cali9")));
    }

    #[test]
    fn names_outside_our_charset_resolve_to_none() {
        let c = LinkCache::from_links([(4, link("eth0.100", true))]);
        assert_eq!(c.name_of(4), None);
        assert!(c.is_usable("eth0.100"));
        assert_eq!(c.len(), 1);
    }
}
