//! What `margay run` and `margay plan` share to reach the kernel: the
//! agent's settings mapped into dataplane and firewall configuration, and
//! opening the dataplane they describe.

use std::net::SocketAddr;

use anyhow::Context as _;
use margay_config::{DataplaneKind, Settings};
use margay_dataplane::firewall::lower::{EndpointToHostAction, FirewallSettings};
use margay_dataplane::firewall::BackendKind;
use margay_dataplane::{Dataplane, DataplaneConfig};

/// The firewall settings carried by the agent's settings, with the etcd
/// endpoints the agent talks to (resolved once at start:
/// [`crate::host_guard::resolve_etcd_endpoints`]).
pub fn firewall_settings(s: &Settings, own_endpoints: &[SocketAddr]) -> FirewallSettings {
    let ports = |v: &[margay_config::ProtoPort]| {
        v.iter()
            .map(|p| (p.protocol.number(), p.port))
            .collect::<Vec<_>>()
    };
    FirewallSettings {
        interface_prefixes: s.interface_prefixes.clone(),
        endpoint_to_host: match s.default_endpoint_to_host_action {
            margay_config::EndpointToHostAction::Drop => EndpointToHostAction::Drop,
            margay_config::EndpointToHostAction::Return => EndpointToHostAction::Return,
            margay_config::EndpointToHostAction::Accept => EndpointToHostAction::Accept,
        },
        failsafe_inbound: ports(&s.failsafe_inbound_host_ports),
        failsafe_outbound: ports(&s.failsafe_outbound_host_ports),
        own_endpoints: own_endpoints.to_vec(),
    }
}

/// The dataplane backend for the `dataplane` setting.
pub fn backend_kind(kind: DataplaneKind) -> BackendKind {
    match kind {
        DataplaneKind::Nftables => BackendKind::Nftables,
        DataplaneKind::Iptables => BackendKind::Iptables,
        DataplaneKind::None => BackendKind::None,
    }
}

/// The dataplane configuration for these settings (our own namespace).
pub fn dataplane_config(s: &Settings) -> DataplaneConfig {
    DataplaneConfig {
        backend: backend_kind(s.dataplane),
        route_protocol: s.route_protocol,
        netns: None,
    }
}

/// Opens (does not start) the dataplane for `settings`.
pub async fn open_dataplane(settings: &Settings) -> anyhow::Result<Dataplane> {
    Dataplane::new(dataplane_config(settings))
        .await
        .context("cannot open the dataplane")
}
