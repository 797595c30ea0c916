//! Lowering: the policy crate's [`DesiredState`] into the generic [`Ruleset`].
//!
//! This is where Calico's filtering semantics become chains of generic rules
//! (see DATAMODEL.md, "What the rules mean"). It is pure: no I/O, no backend
//! syntax. The [`Lowerer`] keeps the current ruleset and, given [`Changes`],
//! re-lowers only what they touch, recording the touched kernel object names
//! in [`DirtyNames`] so the diff only has to look at those.
//!
//! # Layout
//! Marks carry verdicts between chains, as in Felix: [`MARK_ACCEPT`] and
//! [`MARK_PASS`] under [`MARK_MASK`].
//!
//! * `margay-forward` (hook forward): established/related accepted; invalid
//!   from or to a workload dropped; traffic *from* a workload interface jumps
//!   to the outbound dispatch, traffic *to* one jumps to the inbound
//!   dispatch; what both let through is accepted.
//! * `margay-input` (hook input): traffic from workload interfaces goes to
//!   `margay-wl-to-host`: established accepted, invalid dropped, ICMPv6
//!   RS/RA/NS/NA/MLD and DHCP always accepted, then
//!   `DefaultEndpointToHostAction` (`Drop`; `Return` = outbound endpoint
//!   policy then back to the host's own rules; `Accept` = outbound policy then
//!   accept).
//!   With `Return` and a bound host interface, `margay-wl-to-host` then
//!   jumps to `margay-hep-dst`, which sends traffic to an address of a bound
//!   interface through that host endpoint's inbound program.
//! * Host endpoints (see `host_endpoints`): `margay-input` then sends
//!   traffic arriving on each bound host interface X to `margay-hi-X`, and
//!   `margay-output` (hook output, used only while an interface is bound)
//!   sends traffic leaving through X to `margay-ho-X`. Both accept
//!   established traffic and ICMPv6 neighbour discovery, run the failsafe
//!   chain (`margay-fsafe-in` / `margay-fsafe-out`: the failsafe ports of
//!   [`FirewallSettings`] and the agent's own datastore endpoints), then
//!   the host endpoint's program (`margay-hin-X` / `margay-hout-X`, lowered
//!   like a workload's), and accept what it accepted. Unbound interfaces and
//!   `lo` fall through untouched; forwarded traffic never meets these chains.
//! * Host to workload (hook output) is not filtered, as in Felix: the host
//!   must reach its workloads (health checks), and the replies come back
//!   through `margay-wl-to-host` as established traffic.
//! * `margay-nat-post` (hook nat postrouting): from a masquerade pool to
//!   outside all pools is masqueraded, per family.
//! * Dispatch: `margay-disp-fr` / `margay-disp-to` hold one prefix rule per
//!   configured interface prefix, going to the root of that prefix's
//!   dispatch tree. A tree node (`margay-df<n>-<common prefix>` /
//!   `margay-dt<n>-...`) with at most [`DISPATCH_LEAF`] interfaces holds one
//!   exact-name rule per endpoint going to its endpoint chain; a bigger node
//!   splits its interfaces by the next character into child nodes. Every
//!   node ends in a drop, so an unknown workload interface gets nothing
//!   through. The tree is a pure function of the interface names, so a
//!   one-endpoint change rewrites a few small chains whatever the naming
//!   scheme, and per-packet dispatch costs O(depth x leaf size). (Plain
//!   rules, so every backend renders it.)
//! * Endpoint chains `margay-to-<iface>` (inbound) and `margay-fr-<iface>`
//!   (outbound): per tier, clear the marks, jump to each matching policy
//!   chain while no verdict mark is set; accept mark => return (accepted);
//!   no mark => drop; pass mark => next tier. Then the profiles: jump to
//!   each, return when one set the accept mark; then drop. A fail-closed
//!   program drops instead of running profiles. "Accepted" is a return to the
//!   hook chain, which goes on to the other direction's check and accepts.
//! * Rule set chains: profile `margay-p{i,o}-<id>`, policy
//!   `margay-q{i,o}-<hash of tier/policy>`. `allow` sets the accept mark and
//!   returns (`next-tier` too, in a profile); `next-tier` in a policy sets the
//!   pass mark and returns; `deny` drops; `log` logs and goes on.
//! * Address sets are per family: `margay-t4-<tag>`/`t6`, `margay-s4-<hash>`
//!   /`s6` for selectors, `margay-pools4/6` and `margay-masq4/6`. A rule
//!   without an IP version that names a set becomes one rule per family.
//!
//! # Files
//! `names` (every generated chain and set name), `settings`, `sets`
//! (address sets), `rule_set` (profile and policy chains), `program`
//! (endpoint chains), `dispatch` (the dispatch trees), `base` (the chains
//! the hooks call), `host_binding` (which host endpoint governs which
//! interface) and `host_endpoints` (their chains); this module keeps the
//! [`Lowerer`] and its dependency maps, which decide what an update
//! re-lowers.

mod base;
mod dispatch;
mod host_binding;
mod host_endpoints;
mod names;
mod program;
mod rule_set;
mod sets;
mod settings;

use std::collections::{BTreeMap, BTreeSet};

use margay_policy::desired::LocalHostEndpoint;
use margay_policy::desired::{Changes, DesiredState, IpSetId, RuleSetId};
use margay_policy::names::{Id, InterfaceName};

use super::diff::DirtyNames;
use super::model::{Action, GenericRule, Match, ObjectName, Ruleset};

pub use dispatch::DISPATCH_LEAF;
pub use host_binding::{bind_host_endpoints, interfaces_by_endpoint, Binding};
pub use names::{
    endpoint_chain, host_chain, net_family, rule_set_chain, set_name, HostChain,
    CHAIN_DISPATCH_FROM, CHAIN_DISPATCH_TO, CHAIN_FAILSAFE_IN, CHAIN_FAILSAFE_OUT, CHAIN_FORWARD,
    CHAIN_HEP_DST, CHAIN_INPUT, CHAIN_NAT_POST, CHAIN_OUTPUT, CHAIN_WL_TO_HOST,
};
pub use rule_set::{lower_rule, valid_log_prefix, DEFAULT_LOG_PREFIX};
pub use sets::normalize_members;
pub use settings::{EndpointToHostAction, FirewallSettings};

/// Mark bit: a policy or profile accepted the packet.
pub const MARK_ACCEPT: u32 = 0x0100_0000;
/// Mark bit: a policy said `next-tier`.
pub const MARK_PASS: u32 = 0x0200_0000;
/// Every mark bit margay uses.
pub const MARK_MASK: u32 = MARK_ACCEPT | MARK_PASS;

/// The host's interfaces with the addresses each carries now, as the kernel
/// reports them (names unvalidated: the lowering binds only valid names).
/// Host endpoints without a `name` bind to the interfaces carrying one of
/// their expected addresses.
pub type InterfaceAddresses = BTreeMap<String, BTreeSet<std::net::IpAddr>>;

/// Lowers `desired` in one go (what [`Lowerer::lower_all`] keeps), knowing
/// no interface addresses: host endpoints with a `name` are bound, those
/// bound by expected address only are not (use a [`Lowerer`] and
/// [`Lowerer::set_interface_addresses`] for those).
pub fn lower(desired: &DesiredState, settings: &FirewallSettings) -> Ruleset {
    let mut l = Lowerer::new();
    l.lower_all(desired, settings);
    l.ruleset
}

/// Keeps the lowered [`Ruleset`] and updates it incrementally.
#[derive(Debug, Default)]
pub struct Lowerer {
    settings: Option<FirewallSettings>,
    prefixes: Vec<String>,
    ruleset: Ruleset,
    /// Dispatched endpoints per interface prefix (index into `prefixes`).
    groups: Vec<BTreeSet<InterfaceName>>,
    /// The dispatch tree chains currently lowered for each prefix.
    group_chains: Vec<BTreeSet<ObjectName>>,
    /// Rule sets whose lowering depends on whether a set exists.
    set_users: BTreeMap<IpSetId, BTreeSet<RuleSetId>>,
    /// Reverse of `set_users`.
    rule_set_sets: BTreeMap<RuleSetId, BTreeSet<IpSetId>>,
    /// Programs whose lowering depends on whether a rule set exists.
    rule_set_users: BTreeMap<RuleSetId, BTreeSet<InterfaceName>>,
    /// Reverse of `rule_set_users`.
    program_rule_sets: BTreeMap<InterfaceName, BTreeSet<RuleSetId>>,
    /// The kernel's interfaces and their addresses (kept across `lower_all`).
    iface_addrs: InterfaceAddresses,
    /// This host's host endpoints, as last lowered.
    host_endpoints: BTreeMap<Id, LocalHostEndpoint>,
    /// The bound host interfaces, as last lowered.
    bindings: BTreeMap<InterfaceName, Binding>,
}

impl Lowerer {
    /// An empty lowerer; call [`Lowerer::lower_all`] first.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current lowered ruleset.
    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    /// The settings of the last full lowering, if any.
    pub fn settings(&self) -> Option<&FirewallSettings> {
        self.settings.as_ref()
    }

    /// Lowers everything from scratch (first run, or settings changed).
    pub fn lower_all(&mut self, desired: &DesiredState, settings: &FirewallSettings) {
        let prefixes = settings.valid_prefixes();
        *self = Lowerer {
            settings: Some(settings.clone()),
            iface_addrs: std::mem::take(&mut self.iface_addrs),
            host_endpoints: desired.host_endpoints.clone(),
            groups: vec![BTreeSet::new(); prefixes.len()],
            group_chains: vec![BTreeSet::new(); prefixes.len()],
            prefixes,
            ..Lowerer::default()
        };
        let mut sink = DirtyNames::default();
        for id in [IpSetId::AllPools, IpSetId::MasqueradePools] {
            self.relower_set(desired, &id, &mut sink);
        }
        for id in desired.ip_sets.keys() {
            self.relower_set(desired, id, &mut sink);
        }
        for id in desired.rule_sets.keys() {
            self.relower_rule_set(desired, id, &mut sink);
        }
        let mut dirty_groups = BTreeSet::new();
        for iface in desired.programs.keys() {
            self.relower_program(desired, iface, &mut sink, &mut dirty_groups);
        }
        self.relower_dispatch(&dirty_groups, &mut sink);
        self.lower_base_chains();
        let all: BTreeSet<Id> = desired.host_endpoints.keys().cloned().collect();
        self.relower_hosts(&all, &mut sink);
    }

    /// Applies `changes` (taken against `desired`) and returns the kernel
    /// names whose desired content may differ from before.
    pub fn update(&mut self, desired: &DesiredState, changes: &Changes) -> DirtyNames {
        let mut dirty = DirtyNames::default();
        let mut rule_sets: BTreeSet<RuleSetId> = changes.rule_sets.clone();
        for id in &changes.ip_sets {
            self.relower_set(desired, id, &mut dirty);
            if let Some(users) = self.set_users.get(id) {
                rule_sets.extend(users.iter().cloned());
            }
        }
        for (id, members) in &changes.ip_set_members {
            if !changes.ip_sets.contains(id) {
                self.update_members(desired, id, members, &mut dirty);
            }
        }
        let mut programs: BTreeSet<InterfaceName> = changes.programs.clone();
        programs.extend(changes.endpoints.iter().cloned());
        let mut host_endpoints: BTreeSet<Id> = changes.host_endpoints.clone();
        for id in &rule_sets {
            let was = self.ruleset.chains.contains_key(&rule_set_chain(id));
            self.relower_rule_set(desired, id, &mut dirty);
            let is = self.ruleset.chains.contains_key(&rule_set_chain(id));
            if was != is {
                if let Some(users) = self.rule_set_users.get(id) {
                    programs.extend(users.iter().cloned());
                }
                host_endpoints.extend(self.host_users_of(id));
            }
        }
        let mut dirty_groups = BTreeSet::new();
        for iface in &programs {
            self.relower_program(desired, iface, &mut dirty, &mut dirty_groups);
        }
        self.relower_dispatch(&dirty_groups, &mut dirty);
        if !host_endpoints.is_empty() {
            self.take_host_endpoints(desired, &changes.host_endpoints);
            self.relower_hosts(&host_endpoints, &mut dirty);
        }
        dirty
    }
}

/// A generic rule from its parts.
fn rule(matches: Vec<Match>, action: Action) -> GenericRule {
    GenericRule { matches, action }
}

#[cfg(test)]
mod host_tests;
#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
mod tests;
