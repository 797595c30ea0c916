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
//! * Dispatch: `margay-disp-fr` / `margay-disp-to` hold one rule per bucket
//!   (the interface prefix plus one more character, matched as a prefix)
//!   going to a bucket chain (`margay-dfr-<key>` / `margay-dto-<key>`) that
//!   holds one exact-name rule per endpoint going to its endpoint chain, then
//!   drop. An unknown workload interface therefore ends in a drop, and a
//!   one-endpoint change rewrites one small bucket chain, not a list of
//!   every endpoint. (Dispatch is plain rules so that every backend renders
//!   it; a backend may render a bucket chain as a map if it wants.)
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
use super::model::{
    Action, AddressSet, CtState, GenericRule, Hook, Match, ObjectName, Ruleset,
};

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

/// A dispatch bucket: endpoints whose interface starts with `key`; `exact`
/// when the interface *is* the key (it equals a prefix), then the top-level
/// dispatch matches it by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct BucketKey {
    key: String,
    exact: bool,
}

/// Keeps the lowered [`Ruleset`] and updates it incrementally.
#[derive(Debug, Default)]
pub struct Lowerer {
    settings: Option<FirewallSettings>,
    prefixes: Vec<String>,
    ruleset: Ruleset,
    /// Endpoints per dispatch bucket.
    buckets: BTreeMap<BucketKey, BTreeSet<InterfaceName>>,
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
        *self = Lowerer {
            settings: Some(settings.clone()),
            prefixes: settings.valid_prefixes(),
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
        let mut dirty_buckets = BTreeSet::new();
        for iface in desired.programs.keys() {
            self.relower_program(desired, iface, &mut sink, &mut dirty_buckets);
        }
        self.relower_buckets(&dirty_buckets, &mut sink);
        self.lower_dispatch_tops();
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
        let mut dirty_buckets = BTreeSet::new();
        for iface in &programs {
            self.relower_program(desired, iface, &mut dirty, &mut dirty_buckets);
        }
        let tops_before: Vec<BucketKey> = self.bucket_keys();
        self.relower_buckets(&dirty_buckets, &mut dirty);
        if self.bucket_keys() != tops_before {
            self.lower_dispatch_tops();
            dirty.chains.insert(ObjectName::fixed(CHAIN_DISPATCH_FROM));
            dirty.chains.insert(ObjectName::fixed(CHAIN_DISPATCH_TO));
        }
        dirty
    }

    fn bucket_keys(&self) -> Vec<BucketKey> {
        self.buckets.keys().cloned().collect()
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

    fn bucket_of(&self, iface: &InterfaceName) -> Option<BucketKey> {
        let name = iface.as_str();
        let prefix = self.prefixes.iter().find(|p| name.starts_with(p.as_str()))?;
        if name.len() == prefix.len() {
            return Some(BucketKey {
                key: name.to_owned(),
                exact: true,
            });
        }
        // Interface names are ASCII, so byte slicing is on a char boundary.
        let key = name.get(..prefix.len() + 1)?.to_owned();
        Some(BucketKey { key, exact: false })
    }

    fn relower_program(
        &mut self,
        desired: &DesiredState,
        iface: &InterfaceName,
        dirty: &mut DirtyNames,
        dirty_buckets: &mut BTreeSet<BucketKey>,
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
        let bucket = self.bucket_of(iface);
        let program = desired.programs.get(iface).filter(|_| bucket.is_some());
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
        if let Some(b) = bucket {
            let members = self.buckets.entry(b.clone()).or_default();
            if program.is_some() {
                members.insert(iface.clone());
            } else {
                members.remove(iface);
            }
            if members.is_empty() {
                self.buckets.remove(&b);
            }
            dirty_buckets.insert(b);
        }
    }

    fn bucket_chain(key: &BucketKey, direction: Direction) -> ObjectName {
        let kind = match direction {
            Direction::Inbound => "dto",
            Direction::Outbound => "dfr",
        };
        ObjectName::generate(kind, &key.key)
    }

    fn relower_buckets(&mut self, keys: &BTreeSet<BucketKey>, dirty: &mut DirtyNames) {
        for key in keys.iter().filter(|k| !k.exact) {
            for direction in [Direction::Inbound, Direction::Outbound] {
                let chain = Self::bucket_chain(key, direction);
                match self.buckets.get(key) {
                    Some(ifaces) => {
                        let mut rules: Vec<GenericRule> = ifaces
                            .iter()
                            .map(|i| dispatch_rule(direction, i.as_str(), false, endpoint_chain(direction, i)))
                            .collect();
                        rules.push(rule(vec![], Action::Drop));
                        self.ruleset.chains.insert(chain.clone(), rules);
                    }
                    None => {
                        self.ruleset.chains.remove(&chain);
                    }
                }
                dirty.chains.insert(chain);
            }
        }
    }

    fn lower_dispatch_tops(&mut self) {
        let mut keys: Vec<&BucketKey> = self.buckets.keys().collect();
        // Exact names first, then longer keys before shorter ones, so a key
        // that extends another (overlapping prefixes) is tried first.
        keys.sort_by(|a, b| {
            b.exact
                .cmp(&a.exact)
                .then(b.key.len().cmp(&a.key.len()))
                .then(a.key.cmp(&b.key))
        });
        for (direction, top) in [
            (Direction::Inbound, CHAIN_DISPATCH_TO),
            (Direction::Outbound, CHAIN_DISPATCH_FROM),
        ] {
            let mut rules = Vec::with_capacity(keys.len() + 1);
            for k in &keys {
                let target = if k.exact {
                    self.buckets
                        .get(*k)
                        .and_then(|s| s.iter().next())
                        .map(|i| endpoint_chain(direction, i))
                } else {
                    Some(Self::bucket_chain(k, direction))
                };
                if let Some(target) = target {
                    rules.push(dispatch_rule(direction, &k.key, !k.exact, target));
                }
            }
            rules.push(rule(vec![], Action::Drop));
            self.ruleset.chains.insert(ObjectName::fixed(top), rules);
        }
    }

    fn lower_base_chains(&mut self, to_host: EndpointToHostAction) {
        let chains = &mut self.ruleset.chains;
        chains.insert(ObjectName::fixed(CHAIN_FORWARD), forward_chain(&self.prefixes));
        chains.insert(ObjectName::fixed(CHAIN_INPUT), input_chain(&self.prefixes));
        chains.insert(ObjectName::fixed(CHAIN_WL_TO_HOST), wl_to_host_chain(to_host));
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

fn dispatch_rule(direction: Direction, name: &str, prefix: bool, target: ObjectName) -> GenericRule {
    rule(vec![iface_match(direction, name, prefix)], Action::Goto(target))
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
                rules.push(rule(vec![no_verdict()], Action::Jump(rule_set_chain(policy))));
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
        out.extend(action_rules(&r.action, is_profile, r.log_prefix.as_deref(), matches));
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
            rule(matches, Action::SetMark { value: bit, mask: bit }),
            rule(vec![Match::Mark { value: bit, mask: bit }], Action::Return),
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
        && p
            .bytes()
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
    let same_family = |n: &IpNet| family.map_or(true, |f| f == net_family(n));
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
    for (id, negated) in [(&s.tag, false), (&s.selector, false), (&s.not_tag, true), (&s.not_selector, true)] {
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
