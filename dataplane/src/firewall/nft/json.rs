//! Parses `nft -j list table inet margay` into an [`ObservedRuleset`].
//!
//! The slow but simple read-back (one process, whole table as JSON); the
//! netlink reader is the cheap one. Only our table is ever listed. Rules are
//! identified by their fingerprint comment, not by parsing expressions.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use margay_policy::desired::IpVersion;
use serde_json::Value;

use super::common::{range_to_nets, record_chain, RuleSeen};
use crate::firewall::model::{AddressSet, ObjectName, ObservedRuleset};
use crate::firewall::FirewallError;

fn parse_err(detail: impl Into<String>) -> FirewallError {
    FirewallError::Parse {
        what: "nft json".to_owned(),
        detail: detail.into(),
    }
}

/// Parses the JSON listing of our table.
pub fn parse_table(json: &str) -> Result<ObservedRuleset, FirewallError> {
    let doc: Value = serde_json::from_str(json).map_err(|e| parse_err(e.to_string()))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| parse_err("no nftables array"))?;
    let mut out = ObservedRuleset::default();
    for item in items {
        if let Some(c) = item.get("chain") {
            chain(c, &mut out);
        } else if let Some(r) = item.get("rule") {
            rule(r, &mut out);
        } else if let Some(s) = item.get("set") {
            set(s, &mut out)?;
        }
    }
    Ok(out)
}

fn chain(c: &Value, out: &mut ObservedRuleset) {
    if let Some(name) = c.get("name").and_then(Value::as_str) {
        record_chain(name, c.get("hook").is_some(), out);
    }
}

fn rule(r: &Value, out: &mut ObservedRuleset) {
    let Some(chain) = r.get("chain").and_then(Value::as_str) else {
        return;
    };
    let jump = || {
        r.get("expr")
            .and_then(Value::as_array)
            .and_then(|e| {
                e.iter()
                    .find_map(|x| x.get("jump")?.get("target")?.as_str())
            })
            .and_then(ObjectName::from_kernel)
    };
    let comment = r.get("comment").and_then(Value::as_str);
    if let Some(seen) = RuleSeen::of(chain, jump, comment) {
        seen.record(out);
    }
}

fn set(s: &Value, out: &mut ObservedRuleset) -> Result<(), FirewallError> {
    let Some(name) = s
        .get("name")
        .and_then(Value::as_str)
        .and_then(ObjectName::from_kernel)
    else {
        return Ok(());
    };
    let family = match s.get("type").and_then(Value::as_str) {
        Some("ipv4_addr") => IpVersion::V4,
        Some("ipv6_addr") => IpVersion::V6,
        // Not a set we would make; leave it alone.
        _ => return Ok(()),
    };
    let mut members = BTreeSet::new();
    if let Some(elems) = s.get("elem").and_then(Value::as_array) {
        for e in elems {
            element(e, &mut members)?;
        }
    }
    out.sets.insert(name, AddressSet { family, members });
    Ok(())
}

fn addr(v: &Value) -> Result<IpAddr, FirewallError> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| parse_err(format!("bad address {v}")))
}

fn element(e: &Value, members: &mut BTreeSet<IpNet>) -> Result<(), FirewallError> {
    if let Some(inner) = e.get("elem").and_then(|x| x.get("val")) {
        return element(inner, members);
    }
    if let Some(p) = e.get("prefix") {
        let a = addr(p.get("addr").unwrap_or(&Value::Null))?;
        let len = p
            .get("len")
            .and_then(Value::as_u64)
            .and_then(|l| u8::try_from(l).ok())
            .ok_or_else(|| parse_err(format!("bad prefix {p}")))?;
        let net = IpNet::new(a, len).map_err(|_| parse_err(format!("bad prefix {p}")))?;
        members.insert(net.trunc());
        return Ok(());
    }
    if let Some(r) = e.get("range").and_then(Value::as_array) {
        let (Some(lo), Some(hi)) = (r.first(), r.get(1)) else {
            return Err(parse_err(format!("bad range {e}")));
        };
        members.extend(range_to_nets(addr(lo)?, addr(hi)?)?);
        return Ok(());
    }
    members.insert(IpNet::from(addr(e)?));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::model::Hook;

    const SAMPLE: &str = r#"{"nftables": [
      {"metainfo": {"version": "1.0.6"}},
      {"table": {"family": "inet", "name": "margay", "handle": 1}},
      {"set": {"family": "inet", "name": "margay-t4-x", "table": "margay", "type": "ipv4_addr",
               "flags": ["interval"], "elem": ["10.0.0.1", {"prefix": {"addr": "10.1.0.0", "len": 16}},
               {"range": ["10.2.0.0", "10.2.0.3"]}]}},
      {"set": {"family": "inet", "name": "margay-t6-x", "table": "margay", "type": "ipv6_addr"}},
      {"chain": {"family": "inet", "table": "margay", "name": "margay-a", "handle": 1}},
      {"chain": {"family": "inet", "table": "margay", "name": "hook-forward", "handle": 2,
                 "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
      {"rule": {"family": "inet", "table": "margay", "chain": "margay-a", "handle": 6,
                "comment": "0123456789abcdef", "expr": [{"accept": null}]}},
      {"rule": {"family": "inet", "table": "margay", "chain": "margay-a", "handle": 7, "expr": [{"drop": null}]}},
      {"rule": {"family": "inet", "table": "margay", "chain": "hook-forward", "handle": 8,
                "expr": [{"jump": {"target": "margay-a"}}]}}
    ]}"#;

    #[test]
    fn parses_chains_fingerprints_sets_and_hooks() {
        let o = parse_table(SAMPLE).expect("parses");
        let a = ObjectName::fixed("margay-a");
        assert_eq!(o.chains.get(&a), Some(&vec![0x0123_4567_89ab_cdef, 0]));
        assert_eq!(o.chains.len(), 1, "hook chains are not listed as chains");
        assert_eq!(o.hooks.get(&Hook::Forward), Some(&a));
        let t4 = &o.sets[&ObjectName::fixed("margay-t4-x")];
        assert_eq!(t4.family, IpVersion::V4);
        let want: BTreeSet<IpNet> = ["10.0.0.1/32", "10.1.0.0/16", "10.2.0.0/30"]
            .iter()
            .map(|s| s.parse().expect("net"))
            .collect();
        assert_eq!(t4.members, want);
        assert!(o.sets[&ObjectName::fixed("margay-t6-x")].members.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_table("not json").is_err());
        assert!(parse_table("{}").is_err());
    }
}
