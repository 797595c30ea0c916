//! Live settings, invalid keys, repairs, netlink events and endpoint
//! statuses.

use super::*;

#[tokio::test(start_paused = true)]
async fn prefixes_matching_an_uplink_or_lo_are_rejected_and_counted_once() {
    let (mut agent, inputs, h) = agent_with(&[], Fake::new());
    let driver = async {
        send_ready_snapshot(&h.sync).await;
        for change in [
            put("config/InterfacePrefix", "eth"),
            // Another settings change re-resolves: no second count.
            put("config/ReportingIntervalSecs", "5"),
            put("host/h1/config/InterfacePrefix", "cali,lo"),
        ] {
            h.sync.send(updates(vec![change])).await.expect("send");
            settle().await;
        }
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    assert_eq!(agent.settings().interface_prefixes, vec!["cali"]);
    let line = |reason: &str| {
        metric_line(
            &h.metrics,
            &format!(
                "margay_settings_rejected_total{{setting=\"interface_prefix\",reason=\"{reason}\"}}"
            ),
        )
    };
    assert!(
        line("host_interface").ends_with(" 1"),
        "{}",
        h.metrics.render()
    );
    assert!(line("invalid").ends_with(" 1"), "{}", h.metrics.render());
    assert!(agent
        .driver()
        .applies
        .iter()
        .all(|a| a.1.interface_prefixes == vec!["cali"]));
}

#[tokio::test(start_paused = true)]
async fn datastore_settings_apply_live_below_local_layers() {
    // The environment pins the log level; the datastore sets the rest.
    let (mut agent, inputs, mut h) = agent_with(&[("MARGAY_LOG_LEVEL", "warn")], Fake::new());
    let driver = async {
        h.sync
            .send(snapshot(vec![
                put("Ready", "true"),
                profile(),
                put(
                    "host/h1/workload/k8s/pod9/endpoint/eth0",
                    r#"{"state":"active","name":"tap9","profile_ids":["p1"],"ipv4_nets":["10.0.9.9/32"]}"#,
                ),
            ]))
            .await
            .expect("send");
        settle().await;
        h.sync
            .send(updates(vec![
                put("config/InterfacePrefix", "tap"),
                put("config/LogSeverityScreen", "DEBUG"),
                put("config/ReportingIntervalSecs", "5"),
                put("host/h1/config/DefaultEndpointToHostAction", "ACCEPT"),
                // Another host's setting must not apply here.
                put("host/h2/config/ReportingTTLSecs", "7"),
            ]))
            .await
            .expect("send");
        settle().await;
        assert!(h.report.has_changed().expect("open"));
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    let s = agent.settings();
    assert_eq!(s.interface_prefixes, vec!["tap"]);
    assert_eq!(s.log_level, margay_config::LogLevel::Warn);
    assert_eq!(s.reporting_ttl_secs, 90);
    assert_eq!(
        h.report.borrow_and_update().interval,
        Some(Duration::from_secs(5))
    );
    let applies = &agent.driver().applies;
    let last = applies.last().expect("applied");
    assert_eq!(last.1.interface_prefixes, vec!["tap"]);
    assert_eq!(last.1.endpoint_to_host, EndpointToHostAction::Accept);
    assert!(last.0.settings, "the apply is told settings changed");
    assert_eq!(last.2, vec!["tap9"], "the tap endpoint is plumbed now");
}

#[tokio::test(start_paused = true)]
async fn only_firewall_settings_make_the_firewall_re_lower() {
    let (mut agent, inputs, h) = agent_with(&[], Fake::new());
    let driver = async {
        let first = vec![put("Ready", "true"), profile(), endpoint(1)];
        h.sync.send(snapshot(first)).await.expect("send");
        settle().await;
        let log_level = put("config/LogSeverityScreen", "DEBUG");
        h.sync.send(updates(vec![log_level])).await.expect("send");
        settle().await;
        let to_host = put("host/h1/config/DefaultEndpointToHostAction", "ACCEPT");
        h.sync.send(updates(vec![to_host])).await.expect("send");
        settle().await;
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    assert_eq!(agent.settings().log_level, margay_config::LogLevel::Debug);
    let applies = &agent.driver().applies;
    assert_eq!(
        applies.len(),
        2,
        "the snapshot, then only the firewall setting: {:?}",
        applies.iter().map(|a| a.0.settings).collect::<Vec<_>>()
    );
    assert!(!applies[0].0.settings);
    assert!(applies[1].0.settings, "the firewall is told to re-lower");
    assert_eq!(applies[1].1.endpoint_to_host, EndpointToHostAction::Accept);
}

#[tokio::test(start_paused = true)]
async fn failsafe_ports_change_live_and_own_endpoints_stay() {
    let (agent, inputs, h) = agent_with(&[], Fake::new());
    let etcd: std::net::SocketAddr = "192.0.2.10:12379".parse().expect("socket address");
    let mut agent = agent.with_own_endpoints(vec![etcd]);
    let driver = async {
        let first = vec![put("Ready", "true"), profile(), endpoint(1)];
        h.sync.send(snapshot(first)).await.expect("send");
        settle().await;
        let inbound = put("config/FailsafeInboundHostPorts", "tcp:22,udp:68,tcp:8443");
        h.sync.send(updates(vec![inbound])).await.expect("send");
        settle().await;
        let outbound = put("host/h1/config/FailsafeOutboundHostPorts", "none");
        h.sync.send(updates(vec![outbound])).await.expect("send");
        settle().await;
        // The Felix 1.4 form: bare ports are tcp.
        let felix_form = put("config/FailsafeInboundHostPorts", "22,2379");
        h.sync.send(updates(vec![felix_form])).await.expect("send");
        settle().await;
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    let applies = &agent.driver().applies;
    assert_eq!(applies.len(), 4, "the snapshot, then one apply per change");
    let defaults = &applies[0].1;
    assert!(defaults.failsafe_inbound.contains(&(6, 22)), "{defaults:?}");
    assert!(
        defaults.failsafe_outbound.contains(&(6, 179)),
        "{defaults:?}"
    );
    for (changes, settings, _) in &applies[1..] {
        assert!(changes.settings, "the firewall is told to re-lower");
        assert_eq!(settings.own_endpoints, vec![etcd], "own endpoints stay");
    }
    assert_eq!(
        applies[1].1.failsafe_inbound,
        vec![(6, 22), (17, 68), (6, 8443)]
    );
    assert_eq!(applies[1].1.failsafe_outbound, defaults.failsafe_outbound);
    assert!(applies[2].1.failsafe_outbound.is_empty(), "none");
    assert_eq!(applies[3].1.failsafe_inbound, vec![(6, 22), (6, 2379)]);
    assert_eq!(applies[0].1.own_endpoints, vec![etcd]);
}

#[tokio::test(start_paused = true)]
async fn invalid_keys_are_counted_and_never_fatal() {
    let (mut agent, inputs, h) = agent_with(&[], Fake::new());
    let driver = async {
        h.sync
            .send(snapshot(vec![
                put("Ready", "true"),
                put("policy/profile/p1/rules", "{not json"),
                endpoint(3),
            ]))
            .await
            .expect("send");
        settle().await;
        assert!(
            metric_line(&h.metrics, "margay_invalid_objects{kind=\"profile_rules\"}")
                .ends_with(" 1")
        );
        // Fixed live.
        h.sync.send(updates(vec![profile()])).await.expect("send");
        settle().await;
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    assert!(metric_line(
        &h.metrics,
        "margay_invalid_updates_total{kind=\"profile_rules\"}"
    )
    .ends_with(" 1"));
    assert!(
        metric_line(&h.metrics, "margay_invalid_objects{kind=\"profile_rules\"}").ends_with(" 0")
    );
    let applies = &agent.driver().applies;
    assert_eq!(
        applies.len(),
        2,
        "the endpoint was programmed (failing closed) and then fixed"
    );
}

#[tokio::test(start_paused = true)]
async fn refresh_repairs_and_netlink_events_go_to_the_dataplane() {
    let (mut agent, inputs, h) = agent_with(&[("MARGAY_REFRESH_INTERVAL", "10")], Fake::new());
    let driver = async {
        // Before the first apply, events are left to the full apply.
        h.dp_events
            .send(DataplaneEvent::LinkGone { index: 1 })
            .await
            .expect("send");
        settle().await;
        h.sync
            .send(snapshot(vec![put("Ready", "true"), profile(), endpoint(1)]))
            .await
            .expect("send");
        settle().await;
        h.dp_events
            .send(DataplaneEvent::AddressChanged { index: 2 })
            .await
            .expect("send");
        settle().await;
        tokio::time::sleep(Duration::from_secs(25)).await;
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    let fake = agent.driver();
    assert_eq!(fake.events.len(), 1);
    assert!(matches!(
        fake.events[0],
        DataplaneEvent::AddressChanged { index: 2 }
    ));
    assert_eq!(fake.firewall_repairs, 2, "every 10 s");
    assert_eq!(fake.route_repairs, 2);
}

#[tokio::test(start_paused = true)]
async fn endpoint_statuses_follow_the_applied_state() {
    let (mut agent, inputs, mut h) = agent_with(&[], Fake::new());
    let driver = async {
        h.sync
            .send(snapshot(vec![
                put("Ready", "true"),
                profile(),
                endpoint(1),
                put(
                    "host/h1/workload/k8s/idle/endpoint/eth0",
                    r#"{"state":"inactive","name":"cali2","profile_ids":["p1"],"ipv4_nets":[]}"#,
                ),
            ]))
            .await
            .expect("send");
        settle().await;
        h.sync
            .send(updates(vec![del(
                "host/h1/workload/k8s/pod1/endpoint/eth0",
            )]))
            .await
            .expect("send");
        settle().await;
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    let statuses = h.statuses.borrow_and_update().clone();
    let by_workload: BTreeMap<_, _> = statuses
        .iter()
        .filter_map(|(k, v)| match k {
            EndpointName::Workload { workload, .. } => Some((workload.clone(), *v)),
            EndpointName::Host { .. } => None,
        })
        .collect();
    assert_eq!(
        by_workload,
        BTreeMap::from([("idle".to_owned(), EndpointStatus::Down)]),
        "pod1 went away; idle is inactive"
    );
}

/// The host endpoint document Calico's bare-metal guide shows as rejected
/// (neither `name` nor expected addresses).
const REJECTED_HOST_ENDPOINT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/calico-v1/baremetal-doc-host-endpoint-REJECTED.json"
));

#[tokio::test(start_paused = true)]
async fn host_endpoint_statuses_follow_bindings_and_invalid_ones_are_counted() {
    let mut fake = Fake::new();
    let eth0 = Id::new("eth0").expect("id");
    fake.bindings = BTreeMap::from([(eth0, BTreeSet::from([iface("eth0")]))]);
    let (mut agent, inputs, mut h) = agent_with(&[], fake);
    let host = |id: &str| EndpointName::Host {
        endpoint: id.to_owned(),
    };
    let driver = async {
        let first = vec![
            put("Ready", "true"),
            profile(),
            put(
                "host/h1/endpoint/eth0",
                r#"{"name":"eth0","profile_ids":["p1"]}"#,
            ),
            put(
                "host/h1/endpoint/spare",
                r#"{"expected_ipv4_addrs":["10.0.0.9"],"profile_ids":["p1"]}"#,
            ),
            put("host/h1/endpoint/bad", REJECTED_HOST_ENDPOINT),
            put(
                "host/h2/endpoint/other",
                r#"{"name":"eth0","profile_ids":["p1"]}"#,
            ),
        ];
        h.sync.send(snapshot(first)).await.expect("send");
        settle().await;
        assert_eq!(
            *h.statuses.borrow_and_update(),
            EndpointStatuses::from([
                (host("eth0"), EndpointStatus::Up),
                (host("spare"), EndpointStatus::Down),
            ]),
            "bound: up; unbound: down; the invalid one and another host's: none"
        );
        assert!(
            metric_line(&h.metrics, "margay_invalid_objects{kind=\"host_endpoint\"}")
                .ends_with(" 1")
        );
        h.sync
            .send(updates(vec![del("host/h1/endpoint/eth0")]))
            .await
            .expect("send");
        settle().await;
        assert_eq!(
            *h.statuses.borrow_and_update(),
            EndpointStatuses::from([(host("spare"), EndpointStatus::Down)]),
            "a deleted host endpoint's status goes"
        );
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    let applies = &agent.driver().applies;
    let host_changes: Vec<_> = applies.iter().map(|a| a.0.host_endpoints.len()).collect();
    assert_eq!(
        host_changes.last(),
        Some(&1),
        "the delete reaches the dataplane: {host_changes:?}"
    );
}
