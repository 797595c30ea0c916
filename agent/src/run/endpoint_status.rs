//! Endpoint statuses for the status writer, from the calculation and the
//! last apply's failed kernel writes.

use std::collections::HashMap;
use std::net::IpAddr;

use margay_dataplane::hostnet::WriteFailure;
use margay_dataplane::ApplyReport;
use margay_policy::calc::CalcEngine;
use margay_policy::desired::{LocalEndpoint, WorkloadEndpointKey};

use margay_datastore::status::{EndpointName, EndpointStatus, EndpointStatuses};

/// Status of every local endpoint: `up` when plumbed, `error` when a kernel
/// write for its interface or addresses failed, `down` otherwise (inactive,
/// or not plumbed).
pub fn endpoint_statuses(calc: &CalcEngine, report: &ApplyReport) -> EndpointStatuses {
    let plumbed: HashMap<_, &LocalEndpoint> = calc
        .state()
        .endpoints
        .values()
        .map(|ep| (&ep.key, ep))
        .collect();
    calc.local_endpoint_keys()
        .map(|key| {
            let status = match plumbed.get(key) {
                Some(ep) if report.failures.iter().any(|f| failure_touches(ep, f)) => {
                    EndpointStatus::Error
                }
                Some(_) => EndpointStatus::Up,
                None => EndpointStatus::Down,
            };
            (status_name(key), status)
        })
        .collect()
}

/// How the status writer names a local endpoint.
fn status_name(key: &WorkloadEndpointKey) -> EndpointName {
    EndpointName {
        orchestrator: key.orchestrator.clone(),
        workload: key.workload.clone(),
        endpoint: key.endpoint.to_string(),
    }
}

/// True when a failed write belongs to the endpoint's interface or is for
/// one of its addresses.
fn failure_touches(ep: &LocalEndpoint, failure: &WriteFailure) -> bool {
    failure.iface.as_ref() == Some(&ep.iface)
        || failure.addr.is_some_and(|addr| match addr {
            IpAddr::V4(v4) => ep.ipv4.iter().any(|n| n.addr() == v4),
            IpAddr::V6(v6) => ep.ipv6.iter().any(|n| n.addr() == v6),
        })
}
