//! Route dumps over the shared rtnetlink handle: the routes of both
//! families (the kernel filters them by protocol under strict checking),
//! reduced to ours by [`dump_ours`] or to what the host facts need.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use ipnet::IpNet;

use super::model::{self, KernelRoute, RawRoute};
use crate::hostnet::links::LinkCache;
use crate::hostnet::netlink::NetlinkError;

/// The routes of both families with route protocol `protocol` (0: any).
pub async fn dump_routes(
    handle: &rtnetlink::Handle,
    protocol: u8,
) -> Result<Vec<RawRoute>, NetlinkError> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        let req = handle.route().get(model::dump_request(v6, protocol));
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

/// Our routes (both families, main table, our protocol), by destination.
pub async fn dump_ours(
    handle: &rtnetlink::Handle,
    protocol: u8,
    links: &LinkCache,
) -> Result<BTreeMap<IpNet, KernelRoute>, NetlinkError> {
    let mut out = BTreeMap::new();
    for raw in dump_routes(handle, protocol).await? {
        if raw.is_ours(protocol) {
            out.insert(raw.dst, raw.to_kernel_route(|i| links.name_of(i)));
        }
    }
    Ok(out)
}
