//! This host's host endpoints as `margay plan` and `margay check` show
//! them: where each is bound and which firewall chains carry its policy.
//!
//! Binding is the dataplane's rule ([`bind_host_endpoints`]: by `name`,
//! else by the expected addresses the kernel's interfaces carry); here it
//! runs over the interfaces a read-only dataplane just read, so `plan` and
//! `check` show where the agent would bind each host endpoint now.

use std::collections::{BTreeMap, BTreeSet};

use margay_dataplane::firewall::lower::{bind_host_endpoints, interfaces_by_endpoint};
use margay_dataplane::firewall::model::ObjectName;
use margay_dataplane::Dataplane;
use margay_policy::desired::{DesiredState, LocalHostEndpoint};
use margay_policy::names::{Id, InterfaceName};
use serde_json::{json, Value};

use crate::logging::sanitize;

/// Interfaces by host endpoint id.
pub type Bindings = BTreeMap<Id, BTreeSet<InterfaceName>>;

/// The chains of a host endpoint bound to one interface, with their role:
/// (chain-name kind, what the chain does).
const CHAIN_ROLES: [(&str, &str); 4] = [
    ("hi", "to the host: established, failsafe, then policy"),
    ("hin", "to the host: its inbound policy"),
    ("ho", "from the host: established, failsafe, then policy"),
    ("hout", "from the host: its outbound policy"),
];

/// Where each host endpoint of `state` is bound with the interfaces the
/// started dataplane `dp` read (workload interfaces by `prefixes` excluded).
pub fn dataplane_bindings(dp: &Dataplane, state: &DesiredState, prefixes: &[String]) -> Bindings {
    let ifaces = dp.host().interface_addresses();
    interfaces_by_endpoint(&bind_host_endpoints(
        &state.host_endpoints,
        ifaces,
        prefixes,
    ))
}

/// One chain of a bound host endpoint: its name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChain {
    /// The chain name, as the firewall writes it.
    pub name: String,
    /// What it does.
    pub role: &'static str,
}

/// The chains a host endpoint bound to `iface` gets.
pub fn chains_for(iface: &InterfaceName) -> Vec<HostChain> {
    CHAIN_ROLES
        .iter()
        .map(|(kind, role)| HostChain {
            name: ObjectName::generate(kind, iface.as_str())
                .as_str()
                .to_owned(),
            role,
        })
        .collect()
}

/// How a host endpoint finds its interfaces: `name eth0` or
/// `expected addresses 10.0.0.1, fd00::1`.
pub fn describe_match(hep: &LocalHostEndpoint) -> String {
    match &hep.name {
        Some(name) => format!("name {name}"),
        None => {
            let addrs: Vec<String> = hep.expected_addrs.iter().map(ToString::to_string).collect();
            format!("expected addresses {}", addrs.join(", "))
        }
    }
}

/// The host endpoints section of `margay plan`'s text: one line per host
/// endpoint, then one per chain of each interface it is bound to. Empty
/// when this host has none.
pub fn section_text(state: &DesiredState, bindings: &Bindings) -> String {
    if state.host_endpoints.is_empty() {
        return String::new();
    }
    let mut text = format!("host endpoints: {}\n", state.host_endpoints.len());
    for (id, hep) in &state.host_endpoints {
        let ifaces = bindings.get(id).cloned().unwrap_or_default();
        let bound = if ifaces.is_empty() {
            "not bound to any interface now".to_owned()
        } else {
            let names: Vec<&str> = ifaces.iter().map(InterfaceName::as_str).collect();
            format!("bound to {}", names.join(", "))
        };
        text.push_str(&format!(
            "  host endpoint {} ({}): {bound}\n",
            sanitize(id.as_str()),
            describe_match(hep)
        ));
        for iface in &ifaces {
            for chain in chains_for(iface) {
                text.push_str(&format!(
                    "    {iface}: chain {} ({})\n",
                    chain.name, chain.role
                ));
            }
        }
    }
    text
}

/// The host endpoints section of `margay plan --json`:
/// `[{"id", "name", "expected_addrs", "bound_to", "chains": [{"interface", "name", "role"}]}]`.
pub fn section_json(state: &DesiredState, bindings: &Bindings) -> Value {
    let entries: Vec<Value> = state
        .host_endpoints
        .iter()
        .map(|(id, hep)| {
            let ifaces = bindings.get(id).cloned().unwrap_or_default();
            let chains: Vec<Value> = ifaces
                .iter()
                .flat_map(|iface| {
                    chains_for(iface).into_iter().map(move |c| {
                        json!({"interface": iface.as_str(), "name": c.name, "role": c.role})
                    })
                })
                .collect();
            json!({
                "id": id.as_str(),
                "name": hep.name.as_ref().map(InterfaceName::as_str),
                "expected_addrs": hep.expected_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "bound_to": ifaces.iter().map(InterfaceName::as_str).collect::<Vec<_>>(),
                "chains": chains,
            })
        })
        .collect();
    Value::Array(entries)
}

#[cfg(test)]
mod tests {
    use margay_policy::desired::EndpointProgram;

    use super::*;

    fn id(s: &str) -> Id {
        Id::new(s).expect("id")
    }

    fn iface(s: &str) -> InterfaceName {
        InterfaceName::new(s).expect("iface")
    }

    fn hep(i: &str, name: Option<&str>, addrs: &[&str]) -> LocalHostEndpoint {
        LocalHostEndpoint {
            id: id(i),
            name: name.map(iface),
            expected_addrs: addrs.iter().map(|a| a.parse().expect("ip")).collect(),
            program: EndpointProgram::default(),
        }
    }

    fn state(heps: Vec<LocalHostEndpoint>) -> DesiredState {
        let mut s = DesiredState::default();
        for h in heps {
            s.host_endpoints.insert(h.id.clone(), h);
        }
        s
    }

    #[test]
    fn the_section_names_endpoints_interfaces_and_chains() {
        let s = state(vec![
            hep("mgmt", Some("eth0"), &[]),
            hep("spare", None, &["10.0.0.9", "fd00::9"]),
        ]);
        let b = Bindings::from([(id("mgmt"), BTreeSet::from([iface("eth0")]))]);
        let text = section_text(&s, &b);
        assert!(text.starts_with("host endpoints: 2\n"), "{text}");
        assert!(
            text.contains("  host endpoint mgmt (name eth0): bound to eth0\n"),
            "{text}"
        );
        assert!(
            text.contains("    eth0: chain margay-hi-eth0 (to the host: established, failsafe, then policy)\n"),
            "{text}"
        );
        assert!(text.contains("eth0: chain margay-hout-eth0"), "{text}");
        assert!(
            text.contains(
                "  host endpoint spare (expected addresses 10.0.0.9, fd00::9): not bound to any interface now\n"
            ),
            "{text}"
        );
        let j = section_json(&s, &b);
        assert_eq!(j[0]["id"], "mgmt");
        assert_eq!(j[0]["bound_to"], json!(["eth0"]));
        assert_eq!(j[0]["chains"].as_array().map(Vec::len), Some(4));
        assert_eq!(j[1]["name"], Value::Null);
        assert_eq!(j[1]["expected_addrs"], json!(["10.0.0.9", "fd00::9"]));
        assert!(section_text(&DesiredState::default(), &Bindings::new()).is_empty());
    }
}
