//! The datastore settings that shape the lowered firewall: workload
//! interface prefixes, what happens to traffic from a workload to the host,
//! and what stays open through host endpoints whatever their policy (the
//! failsafe ports and the agent's own datastore endpoints).

use std::net::SocketAddr;

use margay_policy::names::InterfaceName;

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
    /// `FailsafeInboundHostPorts` as (protocol, port): always open towards
    /// the host on interfaces with a host endpoint, before any policy.
    pub failsafe_inbound: Vec<(u8, u16)>,
    /// `FailsafeOutboundHostPorts` as (protocol, port): always open from the
    /// host out of interfaces with a host endpoint, before any policy.
    pub failsafe_outbound: Vec<(u8, u16)>,
    /// The datastore endpoints the agent itself talks to (resolved): always
    /// reachable through host endpoints, whatever the policy and failsafe say.
    pub own_endpoints: Vec<SocketAddr>,
}

/// The defaults of `FailsafeInboundHostPorts` / `FailsafeOutboundHostPorts`
/// (Felix's, as the config crate documents them).
impl Default for FirewallSettings {
    fn default() -> Self {
        FirewallSettings {
            interface_prefixes: vec!["cali".to_owned()],
            endpoint_to_host: EndpointToHostAction::Drop,
            failsafe_inbound: vec![
                (6, 22),
                (17, 68),
                (6, 179),
                (6, 2379),
                (6, 2380),
                (6, 6666),
                (6, 6667),
            ],
            failsafe_outbound: vec![
                (17, 53),
                (17, 67),
                (6, 179),
                (6, 2379),
                (6, 2380),
                (6, 6666),
                (6, 6667),
            ],
            own_endpoints: Vec::new(),
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
