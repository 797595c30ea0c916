//! One datastore rule (an element of `inbound_rules` / `outbound_rules`) →
//! validated [`Rule`], including the family resolution that keeps a rule from
//! ever being widened.

use ipnet::IpNet;
use serde_json::Value as Json;

use crate::desired::{IcmpMatch, IpVersion, PortRange, Protocol, RuleAction};
use crate::model::{Rule, RuleSide};
use crate::selector::Selector;

use super::fields::{id, list, opt_list, parse_net, show, string, type_name, uint_in, Object};

/// Every key a rule may hold. Matches also have a `!`-prefixed form.
const PLAIN_KEYS: &[&str] = &["action", "ip_version", "log_prefix"];
const MATCH_KEYS: &[&str] = &[
    "protocol",
    "src_net",
    "dst_net",
    "src_tag",
    "dst_tag",
    "src_selector",
    "dst_selector",
    "src_ports",
    "dst_ports",
    "icmp_type",
    "icmp_code",
];

/// Longest accepted `log_prefix`.
pub const LOG_PREFIX_MAX: usize = 27;

/// Most rules accepted in one direction (`inbound_rules` or
/// `outbound_rules`) of one profile or policy. A longer list invalidates the
/// whole document: one document must not be able to stall a host's firewall
/// (every rule is a kernel rule, and many kinds of read-back grow faster than
/// linearly with a chain's length). Real profiles hold tens of rules.
pub const MAX_RULES_PER_DIRECTION: usize = 10_000;

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Parses the rule list `name` of a rules document (absent or null = empty).
pub fn rule_list(doc: &Object, name: &str) -> Result<Vec<Rule>, String> {
    let rules = opt_list(doc, name)?;
    if rules.len() > MAX_RULES_PER_DIRECTION {
        return Err(format!(
            "{name} has {} rules, more than the limit of {MAX_RULES_PER_DIRECTION} per direction",
            rules.len()
        ));
    }
    rules
        .iter()
        .enumerate()
        .map(|(n, r)| parse_rule(r).map_err(|e| format!("{name}[{n}]: {e}")))
        .collect()
}

/// Parses one rule object.
pub fn parse_rule(v: &Json) -> Result<Rule, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("a rule must be an object, found {}", type_name(v)))?;
    check_keys(obj)?;
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let protocol = get("protocol")
        .map(|p| parse_protocol(p, "protocol"))
        .transpose()?;
    let rule = Rule {
        action: get("action").map_or(Ok(RuleAction::Allow), action)?,
        ip_version: get("ip_version").map(ip_version).transpose()?,
        protocol,
        not_protocol: get("!protocol")
            .map(|p| parse_protocol(p, "!protocol"))
            .transpose()?,
        src: side(obj, "src", protocol)?,
        dst: side(obj, "dst", protocol)?,
        icmp: icmp(obj, "", protocol)?,
        not_icmp: icmp(obj, "!", protocol)?,
        log_prefix: get("log_prefix").map(log_prefix).transpose()?,
    };
    resolve_family(rule)
}

/// Refuses any key outside the contract, even one whose value is null.
fn check_keys(obj: &Object) -> Result<(), String> {
    for k in obj.keys() {
        let known = PLAIN_KEYS.contains(&k.as_str())
            || MATCH_KEYS.contains(&k.strip_prefix('!').unwrap_or(k));
        if !known {
            return Err(format!("unknown rule key {}", show(k)));
        }
    }
    Ok(())
}

fn action(v: &Json) -> Result<RuleAction, String> {
    match string(v, "action")? {
        "allow" => Ok(RuleAction::Allow),
        "deny" => Ok(RuleAction::Deny),
        "next-tier" => Ok(RuleAction::NextTier),
        "log" => Ok(RuleAction::Log),
        other => Err(format!(
            "action {} is not one of allow, deny, next-tier, log",
            show(other)
        )),
    }
}

fn ip_version(v: &Json) -> Result<IpVersion, String> {
    match v.as_u64() {
        Some(4) => Ok(IpVersion::V4),
        Some(6) => Ok(IpVersion::V6),
        _ => Err(format!("ip_version must be 4 or 6, found {v}")),
    }
}

/// A protocol name or number 1-255.
fn parse_protocol(v: &Json, what: &str) -> Result<Protocol, String> {
    if let Some(name) = v.as_str() {
        let n = match name {
            "tcp" => 6,
            "udp" => 17,
            "icmp" => ICMP,
            "icmpv6" => ICMPV6,
            "sctp" => 132,
            "udplite" => 136,
            _ => {
                return Err(format!(
                    "{what} {} is not one of tcp, udp, icmp, icmpv6, sctp, udplite or 1-255",
                    show(name)
                ))
            }
        };
        return Ok(Protocol(n));
    }
    let n = uint_in(v, 1, 255, what)?;
    Ok(Protocol(
        u8::try_from(n).map_err(|_| format!("{what} out of range"))?,
    ))
}

/// `src_*` or `dst_*` matches (and their `!` forms).
fn side(obj: &Object, dir: &str, protocol: Option<Protocol>) -> Result<RuleSide, String> {
    let get = |neg: &str, what: &str| {
        let key = format!("{neg}{dir}_{what}");
        obj.get(&key).filter(|v| !v.is_null()).map(|v| (key, v))
    };
    let net = |neg| get(neg, "net").map(|(k, v)| rule_net(v, &k)).transpose();
    let tag = |neg| get(neg, "tag").map(|(k, v)| id(v, &k)).transpose();
    let sel = |neg| {
        get(neg, "selector")
            .map(|(k, v)| selector(v, &k))
            .transpose()
    };
    let ports = |neg| {
        get(neg, "ports")
            .map(|(k, v)| ports(v, &k, protocol))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    Ok(RuleSide {
        net: net("")?,
        not_net: net("!")?,
        tag: tag("")?,
        not_tag: tag("!")?,
        selector: sel("")?,
        not_selector: sel("!")?,
        ports: ports("")?,
        not_ports: ports("!")?,
    })
}

/// A rule net, normalised to its network address (`10.0.0.1/24` → `10.0.0.0/24`).
fn rule_net(v: &Json, what: &str) -> Result<IpNet, String> {
    let net = parse_net(string(v, what)?).map_err(|e| format!("{what}: {e}"))?;
    Ok(net.trunc())
}

fn selector(v: &Json, what: &str) -> Result<Selector, String> {
    Selector::parse(string(v, what)?).map_err(|e| format!("{what}: {e}"))
}

/// A port list; only allowed with a positive port-carrying protocol.
fn ports(v: &Json, what: &str, protocol: Option<Protocol>) -> Result<Vec<PortRange>, String> {
    if !protocol.is_some_and(Protocol::has_ports) {
        return Err(format!(
            "{what} needs protocol tcp, udp, sctp or udplite (protocol is {})",
            describe_protocol(protocol)
        ));
    }
    list(v, what)?
        .iter()
        .enumerate()
        .map(|(n, p)| port_range(p).map_err(|e| format!("{what}[{n}]: {e}")))
        .collect()
}

/// An integer port or a `"lo:hi"` range string.
fn port_range(v: &Json) -> Result<PortRange, String> {
    if let Some(s) = v.as_str() {
        let (lo, hi) = s
            .split_once(':')
            .ok_or_else(|| format!("{} is not a \"lo:hi\" port range", show(s)))?;
        let (lo, hi) = (port_text(lo, s)?, port_text(hi, s)?);
        if lo > hi {
            return Err(format!("port range {} runs backwards", show(s)));
        }
        return Ok(PortRange { lo, hi });
    }
    let n = uint_in(v, 0, 65535, "a port")?;
    let p = u16::try_from(n).map_err(|_| format!("port {n} out of range"))?;
    Ok(PortRange { lo: p, hi: p })
}

/// One end of a `"lo:hi"` range: plain decimal 0-65535.
fn port_text(part: &str, whole: &str) -> Result<u16, String> {
    let digits = !part.is_empty() && part.len() <= 5 && part.bytes().all(|b| b.is_ascii_digit());
    match part.parse::<u16>() {
        Ok(p) if digits => Ok(p),
        _ => Err(format!(
            "port range {} needs two ports 0-65535",
            show(whole)
        )),
    }
}

/// `icmp_type`/`icmp_code` (neg = "") or `!icmp_type`/`!icmp_code` (neg = "!").
fn icmp(obj: &Object, neg: &str, protocol: Option<Protocol>) -> Result<Option<IcmpMatch>, String> {
    let type_key = format!("{neg}icmp_type");
    let code_key = format!("{neg}icmp_code");
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let (t, c) = (get(&type_key), get(&code_key));
    if t.is_none() && c.is_none() {
        return Ok(None);
    }
    if !matches!(protocol, Some(Protocol(ICMP | ICMPV6))) {
        let used = if t.is_some() { &type_key } else { &code_key };
        return Err(format!(
            "{used} needs protocol icmp or icmpv6 (protocol is {})",
            describe_protocol(protocol)
        ));
    }
    let t = t.ok_or_else(|| format!("{code_key} needs {type_key}"))?;
    let icmp_type = u8::try_from(uint_in(t, 0, 254, &type_key)?).map_err(|e| e.to_string())?;
    let code = c
        .map(|c| {
            uint_in(c, 0, 255, &code_key).and_then(|n| u8::try_from(n).map_err(|e| e.to_string()))
        })
        .transpose()?;
    Ok(Some(IcmpMatch { icmp_type, code }))
}

fn log_prefix(v: &Json) -> Result<String, String> {
    let s = string(v, "log_prefix")?;
    let ok = s.len() <= LOG_PREFIX_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "log_prefix {} must be at most {LOG_PREFIX_MAX} characters of [A-Za-z0-9 _.:-]",
            show(s)
        ))
    }
}

/// Sets `ip_version` from everything in the rule that implies a family, and
/// refuses a rule whose parts disagree.
fn resolve_family(mut rule: Rule) -> Result<Rule, String> {
    let mut implied: Vec<(String, IpVersion)> = Vec::new();
    if let Some(v) = rule.ip_version {
        implied.push(("ip_version".into(), v));
    }
    let nets = [
        ("src_net", rule.src.net),
        ("!src_net", rule.src.not_net),
        ("dst_net", rule.dst.net),
        ("!dst_net", rule.dst.not_net),
    ];
    for (name, net) in nets {
        if let Some(net) = net {
            implied.push((format!("{name} {net}"), net_family(&net)));
        }
    }
    match rule.protocol {
        Some(Protocol(ICMP)) => implied.push(("protocol icmp".into(), IpVersion::V4)),
        Some(Protocol(ICMPV6)) => implied.push(("protocol icmpv6".into(), IpVersion::V6)),
        _ => {}
    }
    if let Some((first, fam)) = implied.first() {
        if let Some((other, _)) = implied.iter().find(|(_, f)| f != fam) {
            return Err(format!("mixes IP families: {first} but {other}"));
        }
        rule.ip_version = Some(*fam);
    }
    Ok(rule)
}

/// A protocol for a reason: its name when it has one.
fn describe_protocol(p: Option<Protocol>) -> String {
    let Some(Protocol(n)) = p else {
        return "not set".into();
    };
    let name = match n {
        6 => "tcp",
        17 => "udp",
        ICMP => "icmp",
        ICMPV6 => "icmpv6",
        132 => "sctp",
        136 => "udplite",
        _ => return n.to_string(),
    };
    name.into()
}

fn net_family(net: &IpNet) -> IpVersion {
    match net {
        IpNet::V4(_) => IpVersion::V4,
        IpNet::V6(_) => IpVersion::V6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Result<Rule, String> {
        parse_rule(&serde_json::from_str(text).map_err(|e| e.to_string())?)
    }

    #[test]
    fn empty_rule_allows_both_families() {
        let r = rule("{}").expect("valid");
        assert_eq!(r.action, RuleAction::Allow);
        assert_eq!(r.ip_version, None);
        assert_eq!(r.protocol, None);
    }

    #[test]
    fn family_comes_from_nets_and_icmp() {
        let r = rule(r#"{"!dst_net": "fd00::/8"}"#).expect("valid");
        assert_eq!(r.ip_version, Some(IpVersion::V6));
        let r = rule(r#"{"protocol": 1}"#).expect("valid");
        assert_eq!(r.ip_version, Some(IpVersion::V4));
        let e = rule(r#"{"src_net": "10.0.0.0/8", "!dst_net": "fd00::/8"}"#).expect_err("mixed");
        assert!(e.contains("mixes IP families"), "{e}");
    }
}
