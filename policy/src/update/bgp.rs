//! Keys and values of the BGP tree, `<root>/bgp/v1` (see `DATAMODEL.md`,
//! "BGP"), where `<root>` is the data prefix without its `/v1`
//! (`/calico/v1` → `/calico/bgp/v1`).
//!
//! Everything here ends up in BIRD's configuration text, so nothing is kept
//! as text: addresses and AS numbers are typed, a key's address segment must
//! be an address written in full (`1.2.3.4; protocol` is a bad key), and a
//! host segment longer than a DNS name can be (253 bytes) is refused.
//!
//! Decisions beyond the contract text (fail-closed):
//! - AS numbers in text are plain decimal without leading zeros or sign, or
//!   asdot `<high>.<low>` (each 0..=65535, together not 0); in a peer
//!   document `as_num` may also be a JSON integer. No surrounding spaces.
//! - A peer key's address must be of the key's family (`peer_v4/fd00::1` is
//!   a bad key); a peer document's `ip` must equal the key's address, and
//!   neither may be a special-purpose address (see `special`).
//! - `ip_addr_v4`/`ip_addr_v6` set to the empty string means "no address",
//!   as for `bird_ip`.

use std::net::IpAddr;

use serde_json::Value as Json;

use crate::bgp::AsNumber;
use crate::model::{BgpKey, BgpValue, ResourceKey};

use super::fields::{family, opt, parse_addr, parse_object, show, string, type_name};
use super::special::{address_class, refuse};

/// Longest host segment of a BGP key: the longest DNS name.
pub const MAX_HOST_LEN: usize = 253;

/// The BGP tree's prefix for the data prefix `data_prefix` (`/calico/v1` →
/// `/calico/bgp/v1`); `None` when the data prefix does not end in `/v1`.
pub fn bgp_prefix(data_prefix: &str) -> Option<String> {
    let root = data_prefix.trim_end_matches('/').strip_suffix("/v1")?;
    Some(format!("{root}/bgp/v1"))
}

/// Classifies the segments of a key below the BGP prefix. `Ok(None)`: not a
/// key margay reads; `Err(reason)`: a known layout with a bad segment.
pub fn parse_key(segs: &[&str]) -> Result<Option<ResourceKey>, String> {
    let key = match segs {
        ["global", "as_num"] => BgpKey::GlobalAsNumber,
        ["global", "node_mesh"] => BgpKey::NodeMesh,
        ["global", kind @ ("peer_v4" | "peer_v6"), ip] => BgpKey::GlobalPeer(peer_ip(kind, ip)?),
        ["host", host, rest @ ..] => match rest {
            ["ip_addr_v4"] => BgpKey::HostAddressV4(host_segment(host)?),
            ["ip_addr_v6"] => BgpKey::HostAddressV6(host_segment(host)?),
            ["as_num"] => BgpKey::HostAsNumber(host_segment(host)?),
            [kind @ ("peer_v4" | "peer_v6"), ip] => BgpKey::HostPeer {
                host: host_segment(host)?,
                peer: peer_ip(kind, ip)?,
            },
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    Ok(Some(ResourceKey::Bgp(key)))
}

/// A host segment: non-empty, without `/` (already split off), at most
/// [`MAX_HOST_LEN`] bytes.
fn host_segment(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty host segment".to_owned());
    }
    if s.len() > MAX_HOST_LEN {
        return Err(format!(
            "host segment {} is {} bytes long; a host name has at most {MAX_HOST_LEN}",
            show(s),
            s.len()
        ));
    }
    Ok(s.to_owned())
}

/// The address segment of a `peer_v4`/`peer_v6` key.
fn peer_ip(kind: &str, written: &str) -> Result<IpAddr, String> {
    let addr = parse_addr(written).map_err(|e| format!("peer key segment: {e}"))?;
    let want = if kind == "peer_v4" { 4 } else { 6 };
    if family(&addr) != want {
        return Err(format!(
            "peer key segment {addr} is not an IPv{want} address ({kind})"
        ));
    }
    Ok(addr)
}

/// Parses the value of a BGP key. `Ok(None)` means "absent".
pub fn parse_value(key: &BgpKey, text: &str) -> Result<Option<BgpValue>, String> {
    let value = match key {
        BgpKey::GlobalAsNumber | BgpKey::HostAsNumber(_) => {
            BgpValue::AsNumber(as_number_text(text, "as_num")?)
        }
        BgpKey::NodeMesh => node_mesh(text)?,
        BgpKey::GlobalPeer(ip) | BgpKey::HostPeer { peer: ip, .. } => peer(*ip, text)?,
        BgpKey::HostAddressV4(_) => return host_address(text, 4),
        BgpKey::HostAddressV6(_) => return host_address(text, 6),
    };
    Ok(Some(value))
}

/// An AS number written as text: plain decimal or asdot.
pub fn as_number_text(text: &str, what: &str) -> Result<AsNumber, String> {
    let bad = |why: &str| format!("{what} {} {why}", show(text));
    let number = match text.split_once('.') {
        None => decimal(text, u64::from(u32::MAX)).ok_or_else(|| {
            bad("is not an AS number (1 to 4294967295, plain decimal or asdot <high>.<low>)")
        })?,
        Some((high, low)) => {
            let part = |s| decimal(s, 65535);
            match (part(high), part(low)) {
                (Some(h), Some(l)) => (h << 16) | l,
                _ => return Err(bad("is not an asdot AS number (each part 0 to 65535)")),
            }
        }
    };
    u32::try_from(number)
        .ok()
        .and_then(AsNumber::new)
        .ok_or_else(|| bad("is not an AS number: 0 is reserved"))
}

/// Plain decimal digits without a leading zero (`0` itself allowed), at most `max`.
fn decimal(s: &str, max: u64) -> Option<u64> {
    let plain = !s.is_empty()
        && s.len() <= 10
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    let n: u64 = s.parse().ok().filter(|_| plain)?;
    (n <= max).then_some(n)
}

/// An AS number in a JSON document: a string (as [`as_number_text`]) or an integer.
fn as_number_json(v: &Json, what: &str) -> Result<AsNumber, String> {
    match v {
        Json::String(s) => as_number_text(s, what),
        Json::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .and_then(AsNumber::new)
            .ok_or_else(|| format!("{what} {n} is not an AS number (1 to 4294967295)")),
        other => Err(format!(
            "{what} must be a string or a number, found {}",
            type_name(other)
        )),
    }
}

/// `global/node_mesh`: `{"enabled": true|false}`; other fields are ignored.
fn node_mesh(text: &str) -> Result<BgpValue, String> {
    let doc = parse_object(text)?;
    match opt(&doc, "enabled") {
        Some(Json::Bool(enabled)) => Ok(BgpValue::NodeMesh { enabled: *enabled }),
        Some(other) => Err(format!(
            "enabled must be true or false, found {}",
            type_name(other)
        )),
        None => Err("enabled is required".to_owned()),
    }
}

/// A peer document `{"ip": ..., "as_num": ...}` under the key address `key_ip`.
fn peer(key_ip: IpAddr, text: &str) -> Result<BgpValue, String> {
    let doc = parse_object(text)?;
    let written = string(opt(&doc, "ip").ok_or("ip is required")?, "ip")?;
    let ip = parse_addr(written).map_err(|e| format!("ip: {e}"))?;
    if ip != key_ip {
        return Err(format!(
            "ip {} does not match the key's address {key_ip}",
            show(written)
        ));
    }
    refuse("peer ip", ip, address_class)?;
    let as_num = as_number_json(opt(&doc, "as_num").ok_or("as_num is required")?, "as_num")?;
    Ok(BgpValue::Peer { as_num })
}

/// `ip_addr_v4` / `ip_addr_v6`: a plain address of family `version`, not
/// special-purpose; the empty string means none.
fn host_address(text: &str, version: u8) -> Result<Option<BgpValue>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let what = if version == 4 {
        "ip_addr_v4"
    } else {
        "ip_addr_v6"
    };
    let addr = parse_addr(text).map_err(|e| format!("{what}: {e}"))?;
    if family(&addr) != version {
        return Err(format!("{what}: {addr} is not an IPv{version} address"));
    }
    refuse(what, addr, address_class)?;
    Ok(Some(BgpValue::Address(addr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bgp_prefix_is_derived_from_the_data_prefix() {
        assert_eq!(bgp_prefix("/calico/v1").as_deref(), Some("/calico/bgp/v1"));
        assert_eq!(bgp_prefix("/calico/v1/").as_deref(), Some("/calico/bgp/v1"));
        assert_eq!(bgp_prefix("/x/y/v1").as_deref(), Some("/x/y/bgp/v1"));
        assert_eq!(bgp_prefix("/other"), None);
    }

    #[test]
    fn as_numbers_plain_and_asdot() {
        let ok = |s: &str| as_number_text(s, "as_num").map(AsNumber::get);
        assert_eq!(ok("64511"), Ok(64511));
        assert_eq!(ok("1"), Ok(1));
        assert_eq!(ok("4294967295"), Ok(u32::MAX));
        assert_eq!(ok("1.10"), Ok(65546));
        assert_eq!(ok("0.1"), Ok(1));
        assert_eq!(ok("65535.65535"), Ok(u32::MAX));
        for bad in [
            "",
            "0",
            "0.0",
            "-1",
            "+1",
            " 1",
            "1 ",
            "01",
            "4294967296",
            "99999999999",
            "1.65536",
            "65536.0",
            "1.",
            ".1",
            "1.2.3",
            "1e3",
            "0x10",
        ] {
            assert!(ok(bad).is_err(), "{bad:?} accepted");
        }
    }
}
