//! The one canonical table of margay's settings.
//!
//! Each [`Setting`] has exactly one snake_case key. From it derive the TOML
//! key (the same), the command-line long option (`_` → `-`), and the
//! environment variable (`MARGAY_` + upper case). Settings that Felix also
//! read from the datastore carry their CamelCase datastore name. Nothing else
//! in margay spells these names.

use std::fmt;

/// One setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setting {
    /// This host's name in the datastore.
    Hostname,
    /// etcd client URLs.
    EtcdEndpoints,
    /// CA bundle that signs etcd's server certificate.
    EtcdCaFile,
    /// Client certificate presented to etcd.
    EtcdCertFile,
    /// Key of the client certificate.
    EtcdKeyFile,
    /// Root of the Calico keys in etcd.
    EtcdPrefix,
    /// Firewall backend.
    Dataplane,
    /// How often the firewall is re-read and repaired.
    RefreshInterval,
    /// Where metrics and health are served.
    MetricsAddr,
    /// Log line format.
    LogFormat,
    /// Log level.
    LogLevel,
    /// Interface name prefixes of local workloads.
    InterfacePrefix,
    /// Workload-to-host traffic verdict.
    DefaultEndpointToHostAction,
    /// Status report period.
    ReportingIntervalSecs,
    /// Status report lease.
    ReportingTtlSecs,
    /// Per-endpoint status reports.
    EndpointReportingEnabled,
    /// Inbound host ports always open.
    FailsafeInboundHostPorts,
    /// Outbound host ports always open.
    FailsafeOutboundHostPorts,
    /// Netlink protocol number stamped on our routes.
    RouteProtocol,
    /// How routes to other hosts' workloads are made: direct, bgp or none.
    InterHostRoutes,
    /// The BIRD configuration file margay writes.
    BirdConfig,
    /// BIRD's control socket.
    BirdSocket,
}

/// The static facts about one setting.
#[derive(Debug)]
pub struct Spec {
    /// The setting.
    pub setting: Setting,
    /// snake_case key: TOML key, and (with `-`) the long option.
    pub key: &'static str,
    /// CamelCase name under `/calico/v1/config/` and `/host/<h>/config/`.
    pub datastore: Option<&'static str>,
    /// Whether `margay run` has a command-line option for it.
    pub cli: bool,
    /// The default as text (empty for the hostname: the kernel's).
    pub default: &'static str,
    /// Whether a running agent can take a new value without a restart.
    pub live: bool,
    /// One line for help texts.
    pub help: &'static str,
}

/// Felix's default inbound failsafe ports.
pub const DEFAULT_FAILSAFE_INBOUND: &str =
    "tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:6666,tcp:6667";
/// Felix's default outbound failsafe ports.
pub const DEFAULT_FAILSAFE_OUTBOUND: &str =
    "udp:53,udp:67,tcp:179,tcp:2379,tcp:2380,tcp:6666,tcp:6667";

/// Every setting, in the order they are documented.
pub static SPECS: &[Spec] = &[
    Spec {
        setting: Setting::Hostname,
        key: "hostname",
        datastore: None,
        cli: true,
        default: "",
        live: false,
        help: "this host's name in the datastore [default: the kernel's hostname]",
    },
    Spec {
        setting: Setting::EtcdEndpoints,
        key: "etcd_endpoints",
        datastore: None,
        cli: true,
        default: "http://127.0.0.1:2379",
        live: false,
        help: "comma-separated etcd client URLs",
    },
    Spec {
        setting: Setting::EtcdCaFile,
        key: "etcd_ca_file",
        datastore: None,
        cli: true,
        default: "",
        live: false,
        help: "PEM CA bundle that signs etcd's certificate",
    },
    Spec {
        setting: Setting::EtcdCertFile,
        key: "etcd_cert_file",
        datastore: None,
        cli: true,
        default: "",
        live: false,
        help: "PEM client certificate for etcd",
    },
    Spec {
        setting: Setting::EtcdKeyFile,
        key: "etcd_key_file",
        datastore: None,
        cli: true,
        default: "",
        live: false,
        help: "PEM key of the etcd client certificate",
    },
    Spec {
        setting: Setting::EtcdPrefix,
        key: "etcd_prefix",
        datastore: None,
        cli: true,
        default: "/calico",
        live: false,
        help: "root of the Calico keys: data under <prefix>/v1, status under <prefix>/felix/v1",
    },
    Spec {
        setting: Setting::Dataplane,
        key: "dataplane",
        datastore: None,
        cli: true,
        default: "nftables",
        live: false,
        help: "firewall backend: nftables, iptables or none",
    },
    Spec {
        setting: Setting::RefreshInterval,
        key: "refresh_interval",
        datastore: None,
        cli: true,
        default: "30",
        live: true,
        help: "seconds between firewall re-reads and repairs (0 = never)",
    },
    Spec {
        setting: Setting::MetricsAddr,
        key: "metrics_addr",
        datastore: None,
        cli: true,
        default: "127.0.0.1:9091",
        live: false,
        help: "HOST:PORT serving /metrics, /livez and /readyz",
    },
    Spec {
        setting: Setting::LogFormat,
        key: "log_format",
        datastore: None,
        cli: true,
        default: "text",
        live: false,
        help: "log format: text or json",
    },
    Spec {
        setting: Setting::LogLevel,
        key: "log_level",
        datastore: Some("LogSeverityScreen"),
        cli: true,
        default: "info",
        live: true,
        help: "log level: error, warn, info, debug or trace",
    },
    Spec {
        setting: Setting::InterfacePrefix,
        key: "interface_prefix",
        datastore: Some("InterfacePrefix"),
        cli: false,
        default: "cali",
        live: true,
        help: "comma-separated interface name prefixes of local workloads",
    },
    Spec {
        setting: Setting::DefaultEndpointToHostAction,
        key: "default_endpoint_to_host_action",
        datastore: Some("DefaultEndpointToHostAction"),
        cli: false,
        default: "DROP",
        live: true,
        help: "workload-to-host traffic: DROP, RETURN or ACCEPT",
    },
    Spec {
        setting: Setting::ReportingIntervalSecs,
        key: "reporting_interval_secs",
        datastore: Some("ReportingIntervalSecs"),
        cli: false,
        default: "30",
        live: true,
        help: "seconds between status reports (0 = no reports)",
    },
    Spec {
        setting: Setting::ReportingTtlSecs,
        key: "reporting_ttl_secs",
        datastore: Some("ReportingTTLSecs"),
        cli: false,
        default: "90",
        live: true,
        help: "lifetime of a status report",
    },
    Spec {
        setting: Setting::EndpointReportingEnabled,
        key: "endpoint_reporting_enabled",
        datastore: Some("EndpointReportingEnabled"),
        cli: false,
        default: "false",
        live: true,
        help: "report per-endpoint status",
    },
    Spec {
        setting: Setting::FailsafeInboundHostPorts,
        key: "failsafe_inbound_host_ports",
        datastore: Some("FailsafeInboundHostPorts"),
        cli: false,
        default: DEFAULT_FAILSAFE_INBOUND,
        live: true,
        help: "host ports always open inbound (tcp:N,udp:N,... or none)",
    },
    Spec {
        setting: Setting::FailsafeOutboundHostPorts,
        key: "failsafe_outbound_host_ports",
        datastore: Some("FailsafeOutboundHostPorts"),
        cli: false,
        default: DEFAULT_FAILSAFE_OUTBOUND,
        live: true,
        help: "host ports always open outbound (tcp:N,udp:N,... or none)",
    },
    Spec {
        setting: Setting::RouteProtocol,
        key: "route_protocol",
        datastore: None,
        cli: false,
        default: "80",
        live: false,
        help: "netlink route protocol number marking margay's routes (5-255)",
    },
    Spec {
        setting: Setting::InterHostRoutes,
        key: "inter_host_routes",
        datastore: Some("InterHostRoutes"),
        cli: true,
        default: "direct",
        live: true,
        help: "routes to other hosts' workloads: direct (via their bird_ip), bgp (BIRD) or none",
    },
    Spec {
        setting: Setting::BirdConfig,
        key: "bird_config",
        datastore: None,
        cli: true,
        default: "/etc/bird/bird.conf",
        live: false,
        help: "BIRD configuration file margay owns and writes (absolute path)",
    },
    Spec {
        setting: Setting::BirdSocket,
        key: "bird_socket",
        datastore: None,
        cli: true,
        default: "/run/bird/bird.ctl",
        live: false,
        help: "BIRD's control socket (absolute path)",
    },
];

impl Setting {
    /// Every setting.
    pub fn all() -> impl Iterator<Item = Setting> {
        SPECS.iter().map(|s| s.setting)
    }

    /// This setting's row of the table.
    pub fn spec(self) -> &'static Spec {
        // The table holds every variant in declaration order (unit-tested).
        &SPECS[self as usize]
    }

    /// The snake_case key (TOML key).
    pub fn key(self) -> &'static str {
        self.spec().key
    }

    /// The long command-line option, e.g. `--etcd-endpoints`.
    pub fn flag(self) -> String {
        format!("--{}", self.key().replace('_', "-"))
    }

    /// The environment variable, e.g. `MARGAY_ETCD_ENDPOINTS`.
    pub fn env_var(self) -> String {
        format!("MARGAY_{}", self.key().to_ascii_uppercase())
    }

    /// The datastore name, e.g. `InterfacePrefix`, when the datastore may set it.
    pub fn datastore_name(self) -> Option<&'static str> {
        self.spec().datastore
    }

    /// Whether a running agent can take a new value without a restart.
    pub fn is_live(self) -> bool {
        self.spec().live
    }

    /// Looks a setting up by its snake_case key (`-` accepted for `_`).
    pub fn from_key(key: &str) -> Option<Setting> {
        let key = key.replace('-', "_");
        SPECS.iter().find(|s| s.key == key).map(|s| s.setting)
    }

    /// Looks a setting up by its datastore name (exact case, as Felix).
    pub fn from_datastore_name(name: &str) -> Option<Setting> {
        SPECS
            .iter()
            .find(|s| s.datastore == Some(name))
            .map(|s| s.setting)
    }

    /// Looks a setting up by its `MARGAY_*` environment variable.
    pub fn from_env_var(var: &str) -> Option<Setting> {
        let rest = var.strip_prefix("MARGAY_")?;
        SPECS
            .iter()
            .find(|s| {
                s.key.eq_ignore_ascii_case(rest) && rest.bytes().all(|b| !b.is_ascii_lowercase())
            })
            .map(|s| s.setting)
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Calico-era environment variables read for drop-in use, and the setting
/// each one feeds. `MARGAY_*` variables win over these.
pub const LEGACY_ENV: &[(&str, Setting)] = &[
    ("ETCD_ENDPOINTS", Setting::EtcdEndpoints),
    ("ETCD_CA_CERT_FILE", Setting::EtcdCaFile),
    ("ETCD_CERT_FILE", Setting::EtcdCertFile),
    ("ETCD_KEY_FILE", Setting::EtcdKeyFile),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_declaration_order_and_names_are_unique() {
        for (i, spec) in SPECS.iter().enumerate() {
            assert_eq!(spec.setting as usize, i, "{} out of order", spec.key);
        }
        let mut keys: Vec<_> = SPECS.iter().map(|s| s.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), SPECS.len());
        for spec in SPECS {
            assert!(spec
                .key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
            if let Some(ds) = spec.datastore {
                assert_eq!(Setting::from_datastore_name(ds), Some(spec.setting));
            }
        }
    }

    #[test]
    fn names_derive_from_the_key() {
        let s = Setting::EtcdEndpoints;
        assert_eq!(s.flag(), "--etcd-endpoints");
        assert_eq!(s.env_var(), "MARGAY_ETCD_ENDPOINTS");
        assert_eq!(Setting::from_key("etcd-endpoints"), Some(s));
        assert_eq!(Setting::from_env_var("MARGAY_ETCD_ENDPOINTS"), Some(s));
        assert_eq!(Setting::from_env_var("MARGAY_etcd_endpoints"), None);
        assert_eq!(Setting::from_env_var("ETCD_ENDPOINTS"), None);
        assert_eq!(
            Setting::ReportingTtlSecs.datastore_name(),
            Some("ReportingTTLSecs")
        );
        assert_eq!(
            Setting::LogLevel.datastore_name(),
            Some("LogSeverityScreen")
        );
    }

    #[test]
    fn bgp_settings_have_the_names_the_issue_fixes() {
        let routes = Setting::InterHostRoutes;
        assert_eq!(routes.flag(), "--inter-host-routes");
        assert_eq!(routes.env_var(), "MARGAY_INTER_HOST_ROUTES");
        assert_eq!(routes.datastore_name(), Some("InterHostRoutes"));
        assert!(routes.is_live());
        for (setting, flag, var) in [
            (Setting::BirdConfig, "--bird-config", "MARGAY_BIRD_CONFIG"),
            (Setting::BirdSocket, "--bird-socket", "MARGAY_BIRD_SOCKET"),
        ] {
            assert_eq!(setting.flag(), flag);
            assert_eq!(setting.env_var(), var);
            assert_eq!(setting.datastore_name(), None, "{setting} is local only");
            assert!(!setting.is_live(), "{setting} needs a restart");
            assert!(setting.spec().cli);
        }
    }
}
