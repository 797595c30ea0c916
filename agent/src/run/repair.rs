//! Keeping the kernel as programmed: netlink events, the periodic refresh
//! (firewall read-back, route repair) and the drift it finds.

use margay_dataplane::firewall::manager::DriftReport;
use margay_dataplane::{ApplyReport, DataplaneError, DataplaneEvent, Readback};

use super::apply::record_writes;
use super::{Agent, Driver};

impl<D: Driver> Agent<D> {
    /// Route/link events: repaired at once (after the first apply; before
    /// it, the first full apply covers them).
    pub(super) async fn handle_dataplane_events(&mut self, events: Vec<DataplaneEvent>) {
        if events.is_empty() || !self.applied_once {
            return;
        }
        let overrun = events.iter().any(|e| matches!(e, DataplaneEvent::Overrun));
        let foreign = events
            .iter()
            .any(|e| matches!(e, DataplaneEvent::Route { .. }));
        if overrun {
            tracing::warn!("netlink events were lost; re-reading routes");
            self.repair_routes().await;
            self.publish_host_endpoint_statuses();
            return;
        }
        match self.dp.handle_events(events).await {
            Ok(report) => {
                record_writes(&self.out.metrics, &report);
                self.report_refused(&report);
                self.publish_host_endpoint_statuses();
                if foreign && report.routes > 0 {
                    self.out
                        .metrics
                        .drift_repairs("route", report.routes as u64);
                    tracing::warn!(
                        routes = report.routes,
                        "routes changed by someone else were put back"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "handling netlink events failed"),
        }
    }

    /// Logs and counts endpoint routes refused for covering an address
    /// this host needs, naming the local endpoint when there is one.
    pub(super) fn report_refused(&self, report: &ApplyReport) {
        let state = self.calc.state();
        crate::host_guard::report_refused(
            &self.out.metrics,
            &self.limiter,
            &report.refused_routes,
            |r| crate::host_guard::endpoint_behind(state, r),
        );
    }

    async fn repair_routes(&mut self) {
        if self.listing {
            return;
        }
        match self.dp.repair_routes(self.calc.state()).await {
            Ok(0) => {}
            Ok(n) => {
                self.out.metrics.drift_repairs("route", n as u64);
                tracing::warn!(
                    writes = n,
                    "routes, neighbours or sysctls had drifted and were repaired"
                );
            }
            Err(e) => tracing::error!(error = %e, "route repair failed"),
        }
    }

    /// The periodic refresh: firewall drift, then routes.
    pub(super) async fn refresh_dataplane(&mut self) {
        self.limiter.flush_summaries();
        if !self.applied_once || self.listing || self.retry_at.is_some() {
            return;
        }
        let drift = self
            .dp
            .repair_firewall(self.calc.state(), &self.firewall)
            .await;
        self.record_drift(drift);
        self.repair_routes().await;
    }

    /// A background firewall read-back ended: repair what it found.
    pub(super) async fn finish_readback(&mut self, readback: Readback) {
        tracing::debug!(
            took_ms = readback.took.as_millis() as u64,
            "firewall read-back done"
        );
        if self.listing {
            // Never repair towards a half-listed view; the next refresh reads again.
            return;
        }
        let drift = self
            .dp
            .finish_readback(readback, self.calc.state(), &self.firewall)
            .await;
        self.record_drift(drift);
    }

    fn record_drift(&self, drift: Result<DriftReport, DataplaneError>) {
        self.out
            .metrics
            .set_firewall_readbacks(self.dp.readback_totals());
        match drift {
            Ok(drift) if !drift.is_clean() => {
                let m = &self.out.metrics;
                m.drift_repairs("chain", drift.chains.len() as u64);
                m.drift_repairs("set", drift.sets.len() as u64);
                m.drift_repairs(
                    "set_member",
                    (drift.members_missing + drift.members_extra) as u64,
                );
                m.drift_repairs("hook", drift.hooks.len() as u64);
                m.drift_repairs("forward_accept", drift.forward_accepts as u64);
                tracing::warn!(
                    chains = drift.chains.len(),
                    sets = drift.sets.len(),
                    members = drift.members_missing + drift.members_extra,
                    hooks = drift.hooks.len(),
                    forward_accepts = drift.forward_accepts,
                    "firewall had drifted and was repaired"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "firewall refresh failed"),
        }
    }
}
