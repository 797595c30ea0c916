//! Status reporting against a real etcd: leased heartbeat, last report, and
//! per-endpoint status that follows the endpoints (and cleans up leftovers).

use std::time::{Duration, Instant};

use margay_datastore::connect::{EtcdConfig, TlsFiles};
use margay_datastore::status::{EndpointName, EndpointStatus, EndpointStatuses, ReportConfig};
use margay_tests::etcd::EtcdServer;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(20);

fn etcd_config(url: String) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![url],
        tls: TlsFiles::default(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    }
}

fn ep(workload: &str) -> EndpointName {
    EndpointName::Workload {
        orchestrator: "k8s".into(),
        workload: workload.into(),
        endpoint: "eth0".into(),
    }
}

async fn get(client: &mut etcd_client::Client, key: &str) -> Option<(String, i64)> {
    let resp = client.get(key, None).await.expect("get");
    resp.kvs()
        .first()
        .map(|kv| (kv.value_str().expect("utf8").to_owned(), kv.lease()))
}

async fn keys_under(client: &mut etcd_client::Client, prefix: &str) -> Vec<String> {
    let resp = client
        .get(
            prefix,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("get");
    resp.kvs()
        .iter()
        .map(|kv| kv.key_str().expect("utf8").to_owned())
        .collect()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn heartbeat_is_leased_and_endpoint_status_follows_endpoints() {
    let etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    let stale = "/calico/felix/v1/host/h1/workload/k8s/old/endpoint/eth0";
    client
        .put(stale, r#"{"status":"up"}"#, None)
        .await
        .expect("put");
    // Another host's status must be left alone.
    let other = "/calico/felix/v1/host/h2/workload/k8s/x/endpoint/eth0";
    client
        .put(other, r#"{"status":"up"}"#, None)
        .await
        .expect("put");

    let (cfg_tx, cfg_rx) = watch::channel(ReportConfig {
        interval: Some(Duration::from_secs(1)),
        ttl_secs: 3,
        endpoints_enabled: true,
    });
    let (ep_tx, ep_rx) = watch::channel(EndpointStatuses::from([
        (ep("a"), EndpointStatus::Up),
        (ep("b"), EndpointStatus::Down),
    ]));
    let task = margay_datastore::status::spawn(
        etcd_config(etcd.client_url()),
        "/calico/felix/v1",
        "h1",
        cfg_rx,
        ep_rx,
    );

    let status = "/calico/felix/v1/host/h1/status";
    eventually("a leased status", || {
        let mut c = client.clone();
        async move {
            get(&mut c, status)
                .await
                .is_some_and(|(_, lease)| lease != 0)
        }
    })
    .await;
    let (doc, _) = get(&mut client, status).await.expect("status");
    let doc: serde_json::Value = serde_json::from_str(&doc).expect("json");
    assert!(
        doc["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{doc}"
    );
    assert!(doc["uptime"].is_number());
    assert!(doc["first_update"].is_boolean());
    let (last, lease) = get(&mut client, "/calico/felix/v1/host/h1/last_reported_status")
        .await
        .expect("last status");
    assert_eq!(lease, 0, "last_reported_status has no lease");
    assert!(last.contains("\"time\""));
    // A later report says first_update = false.
    eventually("a second report", || {
        let mut c = client.clone();
        async move {
            get(&mut c, status)
                .await
                .is_some_and(|(d, _)| d.contains("\"first_update\":false"))
        }
    })
    .await;

    let dir = "/calico/felix/v1/host/h1/workload/";
    let a = "/calico/felix/v1/host/h1/workload/k8s/a/endpoint/eth0";
    let b = "/calico/felix/v1/host/h1/workload/k8s/b/endpoint/eth0";
    eventually("endpoint statuses, stale one removed", || {
        let mut c = client.clone();
        async move { keys_under(&mut c, dir).await == vec![a.to_owned(), b.to_owned()] }
    })
    .await;
    assert_eq!(
        get(&mut client, b).await.map(|(v, _)| v).as_deref(),
        Some(r#"{"status":"down"}"#)
    );

    // b goes away, a changes.
    ep_tx.send_replace(EndpointStatuses::from([(ep("a"), EndpointStatus::Error)]));
    eventually("b removed and a updated", || {
        let mut c = client.clone();
        async move {
            keys_under(&mut c, dir).await == vec![a.to_owned()]
                && get(&mut c, a)
                    .await
                    .is_some_and(|(v, _)| v.contains("error"))
        }
    })
    .await;

    // Disabling endpoint reporting removes ours, never another host's.
    cfg_tx.send_replace(ReportConfig {
        interval: Some(Duration::from_secs(1)),
        ttl_secs: 3,
        endpoints_enabled: false,
    });
    eventually("endpoint statuses removed", || {
        let mut c = client.clone();
        async move { keys_under(&mut c, dir).await.is_empty() }
    })
    .await;
    assert!(get(&mut client, other).await.is_some());

    // The agent dies: the leased status vanishes, the last report stays.
    task.abort();
    eventually("the status lease to expire", || {
        let mut c = client.clone();
        async move { get(&mut c, status).await.is_none() }
    })
    .await;
    assert!(
        get(&mut client, "/calico/felix/v1/host/h1/last_reported_status")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn reporting_can_be_disabled() {
    let etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    // A leftover of a previous run: its removal shows the writer has made a
    // whole pass (status first, then endpoints) before we look for writes.
    let stale = "/calico/felix/v1/host/h1/workload/k8s/old/endpoint/eth0";
    client
        .put(stale, r#"{"status":"up"}"#, None)
        .await
        .expect("put");
    let (_cfg_tx, cfg_rx) = watch::channel(ReportConfig {
        interval: None,
        ttl_secs: 90,
        endpoints_enabled: false,
    });
    let (_ep_tx, ep_rx) = watch::channel(EndpointStatuses::new());
    let task = margay_datastore::status::spawn(
        etcd_config(etcd.client_url()),
        "/calico/felix/v1",
        "h1",
        cfg_rx,
        ep_rx,
    );
    eventually("the leftover to go", || {
        let mut c = client.clone();
        async move { get(&mut c, stale).await.is_none() }
    })
    .await;
    assert!(keys_under(&mut client, "/calico/felix/v1/")
        .await
        .is_empty());
    task.abort();
}

#[tokio::test]
async fn leftovers_are_removed_even_with_reporting_disabled() {
    let etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    let stale = "/calico/felix/v1/host/h1/workload/k8s/old/endpoint/eth0";
    client
        .put(stale, r#"{"status":"up"}"#, None)
        .await
        .expect("put");
    let (_cfg_tx, cfg_rx) = watch::channel(ReportConfig {
        interval: None,
        ttl_secs: 90,
        endpoints_enabled: false,
    });
    let (_ep_tx, ep_rx) = watch::channel(EndpointStatuses::new());
    let task = margay_datastore::status::spawn(
        etcd_config(etcd.client_url()),
        "/calico/felix/v1",
        "h1",
        cfg_rx,
        ep_rx,
    );
    eventually("the leftover to go", || {
        let mut c = client.clone();
        async move { get(&mut c, stale).await.is_none() }
    })
    .await;
    task.abort();
}

fn host_ep(id: &str) -> EndpointName {
    EndpointName::Host {
        endpoint: id.into(),
    }
}

#[tokio::test]
async fn host_endpoint_statuses_follow_and_leftovers_go() {
    let etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    let stale = "/calico/felix/v1/host/h1/endpoint/old";
    let other = "/calico/felix/v1/host/h2/endpoint/eth0";
    for key in [stale, other] {
        client
            .put(key, r#"{"status":"up"}"#, None)
            .await
            .expect("put");
    }
    let (_cfg_tx, cfg_rx) = watch::channel(ReportConfig {
        interval: None,
        ttl_secs: 90,
        endpoints_enabled: true,
    });
    let (ep_tx, ep_rx) = watch::channel(EndpointStatuses::from([
        (host_ep("eth0"), EndpointStatus::Up),
        (host_ep("mgmt"), EndpointStatus::Down),
        (ep("a"), EndpointStatus::Up),
    ]));
    let task = margay_datastore::status::spawn(
        etcd_config(etcd.client_url()),
        "/calico/felix/v1",
        "h1",
        cfg_rx,
        ep_rx,
    );
    let dir = "/calico/felix/v1/host/h1/endpoint/";
    let eth0 = "/calico/felix/v1/host/h1/endpoint/eth0";
    let mgmt = "/calico/felix/v1/host/h1/endpoint/mgmt";
    eventually("host endpoint statuses, stale one removed", || {
        let mut c = client.clone();
        async move { keys_under(&mut c, dir).await == vec![eth0.to_owned(), mgmt.to_owned()] }
    })
    .await;
    assert_eq!(
        get(&mut client, eth0).await.map(|(v, _)| v).as_deref(),
        Some(r#"{"status":"up"}"#)
    );
    assert_eq!(
        get(&mut client, mgmt).await.map(|(v, _)| v).as_deref(),
        Some(r#"{"status":"down"}"#)
    );
    let workload = "/calico/felix/v1/host/h1/workload/k8s/a/endpoint/eth0";
    assert!(get(&mut client, workload).await.is_some());

    // mgmt is bound now; eth0's host endpoint is deleted.
    ep_tx.send_replace(EndpointStatuses::from([
        (host_ep("mgmt"), EndpointStatus::Up),
        (ep("a"), EndpointStatus::Up),
    ]));
    eventually("eth0 removed, mgmt up", || {
        let mut c = client.clone();
        async move {
            keys_under(&mut c, dir).await == vec![mgmt.to_owned()]
                && get(&mut c, mgmt)
                    .await
                    .is_some_and(|(v, _)| v.contains("\"up\""))
        }
    })
    .await;
    assert!(get(&mut client, workload).await.is_some());
    assert!(get(&mut client, other).await.is_some(), "another host's");
    task.abort();
}
