//! The desired dataplane state of this host, as plain backend-neutral data.
//!
//! This is the contract between the calculation (which builds it) and the
//! dataplane (which makes the kernel match it). Nothing here knows nft or
//! iptables syntax: rules speak of nets, ports and named address sets.
//! Alongside the state, [`Changes`] lists which keys changed since the
//! dataplane last took them, so a dataplane never rescans everything: for a
//! dirty key, "present in [`DesiredState`]" means create/replace and "absent"
//! means delete.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::names::{Id, InterfaceName, MacAddr};

/// IP family of a rule or address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Traffic direction relative to a workload endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Towards the workload (`inbound_rules`).
    Inbound,
    /// From the workload (`outbound_rules`).
    Outbound,
}

/// Identity of a workload endpoint: `host/<host>/workload/<orch>/<workload>/endpoint/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadEndpointKey {
    /// Host segment (anything without `/`).
    pub host: String,
    /// Orchestrator segment (anything without `/`).
    pub orchestrator: String,
    /// Workload segment (anything without `/`).
    pub workload: String,
    /// Endpoint id.
    pub endpoint: Id,
}

/// A local, active workload endpoint that this host must plumb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// Which datastore endpoint this is.
    pub key: WorkloadEndpointKey,
    /// Host-side interface (validated, carries an interface prefix).
    pub iface: InterfaceName,
    /// Workload MAC, for a static neighbour entry.
    pub mac: Option<MacAddr>,
    /// IPv4 addresses (/32).
    pub ipv4: Vec<Ipv4Net>,
    /// IPv6 addresses (/128).
    pub ipv6: Vec<Ipv6Net>,
}

/// A per-interface setting the host side of a local endpoint needs, said
/// in what it does; the dataplane decides how (on Linux: a sysctl each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InterfaceSetting {
    /// Strict reverse-path filtering: drop IPv4 packets from the workload
    /// whose source would not be routed back out of its interface.
    StrictReversePathFilter,
    /// Let IPv4 packets to and from loopback addresses be routed over the
    /// interface (the workload reaches host services on 127.0.0.0/8).
    RouteLocalnet,
    /// Answer the workload's ARP requests with the host's MAC (proxy ARP),
    /// so its default gateway can be any address.
    ProxyArp,
    /// Answer proxy ARP at once instead of after a random delay.
    ProxyArpWithoutDelay,
    /// Answer the workload's IPv6 neighbour solicitations (proxy NDP).
    ProxyNdp,
}

impl LocalEndpoint {
    /// The interface settings this endpoint needs: the IPv4 ones always,
    /// proxy NDP when it has IPv6 addresses.
    pub fn interface_settings(&self) -> Vec<InterfaceSetting> {
        let mut v = vec![
            InterfaceSetting::StrictReversePathFilter,
            InterfaceSetting::RouteLocalnet,
            InterfaceSetting::ProxyArp,
            InterfaceSetting::ProxyArpWithoutDelay,
        ];
        if !self.ipv6.is_empty() {
            v.push(InterfaceSetting::ProxyNdp);
        }
        v
    }
}

/// Where a desired route points.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteTarget {
    /// `<ip> dev <iface> scope link`: a local workload.
    Interface(InterfaceName),
    /// `<ip> via <gw>`: a workload on another host, via that host's `bird_ip`.
    Gateway(IpAddr),
}

/// A rule set is the rule list of one profile or one policy, in one direction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleSetOwner {
    /// `/policy/profile/<id>/rules`.
    Profile(Id),
    /// `/policy/tier/<tier>/policy/<id>`.
    Policy {
        /// The tier.
        tier: Id,
        /// The policy within the tier.
        policy: Id,
    },
}

/// Identity of a rule set (becomes one chain in the kernel).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleSetId {
    /// Whose rules these are.
    pub owner: RuleSetOwner,
    /// Which list (`inbound_rules` or `outbound_rules`).
    pub direction: Direction,
}

/// Identity of a named address set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpSetId {
    /// Addresses of every endpoint (any host) whose profiles carry the tag.
    Tag(Id),
    /// Addresses of every endpoint whose labels satisfy the selector; the
    /// string is the selector's canonical text (may hold any characters:
    /// dataplanes must hash it, never paste it).
    Selector(String),
    /// CIDRs of every IP pool (both families).
    AllPools,
    /// CIDRs of the pools with `masquerade: true`.
    MasqueradePools,
}

/// What a rule does when all its matches hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleAction {
    /// Accept (in a profile) or accept-and-stop (in a policy).
    Allow,
    /// Drop.
    Deny,
    /// Leave this tier (in a profile: acts as allow).
    NextTier,
    /// Log and continue with the next rule.
    Log,
}

/// An IP protocol, by number (tcp = 6, udp = 17, icmp = 1, icmpv6 = 58, sctp = 132, udplite = 136).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Protocol(pub u8);

impl Protocol {
    /// True for protocols that carry ports (tcp, udp, sctp, udplite).
    pub fn has_ports(self) -> bool {
        matches!(self.0, 6 | 17 | 132 | 136)
    }
}

/// An inclusive port range; a single port is `lo == hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port (>= lo).
    pub hi: u16,
}

/// ICMP type with an optional code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcmpMatch {
    /// Type 0-254.
    pub icmp_type: u8,
    /// Code 0-255, only with a type.
    pub code: Option<u8>,
}

/// Matches on one side (source or destination) of a packet. Each field is
/// ANDed; `not_*` are the negated (`!key`) forms. An empty port list means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SideMatch {
    /// `src_net` / `dst_net`.
    pub net: Option<IpNet>,
    /// `!src_net` / `!dst_net`.
    pub not_net: Option<IpNet>,
    /// `src_tag` / `dst_tag` → set [`IpSetId::Tag`].
    pub tag: Option<IpSetId>,
    /// `!src_tag` / `!dst_tag`.
    pub not_tag: Option<IpSetId>,
    /// `src_selector` / `dst_selector` → set [`IpSetId::Selector`].
    pub selector: Option<IpSetId>,
    /// `!src_selector` / `!dst_selector`.
    pub not_selector: Option<IpSetId>,
    /// `src_ports` / `dst_ports` (any of these).
    pub ports: Vec<PortRange>,
    /// `!src_ports` / `!dst_ports` (none of these).
    pub not_ports: Vec<PortRange>,
}

/// One validated rule, with tags and selectors resolved to set ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The verdict.
    pub action: RuleAction,
    /// The family the rule applies to, fully resolved: `Some(V4)` when the
    /// rule says `ip_version: 4`, names an IPv4 net, or uses protocol icmp
    /// (and likewise V6 / icmpv6); `None` means both families.
    pub ip_version: Option<IpVersion>,
    /// `protocol`.
    pub protocol: Option<Protocol>,
    /// `!protocol`.
    pub not_protocol: Option<Protocol>,
    /// Source matches.
    pub src: SideMatch,
    /// Destination matches.
    pub dst: SideMatch,
    /// `icmp_type`/`icmp_code` (only with protocol icmp/icmpv6).
    pub icmp: Option<IcmpMatch>,
    /// `!icmp_type`/`!icmp_code`.
    pub not_icmp: Option<IcmpMatch>,
    /// `log_prefix`, validated to `[A-Za-z0-9 _.:-]{0,27}`.
    pub log_prefix: Option<String>,
}

/// The rules of one profile or policy in one direction, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RuleSet {
    /// Rules in datastore order.
    pub rules: Vec<Rule>,
}

/// One tier's part of an endpoint's program: its policies that match the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TierProgram {
    /// The tier (ordered by its `order`, then name).
    pub tier: Id,
    /// Matching policies of the tier, in policy order (never empty).
    pub policies: Vec<RuleSetId>,
}

/// The ordered filter program of one endpoint in one direction:
/// tiers, then profiles, then the final drop (always implied).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DirectionProgram {
    /// Tiers with at least one matching policy, in tier order.
    pub tiers: Vec<TierProgram>,
    /// Profile rule sets in the endpoint's profile order. Empty when the
    /// program fails closed.
    pub profiles: Vec<RuleSetId>,
    /// True when the endpoint has no profiles or one of them is missing or
    /// invalid: the profile stage drops everything.
    pub fail_closed: bool,
}

/// Both directions of a local endpoint's filter program.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EndpointProgram {
    /// Traffic to the workload.
    pub inbound: DirectionProgram,
    /// Traffic from the workload.
    pub outbound: DirectionProgram,
}

/// A host endpoint of this host (`/host/<this host>/endpoint/<id>`), with its
/// filter program. Which interfaces it binds to is the dataplane's to decide
/// from the kernel's interfaces: by `name` when given, else every interface
/// carrying one of `expected_addrs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHostEndpoint {
    /// The endpoint id (the key's last segment).
    pub id: Id,
    /// `name`: the interface it binds to, when given.
    pub name: Option<InterfaceName>,
    /// `expected_ipv4_addrs` then `expected_ipv6_addrs`, sorted, without repeats.
    pub expected_addrs: Vec<IpAddr>,
    /// Its program: `inbound` governs traffic that reaches the host itself
    /// through a bound interface, `outbound` traffic the host itself sends
    /// out of one. Same tiers, profiles and fail-closed drop as workloads.
    pub program: EndpointProgram,
}

/// Everything this host's dataplane should look like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// Local active endpoints, by host-side interface.
    pub endpoints: BTreeMap<InterfaceName, LocalEndpoint>,
    /// Filter program per local endpoint interface (same keys as `endpoints`).
    pub programs: BTreeMap<InterfaceName, EndpointProgram>,
    /// Rule sets referenced by at least one program (unreferenced ones are absent).
    pub rule_sets: BTreeMap<RuleSetId, RuleSet>,
    /// Address sets referenced by at least one present rule set, plus the two
    /// pool sets (always present, possibly empty). Members are /32, /128 or pool CIDRs.
    pub ip_sets: BTreeMap<IpSetId, BTreeSet<IpNet>>,
    /// Routes: local endpoint addresses (dev) and remote endpoint addresses (via bird_ip).
    pub routes: BTreeMap<IpNet, RouteTarget>,
    /// This host's valid host endpoints, by id (their rule sets are in
    /// `rule_sets`, their tag and selector memberships in `ip_sets`).
    pub host_endpoints: BTreeMap<Id, LocalHostEndpoint>,
}

/// What changed in [`DesiredState`] since the last [`Changes`] was taken.
/// For each key: present in the state means upsert, absent means delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Endpoints added, changed or removed.
    pub endpoints: BTreeSet<InterfaceName>,
    /// Programs added, changed or removed.
    pub programs: BTreeSet<InterfaceName>,
    /// Rule sets added, changed or removed.
    pub rule_sets: BTreeSet<RuleSetId>,
    /// Sets created or removed (member changes of surviving sets are below).
    pub ip_sets: BTreeSet<IpSetId>,
    /// Per set, the members whose presence changed.
    pub ip_set_members: BTreeMap<IpSetId, BTreeSet<IpNet>>,
    /// Routes added, changed or removed.
    pub routes: BTreeSet<IpNet>,
    /// Host endpoints added, changed (document or program) or removed.
    pub host_endpoints: BTreeSet<Id>,
    /// The firewall settings changed: set by the agent when the resolved
    /// firewall settings differ, never by the calculation (a datastore
    /// setting such as `LogSeverityScreen` must not re-lower the firewall).
    pub settings: bool,
    /// Something this host's BGP configuration is derived from may have
    /// changed (a BGP key, a host's `bird_ip`, a pool, a local workload
    /// route, the interface prefixes): render it again
    /// (`CalcEngine::bgp_config`). Remote endpoints and policy never set it.
    pub bgp: bool,
}

impl Changes {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self == &Changes::default()
    }

    /// Folds `later` into `self` (both taken against the same state).
    pub fn merge(&mut self, later: Changes) {
        self.endpoints.extend(later.endpoints);
        self.programs.extend(later.programs);
        self.rule_sets.extend(later.rule_sets);
        self.ip_sets.extend(later.ip_sets);
        for (set, members) in later.ip_set_members {
            self.ip_set_members.entry(set).or_default().extend(members);
        }
        self.routes.extend(later.routes);
        self.host_endpoints.extend(later.host_endpoints);
        self.settings |= later.settings;
        self.bgp |= later.bgp;
    }
}
