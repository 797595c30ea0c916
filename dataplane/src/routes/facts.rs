//! Reads the [`HostFacts`] of a namespace over netlink: every interface
//! address and every main-table route (all protocols), reduced by the pure
//! [`HostFacts::derive`]. Thin on purpose; called at start, when addresses
//! or default routes change, and on full repairs.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;

use super::links::LinkCache;
use super::model::{self, RawRoute};
use super::netlink::NetlinkError;
use super::protect::HostFacts;

/// Reads addresses and main-table routes and derives the facts.
pub async fn read(
    handle: &rtnetlink::Handle,
    links: &LinkCache,
    etcd: &[IpAddr],
    our_protocol: u8,
) -> Result<HostFacts, NetlinkError> {
    let addresses = addresses(handle).await?;
    let routes = main_routes(handle).await?;
    Ok(HostFacts::derive(
        addresses,
        &routes,
        etcd,
        our_protocol,
        |i| links.kernel_name(i).map(str::to_owned),
    ))
}

async fn addresses(handle: &rtnetlink::Handle) -> Result<Vec<IpAddr>, NetlinkError> {
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
    Ok(msgs
        .iter()
        .flat_map(|m| &m.attributes)
        .filter_map(|a| match a {
            AddressAttribute::Address(ip) | AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        })
        .collect())
}

/// Every main-table route of both families (protocol 0 = no filter).
async fn main_routes(handle: &rtnetlink::Handle) -> Result<Vec<RawRoute>, NetlinkError> {
    let mut out = Vec::new();
    for (v6, version) in [
        (false, rtnetlink::IpVersion::V4),
        (true, rtnetlink::IpVersion::V6),
    ] {
        let mut req = handle.route().get(version);
        *req.message_mut() = model::dump_request(v6, 0);
        let msgs: Vec<_> =
            req.execute()
                .try_collect()
                .await
                .map_err(|source| NetlinkError::Dump {
                    what: "routes",
                    source,
                })?;
        out.extend(
            msgs.iter()
                .filter_map(RawRoute::parse)
                .filter(|r| r.table == model::MAIN_TABLE),
        );
    }
    Ok(out)
}

/// Reads the facts of the namespace we run in, from scratch (for `margay
/// check`, which runs no dataplane). `etcd` are the etcd endpoints' addresses.
pub async fn read_current(etcd: &[IpAddr], our_protocol: u8) -> Result<HostFacts, NetlinkError> {
    let socks = super::netlink::open(&crate::netns::NetnsTarget::current())?;
    let msgs: Vec<_> = socks
        .handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|source| NetlinkError::Dump {
            what: "links",
            source,
        })?;
    let links = LinkCache::from_links(msgs.iter().filter_map(super::links::Link::parse));
    read(&socks.handle, &links, etcd, our_protocol).await
}
