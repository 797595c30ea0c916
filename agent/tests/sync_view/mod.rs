//! Shared by the syncer tests against a real etcd: a syncer configuration
//! with short timeouts, and [`View`], the key/value state a consumer holds
//! after applying the syncer's events.
//!
//! Each test file includes this with `mod sync_view;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use margay_datastore::backoff::BackoffConfig;
use margay_datastore::connect::{EtcdConfig, TlsFiles};
use margay_datastore::sync::{KvChange, ResyncReason, SyncConfig, SyncEvent};
use tokio::sync::mpsc::Receiver;

/// How long [`View::until`] waits.
pub const WAIT: Duration = Duration::from_secs(30);

/// A syncer of `/calico/v1` (no extra trees) through `endpoints`, with short
/// timeouts and backoff.
pub fn config(endpoints: Vec<String>, page_size: i64) -> SyncConfig {
    SyncConfig {
        etcd: EtcdConfig {
            endpoints,
            tls: TlsFiles::default(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
        },
        prefix: "/calico/v1".into(),
        extra_prefixes: Vec::new(),
        page_size,
        backoff: BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
    }
}

/// What a consumer holds after applying the events: key → value.
#[derive(Default)]
pub struct View {
    /// The keys and values now.
    pub keys: BTreeMap<String, String>,
    /// Every key ever reported, put or deleted.
    pub seen: BTreeSet<String>,
    /// Why each list was taken, in order.
    pub snapshots: Vec<ResyncReason>,
    /// The revision of the last list.
    pub snapshot_revision: i64,
    /// The endpoint of the last snapshot or resume.
    pub endpoint: String,
    /// How many times etcd was lost.
    pub disconnects: usize,
    /// Revisions the watch resumed from after an outage.
    pub resumes: Vec<i64>,
    /// List pages received (a list's keys arrive in pages before its
    /// closing snapshot).
    pub pages: usize,
}

impl View {
    /// Applies one event.
    pub fn apply(&mut self, event: SyncEvent) {
        match event {
            SyncEvent::Snapshot {
                changes,
                reason,
                endpoint,
                revision,
                ..
            } => {
                self.snapshots.push(reason);
                self.snapshot_revision = revision;
                self.endpoint = endpoint;
                self.apply_changes(changes);
            }
            SyncEvent::SnapshotPart { changes } => {
                self.pages += 1;
                self.apply_changes(changes)
            }
            SyncEvent::Updates { changes, .. } => self.apply_changes(changes),
            SyncEvent::Disconnected { .. } => self.disconnects += 1,
            SyncEvent::Resumed { revision, endpoint } => {
                self.resumes.push(revision);
                self.endpoint = endpoint;
            }
        }
    }

    fn apply_changes(&mut self, changes: Vec<KvChange>) {
        for c in changes {
            self.seen.insert(c.key.clone());
            match c.value {
                Some(v) => {
                    self.keys.insert(c.key, v);
                }
                None => {
                    self.keys.remove(&c.key);
                }
            }
        }
    }

    /// The keys now, in order.
    pub fn key_list(&self) -> Vec<&str> {
        self.keys.keys().map(String::as_str).collect()
    }

    /// The value of `key` now.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    /// Applies the events that arrive within `period`.
    pub async fn apply_for(&mut self, rx: &mut Receiver<SyncEvent>, period: Duration) {
        let end = tokio::time::Instant::now() + period;
        while let Ok(Some(event)) = tokio::time::timeout_at(end, rx.recv()).await {
            self.apply(event);
        }
    }

    /// Applies events until `done` holds; panics after [`WAIT`].
    pub async fn until(
        &mut self,
        rx: &mut Receiver<SyncEvent>,
        what: &str,
        done: impl Fn(&View) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            let event = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; view: {:?}", self.keys))
                .expect("syncer stopped");
            self.apply(event);
        }
    }
}

/// Puts `key` = `value`, panicking on failure.
pub async fn put(client: &mut etcd_client::Client, key: &str, value: &str) {
    client.put(key, value, None).await.expect("put");
}

/// Puts `key` = `value`, then compacts etcd's history up to that write
/// (physically), so a watch behind it is told "compacted".
pub async fn put_and_compact(client: &mut etcd_client::Client, key: &str, value: &str) {
    let written = client.put(key, value, None).await.expect("put");
    let revision = written.header().map(|h| h.revision()).expect("header");
    client
        .compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");
}
