//! When the loop applies: gating on the snapshot and `/Ready`, batching,
//! retries, and nothing while etcd is away.

use super::*;

#[tokio::test(start_paused = true)]
async fn nothing_is_applied_before_a_snapshot_and_ready() {
    let (mut agent, inputs, h) = agent_with(&[], Fake::new());
    let driver = async {
        h.sync.send(updates(vec![profile()])).await.expect("send");
        settle().await;
        h.sync
            .send(snapshot(vec![endpoint(1)]))
            .await
            .expect("send");
        settle().await;
        assert_eq!(
            metric_line(&h.metrics, "margay_last_apply_timestamp_seconds "),
            "margay_last_apply_timestamp_seconds 0.0",
            "applied before Ready"
        );
        h.sync
            .send(updates(vec![put("Ready", "true")]))
            .await
            .expect("send");
        settle().await;
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    let applies = &agent.driver().applies;
    assert_eq!(applies.len(), 1, "one apply, once Ready");
    assert_eq!(applies[0].2, vec!["cali1"]);
    assert!(applies[0].0.endpoints.contains(&iface("cali1")));
}

#[tokio::test(start_paused = true)]
async fn a_lone_update_applies_at_once_and_a_burst_coalesces() {
    let gate = Arc::new(Semaphore::new(0));
    let mut fake = Fake::new();
    fake.gate = Some(gate.clone());
    let (mut agent, inputs, h) = agent_with(&[], fake);
    let driver = async {
        send_ready_snapshot(&h.sync).await;
        gate.add_permits(1); // first apply
        settle().await;
        // A lone update: its apply starts at once (and waits at the gate).
        h.sync.send(updates(vec![endpoint(0)])).await.expect("send");
        settle().await;
        // A burst while that apply is in flight.
        for n in 1..=50 {
            h.sync.send(updates(vec![endpoint(n)])).await.expect("send");
        }
        settle().await;
        gate.add_permits(1); // lone update's apply finishes
        settle().await;
        gate.add_permits(1); // the coalesced burst
        settle().await;
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    let fake = agent.driver();
    assert_eq!(fake.max_in_flight, 1);
    assert_eq!(fake.applies.len(), 3, "first, lone, burst");
    assert_eq!(fake.applies[1].0.endpoints.len(), 1);
    assert_eq!(
        fake.applies[2].0.endpoints.len(),
        50,
        "the burst in one apply"
    );
    assert_eq!(fake.applies[2].2.len(), 51);
}

#[tokio::test(start_paused = true)]
async fn a_failed_apply_is_retried_with_its_changes() {
    let mut fake = Fake::new();
    fake.fail_next = 2;
    let (mut agent, inputs, h) = agent_with(&[], fake);
    let driver = async {
        h.sync
            .send(snapshot(vec![put("Ready", "true"), profile(), endpoint(7)]))
            .await
            .expect("send");
        settle().await;
        // Two failures, then the retry after backoff succeeds.
        tokio::time::sleep(Duration::from_secs(5)).await;
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    let applies = &agent.driver().applies;
    assert_eq!(applies.len(), 1);
    assert!(applies[0].0.endpoints.contains(&iface("cali7")));
    assert!(
        metric_line(&h.metrics, "margay_dataplane_apply_failures_total").ends_with(" 2"),
        "{}",
        h.metrics.render()
    );
    assert!(metric_line(&h.metrics, "margay_last_apply_timestamp_seconds").len() > 10);
    assert!(
        metric_line(&h.metrics, "margay_dataplane_apply_failures_consecutive").ends_with(" 0"),
        "a success resets the run of failures"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dataplane_that_keeps_failing_is_not_ready() {
    let mut fake = Fake::new();
    fake.fail_after = Some(1);
    let (mut agent, inputs, h) = agent_with(&[], fake);
    let driver = async {
        send_ready_snapshot(&h.sync).await;
        let ready = crate::http::readyz(&h.metrics);
        assert_eq!(ready.status, 200, "first apply succeeded");
        // Every later apply fails (and is retried).
        h.sync.send(updates(vec![endpoint(7)])).await.expect("send");
        settle().await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    let failed = h.metrics.consecutive_apply_failures();
    assert!(
        failed >= crate::http::NOT_READY_AFTER_FAILED_APPLIES,
        "{failed}"
    );
    let readyz = crate::http::readyz(&h.metrics);
    assert_eq!(readyz.status, 503, "{}", readyz.body);
}

#[tokio::test(start_paused = true)]
async fn while_etcd_is_away_nothing_is_touched() {
    let (mut agent, inputs, h) = agent_with(&[], Fake::new());
    let driver = async {
        h.sync
            .send(snapshot(vec![put("Ready", "true"), profile(), endpoint(1)]))
            .await
            .expect("send");
        settle().await;
        h.sync
            .send(SyncEvent::Disconnected {
                error: "gone".into(),
            })
            .await
            .expect("send");
        settle().await;
        assert!(metric_line(&h.metrics, "margay_datastore_connected").ends_with(" 0"));
        // Back with nothing changed: no apply.
        h.sync
            .send(SyncEvent::Snapshot {
                changes: vec![],
                revision: 9,
                reason: ResyncReason::Reconnect,
                keys: 3,
                endpoint: "test".into(),
            })
            .await
            .expect("send");
        settle().await;
        assert!(metric_line(&h.metrics, "margay_datastore_connected").ends_with(" 1"));
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    assert_eq!(agent.driver().applies.len(), 1);
    assert_eq!(agent.driver().firewall_repairs, 0);
}

/// A re-list arrives page by page; the half-listed view is never
/// programmed, not even when etcd goes away before the list ends.
#[tokio::test(start_paused = true)]
async fn a_list_in_pages_is_applied_only_once_complete() {
    let (mut agent, inputs, h) = agent_with(&[], Fake::new());
    let driver = async {
        let first = snapshot(vec![put("Ready", "true"), profile(), endpoint(1)]);
        h.sync.send(first).await.expect("send");
        settle().await;
        let part = SyncEvent::SnapshotPart {
            changes: vec![endpoint(2)],
        };
        h.sync.send(part).await.expect("send");
        settle().await;
        let gone = SyncEvent::Disconnected {
            error: "gone".into(),
        };
        h.sync.send(gone).await.expect("send");
        settle().await;
        // Refreshes come and go; nothing is applied or repaired.
        tokio::time::sleep(Duration::from_secs(120)).await;
        let count = "margay_dataplane_apply_duration_seconds_count";
        assert!(
            metric_line(&h.metrics, count).ends_with(" 1"),
            "held while listing"
        );
        let mut end = snapshot(vec![]);
        if let SyncEvent::Snapshot { reason, .. } = &mut end {
            *reason = ResyncReason::Reconnect;
        }
        h.sync.send(end).await.expect("send");
        settle().await;
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    assert_eq!(
        agent.driver().applies.len(),
        2,
        "the first list, then the second"
    );
    assert_eq!(agent.driver().firewall_repairs, 0);
}

#[tokio::test(start_paused = true)]
async fn the_last_apply_revision_is_the_newest_update_applied() {
    let (mut agent, inputs, h) = agent_with(&[], Fake::new());
    let revision = || metric_line(&h.metrics, "margay_last_apply_revision ");
    let driver = async {
        send_ready_snapshot(&h.sync).await;
        assert_eq!(revision(), "margay_last_apply_revision 1", "the snapshot's");
        h.sync
            .send(SyncEvent::Updates {
                changes: vec![endpoint(3)],
                revision: 9,
            })
            .await
            .expect("send");
        settle().await;
        assert_eq!(revision(), "margay_last_apply_revision 9");
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
}
