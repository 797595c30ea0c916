//! Dataplane metrics: applies (time, failures, writes, latency, pending
//! updates) and keeping the kernel as programmed (drift repairs, refused
//! routes, rejected settings, firewall read-backs).

use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::counts::ObjectCounts;
use super::names::{
    object_label, setting_label, BackendLabel, ReasonLabel, ResultLabel, READBACK_RESULTS,
};
use super::{saturating_i64, unix_now, Metrics};

/// Buckets for the apply duration: 0.5 ms .. ~16 s.
pub(super) fn apply_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Buckets for the event-to-kernel latency: 1 ms .. ~65 s.
pub(super) fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    /// Registers the apply families.
    pub(super) fn register_apply(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "margay_dataplane_apply_duration",
            "Time to apply one batch of changes to the kernel, by firewall backend",
            Unit::Seconds,
            self.apply_duration.clone(),
        );
        registry.register(
            "margay_dataplane_apply_failures",
            "Dataplane applies that failed (retried later), by firewall backend",
            self.apply_failures.clone(),
        );
        registry.register(
            "margay_dataplane_apply_failures_consecutive",
            "Dataplane applies that failed in a row since the last success (0 after a success)",
            self.apply_failures_consecutive.clone(),
        );
        registry.register(
            "margay_dataplane_writes",
            "Kernel objects written (created, changed or removed), by object type",
            self.dataplane_writes.clone(),
        );
        registry.register_with_unit(
            "margay_update_latency",
            "Time from receiving a datastore event to having it applied in the kernel",
            Unit::Seconds,
            self.update_latency.clone(),
        );
        registry.register(
            "margay_pending_updates",
            "Datastore updates received but not yet applied to the kernel",
            self.pending_updates.clone(),
        );
        registry.register(
            "margay_updates_applied",
            "Datastore updates applied: in the kernel, or found to need no kernel change",
            self.updates_applied.clone(),
        );
        registry.register_with_unit(
            "margay_last_apply_timestamp",
            "Unix time of the last successful dataplane apply (0 before the first)",
            Unit::Seconds,
            self.last_apply.clone(),
        );
        registry.register(
            "margay_last_apply_revision",
            "Datastore revision of the newest update the last successful apply covered \
             (0 before the first); set just after margay_last_apply_timestamp_seconds",
            self.last_apply_revision.clone(),
        );
    }

    /// Registers the families about keeping the kernel as programmed.
    pub(super) fn register_repairs(&self, registry: &mut Registry) {
        registry.register(
            "margay_drift_repairs",
            "Kernel objects found changed by someone else and put back, by object type",
            self.drift_repairs.clone(),
        );
        registry.register(
            "margay_routes_refused",
            "Endpoint routes not programmed because they cover an address of this host, \
             a default gateway or an etcd endpoint, by what they covered",
            self.routes_refused.clone(),
        );
        registry.register(
            "margay_settings_rejected",
            "Datastore or reloaded settings rejected (the previous value stays), by setting and reason",
            self.settings_rejected.clone(),
        );
        registry.register(
            "margay_firewall_readbacks",
            "Firewall checks by result: skipped (nobody changed the ruleset), performed (read back), stale (dropped, an apply overtook it)",
            self.readbacks.clone(),
        );
    }

    /// Records one dataplane apply on `backend`: its duration, and a failure
    /// when `ok` is false. A success also sets the last-apply timestamp and
    /// resets the consecutive-failure gauge; a failure increments it.
    pub fn observe_apply(&self, backend: &str, took: Duration, ok: bool) {
        let label = BackendLabel {
            backend: backend.to_string(),
        };
        self.apply_duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if ok {
            self.last_apply.set(unix_now());
            self.apply_failures_consecutive.set(0);
        } else {
            self.apply_failures.get_or_create(&label).inc();
            self.apply_failures_consecutive.inc();
        }
    }

    /// Applies that failed in a row since the last success.
    pub fn consecutive_apply_failures(&self) -> u64 {
        u64::try_from(self.apply_failures_consecutive.get()).unwrap_or(0)
    }

    /// Counts `count` kernel objects of type `object` written (see
    /// [`DATAPLANE_OBJECTS`](super::DATAPLANE_OBJECTS)). Zero is a no-op.
    pub fn dataplane_writes(&self, object: &str, count: u64) {
        if count > 0 {
            self.dataplane_writes
                .get_or_create(&object_label(object))
                .inc_by(count);
        }
    }

    /// Records the time from receiving one datastore event to having its
    /// effect applied in the kernel.
    pub fn observe_update_latency(&self, latency: Duration) {
        self.update_latency.observe(latency.as_secs_f64());
    }

    /// Sets the number of received but not yet applied updates.
    pub fn set_pending_updates(&self, pending: u64) {
        self.pending_updates.set(saturating_i64(pending));
    }

    /// Counts `n` datastore updates as applied.
    pub fn updates_applied(&self, n: u64) {
        self.updates_applied.inc_by(n);
    }

    /// Counts `count` objects of type `object` that had drifted and were repaired.
    pub fn drift_repairs(&self, object: &str, count: u64) {
        if count > 0 {
            self.drift_repairs
                .get_or_create(&object_label(object))
                .inc_by(count);
        }
    }

    /// Counts one endpoint route refused for covering a protected address
    /// (`reason`: see [`ROUTE_REFUSAL_REASONS`](super::ROUTE_REFUSAL_REASONS)).
    pub fn route_refused(&self, reason: &str) {
        self.routes_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one rejected value of `setting` (`reason`: `invalid` or
    /// `host_interface`).
    pub fn setting_rejected(&self, setting: &str, reason: &str) {
        self.settings_rejected
            .get_or_create(&setting_label(setting, reason))
            .inc();
    }

    /// Brings `margay_firewall_readbacks_total` up to the dataplane's
    /// running totals (skipped, performed, stale).
    pub fn set_firewall_readbacks(&self, totals: [u64; 3]) {
        let Ok(mut seen) = self.readbacks_seen.lock() else {
            return;
        };
        for ((result, now), before) in READBACK_RESULTS.iter().zip(totals).zip(seen.iter_mut()) {
            if now > *before {
                self.readbacks
                    .get_or_create(&ResultLabel {
                        result: result.to_string(),
                    })
                    .inc_by(now - *before);
                *before = now;
            }
        }
    }

    /// Sets the object-count gauges.
    pub fn set_counts(&self, counts: &ObjectCounts) {
        self.counts.set(counts);
    }

    /// Records the datastore revision the last successful apply covered
    /// (call after [`Metrics::observe_apply`], so a scrape that sees the
    /// revision also sees that apply's timestamp).
    pub fn set_last_apply_revision(&self, revision: i64) {
        self.last_apply_revision.set(revision);
    }

    /// Unix time of the last successful apply, or `None` before the first.
    pub fn last_apply_timestamp(&self) -> Option<f64> {
        let t = self.last_apply.get();
        (t > 0.0).then_some(t)
    }
}
