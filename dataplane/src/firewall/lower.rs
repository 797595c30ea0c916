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
//! Failsafe ports in [`FirewallSettings`] protect host endpoints, which are
//! not programmed yet; they are carried but not rendered.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use margay_policy::desired::{
    Changes, DesiredState, Direction, DirectionProgram, IpSetId, IpVersion, Rule, RuleAction,
    RuleSet, RuleSetId, RuleSetOwner, SideMatch,
};
use margay_policy::names::InterfaceName;

use super::diff::DirtyNames;
use super::model::{Action, AddressSet, CtState, GenericRule, Hook, Match, ObjectName, Ruleset};

/// Mark bit: a policy or profile accepted the packet.
pub const MARK_ACCEPT: u32 = 0x0100_0000;
/// Mark bit: a policy said `next-tier`.
pub const MARK_PASS: u32 = 0x0200_0000;
/// Every mark bit margay uses.
pub const MARK_MASK: u32 = MARK_ACCEPT | MARK_PASS;
/// Log prefix of a `log` rule without `log_prefix` (Felix's default).
pub const DEFAULT_LOG_PREFIX: &str = "calico-packet";

/// Chain the forward hook calls.
pub const CHAIN_FORWARD: &str = "margay-forward";
/// Chain the input hook calls.
pub const CHAIN_INPUT: &str = "margay-input";
/// Workload-to-host checks (from `margay-input`).
pub const CHAIN_WL_TO_HOST: &str = "margay-wl-to-host";
/// Dispatch of traffic from workloads to their outbound chains.
pub const CHAIN_DISPATCH_FROM: &str = "margay-disp-fr";
/// Dispatch of traffic to workloads to their inbound chains.
pub const CHAIN_DISPATCH_TO: &str = "margay-disp-to";
/// Chain the nat postrouting hook calls.
pub const CHAIN_NAT_POST: &str = "margay-nat-post";

/// What happens to traffic from a workload to the host itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointToHostAction {
    /// Drop it (Felix's default).
    #[default]
    Drop,
    /// Apply the endpoint's outbound policy, then leave it to the host's rules.
    Return,
    /// Apply the endpoint's outbound policy, then accept.
    Accept,
}

/// The datastore settings that shape the firewall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallSettings {
    /// Workload interface prefixes (`InterfacePrefix`, comma list). Entries
    /// that are not valid interface-name prefixes are ignored.
    pub interface_prefixes: Vec<String>,
    /// `DefaultEndpointToHostAction`.
    pub endpoint_to_host: EndpointToHostAction,
    /// `FailsafeInboundHostPorts` as (protocol, port); for host endpoints (not rendered yet).
    pub failsafe_inbound: Vec<(u8, u16)>,
    /// `FailsafeOutboundHostPorts` as (protocol, port); for host endpoints (not rendered yet).
    pub failsafe_outbound: Vec<(u8, u16)>,
}

impl Default for FirewallSettings {
    fn default() -> Self {
        FirewallSettings {
            interface_prefixes: vec!["cali".to_owned()],
            endpoint_to_host: EndpointToHostAction::Drop,
            failsafe_inbound: vec![(6, 22), (17, 68)],
            failsafe_outbound: vec![(17, 53), (17, 67), (6, 179), (6, 2379), (6, 2380)],
        }
    }
}

impl FirewallSettings {
    /// The prefixes that are safe to render: valid interface names, deduplicated, in order.
    pub fn valid_prefixes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.interface_prefixes {
            if InterfaceName::new(p).is_ok() && !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }
}

/// The chain of an endpoint's program in one direction.
pub fn endpoint_chain(direction: Direction, iface: &InterfaceName) -> ObjectName {
    let kind = match direction {
        Direction::Inbound => "to",
        Direction::Outbound => "fr",
    };
    ObjectName::generate(kind, iface.as_str())
}

/// The chain of a profile's or policy's rules in one direction.
pub fn rule_set_chain(id: &RuleSetId) -> ObjectName {
    let d = match id.direction {
        Direction::Inbound => "i",
        Direction::Outbound => "o",
    };
    match &id.owner {
        RuleSetOwner::Profile(p) => ObjectName::generate(&format!("p{d}"), p.as_str()),
        RuleSetOwner::Policy { tier, policy } => {
            ObjectName::generate(&format!("q{d}"), &format!("{tier}/{policy}"))
        }
    }
}

/// The kernel set holding the `family` members of an address set.
pub fn set_name(id: &IpSetId, family: IpVersion) -> ObjectName {
    let f = match family {
        IpVersion::V4 => "4",
        IpVersion::V6 => "6",
    };
    match id {
        IpSetId::Tag(t) => ObjectName::generate(&format!("t{f}"), t.as_str()),
        IpSetId::Selector(s) => ObjectName::generate(&format!("s{f}"), s),
        IpSetId::AllPools => ObjectName::fixed(match family {
            IpVersion::V4 => "margay-pools4",
            IpVersion::V6 => "margay-pools6",
        }),
        IpSetId::MasqueradePools => ObjectName::fixed(match family {
            IpVersion::V4 => "margay-masq4",
            IpVersion::V6 => "margay-masq6",
        }),
    }
}

/// The family of an address.
pub fn net_family(net: &IpNet) -> IpVersion {
    match net {
        IpNet::V4(_) => IpVersion::V4,
        IpNet::V6(_) => IpVersion::V6,
    }
}

const FAMILIES: [IpVersion; 2] = [IpVersion::V4, IpVersion::V6];

fn is_host(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// Members as a set of disjoint nets with the same union: nets inside
/// another member are dropped (interval sets refuse overlapping elements).
pub fn normalize_members<'a>(members: impl Iterator<Item = &'a IpNet>) -> BTreeSet<IpNet> {
    let mut nets: Vec<IpNet> = members.map(IpNet::trunc).collect();
    if nets.iter().all(is_host) {
        return nets.into_iter().collect();
    }
    // CIDRs are nested or disjoint: sorted by (address, prefix length), a
    // covered net always follows the last net kept that covers it.
    nets.sort_by_key(|n| (n.network(), n.prefix_len()));
    let mut kept: Vec<IpNet> = Vec::with_capacity(nets.len());
    for n in nets {
        if kept.last().is_some_and(|k| k.contains(&n)) {
            continue;
        }
        kept.push(n);
    }
    kept.into_iter().collect()
}

/// Lowers `desired` in one go (what [`Lowerer::lower_all`] keeps).
pub fn lower(desired: &DesiredState, settings: &FirewallSettings) -> Ruleset {
    let mut l = Lowerer::new();
    l.lower_all(desired, settings);
    l.ruleset
}

/// Most interfaces a dispatch tree node matches one by one.
pub const DISPATCH_LEAF: usize = 16;

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
        self.lower_base_chains(settings.endpoint_to_host);
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
        for id in &rule_sets {
            let was = self.ruleset.chains.contains_key(&rule_set_chain(id));
            self.relower_rule_set(desired, id, &mut dirty);
            let is = self.ruleset.chains.contains_key(&rule_set_chain(id));
            if was != is {
                if let Some(users) = self.rule_set_users.get(id) {
                    programs.extend(users.iter().cloned());
                }
            }
        }
        let mut dirty_groups = BTreeSet::new();
        for iface in &programs {
            self.relower_program(desired, iface, &mut dirty, &mut dirty_groups);
        }
        self.relower_dispatch(&dirty_groups, &mut dirty);
        dirty
    }

    // ----- sets -----

    fn set_present(desired: &DesiredState, id: &IpSetId) -> bool {
        matches!(id, IpSetId::AllPools | IpSetId::MasqueradePools)
            || desired.ip_sets.contains_key(id)
    }

    fn relower_set(&mut self, desired: &DesiredState, id: &IpSetId, dirty: &mut DirtyNames) {
        for family in FAMILIES {
            let name = set_name(id, family);
            if Self::set_present(desired, id) {
                let members = desired
                    .ip_sets
                    .get(id)
                    .map(|m| normalize_members(m.iter().filter(|n| net_family(n) == family)))
                    .unwrap_or_default();
                self.ruleset
                    .sets
                    .insert(name.clone(), AddressSet { family, members });
            } else {
                self.ruleset.sets.remove(&name);
            }
            dirty.sets.insert(name);
        }
    }

    fn update_members(
        &mut self,
        desired: &DesiredState,
        id: &IpSetId,
        members: &BTreeSet<IpNet>,
        dirty: &mut DirtyNames,
    ) {
        let pools = matches!(id, IpSetId::AllPools | IpSetId::MasqueradePools);
        if pools || members.iter().any(|m| !is_host(m)) {
            // Nets may cover each other: recompute the whole (small) set.
            return self.relower_set(desired, id, dirty);
        }
        let wanted = desired.ip_sets.get(id);
        for m in members {
            let name = set_name(id, net_family(m));
            let Some(set) = self.ruleset.sets.get_mut(&name) else {
                continue;
            };
            let net = m.trunc();
            let want = wanted.is_some_and(|w| w.contains(m) || w.contains(&net));
            if want {
                set.members.insert(net);
            } else {
                set.members.remove(&net);
            }
            dirty.members.entry(name).or_default().insert(net);
        }
    }

    // ----- rule sets -----

    fn relower_rule_set(&mut self, desired: &DesiredState, id: &RuleSetId, dirty: &mut DirtyNames) {
        let chain = rule_set_chain(id);
        if let Some(old) = self.rule_set_sets.remove(id) {
            for set in old {
                if let Some(users) = self.set_users.get_mut(&set) {
                    users.remove(id);
                    if users.is_empty() {
                        self.set_users.remove(&set);
                    }
                }
            }
        }
        match desired.rule_sets.get(id) {
            Some(rs) => {
                let used = sets_used(rs);
                for set in &used {
                    self.set_users
                        .entry(set.clone())
                        .or_default()
                        .insert(id.clone());
                }
                let present = |s: &IpSetId| Self::set_present(desired, s);
                let is_profile = matches!(id.owner, RuleSetOwner::Profile(_));
                let rules = lower_rule_set(rs, is_profile, &present);
                self.rule_set_sets.insert(id.clone(), used);
                self.ruleset.chains.insert(chain.clone(), rules);
            }
            None => {
                self.ruleset.chains.remove(&chain);
            }
        }
        dirty.chains.insert(chain);
    }

    // ----- programs and dispatch -----

    /// The prefix group of an interface: the first configured prefix it has.
    fn group_of(&self, iface: &InterfaceName) -> Option<usize> {
        self.prefixes
            .iter()
            .position(|p| iface.as_str().starts_with(p.as_str()))
    }

    fn relower_program(
        &mut self,
        desired: &DesiredState,
        iface: &InterfaceName,
        dirty: &mut DirtyNames,
        dirty_groups: &mut BTreeSet<usize>,
    ) {
        let chains = [
            endpoint_chain(Direction::Inbound, iface),
            endpoint_chain(Direction::Outbound, iface),
        ];
        if let Some(old) = self.program_rule_sets.remove(iface) {
            for rs in old {
                if let Some(users) = self.rule_set_users.get_mut(&rs) {
                    users.remove(iface);
                    if users.is_empty() {
                        self.rule_set_users.remove(&rs);
                    }
                }
            }
        }
        let group = self.group_of(iface);
        let program = desired.programs.get(iface).filter(|_| group.is_some());
        match program {
            Some(p) => {
                let present = |id: &RuleSetId| desired.rule_sets.contains_key(id);
                let inbound = lower_direction(&p.inbound, &present);
                let outbound = lower_direction(&p.outbound, &present);
                let used = rule_sets_used(&p.inbound)
                    .chain(rule_sets_used(&p.outbound))
                    .cloned()
                    .collect::<BTreeSet<_>>();
                for rs in &used {
                    self.rule_set_users
                        .entry(rs.clone())
                        .or_default()
                        .insert(iface.clone());
                }
                self.program_rule_sets.insert(iface.clone(), used);
                self.ruleset.chains.insert(chains[0].clone(), inbound);
                self.ruleset.chains.insert(chains[1].clone(), outbound);
            }
            None => {
                for c in &chains {
                    self.ruleset.chains.remove(c);
                }
            }
        }
        dirty.chains.extend(chains);
        if let Some(g) = group {
            let members = &mut self.groups[g];
            let changed = if program.is_some() {
                members.insert(iface.clone())
            } else {
                members.remove(iface)
            };
            if changed {
                dirty_groups.insert(g);
            }
        }
    }

    /// Re-lowers the dispatch trees of `groups` and the top dispatch
    /// chains, marking only the chains whose rules changed.
    fn relower_dispatch(&mut self, groups: &BTreeSet<usize>, dirty: &mut DirtyNames) {
        for &g in groups {
            let mut chains = BTreeMap::new();
            for direction in [Direction::Inbound, Direction::Outbound] {
                let names: Vec<&InterfaceName> = self.groups[g].iter().collect();
                if !names.is_empty() {
                    dispatch_node(direction, g, &names, &mut chains);
                }
            }
            for old in &self.group_chains[g] {
                if !chains.contains_key(old) {
                    self.ruleset.chains.remove(old);
                    dirty.chains.insert(old.clone());
                }
            }
            self.group_chains[g] = chains.keys().cloned().collect();
            for (name, rules) in chains {
                self.set_chain(name, rules, dirty);
            }
        }
        for (direction, top) in [
            (Direction::Inbound, CHAIN_DISPATCH_TO),
            (Direction::Outbound, CHAIN_DISPATCH_FROM),
        ] {
            let mut rules = Vec::with_capacity(self.prefixes.len() + 1);
            for (g, p) in self.prefixes.iter().enumerate() {
                let names: Vec<&InterfaceName> = self.groups[g].iter().collect();
                if !names.is_empty() {
                    let root = dispatch_node_name(direction, g, common_prefix(&names));
                    rules.push(dispatch_rule(direction, p, true, root));
                }
            }
            rules.push(rule(vec![], Action::Drop));
            self.set_chain(ObjectName::fixed(top), rules, dirty);
        }
    }

    fn set_chain(&mut self, name: ObjectName, rules: Vec<GenericRule>, dirty: &mut DirtyNames) {
        if self.ruleset.chains.get(&name) != Some(&rules) {
            self.ruleset.chains.insert(name.clone(), rules);
            dirty.chains.insert(name);
        }
    }

    fn lower_base_chains(&mut self, to_host: EndpointToHostAction) {
        let chains = &mut self.ruleset.chains;
        chains.insert(
            ObjectName::fixed(CHAIN_FORWARD),
            forward_chain(&self.prefixes),
        );
        chains.insert(ObjectName::fixed(CHAIN_INPUT), input_chain(&self.prefixes));
        chains.insert(
            ObjectName::fixed(CHAIN_WL_TO_HOST),
            wl_to_host_chain(to_host),
        );
        chains.insert(ObjectName::fixed(CHAIN_NAT_POST), nat_chain());
        let hooks = &mut self.ruleset.hooks;
        hooks.insert(Hook::Forward, ObjectName::fixed(CHAIN_FORWARD));
        hooks.insert(Hook::Input, ObjectName::fixed(CHAIN_INPUT));
        hooks.insert(Hook::NatPostrouting, ObjectName::fixed(CHAIN_NAT_POST));
    }
}

fn rule(matches: Vec<Match>, action: Action) -> GenericRule {
    GenericRule { matches, action }
}

fn iface_match(direction: Direction, name: &str, prefix: bool) -> Match {
    let name = name.to_owned();
    match direction {
        // Inbound = towards the workload: the packet leaves via its interface.
        Direction::Inbound => Match::OutInterface { name, prefix },
        Direction::Outbound => Match::InInterface { name, prefix },
    }
}

fn dispatch_rule(
    direction: Direction,
    name: &str,
    prefix: bool,
    target: ObjectName,
) -> GenericRule {
    rule(
        vec![iface_match(direction, name, prefix)],
        Action::Goto(target),
    )
}

fn dispatch_node_name(direction: Direction, group: usize, key: &str) -> ObjectName {
    let kind = match direction {
        Direction::Inbound => format!("dt{group}"),
        Direction::Outbound => format!("df{group}"),
    };
    ObjectName::generate(&kind, key)
}

/// The longest common prefix of sorted, non-empty `names`.
fn common_prefix<'a>(names: &[&'a InterfaceName]) -> &'a str {
    let (Some(first), Some(last)) = (names.first(), names.last()) else {
        return "";
    };
    let (a, b) = (first.as_str(), last.as_str());
    let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    // Interface names are ASCII: any byte index is a char boundary.
    &a[..n]
}

/// Lowers the dispatch tree node for sorted `names` (and its children)
/// into `out`; returns the node's chain.
fn dispatch_node(
    direction: Direction,
    group: usize,
    names: &[&InterfaceName],
    out: &mut BTreeMap<ObjectName, Vec<GenericRule>>,
) -> ObjectName {
    let lcp = common_prefix(names);
    let chain = dispatch_node_name(direction, group, lcp);
    let exact = |i: &InterfaceName| {
        dispatch_rule(direction, i.as_str(), false, endpoint_chain(direction, i))
    };
    let mut rules = Vec::new();
    if names.len() <= DISPATCH_LEAF {
        rules.extend(names.iter().map(|i| exact(i)));
    } else {
        let at = lcp.len();
        let (whole, longer): (Vec<&InterfaceName>, Vec<&InterfaceName>) =
            names.iter().partition(|i| i.as_str().len() == at);
        rules.extend(whole.into_iter().map(exact));
        for part in longer.chunk_by(|a, b| a.as_str().as_bytes()[at] == b.as_str().as_bytes()[at]) {
            match part {
                [only] => rules.push(exact(only)),
                _ => {
                    let child = dispatch_node(direction, group, part, out);
                    let key = &part[0].as_str()[..=at];
                    rules.push(dispatch_rule(direction, key, true, child));
                }
            }
        }
    }
    rules.push(rule(vec![], Action::Drop));
    out.insert(chain.clone(), rules);
    chain
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

fn input_chain(prefixes: &[String]) -> Vec<GenericRule> {
    prefixes
        .iter()
        .map(|p| {
            let m = vec![Match::InInterface {
                name: p.clone(),
                prefix: true,
            }];
            rule(m, Action::Goto(ObjectName::fixed(CHAIN_WL_TO_HOST)))
        })
        .collect()
}

fn udp_ports(family: IpVersion, sport: u16, dport: u16) -> Vec<Match> {
    let one = |p| vec![margay_policy::desired::PortRange { lo: p, hi: p }];
    vec![
        Match::Family(family),
        Match::Protocol {
            proto: 17,
            negated: false,
        },
        Match::SrcPorts {
            ports: one(sport),
            negated: false,
        },
        Match::DstPorts {
            ports: one(dport),
            negated: false,
        },
    ]
}

fn wl_to_host_chain(action: EndpointToHostAction) -> Vec<GenericRule> {
    let mut rules = vec![
        rule(
            vec![Match::ConnState(CtState::EstablishedRelated)],
            Action::Accept,
        ),
        rule(vec![Match::ConnState(CtState::Invalid)], Action::Drop),
    ];
    for t in [130u8, 131, 132, 133, 135, 136] {
        let m = vec![
            Match::Family(IpVersion::V6),
            Match::Protocol {
                proto: 58,
                negated: false,
            },
            Match::Icmp {
                icmp_type: t,
                code: None,
                negated: false,
            },
        ];
        rules.push(rule(m, Action::Accept));
    }
    rules.push(rule(udp_ports(IpVersion::V4, 68, 67), Action::Accept));
    rules.push(rule(udp_ports(IpVersion::V6, 546, 547), Action::Accept));
    let dispatch = || rule(vec![], Action::Jump(ObjectName::fixed(CHAIN_DISPATCH_FROM)));
    match action {
        EndpointToHostAction::Drop => rules.push(rule(vec![], Action::Drop)),
        // The dispatch drops or returns; a return leaves our chains and the
        // host's own rules decide.
        EndpointToHostAction::Return => rules.push(dispatch()),
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

// ----- endpoint programs -----

fn rule_sets_used(p: &DirectionProgram) -> impl Iterator<Item = &RuleSetId> {
    p.tiers
        .iter()
        .flat_map(|t| t.policies.iter())
        .chain(p.profiles.iter())
}

fn no_verdict() -> Match {
    Match::Mark {
        value: 0,
        mask: MARK_MASK,
    }
}

fn clear_marks() -> GenericRule {
    rule(
        vec![],
        Action::SetMark {
            value: 0,
            mask: MARK_MASK,
        },
    )
}

fn accepted_return() -> GenericRule {
    let m = vec![Match::Mark {
        value: MARK_ACCEPT,
        mask: MARK_ACCEPT,
    }];
    rule(m, Action::Return)
}

/// One endpoint direction's chain: tiers, then profiles, then drop.
fn lower_direction(p: &DirectionProgram, present: &dyn Fn(&RuleSetId) -> bool) -> Vec<GenericRule> {
    let mut rules = Vec::new();
    for tier in &p.tiers {
        rules.push(clear_marks());
        for policy in &tier.policies {
            // A missing policy decides nothing: leaving it out is exact.
            if present(policy) {
                rules.push(rule(
                    vec![no_verdict()],
                    Action::Jump(rule_set_chain(policy)),
                ));
            }
        }
        rules.push(accepted_return());
        rules.push(rule(vec![no_verdict()], Action::Drop));
    }
    if !p.fail_closed {
        rules.push(clear_marks());
        for profile in &p.profiles {
            if !present(profile) {
                // A missing profile fails closed.
                break;
            }
            rules.push(rule(vec![], Action::Jump(rule_set_chain(profile))));
            rules.push(accepted_return());
        }
    }
    rules.push(rule(vec![], Action::Drop));
    rules
}

// ----- rule sets -----

fn side_sets(s: &SideMatch) -> impl Iterator<Item = &IpSetId> {
    [&s.tag, &s.not_tag, &s.selector, &s.not_selector]
        .into_iter()
        .flatten()
}

fn rule_sets(r: &Rule) -> impl Iterator<Item = &IpSetId> {
    side_sets(&r.src).chain(side_sets(&r.dst))
}

fn sets_used(rs: &RuleSet) -> BTreeSet<IpSetId> {
    rs.rules.iter().flat_map(rule_sets).cloned().collect()
}

fn lower_rule_set(
    rs: &RuleSet,
    is_profile: bool,
    present: &dyn Fn(&IpSetId) -> bool,
) -> Vec<GenericRule> {
    rs.rules
        .iter()
        .flat_map(|r| lower_rule(r, is_profile, present))
        .collect()
}

/// The families a rule is rendered for: its own, or both when it names
/// sets (which are per family) without one.
fn rule_families(r: &Rule) -> Vec<Option<IpVersion>> {
    if let Some(v) = r.ip_version {
        return vec![Some(v)];
    }
    if r.icmp.is_some() || r.not_icmp.is_some() {
        // ICMP matches need a family; protocol tells which.
        return match r.protocol.map(|p| p.0) {
            Some(58) => vec![Some(IpVersion::V6)],
            _ => vec![Some(IpVersion::V4)],
        };
    }
    if rule_sets(r).next().is_some() {
        return FAMILIES.iter().map(|f| Some(*f)).collect();
    }
    vec![None]
}

/// Lowers one datastore rule into generic rules (none if it can never match).
pub fn lower_rule(
    r: &Rule,
    is_profile: bool,
    present: &dyn Fn(&IpSetId) -> bool,
) -> Vec<GenericRule> {
    let mut out = Vec::new();
    for family in rule_families(r) {
        let Some(matches) = lower_matches(r, family, present) else {
            continue;
        };
        out.extend(action_rules(
            &r.action,
            is_profile,
            r.log_prefix.as_deref(),
            matches,
        ));
    }
    out
}

fn action_rules(
    action: &RuleAction,
    is_profile: bool,
    log_prefix: Option<&str>,
    matches: Vec<Match>,
) -> Vec<GenericRule> {
    let mark_and_return = |bit: u32, matches: Vec<Match>| {
        vec![
            rule(
                matches,
                Action::SetMark {
                    value: bit,
                    mask: bit,
                },
            ),
            rule(
                vec![Match::Mark {
                    value: bit,
                    mask: bit,
                }],
                Action::Return,
            ),
        ]
    };
    match action {
        RuleAction::Allow => mark_and_return(MARK_ACCEPT, matches),
        RuleAction::NextTier if is_profile => mark_and_return(MARK_ACCEPT, matches),
        RuleAction::NextTier => mark_and_return(MARK_PASS, matches),
        RuleAction::Deny => vec![rule(matches, Action::Drop)],
        RuleAction::Log => {
            let prefix = log_prefix
                .filter(|p| valid_log_prefix(p))
                .unwrap_or(DEFAULT_LOG_PREFIX)
                .to_owned();
            vec![rule(matches, Action::Log { prefix })]
        }
    }
}

/// The log prefix charset the policy crate validates (`[A-Za-z0-9 _.:-]{0,27}`).
pub fn valid_log_prefix(p: &str) -> bool {
    p.len() <= 27
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'_' | b'.' | b':' | b'-'))
}

/// The matches of `r` for one family; `None` when the rule cannot match
/// in that family (a positive match on a missing set, or a net of the
/// other family).
fn lower_matches(
    r: &Rule,
    family: Option<IpVersion>,
    present: &dyn Fn(&IpSetId) -> bool,
) -> Option<Vec<Match>> {
    let mut m = Vec::new();
    if let Some(f) = family {
        m.push(Match::Family(f));
    }
    if let Some(p) = r.protocol {
        m.push(Match::Protocol {
            proto: p.0,
            negated: false,
        });
    }
    if let Some(p) = r.not_protocol {
        m.push(Match::Protocol {
            proto: p.0,
            negated: true,
        });
    }
    side_matches(&r.src, true, family, present, &mut m)?;
    side_matches(&r.dst, false, family, present, &mut m)?;
    if let Some(i) = r.icmp {
        m.push(Match::Icmp {
            icmp_type: i.icmp_type,
            code: i.code,
            negated: false,
        });
    }
    if let Some(i) = r.not_icmp {
        m.push(Match::Icmp {
            icmp_type: i.icmp_type,
            code: i.code,
            negated: true,
        });
    }
    Some(m)
}

fn net_match(net: IpNet, src: bool, negated: bool) -> Match {
    if src {
        Match::SrcNet { net, negated }
    } else {
        Match::DstNet { net, negated }
    }
}

fn set_match(set: ObjectName, src: bool, negated: bool) -> Match {
    if src {
        Match::SrcSet { set, negated }
    } else {
        Match::DstSet { set, negated }
    }
}

fn side_matches(
    s: &SideMatch,
    src: bool,
    family: Option<IpVersion>,
    present: &dyn Fn(&IpSetId) -> bool,
    out: &mut Vec<Match>,
) -> Option<()> {
    let same_family = |n: &IpNet| family.is_none_or(|f| f == net_family(n));
    if let Some(n) = s.net {
        if !same_family(&n) {
            return None;
        }
        out.push(net_match(n.trunc(), src, false));
    }
    if let Some(n) = s.not_net {
        // A net of the other family never contains the address: always true.
        if same_family(&n) {
            out.push(net_match(n.trunc(), src, true));
        }
    }
    for (id, negated) in [
        (&s.tag, false),
        (&s.selector, false),
        (&s.not_tag, true),
        (&s.not_selector, true),
    ] {
        let Some(id) = id else { continue };
        // Sets are per family; rule_families guarantees one here.
        let f = family?;
        match (present(id), negated) {
            (true, _) => out.push(set_match(set_name(id, f), src, negated)),
            // A missing set is empty: "in it" never holds, "not in it" always does.
            (false, false) => return None,
            (false, true) => {}
        }
    }
    if !s.ports.is_empty() {
        out.push(port_match(s.ports.clone(), src, false));
    }
    if !s.not_ports.is_empty() {
        out.push(port_match(s.not_ports.clone(), src, true));
    }
    Some(())
}

fn port_match(ports: Vec<margay_policy::desired::PortRange>, src: bool, negated: bool) -> Match {
    if src {
        Match::SrcPorts { ports, negated }
    } else {
        Match::DstPorts { ports, negated }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::scenario::{changes_between, net, rule, DesiredBuilder};
    use crate::firewall::sim::{run_hook, Packet, Verdict};
    use margay_policy::desired::{IcmpMatch, PortRange, Protocol};
    use margay_policy::names::Id;

    fn tag(t: &str) -> IpSetId {
        IpSetId::Tag(Id::new(t).expect("tag"))
    }

    fn allow_tcp_from_tag(port: u16, t: &str) -> Rule {
        let mut r = rule(RuleAction::Allow);
        r.protocol = Some(Protocol(6));
        r.dst.ports = vec![PortRange { lo: port, hi: port }];
        r.src.tag = Some(tag(t));
        r
    }

    /// web (cali-a, 10.0.0.1) takes tcp/80 from tag "client"; client
    /// (cali-b, 10.0.0.2) takes nothing in; both send anything out.
    fn two_endpoints() -> DesiredBuilder {
        let mut b = DesiredBuilder::new();
        b.profile(
            "web",
            vec![allow_tcp_from_tag(80, "client")],
            vec![rule(RuleAction::Allow)],
        )
        .profile("client", vec![], vec![rule(RuleAction::Allow)])
        .endpoint("cali-a", "10.0.0.1/32", &["web"])
        .endpoint("cali-b", "10.0.0.2/32", &["client"])
        .set(tag("client"), &["10.0.0.2/32"]);
        b
    }

    /// Compares two rulesets, naming only what differs.
    pub(crate) fn assert_same(a: &Ruleset, b: &Ruleset) {
        let names: BTreeSet<&ObjectName> = a.chains.keys().chain(b.chains.keys()).collect();
        let bad: Vec<_> = names
            .into_iter()
            .filter(|n| a.chains.get(*n) != b.chains.get(*n))
            .map(|n| (n, a.chains.get(n), b.chains.get(n)))
            .collect();
        assert!(bad.is_empty(), "chains differ: {bad:#?}");
        let sets: Vec<_> = a
            .sets
            .keys()
            .chain(b.sets.keys())
            .filter(|n| a.sets.get(*n) != b.sets.get(*n))
            .collect();
        assert!(sets.is_empty(), "sets differ: {sets:?}");
        assert_eq!(a.hooks, b.hooks);
    }

    fn forward(rs: &Ruleset, mut p: Packet) -> Verdict {
        run_hook(rs, Hook::Forward, &mut p)
    }

    #[test]
    fn profiles_tags_and_ports_decide_forwarded_traffic() {
        let rs = lower(&two_endpoints().build(), &FirewallSettings::default());
        let b_to_a = |port| Packet::tcp("cali-b", "cali-a", "10.0.0.2", "10.0.0.1", port);
        assert_eq!(forward(&rs, b_to_a(80)), Verdict::Accept);
        assert_eq!(forward(&rs, b_to_a(81)), Verdict::Drop);
        let a_to_b = Packet::tcp("cali-a", "cali-b", "10.0.0.1", "10.0.0.2", 80);
        assert_eq!(
            forward(&rs, a_to_b.clone()),
            Verdict::Drop,
            "client takes nothing in"
        );
        let mut reply = a_to_b;
        reply.ct = Some(CtState::EstablishedRelated);
        assert_eq!(forward(&rs, reply), Verdict::Accept, "replies pass");
        // Not from a tagged address.
        let spoof = Packet::tcp("cali-b", "cali-a", "10.0.0.9", "10.0.0.1", 80);
        assert_eq!(forward(&rs, spoof), Verdict::Drop);
        // Unknown workload interfaces get nothing through, either way.
        let unknown = Packet::tcp("cali-zz", "eth0", "10.0.0.7", "192.0.2.1", 80);
        assert_eq!(forward(&rs, unknown), Verdict::Drop);
        let to_unknown = Packet::tcp("eth0", "cali-q", "192.0.2.1", "10.0.0.7", 80);
        assert_eq!(forward(&rs, to_unknown), Verdict::Drop);
        // Traffic not involving workloads is not ours to judge.
        let other = Packet::tcp("eth0", "eth1", "192.0.2.1", "198.51.100.1", 80);
        assert_eq!(forward(&rs, other), Verdict::Accept);
    }

    #[test]
    fn tiers_allow_pass_and_drop_when_undecided() {
        let mut b = two_endpoints();
        let mut deny22 = rule(RuleAction::Deny);
        deny22.protocol = Some(Protocol(6));
        deny22.dst.ports = vec![PortRange { lo: 22, hi: 22 }];
        let mut allow81 = rule(RuleAction::Allow);
        allow81.protocol = Some(Protocol(6));
        allow81.dst.ports = vec![PortRange { lo: 81, hi: 81 }];
        let mut pass80 = rule(RuleAction::NextTier);
        pass80.protocol = Some(Protocol(6));
        pass80.dst.ports = vec![PortRange { lo: 80, hi: 80 }];
        b.policy(
            "t1",
            "p1",
            vec![deny22, allow81, pass80],
            vec![rule(RuleAction::NextTier)],
        )
        .tier("cali-a", "t1", &["p1"]);
        let rs = lower(&b.build(), &FirewallSettings::default());
        let b_to_a = |port| Packet::tcp("cali-b", "cali-a", "10.0.0.2", "10.0.0.1", port);
        assert_eq!(
            forward(&rs, b_to_a(81)),
            Verdict::Accept,
            "tier allow beats profile"
        );
        assert_eq!(
            forward(&rs, b_to_a(80)),
            Verdict::Accept,
            "next-tier leaves it to the profile"
        );
        assert_eq!(forward(&rs, b_to_a(22)), Verdict::Drop, "tier deny");
        assert_eq!(
            forward(&rs, b_to_a(82)),
            Verdict::Drop,
            "undecided in a matching tier"
        );
    }

    #[test]
    fn fail_closed_and_missing_profiles_drop() {
        let mut b = two_endpoints();
        b.endpoint("cali-c", "10.0.0.3/32", &[])
            .endpoint("cali-d", "10.0.0.4/32", &["missing"]);
        let rs = lower(&b.build(), &FirewallSettings::default());
        for oif in ["cali-c", "cali-d"] {
            let p = Packet::tcp("cali-b", oif, "10.0.0.2", "10.0.0.3", 80);
            assert_eq!(forward(&rs, p), Verdict::Drop, "to {oif}");
        }
        let out = Packet::tcp("cali-c", "eth0", "10.0.0.3", "192.0.2.1", 80);
        assert_eq!(forward(&rs, out), Verdict::Drop);
    }

    #[test]
    fn endpoint_to_host_follows_the_setting_and_lets_dhcp_in() {
        let mut b = two_endpoints();
        b.profile("mute", vec![], vec![])
            .endpoint("cali-m", "10.0.0.5/32", &["mute"]);
        let desired = b.build();
        let to_host = |iif: &str| Packet::tcp(iif, "", "10.0.0.1", "192.0.2.10", 22);
        let mut dhcp = to_host("cali-m");
        dhcp.proto = 17;
        dhcp.sport = 68;
        dhcp.dport = 67;
        for (action, open, muted) in [
            (EndpointToHostAction::Drop, Verdict::Drop, Verdict::Drop),
            (EndpointToHostAction::Return, Verdict::Accept, Verdict::Drop),
            (EndpointToHostAction::Accept, Verdict::Accept, Verdict::Drop),
        ] {
            let settings = FirewallSettings {
                endpoint_to_host: action,
                ..FirewallSettings::default()
            };
            let rs = lower(&desired, &settings);
            assert_eq!(
                run_hook(&rs, Hook::Input, &mut to_host("cali-a")),
                open,
                "{action:?}"
            );
            assert_eq!(
                run_hook(&rs, Hook::Input, &mut to_host("cali-m")),
                muted,
                "{action:?}"
            );
            assert_eq!(
                run_hook(&rs, Hook::Input, &mut dhcp.clone()),
                Verdict::Accept
            );
            let host = Packet::tcp("eth0", "", "192.0.2.1", "192.0.2.10", 22);
            assert_eq!(
                run_hook(&rs, Hook::Input, &mut host.clone()),
                Verdict::Accept
            );
        }
    }

    #[test]
    fn masquerade_from_masq_pools_to_outside_all_pools() {
        let mut b = two_endpoints();
        b.set(IpSetId::AllPools, &["10.0.0.0/16", "10.1.0.0/16"])
            .set(IpSetId::MasqueradePools, &["10.0.0.0/16"]);
        let rs = lower(&b.build(), &FirewallSettings::default());
        let nat = |src: &str, dst: &str| {
            run_hook(
                &rs,
                Hook::NatPostrouting,
                &mut Packet::tcp("x", "y", src, dst, 80),
            )
        };
        assert_eq!(nat("10.0.0.1", "8.8.8.8"), Verdict::Masquerade);
        assert_eq!(nat("10.0.0.1", "10.1.0.1"), Verdict::Accept);
        assert_eq!(nat("10.1.0.1", "8.8.8.8"), Verdict::Accept);
    }

    #[test]
    fn familyless_rules_with_sets_split_per_family() {
        let mut b = DesiredBuilder::new();
        let mut r = rule(RuleAction::Allow);
        r.src.tag = Some(tag("peers"));
        b.profile("p", vec![r], vec![rule(RuleAction::Allow)])
            .endpoint("cali-a", "10.0.0.1/32", &["p"])
            .set(tag("peers"), &["10.0.0.2/32", "fd00::2/128"]);
        let rs = lower(&b.build(), &FirewallSettings::default());
        let t4 = set_name(&tag("peers"), IpVersion::V4);
        let t6 = set_name(&tag("peers"), IpVersion::V6);
        assert_eq!(rs.sets[&t4].members.len(), 1);
        assert_eq!(rs.sets[&t6].members.len(), 1);
        let v6 = Packet::tcp("eth0", "cali-a", "fd00::2", "fd00::1", 1);
        assert_eq!(forward(&rs, v6), Verdict::Accept);
        let v6_other = Packet::tcp("eth0", "cali-a", "fd00::3", "fd00::1", 1);
        assert_eq!(forward(&rs, v6_other), Verdict::Drop);
    }

    #[test]
    fn missing_sets_read_as_empty() {
        let mut b = DesiredBuilder::new();
        let mut pos = rule(RuleAction::Allow);
        pos.src.tag = Some(tag("nosuch"));
        let mut neg = rule(RuleAction::Allow);
        neg.ip_version = Some(IpVersion::V4);
        neg.src.not_tag = Some(tag("nosuch"));
        b.profile("p", vec![pos], vec![])
            .profile("q", vec![neg], vec![]);
        let rs = lower(&b.build(), &FirewallSettings::default());
        let pi = rule_set_chain(&crate::firewall::scenario::profile_rs(
            "p",
            Direction::Inbound,
        ));
        let qi = rule_set_chain(&crate::firewall::scenario::profile_rs(
            "q",
            Direction::Inbound,
        ));
        assert!(rs.chains[&pi].is_empty(), "in an empty set never matches");
        assert_eq!(
            rs.chains[&qi].len(),
            2,
            "not in an empty set always matches"
        );
        assert!(!format!("{:?}", rs.chains[&qi]).contains("SrcSet"));
    }

    #[test]
    fn names_are_hashed_and_icmp_rules_get_a_family() {
        let mut r = rule(RuleAction::Deny);
        r.protocol = Some(Protocol(58));
        r.icmp = Some(IcmpMatch {
            icmp_type: 128,
            code: None,
        });
        r.src.selector = Some(IpSetId::Selector("role == \"db\"; drop".to_owned()));
        let present = |_: &IpSetId| true;
        let out = lower_rule(&r, false, &present);
        assert_eq!(out.len(), 1);
        assert!(out[0].matches.contains(&Match::Family(IpVersion::V6)));
        let Some(Match::SrcSet { set, .. }) = out[0]
            .matches
            .iter()
            .find(|m| matches!(m, Match::SrcSet { .. }))
        else {
            panic!("no set match");
        };
        assert!(set.as_str().starts_with("margay-s6_"));
        assert!(!set.as_str().contains(' '));
    }

    #[test]
    fn overlapping_pool_cidrs_are_normalised() {
        let nets = [
            net("10.0.0.0/8"),
            net("10.1.0.0/16"),
            net("10.1.2.3/32"),
            net("11.0.0.0/24"),
        ];
        let n = normalize_members(nets.iter());
        assert_eq!(
            n,
            [net("10.0.0.0/8"), net("11.0.0.0/24")]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn dispatch_trees_reach_every_endpoint_and_stay_small() {
        let settings = FirewallSettings::default();
        let mut b = DesiredBuilder::new();
        b.profile(
            "open",
            vec![rule(RuleAction::Allow)],
            vec![rule(RuleAction::Allow)],
        );
        let mut names: Vec<String> = (0..300).map(|i| format!("cali{i:05}")).collect();
        names.extend((0..200u64).map(|i| {
            format!(
                "cali{:011x}",
                crate::firewall::model::fnv1a64(&i.to_le_bytes()) >> 20
            )
        }));
        names.push("cali".to_owned());
        let mut l = Lowerer::new();
        l.lower_all(&b.build(), &settings);
        for (n, name) in names.iter().enumerate() {
            let before = b.build();
            b.endpoint(name, &format!("10.1.{}.{}/32", n / 250, n % 250), &["open"]);
            let after = b.build();
            if n % 37 == 0 || n + 1 == names.len() {
                // Incremental and full lowering agree as the trees split.
                l.update(&after, &changes_between(&before, &after));
                assert_same(l.ruleset(), &lower(&after, &settings));
            } else {
                l.update(&after, &changes_between(&before, &after));
            }
        }
        let rs = l.ruleset().clone();
        for name in &names {
            let p = Packet::tcp(name, "eth0", "10.1.0.1", "192.0.2.1", 80);
            assert_eq!(forward(&rs, p), Verdict::Accept, "{name}");
        }
        for unknown in ["cali99999", "cali0000", "calix", "cali000001"] {
            let p = Packet::tcp(unknown, "eth0", "10.1.0.1", "192.0.2.1", 80);
            assert_eq!(forward(&rs, p), Verdict::Drop, "{unknown}");
        }
        let biggest = rs
            .chains
            .iter()
            .filter(|(n, _)| {
                n.as_str().starts_with("margay-df") || n.as_str().starts_with("margay-dt")
            })
            .map(|(_, r)| r.len())
            .max()
            .unwrap_or(0);
        assert!(
            biggest <= DISPATCH_LEAF + 1 + 16,
            "dispatch chain of {biggest} rules"
        );
    }

    #[test]
    fn one_endpoint_change_touches_few_names() {
        let settings = FirewallSettings::default();
        let mut b = two_endpoints();
        for i in 0..50 {
            b.endpoint(
                &format!("cali{i:02x}x"),
                &format!("10.0.1.{i}/32"),
                &["web"],
            );
        }
        let before = b.build();
        let mut l = Lowerer::new();
        l.lower_all(&before, &settings);
        b.endpoint("cali7fnew", "10.0.2.1/32", &["web"]);
        let after = b.build();
        let dirty = l.update(&after, &changes_between(&before, &after));
        assert_same(l.ruleset(), &lower(&after, &settings));
        // Two endpoint chains and the two dispatch roots.
        assert!(dirty.chains.len() <= 6, "{:?}", dirty.chains);
        assert!(dirty.sets.is_empty());
    }
}

#[cfg(test)]
mod incremental_tests {
    use super::tests::assert_same;
    use super::*;
    use crate::firewall::diff::{apply_to, diff, observed_of};
    use crate::firewall::scenario::{changes_between, rule, DesiredBuilder};
    use margay_policy::desired::{PortRange, Protocol};
    use margay_policy::names::Id;
    use proptest::prelude::*;

    const IFACES: [&str; 6] = ["cali0a", "cali0b", "cali1a", "cali", "tap9", "calixy"];
    const PROFILES: [&str; 3] = ["p0", "p1", "p2"];
    const TAGS: [&str; 3] = ["t0", "t1", "t2"];

    #[derive(Debug, Clone)]
    enum Edit {
        Endpoint {
            ifc: usize,
            profiles: Vec<usize>,
            remove: bool,
        },
        Profile {
            p: usize,
            tag: usize,
            port: u16,
            action: u8,
        },
        DropProfile {
            p: usize,
        },
        Members {
            tag: usize,
            members: Vec<u8>,
        },
        DropTag {
            tag: usize,
        },
        Pools {
            masq: bool,
            n: u8,
        },
        Tier {
            ifc: usize,
            remove: bool,
        },
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (
                0usize..6,
                proptest::collection::vec(0usize..3, 0..3),
                any::<bool>()
            )
                .prop_map(|(ifc, profiles, remove)| Edit::Endpoint {
                    ifc,
                    profiles,
                    remove
                }),
            (0usize..3, 0usize..3, 1u16..100, 0u8..4).prop_map(|(p, tag, port, action)| {
                Edit::Profile {
                    p,
                    tag,
                    port,
                    action,
                }
            }),
            (0usize..3).prop_map(|p| Edit::DropProfile { p }),
            (0usize..3, proptest::collection::vec(0u8..8, 0..5))
                .prop_map(|(tag, members)| Edit::Members { tag, members }),
            (0usize..3).prop_map(|tag| Edit::DropTag { tag }),
            (any::<bool>(), 0u8..4).prop_map(|(masq, n)| Edit::Pools { masq, n }),
            (0usize..6, any::<bool>()).prop_map(|(ifc, remove)| Edit::Tier { ifc, remove }),
        ]
    }

    fn tag(i: usize) -> IpSetId {
        IpSetId::Tag(Id::new(TAGS[i]).expect("tag"))
    }

    fn apply_edit(b: &mut DesiredBuilder, e: &Edit) {
        match e {
            Edit::Endpoint {
                ifc,
                profiles,
                remove,
            } => {
                let name = IFACES[*ifc];
                if *remove {
                    let i = crate::firewall::scenario::iface(name);
                    b.state.endpoints.remove(&i);
                    b.state.programs.remove(&i);
                } else {
                    let ps: Vec<&str> = profiles.iter().map(|p| PROFILES[*p]).collect();
                    b.endpoint(name, &format!("10.9.0.{ifc}/32"), &ps);
                }
            }
            Edit::Profile {
                p,
                tag: t,
                port,
                action,
            } => {
                let mut r = rule(match action {
                    0 => RuleAction::Allow,
                    1 => RuleAction::Deny,
                    2 => RuleAction::NextTier,
                    _ => RuleAction::Log,
                });
                r.protocol = Some(Protocol(6));
                r.dst.ports = vec![PortRange {
                    lo: *port,
                    hi: *port,
                }];
                r.src.tag = Some(tag(*t));
                b.profile(PROFILES[*p], vec![r.clone()], vec![r]);
            }
            Edit::DropProfile { p } => {
                for d in [Direction::Inbound, Direction::Outbound] {
                    b.state
                        .rule_sets
                        .remove(&crate::firewall::scenario::profile_rs(PROFILES[*p], d));
                }
            }
            Edit::Members { tag: t, members } => {
                let m: Vec<String> = members
                    .iter()
                    .map(|x| {
                        if x % 2 == 0 {
                            format!("10.9.1.{x}/32")
                        } else {
                            format!("fd00::{x}/128")
                        }
                    })
                    .collect();
                let refs: Vec<&str> = m.iter().map(String::as_str).collect();
                b.set(tag(*t), &refs);
            }
            Edit::DropTag { tag: t } => {
                b.state.ip_sets.remove(&tag(*t));
            }
            Edit::Pools { masq, n } => {
                let nets = ["10.9.0.0/16", "10.9.1.0/24", "fd00::/64", "10.8.0.0/16"];
                let id = if *masq {
                    IpSetId::MasqueradePools
                } else {
                    IpSetId::AllPools
                };
                b.set(id, &nets[..usize::from(*n)]);
            }
            Edit::Tier { ifc, remove } => {
                let i = crate::firewall::scenario::iface(IFACES[*ifc]);
                let Some(p) = b.state.programs.get_mut(&i) else {
                    return;
                };
                if *remove {
                    p.inbound.tiers.clear();
                    p.outbound.tiers.clear();
                    return;
                }
                let mut allow = rule(RuleAction::Allow);
                allow.src.not_tag = Some(tag(0));
                b.policy(
                    "tier1",
                    "pol",
                    vec![allow],
                    vec![rule(RuleAction::NextTier)],
                );
                if b.state
                    .programs
                    .get(&i)
                    .is_some_and(|p| p.inbound.tiers.is_empty())
                {
                    b.tier(IFACES[*ifc], "tier1", &["pol"]);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn incremental_lowering_matches_full_lowering(edits in proptest::collection::vec(edit(), 1..25)) {
            let settings = FirewallSettings {
                interface_prefixes: vec!["cali".into(), "tap".into(), "bad prefix!".into()],
                ..FirewallSettings::default()
            };
            let mut b = DesiredBuilder::new();
            let mut l = Lowerer::new();
            l.lower_all(&b.build(), &settings);
            let mut observed = observed_of(l.ruleset());
            for e in &edits {
                let before = b.build();
                apply_edit(&mut b, e);
                let after = b.build();
                let dirty = l.update(&after, &changes_between(&before, &after));
                let full = lower(&after, &settings);
                assert_same(l.ruleset(), &full);
                let ops = diff(l.ruleset(), &observed, Some(&dirty));
                apply_to(&mut observed, &ops);
                prop_assert_eq!(&observed, &observed_of(&full));
            }
        }
    }
}
