//! Layering tests: precedence between command line, environment, file and
//! datastore layers, and the errors and warnings each layer reports.

use super::*;
use crate::{DataplaneKind, EndpointToHostAction, InterHostRoutes, LogLevel};

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn inputs() -> Inputs {
    Inputs {
        kernel_hostname: Some("kernel-host".into()),
        ..Inputs::default()
    }
}

fn resolve_ok(inputs: &Inputs) -> Resolved {
    resolve(inputs).unwrap_or_else(|e| panic!("should resolve: {e}"))
}

#[test]
fn defaults_apply_when_nothing_is_given() {
    let r = resolve_ok(&inputs());
    assert_eq!(r.settings, Settings::defaults("kernel-host"));
    assert_eq!(r.origins[&Setting::Hostname], Origin::Kernel);
    assert_eq!(r.origins[&Setting::Dataplane], Origin::Default);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

#[test]
fn each_layer_beats_every_lower_one() {
    // One setting present in all six layers; peel them off from the top.
    let mut i = inputs();
    i.command_line = map(&[("log_level", "error")]);
    i.environment = map(&[("MARGAY_LOG_LEVEL", "warn")]);
    i.config_file = Some("log_level = \"info\"\n".into());
    i.host_config = map(&[("LogSeverityScreen", "DEBUG")]);
    i.global_config = map(&[("LogSeverityScreen", "trace")]);
    let expected = [
        (LogLevel::Error, Origin::CommandLine("--log-level".into())),
        (
            LogLevel::Warn,
            Origin::Environment("MARGAY_LOG_LEVEL".into()),
        ),
        (LogLevel::Info, Origin::ConfigFile("log_level".into())),
        (LogLevel::Debug, Origin::HostKey("LogSeverityScreen".into())),
        (
            LogLevel::Trace,
            Origin::GlobalKey("LogSeverityScreen".into()),
        ),
    ];
    for (level, origin) in expected {
        let r = resolve_ok(&i);
        assert_eq!(r.settings.log_level, level);
        assert_eq!(r.origins[&Setting::LogLevel], origin);
        drop_winning_layer(&mut i);
    }
    let r = resolve_ok(&i);
    assert_eq!(r.settings.log_level, LogLevel::Info);
    assert_eq!(r.origins[&Setting::LogLevel], Origin::Default);
}

#[test]
fn layers_mix_per_setting() {
    let mut i = inputs();
    i.command_line = map(&[("hostname", "h1")]);
    i.environment = map(&[("MARGAY_DATAPLANE", "iptables"), ("PATH", "/bin")]);
    i.config_file = Some(
        "dataplane = \"none\"\nrefresh_interval = 5\netcd_endpoints = [\"http://a:1\", \"http://b:2\"]\n"
            .into(),
    );
    i.global_config = map(&[("InterfacePrefix", "tap,cali"), ("SomeFelixThing", "x")]);
    let s = resolve_ok(&i).settings;
    assert_eq!(s.hostname, "h1");
    assert_eq!(s.dataplane, DataplaneKind::Iptables);
    assert_eq!(s.refresh_interval.as_secs(), 5);
    assert_eq!(s.etcd_endpoints, vec!["http://a:1", "http://b:2"]);
    assert_eq!(s.interface_prefixes, vec!["tap", "cali"]);
}

#[test]
fn datastore_cannot_set_local_only_settings() {
    let mut i = inputs();
    // Not datastore names, and the datastore name of the log level is not its key.
    i.global_config = map(&[("EtcdEndpoints", "http://evil:1"), ("log_level", "trace")]);
    let s = resolve_ok(&i).settings;
    assert_eq!(s.etcd_endpoints, vec!["http://127.0.0.1:2379"]);
    assert_eq!(s.log_level, LogLevel::Info);
}

#[test]
fn calico_era_environment_is_read_below_margay_variables() {
    let mut i = inputs();
    i.environment = map(&[
        (
            "ETCD_ENDPOINTS",
            "http://10.0.0.1:2379,http://10.0.0.2:2379",
        ),
        ("ETCD_CA_CERT_FILE", ""),
        ("ETCD_CERT_FILE", ""),
        ("ETCD_KEY_FILE", ""),
    ]);
    let r = resolve_ok(&i);
    assert_eq!(r.settings.etcd_endpoints.len(), 2);
    assert_eq!(r.settings.etcd_ca_file, None);
    assert_eq!(
        r.origins[&Setting::EtcdEndpoints],
        Origin::Environment("ETCD_ENDPOINTS".into())
    );
    i.environment.insert(
        "MARGAY_ETCD_ENDPOINTS".into(),
        "http://10.9.9.9:2379".into(),
    );
    assert_eq!(
        resolve_ok(&i).settings.etcd_endpoints,
        vec!["http://10.9.9.9:2379"]
    );
    // Config file is below both.
    i.config_file = Some("etcd_endpoints = \"http://file:1\"".into());
    assert_eq!(
        resolve_ok(&i).settings.etcd_endpoints,
        vec!["http://10.9.9.9:2379"]
    );

    let mut old = inputs();
    old.environment = map(&[("ETCD_AUTHORITY", "10.1.1.1:4001"), ("ETCD_SCHEME", "http")]);
    assert_eq!(
        resolve_ok(&old).settings.etcd_endpoints,
        vec!["http://10.1.1.1:4001"]
    );
}

#[test]
fn tls_files_with_https_endpoints() {
    let mut i = inputs();
    i.environment = map(&[
        ("ETCD_ENDPOINTS", "https://10.0.0.1:2379"),
        ("ETCD_CA_CERT_FILE", "/etc/ca.pem"),
        ("ETCD_CERT_FILE", "/etc/cert.pem"),
        ("ETCD_KEY_FILE", "/etc/key.pem"),
    ]);
    let s = resolve_ok(&i).settings;
    assert!(s.etcd_uses_tls());
    assert_eq!(
        s.etcd_key_file.as_deref(),
        Some(std::path::Path::new("/etc/key.pem"))
    );
}

#[test]
fn local_errors_name_setting_value_and_source() {
    let mut i = inputs();
    i.environment = map(&[("MARGAY_DATAPLANE", "ebpf")]);
    i.command_line = map(&[("refresh_interval", "soon")]);
    i.config_file = Some("metrics_addr = \"nowhere\"\n".into());
    let err = resolve(&i).expect_err("three bad values");
    assert_eq!(err.0.len(), 3, "{err}");
    let text = err.to_string();
    assert!(text.contains(
        "invalid dataplane \"ebpf\" (from environment variable MARGAY_DATAPLANE): expected one of nftables, iptables, none"
    ), "{text}");
    assert!(
        text.contains("invalid refresh_interval \"soon\" (from command line --refresh-interval)"),
        "{text}"
    );
    assert!(
        text.contains("invalid metrics_addr \"nowhere\" (from config file key metrics_addr)"),
        "{text}"
    );
}

#[test]
fn a_bad_local_value_is_not_replaced_by_a_lower_layer() {
    let mut i = inputs();
    i.environment = map(&[("MARGAY_INTERFACE_PREFIX", "bad prefix")]);
    i.global_config = map(&[("InterfacePrefix", "tap")]);
    let err = resolve(&i).expect_err("bad env value");
    assert!(matches!(
        &err.0[..],
        [SettingsError::Invalid {
            setting: Setting::InterfacePrefix,
            ..
        }]
    ));
}

#[test]
fn a_datastore_prefix_matching_loopback_is_refused_and_the_lower_layer_stays() {
    let mut i = inputs();
    i.global_config = map(&[("InterfacePrefix", "lo")]);
    let r = resolve_ok(&i);
    assert_eq!(r.settings.interface_prefixes, vec!["cali"]);
    assert!(
        r.warnings
            .iter()
            .any(|w| matches!(w, SettingsError::Invalid {
            setting: Setting::InterfacePrefix, reason, ..
        } if reason.contains("loopback"))),
        "{:?}",
        r.warnings
    );
}

#[test]
fn bad_datastore_values_warn_and_fall_through() {
    let mut i = inputs();
    i.host_config = map(&[("DefaultEndpointToHostAction", "MAYBE")]);
    i.global_config = map(&[
        ("DefaultEndpointToHostAction", "ACCEPT"),
        ("ReportingTTLSecs", "-5"),
    ]);
    let r = resolve_ok(&i);
    assert_eq!(
        r.settings.default_endpoint_to_host_action,
        EndpointToHostAction::Accept
    );
    assert_eq!(r.settings.reporting_ttl_secs, 90);
    assert_eq!(r.origins[&Setting::ReportingTtlSecs], Origin::Default);
    let text: Vec<String> = r.warnings.iter().map(ToString::to_string).collect();
    assert!(text.iter().any(|t| t.contains(
        "invalid default_endpoint_to_host_action \"MAYBE\" (from host config key DefaultEndpointToHostAction)"
    )), "{text:?}");
    assert!(
        text.iter()
            .any(|t| t.contains("global config key ReportingTTLSecs")),
        "{text:?}"
    );
}

#[test]
fn unknown_keys_and_bad_toml_are_errors() {
    let mut i = inputs();
    i.config_file = Some("dataplan = \"nft\"\n[section]\nx = 1\n".into());
    let err = resolve(&i).expect_err("unknown keys");
    let text = err.to_string();
    assert!(
        text.contains("unknown setting \"dataplan\" (from config file key dataplan)"),
        "{text}"
    );
    assert!(text.contains("unknown setting \"section\""), "{text}");

    i.config_file = Some("dataplane = [[1]]".into());
    let err = resolve(&i).expect_err("nested list");
    assert_eq!(
        err.0,
        vec![SettingsError::TomlType {
            key: "dataplane".into()
        }]
    );

    i.config_file = Some("dataplane = ".into());
    assert!(matches!(
        &resolve(&i).expect_err("bad toml").0[..],
        [SettingsError::Toml(_)]
    ));

    i.config_file = None;
    i.command_line = map(&[("no_such_option", "1")]);
    assert!(resolve(&i).is_err());
}

#[test]
fn unknown_margay_variables_only_warn() {
    let mut i = inputs();
    i.environment = map(&[
        ("MARGAY_DATAPLNE", "none"),
        ("MARGAY_CONFIG", "/x.toml"),
        ("MARGAY_LOG", "debug"),
    ]);
    let r = resolve_ok(&i);
    assert_eq!(r.warnings.len(), 1);
    assert!(r.warnings[0].to_string().contains("MARGAY_DATAPLNE"));
}

#[test]
fn combinations_are_checked() {
    let mut i = inputs();
    i.command_line = map(&[
        ("etcd_endpoints", "https://a:1"),
        ("etcd_cert_file", "/c.pem"),
    ]);
    let err = resolve(&i).expect_err("cert without key");
    assert!(
        err.to_string().contains("etcd_key_file must be set too"),
        "{err}"
    );

    i.command_line = map(&[("etcd_endpoints", "https://a:1,http://b:2")]);
    assert!(resolve(&i)
        .expect_err("mixed")
        .to_string()
        .contains("mixes"));

    i.command_line = map(&[("etcd_ca_file", "/ca.pem")]);
    let r = resolve_ok(&i);
    assert!(r
        .warnings
        .iter()
        .any(|w| w.to_string().contains("not used")));
}

#[test]
fn no_hostname_anywhere_is_an_error() {
    let err = resolve(&Inputs::default()).expect_err("no hostname");
    assert_eq!(err.0, vec![SettingsError::NoHostname]);
    let i = Inputs {
        environment: map(&[("MARGAY_HOSTNAME", "from-env")]),
        ..Inputs::default()
    };
    assert_eq!(resolve_ok(&i).settings.hostname, "from-env");
}

#[test]
fn inter_host_routes_follow_the_six_layers() {
    let mut i = inputs();
    i.command_line = map(&[("inter_host_routes", "none")]);
    i.environment = map(&[("MARGAY_INTER_HOST_ROUTES", "BGP")]);
    i.config_file = Some("inter_host_routes = \"direct\"\n".into());
    i.host_config = map(&[("InterHostRoutes", "bgp")]);
    i.global_config = map(&[("InterHostRoutes", "none")]);
    let expected = [
        (
            InterHostRoutes::None,
            Origin::CommandLine("--inter-host-routes".into()),
        ),
        (
            InterHostRoutes::Bgp,
            Origin::Environment("MARGAY_INTER_HOST_ROUTES".into()),
        ),
        (
            InterHostRoutes::Direct,
            Origin::ConfigFile("inter_host_routes".into()),
        ),
        (
            InterHostRoutes::Bgp,
            Origin::HostKey("InterHostRoutes".into()),
        ),
        (
            InterHostRoutes::None,
            Origin::GlobalKey("InterHostRoutes".into()),
        ),
        (InterHostRoutes::Direct, Origin::Default),
    ];
    for (mode, origin) in expected {
        let r = resolve_ok(&i);
        assert_eq!(r.settings.inter_host_routes, mode, "{origin:?}");
        assert_eq!(r.origins[&Setting::InterHostRoutes], origin);
        drop_winning_layer(&mut i);
    }
}

#[test]
fn a_bad_inter_host_routes_value_is_an_error_locally_and_a_warning_from_the_datastore() {
    let mut i = inputs();
    i.command_line = map(&[("inter_host_routes", "ospf")]);
    let text = resolve(&i).expect_err("bad flag").to_string();
    assert!(
        text.contains(
            "invalid inter_host_routes \"ospf\" (from command line --inter-host-routes): \
             expected one of direct, bgp, none"
        ),
        "{text}"
    );

    let mut i = inputs();
    i.host_config = map(&[("InterHostRoutes", "bgp; rm -rf /")]);
    i.global_config = map(&[("InterHostRoutes", "bgp")]);
    let r = resolve_ok(&i);
    assert_eq!(r.settings.inter_host_routes, InterHostRoutes::Bgp);
    assert_eq!(
        r.origins[&Setting::InterHostRoutes],
        Origin::GlobalKey("InterHostRoutes".into())
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.to_string().contains("host config key InterHostRoutes")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn bird_paths_are_local_absolute_paths() {
    let mut i = inputs();
    i.environment = map(&[("MARGAY_BIRD_SOCKET", "/tmp/t/bird.ctl")]);
    i.config_file = Some("bird_config = \"/srv/bird.conf\"\nbird_socket = \"/x.ctl\"\n".into());
    // Not datastore settings: these names are ignored there.
    i.global_config = map(&[("BirdConfig", "/evil.conf"), ("BirdSocket", "/evil.ctl")]);
    let s = resolve_ok(&i).settings;
    assert_eq!(s.bird_config, std::path::Path::new("/srv/bird.conf"));
    assert_eq!(s.bird_socket, std::path::Path::new("/tmp/t/bird.ctl"));

    let mut i = inputs();
    i.command_line = map(&[("bird_config", "bird.conf"), ("bird_socket", "")]);
    let err = resolve(&i).expect_err("relative and empty paths");
    assert_eq!(err.0.len(), 2, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("invalid bird_config \"bird.conf\" (from command line --bird-config): must be an absolute path"),
        "{text}"
    );
    assert!(
        text.contains(
            "invalid bird_socket \"\" (from command line --bird-socket): must not be empty"
        ),
        "{text}"
    );
}

#[test]
fn the_bgp_tree_follows_the_etcd_prefix() {
    let mut i = inputs();
    i.command_line = map(&[("etcd_prefix", "/other/")]);
    let s = resolve_ok(&i).settings;
    assert_eq!(s.bgp_prefix(), "/other/bgp/v1");
    assert_eq!(s.data_prefix(), "/other/v1");
}

/// Removes the highest layer that still holds something (the one that just
/// won): command line, environment, file, host key, global key.
fn drop_winning_layer(i: &mut Inputs) {
    if !i.command_line.is_empty() {
        i.command_line.clear();
    } else if !i.environment.is_empty() {
        i.environment.clear();
    } else if i.config_file.is_some() {
        i.config_file = None;
    } else if !i.host_config.is_empty() {
        i.host_config.clear();
    } else {
        i.global_config.clear();
    }
}
