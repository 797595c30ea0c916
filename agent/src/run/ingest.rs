//! Datastore events into the calculation: snapshots, pages and updates,
//! the connection state, event counts and invalid keys.

use margay_datastore::sync::{KvChange, SyncEvent};
use std::collections::BTreeMap;
use std::time::Instant;

use super::{Agent, Driver};
use crate::metrics::key_kind;

impl<D: Driver> Agent<D> {
    /// Handles one datastore event.
    pub fn on_sync(&mut self, event: SyncEvent) {
        match event {
            SyncEvent::SnapshotPart { changes } => {
                self.listing = true;
                self.ingest(changes);
            }
            SyncEvent::Snapshot {
                changes,
                reason,
                keys,
                revision,
                ..
            } => {
                self.out.metrics.datastore_resync(reason.as_str());
                let reconnected = self.mark_connected();
                if !self.in_sync {
                    tracing::info!(keys, revision, "first datastore snapshot received");
                }
                self.in_sync = true;
                self.listing = false;
                self.ingested_revision = revision;
                self.ingest(changes);
                if reconnected {
                    self.out.notifier.status(&self.summary().to_string());
                }
            }
            SyncEvent::Resumed { .. } => {
                if self.mark_connected() {
                    self.out.notifier.status(&self.summary().to_string());
                }
            }
            SyncEvent::Updates { changes, revision } => {
                self.ingested_revision = self.ingested_revision.max(revision);
                self.ingest(changes);
            }
            SyncEvent::Disconnected { .. } => {
                self.out.metrics.set_datastore_connected(false);
                if self.connected {
                    self.connected = false;
                    // `systemctl status` must not keep saying "in sync".
                    self.out.notifier.status(&self.summary().to_string());
                }
            }
        }
    }

    /// Records a working datastore connection; true when it was down.
    pub(super) fn mark_connected(&mut self) -> bool {
        self.out.metrics.set_datastore_connected(true);
        let reconnected = !self.connected;
        self.connected = true;
        reconnected
    }

    /// Feeds changes to the calculation and collects what changed.
    fn ingest(&mut self, changes: Vec<KvChange>) {
        if changes.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut settings_touched = false;
        for change in &changes {
            self.count_event(&change.key);
            settings_touched |= self
                .datastore
                .observe(&change.key, change.value.as_deref())
                .is_some();
            let result =
                self.calc
                    .apply_raw(&self.data_prefix, &change.key, change.value.as_deref());
            self.track_validity(&change.key, change.value.is_some(), result);
        }
        self.pending_updates += changes.len() as u64;
        self.oldest_pending.get_or_insert(started);
        if settings_touched {
            self.refresh_datastore_settings();
        }
        self.collect_calc_changes();
        self.conflicts
            .observe(&self.calc, &self.out.metrics, &self.limiter);
        self.out.metrics.observe_calc(started.elapsed());
        self.out.metrics.set_pending_updates(self.pending_updates);
    }

    fn count_event(&self, key: &str) {
        let kind = match margay_policy::update::parse_key(&self.data_prefix, key) {
            Ok(Some(resource)) => key_kind(&resource),
            Ok(None) => return,
            Err(_) => self.malformed_key_kind(key),
        };
        self.out.metrics.datastore_event(kind);
    }

    /// Logs a key once when it becomes invalid (or its reason changes),
    /// counts every rejection, and keeps the invalid-objects gauges current.
    fn track_validity(
        &mut self,
        key: &str,
        present: bool,
        result: Result<(), margay_policy::update::InvalidUpdate>,
    ) {
        match result {
            Ok(()) => {
                if self.invalid.remove(key).is_some() {
                    if present {
                        tracing::info!(key = %crate::logging::sanitize(key), "datastore key is valid again");
                    }
                    self.update_invalid_gauges();
                }
            }
            Err(e) => {
                let kind = match e.resource.as_ref() {
                    Some(resource) => key_kind(resource),
                    None => self.malformed_key_kind(key),
                };
                self.out.metrics.invalid_update(kind);
                let known = self.invalid.get(key).map(|(_, r)| r.as_str());
                if known != Some(e.reason.as_str()) {
                    self.limiter.warn_invalid_key(key, &e.reason);
                    self.invalid.insert(key.to_owned(), (kind, e.reason));
                    self.update_invalid_gauges();
                }
            }
        }
    }

    /// The metric kind of a key too malformed to name its object: `bgp`
    /// under the BGP tree (an operator looks there first), else `unknown`.
    fn malformed_key_kind(&self, key: &str) -> &'static str {
        let in_bgp_tree =
            margay_policy::update::bgp_prefix(&self.data_prefix).is_some_and(|tree| {
                key.strip_prefix(tree.as_str())
                    .is_some_and(|r| r.starts_with('/'))
            });
        if in_bgp_tree {
            "bgp"
        } else {
            "unknown"
        }
    }

    fn update_invalid_gauges(&self) {
        let mut counts: BTreeMap<&'static str, u64> =
            crate::metrics::KEY_KINDS.iter().map(|k| (*k, 0)).collect();
        for (kind, _) in self.invalid.values() {
            *counts.entry(kind).or_default() += 1;
        }
        for (kind, n) in counts {
            self.out.metrics.set_invalid_objects(kind, n);
        }
    }
}
