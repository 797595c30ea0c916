//! `margay run`: the event loop joining datastore sync, calculation and dataplane.
//!
//! One task owns the calculation and the dataplane and turns a loop over:
//! datastore events, dataplane (netlink) events, control messages (signals),
//! the firewall refresh timer, the apply retry timer and the watchdog timer.
//!
//! - Updates go into the calculation as they arrive. After each wake-up the
//!   loop drains whatever else is already queued (bounded), then applies
//!   once: a lone update is applied at once, a burst that arrived during an
//!   apply is coalesced into the next one. Applies are awaited in the loop,
//!   so there is never more than one in flight.
//! - Nothing is applied before the first complete snapshot is in and
//!   `/Ready` is `true`; while etcd is away nothing is applied at all, so the
//!   dataplane stays exactly as it was.
//! - Route/link events from netlink are handed to the dataplane at once;
//!   the firewall (and, as a safety net, routes) are checked and repaired
//!   every `refresh_interval`. The firewall read-back, when one is needed,
//!   runs off the loop; its end is one more wake-up, where the loop writes
//!   the repair (the loop stays the only writer).
//! - Datastore settings (`/config/*`, this host's `/host/<h>/config/*`)
//!   and, on SIGHUP, the config file are re-resolved and applied live.
//! - SIGTERM/SIGINT end the loop with success and leave the dataplane as it is.
//!
//! The dataplane is behind the small [`Driver`] trait so the loop's batching,
//! gating and retry rules are unit-tested with a fake.
//!
//! This module holds the loop's state ([`Agent`]) and its inputs and
//! outputs; the behaviour is in the submodules: [`event_loop`] (the loop
//! itself), `ingest` (datastore events into the calculation), `live_settings`
//! (settings changed while running), `apply` (when and how to apply),
//! `repair` (netlink events, drift, refresh), [`driver`] and
//! [`endpoint_status`] (kernel write failures into endpoint statuses).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use margay_config::Settings;
use margay_dataplane::firewall::lower::FirewallSettings;
use margay_dataplane::DataplaneEvent;
use margay_datastore::backoff::Backoff;
use margay_datastore::settings::DatastoreSettings;
use margay_datastore::status::{EndpointStatuses, ReportConfig};
use margay_datastore::sync::SyncEvent;
use margay_policy::calc::CalcEngine;
use margay_policy::desired::Changes;
use tokio::sync::{mpsc, watch};

use crate::logging::{LogHandle, LogLimiter};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::settings::SettingsLoader;

mod apply;
mod bgp;
pub mod driver;
pub mod endpoint_status;
pub mod event_loop;
mod ingest;
mod live_settings;
mod repair;
#[cfg(test)]
mod tests;

pub use driver::Driver;
pub use endpoint_status::endpoint_statuses;

/// Control messages (from signals in the binary, from tests directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop; leave the dataplane in place.
    Stop,
    /// Re-read the config file.
    Reload,
}

/// The inputs of the loop.
pub struct LoopInputs {
    /// Datastore events.
    pub sync: mpsc::Receiver<SyncEvent>,
    /// Netlink events (absent for dataplanes without a watcher).
    pub dataplane_events: Option<mpsc::Receiver<DataplaneEvent>>,
    /// Stop / reload.
    pub control: mpsc::Receiver<Control>,
}

/// Where the loop reports to.
pub struct Outputs {
    /// Metrics (also behind `/readyz`).
    pub metrics: Metrics,
    /// systemd notifications.
    pub notifier: Notifier,
    /// Live log level changes (`None` in tests).
    pub log: Option<LogHandle>,
    /// Status reporter configuration.
    pub report_config: watch::Sender<ReportConfig>,
    /// Endpoint statuses for the reporter.
    pub endpoint_status: watch::Sender<EndpointStatuses>,
    /// This host's BGP configuration for the BIRD task (`None` in tests
    /// that run without one).
    pub bgp: Option<crate::bird_sync::BgpSender>,
}

/// The agent: calculation + dataplane + the rules that join them.
pub struct Agent<D: Driver> {
    settings: Settings,
    loader: SettingsLoader,
    calc: CalcEngine,
    data_prefix: String,
    datastore: DatastoreSettings,
    firewall: FirewallSettings,
    dp: D,
    out: Outputs,
    limiter: LogLimiter,
    conflicts: crate::conflicts::ConflictLog,
    /// A first complete snapshot has arrived.
    in_sync: bool,
    /// A list is under way (pages arrived, its closing snapshot not yet):
    /// the calculation holds a half-listed view that nothing may program.
    listing: bool,
    /// The watch is up.
    connected: bool,
    /// A first apply succeeded.
    applied_once: bool,
    /// Changes taken from the calculation and not yet applied.
    pending: Changes,
    /// The datastore revision of the newest update ingested (from the last
    /// snapshot or watch response): what the next apply covers.
    ingested_revision: i64,
    /// Updates received since the last successful apply.
    pending_updates: u64,
    /// When the oldest of those arrived.
    oldest_pending: Option<Instant>,
    /// Apply retry: when, and the backoff.
    retry_at: Option<tokio::time::Instant>,
    retry_backoff: Backoff,
    /// Keys currently invalid: key → (metric kind, reason).
    invalid: HashMap<String, (&'static str, String)>,
    /// Settings warnings already logged.
    warned: BTreeSet<String>,
    waiting_logged: bool,
    last_write_failures: usize,
    /// The BGP configuration may have changed since it was last published.
    bgp_dirty: bool,
    /// "No BGP configuration can be rendered" was logged.
    bgp_unavailable_logged: bool,
}
