//! The contract with dashboards and alerts: every rendered family name, the
//! label values created at zero from the start, and the label types.

use margay_policy::model::ResourceKey;
use prometheus_client::encoding::EncodeLabelSet;

use super::Metrics;

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
    "margay_last_apply_revision",
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
    "margay_bird_config_reloads_total",
    "margay_bird_config_rejected_total",
    "margay_bird_reachable",
    "margay_bgp_sessions",
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
    "bgp",
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
        ResourceKey::Bgp(_) => "bgp",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabel {
    pub(super) kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabel {
    pub(super) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BackendLabel {
    pub(super) backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ObjectLabel {
    pub(super) object: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SettingLabel {
    pub(super) setting: String,
    pub(super) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabel {
    pub(super) result: String,
}

/// The `result` label values of `margay_firewall_readbacks_total`.
pub const READBACK_RESULTS: &[&str] = &["skipped", "performed", "stale"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VersionLabel {
    pub(super) version: String,
}

pub(super) fn kind_label(kind: &str) -> KindLabel {
    KindLabel {
        kind: kind.to_string(),
    }
}

pub(super) fn setting_label(setting: &str, reason: &str) -> SettingLabel {
    SettingLabel {
        setting: setting.to_string(),
        reason: reason.to_string(),
    }
}

pub(super) fn object_label(object: &str) -> ObjectLabel {
    ObjectLabel {
        object: object.to_string(),
    }
}

impl Metrics {
    /// Creates every known label value at zero, so rates and alerts work
    /// from the start.
    pub(super) fn precreate(&self, backend: &str) {
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
        self.precreate_bgp();
        for result in READBACK_RESULTS {
            let _ = self.readbacks.get_or_create(&ResultLabel {
                result: result.to_string(),
            });
        }
    }
}
