//! Contracts that tools outside this repository rely on, spelled out once
//! for every test that checks them.

/// The metric sample names margay exports (issue 5; see
/// agent/src/metrics.rs). Histograms also have `_bucket`, `_sum`, `_count`.
pub const METRIC_NAMES: &[&str] = &[
    "margay_build_info",
    "margay_datastore_connected",
    "margay_datastore_events_total",
    "margay_datastore_resyncs_total",
    "margay_invalid_objects",
    "margay_invalid_updates_total",
    "margay_calc_duration_seconds",
    "margay_dataplane_apply_duration_seconds",
    "margay_dataplane_apply_failures_total",
    "margay_dataplane_writes_total",
    "margay_update_latency_seconds",
    "margay_pending_updates",
    "margay_last_apply_timestamp_seconds",
    "margay_drift_repairs_total",
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
