//! Which host endpoint governs which host interface.
//!
//! A pure function of this host's host endpoints, the kernel's interfaces
//! with their addresses, and the workload interface prefixes. Only valid
//! interface names take part, never `lo` and never a workload interface.
//! On each of them the host endpoint whose `name` equals it wins (ties: the
//! smallest id); otherwise, among the host endpoints without a `name`, the
//! smallest id with an expected address on that interface. A named host
//! endpoint binds to its interface even while the kernel has no such
//! interface (rules match interfaces by name), so it is in force the moment
//! the interface appears.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use margay_policy::desired::LocalHostEndpoint;
use margay_policy::names::{Id, InterfaceName};

use super::InterfaceAddresses;

/// The interface the host's own loopback traffic uses: never filtered.
const LOOPBACK: &str = "lo";

/// One bound interface: the host endpoint governing it and the addresses
/// the interface carries now (empty for a named interface the kernel does
/// not have).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The host endpoint's id.
    pub id: Id,
    /// The interface's addresses.
    pub addrs: BTreeSet<IpAddr>,
}

/// Binds `host_endpoints` to the interfaces of `ifaces` (and to the
/// interfaces they name), skipping `lo` and names starting with one of the
/// workload `prefixes`.
pub fn bind_host_endpoints(
    host_endpoints: &BTreeMap<Id, LocalHostEndpoint>,
    ifaces: &InterfaceAddresses,
    prefixes: &[String],
) -> BTreeMap<InterfaceName, Binding> {
    let no_addrs = BTreeSet::new();
    let named = host_endpoints
        .values()
        .filter_map(|h| h.name.as_ref().map(|n| n.as_str()));
    let candidates: BTreeSet<&str> = ifaces.keys().map(String::as_str).chain(named).collect();
    let mut out = BTreeMap::new();
    for candidate in candidates {
        let Ok(iface) = InterfaceName::new(candidate) else {
            continue;
        };
        if iface.as_str() == LOOPBACK || iface.has_prefix(prefixes) {
            continue;
        }
        let addrs = ifaces.get(candidate).unwrap_or(&no_addrs);
        if let Some(id) = winner(host_endpoints, &iface, addrs) {
            let binding = Binding {
                id: id.clone(),
                addrs: addrs.clone(),
            };
            out.insert(iface, binding);
        }
    }
    out
}

/// The host endpoint governing `iface` carrying `addrs`, if any. The map is
/// ordered by id, so the first match is the smallest id.
fn winner<'a>(
    host_endpoints: &'a BTreeMap<Id, LocalHostEndpoint>,
    iface: &InterfaceName,
    addrs: &BTreeSet<IpAddr>,
) -> Option<&'a Id> {
    let by_name = host_endpoints
        .values()
        .find(|h| h.name.as_ref() == Some(iface));
    let by_addr = || {
        host_endpoints
            .values()
            .find(|h| h.name.is_none() && h.expected_addrs.iter().any(|a| addrs.contains(a)))
    };
    by_name.or_else(by_addr).map(|h| &h.id)
}

/// The interfaces each host endpoint is bound to (unbound ones are absent).
pub fn interfaces_by_endpoint(
    bindings: &BTreeMap<InterfaceName, Binding>,
) -> BTreeMap<Id, BTreeSet<InterfaceName>> {
    let mut out: BTreeMap<Id, BTreeSet<InterfaceName>> = BTreeMap::new();
    for (iface, b) in bindings {
        out.entry(b.id.clone()).or_default().insert(iface.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_policy::desired::EndpointProgram;

    fn hep(id: &str, name: Option<&str>, addrs: &[&str]) -> (Id, LocalHostEndpoint) {
        let id = Id::new(id).expect("id");
        let h = LocalHostEndpoint {
            id: id.clone(),
            name: name.map(|n| InterfaceName::new(n).expect("name")),
            expected_addrs: addrs.iter().map(|a| a.parse().expect("addr")).collect(),
            program: EndpointProgram::default(),
        };
        (id, h)
    }

    fn ifaces(list: &[(&str, &[&str])]) -> InterfaceAddresses {
        list.iter()
            .map(|(n, a)| {
                let addrs = a.iter().map(|x| x.parse().expect("addr")).collect();
                ((*n).to_owned(), addrs)
            })
            .collect()
    }

    fn bound(b: &BTreeMap<InterfaceName, Binding>) -> Vec<(String, String)> {
        b.iter()
            .map(|(i, b)| (i.as_str().to_owned(), b.id.as_str().to_owned()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn a_name_wins_over_addresses_and_ties_go_to_the_smallest_id() {
        let heps = BTreeMap::from([
            hep("b-named", Some("eth0"), &[]),
            hep("a-named", Some("eth0"), &[]),
            hep("by-addr", None, &["10.0.0.1"]),
        ]);
        let k = ifaces(&[("eth0", &["10.0.0.1"]), ("eth1", &["10.0.0.1"])]);
        let b = bind_host_endpoints(&heps, &k, &["cali".to_owned()]);
        assert_eq!(
            bound(&b),
            pairs(&[("eth0", "a-named"), ("eth1", "by-addr")])
        );
        assert_eq!(b[&InterfaceName::new("eth1").expect("n")].addrs.len(), 1);
    }

    #[test]
    fn name_less_endpoints_tie_by_smallest_id_and_follow_their_address() {
        let heps = BTreeMap::from([
            hep("z", None, &["10.0.0.1", "fd00::1"]),
            hep("m", None, &["fd00::1"]),
        ]);
        let before = ifaces(&[("eth0", &["10.0.0.1", "fd00::1"]), ("eth1", &[])]);
        let b = bind_host_endpoints(&heps, &before, &[]);
        assert_eq!(bound(&b), pairs(&[("eth0", "m")]));
        let moved = ifaces(&[("eth0", &["fd00::1"]), ("eth1", &["10.0.0.1"])]);
        let b = bind_host_endpoints(&heps, &moved, &[]);
        assert_eq!(bound(&b), pairs(&[("eth0", "m"), ("eth1", "z")]));
    }

    #[test]
    fn lo_workload_and_invalid_interfaces_are_never_bound() {
        let heps = BTreeMap::from([
            hep("lo-named", Some("lo"), &[]),
            hep("wl", Some("cali1234"), &[]),
            hep("addr", None, &["10.0.0.1"]),
        ]);
        let k = ifaces(&[
            ("lo", &["10.0.0.1"]),
            ("cali9", &["10.0.0.1"]),
            ("bad name!", &["10.0.0.1"]),
            ("eth7", &["10.0.0.2"]),
        ]);
        let b = bind_host_endpoints(&heps, &k, &["cali".to_owned()]);
        assert!(b.is_empty(), "{b:?}");
    }

    #[test]
    fn a_named_endpoint_binds_before_its_interface_exists() {
        let heps = BTreeMap::from([hep("future", Some("bond0"), &["10.0.0.9"])]);
        let b = bind_host_endpoints(&heps, &InterfaceAddresses::new(), &[]);
        assert_eq!(bound(&b), pairs(&[("bond0", "future")]));
        assert!(b.values().all(|x| x.addrs.is_empty()));
        let by_id = interfaces_by_endpoint(&b);
        assert_eq!(by_id.len(), 1);
    }
}
