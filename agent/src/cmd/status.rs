//! `margay status`: every host's last heartbeat, like `calicoctl status`.
//!
//! Reads, under the status prefix (`/calico/felix/v1`), each host's
//! `host/<host>/status` (on a lease: present while the agent lives),
//! `host/<host>/last_reported_status` (kept after it dies) and the
//! per-endpoint `host/<host>/workload/<orch>/<wl>/endpoint/<id>` reports,
//! plus the configured workload endpoints under the data prefix
//! (`/calico/v1/host/<host>/workload/...`, keys only). Prints one row per
//! host:
//!
//! ```text
//! HOST    STATE  LAST REPORT           AGE    UPTIME  ENDPOINTS  UP  DOWN  ERROR
//! node-1  alive  2024-05-01T10:00:00Z  12s    3h04m   4          4   0     0
//! node-2  gone   2024-05-01T09:00:00Z  1h00m  20m00s  1          -   -     -
//! ```
//!
//! STATE is `alive` (a leased `status` key exists), `gone` (only
//! `last_reported_status`: the lease expired) or `never` (endpoints are
//! configured for the host but it never reported). Parsing and rendering
//! are pure and unit-tested; only [`run_status`] talks to etcd.
//!
//! With `--bird-socket PATH`, this host's BGP sessions follow, read from
//! BIRD ([`bgp`]); BIRD unreachable is an error (exit 1) after the host
//! table is printed.

pub mod bgp;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use margay_config::Settings;
use margay_datastore::connect::{connect, timed, EtcdConfig};
use margay_datastore::time::parse_rfc3339;

use crate::logging::sanitize;

/// Per-request timeout for the etcd reads.
const ETCD_TIMEOUT: Duration = Duration::from_secs(10);

/// One heartbeat document: `{"time": "<RFC 3339>", "uptime": <s>, "first_update": <bool>}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// `time` as written.
    pub time_text: String,
    /// `time` as Unix seconds, when it parses.
    pub time: Option<i64>,
    /// `uptime` in seconds.
    pub uptime: Option<f64>,
}

impl Report {
    /// Parses a heartbeat value; a value that is not such JSON gives a
    /// report with only the raw text (shown, sanitized, as the time).
    pub fn parse(value: &[u8]) -> Report {
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(value) else {
            return Report {
                time_text: format!("invalid: {}", sanitize(&String::from_utf8_lossy(value))),
                ..Report::default()
            };
        };
        let time_text = doc["time"].as_str().unwrap_or_default().to_string();
        Report {
            time: parse_rfc3339(&time_text),
            time_text,
            uptime: doc["uptime"].as_f64(),
        }
    }
}

/// What the datastore says about one host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostStatus {
    /// The leased `status` report (present while the agent lives).
    pub live: Option<Report>,
    /// The `last_reported_status` report.
    pub last: Option<Report>,
    /// Workload endpoints configured for the host.
    pub configured_endpoints: u64,
    /// Endpoint reports by status (`up`, `down`, `error`, other).
    pub endpoint_reports: BTreeMap<String, u64>,
}

impl HostStatus {
    fn state(&self) -> &'static str {
        match (&self.live, &self.last) {
            (Some(_), _) => "alive",
            (None, Some(_)) => "gone",
            (None, None) => "never",
        }
    }

    fn newest(&self) -> Option<&Report> {
        self.live.as_ref().or(self.last.as_ref())
    }
}

/// The host segment and the rest after `<prefix>/host/`, if `key` is there.
fn split_host_key<'k>(key: &'k str, prefix: &str) -> Option<(&'k str, &'k str)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix("/host/")?;
    let (host, tail) = rest.split_once('/')?;
    (!host.is_empty()).then_some((host, tail))
}

/// True for `workload/<orch>/<wl>/endpoint/<id>`.
fn is_endpoint_tail(tail: &str) -> bool {
    let parts: Vec<&str> = tail.split('/').collect();
    parts.len() == 5
        && parts[0] == "workload"
        && parts[3] == "endpoint"
        && parts.iter().all(|p| !p.is_empty())
}

/// Builds the per-host view from the status keys (with values) and the
/// configured endpoint keys (values ignored). Hosts are sorted by name.
pub fn collect_hosts(
    status_prefix: &str,
    status_kvs: &[(String, Vec<u8>)],
    data_prefix: &str,
    data_keys: &[String],
) -> BTreeMap<String, HostStatus> {
    let mut hosts: BTreeMap<String, HostStatus> = BTreeMap::new();
    for (key, value) in status_kvs {
        let Some((host, tail)) = split_host_key(key, status_prefix) else {
            continue;
        };
        let entry = hosts.entry(host.to_string()).or_default();
        match tail {
            "status" => entry.live = Some(Report::parse(value)),
            "last_reported_status" => entry.last = Some(Report::parse(value)),
            t if is_endpoint_tail(t) => {
                let status = endpoint_status(value);
                *entry.endpoint_reports.entry(status).or_default() += 1;
            }
            _ => {}
        }
    }
    for key in data_keys {
        if let Some((host, tail)) = split_host_key(key, data_prefix) {
            if is_endpoint_tail(tail) {
                hosts
                    .entry(host.to_string())
                    .or_default()
                    .configured_endpoints += 1;
            }
        }
    }
    hosts
}

/// `up`, `down`, `error`, or `other` for anything else.
fn endpoint_status(value: &[u8]) -> String {
    let status = serde_json::from_slice::<serde_json::Value>(value)
        .ok()
        .and_then(|v| v["status"].as_str().map(str::to_string));
    match status.as_deref() {
        Some(s @ ("up" | "down" | "error")) => s.to_string(),
        _ => "other".to_string(),
    }
}

/// Renders the table; `now` is Unix seconds.
pub fn render_table(hosts: &BTreeMap<String, HostStatus>, now: i64) -> String {
    if hosts.is_empty() {
        return "no hosts have reported or have endpoints configured\n".to_string();
    }
    let header = [
        "HOST",
        "STATE",
        "LAST REPORT",
        "AGE",
        "UPTIME",
        "ENDPOINTS",
        "UP",
        "DOWN",
        "ERROR",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for (name, host) in hosts {
        rows.push(host_row(name, host, now));
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|col| {
            rows.iter()
                .map(|r| r[col].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (col, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<width$}  ", width = widths[col]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn host_row(name: &str, host: &HostStatus, now: i64) -> Vec<String> {
    let report = host.newest();
    let last = report.map_or("-".to_string(), |r| {
        if r.time_text.is_empty() {
            "?".to_string()
        } else {
            r.time_text.clone()
        }
    });
    let age = report
        .and_then(|r| r.time)
        .map_or("-".to_string(), |t| format_age(now.saturating_sub(t)));
    let uptime = report
        .and_then(|r| r.uptime)
        .filter(|u| u.is_finite() && *u >= 0.0)
        .map_or("-".to_string(), |u| format_age(u as i64));
    let count = |status: &str| {
        if host.endpoint_reports.is_empty() {
            "-".to_string()
        } else {
            host.endpoint_reports
                .get(status)
                .copied()
                .unwrap_or(0)
                .to_string()
        }
    };
    vec![
        sanitize(name).into_owned(),
        host.state().to_string(),
        sanitize(&last).into_owned(),
        age,
        uptime,
        host.configured_endpoints.to_string(),
        count("up"),
        count("down"),
        count("error"),
    ]
}

/// A duration in seconds as `45s`, `3m05s`, `2h04m`, `3d02h`; negative
/// (clock skew) as `-` plus the same.
pub fn format_age(seconds: i64) -> String {
    if seconds < 0 {
        return format!("-{}", format_age(seconds.saturating_neg()));
    }
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

/// Reads the heartbeats and configured endpoints from etcd and prints the
/// table to stdout; with `bird_socket`, then this host's BGP sessions.
pub async fn run_status(settings: &Settings, bird_socket: Option<&Path>) -> anyhow::Result<()> {
    print_hosts(settings).await?;
    let Some(socket) = bird_socket else {
        return Ok(());
    };
    match bgp::read_sessions(socket).await {
        Ok(sessions) => super::print_report(&bgp::render_sessions(&sessions, socket))
            .context("writing the BGP status"),
        Err(e) => {
            let _ = super::print_report(&format!("\nBGP status: BIRD unreachable: {e}\n"));
            Err(anyhow::Error::new(e).context("cannot read the BGP sessions from BIRD"))
        }
    }
}

/// The host table.
async fn print_hosts(settings: &Settings) -> anyhow::Result<()> {
    let status_prefix = settings.status_prefix();
    let data_prefix = settings.data_prefix();
    let etcd = EtcdConfig::from_settings(settings).with_timeout(ETCD_TIMEOUT);
    let mut conn = connect(&etcd, &format!("{data_prefix}/Ready"))
        .await
        .map_err(|e| anyhow::anyhow!(e.reason()))
        .with_context(|| {
            format!(
                "cannot connect to etcd at {}",
                settings.etcd_endpoints.join(",")
            )
        })?;
    let client = &mut conn.client;
    let status = timed(
        ETCD_TIMEOUT,
        "get",
        client.get(
            format!("{status_prefix}/host/"),
            Some(etcd_client::GetOptions::new().with_prefix()),
        ),
    )
    .await
    .with_context(|| format!("cannot read {status_prefix}/host/"))?;
    let data = timed(
        ETCD_TIMEOUT,
        "get",
        client.get(
            format!("{data_prefix}/host/"),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        ),
    )
    .await
    .with_context(|| format!("cannot read {data_prefix}/host/"))?;
    let status_kvs: Vec<(String, Vec<u8>)> = status
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
            )
        })
        .collect();
    let data_keys: Vec<String> = data
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    let hosts = collect_hosts(&status_prefix, &status_kvs, &data_prefix, &data_keys);
    super::print_report(&render_table(&hosts, unix_now())).context("writing the status table")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> (String, Vec<u8>) {
        (key.to_string(), value.as_bytes().to_vec())
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(format_age(45), "45s");
        assert_eq!(format_age(185), "3m05s");
        assert_eq!(format_age(7440), "2h04m");
        assert_eq!(format_age(3 * 86_400 + 7200), "3d02h");
        assert_eq!(format_age(-5), "-5s");
    }

    #[test]
    fn hosts_are_collected_from_both_prefixes() {
        let sp = "/calico/felix/v1";
        let dp = "/calico/v1";
        let status = vec![
            kv(
                "/calico/felix/v1/host/a/status",
                r#"{"time":"2024-05-01T10:00:00Z","uptime":3600,"first_update":false}"#,
            ),
            kv(
                "/calico/felix/v1/host/a/last_reported_status",
                r#"{"time":"2024-05-01T10:00:00Z","uptime":3600}"#,
            ),
            kv(
                "/calico/felix/v1/host/a/workload/k8s/ns.pod/endpoint/e1",
                r#"{"status":"up"}"#,
            ),
            kv(
                "/calico/felix/v1/host/a/workload/k8s/ns.pod/endpoint/e2",
                r#"{"status":"error"}"#,
            ),
            kv(
                "/calico/felix/v1/host/b/last_reported_status",
                r#"{"time":"2024-05-01T09:00:00Z","uptime":60.5}"#,
            ),
            kv("/calico/felix/v1/host/b/unrelated", "x"),
            kv("/calico/felix/v1/elsewhere", "x"),
        ];
        let data = vec![
            "/calico/v1/host/a/workload/k8s/ns.pod/endpoint/e1".to_string(),
            "/calico/v1/host/a/workload/k8s/ns.pod/endpoint/e2".to_string(),
            "/calico/v1/host/a/bird_ip".to_string(),
            "/calico/v1/host/c/workload/docker/w/endpoint/e9".to_string(),
        ];
        let hosts = collect_hosts(sp, &status, dp, &data);
        assert_eq!(hosts.keys().collect::<Vec<_>>(), vec!["a", "b", "c"]);
        assert_eq!(hosts["a"].state(), "alive");
        assert_eq!(hosts["a"].configured_endpoints, 2);
        assert_eq!(hosts["a"].endpoint_reports.get("up"), Some(&1));
        assert_eq!(hosts["a"].endpoint_reports.get("error"), Some(&1));
        assert_eq!(hosts["b"].state(), "gone");
        assert_eq!(hosts["b"].last.as_ref().and_then(|r| r.uptime), Some(60.5));
        assert_eq!(hosts["c"].state(), "never");
        assert_eq!(hosts["c"].configured_endpoints, 1);
    }

    #[test]
    fn table_is_aligned_and_complete() {
        let status = vec![
            kv(
                "/calico/felix/v1/host/node-1/status",
                r#"{"time":"2024-05-01T10:00:00Z","uptime":11040}"#,
            ),
            kv(
                "/calico/felix/v1/host/node-1/workload/k/w/endpoint/e",
                r#"{"status":"up"}"#,
            ),
            kv(
                "/calico/felix/v1/host/node-2/last_reported_status",
                "not json\n",
            ),
        ];
        let hosts = collect_hosts("/calico/felix/v1", &status, "/calico/v1", &[]);
        let now = 1_714_557_612;
        let table = render_table(&hosts, now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[0].starts_with("HOST    STATE  LAST REPORT"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("node-1  alive  2024-05-01T10:00:00Z"),
            "{table}"
        );
        assert!(
            lines[1].contains(" 12s ") && lines[1].contains(" 3h04m "),
            "{table}"
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells[5..], ["0", "1", "0", "0"], "{table}");
        assert!(
            lines[2].starts_with("node-2  gone   invalid: not json\\n"),
            "{table}"
        );
        // Columns line up: STATE starts at the same offset everywhere.
        let col = lines[0].find("STATE");
        assert_eq!(lines[1].find("alive"), col);
        assert_eq!(lines[2].find("gone"), col);
    }

    #[test]
    fn empty_datastore_says_so() {
        assert!(render_table(&BTreeMap::new(), 0).contains("no hosts"));
    }
}
