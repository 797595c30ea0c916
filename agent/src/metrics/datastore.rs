//! Datastore and calculation metrics: the etcd connection, events,
//! resyncs, invalid keys, endpoint conflicts, calculation time.

use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::names::{kind_label, ReasonLabel};
use super::{saturating_i64, Metrics};

/// Buckets for the calculation: 0.1 ms .. ~3 s.
pub(super) fn calc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

impl Metrics {
    /// Registers the datastore and calculation families.
    pub(super) fn register_datastore(&self, registry: &mut Registry) {
        registry.register(
            "margay_datastore_connected",
            "1 while the etcd watch is established and in sync, else 0",
            self.datastore_connected.clone(),
        );
        registry.register(
            "margay_datastore_events",
            "Datastore changes received, by key kind",
            self.datastore_events.clone(),
        );
        registry.register(
            "margay_datastore_resyncs",
            "Full reloads of the datastore, by reason",
            self.datastore_resyncs.clone(),
        );
        registry.register(
            "margay_invalid_objects",
            "Datastore keys currently ignored because they do not parse or validate, by key kind",
            self.invalid_objects.clone(),
        );
        registry.register(
            "margay_invalid_updates",
            "Datastore updates rejected as invalid, by key kind",
            self.invalid_updates.clone(),
        );
        registry.register(
            "margay_endpoint_conflicts",
            "Local endpoint conflicts (one interface or one address claimed twice), each failing closed, by kind",
            self.endpoint_conflicts.clone(),
        );
        registry.register_with_unit(
            "margay_calc_duration",
            "Time to compute the desired state from a batch of updates",
            Unit::Seconds,
            self.calc_duration.clone(),
        );
    }

    /// Records whether the etcd watch is established and in sync.
    pub fn set_datastore_connected(&self, connected: bool) {
        self.datastore_connected.set(i64::from(connected));
    }

    /// Counts one datastore change of the given key kind (see
    /// [`key_kind`](super::key_kind)).
    pub fn datastore_event(&self, kind: &str) {
        self.datastore_events.get_or_create(&kind_label(kind)).inc();
    }

    /// Counts one full reload; `reason` is one of [`RESYNC_REASONS`](super::RESYNC_REASONS)
    /// (another short fixed word works too, but is not pre-created at zero).
    pub fn datastore_resync(&self, reason: &str) {
        self.datastore_resyncs
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Sets how many keys of `kind` are currently ignored as invalid.
    pub fn set_invalid_objects(&self, kind: &str, count: u64) {
        self.invalid_objects
            .get_or_create(&kind_label(kind))
            .set(saturating_i64(count));
    }

    /// Sets how many endpoint conflicts of `kind` (see
    /// [`CONFLICT_KINDS`](super::CONFLICT_KINDS)) there are.
    pub fn set_endpoint_conflicts(&self, kind: &str, count: u64) {
        self.endpoint_conflicts
            .get_or_create(&kind_label(kind))
            .set(saturating_i64(count));
    }

    /// Counts one rejected (invalid) update of `kind`.
    pub fn invalid_update(&self, kind: &str) {
        self.invalid_updates.get_or_create(&kind_label(kind)).inc();
    }

    /// Records how long one calculation took.
    pub fn observe_calc(&self, took: Duration) {
        self.calc_duration.observe(took.as_secs_f64());
    }
}
