//! Firewall read-back off the event loop, and only when someone else may
//! have changed the ruleset.
//!
//! A read-back dumps every object we own; beside a big chain that costs
//! seconds of CPU. Two things keep it from stalling the host:
//!
//! * **Generation check.** nf_tables bumps a per-namespace generation on
//!   every committed transaction. The manager remembers the generation at
//!   which its observed state is known to match the kernel (after a
//!   read-back whose generation did not move while it ran, and after each of
//!   its own writes that moved it by exactly one). A refresh first asks the
//!   generation (one small netlink round trip): unchanged, nothing was
//!   touched and the dump is skipped.
//! * **A second backend on another thread.** When a read-back is needed it
//!   runs on its own thread with an observer backend (its own socket), which
//!   only reads. The writer stays with the loop, so there is still one
//!   writer; the result is adopted only if no write happened since the
//!   read-back started ([`Readback::epoch`]), else it is dropped as stale
//!   and the next refresh reads again.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::model::ObservedRuleset;
use super::{FirewallBackend, FirewallError};

/// What one read-back found.
pub struct Readback {
    /// The manager's write epoch when the read-back started.
    pub(crate) epoch: u64,
    /// The objects, and the generation they are known to be consistent with.
    pub(crate) result: Result<(ObservedRuleset, Option<u64>), FirewallError>,
    /// The observer backend, handed back (lost if its thread died).
    pub(crate) backend: Option<Box<dyn FirewallBackend>>,
    /// How long the read-back took.
    pub took: Duration,
}

impl std::fmt::Debug for Readback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readback")
            .field("epoch", &self.epoch)
            .field("ok", &self.result.is_ok())
            .field("took", &self.took)
            .finish()
    }
}

/// Counts of refreshes by outcome (for metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadbackStats {
    /// Refreshes that skipped the dump: the generation had not moved.
    pub skipped: u64,
    /// Read-backs that dumped our objects.
    pub performed: u64,
    /// Read-backs dropped because a write happened while they ran.
    pub stale: u64,
}

/// How a refresh began.
#[derive(Debug)]
pub enum ReadbackStart {
    /// Nothing changed since our last read or write: no dump.
    Skipped,
    /// A read-back already runs.
    Running,
    /// A read-back started on its own thread; its result arrives through
    /// [`super::FirewallManager::readback_finished`].
    Spawned,
    /// The backend has no observer: the read-back ran inline (and repaired).
    Inline(super::DriftReport),
}

/// Reads `backend` back with the generation it is consistent with: the
/// generation before the dump, if it had not moved by the end of it.
pub fn observe_with_generation(
    backend: &mut dyn FirewallBackend,
) -> Result<(ObservedRuleset, Option<u64>), FirewallError> {
    let before = backend.generation().ok().flatten();
    let observed = backend.observe()?;
    let after = backend.generation().ok().flatten();
    Ok((observed, before.filter(|b| Some(*b) == after)))
}

/// A read-back running on its own thread.
pub struct PendingReadback {
    rx: oneshot::Receiver<Readback>,
    epoch: u64,
    started: Instant,
}

impl PendingReadback {
    /// Starts reading `backend` back on a new thread.
    pub fn spawn(mut backend: Box<dyn FirewallBackend>, epoch: u64) -> PendingReadback {
        let (tx, rx) = oneshot::channel();
        let started = Instant::now();
        let spawned = std::thread::Builder::new()
            .name("margay-readback".into())
            .spawn(move || {
                let result = observe_with_generation(backend.as_mut());
                let _ = tx.send(Readback {
                    epoch,
                    result,
                    backend: Some(backend),
                    took: started.elapsed(),
                });
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the firewall read-back thread");
        }
        PendingReadback { rx, epoch, started }
    }

    /// Waits for the result (cancel-safe: dropping the future loses nothing).
    pub async fn done(&mut self) -> Readback {
        match (&mut self.rx).await {
            Ok(r) => r,
            Err(_) => Readback {
                epoch: self.epoch,
                result: Err(FirewallError::Netlink {
                    op: "read-back".into(),
                    detail: "the read-back thread ended without a result".into(),
                }),
                backend: None,
                took: self.started.elapsed(),
            },
        }
    }
}
