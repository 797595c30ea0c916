//! Host protection at the agent's edge: no datastore content may cut this
//! host off from its network or from etcd.
//!
//! - The etcd endpoints are resolved once at start
//!   ([`resolve_etcd_endpoints`]; IP literals directly). The firewall keeps
//!   them reachable through host endpoints, whatever the policy says; their
//!   addresses go to the dataplane, which never lets an endpoint route cover them, the host's
//!   own addresses or its default gateways. Routes it refuses come back in
//!   apply reports and are logged (rate-limited) and counted here
//!   ([`report_refused`]); routes of ours a previous run left on such an
//!   address are removed before connecting ([`report_removed`]).
//! - An interface prefix matching an interface that carries the host's
//!   default route or its route to etcd would send the host's own traffic
//!   through the workload firewall; [`uplink_conflicts`] finds such
//!   prefixes (the agent keeps the previous value, `margay check` reports
//!   it). A prefix matching `lo` is already invalid in the config crate.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use margay_config::{Settings, SettingsError};
use margay_dataplane::hostnet::{KernelRoute, RefusedRoute};
use margay_dataplane::Dataplane;
use margay_datastore::connect::{connect, Connection, EtcdConfig};
use margay_policy::desired::DesiredState;

use crate::logging::{sanitize, LogLimiter, Verdict};
use crate::metrics::Metrics;

/// etcd's client port, when an endpoint URL names none.
const DEFAULT_ETCD_PORT: u16 = 2379;
/// How long resolving one etcd host name may take at start.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The host and port of an etcd client URL: `http://[::1]:2379/` →
/// (`::1`, 2379); no port means 2379. `None` when there is no host.
pub fn endpoint_host(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => DEFAULT_ETCD_PORT,
    };
    Some((host.to_owned(), port))
}

/// The etcd endpoints as socket addresses (port from the URL, 2379 when
/// it names none): IP literals as they are, host names resolved (once; a
/// failure is logged and that name skipped). Sorted, without repeats. The
/// firewall keeps these reachable through host endpoints
/// (`FirewallSettings::own_endpoints`).
pub async fn resolve_etcd_endpoints(endpoints: &[String]) -> Vec<SocketAddr> {
    let mut out = BTreeSet::new();
    for url in endpoints {
        let shown = crate::logging::redact_url(url);
        let Some((host, port)) = endpoint_host(url) else {
            tracing::warn!(endpoint = %shown, "no host in etcd endpoint; its address is not protected");
            continue;
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.insert(SocketAddr::new(ip, port));
            continue;
        }
        let lookup = tokio::net::lookup_host((host.as_str(), port));
        let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await;
        match resolved {
            Ok(Ok(addrs)) => out.extend(addrs),
            Ok(Err(e)) => {
                tracing::warn!(endpoint = %shown, error = %e, "cannot resolve etcd endpoint; its address is not protected")
            }
            Err(_) => {
                tracing::warn!(endpoint = %shown, "resolving etcd endpoint timed out; its address is not protected")
            }
        }
    }
    out.into_iter().collect()
}

/// The addresses of resolved etcd endpoints, sorted, without repeats.
pub fn endpoint_addresses(endpoints: &[SocketAddr]) -> Vec<IpAddr> {
    let ips: BTreeSet<IpAddr> = endpoints.iter().map(SocketAddr::ip).collect();
    ips.into_iter().collect()
}

/// The addresses of the etcd endpoints ([`resolve_etcd_endpoints`]
/// without the ports).
pub async fn resolve_etcd_addresses(endpoints: &[String]) -> Vec<IpAddr> {
    endpoint_addresses(&resolve_etcd_endpoints(endpoints).await)
}

/// Logs (rate-limited) and counts endpoint routes the dataplane refused.
/// `endpoint_of` names the endpoint behind a route when it is known.
pub fn report_refused(
    metrics: &Metrics,
    limiter: &LogLimiter,
    refused: &[RefusedRoute],
    endpoint_of: impl Fn(&RefusedRoute) -> Option<String>,
) {
    for r in refused {
        metrics.route_refused(r.reason.as_str());
        if let Verdict::Emit { suppressed } = limiter.check("refused_route") {
            let endpoint = endpoint_of(r).unwrap_or_else(|| "-".to_owned());
            tracing::warn!(
                endpoint = %sanitize(&endpoint),
                dst = %r.dst,
                route = %r.route,
                covers = %r.addr,
                reason = r.reason.as_str(),
                suppressed,
                "endpoint route refused: it would cover an address this host needs"
            );
        }
    }
}

/// Names the endpoint behind a refused route: the local endpoint on its
/// interface, or the gateway a remote one is reached through.
pub fn endpoint_behind(state: &DesiredState, r: &RefusedRoute) -> Option<String> {
    match &r.route {
        KernelRoute::Dev(iface) => state.endpoints.get(iface).map(|ep| {
            let k = &ep.key;
            format!(
                "{}/{}/{}/{}",
                k.host, k.orchestrator, k.workload, k.endpoint
            )
        }),
        KernelRoute::Via(gw) => Some(format!("a remote endpoint via {gw}")),
        KernelRoute::Unrecognised => None,
    }
}

/// Logs and counts routes of ours removed at start-up.
pub fn report_removed(metrics: &Metrics, removed: &[RefusedRoute]) {
    for r in removed {
        metrics.route_refused(r.reason.as_str());
        tracing::warn!(
            dst = %r.dst,
            route = %r.route,
            covers = %r.addr,
            reason = r.reason.as_str(),
            "removed a route of ours that would cut this host off (left by an earlier run)"
        );
    }
}

/// At start, after the dataplane read what is there and before connecting
/// to etcd: removes routes of ours that would cut the host off, and refuses
/// to start with an interface prefix that matches an uplink.
pub async fn guard_start(
    dp: &mut Dataplane,
    settings: &Settings,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let removed = dp
        .remove_blocking_routes()
        .await
        .context("cannot remove routes that would cut this host off")?;
    report_removed(metrics, &removed);
    let conflicts = uplink_conflicts(&settings.interface_prefixes, &dp.host_facts().uplinks);
    if !conflicts.is_empty() {
        anyhow::bail!(
            "interface_prefix {:?}: {}; margay would firewall the host's own traffic as a workload's",
            settings.interface_prefixes.join(","),
            describe(&conflicts)
        );
    }
    Ok(())
}

/// Counts a datastore setting value rejected as invalid (the lower layer
/// applies instead); other warnings are not rejections.
pub fn count_rejected_setting(metrics: &Metrics, warning: &SettingsError) {
    if let SettingsError::Invalid {
        setting, origin, ..
    } = warning
    {
        if origin.is_datastore() {
            metrics.setting_rejected(setting.key(), "invalid");
        }
    }
}

/// One interface prefix that matches an uplink interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixConflict {
    /// The prefix.
    pub prefix: String,
    /// The uplink interface it matches.
    pub iface: String,
}

impl std::fmt::Display for PrefixConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "prefix {:?} matches {}, which carries the host's default route or its route to etcd",
            self.prefix, self.iface
        )
    }
}

/// Every prefix of `prefixes` that matches an interface of `uplinks`.
pub fn uplink_conflicts(prefixes: &[String], uplinks: &BTreeSet<String>) -> Vec<PrefixConflict> {
    prefixes
        .iter()
        .flat_map(|p| {
            uplinks
                .iter()
                .filter(move |i| i.starts_with(p.as_str()))
                .map(move |i| PrefixConflict {
                    prefix: p.clone(),
                    iface: i.clone(),
                })
        })
        .collect()
}

/// The `margay check` line for interface prefixes: each candidate value
/// (`(source, value)`: the local setting, the datastore keys) must be valid
/// (which includes not matching `lo`) and match no uplink.
pub fn prefix_check(
    candidates: &[(String, String)],
    uplinks: &BTreeSet<String>,
) -> crate::preflight::CheckResult {
    const NAME: &str = "interface prefix";
    let mut problems = Vec::new();
    for (source, value) in candidates {
        let shown = sanitize(value);
        match margay_config::value::parse_interface_prefixes(value) {
            Err(reason) => problems.push(format!("{source} = {shown:?}: {reason}")),
            Ok(prefixes) => {
                let conflicts = uplink_conflicts(&prefixes, uplinks);
                if !conflicts.is_empty() {
                    problems.push(format!("{source} = {shown:?}: {}", describe(&conflicts)));
                }
            }
        }
    }
    let uplinks = uplinks.iter().cloned().collect::<Vec<_>>().join(",");
    if problems.is_empty() {
        let values: Vec<String> = candidates
            .iter()
            .map(|(s, v)| format!("{s} = {:?}", sanitize(v)))
            .collect();
        return crate::preflight::CheckResult::ok(
            NAME,
            format!("{}; uplinks: {uplinks}", values.join(", ")),
        );
    }
    crate::preflight::CheckResult::problem(
        NAME,
        problems.join("; "),
        format!(
            "margay rejects such a value and keeps the previous one; pick a prefix that matches \
             only workload interfaces (uplinks here: {uplinks})"
        ),
    )
}

/// Reads this host's uplinks and the datastore's `InterfacePrefix` keys
/// and checks every value in force or waiting there.
pub async fn gather_prefix_check(settings: &Settings) -> crate::preflight::CheckResult {
    let etcd = resolve_etcd_addresses(&settings.etcd_endpoints).await;
    let facts =
        margay_dataplane::hostnet::routes::facts::read_current(&etcd, settings.route_protocol)
            .await;
    let uplinks = match facts {
        Ok(f) => f.uplinks,
        Err(e) => {
            return crate::preflight::CheckResult::problem(
                "interface prefix",
                format!("cannot read this host's routes: {e}"),
                "run as root (or with CAP_NET_ADMIN) in the host's network namespace",
            )
        }
    };
    let mut candidates = vec![(
        "interface_prefix".to_owned(),
        settings.interface_prefixes.join(","),
    )];
    candidates.extend(datastore_prefixes(settings).await);
    prefix_check(&candidates, &uplinks)
}

/// `InterfacePrefix` values in the datastore (global, this host's), as
/// `(key, value)`; none when etcd cannot be read (the etcd check says why).
async fn datastore_prefixes(settings: &Settings) -> Vec<(String, String)> {
    let etcd = EtcdConfig::from_settings(settings).with_timeout(RESOLVE_TIMEOUT);
    let prefix = settings.data_prefix();
    let Ok(Connection { mut client, .. }) = connect(&etcd, &format!("{prefix}/Ready")).await else {
        return Vec::new();
    };
    let keys = [
        format!("{prefix}/config/InterfacePrefix"),
        format!("{prefix}/host/{}/config/InterfacePrefix", settings.hostname),
    ];
    let mut out = Vec::new();
    for key in keys {
        let got = tokio::time::timeout(RESOLVE_TIMEOUT, client.get(key.as_str(), None)).await;
        if let Ok(Ok(resp)) = got {
            if let Some(kv) = resp.kvs().first() {
                out.push((key, String::from_utf8_lossy(kv.value()).into_owned()));
            }
        }
    }
    out
}

/// Logs and counts interface prefixes `rejected` because they match an
/// uplink (`reason`), `kept` staying in force.
pub fn report_rejected_prefixes(
    metrics: &Metrics,
    rejected: &[String],
    kept: &[String],
    reason: &str,
    source: &str,
) {
    let setting = margay_config::Setting::InterfacePrefix.key();
    metrics.setting_rejected(setting, "host_interface");
    tracing::warn!(
        setting,
        value = %sanitize(&rejected.join(",")),
        kept = %kept.join(","),
        reason,
        source,
        "setting rejected; keeping the current value"
    );
}

/// The conflicts as one line.
pub fn describe(conflicts: &[PrefixConflict]) -> String {
    conflicts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_hosts_and_ports() {
        let cases = [
            ("http://192.0.2.2:2379", Some(("192.0.2.2", 2379))),
            ("https://etcd.example:2380/", Some(("etcd.example", 2380))),
            ("http://user:pw@10.0.0.1", Some(("10.0.0.1", 2379))),
            ("http://[fd00::2]:4001", Some(("fd00::2", 4001))),
            ("[::1]", Some(("::1", 2379))),
            ("127.0.0.1:2379", Some(("127.0.0.1", 2379))),
            ("http://", None),
            ("http://h:port", None),
            ("http://[::1", None),
        ];
        for (url, want) in cases {
            let got = endpoint_host(url);
            assert_eq!(got.as_ref().map(|(h, p)| (h.as_str(), *p)), want, "{url}");
        }
    }

    #[tokio::test]
    async fn endpoints_keep_their_ports() {
        let got = resolve_etcd_endpoints(&[
            "http://192.0.2.2:2379".to_owned(),
            "https://[fd00::2]:4001/".to_owned(),
            "http://192.0.2.2".to_owned(),
            "http://localhost:2380".to_owned(),
        ])
        .await;
        let want = |s: &str| s.parse::<SocketAddr>().expect("socket address");
        assert!(got.contains(&want("192.0.2.2:2379")), "{got:?}");
        assert!(got.contains(&want("[fd00::2]:4001")), "{got:?}");
        assert!(
            got.iter().any(|a| a.ip().is_loopback() && a.port() == 2380),
            "{got:?}"
        );
        assert_eq!(
            got.iter().filter(|a| a.port() == 2379).count(),
            1,
            "{got:?}"
        );
        assert_eq!(
            endpoint_addresses(&got)
                .iter()
                .filter(|a| a.to_string() == "192.0.2.2")
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn literals_are_taken_as_they_are_and_names_resolved() {
        let got = resolve_etcd_addresses(&[
            "http://192.0.2.2:2379".to_owned(),
            "http://localhost:2379".to_owned(),
            "http://192.0.2.2:2380".to_owned(),
            "nonsense://".to_owned(),
        ])
        .await;
        assert!(got.contains(&"192.0.2.2".parse().expect("ip")), "{got:?}");
        assert!(got.iter().any(IpAddr::is_loopback), "{got:?}");
        assert_eq!(
            got.iter().filter(|a| a.to_string() == "192.0.2.2").count(),
            1
        );
    }

    #[test]
    fn the_check_reports_bad_values_by_source() {
        let uplinks = BTreeSet::from(["eth0".to_owned()]);
        let c = |pairs: &[(&str, &str)]| {
            let v: Vec<(String, String)> = pairs
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect();
            prefix_check(&v, &uplinks)
        };
        let ok = c(&[("interface_prefix", "cali")]);
        assert!(ok.ok, "{ok}");
        assert!(ok.detail.contains("uplinks: eth0"), "{ok}");
        let bad = c(&[
            ("interface_prefix", "cali"),
            ("/calico/v1/config/InterfacePrefix", "eth"),
            ("/calico/v1/host/h1/config/InterfacePrefix", "lo"),
        ]);
        assert!(!bad.ok);
        assert!(
            bad.detail.contains(
                "/calico/v1/config/InterfacePrefix = \"eth\": prefix \"eth\" matches eth0"
            ),
            "{bad}"
        );
        assert!(bad.detail.contains("loopback"), "{bad}");
    }

    #[test]
    fn prefixes_matching_an_uplink_conflict() {
        let uplinks = BTreeSet::from(["eth0".to_owned(), "bond1".to_owned()]);
        let p = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let c = uplink_conflicts(&p(&["cali", "eth"]), &uplinks);
        assert_eq!(
            c,
            vec![PrefixConflict {
                prefix: "eth".into(),
                iface: "eth0".into()
            }]
        );
        assert!(describe(&c).contains("\"eth\" matches eth0"));
        assert_eq!(uplink_conflicts(&p(&["b", "e"]), &uplinks).len(), 2);
        assert!(uplink_conflicts(&p(&["cali", "tap", "eth1"]), &uplinks).is_empty());
        assert!(uplink_conflicts(&p(&["eth"]), &BTreeSet::new()).is_empty());
    }
}
