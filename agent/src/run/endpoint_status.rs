//! Endpoint statuses for the status writer, from the calculation and the
//! last apply's failed kernel writes.

use std::collections::HashMap;

use margay_dataplane::ApplyReport;
use margay_policy::calc::CalcEngine;
use margay_policy::desired::LocalEndpoint;

use crate::heartbeat::{EndpointStatus, EndpointStatuses};

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
                Some(ep)
                    if report
                        .failures
                        .iter()
                        .any(|f| failure_touches(ep, &f.object)) =>
                {
                    EndpointStatus::Error
                }
                Some(_) => EndpointStatus::Up,
                None => EndpointStatus::Down,
            };
            (key.clone(), status)
        })
        .collect()
}

/// True when a failed write's object text names the endpoint's interface or address.
fn failure_touches(ep: &LocalEndpoint, object: &str) -> bool {
    let iface = ep.iface.as_str();
    object.split([' ', '/']).any(|token| {
        token == iface
            || ep.ipv4.iter().any(|n| n.addr().to_string() == token)
            || ep.ipv6.iter().any(|n| n.addr().to_string() == token)
    })
}
