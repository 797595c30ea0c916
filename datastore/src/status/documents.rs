//! What the status writer writes, and where: the host's status keys under
//! the status prefix and the Felix-compatible JSON documents.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::time::format_rfc3339;

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

/// A local endpoint as its status key names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointName {
    /// A workload endpoint:
    /// `.../workload/<orchestrator>/<workload>/endpoint/<endpoint>`.
    Workload {
        /// Orchestrator segment, e.g. `k8s`.
        orchestrator: String,
        /// Workload segment.
        workload: String,
        /// Endpoint id.
        endpoint: String,
    },
    /// A host endpoint of this host: `.../endpoint/<endpoint>`.
    Host {
        /// Host endpoint id.
        endpoint: String,
    },
}

/// Endpoint statuses by endpoint.
pub type EndpointStatuses = BTreeMap<EndpointName, EndpointStatus>;

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

    /// `.../host/<host>/workload/` (parent of every workload endpoint status).
    pub fn workload_dir(&self) -> String {
        format!("{}/workload/", self.host_dir)
    }

    /// `.../host/<host>/endpoint/` (parent of every host endpoint status).
    pub fn host_endpoint_dir(&self) -> String {
        format!("{}/endpoint/", self.host_dir)
    }

    /// The directories holding endpoint statuses (listed for leftovers).
    pub fn endpoint_dirs(&self) -> [String; 2] {
        [self.workload_dir(), self.host_endpoint_dir()]
    }

    /// `.../host/<host>/workload/<orch>/<wl>/endpoint/<id>` for a workload
    /// endpoint, `.../host/<host>/endpoint/<id>` for a host endpoint.
    pub fn endpoint(&self, key: &EndpointName) -> String {
        match key {
            EndpointName::Workload {
                orchestrator,
                workload,
                endpoint,
            } => format!(
                "{}/workload/{orchestrator}/{workload}/endpoint/{endpoint}",
                self.host_dir
            ),
            EndpointName::Host { endpoint } => format!("{}{endpoint}", self.host_endpoint_dir()),
        }
    }
}

/// The status document.
pub fn status_document(now: SystemTime, uptime: Duration, first_update: bool) -> String {
    json!({
        "time": format_rfc3339(now),
        "uptime": (uptime.as_secs_f64() * 1000.0).round() / 1000.0,
        "first_update": first_update,
    })
    .to_string()
}

/// The endpoint status document.
pub fn endpoint_document(status: EndpointStatus) -> String {
    json!({ "status": status.as_str() }).to_string()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

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
        let ep = EndpointName::Workload {
            orchestrator: "k8s".into(),
            workload: "ns.pod".into(),
            endpoint: "eth0".into(),
        };
        assert_eq!(
            keys.endpoint(&ep),
            "/calico/felix/v1/host/h1/workload/k8s/ns.pod/endpoint/eth0"
        );
        let hep = EndpointName::Host {
            endpoint: "eth0".into(),
        };
        assert_eq!(
            keys.endpoint(&hep),
            "/calico/felix/v1/host/h1/endpoint/eth0"
        );
        assert!(keys.endpoint(&hep).starts_with(&keys.host_endpoint_dir()));
        let mut statuses = EndpointStatuses::new();
        statuses.insert(ep, EndpointStatus::Up);
        statuses.insert(hep, EndpointStatus::Down);
        let docs = desired_endpoint_docs(&keys, &statuses, true);
        assert_eq!(
            docs.get("/calico/felix/v1/host/h1/endpoint/eth0")
                .map(String::as_str),
            Some(r#"{"status":"down"}"#)
        );
        assert_eq!(docs.len(), 2);
        assert!(desired_endpoint_docs(&keys, &statuses, false).is_empty());
    }
}
