//! When to apply and what follows an apply: gating on sync and `/Ready`,
//! retry with backoff, metrics, endpoint statuses and systemd status.

use std::time::{Duration, Instant};

use margay_dataplane::ApplyReport;
use margay_policy::desired::Changes;

use super::endpoint_status::{endpoint_statuses, host_endpoint_statuses, replace_host_statuses};
use super::{Agent, Driver};
use crate::metrics::{Metrics, ObjectCounts};
use crate::notify::StatusSummary;

impl<D: Driver> Agent<D> {
    /// True when an apply should run now.
    fn should_apply(&mut self) -> bool {
        if !self.in_sync || self.listing || self.retry_at.is_some() {
            return false;
        }
        if !self.calc.ready() {
            if !self.waiting_logged {
                tracing::info!("datastore is not Ready; nothing is programmed until it is");
                self.waiting_logged = true;
            }
            return false;
        }
        self.waiting_logged = false;
        if self.applied_once && self.pending.is_empty() {
            // Updates without effect: nothing waits any more.
            self.out.metrics.updates_applied(self.pending_updates);
            self.pending_updates = 0;
            self.oldest_pending = None;
            self.out.metrics.set_pending_updates(0);
            return false;
        }
        true
    }

    /// Applies pending changes if allowed; schedules a retry on failure.
    pub(super) async fn maybe_apply(&mut self) {
        if !self.should_apply() {
            return;
        }
        let started = Instant::now();
        let result = self
            .dp
            .apply(self.calc.state(), &self.pending, &self.firewall)
            .await;
        let took = started.elapsed();
        let backend = self.dp.backend_name();
        self.out
            .metrics
            .observe_apply(backend, took, result.is_ok());
        match result {
            Ok(report) => {
                self.out
                    .metrics
                    .set_last_apply_revision(self.ingested_revision);
                self.applied(report, took);
            }
            Err(e) => {
                let delay = self.retry_backoff.next_delay();
                self.retry_at = Some(tokio::time::Instant::now() + delay);
                // The error names the failing object (chain, set or route).
                tracing::error!(
                    error = %e,
                    consecutive_failures = self.out.metrics.consecutive_apply_failures(),
                    retry_in_ms = delay.as_millis() as u64,
                    "dataplane apply failed; will retry"
                );
            }
        }
    }

    fn applied(&mut self, report: ApplyReport, took: Duration) {
        let first = !self.applied_once;
        self.applied_once = true;
        self.retry_backoff.reset();
        if let Some(oldest) = self.oldest_pending.take() {
            self.out.metrics.observe_update_latency(oldest.elapsed());
        }
        self.pending = Changes::default();
        self.out.metrics.updates_applied(self.pending_updates);
        self.pending_updates = 0;
        self.out.metrics.set_pending_updates(0);
        record_writes(&self.out.metrics, &report);
        self.report_refused(&report);
        if !report.failures.is_empty() && report.failures.len() != self.last_write_failures {
            let sample: Vec<String> = report
                .failures
                .iter()
                .take(5)
                .map(|f| f.to_string())
                .collect();
            tracing::warn!(
                failures = report.failures.len(),
                sample = %sample.join("; "),
                "some kernel writes failed; they are retried on link changes and repairs"
            );
        }
        self.last_write_failures = report.failures.len();
        tracing::debug!(
            duration_ms = took.as_millis() as u64,
            writes = report.writes(),
            "applied"
        );
        self.publish(&report);
        if first {
            tracing::info!(
                duration_ms = took.as_millis() as u64,
                "first snapshot applied; ready"
            );
            self.out.notifier.ready(&self.summary().to_string());
            for problem in self.calc.problems() {
                tracing::warn!(problem = %crate::logging::sanitize(&problem), "endpoint not programmed as written");
            }
        } else {
            self.out.notifier.status(&self.summary().to_string());
        }
    }

    /// Updates counts, endpoint statuses and the status line.
    fn publish(&mut self, report: &ApplyReport) {
        let calc = self.calc.stats();
        let dp = self.dp.stats();
        self.out.metrics.set_counts(&ObjectCounts {
            local_endpoints: calc.local_endpoints as u64,
            remote_endpoints: calc.remote_endpoints as u64,
            profiles: calc.profiles as u64,
            policies: calc.policies as u64,
            routes: dp.routes as u64,
            chains: dp.chains as u64,
            rules: dp.rules as u64,
            sets: dp.sets as u64,
            set_members: dp.set_members as u64,
        });
        let mut statuses = endpoint_statuses(&self.calc, report);
        statuses.extend(host_endpoint_statuses(
            self.calc.state(),
            &self.dp.host_endpoint_bindings(),
        ));
        self.out
            .endpoint_status
            .send_if_modified(|s| std::mem::replace(s, statuses.clone()) != statuses);
    }

    /// Re-reads which host endpoints are bound (an address moved between
    /// interfaces) and updates their statuses, leaving the workload ones.
    pub(super) fn publish_host_endpoint_statuses(&mut self) {
        let hosts = host_endpoint_statuses(self.calc.state(), &self.dp.host_endpoint_bindings());
        self.out
            .endpoint_status
            .send_if_modified(|s| replace_host_statuses(s, hosts));
    }

    pub(super) fn summary(&self) -> StatusSummary {
        let calc = self.calc.stats();
        let dp = self.dp.stats();
        StatusSummary {
            datastore_connected: self.connected,
            datastore_ready: self.calc.ready(),
            local_endpoints: calc.local_endpoints as u64,
            routes: dp.routes as u64,
            chains: dp.chains as u64,
            invalid_objects: self.invalid.len() as u64,
            pending_updates: self.pending_updates,
        }
    }
}

/// Counts an apply's writes by object type.
pub(super) fn record_writes(m: &Metrics, r: &ApplyReport) {
    m.dataplane_writes("route", r.routes as u64);
    m.dataplane_writes("neighbour", r.neighbours as u64);
    m.dataplane_writes("sysctl", r.sysctls as u64);
    m.dataplane_writes("chain", r.chains as u64);
    m.dataplane_writes("set", r.sets as u64);
    m.dataplane_writes("set_member", r.set_members as u64);
    m.dataplane_writes("forward_accept", r.forward_accepts as u64);
}
