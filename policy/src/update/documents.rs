//! Profile, tier, policy, pool and host-address documents.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value as Json;

use crate::model::{IpPool, Labels, Order, Policy, ProfileRules, TierMetadata, Value};
use crate::names::Id;
use crate::selector::Selector;

use super::fields::{
    id_list, labels, opt, parse_addr, parse_json, parse_net, parse_object, show, string, type_name,
    Object,
};
use super::rule::rule_list;
use super::special::{address_class, refuse};

/// `/policy/profile/<id>/rules`: extra top-level keys (calicoctl's `"id"`) are ignored.
pub fn profile_rules(text: &str) -> Result<ProfileRules, String> {
    let doc = parse_object(text)?;
    Ok(ProfileRules {
        inbound: rule_list(&doc, "inbound_rules")?,
        outbound: rule_list(&doc, "outbound_rules")?,
    })
}

/// `/policy/profile/<id>/tags`: a list of ids.
pub fn profile_tags(text: &str) -> Result<Vec<Id>, String> {
    id_list(&parse_json(text)?, "tags")
}

/// `/policy/profile/<id>/labels`: string → string.
pub fn profile_labels(text: &str) -> Result<Labels, String> {
    labels(&parse_json(text)?, "labels")
}

/// `/policy/tier/<tier>/metadata`.
pub fn tier_metadata(text: &str) -> Result<TierMetadata, String> {
    let doc = parse_object(text)?;
    Ok(TierMetadata {
        order: order(&doc)?,
    })
}

/// `/policy/tier/<tier>/policy/<id>`: `selector` is required (a missing one
/// must not turn into "every endpoint").
pub fn policy(text: &str) -> Result<Policy, String> {
    let doc = parse_object(text)?;
    let sel = opt(&doc, "selector").ok_or("selector is required")?;
    let selector =
        Selector::parse(string(sel, "selector")?).map_err(|e| format!("selector: {e}"))?;
    Ok(Policy {
        selector,
        order: order(&doc)?,
        inbound: rule_list(&doc, "inbound_rules")?,
        outbound: rule_list(&doc, "outbound_rules")?,
    })
}

/// `order`: a finite number, `"default"`, or absent (= default).
fn order(doc: &Object) -> Result<Order, String> {
    match opt(doc, "order") {
        None => Ok(Order::Default),
        Some(Json::String(s)) if s == "default" => Ok(Order::Default),
        Some(Json::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(Order::Number(f)),
            _ => Err(format!("order {n} is not a finite number")),
        },
        Some(other) => Err(format!(
            "order must be a number or \"default\", found {}",
            match other {
                Json::String(s) => show(s),
                v => type_name(v).to_owned(),
            }
        )),
    }
}

/// `/ipam/v4|v6/pool/<cidr>`: `cidr` must equal the key's network;
/// `masquerade` defaults to false; other fields are ignored.
pub fn pool(key_cidr: IpNet, text: &str) -> Result<IpPool, String> {
    let doc = parse_object(text)?;
    let written = string(opt(&doc, "cidr").ok_or("cidr is required")?, "cidr")?;
    let cidr = parse_net(written).map_err(|e| format!("cidr: {e}"))?;
    if !written.contains('/') || cidr != key_cidr {
        return Err(format!(
            "cidr {} does not match the key's network {key_cidr}",
            show(written)
        ));
    }
    let masquerade = match opt(&doc, "masquerade") {
        None => false,
        Some(Json::Bool(b)) => *b,
        Some(other) => {
            return Err(format!(
                "masquerade must be true or false, found {}",
                type_name(other)
            ))
        }
    };
    Ok(IpPool {
        cidr: key_cidr,
        masquerade,
    })
}

/// `/host/<host>/bird_ip`: a plain unicast IPv4 address (not loopback,
/// unspecified, multicast, broadcast or link-local: routes via such a next
/// hop fail or go nowhere); the empty string means none.
pub fn host_ip(text: &str) -> Result<Option<Value>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    match parse_addr(text)? {
        addr @ IpAddr::V4(_) => {
            refuse("bird_ip", addr, address_class)?;
            Ok(Some(Value::HostIp(addr)))
        }
        IpAddr::V6(a) => Err(format!("bird_ip {a} is not an IPv4 address")),
    }
}
