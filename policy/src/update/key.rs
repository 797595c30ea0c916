//! Datastore key → [`ResourceKey`]: recognises the key layouts margay reads
//! and validates their segments.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::desired::WorkloadEndpointKey;
use crate::model::{HostEndpointKey, ResourceKey};
use crate::names::Id;

use super::bgp;
use super::fields::{parse_id, parse_net, show};

/// Classifies `key` under `prefix` (e.g. `/calico/v1`; a trailing `/` is ignored).
///
/// `Ok(None)`: not a key margay reads. `Err(reason)`: a known layout with a bad
/// segment.
pub fn parse_key(prefix: &str, key: &str) -> Result<Option<ResourceKey>, String> {
    let prefix = prefix.trim_end_matches('/');
    let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return bgp_key(prefix, key);
    };
    let segs: Vec<&str> = rest.split('/').collect();
    match segs.as_slice() {
        ["Ready"] => Ok(Some(ResourceKey::Ready)),
        ["config", name] => Ok(Some(ResourceKey::GlobalConfig(config_name(name)?))),
        ["host", host, rest @ ..] => host_key(host, rest),
        ["policy", "profile", id, what] => profile_key(id, what),
        ["policy", "tier", tier, "metadata"] => Ok(Some(ResourceKey::TierMetadata(id(tier)?))),
        ["policy", "tier", tier, "policy", policy] => Ok(Some(ResourceKey::Policy {
            tier: id(tier)?,
            policy: id(policy)?,
        })),
        ["ipam", version @ ("v4" | "v6"), "pool", cidr] => {
            Ok(Some(ResourceKey::IpPool(pool_cidr(version, cidr)?)))
        }
        _ => Ok(None),
    }
}

/// A key of the BGP tree next to the data prefix (see `super::bgp`).
fn bgp_key(data_prefix: &str, key: &str) -> Result<Option<ResourceKey>, String> {
    let Some(prefix) = bgp::bgp_prefix(data_prefix) else {
        return Ok(None);
    };
    match key.strip_prefix(&prefix).and_then(|r| r.strip_prefix('/')) {
        Some(rest) => bgp::parse_key(&rest.split('/').collect::<Vec<_>>()),
        None => Ok(None),
    }
}

/// Keys under `host/<host>/`.
fn host_key(host: &str, rest: &[&str]) -> Result<Option<ResourceKey>, String> {
    let key = match rest {
        ["config", name] => ResourceKey::HostConfig {
            host: segment("host", host)?,
            name: config_name(name)?,
        },
        ["bird_ip"] => ResourceKey::HostIp(segment("host", host)?),
        ["workload", orch, workload, "endpoint", ep] => {
            ResourceKey::WorkloadEndpoint(WorkloadEndpointKey {
                host: segment("host", host)?,
                orchestrator: segment("orchestrator", orch)?,
                workload: segment("workload", workload)?,
                endpoint: id(ep)?,
            })
        }
        ["endpoint", ep] => ResourceKey::HostEndpoint(HostEndpointKey {
            host: segment("host", host)?,
            endpoint: id(ep)?,
        }),
        _ => return Ok(None),
    };
    Ok(Some(key))
}

/// Keys under `policy/profile/<id>/`.
fn profile_key(profile: &str, what: &str) -> Result<Option<ResourceKey>, String> {
    let make = match what {
        "rules" => ResourceKey::ProfileRules,
        "tags" => ResourceKey::ProfileTags,
        "labels" => ResourceKey::ProfileLabels,
        _ => return Ok(None),
    };
    Ok(Some(make(id(profile)?)))
}

/// An id segment.
fn id(s: &str) -> Result<Id, String> {
    parse_id(s, "id segment")
}

/// A host, orchestrator or workload segment: anything non-empty without `/`
/// (the split already removed every `/`).
fn segment(what: &str, s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err(format!("empty {what} segment"))
    } else {
        Ok(s.to_owned())
    }
}

/// A setting name: `[A-Za-z0-9_]+` (every Felix setting name fits).
fn config_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "invalid setting name {}: must match ^[A-Za-z0-9_]+$",
            show(s)
        ))
    }
}

/// The CIDR of a pool key, written with its `/` as `-` (`10.0.0.0-8`, `fd00::-64`).
fn pool_cidr(version: &str, written: &str) -> Result<IpNet, String> {
    let bad = |why: &str| format!("invalid pool key segment {}: {why}", show(written));
    let (addr, len) = written
        .rsplit_once('-')
        .ok_or_else(|| bad("expected <address>-<prefix length>"))?;
    let net = parse_net(&format!("{addr}/{len}")).map_err(|e| bad(&e))?;
    let family_ok = match net.addr() {
        IpAddr::V4(_) => version == "v4",
        IpAddr::V6(_) => version == "v6",
    };
    if !family_ok {
        return Err(bad(&format!("not an IP{version} network")));
    }
    if net.trunc() != net {
        return Err(bad(
            "host bits set (a pool is named by its network address)",
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/calico/v1";

    #[test]
    fn unrelated_paths_are_ignored() {
        for k in [
            "/calico/felix/v1/host/h/status",
            "/calico/v1",
            "/calico/v1/",
            "/calico/v1x/Ready",
            "/calico/v1/host/h/metadata",
            "/calico/v1/ipam/v4/assignment/x",
            "/calico/v1/ipam/v5/pool/10.0.0.0-8",
            "/calico/v1/policy/profile/p/other",
            "/calico/v1/policy/profile/p/rules/extra",
            "/calico/v1/config/a/b",
        ] {
            assert_eq!(parse_key(P, k), Ok(None), "{k}");
        }
    }

    #[test]
    fn prefix_is_configurable() {
        assert_eq!(
            parse_key("/other/", "/other/Ready"),
            Ok(Some(ResourceKey::Ready))
        );
        assert_eq!(parse_key("/other", "/calico/v1/Ready"), Ok(None));
    }

    #[test]
    fn pool_keys_name_their_network() {
        let k = parse_key(P, "/calico/v1/ipam/v6/pool/fd80:24e2::-64").expect("ok");
        let net: IpNet = "fd80:24e2::/64".parse().expect("net");
        assert_eq!(k, Some(ResourceKey::IpPool(net)));
        assert!(parse_key(P, "/calico/v1/ipam/v4/pool/fd80::-64").is_err());
        assert!(parse_key(P, "/calico/v1/ipam/v6/pool/10.0.0.0-8").is_err());
        assert!(parse_key(P, "/calico/v1/ipam/v4/pool/10.0.0.1-8").is_err());
        assert!(parse_key(P, "/calico/v1/ipam/v4/pool/10.0.0.0").is_err());
        assert!(parse_key(P, "/calico/v1/ipam/v4/pool/10.0.0-8").is_err());
    }
}
