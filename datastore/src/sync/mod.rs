//! Datastore sync: keeps a consistent, converging view of the Calico keys in etcd.
//!
//! A [`Syncer`] connects to one of the configured endpoints (rotating on
//! failure, with jittered exponential backoff), lists everything under the
//! data prefix and then under each extra prefix (the BGP tree), all at one
//! revision (paginated: at most [`SyncConfig::page_size`]
//! keys and about [`PAGE_TARGET_BYTES`] bytes a page, each page starting
//! after the last key of the previous one, and each sent on as a
//! [`SyncEvent::SnapshotPart`] as it arrives so nobody holds the whole
//! store), then watches every tree on one stream from the next revision.
//! Keys outside the trees (margay's own status under `/calico/felix/v1`)
//! are never seen. When the connection is lost
//! it reconnects and resumes each tree's watch after the last revision it
//! reported for that tree ([`SyncEvent::Resumed`]): etcd replays what
//! happened meanwhile. When that
//! history is gone (the watch answers "compacted"), the watch is cancelled,
//! a watch response is too large, or a list was cut short, it lists again
//! ([`ResyncReason`]) and emits only the difference from what it had
//! reported before: changed keys as puts, keys absent from the new list as
//! deletions. Consumers therefore see one stream of `(key, Option<value>)`
//! changes that always converges.
//!
//! It does not interpret keys or values (that is the calculation's job) and
//! never writes. While etcd is unreachable it emits nothing but a
//! [`SyncEvent::Disconnected`], so the dataplane stays exactly as it was.

use std::time::Instant;

use etcd_client::{EventType, WatchStream};
use tokio::sync::mpsc;

use crate::backoff::{Backoff, BackoffConfig};
use crate::connect::{connect_any, timed, Connection};
use crate::error::EtcdError;

mod events;
mod known;
mod list;
mod outage;
mod trees;
mod watch;

pub use events::{KvChange, ResyncReason, SyncConfig, SyncEvent};
pub use known::KnownKeys;
pub use list::{list_all, prefix_range_end, ListedKv, Lister, PageSizer, PAGE_TARGET_BYTES};
use outage::OutageLog;
use trees::{TreeRevisions, Trees, WatcherTrees};
pub use watch::{open_watch, open_watches};

/// Keys per page when listing.
pub const DEFAULT_PAGE_SIZE: i64 = 5000;

/// How a sync session ended.
enum SessionEnd {
    /// List again on the same connection.
    Relist(ResyncReason),
    /// Reconnect (after a backoff).
    Reconnect(EtcdError),
}

/// The datastore syncer task.
pub struct Syncer {
    cfg: SyncConfig,
    known: KnownKeys,
    tx: mpsc::Sender<SyncEvent>,
    endpoint_index: usize,
    /// The main tree and the extra ones.
    trees: Trees,
    /// Per tree, the revision the consumer is in sync at (last snapshot,
    /// watched event or progress notification); `None` before the first
    /// snapshot.
    revisions: Option<TreeRevisions>,
    /// Which tree each watcher of the current watch stream follows.
    watchers: WatcherTrees,
    /// The cluster id of the store that revision belongs to.
    cluster_id: Option<u64>,
}

impl Syncer {
    /// A syncer sending to `tx`; start it with [`Syncer::run`].
    pub fn new(cfg: SyncConfig, tx: mpsc::Sender<SyncEvent>) -> Self {
        Syncer {
            trees: Trees::new(&cfg.prefix, &cfg.extra_prefixes),
            cfg,
            known: KnownKeys::default(),
            tx,
            endpoint_index: 0,
            revisions: None,
            watchers: WatcherTrees::default(),
            cluster_id: None,
        }
    }

    /// Starts a syncer on its own task; events arrive on the returned receiver.
    pub fn spawn(cfg: SyncConfig) -> (mpsc::Receiver<SyncEvent>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(64);
        let handle = tokio::spawn(Syncer::new(cfg, tx).run());
        (rx, handle)
    }

    /// Syncs until the receiver is dropped.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(self.cfg.backoff);
        let mut reason = ResyncReason::Startup;
        let mut outage = OutageLog::default();
        loop {
            let error = match self
                .connected_session(&mut backoff, reason, &mut outage)
                .await
            {
                Err(EtcdError::Closed) => return,
                Err(e) => e,
                Ok(()) => return,
            };
            outage.failed(&error);
            if self
                .tx
                .send(SyncEvent::Disconnected {
                    error: error.to_string(),
                })
                .await
                .is_err()
            {
                return;
            }
            if self.revisions.is_some() {
                reason = ResyncReason::Reconnect;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Connects, then lists and watches until the connection fails.
    async fn connected_session(
        &mut self,
        backoff: &mut Backoff,
        mut reason: ResyncReason,
        outage: &mut OutageLog,
    ) -> Result<(), EtcdError> {
        let probe = format!("{}Ready", self.trees.main());
        let mut conn = connect_any(&self.cfg.etcd, &mut self.endpoint_index, &probe).await?;
        tracing::info!(endpoint = %conn.endpoint, "connected to etcd");
        outage.ended();
        // After an outage, first try to watch on from where we were.
        let mut resume = self
            .revisions
            .clone()
            .filter(|_| reason == ResyncReason::Reconnect)
            .filter(|revs| self.same_store(&conn, revs.newest()));
        loop {
            let (revisions, resumed) = match resume.take() {
                Some(revisions) => (revisions, true),
                None => {
                    let revision = self.snapshot(&mut conn, reason).await?;
                    (TreeRevisions::listed(self.trees.len(), revision), false)
                }
            };
            backoff.reset();
            match self.watch(&mut conn, &revisions, resumed).await {
                SessionEnd::Relist(r) => reason = r,
                SessionEnd::Reconnect(e) => return Err(e),
            }
        }
    }

    /// Lists every tree (the main one first, the others at its revision)
    /// and sends the converging changes: each page's puts as a
    /// [`SyncEvent::SnapshotPart`] as it arrives, then the deletions (of keys
    /// gone from any tree) in the closing [`SyncEvent::Snapshot`].
    async fn snapshot(
        &mut self,
        conn: &mut Connection,
        reason: ResyncReason,
    ) -> Result<i64, EtcdError> {
        let started = Instant::now();
        // A list cut short leaves nothing to resume from: list again.
        self.revisions = None;
        self.known.begin_list();
        let (mut keys, mut changed) = (0, 0);
        let mut pinned: Option<i64> = None;
        for dir in self.trees.dirs().to_vec() {
            let mut lister = Lister::new(&dir, self.cfg.page_size, self.cfg.etcd.request_timeout);
            if let Some(revision) = pinned {
                lister = lister.at_revision(revision);
            }
            while let Some(page) = lister.next_page(&conn.client).await? {
                keys += page.len();
                let changes = self.known.converge_page(page);
                changed += changes.len();
                if !changes.is_empty() {
                    self.send_part(changes).await?;
                }
            }
            pinned.get_or_insert(lister.revision());
        }
        let changes = self.known.finish_list();
        let revision = pinned.unwrap_or(0);
        self.revisions = Some(TreeRevisions::listed(self.trees.len(), revision));
        self.cluster_id = Some(conn.cluster_id);
        tracing::info!(
            reason = reason.as_str(),
            revision,
            keys,
            changes = changed + changes.len(),
            duration_ms = started.elapsed().as_millis() as u64,
            "listed datastore"
        );
        let event = SyncEvent::Snapshot {
            changes,
            revision,
            reason,
            keys,
            endpoint: conn.endpoint.clone(),
        };
        self.tx.send(event).await.map_err(|_| EtcdError::Closed)?;
        Ok(revision)
    }

    /// Sends one page of a list once at most one other event waits in the
    /// channel: the consumer holds a page or two, never the whole store.
    async fn send_part(&self, changes: Vec<KvChange>) -> Result<(), EtcdError> {
        let room = self.tx.max_capacity().saturating_sub(1).max(1);
        let mut permits = self
            .tx
            .reserve_many(room)
            .await
            .map_err(|_| EtcdError::Closed)?;
        if let Some(permit) = permits.next() {
            permit.send(SyncEvent::SnapshotPart { changes });
        }
        Ok(())
    }

    /// Watches each tree from its revision + 1 until the watch is lost.
    /// `resumed`: the watch continues after an outage (the consumer is told
    /// once it is up).
    async fn watch(
        &mut self,
        conn: &mut Connection,
        revisions: &TreeRevisions,
        resumed: bool,
    ) -> SessionEnd {
        let starts: Vec<(String, i64)> = self
            .trees
            .dirs()
            .iter()
            .cloned()
            .zip(revisions.all().iter().map(|r| r + 1))
            .collect();
        self.watchers = WatcherTrees::default();
        let created = timed(
            self.cfg.etcd.request_timeout,
            "watch",
            open_watches(&conn.client, &starts),
        )
        .await;
        let mut stream = match created {
            Ok(stream) => stream,
            Err(e) => return SessionEnd::Reconnect(e),
        };
        if resumed {
            let revision = revisions.oldest();
            tracing::info!(revision, endpoint = %conn.endpoint, "etcd watch resumed");
            let event = SyncEvent::Resumed {
                revision,
                endpoint: conn.endpoint.clone(),
            };
            if self.tx.send(event).await.is_err() {
                return SessionEnd::Reconnect(EtcdError::Closed);
            }
        }
        self.pump(&mut stream).await
    }

    /// Forwards watch responses until the stream ends or fails.
    async fn pump(&mut self, stream: &mut WatchStream) -> SessionEnd {
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    return SessionEnd::Reconnect(EtcdError::WatchLost("stream closed".into()))
                }
                Err(source) if list::is_out_of_range(&source) => {
                    return watch::too_large(&source);
                }
                Err(source) => {
                    return SessionEnd::Reconnect(EtcdError::Request {
                        op: "watch",
                        error: Box::new(source),
                    })
                }
            };
            if resp.compact_revision() > 0 {
                tracing::warn!(
                    compact_revision = resp.compact_revision(),
                    "etcd watch fell behind a compaction, listing again"
                );
                return SessionEnd::Relist(ResyncReason::Compacted);
            }
            if resp.canceled() {
                tracing::warn!(
                    reason = resp.cancel_reason(),
                    "etcd watch cancelled, listing again"
                );
                return SessionEnd::Relist(ResyncReason::Reconnect);
            }
            let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            if resp.created() {
                self.watchers.created(resp.watch_id());
                continue;
            }
            if resp.events().is_empty() {
                self.progress(resp.watch_id(), revision);
                continue;
            }
            let changes = self.record(resp.events());
            if changes.is_empty() {
                continue;
            }
            // The header's revision can be past these events (a watch
            // catching up); what they cover ends at their own newest one.
            let newest = resp
                .events()
                .iter()
                .filter_map(|e| e.kv().map(|kv| kv.mod_revision()))
                .max()
                .unwrap_or(revision);
            if self
                .tx
                .send(SyncEvent::Updates {
                    changes,
                    revision: newest,
                })
                .await
                .is_err()
            {
                return SessionEnd::Reconnect(EtcdError::Closed);
            }
        }
    }

    /// True when `conn` may serve the store whose `revision` we hold: same
    /// cluster id, and not behind us. A new cluster or a restored backup has
    /// revisions that mean something else; the watch cannot resume there.
    /// (A wiped store with the same cluster id that has already passed our
    /// revision cannot be told apart; etcd keeps no history epoch.)
    fn same_store(&self, conn: &Connection, revision: i64) -> bool {
        let same = self.cluster_id == Some(conn.cluster_id) && conn.revision >= revision;
        if !same {
            tracing::warn!(
                endpoint = %conn.endpoint,
                revision,
                store_revision = conn.revision,
                "etcd is not the store we watched (new cluster or restored backup), listing again"
            );
        }
        same
    }

    /// Records that the consumer has seen everything in `tree` up to
    /// `revision`. (From events, not the response header's revision: a
    /// catching-up watch sends the store's current revision with a batch
    /// that may not reach it.)
    fn advance(&mut self, tree: usize, revision: i64) {
        if let Some(revisions) = &mut self.revisions {
            revisions.advance(tree, revision);
        }
    }

    /// Records a watched change of `key` at `revision` in the key's tree
    /// (every watched key lies in one: the watch ranges are the trees).
    fn advance_key(&mut self, key: &str, revision: i64) {
        if let Some(tree) = self.trees.of_key(key) {
            self.advance(tree, revision);
        }
    }

    /// A progress notification (a response without events): etcd sends it
    /// only to a watcher that has caught up, so its tree is complete up to
    /// the header's revision. Lets a quiet tree resume after an outage
    /// instead of falling behind a compaction.
    fn progress(&mut self, watch_id: i64, revision: i64) {
        if let Some(tree) = self.watchers.tree_of(watch_id) {
            self.advance(tree, revision);
        }
    }

    /// Turns watch events into changes and records them in `known`.
    fn record(&mut self, events: &[etcd_client::Event]) -> Vec<KvChange> {
        let mut changes = Vec::with_capacity(events.len());
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = kv.key_str() else {
                tracing::warn!(key = ?kv.key(), "skipping a non-UTF-8 etcd key");
                continue;
            };
            match event.event_type() {
                EventType::Put => {
                    self.known.put(key, kv.mod_revision());
                    self.advance_key(key, kv.mod_revision());
                    changes.push(KvChange {
                        key: key.to_owned(),
                        value: Some(String::from_utf8_lossy(kv.value()).into_owned()),
                    });
                }
                EventType::Delete => {
                    self.known.delete(key);
                    self.advance_key(key, kv.mod_revision());
                    changes.push(KvChange {
                        key: key.to_owned(),
                        value: None,
                    });
                }
            }
        }
        changes
    }
}
