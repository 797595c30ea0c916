//! Endpoint statuses for the status writer: workload endpoints from the
//! calculation and the last apply's failed kernel writes, host endpoints
//! from the interfaces the dataplane bound them to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use margay_dataplane::hostnet::WriteFailure;
use margay_dataplane::ApplyReport;
use margay_policy::calc::CalcEngine;
use margay_policy::desired::{DesiredState, LocalEndpoint, WorkloadEndpointKey};
use margay_policy::names::{Id, InterfaceName};

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

/// Status of every host endpoint of this host: `up` while bound to at
/// least one interface (`bindings`, from the dataplane), `down` otherwise.
pub fn host_endpoint_statuses(
    state: &DesiredState,
    bindings: &BTreeMap<Id, BTreeSet<InterfaceName>>,
) -> EndpointStatuses {
    state
        .host_endpoints
        .keys()
        .map(|id| {
            let bound = bindings.get(id).is_some_and(|ifaces| !ifaces.is_empty());
            let status = if bound {
                EndpointStatus::Up
            } else {
                EndpointStatus::Down
            };
            let name = EndpointName::Host {
                endpoint: id.to_string(),
            };
            (name, status)
        })
        .collect()
}

/// Replaces the host endpoint entries of `statuses` with `hosts`, leaving
/// the workload ones; true when anything changed.
pub fn replace_host_statuses(statuses: &mut EndpointStatuses, hosts: EndpointStatuses) -> bool {
    let before = statuses.clone();
    statuses.retain(|name, _| !matches!(name, EndpointName::Host { .. }));
    statuses.extend(hosts);
    *statuses != before
}

/// How the status writer names a local endpoint.
fn status_name(key: &WorkloadEndpointKey) -> EndpointName {
    EndpointName::Workload {
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

#[cfg(test)]
mod tests {
    use margay_policy::desired::{EndpointProgram, LocalHostEndpoint};

    use super::*;

    fn id(s: &str) -> Id {
        Id::new(s).expect("id")
    }

    fn state_with(ids: &[&str]) -> DesiredState {
        let mut state = DesiredState::default();
        for i in ids {
            state.host_endpoints.insert(
                id(i),
                LocalHostEndpoint {
                    id: id(i),
                    name: None,
                    expected_addrs: vec![],
                    program: EndpointProgram::default(),
                },
            );
        }
        state
    }

    fn host(i: &str) -> EndpointName {
        EndpointName::Host {
            endpoint: i.to_owned(),
        }
    }

    #[test]
    fn host_endpoints_are_up_while_bound() {
        let state = state_with(&["a", "b", "c"]);
        let eth0 = InterfaceName::new("eth0").expect("iface");
        let bindings = BTreeMap::from([
            (id("a"), BTreeSet::from([eth0])),
            (id("c"), BTreeSet::new()),
            (id("gone"), BTreeSet::new()),
        ]);
        let got = host_endpoint_statuses(&state, &bindings);
        assert_eq!(
            got,
            EndpointStatuses::from([
                (host("a"), EndpointStatus::Up),
                (host("b"), EndpointStatus::Down),
                (host("c"), EndpointStatus::Down),
            ])
        );
    }

    #[test]
    fn replacing_host_statuses_keeps_workloads() {
        let workload = EndpointName::Workload {
            orchestrator: "k8s".into(),
            workload: "w".into(),
            endpoint: "eth0".into(),
        };
        let mut statuses = EndpointStatuses::from([
            (workload.clone(), EndpointStatus::Error),
            (host("old"), EndpointStatus::Up),
        ]);
        let hosts = EndpointStatuses::from([(host("new"), EndpointStatus::Down)]);
        assert!(replace_host_statuses(&mut statuses, hosts.clone()));
        assert_eq!(
            statuses,
            EndpointStatuses::from([
                (workload, EndpointStatus::Error),
                (host("new"), EndpointStatus::Down),
            ])
        );
        assert!(!replace_host_statuses(&mut statuses, hosts));
    }
}
