//! margay's settings: one typed [`Settings`] struct, built from layers.
//!
//! Precedence, highest first: command line, environment, TOML config file,
//! this host's datastore config, global datastore config, default. Every
//! setting has one canonical name ([`setting`]) from which its TOML key,
//! long option, `MARGAY_*` variable and (where Felix had one) datastore name
//! derive.
//!
//! This crate is pure: it takes text that the agent already read (TOML text,
//! environment pairs, the command-line map, the datastore settings map) and
//! does no I/O. Bad local values (flag, environment, file) are errors that
//! name the setting, the value and its source; bad datastore values are
//! warnings, and the next lower layer applies instead, so a typo in etcd can
//! never stop an agent.
#![forbid(unsafe_code)]

pub mod error;
pub mod layers;
pub mod setting;
pub mod value;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use error::{Origin, SettingsError, SettingsErrors};
pub use layers::{Inputs, Resolved};
pub use setting::Setting;
pub use value::{
    DataplaneKind, EndpointToHostAction, InterHostRoutes, LogFormat, LogLevel, PortProtocol,
    ProtoPort,
};

use value::Reason;

/// Where margay looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/margay/margay.toml";

/// Every setting of a margay agent, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// This host's name in the datastore.
    pub hostname: String,
    /// etcd client URLs (at least one).
    pub etcd_endpoints: Vec<String>,
    /// CA bundle for etcd's server certificate.
    pub etcd_ca_file: Option<PathBuf>,
    /// Client certificate for etcd.
    pub etcd_cert_file: Option<PathBuf>,
    /// Key of the client certificate.
    pub etcd_key_file: Option<PathBuf>,
    /// Root of the Calico keys (`/calico`), without trailing `/`.
    pub etcd_prefix: String,
    /// Firewall backend.
    pub dataplane: DataplaneKind,
    /// Firewall re-read period (zero: never).
    pub refresh_interval: Duration,
    /// Metrics and health listen address.
    pub metrics_addr: SocketAddr,
    /// Log line format.
    pub log_format: LogFormat,
    /// Log level.
    pub log_level: LogLevel,
    /// Interface name prefixes of local workloads (at least one).
    pub interface_prefixes: Vec<String>,
    /// Workload-to-host verdict.
    pub default_endpoint_to_host_action: EndpointToHostAction,
    /// Status report period in seconds (0: no reports).
    pub reporting_interval_secs: u64,
    /// Status report lease in seconds (>= 1).
    pub reporting_ttl_secs: u64,
    /// Whether per-endpoint status is written.
    pub endpoint_reporting_enabled: bool,
    /// Inbound host ports always open.
    pub failsafe_inbound_host_ports: Vec<ProtoPort>,
    /// Outbound host ports always open.
    pub failsafe_outbound_host_ports: Vec<ProtoPort>,
    /// Netlink route protocol number stamped on our routes.
    pub route_protocol: u8,
    /// How routes to other hosts' workloads are made.
    pub inter_host_routes: InterHostRoutes,
    /// The BIRD configuration file margay writes (absolute).
    pub bird_config: PathBuf,
    /// BIRD's control socket (absolute).
    pub bird_socket: PathBuf,
}

impl Settings {
    /// Resolves settings from `inputs` (see [`layers::resolve`]).
    pub fn resolve(inputs: &Inputs) -> Result<Resolved, SettingsErrors> {
        layers::resolve(inputs)
    }

    /// All defaults, with `hostname` as the host name.
    pub fn defaults(hostname: &str) -> Settings {
        let mut s = Settings::blank(hostname);
        for spec in setting::SPECS {
            if spec.setting != Setting::Hostname {
                // The table's defaults are unit-tested to parse.
                let _ = s.set(spec.setting, spec.default);
            }
        }
        s
    }

    /// A value of every field, overwritten by [`Settings::defaults`] and the layers.
    fn blank(hostname: &str) -> Settings {
        Settings {
            hostname: hostname.to_owned(),
            etcd_endpoints: Vec::new(),
            etcd_ca_file: None,
            etcd_cert_file: None,
            etcd_key_file: None,
            etcd_prefix: String::new(),
            dataplane: DataplaneKind::Nftables,
            refresh_interval: Duration::ZERO,
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_format: LogFormat::Text,
            log_level: LogLevel::Info,
            interface_prefixes: Vec::new(),
            default_endpoint_to_host_action: EndpointToHostAction::Drop,
            reporting_interval_secs: 0,
            reporting_ttl_secs: 0,
            endpoint_reporting_enabled: false,
            failsafe_inbound_host_ports: Vec::new(),
            failsafe_outbound_host_ports: Vec::new(),
            route_protocol: 0,
            inter_host_routes: InterHostRoutes::Direct,
            bird_config: PathBuf::new(),
            bird_socket: PathBuf::new(),
        }
    }

    /// Parses `text` as the value of `setting` and stores it.
    pub fn set(&mut self, setting: Setting, text: &str) -> Result<(), Reason> {
        use value::*;
        match setting {
            Setting::Hostname => self.hostname = parse_hostname(text)?,
            Setting::EtcdEndpoints => self.etcd_endpoints = parse_endpoints(text)?,
            Setting::EtcdCaFile => self.etcd_ca_file = parse_optional_path(text)?,
            Setting::EtcdCertFile => self.etcd_cert_file = parse_optional_path(text)?,
            Setting::EtcdKeyFile => self.etcd_key_file = parse_optional_path(text)?,
            Setting::EtcdPrefix => self.etcd_prefix = parse_prefix(text)?,
            Setting::Dataplane => self.dataplane = DataplaneKind::parse(text)?,
            Setting::RefreshInterval => self.refresh_interval = parse_seconds(text)?,
            Setting::MetricsAddr => self.metrics_addr = parse_socket_addr(text)?,
            Setting::LogFormat => self.log_format = LogFormat::parse(text)?,
            Setting::LogLevel => self.log_level = LogLevel::parse(text)?,
            Setting::InterfacePrefix => self.interface_prefixes = parse_interface_prefixes(text)?,
            Setting::DefaultEndpointToHostAction => {
                self.default_endpoint_to_host_action = EndpointToHostAction::parse(text)?
            }
            Setting::ReportingIntervalSecs => {
                self.reporting_interval_secs = parse_whole_seconds(text, 0)?
            }
            Setting::ReportingTtlSecs => self.reporting_ttl_secs = parse_whole_seconds(text, 1)?,
            Setting::EndpointReportingEnabled => {
                self.endpoint_reporting_enabled = parse_bool(text)?
            }
            Setting::FailsafeInboundHostPorts => {
                self.failsafe_inbound_host_ports = parse_port_list(text)?
            }
            Setting::FailsafeOutboundHostPorts => {
                self.failsafe_outbound_host_ports = parse_port_list(text)?
            }
            Setting::RouteProtocol => self.route_protocol = parse_route_protocol(text)?,
            Setting::InterHostRoutes => self.inter_host_routes = InterHostRoutes::parse(text)?,
            Setting::BirdConfig => self.bird_config = parse_absolute_path(text)?,
            Setting::BirdSocket => self.bird_socket = parse_absolute_path(text)?,
        }
        Ok(())
    }

    /// The value of `setting` as canonical text (what [`Settings::set`] reads).
    pub fn text(&self, setting: Setting) -> String {
        use value::*;
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        match setting {
            Setting::Hostname => self.hostname.clone(),
            Setting::EtcdEndpoints => self.etcd_endpoints.join(","),
            Setting::EtcdCaFile => path(&self.etcd_ca_file),
            Setting::EtcdCertFile => path(&self.etcd_cert_file),
            Setting::EtcdKeyFile => path(&self.etcd_key_file),
            Setting::EtcdPrefix => self.etcd_prefix.clone(),
            Setting::Dataplane => self.dataplane.to_string(),
            Setting::RefreshInterval => render_seconds(self.refresh_interval),
            Setting::MetricsAddr => self.metrics_addr.to_string(),
            Setting::LogFormat => self.log_format.to_string(),
            Setting::LogLevel => self.log_level.to_string(),
            Setting::InterfacePrefix => self.interface_prefixes.join(","),
            Setting::DefaultEndpointToHostAction => {
                self.default_endpoint_to_host_action.to_string()
            }
            Setting::ReportingIntervalSecs => self.reporting_interval_secs.to_string(),
            Setting::ReportingTtlSecs => self.reporting_ttl_secs.to_string(),
            Setting::EndpointReportingEnabled => self.endpoint_reporting_enabled.to_string(),
            Setting::FailsafeInboundHostPorts => {
                render_port_list(&self.failsafe_inbound_host_ports)
            }
            Setting::FailsafeOutboundHostPorts => {
                render_port_list(&self.failsafe_outbound_host_ports)
            }
            Setting::RouteProtocol => self.route_protocol.to_string(),
            Setting::InterHostRoutes => self.inter_host_routes.to_string(),
            Setting::BirdConfig => self.bird_config.display().to_string(),
            Setting::BirdSocket => self.bird_socket.display().to_string(),
        }
    }

    /// The settings whose values differ between `self` and `other`.
    pub fn changed(&self, other: &Settings) -> Vec<Setting> {
        Setting::all()
            .filter(|s| self.text(*s) != other.text(*s))
            .collect()
    }

    /// Where Calico data is read: `<etcd_prefix>/v1` (e.g. `/calico/v1`).
    pub fn data_prefix(&self) -> String {
        format!("{}/v1", self.etcd_prefix)
    }

    /// Where status is written: `<etcd_prefix>/felix/v1` (e.g. `/calico/felix/v1`).
    pub fn status_prefix(&self) -> String {
        format!("{}/felix/v1", self.etcd_prefix)
    }

    /// Where the BGP keys are read: `<etcd_prefix>/bgp/v1` (e.g. `/calico/bgp/v1`).
    pub fn bgp_prefix(&self) -> String {
        format!("{}/bgp/v1", self.etcd_prefix)
    }

    /// True when any etcd endpoint uses `https://`.
    pub fn etcd_uses_tls(&self) -> bool {
        self.etcd_endpoints
            .iter()
            .any(|e| e.starts_with("https://"))
    }

    /// The refresh interval, or `None` when refreshing is off.
    pub fn refresh_period(&self) -> Option<Duration> {
        (!self.refresh_interval.is_zero()).then_some(self.refresh_interval)
    }

    /// The status report period, or `None` when reporting is off.
    pub fn reporting_period(&self) -> Option<Duration> {
        (self.reporting_interval_secs > 0)
            .then(|| Duration::from_secs(self.reporting_interval_secs))
    }

    /// Every setting as `(key, canonical text)`, in table order.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        Setting::all().map(|s| (s.key(), self.text(s))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_parses_and_renders_back() {
        let defaults = Settings::defaults("h1");
        for spec in setting::SPECS {
            if spec.setting == Setting::Hostname {
                continue;
            }
            let mut fresh = Settings::blank("h1");
            assert_eq!(
                fresh.set(spec.setting, spec.default),
                Ok(()),
                "{}",
                spec.key
            );
            assert_eq!(defaults.text(spec.setting), spec.default, "{}", spec.key);
        }
    }

    #[test]
    fn defaults_match_the_issue() {
        let s = Settings::defaults("h1");
        assert_eq!(s.etcd_endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(s.dataplane, DataplaneKind::Nftables);
        assert_eq!(s.refresh_interval, Duration::from_secs(30));
        assert_eq!(s.metrics_addr, SocketAddr::from(([127, 0, 0, 1], 9091)));
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.log_level, LogLevel::Info);
        assert_eq!(s.interface_prefixes, vec!["cali"]);
        assert_eq!(
            s.default_endpoint_to_host_action,
            EndpointToHostAction::Drop
        );
        assert_eq!((s.reporting_interval_secs, s.reporting_ttl_secs), (30, 90));
        assert!(!s.endpoint_reporting_enabled);
        assert_eq!(s.route_protocol, 80);
        assert_eq!(s.data_prefix(), "/calico/v1");
        assert_eq!(s.status_prefix(), "/calico/felix/v1");
        assert_eq!(s.bgp_prefix(), "/calico/bgp/v1");
        assert_eq!(s.inter_host_routes, InterHostRoutes::Direct);
        assert_eq!(s.bird_config, PathBuf::from("/etc/bird/bird.conf"));
        assert_eq!(s.bird_socket, PathBuf::from("/run/bird/bird.ctl"));
        assert!(s.failsafe_inbound_host_ports.contains(&ProtoPort {
            protocol: PortProtocol::Tcp,
            port: 22
        }));
        assert!(s.failsafe_outbound_host_ports.contains(&ProtoPort {
            protocol: PortProtocol::Udp,
            port: 53
        }));
    }

    #[test]
    fn changed_lists_exactly_the_differences() {
        let a = Settings::defaults("h1");
        let mut b = a.clone();
        assert!(a.changed(&b).is_empty());
        b.set(Setting::InterfacePrefix, "tap,cali").expect("valid");
        b.set(Setting::LogLevel, "debug").expect("valid");
        assert_eq!(
            a.changed(&b),
            vec![Setting::LogLevel, Setting::InterfacePrefix]
        );
    }
}
