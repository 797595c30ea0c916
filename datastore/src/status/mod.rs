//! Status reporting into `<prefix>/felix/v1/host/<host>/...`, as Felix did.
//!
//! Every `ReportingIntervalSecs` the [`Reporter`] writes
//! `host/<host>/status` = `{"time", "uptime", "first_update"}` on a lease of
//! `ReportingTTLSecs` (so the key vanishes when the host dies) and the same
//! document without a lease to `host/<host>/last_reported_status`. With
//! `EndpointReportingEnabled` it also keeps one
//! `host/<host>/workload/<orch>/<wl>/endpoint/<id>` = `{"status": ...}` per
//! local workload endpoint and one `host/<host>/endpoint/<id>` per host
//! endpoint of this host, and removes those whose endpoint went away
//! (including leftovers of a previous run, found by listing both
//! directories on each connect).
//!
//! It runs on its own task with its own etcd connection, so a slow or absent
//! etcd never delays the main loop; it learns what to report through
//! `tokio::sync::watch` channels. Failures are logged and retried on the
//! next tick; they never stop the agent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{Client, DeleteOptions, PutOptions};
use tokio::sync::watch;

use crate::backoff::{Backoff, BackoffConfig};
use crate::connect::{connect_any, timed, EtcdConfig};
use crate::error::EtcdError;
use crate::sync::{list_all, DEFAULT_PAGE_SIZE};

mod documents;

pub use documents::{
    desired_endpoint_docs, endpoint_document, status_document, EndpointName, EndpointStatus,
    EndpointStatuses, ReportConfig, StatusKeys,
};

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

    async fn client(&mut self) -> Result<Client, EtcdError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let conn = connect_any(&self.etcd, &mut self.endpoint_index, &self.probe_key).await?;
        self.lease = None;
        let mut client = conn.client;
        // Learn what a previous run left, so stale endpoint keys get removed.
        let mut written = BTreeMap::new();
        for dir in self.keys.endpoint_dirs() {
            let (_, listed) = list_all(
                &mut client,
                &dir,
                DEFAULT_PAGE_SIZE,
                self.etcd.request_timeout,
            )
            .await?;
            written.extend(listed.into_iter().map(|kv| (kv.key, kv.value)));
        }
        self.written = written;
        self.client = Some(client.clone());
        self.listed_leftovers = true;
        Ok(client)
    }

    fn forget_client(&mut self, error: &EtcdError) {
        tracing::warn!(%error, "status report failed; will retry");
        self.client = None;
    }

    /// Writes `status` (leased) and `last_reported_status`.
    pub async fn report_status(&mut self, ttl_secs: u64) -> Result<(), EtcdError> {
        let result = self.try_report_status(ttl_secs).await;
        if let Err(e) = &result {
            self.forget_client(e);
        }
        result
    }

    async fn try_report_status(&mut self, ttl_secs: u64) -> Result<(), EtcdError> {
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
    ) -> Result<(), EtcdError> {
        let result = self.try_sync_endpoints(want).await;
        if let Err(e) = &result {
            self.forget_client(e);
        }
        result
    }

    async fn try_sync_endpoints(
        &mut self,
        want: BTreeMap<String, String>,
    ) -> Result<(), EtcdError> {
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
