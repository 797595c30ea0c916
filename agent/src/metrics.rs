//! Prometheus metrics: one registry, typed handles, OpenMetrics text rendering.
//!
//! [`Metrics`] owns every metric margay exports and is cheap to clone (all
//! handles are shared atomics), so the sync loop, the calculation and the
//! dataplane each keep a copy and record what they do. [`Metrics::render`]
//! produces the OpenMetrics text served on `/metrics` by [`crate::http`].
//!
//! Metric names are a contract with dashboards and alerts (see
//! `deploy/prometheus/alerts.yml`, `deploy/grafana/margay.json`): the full
//! rendered names are listed in [`METRIC_NAMES`] and checked by the unit tests.
//! Counters are registered without `_total`; prometheus-client appends it.
//! The `process_*` metrics are read from `/proc/self` at scrape time by
//! [`ProcessCollector`].
//!
//! This module records; it never decides anything and never logs.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use margay_policy::model::ResourceKey;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// Every metric family name as rendered (samples of counters end in
/// `_total`, of histograms in `_bucket`/`_sum`/`_count`, of the info metric
/// in `_info`). Dashboards and alerts may rely on exactly these.
pub const METRIC_NAMES: &[&str] = &[
    "margay_build_info",
    "margay_datastore_connected",
    "margay_datastore_events_total",
    "margay_datastore_resyncs_total",
    "margay_invalid_objects",
    "margay_invalid_updates_total",
    "margay_endpoint_conflicts",
    "margay_calc_duration_seconds",
    "margay_dataplane_apply_duration_seconds",
    "margay_dataplane_apply_failures_total",
    "margay_dataplane_apply_failures_consecutive",
    "margay_dataplane_writes_total",
    "margay_update_latency_seconds",
    "margay_pending_updates",
    "margay_updates_applied_total",
    "margay_last_apply_timestamp_seconds",
    "margay_drift_repairs_total",
    "margay_routes_refused_total",
    "margay_settings_rejected_total",
    "margay_firewall_readbacks_total",
    "margay_local_endpoints",
    "margay_remote_endpoints",
    "margay_profiles",
    "margay_policies",
    "margay_routes",
    "margay_chains",
    "margay_rules",
    "margay_sets",
    "margay_set_members",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_threads",
    "process_start_time_seconds",
];

/// The `kind` label values for datastore keys, one per [`ResourceKey`]
/// variant plus `unknown` for keys that do not parse at all.
pub const KEY_KINDS: &[&str] = &[
    "ready",
    "global_config",
    "host_config",
    "host_ip",
    "workload_endpoint",
    "host_endpoint",
    "profile_rules",
    "profile_tags",
    "profile_labels",
    "tier_metadata",
    "policy",
    "ip_pool",
    "unknown",
];

/// The `kind` label values of endpoint conflicts: two local endpoints
/// claiming one `interface`, or one `address` on different interfaces.
pub const CONFLICT_KINDS: &[&str] = &["interface", "address"];

/// The `reason` label values of full datastore reloads: the first load,
/// a reload after the connection or watch was lost, after the watch fell
/// behind a compaction, a periodic re-list, and after a watch response
/// larger than the client accepts.
pub const RESYNC_REASONS: &[&str] = &[
    "startup",
    "reconnect",
    "compacted",
    "refresh",
    "watch_too_large",
];

/// The `object` label values used for dataplane writes and drift repairs.
pub const DATAPLANE_OBJECTS: &[&str] = &[
    "route",
    "neighbour",
    "sysctl",
    "chain",
    "set",
    "set_member",
    "hook",
    "forward_accept",
];

/// The `reason` label values of `margay_routes_refused_total`: what the
/// refused route would have covered.
pub const ROUTE_REFUSAL_REASONS: &[&str] = &["etcd_endpoint", "default_gateway", "host_address"];

/// The `(setting, reason)` label values of `margay_settings_rejected_total`
/// created at start: a value that does not validate, and an interface
/// prefix that matches an interface carrying the host's own traffic.
pub const SETTING_REJECTIONS: &[(&str, &str)] = &[
    ("interface_prefix", "invalid"),
    ("interface_prefix", "host_interface"),
];

/// The `kind` label value for a datastore key (see [`KEY_KINDS`]).
pub fn key_kind(key: &ResourceKey) -> &'static str {
    match key {
        ResourceKey::Ready => "ready",
        ResourceKey::GlobalConfig(_) => "global_config",
        ResourceKey::HostConfig { .. } => "host_config",
        ResourceKey::HostIp(_) => "host_ip",
        ResourceKey::WorkloadEndpoint(_) => "workload_endpoint",
        ResourceKey::HostEndpoint(_) => "host_endpoint",
        ResourceKey::ProfileRules(_) => "profile_rules",
        ResourceKey::ProfileTags(_) => "profile_tags",
        ResourceKey::ProfileLabels(_) => "profile_labels",
        ResourceKey::TierMetadata(_) => "tier_metadata",
        ResourceKey::Policy { .. } => "policy",
        ResourceKey::IpPool(_) => "ip_pool",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabel {
    object: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SettingLabel {
    setting: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// The `result` label values of `margay_firewall_readbacks_total`.
pub const READBACK_RESULTS: &[&str] = &["skipped", "performed", "stale"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Buckets for the apply duration: 0.5 ms .. ~16 s.
fn apply_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Buckets for the event-to-kernel latency: 1 ms .. ~65 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Buckets for the calculation: 0.1 ms .. ~3 s.
fn calc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

/// How many objects of each kind margay currently knows or programs; set
/// after each calculation/apply with [`Metrics::set_counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectCounts {
    /// Active workload endpoints on this host.
    pub local_endpoints: u64,
    /// Endpoints on other hosts (routed to or matched by sets).
    pub remote_endpoints: u64,
    /// Profiles in the datastore (valid ones).
    pub profiles: u64,
    /// Tiered policies in the datastore (valid ones).
    pub policies: u64,
    /// Routes margay programs.
    pub routes: u64,
    /// Firewall chains margay programs.
    pub chains: u64,
    /// Firewall rules in those chains.
    pub rules: u64,
    /// Address sets margay programs.
    pub sets: u64,
    /// Members over all those sets.
    pub set_members: u64,
}

/// The gauges behind [`ObjectCounts`].
#[derive(Debug, Clone, Default)]
struct CountGauges {
    local_endpoints: Gauge,
    remote_endpoints: Gauge,
    profiles: Gauge,
    policies: Gauge,
    routes: Gauge,
    chains: Gauge,
    rules: Gauge,
    sets: Gauge,
    set_members: Gauge,
}

impl CountGauges {
    fn register(&self, registry: &mut Registry) {
        let gauges: [(&str, &str, &Gauge); 9] = [
            (
                "margay_local_endpoints",
                "Active workload endpoints on this host",
                &self.local_endpoints,
            ),
            (
                "margay_remote_endpoints",
                "Workload endpoints on other hosts known to this agent",
                &self.remote_endpoints,
            ),
            (
                "margay_profiles",
                "Valid profiles in the datastore",
                &self.profiles,
            ),
            (
                "margay_policies",
                "Valid tiered policies in the datastore",
                &self.policies,
            ),
            ("margay_routes", "Routes programmed by margay", &self.routes),
            (
                "margay_chains",
                "Firewall chains programmed by margay",
                &self.chains,
            ),
            (
                "margay_rules",
                "Firewall rules in margay's chains",
                &self.rules,
            ),
            (
                "margay_sets",
                "Address sets programmed by margay",
                &self.sets,
            ),
            (
                "margay_set_members",
                "Members over all of margay's address sets",
                &self.set_members,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
    }

    fn set(&self, counts: &ObjectCounts) {
        let pairs: [(&Gauge, u64); 9] = [
            (&self.local_endpoints, counts.local_endpoints),
            (&self.remote_endpoints, counts.remote_endpoints),
            (&self.profiles, counts.profiles),
            (&self.policies, counts.policies),
            (&self.routes, counts.routes),
            (&self.chains, counts.chains),
            (&self.rules, counts.rules),
            (&self.sets, counts.sets),
            (&self.set_members, counts.set_members),
        ];
        for (gauge, value) in pairs {
            gauge.set(saturating_i64(value));
        }
    }
}

/// All of margay's metrics. Clone it freely: clones share the same values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    datastore_connected: Gauge,
    datastore_events: Family<KindLabel, Counter>,
    datastore_resyncs: Family<ReasonLabel, Counter>,
    invalid_objects: Family<KindLabel, Gauge>,
    invalid_updates: Family<KindLabel, Counter>,
    endpoint_conflicts: Family<KindLabel, Gauge>,
    calc_duration: Histogram,
    apply_duration: HistogramFamily<BackendLabel>,
    apply_failures: Family<BackendLabel, Counter>,
    apply_failures_consecutive: Gauge,
    dataplane_writes: Family<ObjectLabel, Counter>,
    update_latency: Histogram,
    pending_updates: Gauge,
    updates_applied: Counter,
    last_apply: FloatGauge,
    drift_repairs: Family<ObjectLabel, Counter>,
    routes_refused: Family<ReasonLabel, Counter>,
    settings_rejected: Family<SettingLabel, Counter>,
    readbacks: Family<ResultLabel, Counter>,
    /// The dataplane's running totals last turned into `readbacks`.
    readbacks_seen: Arc<std::sync::Mutex<[u64; 3]>>,
    counts: CountGauges,
    /// Unix seconds of the main loop's last turn (creation time until the
    /// first turn, so a start-up that hangs stops looking alive); read by
    /// `/livez`.
    loop_turn: Arc<std::sync::atomic::AtomicU64>,
}

/// How long the main loop may go without turning before `/livez` fails. The
/// loop wakes at least every [`LOOP_TICK`], so this is generous.
pub const LIVENESS_WINDOW_SECS: u64 = 120;

/// The longest the main loop sleeps with nothing to do.
pub const LOOP_TICK: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates and registers every metric. `version` goes into
    /// `margay_build_info`; `backend` (`nftables`, `iptables`, `none`) gets its
    /// apply series created at zero so rates and alerts work from the start.
    /// Every known `kind`/`object` label value is pre-created too.
    pub fn new(version: &str, backend: &str) -> Self {
        let metrics = Self::unregistered();
        metrics.precreate(backend);
        let mut registry = Registry::default();
        metrics.register_all(&mut registry, version);
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    fn unregistered() -> Self {
        Metrics {
            registry: Arc::new(Registry::default()),
            datastore_connected: Gauge::default(),
            datastore_events: Family::default(),
            datastore_resyncs: Family::default(),
            invalid_objects: Family::default(),
            invalid_updates: Family::default(),
            endpoint_conflicts: Family::default(),
            calc_duration: calc_histogram(),
            apply_duration: Family::new_with_constructor(apply_histogram),
            apply_failures: Family::default(),
            apply_failures_consecutive: Gauge::default(),
            dataplane_writes: Family::default(),
            update_latency: latency_histogram(),
            pending_updates: Gauge::default(),
            updates_applied: Counter::default(),
            last_apply: FloatGauge::default(),
            drift_repairs: Family::default(),
            routes_refused: Family::default(),
            settings_rejected: Family::default(),
            readbacks: Family::default(),
            readbacks_seen: Arc::default(),
            counts: CountGauges::default(),
            loop_turn: Arc::new(std::sync::atomic::AtomicU64::new(unix_now() as u64)),
        }
    }

    fn precreate(&self, backend: &str) {
        let backend = BackendLabel {
            backend: backend.to_string(),
        };
        let _ = self.apply_duration.get_or_create(&backend);
        let _ = self.apply_failures.get_or_create(&backend);
        for kind in KEY_KINDS {
            let label = kind_label(kind);
            let _ = self.datastore_events.get_or_create(&label);
            let _ = self.invalid_objects.get_or_create(&label);
            let _ = self.invalid_updates.get_or_create(&label);
        }
        for kind in CONFLICT_KINDS {
            let _ = self.endpoint_conflicts.get_or_create(&kind_label(kind));
        }
        for reason in RESYNC_REASONS {
            let _ = self.datastore_resyncs.get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            });
        }
        for reason in ROUTE_REFUSAL_REASONS {
            let _ = self.routes_refused.get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            });
        }
        for (setting, reason) in SETTING_REJECTIONS {
            let _ = self
                .settings_rejected
                .get_or_create(&setting_label(setting, reason));
        }
        for object in DATAPLANE_OBJECTS {
            let label = object_label(object);
            let _ = self.dataplane_writes.get_or_create(&label);
            let _ = self.drift_repairs.get_or_create(&label);
        }
        for result in READBACK_RESULTS {
            let _ = self.readbacks.get_or_create(&ResultLabel {
                result: result.to_string(),
            });
        }
    }

    fn register_all(&self, registry: &mut Registry, version: &str) {
        let info = Info::new(VersionLabel {
            version: version.to_string(),
        });
        registry.register("margay_build", "Version of this margay binary", info);
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
        self.counts.register(registry);
    }

    /// The whole registry as OpenMetrics text (ends with `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Encoding into a String cannot fail; keep the output well-formed anyway.
            out.clear();
            out.push_str("# EOF\n");
        }
        out
    }

    /// Records whether the etcd watch is established and in sync.
    pub fn set_datastore_connected(&self, connected: bool) {
        self.datastore_connected.set(i64::from(connected));
    }

    /// Counts one datastore change of the given key kind (see [`key_kind`]).
    pub fn datastore_event(&self, kind: &str) {
        self.datastore_events.get_or_create(&kind_label(kind)).inc();
    }

    /// Counts one full reload; `reason` is one of [`RESYNC_REASONS`]
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

    /// Sets how many endpoint conflicts of `kind` (see [`CONFLICT_KINDS`]) there are.
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
    /// [`DATAPLANE_OBJECTS`]). Zero is a no-op.
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
    /// (`reason`: see [`ROUTE_REFUSAL_REASONS`]).
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

    /// Unix time of the last successful apply, or `None` before the first.
    /// Records that the main loop turned (called once per loop iteration).
    pub fn loop_turned(&self) {
        let now = unix_now() as u64;
        self.loop_turn
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// True while the main loop's last turn (or, before the first, the
    /// start) is within [`LIVENESS_WINDOW_SECS`].
    pub fn loop_alive(&self) -> bool {
        let last = self.loop_turn.load(std::sync::atomic::Ordering::Relaxed);
        (unix_now() as u64).saturating_sub(last) <= LIVENESS_WINDOW_SECS
    }

    #[cfg(test)]
    pub(crate) fn set_loop_turn_for_test(&self, unix_secs: u64) {
        self.loop_turn
            .store(unix_secs, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn last_apply_timestamp(&self) -> Option<f64> {
        let t = self.last_apply.get();
        (t > 0.0).then_some(t)
    }
}

fn kind_label(kind: &str) -> KindLabel {
    KindLabel {
        kind: kind.to_string(),
    }
}

fn setting_label(setting: &str, reason: &str) -> SettingLabel {
    SettingLabel {
        setting: setting.to_string(),
        reason: reason.to_string(),
    }
}

fn object_label(object: &str) -> ObjectLabel {
    ObjectLabel {
        object: object.to_string(),
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux reports these in
/// USER_HZ, which is 100 on every architecture margay targets.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Reads the standard `process_*` metrics from `/proc/self` on each scrape.
/// A file that cannot be read just leaves its metrics out.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCollector;

/// What [`ProcessCollector`] read from `/proc/self`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// Threads in this process.
    pub threads: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Soft limit on open file descriptors.
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    /// Reads the current process's figures from `/proc`.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let (cpu_ticks, start_ticks) = parse_stat(&stat)?;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_boot_time(&s));
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        Some(ProcessStats {
            cpu_seconds: cpu_ticks as f64 / CLOCK_TICKS_PER_SEC,
            start_time_seconds: boot.map(|b| b as f64 + start_ticks as f64 / CLOCK_TICKS_PER_SEC),
            resident_bytes: status_kb(&status, "VmRSS:").map(|kb| kb * 1024),
            virtual_bytes: status_kb(&status, "VmSize:").map(|kb| kb * 1024),
            threads: status_kb(&status, "Threads:"),
            open_fds: count_fds(),
            max_fds: parse_max_fds(&limits),
        })
    }
}

/// From `/proc/<pid>/stat`: (utime + stime, starttime), in clock ticks.
/// The command name (field 2) may hold spaces and parentheses, so fields
/// are counted after its last `)`.
pub fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some((field(14)? + field(15)?, field(22)?))
}

/// The first number after `label` in `/proc/<pid>/status` (kB for Vm* lines).
fn status_kb(status: &str, label: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `btime` from `/proc/stat`.
fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|n| n.trim().parse().ok())
}

/// The soft "Max open files" limit from `/proc/<pid>/limits`.
fn parse_max_fds(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn count_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(entries.count() as u64)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stats.cpu_seconds);
        let metric = encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds.",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        cpu.encode(metric)?;
        let gauges: [(&str, &str, Option<Unit>, Option<f64>); 6] = [
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                stats.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                stats.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                stats.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                stats.max_fds.map(|v| v as f64),
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                None,
                stats.threads.map(|v| v as f64),
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(Unit::Seconds),
                stats.start_time_seconds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let Some(value) = value else { continue };
            let metric = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)?;
        }
        Ok(())
    }
}

/// The family names present in OpenMetrics `text` (from `# TYPE` lines),
/// with the sample suffix a scraper sees for counters (`_total`) and infos
/// (`_info`). Used by the tests to compare with [`METRIC_NAMES`].
pub fn rendered_family_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let mut full = name.to_string();
        match kind {
            "counter" => full.push_str("_total"),
            "info" => full.push_str("_info"),
            _ => {}
        }
        names.push(full);
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn rendered_names_are_exactly_the_contract() {
        let metrics = Metrics::new("1.2.3", "nftables");
        let text = metrics.render();
        let mut got = rendered_family_names(&text);
        let mut want: Vec<String> = METRIC_NAMES.iter().map(|s| s.to_string()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "rendered:\n{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn every_family_has_help_text() {
        let text = Metrics::new("1.2.3", "nftables").render();
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
        assert_eq!(types, helps.len());
        for help in helps {
            let words = help.split_whitespace().count();
            assert!(words >= 4, "help text too short: {help}");
        }
    }

    #[test]
    fn help_texts_end_with_exactly_one_period() {
        let text = Metrics::new("v", "nftables").render();
        for help in text.lines().filter(|l| l.starts_with("# HELP ")) {
            assert!(help.ends_with('.') && !help.ends_with(".."), "{help}");
        }
    }

    #[test]
    fn every_family_has_samples_from_the_start() {
        let text = Metrics::new("v", "nftables").render();
        let names = rendered_family_names(&text);
        for name in names {
            let base = name.trim_end_matches("_total").trim_end_matches("_info");
            let has_sample = text
                .lines()
                .any(|l| !l.starts_with('#') && l.starts_with(base));
            assert!(has_sample, "{name} has no samples:\n{text}");
        }
    }

    #[test]
    fn counters_render_with_single_total_suffix() {
        let text = Metrics::new("v", "nftables").render();
        assert!(!text.contains("_total_total"));
        assert!(text.contains("# TYPE margay_datastore_events counter"));
        assert!(text.contains("margay_datastore_events_total{kind=\"workload_endpoint\"} 0"));
    }

    #[test]
    fn build_info_carries_the_version() {
        let text = Metrics::new("0.1.0-test", "iptables").render();
        assert!(
            text.contains("margay_build_info{version=\"0.1.0-test\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn backend_series_exist_before_any_apply() {
        let text = Metrics::new("v", "iptables").render();
        assert_eq!(
            sample_value(
                &text,
                "margay_dataplane_apply_failures_total{backend=\"iptables\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            sample_value(
                &text,
                "margay_dataplane_apply_duration_seconds_count{backend=\"iptables\"}"
            ),
            Some(0.0)
        );
    }

    #[test]
    fn recording_moves_the_rendered_values() {
        let metrics = Metrics::new("v", "nftables");
        let clone = metrics.clone();
        clone.set_datastore_connected(true);
        clone.datastore_event("policy");
        clone.datastore_event("policy");
        clone.datastore_resync("startup");
        clone.invalid_update("workload_endpoint");
        clone.set_invalid_objects("workload_endpoint", 3);
        clone.observe_apply("nftables", Duration::from_millis(3), true);
        clone.observe_apply("nftables", Duration::from_millis(5), false);
        clone.dataplane_writes("route", 4);
        clone.drift_repairs("chain", 1);
        clone.set_pending_updates(7);
        clone.observe_update_latency(Duration::from_millis(20));
        clone.observe_calc(Duration::from_micros(300));
        clone.set_counts(&ObjectCounts {
            local_endpoints: 2,
            set_members: 11,
            ..ObjectCounts::default()
        });
        let text = metrics.render();
        let expect = [
            ("margay_datastore_connected", 1.0),
            ("margay_datastore_events_total{kind=\"policy\"}", 2.0),
            ("margay_datastore_resyncs_total{reason=\"startup\"}", 1.0),
            (
                "margay_invalid_updates_total{kind=\"workload_endpoint\"}",
                1.0,
            ),
            ("margay_invalid_objects{kind=\"workload_endpoint\"}", 3.0),
            (
                "margay_dataplane_apply_duration_seconds_count{backend=\"nftables\"}",
                2.0,
            ),
            (
                "margay_dataplane_apply_failures_total{backend=\"nftables\"}",
                1.0,
            ),
            ("margay_dataplane_writes_total{object=\"route\"}", 4.0),
            ("margay_drift_repairs_total{object=\"chain\"}", 1.0),
            ("margay_pending_updates", 7.0),
            ("margay_update_latency_seconds_count", 1.0),
            ("margay_calc_duration_seconds_count", 1.0),
            ("margay_local_endpoints", 2.0),
            ("margay_set_members", 11.0),
        ];
        for (series, value) in expect {
            assert_eq!(
                sample_value(&text, series),
                Some(value),
                "{series} in\n{text}"
            );
        }
        let last = sample_value(&text, "margay_last_apply_timestamp_seconds").unwrap_or(0.0);
        assert!(last > 1.6e9, "last apply timestamp {last}");
        assert_eq!(metrics.last_apply_timestamp(), Some(last));
    }

    #[test]
    fn zero_writes_do_not_create_series() {
        let metrics = Metrics::new("v", "nftables");
        metrics.dataplane_writes("made_up", 0);
        assert!(!metrics.render().contains("made_up"));
    }

    #[test]
    fn key_kinds_cover_the_model() {
        let key = ResourceKey::GlobalConfig("LogSeverityScreen".into());
        assert!(KEY_KINDS.contains(&key_kind(&key)));
        assert!(KEY_KINDS.contains(&key_kind(&ResourceKey::Ready)));
    }

    #[test]
    fn parses_proc_stat_with_awkward_command_names() {
        // Fields after the name: state ppid pgrp session tty tpgid flags minflt
        // cminflt majflt cmajflt utime stime cutime cstime prio nice threads
        // itreal starttime ...
        let stat =
            "42 (we ird) name)) S 1 42 42 0 -1 4194560 10 0 0 0 250 50 0 0 20 0 3 0 12345 1000 200";
        assert_eq!(parse_stat(stat), Some((300, 12345)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_status_limits_and_boot_time() {
        let status = "Name:\tmargay\nVmSize:\t  1000 kB\nVmRSS:\t   200 kB\nThreads:\t5\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(200));
        assert_eq!(status_kb(status, "Threads:"), Some(5));
        let limits = "Limit Soft Hard Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn process_metrics_are_read_from_proc() {
        let stats = ProcessStats::read().expect("/proc/self readable");
        assert!(stats.resident_bytes.unwrap_or(0) > 0);
        assert!(stats.open_fds.unwrap_or(0) >= 3);
        assert!(stats.threads.unwrap_or(0) >= 1);
        assert!(stats.start_time_seconds.unwrap_or(0.0) > 1.0e9);
    }
}
