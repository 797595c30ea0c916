//! Full dumps over the shared rtnetlink handle: every link, and the routes
//! of both families (the kernel filters them by protocol under strict
//! checking). The managers and the host facts reduce them as they need.

use futures::TryStreamExt;

use super::links::{Link, LinkCache};
use super::model::{self, RawRoute};
use super::netlink::NetlinkError;

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

/// The routes of both families with route protocol `protocol` (0: any).
pub async fn dump_routes(
    handle: &rtnetlink::Handle,
    protocol: u8,
) -> Result<Vec<RawRoute>, NetlinkError> {
    let mut out = Vec::new();
    for (v6, version) in [
        (false, rtnetlink::IpVersion::V4),
        (true, rtnetlink::IpVersion::V6),
    ] {
        let mut req = handle.route().get(version);
        *req.message_mut() = model::dump_request(v6, protocol);
        let msgs: Vec<_> =
            req.execute()
                .try_collect()
                .await
                .map_err(|source| NetlinkError::Dump {
                    what: "routes",
                    source,
                })?;
        out.extend(msgs.iter().filter_map(RawRoute::parse));
    }
    Ok(out)
}
