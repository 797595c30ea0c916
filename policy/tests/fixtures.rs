//! Every real Calico v1 document in `shared/fixtures/calico-v1/` (copied to
//! `tests/fixtures/calico-v1/`) goes through
//! `parse_update` under the key its `.src` says it was stored at, and must get
//! the verdict `shared/fixtures/calico-v1/README.md` gives it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use margay_policy::desired::{IcmpMatch, IpVersion, PortRange, Protocol, RuleAction};
use margay_policy::model::{EndpointState, Order, Update, Value};
use margay_policy::names::{Id, MacAddr};
use margay_policy::selector::Selector;
use margay_policy::update::parse_update;

const PREFIX: &str = "/calico/v1";

/// The repository's copy of `shared/fixtures/calico-v1` (CI checks out this
/// repository alone, so the documents travel with it).
fn fixture_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/calico-v1"
    ))
}

/// The shared directory the copy was taken from, when it sits beside the
/// checkout.
fn shared_fixture_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/calico-v1"
    ))
}

fn file_names(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Where the shared fixtures are present, the repository's copy must be
/// exactly them: same files, same bytes.
#[test]
fn the_copy_matches_the_shared_fixtures() {
    let shared = shared_fixture_dir();
    if !shared.is_dir() {
        eprintln!(
            "no {} beside this checkout; nothing to compare",
            shared.display()
        );
        return;
    }
    let ours = fixture_dir();
    assert_eq!(file_names(&ours), file_names(&shared), "file lists differ");
    for name in file_names(&shared) {
        let a = std::fs::read(shared.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let b = std::fs::read(ours.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(a == b, "{name} differs from the shared copy");
    }
}

fn read(file: &str) -> String {
    let path = fixture_dir().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a fixture must turn into.
enum Verdict {
    /// Parses; the check asserts some of the content.
    Valid(fn(&Value)),
    /// Rejected: the error's kind, and a word its reason must contain.
    Invalid(&'static str, &'static str),
    /// A shape margay writes, never reads: its key is ignored.
    WrittenBack,
}

/// How a fixture's text becomes a datastore value.
enum Body {
    /// The file is the whole value.
    Whole,
    /// The file is one rule: wrap it in a profile rules document.
    SingleRule,
}

struct Case {
    file: &'static str,
    key: &'static str,
    body: Body,
    verdict: Verdict,
}

const WEP: &str =
    "/calico/v1/host/felix-host-1/workload/openstack/instance-1/endpoint/DEADBEEF-1234-5678";
const HEP: &str = "/calico/v1/host/h1/endpoint/ep1";

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Body::*;
    use Verdict::*;
    let c = |file, key, body, verdict| Case {
        file,
        key,
        body,
        verdict,
    };
    vec![
        c("baremetal-doc-host-endpoint-REJECTED.json", HEP, Whole, Invalid("host_endpoint", "name")),
        c("baremetal-doc-policy-webserver.json", "/calico/v1/policy/tier/my-tier/policy/webserver", Whole, Valid(check_webserver_policy)),
        c("baremetal-doc-rule-allow-bgp.json", "/calico/v1/policy/profile/bgp/rules", SingleRule, Valid(check_bgp_rule)),
        c("baremetal-doc-tier-failsafe-metadata.json", "/calico/v1/policy/tier/failsafe/metadata", Whole, Valid(|v| check_tier_order(v, 0.0))),
        c("baremetal-doc-tier-my-tier-metadata.json", "/calico/v1/policy/tier/my-tier/metadata", Whole, Valid(|v| check_tier_order(v, 100.0))),
        c("calico-containers-doc-APP-rules.json", "/calico/v1/policy/profile/APP/rules", Whole, Valid(check_app_rules)),
        c("calico-containers-doc-default-profile-PROF-rules.json", "/calico/v1/policy/profile/PROF/rules", Whole, Valid(check_prof_rules)),
        c("calico-containers-doc-web_rules.json", "/calico/v1/policy/profile/WEB/rules", Whole, Valid(check_web_rules)),
        c("felix-issue-498-openstack-profile-rules.json", "/calico/v1/policy/profile/6fe9fe39-49ce-4a8c-b1ab-1ae4958f60f4/rules", Whole, Valid(check_issue_498)),
        c("felix-test-endpoint-status-up.json", "/calico/felix/v1/host/h1/workload/o/w/endpoint/e", Whole, WrittenBack),
        c("felix-test-felix-status-report.json", "/calico/felix/v1/host/h1/status", Whole, WrittenBack),
        c("felix-test-host-endpoint-by-name-input.json", HEP, Whole, Valid(check_hep_by_name)),
        // README's `felix-test-*` row would call this valid, but it lists the
        // short form "10.0.1", which DATAMODEL forbids ("Addresses must be
        // written in full"), exactly like the fip-input fixture. Reported to the lead.
        c("felix-test-host-endpoint-expected-ips-input.json", HEP, Whole, Invalid("host_endpoint", "10.0.1")),
        c("felix-test-host-endpoint.json", HEP, Whole, Valid(check_hep)),
        c("felix-test-ipam-pool-masquerade.json", "/calico/v1/ipam/v4/pool/10.0.0.0-16", Whole, Valid(|v| check_pool(v, "10.0.0.0/16", true))),
        c("felix-test-profile-labels.json", "/calico/v1/policy/profile/prof1/labels", Whole, Valid(check_profile_labels)),
        c("felix-test-profile-rules-empty.json", "/calico/v1/policy/profile/prof1/rules", Whole, Valid(check_empty_rules)),
        c("felix-test-profile-tags.json", "/calico/v1/policy/profile/prof1/tags", Whole, Valid(|v| check_tags(v, &["a", "b"]))),
        c("felix-test-tier-metadata.json", "/calico/v1/policy/tier/tiername/metadata", Whole, Valid(|v| check_tier_order(v, 10.0))),
        c("felix-test-tiered-policy.json", "/calico/v1/policy/tier/tiername/policy/pol1", Whole, Valid(check_tiered_policy)),
        c("felix-test-workload-endpoint-with-fip-canonical.json", WEP, Whole, Valid(check_fip_canonical)),
        c("felix-test-workload-endpoint-with-fip-input.json", WEP, Whole, Invalid("endpoint", "10.0.1/32")),
        c("felix-test-workload-endpoint.json", WEP, Whole, Valid(check_felix_endpoint)),
        c("libcalico-test-endpoint-legacy-profile_id.json", WEP, Whole, Valid(check_legacy_profile_id)),
        c("libcalico-test-endpoint-to_json-defaults.json", WEP, Whole, Valid(check_defaults_endpoint)),
        c("libcalico-test-endpoint-with-gateways.json", WEP, Whole, Valid(check_gateways)),
        c("libcalico-test-ip-pool-add-all-fields.json", "/calico/v1/ipam/v4/pool/192.168.100.0-24", Whole, Valid(|v| check_pool(v, "192.168.100.0/24", true))),
        c("libcalico-test-ip-pool-add-ipip-masq.json", "/calico/v1/ipam/v4/pool/192.168.100.0-24", Whole, Valid(|v| check_pool(v, "192.168.100.0/24", true))),
        c("libcalico-test-ip-pool-add-plain.json", "/calico/v1/ipam/v4/pool/192.168.100.0-24", Whole, Valid(|v| check_pool(v, "192.168.100.0/24", false))),
        c("libcalico-test-ip-pool-ipip-masq-noipam.json", "/calico/v1/ipam/v4/pool/1.2.0.0-16", Whole, Valid(|v| check_pool(v, "1.2.0.0/16", true))),
        c("libcalico-test-profile-rules.json", "/calico/v1/policy/profile/PROFILE1/rules", Whole, Invalid("profile", "icmp_type")),
        c("openstack-plugin-test-endpoint-ipv4-DEADBEEF.json", WEP, Whole, Valid(check_openstack_v4)),
        c("openstack-plugin-test-endpoint-ipv6-HELLO.json", "/calico/v1/host/felix-host-2/workload/openstack/instance-3/endpoint/HELLO-1234-5678", Whole, Valid(check_openstack_v6)),
        c("openstack-plugin-test-profile-SG-1-rules.json", "/calico/v1/policy/profile/SG-1/rules", Whole, Invalid("profile", "dst_ports")),
        c("openstack-plugin-test-profile-SGID-default-rules.json", "/calico/v1/policy/profile/SGID-default/rules", Whole, Invalid("profile", "dst_ports")),
        c("openstack-plugin-test-profile-SGID-default-tags.json", "/calico/v1/policy/profile/SGID-default/tags", Whole, Valid(|v| check_tags(v, &["SGID-default"]))),
    ]
}

#[test]
fn every_fixture_has_a_case() {
    let listed: BTreeSet<&str> = cases().iter().map(|c| c.file).collect();
    let on_disk: BTreeSet<String> = file_names(&fixture_dir())
        .into_iter()
        .filter(|name| name.ends_with(".json"))
        .collect();
    let on_disk: BTreeSet<&str> = on_disk.iter().map(String::as_str).collect();
    assert_eq!(listed, on_disk, "fixture table and directory differ");
    assert!(on_disk.len() >= 36, "only {} fixtures found", on_disk.len());
}

#[test]
fn every_fixture_gets_its_readme_verdict() {
    let mut failures = Vec::new();
    for case in cases() {
        if let Err(why) = run(&case) {
            failures.push(format!("{}: {why}", case.file));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn run(case: &Case) -> Result<(), String> {
    let text = read(case.file);
    let value = match case.body {
        Body::Whole => text,
        Body::SingleRule => format!("{{\"inbound_rules\": [{text}]}}"),
    };
    let got = parse_update(PREFIX, case.key, Some(&value));
    match (&case.verdict, got) {
        (Verdict::Valid(check), Ok(Some(Update { value: Some(v), .. }))) => {
            check(&v);
            Ok(())
        }
        (Verdict::Invalid(kind, word), Err(e)) => {
            if e.kind() != *kind || !e.reason.contains(word) || e.resource.is_none() {
                return Err(format!(
                    "rejected, but not as expected: kind {} / {e}",
                    e.kind()
                ));
            }
            Ok(())
        }
        (Verdict::WrittenBack, Ok(None)) => check_written_back(case.file, &value),
        (_, other) => Err(format!("unexpected outcome {other:?}")),
    }
}

/// The shapes margay writes are JSON objects with the documented fields.
fn check_written_back(file: &str, text: &str) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let ok = if file.contains("status-up") {
        v["status"] == "up"
    } else {
        v["uptime"].is_u64() && v["time"].is_string() && v["first_update"].is_boolean()
    };
    ok.then_some(())
        .ok_or_else(|| format!("unexpected shape {v}"))
}

// ------------------------------------------------------------- content checks

fn ids(names: &[&str]) -> Vec<Id> {
    names.iter().map(|n| Id::new(n).expect("id")).collect()
}

fn ports(list: &[(u16, u16)]) -> Vec<PortRange> {
    list.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect()
}

fn check_webserver_policy(v: &Value) {
    let Value::Policy(p) = v else {
        panic!("not a policy: {v:?}")
    };
    assert_eq!(
        p.selector,
        Selector::parse("role == 'webserver'").expect("selector")
    );
    assert_eq!(p.order, Order::Number(100.0));
    assert_eq!(p.inbound.len(), 1);
    assert_eq!(p.inbound[0].protocol, Some(Protocol(6)));
    assert_eq!(p.inbound[0].dst.ports, ports(&[(80, 80)]));
    assert_eq!(p.outbound.len(), 1);
    assert_eq!(p.outbound[0].action, RuleAction::Allow);
}

fn check_bgp_rule(v: &Value) {
    let Value::ProfileRules(r) = v else {
        panic!("not rules: {v:?}")
    };
    assert_eq!(r.inbound[0].dst.ports, ports(&[(179, 179)]));
    assert_eq!(
        r.inbound[0].ip_version, None,
        "tcp/179 applies to both families"
    );
}

fn check_tier_order(v: &Value, order: f64) {
    let Value::TierMetadata(t) = v else {
        panic!("not tier metadata: {v:?}")
    };
    assert_eq!(t.order, Order::Number(order));
}

fn check_app_rules(v: &Value) {
    let Value::ProfileRules(r) = v else {
        panic!("not rules: {v:?}")
    };
    assert_eq!(r.inbound.len(), 2);
    assert_eq!(r.inbound[0].src.tag, Some(Id::new("APP_7890").expect("id")));
    let icmp = &r.inbound[1];
    assert_eq!(icmp.protocol, Some(Protocol(1)));
    assert_eq!(
        icmp.icmp,
        Some(IcmpMatch {
            icmp_type: 8,
            code: None
        })
    );
    assert_eq!(
        icmp.ip_version,
        Some(IpVersion::V4),
        "icmp pins the rule to IPv4"
    );
    assert_eq!(r.outbound.len(), 1);
}

fn check_prof_rules(v: &Value) {
    let Value::ProfileRules(r) = v else {
        panic!("not rules: {v:?}")
    };
    assert_eq!(r.inbound[0].src.tag, Some(Id::new("PROF").expect("id")));
    assert_eq!(r.outbound[0].action, RuleAction::Allow);
}

fn check_web_rules(v: &Value) {
    let Value::ProfileRules(r) = v else {
        panic!("not rules: {v:?}")
    };
    assert_eq!(r.inbound[0].dst.ports, ports(&[(80, 80), (443, 443)]));
    assert_eq!(
        r.inbound[1].icmp,
        Some(IcmpMatch {
            icmp_type: 8,
            code: None
        })
    );
}

fn check_issue_498(v: &Value) {
    let Value::ProfileRules(r) = v else {
        panic!("not rules: {v:?}")
    };
    assert!(r.outbound.is_empty());
    assert_eq!(r.inbound.len(), 2);
    assert_eq!(
        r.inbound[0].action,
        RuleAction::Allow,
        "no action means allow"
    );
    assert_eq!(
        r.inbound[0].src.net,
        Some("77.0.0.0/8".parse().expect("net"))
    );
    assert_eq!(r.inbound[1].protocol, None);
    assert_eq!(r.inbound[1].ip_version, Some(IpVersion::V4));
}

fn check_hep_by_name(v: &Value) {
    let Value::HostEndpoint(h) = v else {
        panic!("not a host endpoint: {v:?}")
    };
    assert_eq!(h.name.as_ref().map(|n| n.as_str()), Some("eth0"));
    assert_eq!(h.profile_ids, ids(&["prof1", "prof2"]));
    assert_eq!(h.labels.get("c").map(String::as_str), Some("d"));
}

fn check_hep(v: &Value) {
    let Value::HostEndpoint(h) = v else {
        panic!("not a host endpoint: {v:?}")
    };
    assert_eq!(h.name.as_ref().map(|n| n.as_str()), Some("tap1234"));
    assert_eq!(
        h.expected_ipv4_addrs,
        vec!["10.0.0.1".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(
        h.expected_ipv6_addrs,
        vec!["dead::beef".parse::<IpAddr>().expect("ip")]
    );
}

fn check_pool(v: &Value, cidr: &str, masquerade: bool) {
    let Value::IpPool(p) = v else {
        panic!("not a pool: {v:?}")
    };
    assert_eq!(p.cidr, cidr.parse().expect("cidr"));
    assert_eq!(p.masquerade, masquerade);
}

fn check_profile_labels(v: &Value) {
    let Value::ProfileLabels(l) = v else {
        panic!("not labels: {v:?}")
    };
    assert_eq!(l.len(), 1);
    assert_eq!(l.get("a").map(String::as_str), Some("b"));
}

fn check_empty_rules(v: &Value) {
    let Value::ProfileRules(r) = v else {
        panic!("not rules: {v:?}")
    };
    assert!(r.inbound.is_empty() && r.outbound.is_empty());
}

fn check_tags(v: &Value, expected: &[&str]) {
    let Value::ProfileTags(t) = v else {
        panic!("not tags: {v:?}")
    };
    assert_eq!(t, &ids(expected));
}

fn check_tiered_policy(v: &Value) {
    let Value::Policy(p) = v else {
        panic!("not a policy: {v:?}")
    };
    assert_eq!(p.selector.canonical(), "a == \"b\"");
    assert_eq!(p.order, Order::Number(10.0));
    assert!(p.inbound.is_empty() && p.outbound.is_empty());
}

fn check_fip_canonical(v: &Value) {
    let Value::WorkloadEndpoint(e) = v else {
        panic!("not an endpoint: {v:?}")
    };
    assert_eq!(e.name.as_str(), "tap1234");
    assert_eq!(e.ipv4_nets, vec!["10.0.1.0/32".parse().expect("net")]);
    assert_eq!(e.ipv6_nets, vec!["2001::1/128".parse().expect("net")]);
    assert_eq!(e.ipv4_gateway, Some("11.0.0.1".parse().expect("ip")));
    assert_eq!(e.ipv6_gateway, Some("fe80::1".parse().expect("ip")));
}

fn check_felix_endpoint(v: &Value) {
    let Value::WorkloadEndpoint(e) = v else {
        panic!("not an endpoint: {v:?}")
    };
    assert_eq!(e.state, EndpointState::Active);
    assert_eq!(e.mac, Some(MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])));
    assert_eq!(e.profile_ids, ids(&["prof1"]));
    assert_eq!(e.ipv4_nets, vec!["10.0.0.1/32".parse().expect("net")]);
    assert_eq!(e.ipv6_nets, vec!["dead::beef/128".parse().expect("net")]);
    assert_eq!(e.ipv4_gateway, None);
    assert!(e.labels.is_empty());
}

fn check_legacy_profile_id(v: &Value) {
    let Value::WorkloadEndpoint(e) = v else {
        panic!("not an endpoint: {v:?}")
    };
    assert_eq!(
        e.profile_ids,
        ids(&["TEST23"]),
        "legacy profile_id is a one-element list"
    );
    assert_eq!(
        e.mac,
        Some(MacAddr([0x11, 0x22, 0x33, 0x44, 0x55, 0x66])),
        "dash MAC"
    );
    assert_eq!(e.ipv4_nets.len(), 2);
}

fn check_defaults_endpoint(v: &Value) {
    let Value::WorkloadEndpoint(e) = v else {
        panic!("not an endpoint: {v:?}")
    };
    assert_eq!(e.name.as_str(), "caliaabbccddeef");
    assert!(e.profile_ids.is_empty() && e.labels.is_empty());
    assert!(e.ipv4_nets.is_empty() && e.ipv6_nets.is_empty());
}

fn check_gateways(v: &Value) {
    let Value::WorkloadEndpoint(e) = v else {
        panic!("not an endpoint: {v:?}")
    };
    assert_eq!(e.ipv4_gateway, Some("10.3.4.2".parse().expect("ip")));
    assert_eq!(e.ipv6_gateway, Some("2001:2:4a::1".parse().expect("ip")));
    assert_eq!(e.profile_ids, ids(&["TEST23"]));
}

fn check_openstack_v4(v: &Value) {
    let Value::WorkloadEndpoint(e) = v else {
        panic!("not an endpoint: {v:?}")
    };
    assert_eq!(e.name.as_str(), "tapDEADBEEF-12");
    assert_eq!(e.profile_ids, ids(&["SGID-default"]));
    assert_eq!(e.ipv4_nets, vec!["10.65.0.2/32".parse().expect("net")]);
    assert!(e.ipv6_nets.is_empty());
}

fn check_openstack_v6(v: &Value) {
    let Value::WorkloadEndpoint(e) = v else {
        panic!("not an endpoint: {v:?}")
    };
    assert_eq!(e.name.as_str(), "tapHELLO-1234-");
    assert_eq!(
        e.ipv6_nets,
        vec!["2001:db8:a41:2::12/128".parse().expect("net")]
    );
    assert_eq!(
        e.ipv6_gateway,
        Some("2001:db8:a41:2::1".parse().expect("ip"))
    );
}
