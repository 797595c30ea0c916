//! The kernel object names lowering generates: the fixed base chains, and
//! the chains and sets named after endpoints, rule sets and address sets
//! (validated or hashed by [`ObjectName::generate`]).

use margay_policy::desired::{Direction, IpSetId, IpVersion, RuleSetId, RuleSetOwner};
use margay_policy::names::InterfaceName;

use crate::firewall::model::ObjectName;

pub use crate::firewall::model::net_family;

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
/// Chain the output hook calls (only while a host endpoint is bound).
pub const CHAIN_OUTPUT: &str = "margay-output";
/// Failsafe ports and own endpoints towards the host.
pub const CHAIN_FAILSAFE_IN: &str = "margay-fsafe-in";
/// Failsafe ports and own endpoints from the host.
pub const CHAIN_FAILSAFE_OUT: &str = "margay-fsafe-out";
/// Workload-to-host traffic by destination address, to the inbound program
/// of the host endpoint owning it (`DefaultEndpointToHostAction = RETURN`).
pub const CHAIN_HEP_DST: &str = "margay-hep-dst";

/// The chain of an endpoint's program in one direction.
pub fn endpoint_chain(direction: Direction, iface: &InterfaceName) -> ObjectName {
    let kind = match direction {
        Direction::Inbound => "to",
        Direction::Outbound => "fr",
    };
    ObjectName::generate(kind, iface.as_str())
}

/// The chains of a bound host interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostChain {
    /// `margay-hi-<iface>`: traffic reaching the host through it.
    In,
    /// `margay-ho-<iface>`: traffic the host sends out of it.
    Out,
    /// `margay-hin-<iface>`: the host endpoint's inbound program.
    InProgram,
    /// `margay-hout-<iface>`: the host endpoint's outbound program.
    OutProgram,
}

impl HostChain {
    /// All four, in a fixed order.
    pub const ALL: [HostChain; 4] = [
        HostChain::In,
        HostChain::Out,
        HostChain::InProgram,
        HostChain::OutProgram,
    ];
}

/// The `kind` chain of the host interface `iface`.
pub fn host_chain(kind: HostChain, iface: &InterfaceName) -> ObjectName {
    let tag = match kind {
        HostChain::In => "hi",
        HostChain::Out => "ho",
        HostChain::InProgram => "hin",
        HostChain::OutProgram => "hout",
    };
    ObjectName::generate(tag, iface.as_str())
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

/// Both families, in the order rules and sets are lowered.
pub(super) const FAMILIES: [IpVersion; 2] = [IpVersion::V4, IpVersion::V6];
