//! The base chains the hooks call: `margay-forward`, `margay-input`,
//! `margay-wl-to-host` and `margay-nat-post` (`margay-output` is lowered
//! with the host endpoints, as it exists only while one is bound).

use margay_policy::desired::{Direction, IpSetId, IpVersion, PortRange};

use super::dispatch::iface_match;
use margay_policy::names::InterfaceName;

use super::names::{
    host_chain, set_name, HostChain, CHAIN_DISPATCH_FROM, CHAIN_DISPATCH_TO, CHAIN_FORWARD,
    CHAIN_HEP_DST, CHAIN_INPUT, CHAIN_NAT_POST, CHAIN_WL_TO_HOST, FAMILIES,
};
use super::settings::EndpointToHostAction;
use super::{rule, Lowerer};
use crate::firewall::model::{Action, CtState, GenericRule, Hook, Match, ObjectName};

impl Lowerer {
    /// The forward and nat chains and the hooks every ruleset uses;
    /// `margay-input` and `margay-wl-to-host` list the bound host
    /// interfaces, so the host endpoint lowering writes them.
    pub(super) fn lower_base_chains(&mut self) {
        let chains = &mut self.ruleset.chains;
        chains.insert(
            ObjectName::fixed(CHAIN_FORWARD),
            forward_chain(&self.prefixes),
        );
        chains.insert(ObjectName::fixed(CHAIN_NAT_POST), nat_chain());
        let hooks = &mut self.ruleset.hooks;
        hooks.insert(Hook::Forward, ObjectName::fixed(CHAIN_FORWARD));
        hooks.insert(Hook::Input, ObjectName::fixed(CHAIN_INPUT));
        hooks.insert(Hook::NatPostrouting, ObjectName::fixed(CHAIN_NAT_POST));
    }
}

fn forward_chain(prefixes: &[String]) -> Vec<GenericRule> {
    let mut rules = vec![rule(
        vec![Match::ConnState(CtState::EstablishedRelated)],
        Action::Accept,
    )];
    let dirs = [Direction::Outbound, Direction::Inbound];
    for d in dirs {
        for p in prefixes {
            let m = vec![iface_match(d, p, true), Match::ConnState(CtState::Invalid)];
            rules.push(rule(m, Action::Drop));
        }
    }
    for (d, top) in [
        (Direction::Outbound, CHAIN_DISPATCH_FROM),
        (Direction::Inbound, CHAIN_DISPATCH_TO),
    ] {
        for p in prefixes {
            let m = vec![iface_match(d, p, true)];
            rules.push(rule(m, Action::Jump(ObjectName::fixed(top))));
        }
    }
    for d in dirs {
        for p in prefixes {
            rules.push(rule(vec![iface_match(d, p, true)], Action::Accept));
        }
    }
    rules
}

/// Workload interfaces to `margay-wl-to-host`, then each bound host
/// interface to its `margay-hi-<iface>`; the rest is not ours to judge.
pub(super) fn input_chain(prefixes: &[String], bound: &[InterfaceName]) -> Vec<GenericRule> {
    let workloads = prefixes.iter().map(|p| {
        let m = vec![Match::InInterface {
            name: p.clone(),
            prefix: true,
        }];
        rule(m, Action::Goto(ObjectName::fixed(CHAIN_WL_TO_HOST)))
    });
    let hosts = bound.iter().map(|iface| {
        let m = vec![Match::InInterface {
            name: iface.as_str().to_owned(),
            prefix: false,
        }];
        rule(m, Action::Goto(host_chain(HostChain::In, iface)))
    });
    workloads.chain(hosts).collect()
}

/// A port list of one port.
pub(super) fn one_port(port: u16) -> Vec<PortRange> {
    vec![PortRange { lo: port, hi: port }]
}

fn udp_ports(family: IpVersion, sport: u16, dport: u16) -> Vec<Match> {
    vec![
        Match::Family(family),
        Match::Protocol {
            proto: 17,
            negated: false,
        },
        Match::SrcPorts {
            ports: one_port(sport),
            negated: false,
        },
        Match::DstPorts {
            ports: one_port(dport),
            negated: false,
        },
    ]
}

/// Traffic from a workload to the host. With `hep_dst` (`Return` while a
/// host interface is bound), what the workload's outbound policy let
/// through then meets the inbound program of the host endpoint owning the
/// destination address.
pub(super) fn wl_to_host_chain(action: EndpointToHostAction, hep_dst: bool) -> Vec<GenericRule> {
    let mut rules = vec![
        rule(
            vec![Match::ConnState(CtState::EstablishedRelated)],
            Action::Accept,
        ),
        rule(vec![Match::ConnState(CtState::Invalid)], Action::Drop),
    ];
    rules.extend([130u8, 131, 132, 133, 135, 136].map(accept_icmpv6));
    rules.push(rule(udp_ports(IpVersion::V4, 68, 67), Action::Accept));
    rules.push(rule(udp_ports(IpVersion::V6, 546, 547), Action::Accept));
    let dispatch = || rule(vec![], Action::Jump(ObjectName::fixed(CHAIN_DISPATCH_FROM)));
    match action {
        EndpointToHostAction::Drop => rules.push(rule(vec![], Action::Drop)),
        // The dispatch drops or returns; a return leaves our chains and the
        // host's own rules decide.
        EndpointToHostAction::Return => {
            rules.push(dispatch());
            if hep_dst {
                rules.push(rule(vec![], Action::Jump(ObjectName::fixed(CHAIN_HEP_DST))));
            }
        }
        EndpointToHostAction::Accept => {
            rules.push(dispatch());
            rules.push(rule(vec![], Action::Accept));
        }
    }
    rules
}

fn nat_chain() -> Vec<GenericRule> {
    FAMILIES
        .iter()
        .map(|&f| {
            let m = vec![
                Match::Family(f),
                Match::SrcSet {
                    set: set_name(&IpSetId::MasqueradePools, f),
                    negated: false,
                },
                Match::DstSet {
                    set: set_name(&IpSetId::AllPools, f),
                    negated: true,
                },
            ];
            rule(m, Action::Masquerade)
        })
        .collect()
}

/// Accepts ICMPv6 of one type (any code): neighbour and router discovery,
/// MLD, which IPv6 cannot work without.
pub(super) fn accept_icmpv6(icmp_type: u8) -> GenericRule {
    let m = vec![
        Match::Family(IpVersion::V6),
        Match::Protocol {
            proto: 58,
            negated: false,
        },
        Match::Icmp {
            icmp_type,
            code: None,
            negated: false,
        },
    ];
    rule(m, Action::Accept)
}
