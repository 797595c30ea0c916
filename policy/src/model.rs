//! Typed Calico v1 datastore objects, after parsing and validation.
//!
//! `update` turns a raw `(key, Option<value>)` from etcd into an [`Update`]
//! holding these types (or an error naming the key and the reason); the
//! calculation consumes nothing else.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::bgp::AsNumber;
use crate::desired::{IcmpMatch, IpVersion, PortRange, Protocol, RuleAction, WorkloadEndpointKey};
use crate::names::{Id, InterfaceName, MacAddr};
use crate::selector::Selector;

/// Labels: string to string.
pub type Labels = BTreeMap<String, String>;

/// `state` of a workload endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// Plumb it.
    Active,
    /// Known but not plumbed (its addresses still count for tags/selectors).
    Inactive,
}

/// A validated workload endpoint document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEndpoint {
    /// `state`.
    pub state: EndpointState,
    /// `name`: the host-side interface.
    pub name: InterfaceName,
    /// `mac`.
    pub mac: Option<MacAddr>,
    /// `profile_ids` (or legacy `profile_id`).
    pub profile_ids: Vec<Id>,
    /// `ipv4_nets` (all /32).
    pub ipv4_nets: Vec<Ipv4Net>,
    /// `ipv6_nets` (all /128).
    pub ipv6_nets: Vec<Ipv6Net>,
    /// `ipv4_gateway`.
    pub ipv4_gateway: Option<IpAddr>,
    /// `ipv6_gateway`.
    pub ipv6_gateway: Option<IpAddr>,
    /// `labels`.
    pub labels: Labels,
}

/// A validated host endpoint document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEndpoint {
    /// `name`: the interface, when given.
    pub name: Option<InterfaceName>,
    /// `expected_ipv4_addrs`.
    pub expected_ipv4_addrs: Vec<IpAddr>,
    /// `expected_ipv6_addrs`.
    pub expected_ipv6_addrs: Vec<IpAddr>,
    /// `profile_ids`.
    pub profile_ids: Vec<Id>,
    /// `labels`.
    pub labels: Labels,
}

/// One side of a datastore rule, before tags/selectors become set ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSide {
    /// `*_net`.
    pub net: Option<IpNet>,
    /// `!*_net`.
    pub not_net: Option<IpNet>,
    /// `*_tag`.
    pub tag: Option<Id>,
    /// `!*_tag`.
    pub not_tag: Option<Id>,
    /// `*_selector`.
    pub selector: Option<Selector>,
    /// `!*_selector`.
    pub not_selector: Option<Selector>,
    /// `*_ports`.
    pub ports: Vec<PortRange>,
    /// `!*_ports`.
    pub not_ports: Vec<PortRange>,
}

/// A validated datastore rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `action` (default allow).
    pub action: RuleAction,
    /// Resolved family, as in [`crate::desired::Rule::ip_version`].
    pub ip_version: Option<IpVersion>,
    /// `protocol`.
    pub protocol: Option<Protocol>,
    /// `!protocol`.
    pub not_protocol: Option<Protocol>,
    /// `src_*`.
    pub src: RuleSide,
    /// `dst_*`.
    pub dst: RuleSide,
    /// `icmp_type` / `icmp_code`.
    pub icmp: Option<IcmpMatch>,
    /// `!icmp_type` / `!icmp_code`.
    pub not_icmp: Option<IcmpMatch>,
    /// `log_prefix`.
    pub log_prefix: Option<String>,
}

/// `/policy/profile/<id>/rules`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileRules {
    /// `inbound_rules`.
    pub inbound: Vec<Rule>,
    /// `outbound_rules`.
    pub outbound: Vec<Rule>,
}

/// `order` of a tier or policy: a number, or `"default"` (sorts last).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub enum Order {
    /// A finite number.
    Number(f64),
    /// `"default"` or absent: after every number.
    Default,
}

/// `/policy/tier/<tier>/metadata`.
#[derive(Debug, Clone, PartialEq)]
pub struct TierMetadata {
    /// `order`.
    pub order: Order,
}

/// `/policy/tier/<tier>/policy/<id>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `selector`: which endpoints it applies to.
    pub selector: Selector,
    /// `order` within the tier.
    pub order: Order,
    /// `inbound_rules`.
    pub inbound: Vec<Rule>,
    /// `outbound_rules`.
    pub outbound: Vec<Rule>,
}

/// `/ipam/v4/pool/<cidr>` or `/ipam/v6/pool/<cidr>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPool {
    /// `cidr`.
    pub cidr: IpNet,
    /// `masquerade`.
    pub masquerade: bool,
}

/// Identity of a host endpoint: `host/<host>/endpoint/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostEndpointKey {
    /// Host segment.
    pub host: String,
    /// Endpoint id.
    pub endpoint: Id,
}

/// What a datastore key is, independent of its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKey {
    /// `/Ready`.
    Ready,
    /// `/config/<Name>`.
    GlobalConfig(String),
    /// `/host/<host>/config/<Name>`.
    HostConfig { host: String, name: String },
    /// `/host/<host>/bird_ip`.
    HostIp(String),
    /// A workload endpoint.
    WorkloadEndpoint(WorkloadEndpointKey),
    /// A host endpoint.
    HostEndpoint(HostEndpointKey),
    /// `/policy/profile/<id>/rules`.
    ProfileRules(Id),
    /// `/policy/profile/<id>/tags`.
    ProfileTags(Id),
    /// `/policy/profile/<id>/labels`.
    ProfileLabels(Id),
    /// `/policy/tier/<tier>/metadata`.
    TierMetadata(Id),
    /// `/policy/tier/<tier>/policy/<id>`.
    Policy { tier: Id, policy: Id },
    /// `/ipam/v4/pool/<cidr>` or v6: the key's CIDR.
    IpPool(IpNet),
    /// A key of the BGP tree (`<root>/bgp/v1/...`).
    Bgp(BgpKey),
}

/// A key under `<root>/bgp/v1` (see `DATAMODEL.md`, "BGP"). Host segments
/// are kept only to tell hosts apart: no host name ever reaches
/// [`crate::bgp::BgpConfig`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BgpKey {
    /// `global/as_num`.
    GlobalAsNumber,
    /// `global/node_mesh`.
    NodeMesh,
    /// `global/peer_v4/<ip>` or `global/peer_v6/<ip>` (the family is the address's).
    GlobalPeer(IpAddr),
    /// `host/<host>/ip_addr_v4`.
    HostAddressV4(String),
    /// `host/<host>/ip_addr_v6`.
    HostAddressV6(String),
    /// `host/<host>/as_num`.
    HostAsNumber(String),
    /// `host/<host>/peer_v4/<ip>` or `host/<host>/peer_v6/<ip>`.
    HostPeer { host: String, peer: IpAddr },
}

/// A validated value of a [`BgpKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BgpValue {
    /// `global/as_num`, `host/<host>/as_num`.
    AsNumber(AsNumber),
    /// `global/node_mesh`: `{"enabled": ...}`.
    NodeMesh { enabled: bool },
    /// A peer document; its address is the key's.
    Peer { as_num: AsNumber },
    /// `ip_addr_v4` / `ip_addr_v6`: of the key's family, not special-purpose.
    Address(IpAddr),
}

/// A parsed value for a [`ResourceKey`]; `None` in [`Update::value`] is a deletion.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `/Ready` is `true` (any other string: not ready).
    Ready(bool),
    /// A plain-string setting.
    Config(String),
    /// A host's IPv4 address.
    HostIp(IpAddr),
    /// A workload endpoint.
    WorkloadEndpoint(WorkloadEndpoint),
    /// A host endpoint.
    HostEndpoint(HostEndpoint),
    /// Profile rules.
    ProfileRules(ProfileRules),
    /// Profile tags.
    ProfileTags(Vec<Id>),
    /// Profile labels.
    ProfileLabels(Labels),
    /// Tier metadata.
    TierMetadata(TierMetadata),
    /// A policy.
    Policy(Policy),
    /// An IP pool.
    IpPool(IpPool),
    /// A BGP key's value.
    Bgp(BgpValue),
}

/// One datastore change: a key and its new value (`None` = deleted).
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// Which object.
    pub key: ResourceKey,
    /// Its new value, or `None` when deleted.
    pub value: Option<Value>,
}
