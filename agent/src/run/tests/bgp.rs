//! The loop's BGP side: what is published to the BIRD task and when, and
//! remote routes following `InterHostRoutes`.

use margay_policy::desired::RouteTarget;

use super::*;

fn cluster() -> Vec<KvChange> {
    vec![
        put("Ready", "true"),
        profile(),
        put("host/h1/bird_ip", "192.0.2.11"),
        put("host/h2/bird_ip", "192.0.2.12"),
        put(
            "ipam/v4/pool/10.0.0.0-16",
            r#"{"cidr":"10.0.0.0/16","masquerade":false}"#,
        ),
        endpoint(1),
        put(
            "host/h2/workload/k8s/remote/endpoint/eth0",
            r#"{"state":"active","name":"caliremote","profile_ids":["p1"],"ipv4_nets":["10.0.9.9/32"]}"#,
        ),
    ]
}

fn remote_routes(agent: &Agent<Fake>) -> usize {
    agent
        .calc()
        .state()
        .routes
        .values()
        .filter(|t| matches!(t, RouteTarget::Gateway(_)))
        .count()
}

#[tokio::test(start_paused = true)]
async fn bgp_mode_publishes_once_in_sync_and_routes_no_remote_workloads() {
    let (agent, mut h) = run_through(
        &[("MARGAY_INTER_HOST_ROUTES", "bgp")],
        vec![snapshot(cluster())],
    )
    .await;
    assert!(h.bgp.has_changed().expect("sender alive"));
    let published = h.bgp.borrow_and_update().clone().expect("a configuration");
    assert_eq!(published.router_id, std::net::Ipv4Addr::new(192, 0, 2, 11));
    let mesh: Vec<_> = published.peers.iter().map(|p| p.address).collect();
    assert_eq!(mesh, vec![std::net::IpAddr::from([192, 0, 2, 12])]);
    let locals: Vec<String> = published.local_v4.iter().map(|n| n.to_string()).collect();
    assert_eq!(locals, vec!["10.0.0.2/32"]);
    assert_eq!(
        remote_routes(&agent),
        0,
        "BIRD routes remote workloads, not margay"
    );
}

#[tokio::test(start_paused = true)]
async fn direct_mode_publishes_nothing_and_routes_remote_workloads() {
    let (agent, mut h) = run_through(&[], vec![snapshot(cluster())]).await;
    assert!(h.bgp.borrow_and_update().is_none());
    assert_eq!(remote_routes(&agent), 1);
}

#[tokio::test(start_paused = true)]
async fn switching_to_bgp_live_removes_the_remote_routes_and_publishes() {
    let (mut agent, inputs, mut h) = agent_with(&[], Fake::new());
    let driver = async {
        h.sync.send(snapshot(cluster())).await.expect("send");
        settle().await;
        assert!(h.bgp.borrow_and_update().is_none());
        h.sync
            .send(updates(vec![put("config/InterHostRoutes", "bgp")]))
            .await
            .expect("send");
        settle().await;
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    let applies = &agent.driver().applies;
    assert_eq!(applies.len(), 2, "the switch is one more apply");
    assert!(
        applies[1]
            .0
            .routes
            .iter()
            .any(|n| n.to_string() == "10.0.9.9/32"),
        "the remote route is withdrawn"
    );
    assert_eq!(remote_routes(&agent), 0);
    assert!(h.bgp.borrow_and_update().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_bgp_only_change_publishes_without_a_dataplane_apply() {
    let (mut agent, inputs, mut h) =
        agent_with(&[("MARGAY_INTER_HOST_ROUTES", "bgp")], Fake::new());
    let driver = async {
        h.sync.send(snapshot(cluster())).await.expect("send");
        settle().await;
        let first = h.bgp.borrow_and_update().clone().expect("a configuration");
        assert_eq!(first.local_as.get(), 64511);
        let as_change = KvChange {
            key: "/calico/bgp/v1/global/as_num".into(),
            value: Some("65001".into()),
        };
        h.sync.send(updates(vec![as_change])).await.expect("send");
        settle().await;
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    assert_eq!(
        agent.driver().applies.len(),
        1,
        "only the snapshot was applied"
    );
    let second = h.bgp.borrow_and_update().clone().expect("a configuration");
    assert_eq!(second.local_as.get(), 65001);
}

#[tokio::test(start_paused = true)]
async fn a_malformed_key_under_the_bgp_tree_counts_as_bgp() {
    let hostile = KvChange {
        key: "/calico/bgp/v1/global/peer_v4/1.2.3.4; protocol".into(),
        value: Some(r#"{"ip":"1.2.3.4","as_num":"64512"}"#.into()),
    };
    let (_agent, h) = run_through(
        &[("MARGAY_INTER_HOST_ROUTES", "bgp")],
        vec![snapshot(cluster()), updates(vec![hostile])],
    )
    .await;
    assert_eq!(
        metric_line(&h.metrics, r#"margay_invalid_updates_total{kind="bgp"}"#),
        r#"margay_invalid_updates_total{kind="bgp"} 1"#
    );
    assert_eq!(
        metric_line(
            &h.metrics,
            r#"margay_invalid_updates_total{kind="unknown"}"#
        ),
        r#"margay_invalid_updates_total{kind="unknown"} 0"#
    );
}
