//! Logging of etcd outages that does not flood the journal while etcd stays
//! away.

use std::time::{Duration, Instant};

use crate::error::EtcdError;

/// How often a continuing etcd outage is logged again at warn level.
const OUTAGE_REMINDER: Duration = Duration::from_secs(60);

/// Logs an etcd outage without flooding the journal: the first failure at
/// warn, later attempts at debug, a warn reminder every
/// [`OUTAGE_REMINDER`], and one info line when it ends.
#[derive(Debug, Default)]
pub(super) struct OutageLog {
    /// Since when, and how many failed attempts, while etcd is away.
    current: Option<(Instant, u32)>,
    last_warning: Option<Instant>,
}

impl OutageLog {
    pub(super) fn failed(&mut self, error: &EtcdError) {
        let now = Instant::now();
        let (since, attempts) = self.current.get_or_insert((now, 0));
        *attempts += 1;
        let (since, attempts) = (*since, *attempts);
        let remind = self
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= OUTAGE_REMINDER);
        if attempts == 1 {
            tracing::warn!(error = %error, "etcd unavailable, keeping the dataplane as it is");
        } else if remind {
            tracing::warn!(
                error = %error,
                attempts,
                down_secs = now.duration_since(since).as_secs(),
                "etcd still unavailable, keeping the dataplane as it is"
            );
        } else {
            tracing::debug!(error = %error, attempts, "etcd still unavailable");
            return;
        }
        self.last_warning = Some(now);
    }

    pub(super) fn ended(&mut self) {
        if let Some((since, attempts)) = self.current.take() {
            tracing::info!(
                attempts,
                down_secs = since.elapsed().as_secs(),
                "etcd outage over"
            );
        }
        self.last_warning = None;
    }
}
