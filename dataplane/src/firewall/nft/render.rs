//! Renders [`FirewallOp`]s as `nft -f` script text for table `inet margay`.
//!
//! Used by the `nft -f -` write path, by tests that compare against the
//! raw tool, and by the benchmark. Every value that reaches the text is
//! typed (addresses, numbers) or checked against a safe charset here, so
//! nothing can break out of a token or a quoted string.

use std::fmt::Write as _;

use ipnet::IpNet;
use margay_policy::desired::{IpVersion, PortRange};

use super::common::{
    check_iface, check_log_prefix, check_ports, fingerprint_comment, hook_chain, hook_spec,
    merge_ports, need_family, net_family, TABLE,
};
use crate::firewall::model::{Action, CtState, GenericRule, Match};
use crate::firewall::{FirewallError, FirewallOp};

/// The whole batch for `ops`, one transaction when fed to `nft -f`.
pub fn render_batch(ops: &[FirewallOp]) -> Result<String, FirewallError> {
    let mut out = format!("add table inet {TABLE}\n");
    // Declare every chain we fill first, so jumps between them resolve in
    // any order.
    for op in ops {
        if let FirewallOp::ReplaceChain { name, .. } = op {
            let _ = writeln!(out, "add chain inet {TABLE} {name}");
        }
    }
    // A deleted chain may be jumped to by another deleted chain or by a
    // chain rewritten in this batch: flush every deleted chain first and
    // delete chains last, whatever the order of `ops`.
    let is_delete = |op: &&FirewallOp| matches!(op, FirewallOp::DeleteChain { .. });
    for op in ops.iter().filter(is_delete) {
        if let FirewallOp::DeleteChain { name } = op {
            let _ = writeln!(out, "flush chain inet {TABLE} {name}");
        }
    }
    for op in ops.iter().filter(|o| !is_delete(o)) {
        render_op(op, &mut out)?;
    }
    for op in ops.iter().filter(is_delete) {
        render_op(op, &mut out)?;
    }
    Ok(out)
}

fn render_op(op: &FirewallOp, out: &mut String) -> Result<(), FirewallError> {
    match op {
        FirewallOp::CreateSet { name, family } => {
            let ty = match family {
                IpVersion::V4 => "ipv4_addr",
                IpVersion::V6 => "ipv6_addr",
            };
            let _ = writeln!(
                out,
                "add set inet {TABLE} {name} {{ type {ty}; flags interval; }}"
            );
        }
        FirewallOp::DeleteSet { name } => {
            let _ = writeln!(out, "delete set inet {TABLE} {name}");
        }
        FirewallOp::AddMembers { set, members, .. } => {
            element_lines("add", set.as_str(), members.iter(), out);
        }
        FirewallOp::RemoveMembers { set, members, .. } => {
            element_lines("delete", set.as_str(), members.iter(), out);
        }
        FirewallOp::ReplaceChain { name, rules } => {
            let _ = writeln!(out, "flush chain inet {TABLE} {name}");
            for r in rules {
                let _ = writeln!(out, "add rule inet {TABLE} {name} {}", render_rule(r)?);
            }
        }
        FirewallOp::DeleteChain { name } => {
            let _ = writeln!(out, "delete chain inet {TABLE} {name}");
        }
        FirewallOp::AttachHook { hook, chain } => {
            let base = hook_chain(*hook);
            let _ = writeln!(
                out,
                "add chain inet {TABLE} {base} {{ {}; }}",
                hook_spec(*hook)
            );
            let _ = writeln!(out, "flush chain inet {TABLE} {base}");
            let _ = writeln!(out, "add rule inet {TABLE} {base} jump {chain}");
        }
        FirewallOp::DetachHook { hook, .. } => {
            // Declared first, so the delete works even if it is gone.
            let base = hook_chain(*hook);
            let _ = writeln!(
                out,
                "add chain inet {TABLE} {base} {{ {}; }}",
                hook_spec(*hook)
            );
            let _ = writeln!(out, "flush chain inet {TABLE} {base}");
            let _ = writeln!(out, "delete chain inet {TABLE} {base}");
        }
    }
    Ok(())
}

/// Set elements, a few thousand per line to keep lines reasonable.
fn element_lines<'a>(
    verb: &str,
    set: &str,
    members: impl Iterator<Item = &'a IpNet>,
    out: &mut String,
) {
    let members: Vec<&IpNet> = members.collect();
    for chunk in members.chunks(4096) {
        let _ = write!(out, "{verb} element inet {TABLE} {set} {{ ");
        for (i, m) in chunk.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            push_net(m, out);
        }
        out.push_str(" }\n");
    }
}

fn push_net(net: &IpNet, out: &mut String) {
    if net.prefix_len() == net.max_prefix_len() {
        let _ = write!(out, "{}", net.addr());
    } else {
        let _ = write!(out, "{}", net.trunc());
    }
}

/// One rule, with our fingerprint as its comment.
pub fn render_rule(r: &GenericRule) -> Result<String, FirewallError> {
    let family = r.matches.iter().find_map(|m| match m {
        Match::Family(f) => Some(*f),
        _ => None,
    });
    let mut s = String::new();
    for m in &r.matches {
        render_match(m, family, &mut s)?;
        s.push(' ');
    }
    render_action(&r.action, &mut s)?;
    let _ = write!(s, " comment \"{}\"", fingerprint_comment(r.fingerprint()));
    Ok(s)
}

fn neq(negated: bool) -> &'static str {
    if negated {
        "!= "
    } else {
        ""
    }
}

fn ip_kw(family: IpVersion) -> &'static str {
    match family {
        IpVersion::V4 => "ip",
        IpVersion::V6 => "ip6",
    }
}

fn render_match(m: &Match, family: Option<IpVersion>, s: &mut String) -> Result<(), FirewallError> {
    match m {
        Match::Family(f) => {
            let _ = write!(
                s,
                "meta nfproto {}",
                if *f == IpVersion::V4 { "ipv4" } else { "ipv6" }
            );
        }
        Match::InInterface { name, prefix } | Match::OutInterface { name, prefix } => {
            check_iface(name)?;
            let kw = if matches!(m, Match::InInterface { .. }) {
                "iifname"
            } else {
                "oifname"
            };
            let star = if *prefix { "*" } else { "" };
            let _ = write!(s, "{kw} \"{name}{star}\"");
        }
        Match::Protocol { proto, negated } => {
            let _ = write!(s, "meta l4proto {}{proto}", neq(*negated));
        }
        Match::SrcNet { net, negated } | Match::DstNet { net, negated } => {
            let dir = if matches!(m, Match::SrcNet { .. }) {
                "saddr"
            } else {
                "daddr"
            };
            let kw = ip_kw(net_family(net));
            let _ = write!(s, "{kw} {dir} {}", neq(*negated));
            push_net(net, s);
        }
        Match::SrcSet { set, negated } | Match::DstSet { set, negated } => {
            let dir = if matches!(m, Match::SrcSet { .. }) {
                "saddr"
            } else {
                "daddr"
            };
            let kw = ip_kw(need_family(family, "set match")?);
            let _ = write!(s, "{kw} {dir} {}@{set}", neq(*negated));
        }
        Match::SrcPorts { ports, negated } | Match::DstPorts { ports, negated } => {
            let dir = if matches!(m, Match::SrcPorts { .. }) {
                "sport"
            } else {
                "dport"
            };
            let _ = write!(s, "th {dir} {}", neq(*negated));
            push_ports(ports, s)?;
        }
        Match::Icmp {
            icmp_type,
            code,
            negated,
        } => render_icmp(
            need_family(family, "icmp match")?,
            *icmp_type,
            *code,
            *negated,
            s,
        ),
        Match::Mark { value, mask } => {
            let _ = write!(s, "meta mark & 0x{mask:08x} == 0x{value:08x}");
        }
        Match::ConnState(CtState::EstablishedRelated) => s.push_str("ct state established,related"),
        Match::ConnState(CtState::Invalid) => s.push_str("ct state invalid"),
    }
    Ok(())
}

fn render_icmp(family: IpVersion, ty: u8, code: Option<u8>, negated: bool, s: &mut String) {
    let kw = match family {
        IpVersion::V4 => "icmp",
        IpVersion::V6 => "icmpv6",
    };
    match (code, negated) {
        (None, _) => {
            let _ = write!(s, "{kw} type {}{ty}", neq(negated));
        }
        (Some(c), false) => {
            let _ = write!(s, "{kw} type {ty} {kw} code {c}");
        }
        // "not (type and code)": type and code are the first two bytes of
        // the ICMP header, so one 16-bit compare says it exactly.
        (Some(c), true) => {
            let _ = write!(
                s,
                "@th,0,16 != 0x{:04x}",
                (u16::from(ty) << 8) | u16::from(c)
            );
        }
    }
}

fn push_ports(ports: &[PortRange], s: &mut String) -> Result<(), FirewallError> {
    let one = |p: &PortRange| {
        if p.lo == p.hi {
            p.lo.to_string()
        } else {
            format!("{}-{}", p.lo, p.hi)
        }
    };
    check_ports(ports)?;
    if ports.len() == 1 {
        s.push_str(&one(&ports[0]));
    } else {
        let items: Vec<String> = merge_ports(ports).iter().map(one).collect();
        let _ = write!(s, "{{ {} }}", items.join(", "));
    }
    Ok(())
}

fn render_action(a: &Action, s: &mut String) -> Result<(), FirewallError> {
    match a {
        Action::Accept => s.push_str("accept"),
        Action::Drop => s.push_str("drop"),
        Action::Return => s.push_str("return"),
        Action::Jump(c) => {
            let _ = write!(s, "jump {c}");
        }
        Action::Goto(c) => {
            let _ = write!(s, "goto {c}");
        }
        Action::Log { prefix } => {
            check_log_prefix(prefix)?;
            let _ = write!(s, "log prefix \"{prefix}\"");
        }
        Action::SetMark { value, mask } => {
            let keep = !mask;
            if *value == 0 {
                let _ = write!(s, "meta mark set meta mark & 0x{keep:08x}");
            } else {
                let _ = write!(s, "meta mark set meta mark & 0x{keep:08x} | 0x{value:08x}");
            }
        }
        Action::Masquerade => s.push_str("masquerade"),
        Action::Continue => s.push_str("counter"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::model::{Hook, ObjectName};
    use std::collections::BTreeSet;

    fn rule(matches: Vec<Match>, action: Action) -> GenericRule {
        GenericRule { matches, action }
    }

    #[test]
    fn rules_render_with_fingerprint_comments() {
        let r = rule(
            vec![
                Match::Family(IpVersion::V4),
                Match::Protocol {
                    proto: 6,
                    negated: false,
                },
                Match::SrcSet {
                    set: ObjectName::generate("t4", "web"),
                    negated: false,
                },
                Match::DstPorts {
                    ports: vec![
                        PortRange { lo: 80, hi: 80 },
                        PortRange { lo: 8000, hi: 8080 },
                    ],
                    negated: true,
                },
            ],
            Action::SetMark {
                value: 0x0100_0000,
                mask: 0x0100_0000,
            },
        );
        let text = render_rule(&r).expect("renders");
        assert_eq!(
            text,
            format!(
                "meta nfproto ipv4 meta l4proto 6 ip saddr @margay-t4-web th dport != {{ 80, 8000-8080 }} \
                 meta mark set meta mark & 0xfeffffff | 0x01000000 comment \"{:016x}\"",
                r.fingerprint()
            )
        );
    }

    #[test]
    fn hostile_values_are_refused() {
        let bad_iface = rule(
            vec![Match::InInterface {
                name: "cali\" drop".to_owned(),
                prefix: false,
            }],
            Action::Accept,
        );
        assert!(render_rule(&bad_iface).is_err());
        let bad_log = rule(
            vec![],
            Action::Log {
                prefix: "x\"; flush ruleset".to_owned(),
            },
        );
        assert!(render_rule(&bad_log).is_err());
        let no_family = rule(
            vec![Match::SrcSet {
                set: ObjectName::generate("t4", "a"),
                negated: false,
            }],
            Action::Accept,
        );
        assert!(render_rule(&no_family).is_err());
    }

    #[test]
    fn icmp_negation_with_code_is_one_compare() {
        let r = rule(
            vec![
                Match::Family(IpVersion::V4),
                Match::Icmp {
                    icmp_type: 8,
                    code: Some(0),
                    negated: true,
                },
            ],
            Action::Drop,
        );
        assert!(render_rule(&r)
            .expect("renders")
            .contains("@th,0,16 != 0x0800 drop"));
    }

    #[test]
    fn batches_declare_chains_first_and_flush_before_deleting() {
        let a = ObjectName::fixed("margay-a");
        let b = ObjectName::fixed("margay-b");
        let ops = vec![
            FirewallOp::CreateSet {
                name: ObjectName::fixed("margay-pools4"),
                family: IpVersion::V4,
            },
            FirewallOp::AddMembers {
                set: ObjectName::fixed("margay-pools4"),
                family: IpVersion::V4,
                members: BTreeSet::from([
                    "10.0.0.0/16".parse().expect("net"),
                    "10.1.0.1/32".parse().expect("net"),
                ]),
            },
            FirewallOp::ReplaceChain {
                name: a.clone(),
                rules: vec![rule(vec![], Action::Accept)],
            },
            FirewallOp::AttachHook {
                hook: Hook::Forward,
                chain: a.clone(),
            },
            FirewallOp::DeleteChain { name: b.clone() },
        ];
        let text = render_batch(&ops).expect("renders");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "add table inet margay");
        assert_eq!(lines[1], "add chain inet margay margay-a");
        assert!(text.contains("add element inet margay margay-pools4 { 10.0.0.0/16, 10.1.0.1 }"));
        let flush_b = text
            .find("flush chain inet margay margay-b")
            .expect("flush");
        let del_b = text
            .find("delete chain inet margay margay-b")
            .expect("delete");
        assert!(flush_b < del_b);
        assert!(text.contains("type filter hook forward priority filter; policy accept;"));
    }

    #[test]
    fn a_detached_hook_loses_its_base_chain() {
        let ops = vec![FirewallOp::DetachHook {
            hook: Hook::Output,
            chain: ObjectName::fixed("margay-output"),
        }];
        let text = render_batch(&ops).expect("renders");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "add table inet margay",
                "add chain inet margay hook-output { type filter hook output priority filter; policy accept; }",
                "flush chain inet margay hook-output",
                "delete chain inet margay hook-output",
            ]
        );
    }
}
