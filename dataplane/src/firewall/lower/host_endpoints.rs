//! Host endpoints: the chains guarding the host's own interfaces.
//!
//! Per bound interface X (see [`super::host_binding`]): `margay-hi-X`
//! (from `margay-input`) and `margay-ho-X` (from `margay-output`) accept
//! established traffic and ICMPv6 neighbour discovery, run the failsafe
//! chain, then the host endpoint's program (`margay-hin-X` /
//! `margay-hout-X`, lowered exactly like a workload's), and accept what it
//! accepted. The failsafe chains `margay-fsafe-in` / `margay-fsafe-out`
//! accept the failsafe ports and the agent's own datastore endpoints before
//! any policy. With `DefaultEndpointToHostAction = RETURN`, workload
//! traffic to an address of a bound interface goes through
//! `margay-hep-dst` to that interface's inbound program (no failsafe for
//! workloads). While nothing is bound none of these chains exist and the
//! output hook is not used, so hosts without host endpoints see exactly the
//! workload-only ruleset.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use ipnet::IpNet;
use margay_policy::desired::{DesiredState, DirectionProgram, LocalHostEndpoint, RuleSetId};
use margay_policy::names::{Id, InterfaceName};

use super::base::{accept_icmpv6, input_chain, one_port, wl_to_host_chain};
use super::host_binding::{bind_host_endpoints, Binding};
use super::names::{
    host_chain, rule_set_chain, HostChain, CHAIN_FAILSAFE_IN, CHAIN_FAILSAFE_OUT, CHAIN_HEP_DST,
    CHAIN_INPUT, CHAIN_OUTPUT, CHAIN_WL_TO_HOST,
};
use super::program::{lower_direction, rule_sets_used};
use super::settings::{EndpointToHostAction, FirewallSettings};
use super::{rule, InterfaceAddresses, Lowerer};
use crate::firewall::diff::DirtyNames;
use crate::firewall::model::{net_family, Action, CtState, GenericRule, Hook, Match, ObjectName};

/// Protocols whose failsafe entries can name a port.
const PORT_PROTOCOLS: [u8; 3] = [6, 17, 132];
/// TCP, the protocol of the datastore endpoints.
const TCP: u8 = 6;

/// Which way a host chain looks at traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Reaching the host.
    In,
    /// Leaving the host.
    Out,
}

impl Lowerer {
    /// Tells the lowering which addresses each kernel interface carries now
    /// (kept across [`Lowerer::lower_all`]). Returns the names a binding
    /// change touched (empty before the first full lowering).
    pub fn set_interface_addresses(&mut self, ifaces: &InterfaceAddresses) -> DirtyNames {
        let mut dirty = DirtyNames::default();
        if &self.iface_addrs == ifaces {
            return dirty;
        }
        self.iface_addrs = ifaces.clone();
        if self.settings.is_some() {
            self.relower_hosts(&BTreeSet::new(), &mut dirty);
        }
        dirty
    }

    /// The interface addresses last told (see [`Self::set_interface_addresses`]).
    pub fn interface_addresses(&self) -> &InterfaceAddresses {
        &self.iface_addrs
    }

    /// True when the state last lowered has host endpoints.
    pub fn has_host_endpoints(&self) -> bool {
        !self.host_endpoints.is_empty()
    }

    /// The bound interfaces with the host endpoint governing each.
    pub fn host_bindings(&self) -> &BTreeMap<InterfaceName, Binding> {
        &self.bindings
    }

    /// Copies the host endpoints named by `ids` from `desired` (removing
    /// the ones it no longer has).
    pub(super) fn take_host_endpoints(&mut self, desired: &DesiredState, ids: &BTreeSet<Id>) {
        for id in ids {
            match desired.host_endpoints.get(id) {
                Some(h) => {
                    self.host_endpoints.insert(id.clone(), h.clone());
                }
                None => {
                    self.host_endpoints.remove(id);
                }
            }
        }
    }

    /// The host endpoints whose programs use the rule set `id`.
    pub(super) fn host_users_of(&self, id: &RuleSetId) -> Vec<Id> {
        self.host_endpoints
            .values()
            .filter(|h| uses(&h.program.inbound, id) || uses(&h.program.outbound, id))
            .map(|h| h.id.clone())
            .collect()
    }

    /// Re-binds the host endpoints and re-lowers the chains of every
    /// interface whose binding changed or whose host endpoint is in
    /// `touched`, then the few fixed chains that list bound interfaces.
    pub(super) fn relower_hosts(&mut self, touched: &BTreeSet<Id>, dirty: &mut DirtyNames) {
        let Some(settings) = self.settings.clone() else {
            return;
        };
        let bindings = bind_host_endpoints(&self.host_endpoints, &self.iface_addrs, &self.prefixes);
        let ifaces: BTreeSet<InterfaceName> = self
            .bindings
            .keys()
            .chain(bindings.keys())
            .cloned()
            .collect();
        for iface in &ifaces {
            let now = bindings.get(iface);
            let changed = self.bindings.get(iface) != now;
            if changed || now.is_some_and(|b| touched.contains(&b.id)) {
                self.relower_host_interface(iface, now.map(|b| &b.id), dirty);
            }
        }
        self.bindings = bindings;
        self.relower_host_fixed_chains(&settings, dirty);
    }

    fn relower_host_interface(
        &mut self,
        iface: &InterfaceName,
        id: Option<&Id>,
        dirty: &mut DirtyNames,
    ) {
        let Some(hep) = id.and_then(|id| self.host_endpoints.get(id)) else {
            for kind in HostChain::ALL {
                self.drop_chain(host_chain(kind, iface), dirty);
            }
            return;
        };
        let [inbound, outbound] = self.host_programs(hep);
        self.set_chain(host_chain(HostChain::InProgram, iface), inbound, dirty);
        self.set_chain(host_chain(HostChain::OutProgram, iface), outbound, dirty);
        for way in [Way::In, Way::Out] {
            let (kind, rules) = host_hook_chain(way, iface);
            self.set_chain(host_chain(kind, iface), rules, dirty);
        }
    }

    /// The inbound and outbound program chains of a host endpoint.
    fn host_programs(&self, hep: &LocalHostEndpoint) -> [Vec<GenericRule>; 2] {
        let present = |id: &RuleSetId| self.ruleset.chains.contains_key(&rule_set_chain(id));
        [
            lower_direction(&hep.program.inbound, &present),
            lower_direction(&hep.program.outbound, &present),
        ]
    }

    fn relower_host_fixed_chains(&mut self, settings: &FirewallSettings, dirty: &mut DirtyNames) {
        let bound: Vec<InterfaceName> = self.bindings.keys().cloned().collect();
        let any = !bound.is_empty();
        let hep_dst = any && settings.endpoint_to_host == EndpointToHostAction::Return;
        let input = input_chain(&self.prefixes, &bound);
        self.set_chain(ObjectName::fixed(CHAIN_INPUT), input, dirty);
        let wl = wl_to_host_chain(settings.endpoint_to_host, hep_dst);
        self.set_chain(ObjectName::fixed(CHAIN_WL_TO_HOST), wl, dirty);
        let fixed = [
            (CHAIN_OUTPUT, any.then(|| output_chain(&bound))),
            (
                CHAIN_FAILSAFE_IN,
                any.then(|| failsafe_chain(Way::In, settings)),
            ),
            (
                CHAIN_FAILSAFE_OUT,
                any.then(|| failsafe_chain(Way::Out, settings)),
            ),
            (
                CHAIN_HEP_DST,
                hep_dst.then(|| hep_dst_chain(&self.bindings)),
            ),
        ];
        for (name, rules) in fixed {
            match rules {
                Some(r) => self.set_chain(ObjectName::fixed(name), r, dirty),
                None => self.drop_chain(ObjectName::fixed(name), dirty),
            }
        }
        let output = ObjectName::fixed(CHAIN_OUTPUT);
        let hooked = self.ruleset.hooks.get(&Hook::Output) == Some(&output);
        if any != hooked {
            dirty.hooks = true;
            if any {
                self.ruleset.hooks.insert(Hook::Output, output);
            } else {
                self.ruleset.hooks.remove(&Hook::Output);
            }
        }
    }

    fn drop_chain(&mut self, name: ObjectName, dirty: &mut DirtyNames) {
        if self.ruleset.chains.remove(&name).is_some() {
            dirty.chains.insert(name);
        }
    }
}

fn uses(program: &DirectionProgram, id: &RuleSetId) -> bool {
    rule_sets_used(program).any(|x| x == id)
}

/// `margay-hi-X` or `margay-ho-X`: established and neighbour discovery,
/// failsafe, the program, then accept what the program accepted.
fn host_hook_chain(way: Way, iface: &InterfaceName) -> (HostChain, Vec<GenericRule>) {
    let (kind, failsafe, program) = match way {
        Way::In => (HostChain::In, CHAIN_FAILSAFE_IN, HostChain::InProgram),
        Way::Out => (HostChain::Out, CHAIN_FAILSAFE_OUT, HostChain::OutProgram),
    };
    let mut rules = vec![rule(
        vec![Match::ConnState(CtState::EstablishedRelated)],
        Action::Accept,
    )];
    rules.extend((133u8..=136).map(accept_icmpv6));
    rules.push(rule(vec![], Action::Jump(ObjectName::fixed(failsafe))));
    rules.push(rule(vec![], Action::Jump(host_chain(program, iface))));
    rules.push(rule(vec![], Action::Accept));
    (kind, rules)
}

fn output_chain(bound: &[InterfaceName]) -> Vec<GenericRule> {
    bound
        .iter()
        .map(|iface| {
            let m = vec![Match::OutInterface {
                name: iface.as_str().to_owned(),
                prefix: false,
            }];
            rule(m, Action::Goto(host_chain(HostChain::Out, iface)))
        })
        .collect()
}

/// The failsafe ports of `way` (by destination port), then the agent's own
/// datastore endpoints (by address and port on the datastore's side).
fn failsafe_chain(way: Way, settings: &FirewallSettings) -> Vec<GenericRule> {
    let ports = match way {
        Way::In => &settings.failsafe_inbound,
        Way::Out => &settings.failsafe_outbound,
    };
    let mut rules: Vec<GenericRule> = ports
        .iter()
        .filter(|(proto, _)| PORT_PROTOCOLS.contains(proto))
        .map(|&(proto, port)| {
            let m = vec![
                Match::Protocol {
                    proto,
                    negated: false,
                },
                Match::DstPorts {
                    ports: one_port(port),
                    negated: false,
                },
            ];
            rule(m, Action::Accept)
        })
        .collect();
    rules.extend(
        settings
            .own_endpoints
            .iter()
            .map(|e| own_endpoint_rule(way, e)),
    );
    rules
}

fn own_endpoint_rule(way: Way, endpoint: &SocketAddr) -> GenericRule {
    let net = IpNet::from(endpoint.ip());
    let ports = one_port(endpoint.port());
    let (addr, port) = match way {
        Way::In => (
            Match::SrcNet {
                net,
                negated: false,
            },
            Match::SrcPorts {
                ports,
                negated: false,
            },
        ),
        Way::Out => (
            Match::DstNet {
                net,
                negated: false,
            },
            Match::DstPorts {
                ports,
                negated: false,
            },
        ),
    };
    let proto = Match::Protocol {
        proto: TCP,
        negated: false,
    };
    let m = vec![Match::Family(net_family(&net)), addr, proto, port];
    rule(m, Action::Accept)
}

/// Workload traffic to an address of a bound interface goes to that
/// interface's inbound program; anything else falls through.
fn hep_dst_chain(bindings: &BTreeMap<InterfaceName, Binding>) -> Vec<GenericRule> {
    let mut rules = Vec::new();
    for (iface, binding) in bindings {
        for addr in &binding.addrs {
            let net = IpNet::from(*addr);
            let m = vec![
                Match::Family(net_family(&net)),
                Match::DstNet {
                    net,
                    negated: false,
                },
            ];
            let target = host_chain(HostChain::InProgram, iface);
            rules.push(rule(m, Action::Goto(target)));
        }
    }
    rules
}
