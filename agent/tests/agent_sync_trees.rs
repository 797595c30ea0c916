//! The syncer following a second key tree (the BGP keys under
//! `/calico/bgp/v1`) beside the data tree, against a real etcd: one list at
//! one revision, one watch stream, deletions converging in both trees,
//! resumption covering both, and nothing outside the trees ever reported.
//!
//! Each test starts its own etcd on free loopback ports; nothing here needs
//! root or touches the network beyond 127.0.0.1.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use margay_datastore::sync::{ResyncReason, SyncConfig, Syncer, DEFAULT_PAGE_SIZE};
use margay_tests::etcd::{CutoffProxy, EtcdServer};

mod sync_view;
use sync_view::{config, put, put_and_compact, View, WAIT};

const BGP: &str = "/calico/bgp/v1";
const AS_NUM: &str = "/calico/bgp/v1/global/as_num";
const MESH: &str = "/calico/bgp/v1/global/node_mesh";
const H1_V4: &str = "/calico/bgp/v1/host/h1/ip_addr_v4";
const PEER: &str = "/calico/bgp/v1/global/peer_v4/10.0.0.254";
const STATUS: &str = "/calico/felix/v1/host/h1/status";

/// A syncer of `/calico/v1` and the BGP tree through `endpoint`.
fn bgp_config(endpoint: String, page_size: i64) -> SyncConfig {
    let mut cfg = config(vec![endpoint], page_size);
    cfg.extra_prefixes = vec![BGP.into()];
    cfg
}

async fn delete(client: &mut etcd_client::Client, key: &str) {
    client.delete(key, None).await.expect("delete");
}

/// Keys of both trees arrive in the first list and by the watch, and keys
/// beside them (margay's own status, a sibling tree sharing the text) never
/// do.
#[tokio::test]
async fn both_trees_are_listed_and_watched_and_nothing_else_is_seen() {
    let etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    put(&mut client, "/calico/v1/Ready", "true").await;
    put(&mut client, AS_NUM, "64511").await;
    put(&mut client, H1_V4, "10.0.0.1").await;
    put(&mut client, STATUS, "{}").await;
    put(&mut client, "/calico/bgp/v10/x", "no").await;

    let (mut rx, task) = Syncer::spawn(bgp_config(etcd.client_url(), DEFAULT_PAGE_SIZE));
    let mut view = View::default();
    view.until(&mut rx, "the first snapshot", |v| !v.snapshots.is_empty())
        .await;
    assert_eq!(view.key_list(), [AS_NUM, H1_V4, "/calico/v1/Ready"]);

    put(&mut client, STATUS, "{\"later\": true}").await;
    put(
        &mut client,
        PEER,
        r#"{"ip": "10.0.0.254", "as_num": "64512"}"#,
    )
    .await;
    delete(&mut client, AS_NUM).await;
    put(&mut client, H1_V4, "10.0.0.9").await;
    put(&mut client, "/calico/v1/host/h1/bird_ip", "10.0.0.9").await;
    view.until(&mut rx, "the watched changes of both trees", |v| {
        v.value(H1_V4) == Some("10.0.0.9")
            && v.keys.contains_key(PEER)
            && !v.keys.contains_key(AS_NUM)
            && v.keys.contains_key("/calico/v1/host/h1/bird_ip")
    })
    .await;
    // Written first, so it would have come before the changes above.
    assert!(!view.seen.contains(STATUS), "status key reported");
    assert!(!view.seen.contains("/calico/bgp/v10/x"), "sibling reported");
    assert_eq!(view.snapshots, [ResyncReason::Startup], "no resync");
    task.abort();
}

/// While the syncer is cut off, BGP keys are deleted, changed and added and
/// the history is compacted: the list taken when it is back reports the
/// deletion, and the watch goes on in both trees.
#[tokio::test]
async fn a_bgp_key_deleted_while_cut_off_is_reported_deleted_after_the_relist() {
    let etcd = EtcdServer::new();
    let proxy = CutoffProxy::new(etcd.client_port());
    let mut client = etcd.client().await;
    put(&mut client, "/calico/v1/Ready", "true").await;
    put(&mut client, AS_NUM, "64511").await;
    put(&mut client, MESH, r#"{"enabled": true}"#).await;
    put(&mut client, H1_V4, "10.0.0.1").await;
    let (mut rx, task) = Syncer::spawn(bgp_config(proxy.url(), DEFAULT_PAGE_SIZE));
    let mut view = View::default();
    view.until(&mut rx, "the first snapshot", |v| v.keys.len() == 4)
        .await;

    proxy.cut();
    view.until(&mut rx, "a disconnect", |v| v.disconnects > 0)
        .await;
    delete(&mut client, AS_NUM).await;
    put(&mut client, MESH, r#"{"enabled": false}"#).await;
    put(
        &mut client,
        PEER,
        r#"{"ip": "10.0.0.254", "as_num": 64512}"#,
    )
    .await;
    put_and_compact(&mut client, "/calico/v1/host/h1/bird_ip", "10.0.0.1").await;
    proxy.restore();

    view.until(&mut rx, "convergence after the relist", |v| {
        !v.keys.contains_key(AS_NUM) && v.keys.contains_key(PEER)
    })
    .await;
    assert_eq!(
        view.snapshots,
        [ResyncReason::Startup, ResyncReason::Compacted]
    );
    assert_eq!(view.value(MESH), Some(r#"{"enabled": false}"#));
    assert_eq!(view.keys.len(), 5, "{:?}", view.key_list());

    // Both trees are watched again after the relist.
    delete(&mut client, H1_V4).await;
    put(&mut client, "/calico/v1/host/h2/bird_ip", "10.0.0.2").await;
    view.until(&mut rx, "watched changes after the relist", |v| {
        !v.keys.contains_key(H1_V4) && v.keys.contains_key("/calico/v1/host/h2/bird_ip")
    })
    .await;
    task.abort();
}

/// etcd stops and starts again (same data): the watch resumes for both
/// trees without a list, and changes made in either after the restart
/// arrive.
#[tokio::test]
async fn the_watch_resumes_across_an_etcd_restart_for_both_trees() {
    let mut etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    put(&mut client, "/calico/v1/Ready", "true").await;
    put(&mut client, AS_NUM, "64511").await;
    let (mut rx, task) = Syncer::spawn(bgp_config(etcd.client_url(), DEFAULT_PAGE_SIZE));
    let mut view = View::default();
    view.until(&mut rx, "the first snapshot", |v| !v.snapshots.is_empty())
        .await;
    put(&mut client, H1_V4, "10.0.0.1").await;
    view.until(&mut rx, "a watched BGP put", |v| v.keys.contains_key(H1_V4))
        .await;

    etcd.stop();
    view.until(&mut rx, "a disconnect", |v| v.disconnects > 0)
        .await;
    etcd.start();
    let mut client = etcd.client().await;
    put(&mut client, AS_NUM, "64600").await;
    delete(&mut client, H1_V4).await;
    put(&mut client, "/calico/v1/host/h1/bird_ip", "10.0.0.1").await;
    view.until(&mut rx, "changes in both trees after the restart", |v| {
        v.value(AS_NUM) == Some("64600")
            && !v.keys.contains_key(H1_V4)
            && v.keys.contains_key("/calico/v1/host/h1/bird_ip")
    })
    .await;
    assert_eq!(view.resumes.len(), 1, "resumed once");
    assert_eq!(view.snapshots, [ResyncReason::Startup], "no second list");
    task.abort();
}

/// Writes to both trees while the syncer is cut off (history kept) are
/// replayed by the resumed watch of each tree, without a list.
#[tokio::test]
async fn writes_to_both_trees_while_cut_off_are_replayed_without_a_list() {
    let etcd = EtcdServer::new();
    let proxy = CutoffProxy::new(etcd.client_port());
    let mut client = etcd.client().await;
    put(&mut client, "/calico/v1/Ready", "true").await;
    put(&mut client, AS_NUM, "64511").await;
    put(&mut client, MESH, r#"{"enabled": true}"#).await;
    let (mut rx, task) = Syncer::spawn(bgp_config(proxy.url(), DEFAULT_PAGE_SIZE));
    let mut view = View::default();
    view.until(&mut rx, "the first snapshot", |v| v.keys.len() == 3)
        .await;
    // Only the data tree moves on before the outage.
    put(&mut client, "/calico/v1/host/a/bird_ip", "10.0.0.1").await;
    view.until(&mut rx, "a watched data put", |v| v.keys.len() == 4)
        .await;

    proxy.cut();
    view.until(&mut rx, "a disconnect", |v| v.disconnects > 0)
        .await;
    delete(&mut client, MESH).await;
    put(&mut client, AS_NUM, "64999").await;
    put(&mut client, "/calico/v1/host/b/bird_ip", "10.0.0.2").await;
    proxy.restore();

    view.until(&mut rx, "the writes made while cut off", |v| {
        v.value(AS_NUM) == Some("64999")
            && !v.keys.contains_key(MESH)
            && v.keys.contains_key("/calico/v1/host/b/bird_ip")
    })
    .await;
    assert_eq!(view.snapshots, [ResyncReason::Startup]);
    assert_eq!(view.resumes.len(), 1);
    task.abort();
}

/// The BGP tree is listed at the revision of the data tree's list: a writer
/// adding BGP keys while the (many-paged) data list runs must not get its
/// keys into the snapshot, so the snapshot is one consistent view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bgp_tree_is_listed_at_the_revision_of_the_data_list() {
    let etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    let ops: Vec<etcd_client::TxnOp> = (0..1000)
        .map(|k| {
            etcd_client::TxnOp::put(format!("/calico/v1/host/h{k:04}/bird_ip"), "10.0.0.1", None)
        })
        .collect();
    for chunk in ops.chunks(100) {
        client
            .txn(etcd_client::Txn::new().and_then(chunk.to_vec()))
            .await
            .expect("txn");
    }
    put(&mut client, AS_NUM, "64511").await;

    let mut writer = etcd.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_writer = stop.clone();
    let writes = tokio::spawn(async move {
        let mut n = 0u32;
        while !stop_writer.load(Ordering::Relaxed) {
            let key = format!("{BGP}/host/w{n:06}/ip_addr_v4");
            put(&mut writer, &key, "10.9.0.1").await;
            n += 1;
        }
        n
    });
    // Ten keys a page: a hundred round trips while the writer runs.
    let (mut rx, task) = Syncer::spawn(bgp_config(etcd.client_url(), 10));
    let mut view = View::default();
    view.until(&mut rx, "the first snapshot", |v| !v.snapshots.is_empty())
        .await;
    stop.store(true, Ordering::Relaxed);
    let written = writes.await.expect("writer");
    assert!(written > 0, "the writer ran during the list");

    let at_revision = client
        .get(
            format!("{BGP}/"),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_revision(view.snapshot_revision)
                    .with_keys_only(),
            ),
        )
        .await
        .expect("the BGP tree at the snapshot's revision");
    let expected: Vec<String> = at_revision
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    let listed: Vec<&String> = view.keys.keys().filter(|k| k.starts_with(BGP)).collect();
    assert_eq!(
        listed.len(),
        expected.len(),
        "BGP keys in the snapshot vs at its revision {} ({written} written meanwhile)",
        view.snapshot_revision
    );
    assert!(listed.iter().zip(&expected).all(|(a, b)| *a == b));
    assert_eq!(view.keys.len(), 1000 + expected.len());
    task.abort();
}

/// Puts `key` = `value` and returns the revision of the put.
async fn put_at(client: &mut etcd_client::Client, key: &str, value: &str) -> i64 {
    let resp = client.put(key, value, None).await.expect("put");
    resp.header().map(|h| h.revision()).expect("a revision")
}

type Events = tokio::sync::mpsc::Receiver<margay_datastore::sync::SyncEvent>;

/// Cuts the syncer off and lets it back in; returns the revision its watch
/// resumed from (the oldest of its trees').
async fn cut_and_restore(proxy: &CutoffProxy, view: &mut View, rx: &mut Events) -> i64 {
    let (disconnects, resumes) = (view.disconnects, view.resumes.len());
    proxy.cut();
    view.until(rx, "a disconnect", |v| v.disconnects > disconnects)
        .await;
    proxy.restore();
    view.until(rx, "a resumed watch", |v| v.resumes.len() > resumes)
        .await;
    view.resumes.last().copied().unwrap_or(0)
}

/// The BGP tree stays quiet while the data tree moves on. etcd's progress
/// notifications tell the syncer that the quiet tree is complete up to the
/// current revision, so after an outage in which history was compacted past
/// the BGP tree's last change, both watches still resume: no list.
#[tokio::test]
async fn a_quiet_tree_resumes_past_a_compaction_after_progress_notifications() {
    let etcd = EtcdServer::with_progress_notify_interval(Duration::from_millis(10));
    let proxy = CutoffProxy::new(etcd.client_port());
    let mut client = etcd.client().await;
    put(&mut client, "/calico/v1/Ready", "true").await;
    put(&mut client, AS_NUM, "64511").await;
    let (mut rx, task) = Syncer::spawn(bgp_config(proxy.url(), DEFAULT_PAGE_SIZE));
    let mut view = View::default();
    view.until(&mut rx, "the first snapshot", |v| !v.snapshots.is_empty())
        .await;
    let latest = put_at(&mut client, "/calico/v1/host/h1/bird_ip", "10.0.0.1").await;
    view.until(&mut rx, "a watched data put", |v| v.keys.len() == 3)
        .await;

    // Until a resume starts at the data tree's last change for both trees:
    // the quiet tree got a progress notification after it. etcd notifies
    // only a watcher that has caught up, and catches lagging watchers up
    // every 100 ms, so each round stays connected a little longer than that.
    let deadline = tokio::time::Instant::now() + WAIT;
    for round in 0.. {
        view.apply_for(&mut rx, Duration::from_millis(250)).await;
        if cut_and_restore(&proxy, &mut view, &mut rx).await >= latest {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the BGP tree's watch never moved past the snapshot in {round} rounds"
        );
    }

    proxy.cut();
    let disconnects = view.disconnects;
    view.until(&mut rx, "a disconnect", |v| v.disconnects > disconnects)
        .await;
    put_and_compact(&mut client, "/calico/v1/host/late/bird_ip", "10.0.0.9").await;
    proxy.restore();
    put(
        &mut client,
        PEER,
        r#"{"ip": "10.0.0.254", "as_num": "64512"}"#,
    )
    .await;
    view.until(&mut rx, "the changes around the compaction", |v| {
        v.keys.contains_key("/calico/v1/host/late/bird_ip") && v.keys.contains_key(PEER)
    })
    .await;
    assert_eq!(view.snapshots, [ResyncReason::Startup], "listed again");
    task.abort();
}
