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

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

mod bgp;
mod counts;
mod dataplane;
mod datastore;
mod names;
mod process;
#[cfg(test)]
mod tests;

pub use bgp::{BGP_PEER_TYPES, BIRD_REJECT_STAGES};
pub use counts::ObjectCounts;
pub use names::{
    key_kind, CONFLICT_KINDS, DATAPLANE_OBJECTS, KEY_KINDS, METRIC_NAMES, READBACK_RESULTS,
    RESYNC_REASONS, ROUTE_REFUSAL_REASONS, SETTING_REJECTIONS,
};
pub use process::{parse_stat, ProcessCollector, ProcessStats};

use counts::CountGauges;
use dataplane::{apply_histogram, latency_histogram};
use datastore::calc_histogram;
use names::{
    BackendLabel, KindLabel, ObjectLabel, ReasonLabel, ResultLabel, SettingLabel, VersionLabel,
};

type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

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
    last_apply_revision: Gauge,
    drift_repairs: Family<ObjectLabel, Counter>,
    routes_refused: Family<ReasonLabel, Counter>,
    settings_rejected: Family<SettingLabel, Counter>,
    readbacks: Family<ResultLabel, Counter>,
    /// The dataplane's running totals last turned into `readbacks`.
    readbacks_seen: Arc<std::sync::Mutex<[u64; 3]>>,
    counts: CountGauges,
    bird_reloads: Counter,
    bird_rejected: Family<bgp::StageLabel, Counter>,
    bird_reachable: Gauge,
    bgp_sessions: Family<bgp::SessionLabel, Gauge>,
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
            last_apply_revision: Gauge::default(),
            drift_repairs: Family::default(),
            routes_refused: Family::default(),
            settings_rejected: Family::default(),
            readbacks: Family::default(),
            readbacks_seen: Arc::default(),
            counts: CountGauges::default(),
            bird_reloads: Counter::default(),
            bird_rejected: Family::default(),
            bird_reachable: Gauge::default(),
            bgp_sessions: Family::default(),
            loop_turn: Arc::new(std::sync::atomic::AtomicU64::new(unix_now() as u64)),
        }
    }

    fn register_all(&self, registry: &mut Registry, version: &str) {
        let info = Info::new(VersionLabel {
            version: version.to_string(),
        });
        registry.register("margay_build", "Version of this margay binary", info);
        self.register_datastore(registry);
        self.register_apply(registry);
        self.register_repairs(registry);
        self.counts.register(registry);
        self.register_bgp(registry);
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
