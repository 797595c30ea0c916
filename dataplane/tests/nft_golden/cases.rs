//! The golden cases: a handful of representative rules, chains and sets,
//! as one batch of [`FirewallOp`]s.

use margay_dataplane::firewall::model::{Action, CtState, GenericRule, Hook, Match, ObjectName};
use margay_dataplane::firewall::FirewallOp;
use margay_policy::desired::{IpVersion, PortRange};

/// The chain holding the golden rules.
pub const CHAIN: &str = "margay-golden";

fn name(s: &str) -> ObjectName {
    ObjectName::from_kernel(s).expect("one of our names")
}

fn rule(matches: Vec<Match>, action: Action) -> GenericRule {
    GenericRule { matches, action }
}

fn v4() -> Match {
    Match::Family(IpVersion::V4)
}

fn v6() -> Match {
    Match::Family(IpVersion::V6)
}

fn ports(list: &[(u16, u16)], negated: bool) -> Match {
    Match::DstPorts {
        ports: list.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect(),
        negated,
    }
}

fn tcp() -> Match {
    Match::Protocol {
        proto: 6,
        negated: false,
    }
}

/// The golden rules, in chain order.
pub fn rules() -> Vec<GenericRule> {
    let mut all = verdict_and_set_rules();
    all.extend(more_rules());
    all
}

/// Plain verdicts, set lookups, ports, conntrack state and interfaces.
fn verdict_and_set_rules() -> Vec<GenericRule> {
    let set = |s: &str, negated| Match::SrcSet {
        set: name(s),
        negated,
    };
    let iface = |n: &str, prefix| Match::InInterface {
        name: n.to_owned(),
        prefix,
    };
    vec![
        rule(vec![], Action::Accept),
        rule(vec![v4()], Action::Drop),
        rule(vec![v4(), set("margay-t4-web", false)], Action::Accept),
        rule(vec![v6(), set("margay-t6-web", true)], Action::Drop),
        rule(
            vec![v4(), tcp(), ports(&[(8000, 8080)], false)],
            Action::Drop,
        ),
        rule(
            vec![v4(), tcp(), ports(&[(8000, 8080)], true)],
            Action::Drop,
        ),
        rule(vec![v4(), tcp(), ports(&[(22, 22)], false)], Action::Accept),
        rule(
            vec![v6(), tcp(), ports(&[(80, 80), (8000, 8080)], false)],
            Action::Accept,
        ),
        rule(
            vec![Match::ConnState(CtState::EstablishedRelated)],
            Action::Accept,
        ),
        rule(vec![Match::ConnState(CtState::Invalid)], Action::Drop),
        rule(
            vec![iface("cali", true)],
            Action::Jump(name("margay-target")),
        ),
        rule(
            vec![iface("eth0", false)],
            Action::Goto(name("margay-target")),
        ),
    ]
}

/// Address, ICMP and mark rules, and the actions that do not end a rule.
fn more_rules() -> Vec<GenericRule> {
    vec![
        rule(
            vec![Match::SrcNet {
                net: "10.1.2.3/32".parse().expect("net"),
                negated: false,
            }],
            Action::Return,
        ),
        rule(
            vec![Match::DstNet {
                net: "fd00::1/128".parse().expect("net"),
                negated: true,
            }],
            Action::Drop,
        ),
        rule(
            vec![Match::SrcNet {
                net: "10.1.0.0/16".parse().expect("net"),
                negated: false,
            }],
            Action::Accept,
        ),
        rule(
            vec![
                v6(),
                Match::Protocol {
                    proto: 58,
                    negated: false,
                },
                Match::Icmp {
                    icmp_type: 128,
                    code: None,
                    negated: false,
                },
            ],
            Action::Accept,
        ),
        rule(
            vec![
                v4(),
                Match::Protocol {
                    proto: 1,
                    negated: false,
                },
                Match::Icmp {
                    icmp_type: 8,
                    code: Some(0),
                    negated: true,
                },
            ],
            Action::Drop,
        ),
        rule(
            vec![Match::Mark {
                value: 0x0100_0000,
                mask: 0x0100_0000,
            }],
            Action::Log {
                prefix: "margay drop".to_owned(),
            },
        ),
        rule(
            vec![],
            Action::SetMark {
                value: 0x0100_0000,
                mask: 0x0100_0000,
            },
        ),
        rule(vec![], Action::Continue),
    ]
}

/// The whole golden batch: two named sets with members, the jump target,
/// the golden chain and its hook.
pub fn ops() -> Vec<FirewallOp> {
    let nets = |v: &[&str]| v.iter().map(|s| s.parse().expect("net")).collect();
    vec![
        FirewallOp::CreateSet {
            name: name("margay-t4-web"),
            family: IpVersion::V4,
        },
        FirewallOp::AddMembers {
            set: name("margay-t4-web"),
            family: IpVersion::V4,
            members: nets(&["10.0.0.1/32", "10.2.0.0/24"]),
        },
        FirewallOp::CreateSet {
            name: name("margay-t6-web"),
            family: IpVersion::V6,
        },
        FirewallOp::AddMembers {
            set: name("margay-t6-web"),
            family: IpVersion::V6,
            members: nets(&["fd00::/64"]),
        },
        FirewallOp::ReplaceChain {
            name: name("margay-target"),
            rules: vec![],
        },
        FirewallOp::ReplaceChain {
            name: name(CHAIN),
            rules: rules(),
        },
        FirewallOp::AttachHook {
            hook: Hook::Forward,
            chain: name(CHAIN),
        },
    ]
}
