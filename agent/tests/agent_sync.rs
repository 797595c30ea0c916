//! The datastore syncer against a real etcd: list, watch, reconnect, resync.
//!
//! Each test starts its own etcd on free loopback ports; nothing here needs
//! root or touches the network beyond 127.0.0.1.

use std::time::Duration;

use margay_datastore::connect::TlsFiles;
use margay_datastore::sync::{
    list_all, open_watch, ResyncReason, SyncEvent, Syncer, DEFAULT_PAGE_SIZE,
};
use margay_tests::etcd::{CutoffProxy, EtcdServer};
use margay_tests::etcd_cluster::EtcdCluster;

mod sync_view;
use sync_view::{config, put, put_and_compact, View, WAIT};

#[tokio::test]
async fn lists_then_watches_puts_and_deletes() {
    let etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    put(&mut client, "/calico/v1/Ready", "true").await;
    put(&mut client, "/calico/v1/config/InterfacePrefix", "tap").await;
    // Outside the prefix: must never show up.
    put(&mut client, "/calico/v10/x", "no").await;
    put(&mut client, "/calico/felix/v1/host/h1/status", "{}").await;

    let (mut rx, task) = Syncer::spawn(config(vec![etcd.client_url()], DEFAULT_PAGE_SIZE));
    let mut view = View::default();
    view.until(&mut rx, "the first snapshot", |v| !v.snapshots.is_empty())
        .await;
    assert_eq!(view.snapshots, vec![ResyncReason::Startup]);
    assert_eq!(
        view.keys.keys().cloned().collect::<Vec<_>>(),
        vec!["/calico/v1/Ready", "/calico/v1/config/InterfacePrefix"]
    );

    put(
        &mut client,
        "/calico/v1/policy/profile/web/tags",
        "[\"web\"]",
    )
    .await;
    client
        .delete("/calico/v1/config/InterfacePrefix", None)
        .await
        .expect("delete");
    put(&mut client, "/calico/v1/Ready", "false").await;
    view.until(&mut rx, "put, delete and overwrite", |v| {
        v.keys.get("/calico/v1/Ready").map(String::as_str) == Some("false")
    })
    .await;
    assert_eq!(
        view.keys
            .get("/calico/v1/policy/profile/web/tags")
            .map(String::as_str),
        Some("[\"web\"]")
    );
    assert!(!view.keys.contains_key("/calico/v1/config/InterfacePrefix"));
    assert_eq!(view.snapshots.len(), 1, "no resync without a reason");
    task.abort();
}

#[tokio::test]
async fn watch_survives_etcd_stop_and_start() {
    let mut etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    put(&mut client, "/calico/v1/Ready", "true").await;
    let (mut rx, task) = Syncer::spawn(config(vec![etcd.client_url()], DEFAULT_PAGE_SIZE));
    let mut view = View::default();
    view.until(&mut rx, "the first snapshot", |v| !v.snapshots.is_empty())
        .await;

    etcd.stop();
    view.until(&mut rx, "a disconnect", |v| v.disconnects > 0)
        .await;
    etcd.start();

    let mut client = etcd.client().await;
    put(&mut client, "/calico/v1/host/h1/bird_ip", "10.0.0.1").await;
    view.until(&mut rx, "the key put after the restart", |v| {
        v.keys.contains_key("/calico/v1/host/h1/bird_ip")
    })
    .await;
    // The watch went on from where it was: no second list.
    assert_eq!(view.resumes.len(), 1, "resumed once");
    assert_eq!(view.snapshots, vec![ResyncReason::Startup]);
    assert_eq!(view.keys.len(), 2);
    task.abort();
}

#[tokio::test]
async fn resync_after_compaction_while_cut_off_converges() {
    let etcd = EtcdServer::new();
    let proxy = CutoffProxy::new(etcd.client_port());
    let mut client = etcd.client().await;
    for i in 0..20 {
        put(
            &mut client,
            &format!("/calico/v1/host/h{i}/bird_ip"),
            "10.0.0.1",
        )
        .await;
    }
    let (mut rx, task) = Syncer::spawn(config(vec![proxy.url()], DEFAULT_PAGE_SIZE));
    let mut view = View::default();
    view.until(&mut rx, "the first snapshot", |v| v.keys.len() == 20)
        .await;

    proxy.cut();
    view.until(&mut rx, "a disconnect", |v| v.disconnects > 0)
        .await;
    // While cut off: delete half, change one, add one, then compact history
    // so nothing can be replayed from the old revision.
    for i in 0..10 {
        client
            .delete(format!("/calico/v1/host/h{i}/bird_ip"), None)
            .await
            .expect("delete");
    }
    put(&mut client, "/calico/v1/host/h15/bird_ip", "10.9.9.9").await;
    put_and_compact(&mut client, "/calico/v1/host/new/bird_ip", "10.1.1.1").await;
    proxy.restore();

    view.until(&mut rx, "convergence", |v| {
        v.keys.len() == 11 && v.keys.contains_key("/calico/v1/host/new/bird_ip")
    })
    .await;
    // It got there because the resumed watch was told "compacted" and the
    // syncer listed again for that reason, not by listing on every reconnect.
    assert_eq!(
        view.snapshots,
        vec![ResyncReason::Startup, ResyncReason::Compacted]
    );
    assert_eq!(view.resumes.len(), 1, "the watch was resumed first");
    for i in 0..10 {
        assert!(!view
            .keys
            .contains_key(&format!("/calico/v1/host/h{i}/bird_ip")));
    }
    assert_eq!(
        view.keys
            .get("/calico/v1/host/h15/bird_ip")
            .map(String::as_str),
        Some("10.9.9.9")
    );
    // The watch still works after the resync.
    put(&mut client, "/calico/v1/host/later/bird_ip", "10.2.2.2").await;
    view.until(&mut rx, "a watched put after resync", |v| {
        v.keys.len() == 12
    })
    .await;
    task.abort();
}

/// etcd comes back as a new, empty store (data lost, a new cluster): its
/// revisions start again below ours, so the watch must not resume there;
/// the syncer lists again and the old keys go.
#[tokio::test]
async fn a_new_store_behind_our_revision_is_listed_again() {
    let mut etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    // One revision each: the old store ends at revision 31, far ahead of
    // the new one (the same single-member setup gets the same cluster id).
    for i in 0..30 {
        put(
            &mut client,
            &format!("/calico/v1/host/h{i}/bird_ip"),
            "10.0.0.1",
        )
        .await;
    }
    let (mut rx, task) = Syncer::spawn(config(vec![etcd.client_url()], DEFAULT_PAGE_SIZE));
    let mut view = View::default();
    view.until(&mut rx, "the first snapshot", |v| v.keys.len() == 30)
        .await;

    etcd.stop();
    view.until(&mut rx, "a disconnect", |v| v.disconnects > 0)
        .await;
    std::fs::remove_dir_all(etcd.dir().join("data")).expect("wipe etcd data");
    etcd.start();
    let mut client = etcd.client().await;
    put(&mut client, "/calico/v1/host/fresh/bird_ip", "10.3.3.3").await;

    view.until(&mut rx, "the new store's state", |v| {
        v.keys.len() == 1 && v.keys.contains_key("/calico/v1/host/fresh/bird_ip")
    })
    .await;
    assert_eq!(
        view.snapshots,
        vec![ResyncReason::Startup, ResyncReason::Reconnect]
    );
    assert!(view.resumes.is_empty(), "resumed on a foreign store");
    task.abort();
}

/// Writes made while the syncer is cut off (history kept) reach it through
/// the resumed watch, in order, without a second list.
#[tokio::test]
async fn writes_while_cut_off_are_replayed_by_the_resumed_watch() {
    let etcd = EtcdServer::new();
    let proxy = CutoffProxy::new(etcd.client_port());
    let mut client = etcd.client().await;
    put(&mut client, "/calico/v1/host/a/bird_ip", "10.0.0.1").await;
    put(&mut client, "/calico/v1/host/b/bird_ip", "10.0.0.2").await;
    let (mut rx, task) = Syncer::spawn(config(vec![proxy.url()], DEFAULT_PAGE_SIZE));
    let mut view = View::default();
    view.until(&mut rx, "the first snapshot", |v| v.keys.len() == 2)
        .await;
    put(&mut client, "/calico/v1/host/c/bird_ip", "10.0.0.3").await;
    view.until(&mut rx, "a watched put", |v| v.keys.len() == 3)
        .await;

    proxy.cut();
    view.until(&mut rx, "a disconnect", |v| v.disconnects > 0)
        .await;
    client
        .delete("/calico/v1/host/a/bird_ip", None)
        .await
        .expect("delete");
    put(&mut client, "/calico/v1/host/b/bird_ip", "10.9.9.9").await;
    put(&mut client, "/calico/v1/host/d/bird_ip", "10.0.0.4").await;
    proxy.restore();

    view.until(&mut rx, "the writes made while cut off", |v| {
        v.keys.contains_key("/calico/v1/host/d/bird_ip")
    })
    .await;
    assert!(!view.keys.contains_key("/calico/v1/host/a/bird_ip"));
    assert_eq!(
        view.keys
            .get("/calico/v1/host/b/bird_ip")
            .map(String::as_str),
        Some("10.9.9.9")
    );
    assert_eq!(view.snapshots, vec![ResyncReason::Startup]);
    assert_eq!(view.resumes.len(), 1);
    task.abort();
}

/// Puts `n` keys, 100 a transaction; `kv(k)` names the key and value of the k-th.
async fn put_n(client: &mut etcd_client::Client, n: usize, kv: impl Fn(usize) -> (String, String)) {
    let mut i = 0;
    while i < n {
        let ops: Vec<etcd_client::TxnOp> = (i..(i + 100).min(n))
            .map(|k| {
                let (key, value) = kv(k);
                etcd_client::TxnOp::put(key, value, None)
            })
            .collect();
        i += ops.len();
        client
            .txn(etcd_client::Txn::new().and_then(ops))
            .await
            .expect("txn");
    }
}

/// Puts `n` small keys (host addresses).
async fn put_many(client: &mut etcd_client::Client, n: usize) {
    put_n(client, n, |k| {
        (
            format!("/calico/v1/host/h{k:05}/bird_ip"),
            "10.0.0.1".into(),
        )
    })
    .await;
}

#[tokio::test]
async fn paginated_list_returns_every_key_once() {
    let etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    let n = DEFAULT_PAGE_SIZE as usize + 1234;
    put_many(&mut client, n).await;

    // At the production page size (two pages) and at a tiny one (many pages).
    for page in [DEFAULT_PAGE_SIZE, 97] {
        let (_, listed) = list_all(&mut client, "/calico/v1/", page, Duration::from_secs(30))
            .await
            .expect("list");
        assert_eq!(listed.len(), n, "page size {page}");
        assert!(
            listed.windows(2).all(|w| w[0].key < w[1].key),
            "sorted, no duplicates"
        );
    }

    let (mut rx, task) = Syncer::spawn(config(vec![etcd.client_url()], 500));
    let mut view = View::default();
    view.until(&mut rx, "the paginated snapshot", |v| {
        !v.snapshots.is_empty()
    })
    .await;
    assert_eq!(view.keys.len(), n);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_consistent_at_one_revision_while_writes_continue() {
    let etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    put_many(&mut client, 1000).await;
    // A writer adds keys that sort after every listed one while we page
    // through: a list that did not pin its revision would pick them up.
    let mut writer = etcd.client().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writes = tokio::spawn(async move {
        let mut n = 0u32;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            put(&mut writer, &format!("/calico/v1/zz/{n:06}"), "x").await;
            n += 1;
        }
        n
    });
    let (revision, listed) = list_all(&mut client, "/calico/v1/", 10, Duration::from_secs(30))
        .await
        .expect("list");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writes.await.expect("writer");
    assert!(written > 0, "the writer ran during the list");
    let at_revision = client
        .get(
            "/calico/v1/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_revision(revision)
                    .with_count_only(),
            ),
        )
        .await
        .expect("count");
    assert_eq!(listed.len() as i64, at_revision.count());
    assert!(listed.iter().all(|kv| kv.mod_revision <= revision));
}

#[tokio::test]
async fn fails_over_to_a_working_endpoint() {
    let etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    put(&mut client, "/calico/v1/Ready", "true").await;
    // A port nobody listens on, first in the list.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://127.0.0.1:{}", l.local_addr().expect("addr").port())
    };
    let (mut rx, task) = Syncer::spawn(config(vec![dead, etcd.client_url()], DEFAULT_PAGE_SIZE));
    let mut view = View::default();
    view.until(&mut rx, "a snapshot via the second endpoint", |v| {
        v.keys.contains_key("/calico/v1/Ready")
    })
    .await;
    task.abort();
}

/// A 3-member etcd: the member the syncer watches is killed mid-watch; the
/// watch resumes on another member (same revisions, no list) and a change
/// made after the kill arrives within 10 s.
#[tokio::test]
async fn watch_fails_over_when_its_member_dies() {
    let mut cluster = EtcdCluster::new(3);
    cluster.etcdctl_ok(&["put", "/calico/v1/Ready", "true"]);
    let (mut rx, task) = Syncer::spawn(config(cluster.client_urls(), DEFAULT_PAGE_SIZE));
    let mut view = View::default();
    view.until(&mut rx, "the first snapshot", |v| !v.snapshots.is_empty())
        .await;
    cluster.etcdctl_ok(&["put", "/calico/v1/host/h1/bird_ip", "10.0.0.1"]);
    view.until(&mut rx, "a watched put", |v| v.keys.len() == 2)
        .await;

    let watched = view.endpoint.clone();
    let member = cluster.member_of(&watched).expect("a member's endpoint");
    cluster.kill(member);
    let killed = tokio::time::Instant::now();
    // The 10 s include electing a new leader when the dead member led.
    let deadline = killed + Duration::from_secs(10);
    cluster.put_retrying(
        "/calico/v1/host/h2/bird_ip",
        "10.0.0.2",
        Duration::from_secs(8),
    );
    while !view.keys.contains_key("/calico/v1/host/h2/bird_ip") {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no change within 10 s of killing {watched}"))
            .expect("syncer stopped");
        view.apply(event);
    }
    assert_ne!(view.endpoint, watched, "still on the dead member");
    assert_eq!(view.resumes.len(), 1, "the watch resumed on another member");
    assert_eq!(view.snapshots, vec![ResyncReason::Startup]);
    task.abort();
}

#[tokio::test]
async fn syncs_over_tls_with_a_client_certificate() {
    let etcd = EtcdServer::new_tls();
    etcd.etcdctl_ok(&["put", "/calico/v1/Ready", "true"]);
    let paths = etcd.tls().expect("tls").clone();
    let mut cfg = config(vec![etcd.client_url()], DEFAULT_PAGE_SIZE);
    cfg.etcd.tls = TlsFiles {
        ca: Some(paths.ca.clone()),
        cert: Some(paths.cert.clone()),
        key: Some(paths.key.clone()),
    };
    let (mut rx, task) = Syncer::spawn(cfg.clone());
    let mut view = View::default();
    view.until(&mut rx, "a snapshot over TLS", |v| {
        v.keys.contains_key("/calico/v1/Ready")
    })
    .await;
    task.abort();

    // Without the client certificate the server refuses: we only get disconnects.
    cfg.etcd.tls.cert = None;
    cfg.etcd.tls.key = None;
    let (mut rx, task) = Syncer::spawn(cfg);
    let mut view = View::default();
    view.until(&mut rx, "a refused connection", |v| v.disconnects > 0)
        .await;
    assert!(view.snapshots.is_empty());
    task.abort();
}

/// Puts `n` profile rule documents of about `size` bytes each.
async fn put_big_profiles(client: &mut etcd_client::Client, n: usize, size: usize) {
    let filler = "x".repeat(size);
    put_n(client, n, |k| {
        (
            format!("/calico/v1/policy/profile/p{k:05}/rules"),
            format!(r#"{{"inbound_rules":[],"outbound_rules":[],"pad":"{filler}"}}"#),
        )
    })
    .await;
}

/// OpenStack-era datastores held thousands of profiles of a few KB: a
/// 5,000-key page of them is larger than the client's 4 MiB receive limit.
/// Pages are sized by bytes too, and a value of 1 MB lists like any other.
#[tokio::test]
async fn pages_of_large_values_list_whole() {
    let etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    let n = 8000;
    put_big_profiles(&mut client, n, 2500).await;
    put(
        &mut client,
        "/calico/v1/policy/profile/zbig/rules",
        &format!(r#"{{"pad":"{}"}}"#, "y".repeat(1_000_000)),
    )
    .await;
    let (_, listed) = list_all(
        &mut client,
        "/calico/v1/",
        DEFAULT_PAGE_SIZE,
        Duration::from_secs(30),
    )
    .await
    .expect("a datastore of large values lists");
    assert_eq!(listed.len(), n + 1);
    assert!(listed.windows(2).all(|w| w[0].key < w[1].key));
    assert!(listed[n].value.len() > 1_000_000, "the 1 MB value whole");

    let (mut rx, task) = Syncer::spawn(config(vec![etcd.client_url()], DEFAULT_PAGE_SIZE));
    let mut view = View::default();
    view.until(&mut rx, "the snapshot of large values", |v| {
        !v.snapshots.is_empty()
    })
    .await;
    assert_eq!(view.keys.len(), n + 1);
    task.abort();
}

/// A value of about `size` bytes.
fn big_value(size: usize) -> String {
    format!(r#"{{"pad":"{}"}}"#, "w".repeat(size))
}

/// One transaction (one revision) putting six 1 MB profiles reaches the
/// consumer by the watch, whole: no watch error, no re-list. The client's
/// default 4 MiB receive limit refused that watch response.
#[tokio::test]
async fn a_transaction_of_large_values_arrives_by_the_watch() {
    let etcd = EtcdServer::with_max_request_bytes(8 * 1024 * 1024);
    let mut client = etcd.client().await;
    put(&mut client, "/calico/v1/Ready", "true").await;
    let (mut rx, task) = Syncer::spawn(config(vec![etcd.client_url()], DEFAULT_PAGE_SIZE));
    let mut view = View::default();
    view.until(&mut rx, "the first snapshot", |v| !v.snapshots.is_empty())
        .await;
    let pages_listed = view.pages;

    let key = |k: usize| format!("/calico/v1/policy/profile/big{k}/rules");
    let ops: Vec<etcd_client::TxnOp> = (0..6)
        .map(|k| etcd_client::TxnOp::put(key(k), big_value(1_000_000), None))
        .collect();
    client
        .txn(etcd_client::Txn::new().and_then(ops))
        .await
        .expect("a 6 MB transaction");
    view.until(&mut rx, "six 1 MB values", |v| {
        (0..6).all(|k| v.keys.get(&key(k)).is_some_and(|x| x.len() > 1_000_000))
    })
    .await;
    // By the watch: a re-list would have sent them in list pages (which
    // come before its closing snapshot).
    assert_eq!(
        view.pages, pages_listed,
        "no list page after the first list"
    );
    assert_eq!(view.snapshots, vec![ResyncReason::Startup], "no re-list");
    assert_eq!(view.disconnects, 0, "the watch never failed");
    task.abort();
}

/// A watch that starts behind gets the revisions it missed batched into one
/// response: six revisions of 1 MB each, more than the client's default
/// 4 MiB receive limit, arrive on the syncer's watch.
#[tokio::test]
async fn a_watch_started_behind_receives_batched_large_revisions() {
    let etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    let start = client
        .put("/calico/v1/Ready", "true", None)
        .await
        .expect("put")
        .header()
        .map(|h| h.revision())
        .expect("a revision");
    for k in 0..6 {
        let key = format!("/calico/v1/policy/profile/big{k}/rules");
        put(&mut client, &key, &big_value(1_000_000)).await;
    }
    let mut stream = open_watch(&client, "/calico/v1/", start + 1)
        .await
        .expect("watch");
    let mut events = 0;
    while events < 6 {
        let resp = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("a watch response in time")
            .expect("a watch response the client accepts")
            .expect("the watch stays open");
        events += resp.events().len();
    }
    assert_eq!(events, 6);
}

/// The first `Disconnected` error of a syncer with `tls` against `url`.
async fn first_error(url: String, tls: TlsFiles) -> String {
    let mut cfg = config(vec![url], DEFAULT_PAGE_SIZE);
    cfg.etcd.tls = tls;
    let (mut rx, task) = Syncer::spawn(cfg);
    let event = tokio::time::timeout(WAIT, rx.recv()).await;
    task.abort();
    match event {
        Ok(Some(SyncEvent::Disconnected { error })) => error,
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

/// The usual TLS mistakes each fail with a message that names the cause:
/// a CA that did not sign the server's certificate, an endpoint host the
/// certificate does not name, an expired client certificate.
#[tokio::test]
async fn tls_mistakes_fail_with_a_message_naming_the_cause() {
    let etcd = EtcdServer::new_tls();
    let paths = etcd.tls().expect("tls").clone();
    let scratch = etcd.dir().join("extra");
    let good = TlsFiles {
        ca: Some(paths.ca.clone()),
        cert: Some(paths.cert.clone()),
        key: Some(paths.key.clone()),
    };

    let wrong_ca = margay_tests::certs::make_ca(&scratch, "other-ca");
    let error = first_error(
        etcd.client_url(),
        TlsFiles {
            ca: Some(wrong_ca),
            ..good.clone()
        },
    )
    .await;
    assert!(
        error.contains("not signed by the configured CA"),
        "wrong CA: {error}"
    );

    // The server's certificate names 127.0.0.1 only.
    let by_name = etcd.client_url().replace("127.0.0.1", "localhost");
    let error = first_error(by_name, good.clone()).await;
    assert!(error.contains("hostname mismatch"), "hostname: {error}");

    let (cert, key) = margay_tests::certs::make_expired_client(&scratch, &paths.ca, &paths.ca_key);
    let error = first_error(
        etcd.client_url(),
        TlsFiles {
            cert: Some(cert.clone()),
            key: Some(key),
            ..good.clone()
        },
    )
    .await;
    assert!(
        error.contains(&format!(
            "etcd client certificate {} expired at 2020-01-02T00:00:00Z",
            cert.display()
        )),
        "expired: {error}"
    );

    // And the right files still work.
    let mut cfg = config(vec![etcd.client_url()], DEFAULT_PAGE_SIZE);
    cfg.etcd.tls = good;
    let (mut rx, task) = Syncer::spawn(cfg);
    let mut view = View::default();
    view.until(&mut rx, "a snapshot over TLS", |v| !v.snapshots.is_empty())
        .await;
    task.abort();
}
