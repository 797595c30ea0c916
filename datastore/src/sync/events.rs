//! What the syncer is configured with and what it tells its consumer.

use super::BackoffConfig;
use crate::connect::EtcdConfig;

/// Everything a [`Syncer`](super::Syncer) needs.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Connection settings.
    pub etcd: EtcdConfig,
    /// The data prefix, e.g. `/calico/v1`; keys under `<prefix>/` are synced.
    /// Its `<prefix>/Ready` key is the probe read on connecting.
    pub prefix: String,
    /// More trees synced with the main one, e.g. `/calico/bgp/v1`: listed at
    /// the main list's revision and watched on the same stream. A tree that
    /// overlaps the main one or an earlier extra one is ignored.
    pub extra_prefixes: Vec<String>,
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
        /// The newest revision among them (their events' `mod_revision`).
        revision: i64,
    },
    /// Connected again after [`SyncEvent::Disconnected`], watching on from
    /// `revision` (what the consumer already has): no list was needed. If
    /// that history was compacted meanwhile, a [`ResyncReason::Compacted`]
    /// snapshot follows.
    Resumed {
        /// The last revision reported before the outage (with several trees,
        /// the oldest of theirs: each tree resumes after its own).
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
