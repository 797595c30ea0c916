//! The fan-out datastore: remote endpoints spread over hosts that run no
//! agent, profiles whose rules select them by label and tag, one local
//! endpoint per agent, and the write every agent has to apply.

use serde_json::{json, Value};

use crate::sandbox::PREFIX;

/// Hosts the remote endpoints live on (none of them runs an agent).
const REMOTE_HOSTS: usize = 100;
/// Distinct `app` label values among the remote endpoints.
const APPS: usize = 50;
/// The profile every agent's local endpoint uses; the timed writes change it.
pub const SHARED_PROFILE: &str = "fanout-shared";
/// The interface of each agent's local endpoint (one end of a veth pair inside its namespace).
pub const LOCAL_IFACE: &str = "cali0";

/// Every key and value of the datastore for `agents` agents (named by
/// [`agent_hostname`]), `endpoints` remote endpoints and `profiles` profiles.
pub fn datastore(agents: usize, endpoints: usize, profiles: usize) -> Vec<(String, String)> {
    let mut kvs = vec![
        (format!("{PREFIX}/Ready"), "true".to_owned()),
        pool("10.64.0.0/10"),
        pool("10.200.0.0/16"),
    ];
    for p in 0..profiles {
        let name = format!("prof-{p}");
        kvs.push(profile_key(&name, "rules", &profile_rules(p)));
        kvs.push(profile_key(
            &name,
            "tags",
            &json!([format!("tag-{}", p % 20)]),
        ));
        kvs.push(profile_key(
            &name,
            "labels",
            &json!({"ns": format!("ns-{}", p % 10)}),
        ));
    }
    kvs.push(shared_profile_rules(0));
    for i in 0..endpoints {
        kvs.push(remote_endpoint(i, profiles.max(1)));
    }
    for a in 0..agents {
        kvs.push(local_endpoint(a));
    }
    kvs
}

/// The hostname of agent `a`.
pub fn agent_hostname(a: usize) -> String {
    format!("fanout-{a}")
}

/// The shared profile's rules, version `n`: the inbound port is `1000 + n`,
/// so each new `n` changes the rules every agent's local endpoint uses.
pub fn shared_profile_rules(n: usize) -> (String, String) {
    let rules = json!({
        "inbound_rules": [
            {"action": "allow", "protocol": "tcp", "dst_ports": [1000 + n],
             "src_selector": "app == 'app-1'"},
            {"action": "allow", "src_tag": "tag-3"}
        ],
        "outbound_rules": [{"action": "allow"}]
    });
    profile_key(SHARED_PROFILE, "rules", &rules)
}

fn profile_key(name: &str, doc: &str, value: &Value) -> (String, String) {
    (
        format!("{PREFIX}/policy/profile/{name}/{doc}"),
        value.to_string(),
    )
}

fn profile_rules(p: usize) -> Value {
    json!({
        "inbound_rules": [
            {"action": "allow", "protocol": "tcp", "dst_ports": [80 + p % 10],
             "src_selector": format!("app == 'app-{}'", p % APPS)},
            {"action": "allow", "src_tag": format!("tag-{}", (p + 1) % 20)},
            {"action": "deny", "src_net": format!("192.168.{}.0/24", p % 256)}
        ],
        "outbound_rules": [
            {"action": "allow", "dst_selector": format!("ns == 'ns-{}'", p % 10)},
            {"action": "allow"}
        ]
    })
}

fn pool(cidr: &str) -> (String, String) {
    (
        format!("{PREFIX}/ipam/v4/pool/{}", cidr.replace('/', "-")),
        json!({"cidr": cidr, "masquerade": false}).to_string(),
    )
}

fn remote_endpoint(i: usize, profiles: usize) -> (String, String) {
    let host = format!("remote-{}", i % REMOTE_HOSTS);
    let ip = std::net::Ipv4Addr::from(0x0a40_0000_u32 + i as u32); // 10.64.0.0/10
    let doc = json!({
        "state": "active",
        "name": format!("cali{i:011x}"),
        "profile_ids": [format!("prof-{}", i % profiles)],
        "ipv4_nets": [format!("{ip}/32")],
        "labels": {"app": format!("app-{}", i % APPS), "env": format!("env-{}", i % 3)},
    });
    (
        format!("{PREFIX}/host/{host}/workload/k8s/pod-{i}/endpoint/eth0"),
        doc.to_string(),
    )
}

fn local_endpoint(a: usize) -> (String, String) {
    let ip = std::net::Ipv4Addr::from(0x0ac8_0000_u32 + a as u32 + 1); // 10.200.0.0/16
    let doc = json!({
        "state": "active",
        "name": LOCAL_IFACE,
        "profile_ids": [SHARED_PROFILE],
        "ipv4_nets": [format!("{ip}/32")],
        "labels": {"app": "local"},
    });
    (
        format!(
            "{PREFIX}/host/{}/workload/k8s/local/endpoint/eth0",
            agent_hostname(a)
        ),
        doc.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_datastore_has_every_document_once() {
        let kvs = datastore(3, 50, 4);
        let keys: std::collections::BTreeSet<&str> = kvs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys.len(), kvs.len(), "duplicate keys");
        // Ready, 2 pools, 4 profiles x 3 documents, the shared profile, 50 + 3 endpoints.
        assert_eq!(kvs.len(), 3 + 12 + 1 + 53);
        for (_, v) in &kvs {
            serde_json::from_str::<Value>(v).expect("every value is JSON");
        }
    }

    #[test]
    fn each_version_of_the_shared_rules_differs() {
        assert_ne!(shared_profile_rules(1).1, shared_profile_rules(2).1);
        assert_eq!(shared_profile_rules(1).0, shared_profile_rules(2).0);
    }
}
