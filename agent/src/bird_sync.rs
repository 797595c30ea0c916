//! Keeping BIRD's configuration in step with the datastore
//! (`InterHostRoutes = bgp`).
//!
//! The event loop publishes the [`BgpConfig`] this host needs on a watch
//! channel whenever something it depends on changed; this task renders it,
//! and hands the text to the dataplane's BIRD applier (atomic write, parse
//! check, reload through the control socket, old file kept when refused).
//! It runs beside the loop so a slow BIRD never holds up the dataplane.
//!
//! - **Coalescing**: after a change the task waits until nothing new came
//!   for [`QUIET`], but never longer than [`MAX_DELAY`] from the first
//!   change, and renders only the latest configuration. A burst of endpoint
//!   updates therefore costs one reload per [`MAX_DELAY`] at most, and an
//!   unchanged text costs none (the applier compares with the file).
//! - **BIRD not running**: the file is written anyway; the reload is retried
//!   every [`RETRY_EVERY`] until the socket answers.
//! - **Refused**: logged (once per distinct message) and counted; the next
//!   change tries again.
//! - **Sessions**: every [`SESSIONS_EVERY`] the task reads BIRD's BGP
//!   sessions into `margay_bgp_sessions` and `margay_bird_reachable`.
//!
//! `None` on the channel means "not in bgp mode": the task leaves the file
//! and BIRD alone and stops polling.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use margay_dataplane::bird::apply::{ApplyError, ApplyOutcome, BirdConfigApplier};
use margay_dataplane::bird::control::BirdControl;
use margay_dataplane::bird::render::render;
use margay_dataplane::bird::reply::BgpSession;
use margay_policy::bgp::{BgpConfig, PeerKind};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Quiet time that ends a burst of changes.
pub const QUIET: Duration = Duration::from_millis(200);
/// Longest a change waits for its burst to end.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// How often a reload owed to a BIRD that was not running is retried.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How often the sessions are read for the metrics.
pub const SESSIONS_EVERY: Duration = Duration::from_secs(10);

/// The BIRD binary used for parse checks (found through `PATH`).
pub const BIRD_BINARY: &str = "bird";

/// Where BIRD's file and socket are.
#[derive(Debug, Clone)]
pub struct BirdPaths {
    /// The configuration file margay owns (`--bird-config`).
    pub config: PathBuf,
    /// BIRD's control socket (`--bird-socket`).
    pub socket: PathBuf,
}

/// The sender side the event loop publishes to.
pub type BgpSender = watch::Sender<Option<BgpConfig>>;

/// Starts the task; returns the sender the event loop publishes to.
pub fn spawn(paths: BirdPaths, metrics: Metrics) -> BgpSender {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(BirdSync::new(paths, metrics).run(rx));
    tx
}

/// Waits until `rx` has been quiet for `quiet`, or `max` has passed since
/// `first`, whichever comes first. False when the sender is gone.
pub async fn settle(
    rx: &mut watch::Receiver<Option<BgpConfig>>,
    first: Instant,
    quiet: Duration,
    max: Duration,
) -> bool {
    let hard_deadline = first + max;
    loop {
        let deadline = (Instant::now() + quiet).min(hard_deadline);
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return false,
            Err(_) => return true,
        }
    }
}

struct BirdSync {
    paths: BirdPaths,
    applier: BirdConfigApplier,
    metrics: Metrics,
    /// The last refusal logged, so a repeated one is not logged again.
    last_refusal: Option<String>,
    /// In bgp mode (a configuration was published).
    active: bool,
    bird_was_down: bool,
}

impl BirdSync {
    fn new(paths: BirdPaths, metrics: Metrics) -> Self {
        BirdSync {
            applier: BirdConfigApplier::new(
                paths.config.clone(),
                paths.socket.clone(),
                PathBuf::from(BIRD_BINARY),
            ),
            paths,
            metrics,
            last_refusal: None,
            active: false,
            bird_was_down: false,
        }
    }

    async fn run(mut self, mut rx: watch::Receiver<Option<BgpConfig>>) {
        let mut retry = tokio::time::interval(RETRY_EVERY);
        let mut sessions = tokio::time::interval(SESSIONS_EVERY);
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() || !settle(&mut rx, Instant::now(), QUIET, MAX_DELAY).await {
                        return;
                    }
                    let desired = rx.borrow_and_update().clone();
                    self.publish(desired).await;
                }
                // A written file waits for a BIRD that was not running.
                _ = retry.tick(), if self.active && self.applier.reload_pending() => {
                    self.retry_reload().await
                }
                _ = sessions.tick(), if self.active => self.read_sessions().await,
            }
        }
    }

    async fn publish(&mut self, desired: Option<BgpConfig>) {
        let Some(config) = desired else {
            if self.active {
                tracing::info!(
                    "InterHostRoutes is no longer bgp; BIRD's configuration is left as it is"
                );
            }
            self.active = false;
            return;
        };
        self.active = true;
        let text = render(&config);
        let outcome = self.applier.apply(&text).await;
        self.record(outcome);
    }

    async fn retry_reload(&mut self) {
        let outcome = self.applier.retry_pending().await;
        self.record(outcome);
    }

    fn record(&mut self, outcome: Result<ApplyOutcome, ApplyError>) {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                // A file written with its reload still owed is retried.
                self.refused_once("error", &e.to_string());
                return;
            }
        };
        match outcome {
            ApplyOutcome::Unchanged => {}
            ApplyOutcome::Reloaded => {
                self.metrics.bird_reloaded();
                self.metrics.set_bird_reachable(true);
                self.last_refusal = None;
                self.bird_was_down = false;
                tracing::info!(file = %self.paths.config.display(), "BIRD reconfigured");
            }
            ApplyOutcome::WrittenPendingReload => {
                self.metrics.set_bird_reachable(false);
                if !self.bird_was_down {
                    self.bird_was_down = true;
                    tracing::warn!(
                        file = %self.paths.config.display(),
                        socket = %self.paths.socket.display(),
                        "BIRD configuration written; BIRD is not running yet, it is reloaded once its socket answers"
                    );
                }
            }
            ApplyOutcome::Rejected { stage, message } => {
                self.metrics.bird_rejected(stage.as_str());
                self.refused_once(stage.as_str(), &message);
            }
        }
    }

    /// Logs a refusal or failure once while it repeats.
    fn refused_once(&mut self, stage: &str, message: &str) {
        let text = crate::logging::sanitize(message).into_owned();
        if self.last_refusal.as_deref() == Some(text.as_str()) {
            return;
        }
        tracing::error!(
            stage,
            bird = %text,
            file = %self.paths.config.display(),
            "BIRD refused the new configuration; the previous one stays in force"
        );
        self.last_refusal = Some(text);
    }

    async fn read_sessions(&mut self) {
        let sessions = match BirdControl::connect(&self.paths.socket).await {
            Ok(mut control) => control.bgp_sessions().await,
            Err(e) => Err(e),
        };
        match sessions {
            Ok(list) => {
                self.metrics.set_bird_reachable(true);
                let mut counts: BTreeMap<(&str, String), u64> = BTreeMap::new();
                for s in &list {
                    let Some(kind) = s.kind else { continue };
                    *counts
                        .entry((peer_type_label(kind), session_state_label(s)))
                        .or_default() += 1;
                }
                self.metrics
                    .set_bgp_sessions(counts.iter().map(|((t, st), n)| (*t, st.as_str(), *n)));
            }
            Err(e) => {
                self.metrics.set_bird_reachable(false);
                self.metrics.set_bgp_sessions(std::iter::empty());
                tracing::debug!(error = %e, "cannot read BGP sessions from BIRD");
            }
        }
    }
}

/// The `state` label of a session: BIRD's BGP state in lower case
/// (`established`, `active`, `connect`, ...), `down` when it has none.
fn session_state_label(session: &BgpSession) -> String {
    if session.bgp_state.is_empty() {
        "down".to_string()
    } else {
        session.bgp_state.to_ascii_lowercase()
    }
}

/// The `peer_type` label of a session kind.
fn peer_type_label(kind: PeerKind) -> &'static str {
    match kind {
        PeerKind::Mesh => "mesh",
        PeerKind::Global => "global",
        PeerKind::Node => "node",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(n: u8) -> Option<BgpConfig> {
        use margay_policy::bgp::{AsNumber, BgpConfig};
        Some(BgpConfig {
            router_id: [192, 0, 2, n].into(),
            local_as: AsNumber::new(64511).expect("non-zero"),
            source_v4: [192, 0, 2, n].into(),
            source_v6: None,
            peers: Vec::new(),
            pools_v4: Vec::new(),
            pools_v6: Vec::new(),
            local_v4: Vec::new(),
            local_v6: Vec::new(),
            workload_interface_prefixes: vec!["cali".into()],
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_change_waits_only_the_quiet_time() {
        let (tx, mut rx) = watch::channel(None);
        tx.send_replace(config(1));
        let start = Instant::now();
        assert!(settle(&mut rx, start, QUIET, MAX_DELAY).await);
        assert_eq!(start.elapsed(), QUIET);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_of_changes_is_cut_at_the_max_delay() {
        let (tx, mut rx) = watch::channel(None);
        let writer = tokio::spawn(async move {
            for n in 0..100u8 {
                tx.send_replace(config(n));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let start = Instant::now();
        assert!(settle(&mut rx, start, QUIET, MAX_DELAY).await);
        assert_eq!(start.elapsed(), MAX_DELAY);
        writer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_ends_one_quiet_time_after_its_last_change() {
        let (tx, mut rx) = watch::channel(None);
        let writer = tokio::spawn(async move {
            for n in 0..5u8 {
                tx.send_replace(config(n));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Keep the sender alive past the burst.
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let start = Instant::now();
        assert!(settle(&mut rx, start, QUIET, MAX_DELAY).await);
        // Last change at 400 ms, quiet until 600 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(600));
        assert_eq!(
            rx.borrow().as_ref().map(|c| c.router_id.octets()[3]),
            Some(4)
        );
        writer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn settling_ends_when_the_sender_is_gone() {
        let (tx, mut rx) = watch::channel(None);
        drop(tx);
        assert!(!settle(&mut rx, Instant::now(), QUIET, MAX_DELAY).await);
    }
}
