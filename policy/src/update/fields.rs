//! Small typed readers for JSON fields and address text, shared by the
//! document parsers. Each returns a human reason on failure.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value as Json};

use crate::model::Labels;
use crate::names::Id;

/// A JSON object.
pub type Object = Map<String, Json>;

/// Longest piece of datastore text quoted in a reason.
const SHOW_MAX: usize = 64;

/// Quotes datastore text for a reason: escaped (no raw newlines or control
/// characters reach a log line) and shortened.
pub fn show(s: &str) -> String {
    if s.chars().count() <= SHOW_MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(SHOW_MAX).collect();
        format!("{head:?}...")
    }
}

/// A short description of a JSON value's type, for reasons.
pub fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

/// Parses `text` as JSON.
pub fn parse_json(text: &str) -> Result<Json, String> {
    serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))
}

/// Parses `text` as a JSON object.
pub fn parse_object(text: &str) -> Result<Object, String> {
    match parse_json(text)? {
        Json::Object(o) => Ok(o),
        other => Err(format!(
            "expected a JSON object, found {}",
            type_name(&other)
        )),
    }
}

/// Field `name` of `obj`, with null treated as absent.
pub fn opt<'a>(obj: &'a Object, name: &str) -> Option<&'a Json> {
    obj.get(name).filter(|v| !v.is_null())
}

/// A string value.
pub fn string<'a>(v: &'a Json, what: &str) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("{what} must be a string, found {}", type_name(v)))
}

/// A list value.
pub fn list<'a>(v: &'a Json, what: &str) -> Result<&'a [Json], String> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("{what} must be a list, found {}", type_name(v)))
}

/// An optional list field (absent or null = empty).
pub fn opt_list<'a>(obj: &'a Object, name: &str) -> Result<&'a [Json], String> {
    opt(obj, name).map_or(Ok(&[][..]), |v| list(v, name))
}

/// An id.
pub fn id(v: &Json, what: &str) -> Result<Id, String> {
    parse_id(string(v, what)?, what)
}

/// Id text (the reason quotes it shortened, unlike [`crate::names::NameError`]).
pub fn parse_id(s: &str, what: &str) -> Result<Id, String> {
    Id::new(s).map_err(|_| format!("{what}: {} is not an id (^[A-Za-z0-9_.-]+$)", show(s)))
}

/// A list of ids.
pub fn id_list(v: &Json, what: &str) -> Result<Vec<Id>, String> {
    list(v, what)?
        .iter()
        .enumerate()
        .map(|(n, item)| id(item, &format!("{what}[{n}]")))
        .collect()
}

/// An object of string → string.
pub fn labels(v: &Json, what: &str) -> Result<Labels, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{what} must be an object, found {}", type_name(v)))?;
    obj.iter()
        .map(|(k, val)| {
            let val = string(val, &format!("{what}[{}]", show(k)))?;
            Ok((k.clone(), val.to_owned()))
        })
        .collect()
}

/// An unsigned integer in `lo..=hi` (JSON integers only: `80.0` and `"80"` are refused).
pub fn uint_in(v: &Json, lo: u64, hi: u64, what: &str) -> Result<u64, String> {
    match v.as_u64() {
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(format!(
            "{what} must be an integer from {lo} to {hi}, found {v}"
        )),
    }
}

/// An IP address written in full (`std` syntax: `10.0.1` and `010.0.0.1` are refused).
pub fn parse_addr(s: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("{} is not an IP address written in full", show(s)))
}

/// A CIDR written in full, or a bare address meaning its host net. The
/// result is as written (host bits kept); callers decide about `trunc()`.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let bad = || format!("{} is not a CIDR written in full", show(s));
    let Some((addr, len)) = s.split_once('/') else {
        return Ok(IpNet::from(parse_addr(s).map_err(|_| bad())?));
    };
    let addr = parse_addr(addr).map_err(|_| bad())?;
    let plain_decimal = !len.is_empty()
        && len.len() <= 3
        && len.bytes().all(|b| b.is_ascii_digit())
        && (len == "0" || !len.starts_with('0'));
    if !plain_decimal {
        return Err(bad());
    }
    let len: u8 = len.parse().map_err(|_| bad())?;
    IpNet::new(addr, len).map_err(|_| bad())
}

/// An address field that must be of the given family (`4` or `6`).
pub fn addr_of_family(v: &Json, version: u8, what: &str) -> Result<IpAddr, String> {
    let addr = parse_addr(string(v, what)?).map_err(|e| format!("{what}: {e}"))?;
    if family(&addr) == version {
        Ok(addr)
    } else {
        Err(format!("{what}: {addr} is not an IPv{version} address"))
    }
}

/// 4 or 6.
pub fn family(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 6,
    }
}

/// `profile_ids`, or the legacy `profile_id` as a one-element list; neither = empty.
pub fn profile_ids(obj: &Object) -> Result<Vec<Id>, String> {
    match (opt(obj, "profile_ids"), opt(obj, "profile_id")) {
        (Some(_), Some(_)) => Err("both profile_ids and legacy profile_id are set".into()),
        (Some(list), None) => id_list(list, "profile_ids"),
        (None, Some(one)) => Ok(vec![id(one, "profile_id")?]),
        (None, None) => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_must_be_written_in_full() {
        let net = |s: &str| parse_net(s).map(|n| n.to_string());
        assert_eq!(net("10.0.1.0/32"), Ok("10.0.1.0/32".into()));
        assert_eq!(net("10.0.0.1/24"), Ok("10.0.0.1/24".into()));
        assert_eq!(net("10.1.2.3"), Ok("10.1.2.3/32".into()));
        assert_eq!(net("2001:0::1"), Ok("2001::1/128".into()));
        assert_eq!(net("::/0"), Ok("::/0".into()));
        for bad in [
            "10.0.1/32",
            "192.168.1",
            "010.0.0.0/8",
            "10.0.0.0/08",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "10.0.0.0/8/8",
            "",
        ] {
            assert!(parse_net(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_or_hostile_text_is_escaped_and_shortened() {
        assert_eq!(show("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(1000);
        assert!(show(&long).len() < 80);
        assert!(show(&long).ends_with("..."));
    }
}
