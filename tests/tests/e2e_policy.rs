//! End-to-end, one host: the real `margay` in a host namespace, workloads as
//! namespaces on veths, verdicts checked with real TCP connections (and ping).
//! Routes and interface plumbing; profiles with tags, ports, selectors and
//! negated matches; tiered policy; live changes; inactive and deleted
//! endpoints; garbage beside valid data. Every scenario runs on both backends.

use margay_tests::both_backends;
use margay_tests::sandbox::{
    allow, allow_all_rules, deny, fixture, wait_for, Cluster, Dataplane, CONVERGE_TIMEOUT,
};
use serde_json::{json, Value};

both_backends!(
    routes_and_interface_plumbing,
    profile_tags_ports_selectors,
    tiered_policy,
    live_rule_changes,
    inactive_deleted_and_profileless_endpoints,
    garbage_keys_beside_valid_ones,
);

fn one_host(dp: Dataplane) -> Cluster {
    Cluster::builder().hosts(1).dataplane(dp).build()
}

fn doc(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("fixture is not JSON: {e}"))
}

/// Routes, sysctls and the static neighbour entry appear for local
/// endpoints; traffic flows between two open workloads.
fn routes_and_interface_plumbing(dp: Dataplane) {
    let mut c = one_host(dp);
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.add_workload("a", "h1", "10.65.1.2");
    c.add_workload("b", "h1", "10.65.1.3");
    c.put_endpoint("a", &["OPEN"], &json!({}));
    c.put_endpoint("b", &["OPEN"], &json!({}));

    wait_for("local routes", CONVERGE_TIMEOUT, || {
        c.has_route_to("h1", "a") && c.has_route_to("h1", "b")
    });
    let route = c.route("h1", c.workload("a").ip());
    assert!(route.contains("scope link"), "route: {route}");
    wait_for("interface sysctls", CONVERGE_TIMEOUT, || {
        c.read_sysctl("h1", "net.ipv4.conf.calia.proxy_arp") == "1"
            && c.read_sysctl("h1", "net.ipv4.conf.calia.rp_filter") == "1"
            && c.read_sysctl("h1", "net.ipv4.conf.calia.route_localnet") == "1"
            && c.read_sysctl("h1", "net.ipv4.neigh.calia.proxy_delay") == "0"
    });
    let mac = c.workload("a").mac().to_owned();
    wait_for("static neighbour entry", CONVERGE_TIMEOUT, || {
        let neigh = c
            .host("h1")
            .ns()
            .exec_ok(&["ip", "neigh", "show", "dev", "calia"]);
        neigh.contains(&mac) && neigh.contains("PERMANENT")
    });

    c.assert_matrix(&[
        allow("a", "b", 80),
        allow("a", "b", 5432),
        allow("b", "a", 443),
    ]);
    assert!(c.can_ping("a", "b"), "ping a -> b");
}

/// Profiles: tags, port lists and ranges, selectors (own and inherited
/// labels), a deny rule before an allow, a negated match, ICMP; plus a real
/// calico-containers profile document.
fn profile_tags_ports_selectors(dp: Dataplane) {
    let mut c = one_host(dp);
    c.put_profile_rules(
        "SRV",
        &json!({
            "inbound_rules": [
                {"action": "allow", "protocol": "tcp", "dst_ports": [80], "src_tag": "FRIEND"},
                {"action": "allow", "protocol": "tcp", "dst_ports": [443],
                 "src_selector": "role == 'admin'"},
                {"action": "deny", "protocol": "tcp", "dst_ports": ["5000:6000"],
                 "src_selector": "role == 'admin'"},
                {"action": "allow", "protocol": "tcp", "dst_ports": ["5000:6000"]},
                {"action": "allow", "protocol": "tcp", "dst_ports": [7890],
                 "!src_selector": "has(role)"}
            ],
            "outbound_rules": [{"action": "allow"}]
        }),
    );
    let outbound_only = json!({"inbound_rules": [], "outbound_rules": [{"action": "allow"}]});
    c.put_profile_rules("FRIENDS", &outbound_only);
    c.put_profile_tags("FRIENDS", &["FRIEND", "APP_7890"]);
    c.put_profile_rules("PLAIN", &outbound_only);
    c.put_profile_labels("ADMINS", &json!({"role": "admin"}));
    c.put_profile_rules("ADMINS", &outbound_only);
    // The calico-containers "APP" profile: tcp 7890 from tag APP_7890, ping.
    c.put_profile_rules(
        "APP",
        &doc(&fixture("calico-containers-doc-APP-rules.json")),
    );

    for (name, ip) in [
        ("srv", "10.65.1.10"),
        ("friend", "10.65.1.11"),
        ("admin", "10.65.1.12"),
        ("stranger", "10.65.1.13"),
        ("app", "10.65.1.14"),
    ] {
        c.add_workload(name, "h1", ip);
    }
    c.put_endpoint("srv", &["SRV"], &json!({}));
    c.put_endpoint("friend", &["FRIENDS"], &json!({}));
    c.put_endpoint("admin", &["ADMINS"], &json!({})); // role=admin inherited
    c.put_endpoint("stranger", &["PLAIN"], &json!({}));
    c.put_endpoint("app", &["APP"], &json!({}));

    c.assert_matrix(&[
        allow("friend", "srv", 80),
        deny("stranger", "srv", 80),
        deny("admin", "srv", 80),
        allow("admin", "srv", 443),
        deny("friend", "srv", 443),
        allow("stranger", "srv", 5432),
        allow("friend", "srv", 5432),
        deny("admin", "srv", 5432),
        allow("stranger", "srv", 7890),
        deny("admin", "srv", 7890),
        allow("friend", "app", 7890),
        deny("stranger", "app", 7890),
        deny("friend", "app", 80),
        deny("srv", "friend", 80),
    ]);
    assert!(c.can_ping("friend", "app"), "APP allows icmp echo");
    assert!(!c.can_ping("friend", "srv"), "SRV allows no icmp");
}

/// Tiers in order, deny / next-tier / allow, a matching tier without a
/// decision drops, tiers without metadata are ignored, policy order counts.
fn tiered_policy(dp: Dataplane) {
    let mut c = one_host(dp);
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.add_workload("cl", "h1", "10.65.1.20");
    c.add_workload("web", "h1", "10.65.1.21");
    c.add_workload("db", "h1", "10.65.1.22");
    c.put_tier("security", &json!(10));
    c.put_policy(
        "security",
        "block443",
        &json!({
            "selector": "role == 'web'",
            "order": 1,
            "inbound_rules": [
                {"action": "deny", "protocol": "tcp", "dst_ports": [443]},
                {"action": "next-tier"}
            ],
            "outbound_rules": [{"action": "next-tier"}]
        }),
    );
    c.put_tier("app", &json!(20));
    c.put_policy(
        "app",
        "web",
        &json!({
            "selector": "role == 'web'",
            "order": 10,
            "inbound_rules": [{"action": "allow", "protocol": "tcp", "dst_ports": [80]}],
            "outbound_rules": [{"action": "allow"}]
        }),
    );
    // No metadata for this tier: its policy must be ignored.
    c.put_policy(
        "ghost",
        "all",
        &json!({"selector": "all()", "inbound_rules": [{"action": "deny"}],
                "outbound_rules": [{"action": "deny"}]}),
    );
    c.put_endpoint("cl", &["OPEN"], &json!({}));
    c.put_endpoint("web", &["OPEN"], &json!({"role": "web"}));
    c.put_endpoint("db", &["OPEN"], &json!({"role": "db"}));

    c.assert_matrix(&[
        allow("cl", "web", 80),
        deny("cl", "web", 443),
        deny("cl", "web", 5432),
        allow("cl", "db", 5432),
        allow("web", "db", 5432),
        allow("db", "cl", 80),
    ]);

    // The bare-metal docs' failsafe tier (order 0) with Felix's test policy
    // (selector a == 'b', no rules): db matches it, nothing decides: drop.
    c.put_json(
        "/calico/v1/policy/tier/failsafe/metadata",
        &doc(&fixture("baremetal-doc-tier-failsafe-metadata.json")),
    );
    c.put_json(
        "/calico/v1/policy/tier/failsafe/policy/felix",
        &doc(&fixture("felix-test-tiered-policy.json")),
    );
    c.put_endpoint("db", &["OPEN"], &json!({"role": "db", "a": "b"}));
    c.assert_matrix(&[
        deny("cl", "db", 5432),
        deny("db", "cl", 80),
        allow("cl", "web", 80),
    ]);

    // A lower order runs first within a tier.
    c.put_policy(
        "app",
        "web-first",
        &json!({
            "selector": "role == 'web'",
            "order": 0,
            "inbound_rules": [{"action": "deny", "protocol": "tcp", "dst_ports": [80]}]
        }),
    );
    c.assert_matrix(&[deny("cl", "web", 80), deny("cl", "web", 443)]);
}

/// Rules, tags, profile labels and endpoint labels change under running
/// traffic checks and take effect without a restart.
fn live_rule_changes(dp: Dataplane) {
    let mut c = one_host(dp);
    let outbound = json!([{"action": "allow"}]);
    c.put_profile_rules("P", &json!({"outbound_rules": outbound}));
    c.put_profile_rules(
        "Q",
        &json!({"inbound_rules": [{"protocol": "tcp", "dst_ports": [80], "src_tag": "T"}],
                "outbound_rules": outbound}),
    );
    c.add_workload("a", "h1", "10.65.1.30");
    c.add_workload("b", "h1", "10.65.1.31");
    c.put_endpoint("a", &["P"], &json!({}));
    c.put_endpoint("b", &["Q"], &json!({}));
    wait_for("routes", CONVERGE_TIMEOUT, || {
        c.has_route_to("h1", "a") && c.has_route_to("h1", "b")
    });
    c.assert_matrix(&[deny("a", "b", 80)]);

    c.put_profile_tags("P", &["T"]);
    c.assert_matrix(&[allow("a", "b", 80), deny("a", "b", 443)]);

    c.put_profile_rules(
        "Q",
        &json!({"inbound_rules": [{"protocol": "tcp", "dst_ports": [443], "src_tag": "T"}],
                "outbound_rules": outbound}),
    );
    c.assert_matrix(&[deny("a", "b", 80), allow("a", "b", 443)]);

    c.put_profile_rules(
        "Q",
        &json!({"inbound_rules": [{"src_selector": "color == 'blue'"}],
                "outbound_rules": outbound}),
    );
    c.assert_matrix(&[deny("a", "b", 80), deny("a", "b", 443)]);
    c.put_profile_labels("P", &json!({"color": "blue"}));
    c.assert_matrix(&[allow("a", "b", 80), allow("a", "b", 443)]);
    // The endpoint's own label wins over its profile's.
    c.put_endpoint("a", &["P"], &json!({"color": "red"}));
    c.assert_matrix(&[deny("a", "b", 80)]);
    c.put_endpoint("a", &["P"], &json!({}));
    c.assert_matrix(&[allow("a", "b", 80)]);
    // Outbound rules are enforced at the sender too.
    c.put_profile_rules(
        "P",
        &json!({"outbound_rules": [{"protocol": "tcp", "dst_ports": [443]}]}),
    );
    c.assert_matrix(&[deny("a", "b", 80), allow("a", "b", 443)]);
}

/// Inactive and deleted endpoints lose their routes and traffic; endpoints
/// with no profile or a missing one fail closed.
fn inactive_deleted_and_profileless_endpoints(dp: Dataplane) {
    let mut c = one_host(dp);
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.add_workload("a", "h1", "10.65.1.40");
    c.add_workload("b", "h1", "10.65.1.41");
    c.put_endpoint("a", &["OPEN"], &json!({}));
    c.put_endpoint("b", &["OPEN"], &json!({}));
    c.assert_matrix(&[allow("a", "b", 80), allow("b", "a", 80)]);

    let key = c.endpoint_key("b");
    let mut inactive = c.endpoint_doc("b", &["OPEN"], &json!({}));
    inactive["state"] = json!("inactive");
    c.put_json(&key, &inactive);
    wait_for("route to inactive b to go", CONVERGE_TIMEOUT, || {
        c.route("h1", c.workload("b").ip()).is_empty()
    });
    c.assert_matrix(&[deny("a", "b", 80), deny("b", "a", 80)]);

    c.put_endpoint("b", &["OPEN"], &json!({}));
    c.assert_matrix(&[allow("a", "b", 80), allow("b", "a", 80)]);

    c.put_endpoint("b", &[], &json!({}));
    c.assert_matrix(&[deny("a", "b", 80), deny("b", "a", 80)]);
    c.put_endpoint("b", &["NO-SUCH-PROFILE"], &json!({}));
    c.assert_matrix(&[deny("a", "b", 80), deny("b", "a", 80)]);
    c.put_endpoint("b", &["OPEN"], &json!({}));
    c.assert_matrix(&[allow("a", "b", 80)]);

    c.delete(&key);
    wait_for("route to deleted b to go", CONVERGE_TIMEOUT, || {
        c.route("h1", c.workload("b").ip()).is_empty()
    });
    // b's veth is still there (no CNI DEL yet): an unknown cali interface.
    c.assert_matrix(&[deny("a", "b", 80), deny("b", "a", 80)]);
}

/// Invalid documents (real ones from Calico-era tools among them) sit beside
/// valid data: the valid part keeps working, users of an invalid profile
/// fail closed, the invalid keys are counted, and a fix applies live.
fn garbage_keys_beside_valid_ones(dp: Dataplane) {
    let mut c = one_host(dp);
    let p = "/calico/v1";
    // Garbage first, so the agent meets it in its initial snapshot too.
    c.put(
        &format!("{p}/policy/profile/BAD/rules"),
        &fixture("openstack-plugin-test-profile-SG-1-rules.json"),
    );
    c.put(
        &format!("{p}/policy/profile/WIDE/rules"),
        &fixture("libcalico-test-profile-rules.json"),
    );
    c.put(
        &format!("{p}/host/h1/workload/cni/fip/endpoint/fip"),
        &fixture("felix-test-workload-endpoint-with-fip-input.json"),
    );
    c.put(
        &format!("{p}/host/h1/workload/cni/junk/endpoint/junk"),
        "{not json",
    );
    c.put(
        &format!("{p}/policy/profile/bad id!/rules"),
        &allow_all_rules().to_string(),
    );
    c.put(&format!("{p}/policy/profile/OPEN/tags"), "\"not-a-list\"");
    c.put(&format!("{p}/ipam/v4/pool/garbage"), "[]");
    c.put(
        &format!("{p}/policy/tier/t/metadata"),
        "{\"order\": \"soon\"}",
    );
    c.put(&format!("{p}/no/such/kind"), "x");

    c.put_profile_rules("OPEN", &allow_all_rules());
    c.add_workload("a", "h1", "10.65.1.50");
    c.add_workload("b", "h1", "10.65.1.51");
    c.add_workload("x", "h1", "10.65.1.52");
    c.add_workload("w", "h1", "10.65.1.53");
    c.put_endpoint("a", &["OPEN"], &json!({}));
    c.put_endpoint("b", &["OPEN"], &json!({}));
    c.put_endpoint("x", &["BAD"], &json!({}));
    c.put_endpoint("w", &["WIDE"], &json!({}));

    c.assert_matrix(&[
        allow("a", "b", 80),
        allow("b", "a", 80),
        deny("a", "x", 80),
        deny("x", "a", 80),
        deny("a", "w", 80),
        deny("w", "a", 80),
    ]);
    assert!(
        c.metric_sum("h1", "margay_invalid_updates_total") >= 5.0,
        "invalid keys not counted:\n{}",
        c.metrics("h1")
    );

    // Fixing the key in etcd repairs it live.
    c.put_profile_rules("BAD", &allow_all_rules());
    c.assert_matrix(&[allow("a", "x", 80), allow("x", "a", 80), deny("a", "w", 80)]);
}
