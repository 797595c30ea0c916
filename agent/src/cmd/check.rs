//! `margay check`: is this host ready to run margay? One line per check.
//!
//! Each check is a small function returning a [`CheckResult`]; the pure ones
//! take what they inspect as arguments (file contents, command results) so
//! they are unit-tested without root. [`run_check`] gathers them, prints
//! aligned lines such as
//!
//! ```text
//! ok       etcd reachable (http://127.0.0.1:2379, 3 ms)
//! PROBLEM  etcd reachable: connection refused — hint: is etcd running? ...
//! ```
//!
//! and returns `false` when any check found a problem (the binary exits
//! non-zero). Checks only read: they run `nft list tables`, `iptables-save`
//! (and, looking for foreign drops, `nft -j list chains` and both variants'
//! `-save`: [`crate::foreign_drop`]),
//! `ipset list -n`, read `/proc` and this host's addresses and routes, and do
//! a few etcd `get`s; nothing is changed. With `inter_host_routes = bgp`
//! (as resolved from flags, environment and file), BIRD must be installed
//! and answer on `bird_socket` ([`bgp`]). etcd is reached the way `margay
//! run` reaches it ([`margay_datastore::connect`]). When etcd answers, the
//! datastore is listed once to warn about host endpoints that would block
//! the agent's etcd port but for margay's own pass ([`host_endpoints`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use margay_config::{DataplaneKind, InterHostRoutes, Settings};
use margay_datastore::connect::{connect, timed, EtcdConfig, SYSTEM_CA_BUNDLE};

use crate::preflight::{find_tool, CheckResult};
use crate::settings::SettingsLoader;

/// How long one external command or the etcd probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Linux capability numbers (include/uapi/linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;

/// Runs every check for `settings`, prints one line per check to stdout and
/// a last summary line, and returns `Ok(true)` when everything is fine.
/// `loader` holds the local settings layers: the datastore's are added for
/// the checks that read the datastore.
pub async fn run_check(settings: &Settings, mut loader: SettingsLoader) -> anyhow::Result<bool> {
    let results = gather(settings, &mut loader).await;
    let mut text: String = results.iter().map(|r| format!("{r}\n")).collect();
    let problems = results.iter().filter(|r| !r.ok).count();
    let warnings = results.iter().filter(|r| r.warning).count();
    if problems == 0 && warnings > 0 {
        text.push_str(&format!(
            "all {} checks passed, {warnings} with a warning\n",
            results.len()
        ));
    } else if problems == 0 {
        text.push_str(&format!("all {} checks passed\n", results.len()));
    } else {
        text.push_str(&format!(
            "{problems} of {} checks found a problem\n",
            results.len()
        ));
    }
    super::print_report(&text).context("writing the check report")?;
    Ok(problems == 0)
}

/// Every check, in display order.
pub async fn gather(settings: &Settings, loader: &mut SettingsLoader) -> Vec<CheckResult> {
    let mut results = vec![check_capabilities(&read_proc("/proc/self/status"))];
    results.extend(firewall_checks(settings.dataplane).await);
    results.extend(crate::foreign_drop::gather(
        settings.dataplane,
        &settings.interface_prefixes,
    ));
    results.push(check_ip_forward(
        read_proc("/proc/sys/net/ipv4/ip_forward").as_deref(),
    ));
    results.push(check_rp_filter(
        read_proc("/proc/sys/net/ipv4/conf/all/rp_filter").as_deref(),
    ));
    results.extend(check_tls_files(settings));
    let etcd = etcd_checks(settings).await;
    let etcd_answers = etcd.first().is_some_and(|r| r.ok);
    results.extend(etcd);
    if etcd_answers {
        results.push(host_endpoints::gather(settings, loader).await);
    }
    results.push(crate::host_guard::gather_prefix_check(settings).await);
    if settings.inter_host_routes == InterHostRoutes::Bgp {
        results.extend(bgp::gather(&settings.bird_socket).await);
    }
    results
}

fn read_proc(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Root, or at least CAP_NET_ADMIN and CAP_NET_RAW, from `/proc/self/status`.
pub fn check_capabilities(status: &Option<String>) -> CheckResult {
    const NAME: &str = "permissions";
    let hint = "run as root, or grant CAP_NET_ADMIN and CAP_NET_RAW (deploy/margay.service does)";
    let Some(effective) = status.as_deref().and_then(effective_caps) else {
        return CheckResult::problem(NAME, "cannot read CapEff from /proc/self/status", hint);
    };
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    let missing: Vec<&str> = [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_NET_RAW, "CAP_NET_RAW"),
    ]
    .into_iter()
    .filter(|(cap, _)| !has(*cap))
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        let who = if nix::unistd::Uid::effective().is_root() {
            "root"
        } else {
            "not root"
        };
        CheckResult::ok(NAME, format!("{who}; CAP_NET_ADMIN, CAP_NET_RAW effective"))
    } else {
        CheckResult::problem(NAME, format!("missing {}", missing.join(", ")), hint)
    }
}

/// The `CapEff:` bit mask of a `/proc/<pid>/status` text.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// `net.ipv4.ip_forward` must be 1 for workloads to reach anything.
pub fn check_ip_forward(value: Option<&str>) -> CheckResult {
    const NAME: &str = "sysctl net.ipv4.ip_forward = 1";
    let hint = "sysctl -w net.ipv4.ip_forward=1, and persist it in /etc/sysctl.d/";
    match value.map(str::trim) {
        Some("1") => CheckResult::ok(NAME, "1"),
        Some(other) => CheckResult::problem(NAME, format!("is {other}"), hint),
        None => CheckResult::problem(NAME, "cannot read /proc/sys/net/ipv4/ip_forward", hint),
    }
}

/// `net.ipv4.conf.all.rp_filter` must not be 2 (loose): the kernel uses the
/// maximum of `all` and the interface value, and workload anti-spoofing
/// needs strict mode (1) on workload interfaces.
pub fn check_rp_filter(value: Option<&str>) -> CheckResult {
    const NAME: &str = "sysctl net.ipv4.conf.all.rp_filter != 2";
    let hint = "sysctl -w net.ipv4.conf.all.rp_filter=1 (or 0); loose mode (2) disables \
                workload anti-spoofing";
    match value.map(str::trim) {
        Some(v @ ("0" | "1")) => CheckResult::ok(NAME, v.to_string()),
        Some(other) => CheckResult::problem(NAME, format!("is {other} (loose)"), hint),
        None => CheckResult::problem(
            NAME,
            "cannot read /proc/sys/net/ipv4/conf/all/rp_filter",
            hint,
        ),
    }
}

/// A tool must be installed.
pub fn check_tool(name: &str, found: Option<&Path>, package_hint: &str) -> CheckResult {
    let check = format!("tool {name} installed");
    match found {
        Some(path) => CheckResult::ok(&check, path.display().to_string()),
        None => CheckResult::problem(
            &check,
            "not found in PATH or /usr/sbin, /sbin",
            package_hint,
        ),
    }
}

/// The result of one probe command: success, or the reason it failed.
pub type ProbeOutcome = Result<(), String>;

/// A kernel feature probed by running a read-only command.
pub fn check_kernel_feature(
    name: &str,
    command: &str,
    outcome: &ProbeOutcome,
    hint: &str,
) -> CheckResult {
    match outcome {
        Ok(()) => CheckResult::ok(name, format!("`{command}` works")),
        Err(reason) => CheckResult::problem(name, format!("`{command}` failed: {reason}"), hint),
    }
}

/// Runs `program args` with a timeout; `Err` carries the first stderr line.
async fn probe(program: &Path, args: &[&str]) -> ProbeOutcome {
    let run = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(PROBE_TIMEOUT, run).await {
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            Err(format!("{} {}", out.status, first.trim())
                .trim()
                .to_string())
        }
    }
}

/// Tools and kernel support of the chosen firewall backend.
async fn firewall_checks(backend: DataplaneKind) -> Vec<CheckResult> {
    match backend {
        DataplaneKind::Nftables => nftables_checks().await,
        DataplaneKind::Iptables => iptables_checks().await,
        DataplaneKind::None => vec![CheckResult::ok(
            "firewall backend",
            "dataplane = none: no firewall tools needed",
        )],
    }
}

async fn nftables_checks() -> Vec<CheckResult> {
    let nft = find_tool("nft");
    let mut out = vec![check_tool(
        "nft",
        nft.as_deref(),
        "install the nftables package",
    )];
    if let Some(nft) = nft {
        let outcome = probe(&nft, &["list", "tables"]).await;
        out.push(check_kernel_feature(
            "kernel nf_tables available",
            "nft list tables",
            &outcome,
            "modprobe nf_tables (and run as root), or set dataplane = \"iptables\"",
        ));
    }
    out
}

async fn iptables_checks() -> Vec<CheckResult> {
    let restore = find_tool("iptables-restore");
    let save = find_tool("iptables-save");
    let ipset = find_tool("ipset");
    let mut out = vec![
        check_tool(
            "iptables-restore",
            restore.as_deref(),
            "install the iptables package",
        ),
        check_tool("ipset", ipset.as_deref(), "install the ipset package"),
    ];
    if let Some(save) = save {
        let outcome = probe(&save, &["-t", "filter"]).await;
        out.push(check_kernel_feature(
            "kernel iptables available",
            "iptables-save -t filter",
            &outcome,
            "modprobe ip_tables (or nf_tables for iptables-nft) and run as root",
        ));
    }
    if let Some(ipset) = ipset {
        let outcome = probe(&ipset, &["list", "-n"]).await;
        out.push(check_kernel_feature(
            "kernel ipset available",
            "ipset list -n",
            &outcome,
            "modprobe ip_set and run as root",
        ));
    }
    out
}

/// The etcd TLS files: each configured one must be readable PEM; cert and
/// key go together; `https://` endpoints need a CA: `etcd_ca_file`, or else
/// the system trust store, as `margay run` uses it. No lines when TLS is not
/// in use.
pub fn check_tls_files(settings: &Settings) -> Vec<CheckResult> {
    let files = [
        ("etcd_ca_file", &settings.etcd_ca_file),
        ("etcd_cert_file", &settings.etcd_cert_file),
        ("etcd_key_file", &settings.etcd_key_file),
    ];
    let mut out: Vec<CheckResult> = files
        .iter()
        .filter_map(|(name, path)| path.as_ref().map(|p| check_pem_file(name, p)))
        .collect();
    if settings.etcd_cert_file.is_some() != settings.etcd_key_file.is_some() {
        out.push(CheckResult::problem(
            "etcd client certificate",
            "only one of etcd_cert_file and etcd_key_file is set",
            "set both (ETCD_CERT_FILE and ETCD_KEY_FILE) or neither",
        ));
    }
    if settings.etcd_uses_tls() && settings.etcd_ca_file.is_none() {
        out.push(system_trust_check(Path::new(SYSTEM_CA_BUNDLE)));
    }
    out
}

/// `https://` without `etcd_ca_file`: margay trusts the system bundle when
/// there is one, which suits an etcd certificate from a public CA only.
fn system_trust_check(bundle: &Path) -> CheckResult {
    const NAME: &str = "etcd TLS trust";
    if bundle.is_file() {
        CheckResult::ok(
            NAME,
            format!(
                "no etcd_ca_file: using the system trust store {}",
                bundle.display()
            ),
        )
    } else {
        CheckResult::problem(
            NAME,
            format!(
                "https:// endpoints but no etcd_ca_file and no {}",
                bundle.display()
            ),
            "set etcd_ca_file (ETCD_CA_CERT_FILE) to the CA that signed etcd's certificate",
        )
    }
}

/// One TLS file: readable and PEM.
pub fn check_pem_file(setting: &str, path: &Path) -> CheckResult {
    let name = format!("{setting} readable");
    match std::fs::read_to_string(path) {
        Ok(text) if text.contains("-----BEGIN ") => {
            CheckResult::ok(&name, path.display().to_string())
        }
        Ok(_) => CheckResult::problem(
            &name,
            format!("{} is not PEM (no -----BEGIN line)", path.display()),
            "point it at a PEM file",
        ),
        Err(e) => CheckResult::problem(
            &name,
            format!("{}: {e}", path.display()),
            "check the path and that margay (root) can read it",
        ),
    }
}

/// What the etcd probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdProbe {
    /// Round trip of the probe `get`, in milliseconds.
    pub millis: u128,
    /// The value of `<prefix>/v1/Ready`, if present.
    pub ready: Option<String>,
    /// Keys under `<prefix>/v1/host/<hostname>/`.
    pub host_keys: i64,
}

async fn probe_etcd(settings: &Settings) -> anyhow::Result<EtcdProbe> {
    let started = Instant::now();
    let etcd = EtcdConfig::from_settings(settings).with_timeout(PROBE_TIMEOUT);
    let ready_key = format!("{}/Ready", settings.data_prefix());
    let mut conn = connect(&etcd, &ready_key)
        .await
        .map_err(|e| anyhow::anyhow!(e.reason()))?;
    let client = &mut conn.client;
    let ready = timed(PROBE_TIMEOUT, "get", client.get(ready_key.as_str(), None)).await?;
    let millis = started.elapsed().as_millis();
    let host_prefix = format!("{}/host/{}/", settings.data_prefix(), settings.hostname);
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_count_only();
    let host = timed(
        PROBE_TIMEOUT,
        "count",
        client.get(host_prefix.as_str(), Some(options)),
    )
    .await?;
    let ready = ready
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
    Ok(EtcdProbe {
        millis,
        ready,
        host_keys: host.count(),
    })
}

async fn etcd_checks(settings: &Settings) -> Vec<CheckResult> {
    let probe = probe_etcd(settings).await.map_err(|e| format!("{e:#}"));
    etcd_results(settings, &probe)
}

/// Turns the etcd probe outcome into the `etcd reachable` and `datastore
/// ready` lines.
pub fn etcd_results(settings: &Settings, probe: &Result<EtcdProbe, String>) -> Vec<CheckResult> {
    let endpoints = settings
        .etcd_endpoints
        .iter()
        .map(|e| crate::logging::redact_url(e).into_owned())
        .collect::<Vec<_>>()
        .join(",");
    let probe = match probe {
        Ok(p) => p,
        Err(reason) => {
            return vec![CheckResult::problem(
                "etcd reachable",
                format!("{endpoints}: {reason}"),
                "is etcd running and listening there? check etcd_endpoints (ETCD_ENDPOINTS), \
                 firewalls, and the TLS files for https://",
            )];
        }
    };
    let reachable = CheckResult::ok(
        "etcd reachable",
        format!("{endpoints}, {} ms", probe.millis),
    );
    let ready_key = format!("{}/Ready", settings.data_prefix());
    let ready = match probe.ready.as_deref() {
        Some("true") => CheckResult::ok(
            "datastore ready",
            format!(
                "{ready_key} = true; {} keys for host {}",
                probe.host_keys, settings.hostname
            ),
        ),
        Some(other) => CheckResult::problem(
            "datastore ready",
            format!("{ready_key} = {:?}", crate::logging::sanitize(other)),
            format!("nothing is programmed until it is \"true\": etcdctl put {ready_key} true"),
        ),
        None => CheckResult::problem(
            "datastore ready",
            format!("{ready_key} is missing"),
            format!(
                "wrong etcd_prefix, or the cluster is not initialised: etcdctl put {ready_key} true"
            ),
        ),
    };
    vec![reachable, ready]
}

pub mod bgp;
pub mod host_endpoints;

#[cfg(test)]
mod tests;
