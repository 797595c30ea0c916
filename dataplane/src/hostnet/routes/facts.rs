//! Reads the raw material of the [`HostFacts`] of a namespace over netlink:
//! every interface address, and the main-table routes that matter (default
//! routes and those covering an etcd endpoint, any protocol), reduced by the
//! pure [`HostFacts::derive`]. Thin on purpose; the owner re-reads addresses
//! on address events and routes on default-route events and full repairs.

use std::net::IpAddr;

use super::model::{self, RawRoute};
use super::protect::HostFacts;
use crate::hostnet::addresses::AddressEntry;
use crate::hostnet::links::{self, LinkCache};
use crate::hostnet::netlink::{self, NetlinkError};

/// Reads addresses and main-table routes and derives the facts.
pub async fn read(
    handle: &rtnetlink::Handle,
    links: &LinkCache,
    etcd: &[IpAddr],
    our_protocol: u8,
) -> Result<HostFacts, NetlinkError> {
    let addresses = addresses(handle).await?;
    let routes = relevant_routes(handle, etcd).await?;
    Ok(derive(&addresses, &routes, links, etcd, our_protocol))
}

/// [`HostFacts::derive`] with interface names from `links`.
pub fn derive(
    addresses: &[IpAddr],
    routes: &[RawRoute],
    links: &LinkCache,
    etcd: &[IpAddr],
    our_protocol: u8,
) -> HostFacts {
    HostFacts::derive(addresses.iter().copied(), routes, etcd, our_protocol, |i| {
        links.kernel_name(i).map(str::to_owned)
    })
}

/// True when a main-table route to `dst` matters to the facts: a default
/// route, or one covering an etcd endpoint.
pub fn is_relevant(dst: &ipnet::IpNet, etcd: &[IpAddr]) -> bool {
    dst.prefix_len() == 0 || etcd.iter().any(|ip| dst.contains(ip))
}

/// The main-table routes that matter (see [`is_relevant`]).
pub async fn relevant_routes(
    handle: &rtnetlink::Handle,
    etcd: &[IpAddr],
) -> Result<Vec<RawRoute>, NetlinkError> {
    let mut all = main_routes(handle).await?;
    all.retain(|r| is_relevant(&r.dst, etcd));
    Ok(all)
}

/// Every address on this namespace's interfaces (own and point-to-point
/// peers).
pub async fn addresses(handle: &rtnetlink::Handle) -> Result<Vec<IpAddr>, NetlinkError> {
    let entries = crate::hostnet::addresses::dump(handle).await?;
    Ok(entries.iter().flat_map(AddressEntry::all_ips).collect())
}

/// Every main-table route of both families, whatever its protocol.
async fn main_routes(handle: &rtnetlink::Handle) -> Result<Vec<RawRoute>, NetlinkError> {
    let mut all = super::dumps::dump_routes(handle, 0).await?;
    all.retain(|r| r.table == model::MAIN_TABLE);
    Ok(all)
}

/// Reads the facts of the namespace we run in, from scratch (for `margay
/// check`, which runs no dataplane). `etcd` are the etcd endpoints' addresses.
pub async fn read_current(etcd: &[IpAddr], our_protocol: u8) -> Result<HostFacts, NetlinkError> {
    let socks = netlink::open(&crate::netns::NetnsTarget::current())?;
    let links = links::dump_links(&socks.handle).await?;
    read(&socks.handle, &links, etcd, our_protocol).await
}
