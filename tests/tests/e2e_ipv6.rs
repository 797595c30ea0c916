//! End-to-end over IPv6, one host: the real `margay` with dual-stack
//! workloads (an IPv4 /32 and an IPv6 /128 each, next hop the host side's
//! link-local address), verdicts checked with real TCP connections to the
//! IPv6 addresses and real `ping -6`, allowed and denied, on both backends.
//! Covers the /128 routes, ports, a `src_net` and a selector over IPv6
//! addresses, ICMPv6 rules, a live label change, and the workloads' own
//! neighbour discovery with the host (without it nothing would flow).

use margay_tests::both_backends;
use margay_tests::sandbox::CONVERGE_TIMEOUT;
use margay_tests::sandbox::{allow, allow_all_rules, deny, wait_for, Cluster, Dataplane};
use serde_json::json;

both_backends!(ipv6_tcp_and_ping_between_workloads);

fn ipv6_tcp_and_ping_between_workloads(dp: Dataplane) {
    let mut c = Cluster::builder().hosts(1).dataplane(dp).build();
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.put_profile_rules(
        "SRV",
        &json!({
            "inbound_rules": [
                {"action": "allow", "protocol": "tcp", "dst_ports": [80]},
                {"action": "allow", "protocol": "tcp", "dst_ports": [5432],
                 "src_net": "fd00:65::2/128"},
                {"action": "allow", "protocol": "tcp", "dst_ports": [7890],
                 "src_selector": "role == 'friend'"},
                {"action": "allow", "protocol": "icmpv6", "src_selector": "role == 'friend'"}
            ],
            "outbound_rules": [{"action": "allow"}]
        }),
    );
    c.add_workload_v6("a", "h1", "10.65.6.2", "fd00:65::2");
    c.add_workload_v6("b", "h1", "10.65.6.3", "fd00:65::3");
    c.add_workload_v6("srv", "h1", "10.65.6.4", "fd00:65::4");
    c.put_endpoint("a", &["OPEN"], &json!({"role": "friend"}));
    c.put_endpoint("b", &["OPEN"], &json!({}));
    c.put_endpoint("srv", &["SRV"], &json!({}));

    wait_for("/128 routes to the workloads", CONVERGE_TIMEOUT, || {
        ["a", "b", "srv"].iter().all(|w| {
            let route = c.route6("h1", c.ip6(w));
            route.contains(&format!("dev cali{w}"))
        })
    });
    wait_for(
        "proxy_ndp on the workload interface",
        CONVERGE_TIMEOUT,
        || c.read_sysctl("h1", "net.ipv6.conf.calisrv.proxy_ndp") == "1",
    );

    c.assert_matrix_v6(&[
        allow("a", "srv", 80),
        allow("b", "srv", 80),
        deny("a", "srv", 443),
        allow("a", "srv", 5432),
        deny("b", "srv", 5432),
        allow("a", "srv", 7890),
        deny("b", "srv", 7890),
        allow("srv", "a", 443),
        allow("a", "b", 5432),
    ]);
    assert!(
        c.can_ping6("a", "srv"),
        "ping -6 a -> srv (icmpv6 from friends)"
    );
    assert!(!c.can_ping6("b", "srv"), "ping -6 b -> srv must be dropped");
    assert!(c.can_ping6("srv", "b"), "ping -6 srv -> b (OPEN)");
    // IPv4 beside it keeps its own verdicts.
    c.assert_matrix(&[allow("b", "srv", 80), deny("b", "srv", 443)]);

    // A live label change moves b into the selector's IPv6 set.
    c.put_endpoint("b", &["OPEN"], &json!({"role": "friend"}));
    c.assert_matrix_v6(&[allow("b", "srv", 7890), deny("b", "srv", 5432)]);
    assert!(
        c.can_ping6("b", "srv"),
        "ping -6 b -> srv after the label change"
    );
    // And out again.
    c.put_endpoint("b", &["OPEN"], &json!({}));
    c.assert_matrix_v6(&[deny("b", "srv", 7890), allow("a", "srv", 7890)]);
}
