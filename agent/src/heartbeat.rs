//! Status reporting into `<prefix>/felix/v1/host/<host>/...`, as Felix did.
//!
//! Every `ReportingIntervalSecs` the [`Reporter`] writes
//! `host/<host>/status` = `{"time", "uptime", "first_update"}` on a lease of
//! `ReportingTTLSecs` (so the key vanishes when the host dies) and the same
//! document without a lease to `host/<host>/last_reported_status`. With
//! `EndpointReportingEnabled` it also keeps one
//! `host/<host>/workload/<orch>/<wl>/endpoint/<id>` = `{"status": ...}` per
//! local endpoint and removes those whose endpoint went away (including
//! leftovers of a previous run, found by listing on each connect).
//!
//! It runs on its own task with its own etcd connection, so a slow or absent
//! etcd never delays the main loop; it learns what to report through
//! `tokio::sync::watch` channels. Failures are logged and retried on the
//! next tick; they never stop the agent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, DeleteOptions, PutOptions};
use margay_policy::desired::WorkloadEndpointKey;
use serde_json::json;
use tokio::sync::watch;

use crate::sync::{
    connect_any, list_all, timed, Backoff, BackoffConfig, EtcdConfig, SyncError, DEFAULT_PAGE_SIZE,
};

/// What to report, from the live settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportConfig {
    /// Period of status reports; `None` disables them.
    pub interval: Option<Duration>,
    /// Lease TTL of the `status` key, in seconds.
    pub ttl_secs: u64,
    /// Whether per-endpoint status is written.
    pub endpoints_enabled: bool,
}

impl ReportConfig {
    /// From the agent's settings.
    pub fn from_settings(s: &margay_config::Settings) -> Self {
        ReportConfig {
            interval: s.reporting_period(),
            ttl_secs: s.reporting_ttl_secs,
            endpoints_enabled: s.endpoint_reporting_enabled,
        }
    }
}

/// The state of one local endpoint, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointStatus {
    /// Programmed and active.
    Up,
    /// Known but inactive, or its interface is missing.
    Down,
    /// Programming it failed.
    Error,
}

impl EndpointStatus {
    /// The JSON `status` value.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Up => "up",
            EndpointStatus::Down => "down",
            EndpointStatus::Error => "error",
        }
    }
}

/// Endpoint statuses by endpoint.
pub type EndpointStatuses = BTreeMap<WorkloadEndpointKey, EndpointStatus>;

/// Where this host's status keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusKeys {
    host_dir: String,
}

impl StatusKeys {
    /// For `hostname` under the status prefix (e.g. `/calico/felix/v1`).
    pub fn new(status_prefix: &str, hostname: &str) -> Self {
        StatusKeys {
            host_dir: format!("{status_prefix}/host/{hostname}"),
        }
    }

    /// `.../host/<host>/status` (leased).
    pub fn status(&self) -> String {
        format!("{}/status", self.host_dir)
    }

    /// `.../host/<host>/last_reported_status` (not leased).
    pub fn last_reported(&self) -> String {
        format!("{}/last_reported_status", self.host_dir)
    }

    /// `.../host/<host>/workload/` (parent of every endpoint status).
    pub fn workload_dir(&self) -> String {
        format!("{}/workload/", self.host_dir)
    }

    /// `.../host/<host>/workload/<orch>/<wl>/endpoint/<id>`.
    pub fn endpoint(&self, key: &WorkloadEndpointKey) -> String {
        format!(
            "{}/workload/{}/{}/endpoint/{}",
            self.host_dir, key.orchestrator, key.workload, key.endpoint
        )
    }
}

/// The status document.
pub fn status_document(now: SystemTime, uptime: Duration, first_update: bool) -> String {
    json!({
        "time": rfc3339(now),
        "uptime": (uptime.as_secs_f64() * 1000.0).round() / 1000.0,
        "first_update": first_update,
    })
    .to_string()
}

/// The endpoint status document.
pub fn endpoint_document(status: EndpointStatus) -> String {
    json!({ "status": status.as_str() }).to_string()
}

/// `2006-01-02T15:04:05Z` for a UTC time (whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The reporter task's state.
pub struct Reporter {
    etcd: EtcdConfig,
    keys: StatusKeys,
    probe_key: String,
    started: Instant,
    first_update: bool,
    lease: Option<i64>,
    /// Endpoint status keys as last written (key → document).
    written: BTreeMap<String, String>,
    endpoint_index: usize,
    client: Option<Client>,
    /// Leftover endpoint keys of a previous run were listed.
    listed_leftovers: bool,
}

impl Reporter {
    /// A reporter for `hostname`; `status_prefix` is `<etcd_prefix>/felix/v1`.
    pub fn new(etcd: EtcdConfig, status_prefix: &str, hostname: &str) -> Self {
        Reporter {
            etcd,
            keys: StatusKeys::new(status_prefix, hostname),
            probe_key: format!("{status_prefix}/host/{hostname}/status"),
            started: Instant::now(),
            first_update: true,
            lease: None,
            written: BTreeMap::new(),
            endpoint_index: 0,
            client: None,
            listed_leftovers: false,
        }
    }

    /// Reports until both channels close.
    pub async fn run(
        mut self,
        mut config: watch::Receiver<ReportConfig>,
        mut endpoints: watch::Receiver<EndpointStatuses>,
    ) {
        let mut backoff = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
        });
        let mut next_status = tokio::time::Instant::now();
        let mut endpoints_dirty = true;
        loop {
            let cfg = config.borrow_and_update().clone();
            let now = tokio::time::Instant::now();
            let mut failed = false;
            if let Some(interval) = cfg.interval.filter(|_| now >= next_status) {
                next_status = match self.report_status(cfg.ttl_secs).await {
                    Ok(()) => now + interval,
                    Err(_) => {
                        failed = true;
                        now + backoff.next_delay().min(interval)
                    }
                };
            }
            if endpoints_dirty {
                let want = desired_endpoint_docs(
                    &self.keys,
                    &endpoints.borrow_and_update(),
                    cfg.endpoints_enabled,
                );
                match self.sync_endpoints(want).await {
                    Ok(()) => endpoints_dirty = false,
                    Err(_) => failed = true,
                }
            }
            let retry_at = if failed {
                Some(tokio::time::Instant::now() + backoff.next_delay())
            } else {
                backoff.reset();
                None
            };
            tokio::select! {
                changed = config.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let new = config.borrow().clone();
                    if new.interval != cfg.interval {
                        next_status = tokio::time::Instant::now();
                    }
                    endpoints_dirty |= new.endpoints_enabled != cfg.endpoints_enabled;
                }
                changed = endpoints.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    endpoints_dirty = true;
                }
                _ = sleep_until_opt(cfg.interval.map(|_| next_status)) => {}
                _ = sleep_until_opt(retry_at) => {}
            }
        }
    }

    async fn client(&mut self) -> Result<Client, SyncError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let conn = connect_any(&self.etcd, &mut self.endpoint_index, &self.probe_key).await?;
        self.lease = None;
        let mut client = conn.client;
        // Learn what a previous run left, so stale endpoint keys get removed.
        let dir = self.keys.workload_dir();
        let (_, listed) = list_all(
            &mut client,
            &dir,
            DEFAULT_PAGE_SIZE,
            self.etcd.request_timeout,
        )
        .await?;
        self.written = listed.into_iter().map(|kv| (kv.key, kv.value)).collect();
        self.client = Some(client.clone());
        self.listed_leftovers = true;
        Ok(client)
    }

    fn forget_client(&mut self, error: &SyncError) {
        tracing::warn!(%error, "status report failed; will retry");
        self.client = None;
    }

    /// Writes `status` (leased) and `last_reported_status`.
    pub async fn report_status(&mut self, ttl_secs: u64) -> Result<(), SyncError> {
        let result = self.try_report_status(ttl_secs).await;
        if let Err(e) = &result {
            self.forget_client(e);
        }
        result
    }

    async fn try_report_status(&mut self, ttl_secs: u64) -> Result<(), SyncError> {
        let mut client = self.client().await?;
        let timeout = self.etcd.request_timeout;
        let doc = status_document(SystemTime::now(), self.started.elapsed(), self.first_update);
        let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
        let lease = timed(timeout, "lease grant", client.lease_grant(ttl, None))
            .await?
            .id();
        let opts = PutOptions::new().with_lease(lease);
        timed(
            timeout,
            "put status",
            client.put(self.keys.status(), doc.clone(), Some(opts)),
        )
        .await?;
        // The key now rides on the new lease; the old one can go.
        if let Some(old) = self.lease.replace(lease) {
            let _ = timed(timeout, "lease revoke", client.lease_revoke(old)).await;
        }
        timed(
            timeout,
            "put last status",
            client.put(self.keys.last_reported(), doc, None),
        )
        .await?;
        self.first_update = false;
        Ok(())
    }

    /// Makes the endpoint status keys equal to `want` (key → document).
    pub async fn sync_endpoints(
        &mut self,
        want: BTreeMap<String, String>,
    ) -> Result<(), SyncError> {
        let result = self.try_sync_endpoints(want).await;
        if let Err(e) = &result {
            self.forget_client(e);
        }
        result
    }

    async fn try_sync_endpoints(
        &mut self,
        want: BTreeMap<String, String>,
    ) -> Result<(), SyncError> {
        if !self.listed_leftovers {
            // Connecting lists what a previous run left, into `written`.
            self.client().await?;
        }
        if want == self.written {
            return Ok(());
        }
        let mut client = self.client().await?;
        let timeout = self.etcd.request_timeout;
        let stale: Vec<String> = self
            .written
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        for key in stale {
            timed(
                timeout,
                "delete endpoint status",
                client.delete(key.clone(), None::<DeleteOptions>),
            )
            .await?;
            self.written.remove(&key);
        }
        for (key, doc) in want {
            if self.written.get(&key) != Some(&doc) {
                timed(
                    timeout,
                    "put endpoint status",
                    client.put(key.clone(), doc.clone(), None),
                )
                .await?;
                self.written.insert(key, doc);
            }
        }
        Ok(())
    }
}

/// The endpoint status keys and documents wanted now.
pub fn desired_endpoint_docs(
    keys: &StatusKeys,
    statuses: &EndpointStatuses,
    enabled: bool,
) -> BTreeMap<String, String> {
    if !enabled {
        return BTreeMap::new();
    }
    statuses
        .iter()
        .map(|(ep, st)| (keys.endpoint(ep), endpoint_document(*st)))
        .collect()
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Starts a reporter task.
pub fn spawn(
    etcd: EtcdConfig,
    status_prefix: &str,
    hostname: &str,
    config: watch::Receiver<ReportConfig>,
    endpoints: watch::Receiver<EndpointStatuses>,
) -> tokio::task::JoinHandle<()> {
    let reporter = Reporter::new(etcd, status_prefix, hostname);
    tokio::spawn(reporter.run(config, endpoints))
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_policy::names::Id;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29 01:02:03
        assert_eq!(rfc3339(t), "2000-02-29T01:02:03Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799); // 2099-12-31 23:59:59
        assert_eq!(rfc3339(t), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn documents_have_the_felix_fields() {
        let doc: serde_json::Value = serde_json::from_str(&status_document(
            UNIX_EPOCH,
            Duration::from_millis(1500),
            true,
        ))
        .expect("json");
        assert_eq!(doc["time"], "1970-01-01T00:00:00Z");
        assert_eq!(doc["uptime"], 1.5);
        assert_eq!(doc["first_update"], true);
        assert_eq!(
            endpoint_document(EndpointStatus::Error),
            r#"{"status":"error"}"#
        );
    }

    #[test]
    fn keys_follow_the_datamodel() {
        let keys = StatusKeys::new("/calico/felix/v1", "h1");
        assert_eq!(keys.status(), "/calico/felix/v1/host/h1/status");
        assert_eq!(
            keys.last_reported(),
            "/calico/felix/v1/host/h1/last_reported_status"
        );
        let ep = WorkloadEndpointKey {
            host: "h1".into(),
            orchestrator: "k8s".into(),
            workload: "ns.pod".into(),
            endpoint: Id::new("eth0").expect("id"),
        };
        assert_eq!(
            keys.endpoint(&ep),
            "/calico/felix/v1/host/h1/workload/k8s/ns.pod/endpoint/eth0"
        );
        let mut statuses = EndpointStatuses::new();
        statuses.insert(ep, EndpointStatus::Up);
        assert_eq!(desired_endpoint_docs(&keys, &statuses, true).len(), 1);
        assert!(desired_endpoint_docs(&keys, &statuses, false).is_empty());
    }
}
