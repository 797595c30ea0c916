//! Datastore sync: keeps a consistent, converging view of the Calico keys in etcd.
//!
//! A [`Syncer`] connects to one of the configured endpoints (rotating on
//! failure, with jittered exponential backoff), lists everything under the
//! data prefix at one revision (paginated: at most [`SyncConfig::page_size`]
//! keys and about [`PAGE_TARGET_BYTES`] bytes a page, each page starting
//! after the last key of the previous one, and each sent on as a
//! [`SyncEvent::SnapshotPart`] as it arrives so nobody holds the whole
//! store), then watches from the next revision. When the connection is lost
//! it reconnects and resumes the watch after the last revision it reported
//! ([`SyncEvent::Resumed`]): etcd replays what happened meanwhile. When that
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

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, TlsOptions, WatchStream,
};
use thiserror::Error;
use tokio::sync::mpsc;

/// Keys per page when listing.
pub const DEFAULT_PAGE_SIZE: i64 = 5000;

/// The largest message the client accepts from etcd (list pages and watch
/// responses). etcd refuses any request over its `--max-request-bytes`
/// (1.5 MiB by default, and it warns above 10 MiB), so every value and every
/// transaction it accepts fits, with room for a watch response that batches
/// several revisions. The client's own default is 4 MiB.
pub const MAX_RECEIVE_BYTES: usize = 64 * 1024 * 1024;

/// The CA bundle used for `https://` endpoints when none is configured
/// (Felix's default).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why talking to etcd failed.
#[derive(Debug, Error)]
pub enum SyncError {
    /// No endpoint could be reached.
    #[error("no etcd endpoint reachable ({tried}): {last}")]
    Unreachable {
        /// The endpoints tried.
        tried: String,
        /// The last error.
        last: String,
    },
    /// A TLS file could not be read.
    #[error("cannot read etcd TLS file {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The client certificate's validity period has ended.
    #[error("etcd client certificate {path} expired at {not_after}")]
    ClientCertExpired {
        /// The certificate file.
        path: PathBuf,
        /// Its end of validity (RFC 3339).
        not_after: String,
    },
    /// The client certificate's validity period has not begun.
    #[error("etcd client certificate {path} is not valid before {not_before}")]
    ClientCertNotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// Its start of validity (RFC 3339).
        not_before: String,
    },
    /// An etcd request failed.
    #[error("etcd {op} failed: {source}")]
    Request {
        /// What we were doing.
        op: &'static str,
        /// The client's error (boxed: it is large).
        #[source]
        source: Box<etcd_client::Error>,
    },
    /// One value is larger than the client accepts.
    #[error("etcd value of key {key} is larger than the client accepts ({limit} bytes a message)")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// The client's receive limit.
        limit: usize,
    },
    /// An etcd request took too long.
    #[error("etcd {0} timed out")]
    Timeout(&'static str),
    /// The watch ended, was cancelled or fell behind a compaction.
    #[error("etcd watch lost: {0}")]
    WatchLost(String),
    /// The consumer went away.
    #[error("sync consumer closed")]
    Closed,
}

/// TLS material for etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle (PEM); `None` uses [`SYSTEM_CA_BUNDLE`] when it exists.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    pub key: Option<PathBuf>,
}

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs, tried in order (starting after the last good one).
    pub endpoints: Vec<String>,
    /// TLS files; only used with `https://` endpoints.
    pub tls: TlsFiles,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one unary request (one list page, one put).
    pub request_timeout: Duration,
}

impl EtcdConfig {
    /// From the agent's settings, with default timeouts.
    pub fn from_settings(s: &margay_config::Settings) -> Self {
        EtcdConfig {
            endpoints: s.etcd_endpoints.clone(),
            tls: TlsFiles {
                ca: s.etcd_ca_file.clone(),
                cert: s.etcd_cert_file.clone(),
                key: s.etcd_key_file.clone(),
            },
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Everything a [`Syncer`] needs.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Connection settings.
    pub etcd: EtcdConfig,
    /// The data prefix, e.g. `/calico/v1`; keys under `<prefix>/` are synced.
    pub prefix: String,
    /// Keys per list page.
    pub page_size: i64,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
}

/// One key's change: `None` is a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvChange {
    /// The full etcd key.
    pub key: String,
    /// The new value, or `None` when deleted.
    pub value: Option<String>,
}

/// Why a full list was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncReason {
    /// The first list after start.
    Startup,
    /// The watch fell behind a compaction.
    Compacted,
    /// The connection or the watch was lost.
    Reconnect,
    /// A watch response was larger than the client accepts.
    WatchTooLarge,
}

impl ResyncReason {
    /// Short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncReason::Startup => "startup",
            ResyncReason::Compacted => "compacted",
            ResyncReason::Reconnect => "reconnect",
            ResyncReason::WatchTooLarge => "watch_too_large",
        }
    }
}

/// What the syncer tells its consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// One page of a list in progress: puts of new or modified keys. The
    /// view is not consistent until the closing [`SyncEvent::Snapshot`]:
    /// nothing may be acted on before it (a list can also be cut short by
    /// a [`SyncEvent::Disconnected`]; the next list converges again).
    SnapshotPart {
        /// Puts, in key order.
        changes: Vec<KvChange>,
    },
    /// A complete list was taken: with the [`SyncEvent::SnapshotPart`]s
    /// before it, `changes` turns the previously reported state into the
    /// listed one (all puts the first time). After this the consumer is in
    /// sync at `revision`.
    Snapshot {
        /// The rest of the changes (deletions of keys no longer listed, or,
        /// from a caller converging a whole list at once, everything), in
        /// key order.
        changes: Vec<KvChange>,
        /// The list's revision.
        revision: i64,
        /// Why the list was taken.
        reason: ResyncReason,
        /// How many keys the list held.
        keys: usize,
        /// The endpoint used.
        endpoint: String,
    },
    /// Changes seen by the watch, in order.
    Updates {
        /// The changes of one watch response.
        changes: Vec<KvChange>,
        /// The revision after them.
        revision: i64,
    },
    /// Connected again after [`SyncEvent::Disconnected`], watching on from
    /// `revision` (what the consumer already has): no list was needed. If
    /// that history was compacted meanwhile, a [`ResyncReason::Compacted`]
    /// snapshot follows.
    Resumed {
        /// The last revision reported before the outage.
        revision: i64,
        /// The endpoint now used.
        endpoint: String,
    },
    /// etcd was lost; the view stays as last reported until the next snapshot.
    Disconnected {
        /// What went wrong.
        error: String,
    },
}

/// A connected client and the endpoint it talks to.
pub struct Connection {
    /// The client.
    pub client: Client,
    /// Its endpoint.
    pub endpoint: String,
    /// The etcd cluster's id, from the probe's response header.
    pub cluster_id: u64,
    /// The store's revision at the probe.
    pub revision: i64,
}

/// Connects to the first endpoint that answers, trying them in order from
/// `*start` (wrapping). On success `*start` is that endpoint's index, so the
/// next attempt begins with it.
pub async fn connect_any(
    cfg: &EtcdConfig,
    start: &mut usize,
    probe_key: &str,
) -> Result<Connection, SyncError> {
    let n = cfg.endpoints.len();
    let mut last = String::from("no endpoints configured");
    for i in 0..n {
        let idx = (*start + i) % n;
        let endpoint = &cfg.endpoints[idx];
        match connect_one(cfg, endpoint, probe_key).await {
            Ok((client, cluster_id, revision)) => {
                *start = idx;
                return Ok(Connection {
                    client,
                    endpoint: endpoint.clone(),
                    cluster_id,
                    revision,
                });
            }
            Err(e) => {
                tracing::debug!(%endpoint, error = %e, "etcd endpoint not usable");
                let text = e.to_string();
                last = match tls_check::explain(&text) {
                    Some(cause) => format!("{endpoint}: {cause}: {text}"),
                    None => format!("{endpoint}: {text}"),
                };
            }
        }
    }
    Err(SyncError::Unreachable {
        tried: cfg.endpoints.join(","),
        last,
    })
}

/// Connects to one endpoint and checks it answers a read of `probe_key`;
/// returns the client, the cluster id and the store's revision.
async fn connect_one(
    cfg: &EtcdConfig,
    endpoint: &str,
    probe_key: &str,
) -> Result<(Client, u64, i64), SyncError> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(cfg.connect_timeout)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    if endpoint.starts_with("https://") {
        opts = opts.with_tls(tls_options(&cfg.tls)?);
    }
    let connect = Client::connect([endpoint], Some(opts));
    let mut client = timed(cfg.connect_timeout, "connect", connect).await?;
    // Connecting is lazy; a read proves the endpoint serves requests.
    let probe = client.get(probe_key, Some(GetOptions::new().with_count_only()));
    let answer = timed(cfg.request_timeout, "probe", probe).await?;
    let (cluster_id, revision) = answer
        .header()
        .map_or((0, 0), |h| (h.cluster_id(), h.revision()));
    Ok((client, cluster_id, revision))
}

fn tls_options(files: &TlsFiles) -> Result<TlsOptions, SyncError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| SyncError::TlsFile {
            path: path.clone(),
            source,
        })
    };
    let mut tls = TlsOptions::new();
    let system = PathBuf::from(SYSTEM_CA_BUNDLE);
    let ca = files
        .ca
        .as_ref()
        .or_else(|| system.exists().then_some(&system));
    if let Some(ca) = ca {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
        let pem = read(cert)?;
        tls_check::check_client_cert(cert, &pem, std::time::SystemTime::now())?;
        tls = tls.identity(Identity::from_pem(pem, read(key)?));
    }
    Ok(tls)
}

/// Runs `fut` with a deadline, mapping both failure kinds to [`SyncError`].
pub async fn timed<T, F>(limit: Duration, op: &'static str, fut: F) -> Result<T, SyncError>
where
    F: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(SyncError::Request {
            op,
            source: Box::new(source),
        }),
        Err(_) => Err(SyncError::Timeout(op)),
    }
}

mod backoff;
mod list;
mod outage;
mod tls_check;

pub use backoff::{Backoff, BackoffConfig};
use outage::OutageLog;

mod watch;

pub use list::{list_all, prefix_range_end, ListedKv, Lister, PageSizer, PAGE_TARGET_BYTES};
pub use watch::open_watch;

/// Keeps what was reported, as key → mod revision, and turns a new full list
/// (taken page by page) into the changes that converge the consumer onto it.
#[derive(Debug, Default, Clone)]
pub struct KnownKeys {
    /// Key → (mod revision, the list generation that last saw it).
    revisions: HashMap<String, (i64, u64)>,
    generation: u64,
}

impl KnownKeys {
    /// Changes from the reported state to `listed` (in key order: puts for new
    /// or modified keys, then deletions for keys no longer listed), and
    /// remembers `listed` as the new reported state.
    pub fn converge(&mut self, listed: Vec<ListedKv>) -> Vec<KvChange> {
        self.begin_list();
        let mut changes = self.converge_page(listed);
        changes.extend(self.finish_list());
        changes
    }

    /// A new full list starts: every key is unseen until a page holds it.
    pub fn begin_list(&mut self) {
        self.generation += 1;
    }

    /// One page of the list: puts for its new or modified keys, which are
    /// remembered as reported.
    pub fn converge_page(&mut self, page: Vec<ListedKv>) -> Vec<KvChange> {
        let generation = self.generation;
        let mut changes = Vec::new();
        for kv in page {
            let changed = match self.revisions.get_mut(&kv.key) {
                Some(known) => {
                    let changed = known.0 != kv.mod_revision;
                    *known = (kv.mod_revision, generation);
                    changed
                }
                None => {
                    self.revisions
                        .insert(kv.key.clone(), (kv.mod_revision, generation));
                    true
                }
            };
            if changed {
                changes.push(KvChange {
                    key: kv.key,
                    value: Some(kv.value),
                });
            }
        }
        changes
    }

    /// The list is complete: deletions (in key order) for the keys no page
    /// held, which are forgotten.
    pub fn finish_list(&mut self) -> Vec<KvChange> {
        let generation = self.generation;
        let mut gone: Vec<String> = self
            .revisions
            .iter()
            .filter(|(_, (_, seen))| *seen != generation)
            .map(|(k, _)| k.clone())
            .collect();
        gone.sort_unstable();
        for key in &gone {
            self.revisions.remove(key);
        }
        gone.into_iter()
            .map(|key| KvChange { key, value: None })
            .collect()
    }

    /// Records a watched put.
    pub fn put(&mut self, key: &str, mod_revision: i64) {
        self.revisions
            .insert(key.to_owned(), (mod_revision, self.generation));
    }

    /// Records a watched deletion.
    pub fn delete(&mut self, key: &str) {
        self.revisions.remove(key);
    }

    /// How many keys are known.
    pub fn len(&self) -> usize {
        self.revisions.len()
    }

    /// True when no key is known.
    pub fn is_empty(&self) -> bool {
        self.revisions.is_empty()
    }
}

/// How a sync session ended.
enum SessionEnd {
    /// List again on the same connection.
    Relist(ResyncReason),
    /// Reconnect (after a backoff).
    Reconnect(SyncError),
}

/// The datastore syncer task.
pub struct Syncer {
    cfg: SyncConfig,
    known: KnownKeys,
    tx: mpsc::Sender<SyncEvent>,
    endpoint_index: usize,
    /// The revision the consumer is in sync at (last snapshot or watched
    /// event); `None` before the first snapshot.
    revision: Option<i64>,
    /// The cluster id of the store that revision belongs to.
    cluster_id: Option<u64>,
}

impl Syncer {
    /// A syncer sending to `tx`; start it with [`Syncer::run`].
    pub fn new(cfg: SyncConfig, tx: mpsc::Sender<SyncEvent>) -> Self {
        Syncer {
            cfg,
            known: KnownKeys::default(),
            tx,
            endpoint_index: 0,
            revision: None,
            cluster_id: None,
        }
    }

    /// Starts a syncer on its own task; events arrive on the returned receiver.
    pub fn spawn(cfg: SyncConfig) -> (mpsc::Receiver<SyncEvent>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(64);
        let handle = tokio::spawn(Syncer::new(cfg, tx).run());
        (rx, handle)
    }

    fn dir(&self) -> String {
        format!("{}/", self.cfg.prefix)
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
                Err(SyncError::Closed) => return,
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
            if self.revision.is_some() {
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
    ) -> Result<(), SyncError> {
        let probe = format!("{}/Ready", self.cfg.prefix);
        let mut conn = connect_any(&self.cfg.etcd, &mut self.endpoint_index, &probe).await?;
        tracing::info!(endpoint = %conn.endpoint, "connected to etcd");
        outage.ended();
        // After an outage, first try to watch on from where we were.
        let mut resume = self
            .revision
            .filter(|_| reason == ResyncReason::Reconnect)
            .filter(|rev| self.same_store(&conn, *rev));
        loop {
            let (revision, resumed) = match resume.take() {
                Some(revision) => (revision, true),
                None => (self.snapshot(&mut conn, reason).await?, false),
            };
            backoff.reset();
            match self.watch(&mut conn, revision, resumed).await {
                SessionEnd::Relist(r) => reason = r,
                SessionEnd::Reconnect(e) => return Err(e),
            }
        }
    }

    /// Lists everything and sends the converging changes: each page's puts
    /// as a [`SyncEvent::SnapshotPart`] as it arrives, then the deletions in
    /// the closing [`SyncEvent::Snapshot`].
    async fn snapshot(
        &mut self,
        conn: &mut Connection,
        reason: ResyncReason,
    ) -> Result<i64, SyncError> {
        let started = Instant::now();
        let mut lister = Lister::new(
            &self.dir(),
            self.cfg.page_size,
            self.cfg.etcd.request_timeout,
        );
        // A list cut short leaves nothing to resume from: list again.
        self.revision = None;
        self.known.begin_list();
        let (mut keys, mut changed) = (0, 0);
        while let Some(page) = lister.next_page(&conn.client).await? {
            keys += page.len();
            let changes = self.known.converge_page(page);
            changed += changes.len();
            if !changes.is_empty() {
                self.send_part(changes).await?;
            }
        }
        let changes = self.known.finish_list();
        let revision = lister.revision();
        self.revision = Some(revision);
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
        self.tx.send(event).await.map_err(|_| SyncError::Closed)?;
        Ok(revision)
    }

    /// Sends one page of a list once at most one other event waits in the
    /// channel: the consumer holds a page or two, never the whole store.
    async fn send_part(&self, changes: Vec<KvChange>) -> Result<(), SyncError> {
        let room = self.tx.max_capacity().saturating_sub(1).max(1);
        let mut permits = self
            .tx
            .reserve_many(room)
            .await
            .map_err(|_| SyncError::Closed)?;
        if let Some(permit) = permits.next() {
            permit.send(SyncEvent::SnapshotPart { changes });
        }
        Ok(())
    }

    /// Watches from `revision + 1` until the watch is lost. `resumed`: the
    /// watch continues after an outage (the consumer is told once it is up).
    async fn watch(&mut self, conn: &mut Connection, revision: i64, resumed: bool) -> SessionEnd {
        let created = timed(
            self.cfg.etcd.request_timeout,
            "watch",
            open_watch(&conn.client, &self.dir(), revision + 1),
        )
        .await;
        let (_watcher, mut stream) = match created {
            Ok(pair) => pair,
            Err(e) => return SessionEnd::Reconnect(e),
        };
        if resumed {
            tracing::info!(revision, endpoint = %conn.endpoint, "etcd watch resumed");
            let event = SyncEvent::Resumed {
                revision,
                endpoint: conn.endpoint.clone(),
            };
            if self.tx.send(event).await.is_err() {
                return SessionEnd::Reconnect(SyncError::Closed);
            }
        }
        // `_watcher` must stay alive: dropping it closes the request side.
        self.pump(&mut stream).await
    }

    /// Forwards watch responses until the stream ends or fails.
    async fn pump(&mut self, stream: &mut WatchStream) -> SessionEnd {
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    return SessionEnd::Reconnect(SyncError::WatchLost("stream closed".into()))
                }
                Err(source) if list::is_out_of_range(&source) => {
                    return watch::too_large(&source);
                }
                Err(source) => {
                    return SessionEnd::Reconnect(SyncError::Request {
                        op: "watch",
                        source: Box::new(source),
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
            let changes = self.record(resp.events());
            if changes.is_empty() {
                continue;
            }
            if self
                .tx
                .send(SyncEvent::Updates { changes, revision })
                .await
                .is_err()
            {
                return SessionEnd::Reconnect(SyncError::Closed);
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

    /// Records that the consumer has seen everything up to `revision`.
    /// (Not the response header's revision: a catching-up watch sends the
    /// store's current revision with a batch that may not reach it.)
    fn advance(&mut self, revision: i64) {
        self.revision = Some(self.revision.map_or(revision, |r| r.max(revision)));
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
                    self.advance(kv.mod_revision());
                    changes.push(KvChange {
                        key: key.to_owned(),
                        value: Some(String::from_utf8_lossy(kv.value()).into_owned()),
                    });
                }
                EventType::Delete => {
                    self.known.delete(key);
                    self.advance(kv.mod_revision());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(pairs: &[(&str, &str, i64)]) -> Vec<ListedKv> {
        pairs
            .iter()
            .map(|(k, v, r)| ListedKv {
                key: (*k).into(),
                value: (*v).into(),
                mod_revision: *r,
            })
            .collect()
    }

    #[test]
    fn converge_reports_only_differences() {
        let mut known = KnownKeys::default();
        let first = known.converge(listed(&[("/a", "1", 5), ("/b", "2", 6)]));
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|c| c.value.is_some()));

        // /a unchanged, /b modified, /c new, and a key we learnt by watch
        // that was deleted while we were away.
        known.put("/d", 9);
        let second = known.converge(listed(&[("/a", "1", 5), ("/b", "3", 10), ("/c", "x", 11)]));
        assert_eq!(
            second,
            vec![
                KvChange {
                    key: "/b".into(),
                    value: Some("3".into())
                },
                KvChange {
                    key: "/c".into(),
                    value: Some("x".into())
                },
                KvChange {
                    key: "/d".into(),
                    value: None
                },
            ]
        );
        assert_eq!(known.len(), 3);
        assert!(known
            .converge(listed(&[]))
            .iter()
            .all(|c| c.value.is_none()));
        assert!(known.is_empty());
    }

    #[test]
    fn range_end_covers_exactly_the_prefix() {
        assert_eq!(prefix_range_end("/calico/v1/"), b"/calico/v10".to_vec());
        assert_eq!(prefix_range_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_range_end(""), vec![0]);
    }
}
