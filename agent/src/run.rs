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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use margay_config::{DataplaneKind, Resolved, Setting, Settings};
use margay_dataplane::firewall::lower::{EndpointToHostAction, FirewallSettings};
use margay_dataplane::firewall::manager::DriftReport;
use margay_dataplane::firewall::BackendKind;
use margay_dataplane::{
    ApplyReport, Dataplane, DataplaneConfig, DataplaneError, DataplaneEvent, DataplaneStats,
    Readback,
};
use margay_datastore::backoff::{Backoff, BackoffConfig};
use margay_datastore::settings::DatastoreSettings;
use margay_datastore::status::{EndpointName, EndpointStatus, EndpointStatuses, ReportConfig};
use margay_datastore::sync::{KvChange, SyncConfig, SyncEvent, Syncer};
use margay_policy::calc::CalcEngine;
use margay_policy::desired::{Changes, DesiredState, LocalEndpoint, WorkloadEndpointKey};
use tokio::sync::{mpsc, watch};

use crate::logging::{LogHandle, LogLimiter};
use crate::metrics::{key_kind, Metrics, ObjectCounts};
use crate::notify::{Notifier, StatusSummary};
use crate::settings::{merge_reload, SettingsLoader};

/// Most queued events folded into one apply, so a flood cannot postpone
/// applying (and metrics, and signals) indefinitely.
const MAX_DRAIN: usize = 256;

/// Retry timing after a failed apply.
const APPLY_RETRY: BackoffConfig = BackoffConfig {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

/// Control messages (from signals in the binary, from tests directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop; leave the dataplane in place.
    Stop,
    /// Re-read the config file.
    Reload,
}

/// What the loop needs from a dataplane. Implemented by
/// [`margay_dataplane::Dataplane`]; tests use a fake.
// Only used with static dispatch in this crate and its tests, where the
// futures' auto traits are known; no `Send` bound needed.
#[allow(async_fn_in_trait)]
pub trait Driver {
    /// The firewall backend's name, for metrics.
    fn backend_name(&self) -> &'static str;
    /// Makes the kernel match `desired` for what `changes` names.
    async fn apply(
        &mut self,
        desired: &DesiredState,
        changes: &Changes,
        settings: &FirewallSettings,
    ) -> Result<ApplyReport, DataplaneError>;
    /// Re-reads the firewall and repairs drift (or only starts a
    /// background read-back, finished by [`Driver::finish_readback`]).
    async fn repair_firewall(
        &mut self,
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<DriftReport, DataplaneError>;
    /// Resolves when a background firewall read-back ends (cancel-safe).
    async fn readback_done(&mut self) -> Readback {
        std::future::pending().await
    }
    /// Diffs a finished read-back and repairs drift.
    async fn finish_readback(
        &mut self,
        readback: Readback,
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<DriftReport, DataplaneError> {
        let _ = (readback, desired, settings);
        Ok(DriftReport::default())
    }
    /// Re-reads routes, neighbours and sysctls and repairs them; returns writes.
    async fn repair_routes(&mut self, desired: &DesiredState) -> Result<usize, DataplaneError>;
    /// Reacts to netlink events.
    async fn handle_events(
        &mut self,
        events: Vec<DataplaneEvent>,
    ) -> Result<ApplyReport, DataplaneError>;
    /// Sizes of what is programmed.
    fn stats(&self) -> DataplaneStats;
    /// Interfaces carrying the host's default route or its route to etcd.
    fn uplinks(&self) -> BTreeSet<String> {
        BTreeSet::new()
    }

    /// Firewall checks so far: skipped, performed, stale.
    fn readback_totals(&self) -> [u64; 3] {
        [0; 3]
    }
}

impl Driver for Dataplane {
    fn backend_name(&self) -> &'static str {
        Dataplane::backend_name(self)
    }

    async fn apply(
        &mut self,
        desired: &DesiredState,
        changes: &Changes,
        settings: &FirewallSettings,
    ) -> Result<ApplyReport, DataplaneError> {
        Dataplane::apply(self, desired, changes, settings).await
    }

    async fn repair_firewall(
        &mut self,
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<DriftReport, DataplaneError> {
        self.repair_firewall_drift(desired, settings).await
    }

    async fn readback_done(&mut self) -> Readback {
        self.firewall_readback_done().await
    }

    async fn finish_readback(
        &mut self,
        readback: Readback,
        desired: &DesiredState,
        settings: &FirewallSettings,
    ) -> Result<DriftReport, DataplaneError> {
        self.finish_firewall_readback(readback, desired, settings)
            .await
    }

    async fn repair_routes(&mut self, desired: &DesiredState) -> Result<usize, DataplaneError> {
        Dataplane::repair_routes(self, desired).await
    }

    async fn handle_events(
        &mut self,
        events: Vec<DataplaneEvent>,
    ) -> Result<ApplyReport, DataplaneError> {
        Dataplane::handle_events(self, events).await
    }

    fn stats(&self) -> DataplaneStats {
        Dataplane::stats(self)
    }

    fn uplinks(&self) -> BTreeSet<String> {
        self.host_facts().uplinks.clone()
    }

    fn readback_totals(&self) -> [u64; 3] {
        let r = self.readback_stats();
        [r.skipped, r.performed, r.stale]
    }
}

/// The firewall settings carried by the agent's settings.
pub fn firewall_settings(s: &Settings) -> FirewallSettings {
    let ports = |v: &[margay_config::ProtoPort]| {
        v.iter()
            .map(|p| (p.protocol.number(), p.port))
            .collect::<Vec<_>>()
    };
    FirewallSettings {
        interface_prefixes: s.interface_prefixes.clone(),
        endpoint_to_host: match s.default_endpoint_to_host_action {
            margay_config::EndpointToHostAction::Drop => EndpointToHostAction::Drop,
            margay_config::EndpointToHostAction::Return => EndpointToHostAction::Return,
            margay_config::EndpointToHostAction::Accept => EndpointToHostAction::Accept,
        },
        failsafe_inbound: ports(&s.failsafe_inbound_host_ports),
        failsafe_outbound: ports(&s.failsafe_outbound_host_ports),
    }
}

/// The dataplane backend for the `dataplane` setting.
pub fn backend_kind(kind: DataplaneKind) -> BackendKind {
    match kind {
        DataplaneKind::Nftables => BackendKind::Nftables,
        DataplaneKind::Iptables => BackendKind::Iptables,
        DataplaneKind::None => BackendKind::None,
    }
}

/// The dataplane configuration for these settings (our own namespace).
pub fn dataplane_config(s: &Settings) -> DataplaneConfig {
    DataplaneConfig {
        backend: backend_kind(s.dataplane),
        route_protocol: s.route_protocol,
        netns: None,
    }
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
}

/// One wake-up of the loop.
enum Wake {
    Sync(Option<SyncEvent>),
    Dataplane(Option<DataplaneEvent>),
    Control(Option<Control>),
    Retry,
    Refresh,
    Readback(Readback),
    Watchdog,
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
}

impl<D: Driver> Agent<D> {
    /// An agent with resolved `settings`, a started dataplane `dp` and its outputs.
    pub fn new(loader: SettingsLoader, resolved: Resolved, dp: D, out: Outputs) -> Self {
        let settings = resolved.settings;
        let data_prefix = settings.data_prefix();
        let mut calc = CalcEngine::new(settings.hostname.clone());
        calc.set_interface_prefixes(settings.interface_prefixes.clone());
        Agent {
            datastore: DatastoreSettings::new(&data_prefix, &settings.hostname),
            firewall: firewall_settings(&settings),
            data_prefix,
            calc,
            loader,
            settings,
            dp,
            out,
            limiter: LogLimiter::default(),
            conflicts: Default::default(),
            in_sync: false,
            listing: false,
            connected: false,
            applied_once: false,
            pending: Changes::default(),
            pending_updates: 0,
            oldest_pending: None,
            retry_at: None,
            retry_backoff: Backoff::new(APPLY_RETRY),
            invalid: HashMap::new(),
            warned: BTreeSet::new(),
            waiting_logged: false,
            last_write_failures: 0,
        }
    }

    /// The calculation (tests, diagnostics).
    pub fn calc(&self) -> &CalcEngine {
        &self.calc
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The dataplane driver.
    pub fn driver(&self) -> &D {
        &self.dp
    }

    /// Runs until a [`Control::Stop`] (or every input closed). The dataplane
    /// is left as it is.
    pub async fn run(&mut self, mut inputs: LoopInputs) -> anyhow::Result<()> {
        let mut refresh = self.refresh_timer();
        let mut refresh_period = self.settings.refresh_period();
        let watchdog_every = self
            .out
            .notifier
            .watchdog_interval()
            .map_or(crate::metrics::LOOP_TICK, |w| {
                w.min(crate::metrics::LOOP_TICK)
            });
        let mut watchdog = tokio::time::interval(watchdog_every);
        loop {
            self.out.metrics.loop_turned();
            let wake = tokio::select! {
                biased;
                c = inputs.control.recv() => Wake::Control(c),
                e = inputs.sync.recv() => Wake::Sync(e),
                e = recv_opt(&mut inputs.dataplane_events) => Wake::Dataplane(e),
                _ = sleep_until_opt(self.retry_at) => Wake::Retry,
                _ = tick_opt(&mut refresh) => Wake::Refresh,
                r = self.dp.readback_done() => Wake::Readback(r),
                _ = watchdog.tick() => Wake::Watchdog,
            };
            let mut dp_events = Vec::new();
            match wake {
                Wake::Control(Some(Control::Stop)) | Wake::Control(None) => break,
                Wake::Control(Some(Control::Reload)) => self.reload_config_file(),
                Wake::Sync(Some(event)) => self.on_sync(event),
                Wake::Sync(None) => {
                    anyhow::bail!("the datastore syncer stopped");
                }
                Wake::Dataplane(Some(e)) => dp_events.push(e),
                Wake::Dataplane(None) => inputs.dataplane_events = None,
                Wake::Retry => self.retry_at = None,
                Wake::Refresh => self.refresh_dataplane().await,
                Wake::Readback(r) => self.finish_readback(r).await,
                Wake::Watchdog => self.out.notifier.watchdog(),
            }
            self.drain(&mut inputs, &mut dp_events);
            self.handle_dataplane_events(dp_events).await;
            self.maybe_apply().await;
            if self.settings.refresh_period() != refresh_period {
                refresh_period = self.settings.refresh_period();
                refresh = self.refresh_timer();
            }
        }
        tracing::info!("stopping; the dataplane is left as it is");
        self.out.notifier.stopping();
        Ok(())
    }

    fn refresh_timer(&self) -> Option<tokio::time::Interval> {
        self.settings.refresh_period().map(|p| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        })
    }

    /// Folds what is already queued into this turn (bounded).
    fn drain(&mut self, inputs: &mut LoopInputs, dp_events: &mut Vec<DataplaneEvent>) {
        for _ in 0..MAX_DRAIN {
            match inputs.sync.try_recv() {
                Ok(event) => self.on_sync(event),
                Err(_) => break,
            }
        }
        if let Some(rx) = inputs.dataplane_events.as_mut() {
            while dp_events.len() < MAX_DRAIN {
                match rx.try_recv() {
                    Ok(e) => dp_events.push(e),
                    Err(_) => break,
                }
            }
        }
    }

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
            SyncEvent::Updates { changes, .. } => self.ingest(changes),
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
    fn mark_connected(&mut self) -> bool {
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
        self.pending.merge(self.calc.take_changes());
        self.conflicts
            .observe(&self.calc, &self.out.metrics, &self.limiter);
        self.out.metrics.observe_calc(started.elapsed());
        self.out.metrics.set_pending_updates(self.pending_updates);
    }

    fn count_event(&self, key: &str) {
        let kind = match margay_policy::update::parse_key(&self.data_prefix, key) {
            Ok(Some(resource)) => key_kind(&resource),
            Ok(None) => return,
            Err(_) => "unknown",
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
                let kind = e.resource.as_ref().map(key_kind).unwrap_or("unknown");
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

    /// Re-resolves settings with the datastore layers and applies them live.
    fn refresh_datastore_settings(&mut self) {
        let global = self.datastore.global().clone();
        let host = self.datastore.host().clone();
        match self.loader.resolve_with_datastore(global, host) {
            Ok(resolved) => self.adopt(resolved, "datastore"),
            // Only local layers can fail, and they resolved before.
            Err(e) => tracing::error!(error = %format!("{e:#}"), "settings no longer resolve"),
        }
    }

    /// SIGHUP: re-reads the config file and applies what may change live.
    fn reload_config_file(&mut self) {
        tracing::info!(file = %self.loader.config_file().path.display(), "reloading the config file");
        match self.loader.reload_file() {
            Ok(resolved) => self.adopt(resolved, "config file"),
            Err(e) => tracing::error!(
                error = %format!("{e:#}"),
                "config file reload failed; keeping the settings in force"
            ),
        }
    }

    /// Takes the live part of `resolved`; warns about the rest.
    fn adopt(&mut self, resolved: Resolved, source: &str) {
        let warned = std::mem::take(&mut self.warned);
        for w in &resolved.warnings {
            let text = w.to_string();
            if !warned.contains(&text) {
                tracing::warn!(warning = %crate::logging::sanitize(&text), "setting ignored or questionable");
                crate::host_guard::count_rejected_setting(&self.out.metrics, w);
            }
            self.warned.insert(text);
        }
        let (mut merged, mut live, restart) = merge_reload(&self.settings, &resolved.settings);
        if live.contains(&Setting::InterfacePrefix) && !self.prefixes_safe(&merged, source, &warned)
        {
            merged.interface_prefixes = self.settings.interface_prefixes.clone();
            live.retain(|s| *s != Setting::InterfacePrefix);
        }
        for s in &restart {
            tracing::warn!(setting = %s, source, "changing this setting needs a restart; keeping the current value");
        }
        if live.is_empty() {
            return;
        }
        let names: Vec<&str> = live.iter().map(|s| s.key()).collect();
        tracing::info!(settings = %names.join(","), source, "settings changed");
        self.settings = merged;
        self.apply_live(&live);
    }

    /// False (logged and counted once while it stays, `warned` being what
    /// was logged before) when `next`'s interface prefixes match an uplink:
    /// the host's own traffic would be firewalled.
    fn prefixes_safe(&mut self, next: &Settings, source: &str, warned: &BTreeSet<String>) -> bool {
        let conflicts =
            crate::host_guard::uplink_conflicts(&next.interface_prefixes, &self.dp.uplinks());
        if conflicts.is_empty() {
            return true;
        }
        let text = crate::host_guard::describe(&conflicts);
        if !warned.contains(&text) {
            crate::host_guard::report_rejected_prefixes(
                &self.out.metrics,
                &next.interface_prefixes,
                &self.settings.interface_prefixes,
                &text,
                source,
            );
        }
        self.warned.insert(text);
        false
    }

    fn apply_live(&mut self, changed: &[Setting]) {
        if changed.contains(&Setting::InterfacePrefix) {
            self.calc
                .set_interface_prefixes(self.settings.interface_prefixes.clone());
            self.conflicts
                .observe(&self.calc, &self.out.metrics, &self.limiter);
        }
        let firewall = firewall_settings(&self.settings);
        if firewall != self.firewall {
            self.firewall = firewall;
            self.pending.settings = true;
        }
        if changed.contains(&Setting::LogLevel) {
            if let Some(log) = &self.out.log {
                if let Err(e) = log.set_level(self.settings.log_level.as_str()) {
                    tracing::warn!(error = %e, "cannot change the log level");
                }
            }
        }
        let report = ReportConfig::from_settings(&self.settings);
        self.out
            .report_config
            .send_if_modified(|c| std::mem::replace(c, report.clone()) != report);
    }

    /// True when an apply should run now.
    fn should_apply(&mut self) -> bool {
        if !self.in_sync || self.listing || self.retry_at.is_some() {
            return false;
        }
        if !self.calc.ready() {
            if !self.waiting_logged {
                tracing::info!("datastore is not Ready; nothing is programmed until it is");
                self.waiting_logged = true;
            }
            return false;
        }
        self.waiting_logged = false;
        if self.applied_once && self.pending.is_empty() {
            // Updates without effect: nothing waits any more.
            self.out.metrics.updates_applied(self.pending_updates);
            self.pending_updates = 0;
            self.oldest_pending = None;
            self.out.metrics.set_pending_updates(0);
            return false;
        }
        true
    }

    /// Applies pending changes if allowed; schedules a retry on failure.
    async fn maybe_apply(&mut self) {
        if !self.should_apply() {
            return;
        }
        let started = Instant::now();
        let result = self
            .dp
            .apply(self.calc.state(), &self.pending, &self.firewall)
            .await;
        let took = started.elapsed();
        let backend = self.dp.backend_name();
        self.out
            .metrics
            .observe_apply(backend, took, result.is_ok());
        match result {
            Ok(report) => self.applied(report, took),
            Err(e) => {
                let delay = self.retry_backoff.next_delay();
                self.retry_at = Some(tokio::time::Instant::now() + delay);
                // The error names the failing object (chain, set or route).
                tracing::error!(
                    error = %e,
                    consecutive_failures = self.out.metrics.consecutive_apply_failures(),
                    retry_in_ms = delay.as_millis() as u64,
                    "dataplane apply failed; will retry"
                );
            }
        }
    }

    fn applied(&mut self, report: ApplyReport, took: Duration) {
        let first = !self.applied_once;
        self.applied_once = true;
        self.retry_backoff.reset();
        if let Some(oldest) = self.oldest_pending.take() {
            self.out.metrics.observe_update_latency(oldest.elapsed());
        }
        self.pending = Changes::default();
        self.out.metrics.updates_applied(self.pending_updates);
        self.pending_updates = 0;
        self.out.metrics.set_pending_updates(0);
        record_writes(&self.out.metrics, &report);
        self.report_refused(&report);
        if !report.failures.is_empty() && report.failures.len() != self.last_write_failures {
            let sample: Vec<String> = report
                .failures
                .iter()
                .take(5)
                .map(|f| f.to_string())
                .collect();
            tracing::warn!(
                failures = report.failures.len(),
                sample = %sample.join("; "),
                "some kernel writes failed; they are retried on link changes and repairs"
            );
        }
        self.last_write_failures = report.failures.len();
        tracing::debug!(
            duration_ms = took.as_millis() as u64,
            writes = report.writes(),
            "applied"
        );
        self.publish(&report);
        if first {
            tracing::info!(
                duration_ms = took.as_millis() as u64,
                "first snapshot applied; ready"
            );
            self.out.notifier.ready(&self.summary().to_string());
            for problem in self.calc.problems() {
                tracing::warn!(problem = %crate::logging::sanitize(&problem), "endpoint not programmed as written");
            }
        } else {
            self.out.notifier.status(&self.summary().to_string());
        }
    }

    /// Updates counts, endpoint statuses and the status line.
    fn publish(&mut self, report: &ApplyReport) {
        let calc = self.calc.stats();
        let dp = self.dp.stats();
        self.out.metrics.set_counts(&ObjectCounts {
            local_endpoints: calc.local_endpoints as u64,
            remote_endpoints: calc.remote_endpoints as u64,
            profiles: calc.profiles as u64,
            policies: calc.policies as u64,
            routes: dp.routes as u64,
            chains: dp.chains as u64,
            rules: dp.rules as u64,
            sets: dp.sets as u64,
            set_members: dp.set_members as u64,
        });
        let statuses = endpoint_statuses(&self.calc, report);
        self.out
            .endpoint_status
            .send_if_modified(|s| std::mem::replace(s, statuses.clone()) != statuses);
    }

    fn summary(&self) -> StatusSummary {
        let calc = self.calc.stats();
        let dp = self.dp.stats();
        StatusSummary {
            datastore_connected: self.connected,
            datastore_ready: self.calc.ready(),
            local_endpoints: calc.local_endpoints as u64,
            routes: dp.routes as u64,
            chains: dp.chains as u64,
            invalid_objects: self.invalid.len() as u64,
            pending_updates: self.pending_updates,
        }
    }

    /// Route/link events: repaired at once (after the first apply; before
    /// it, the first full apply covers them).
    async fn handle_dataplane_events(&mut self, events: Vec<DataplaneEvent>) {
        if events.is_empty() || !self.applied_once {
            return;
        }
        let overrun = events.iter().any(|e| matches!(e, DataplaneEvent::Overrun));
        let foreign = events
            .iter()
            .any(|e| matches!(e, DataplaneEvent::Route { .. }));
        if overrun {
            tracing::warn!("netlink events were lost; re-reading routes");
            self.repair_routes().await;
            return;
        }
        match self.dp.handle_events(events).await {
            Ok(report) => {
                record_writes(&self.out.metrics, &report);
                self.report_refused(&report);
                if foreign && report.routes > 0 {
                    self.out
                        .metrics
                        .drift_repairs("route", report.routes as u64);
                    tracing::warn!(
                        routes = report.routes,
                        "routes changed by someone else were put back"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "handling netlink events failed"),
        }
    }

    /// Logs and counts endpoint routes refused for covering an address
    /// this host needs, naming the local endpoint when there is one.
    fn report_refused(&self, report: &ApplyReport) {
        let state = self.calc.state();
        crate::host_guard::report_refused(
            &self.out.metrics,
            &self.limiter,
            &report.refused_routes,
            |r| crate::host_guard::endpoint_behind(state, r),
        );
    }

    async fn repair_routes(&mut self) {
        if self.listing {
            return;
        }
        match self.dp.repair_routes(self.calc.state()).await {
            Ok(0) => {}
            Ok(n) => {
                self.out.metrics.drift_repairs("route", n as u64);
                tracing::warn!(
                    writes = n,
                    "routes, neighbours or sysctls had drifted and were repaired"
                );
            }
            Err(e) => tracing::error!(error = %e, "route repair failed"),
        }
    }

    /// The periodic refresh: firewall drift, then routes.
    async fn refresh_dataplane(&mut self) {
        self.limiter.flush_summaries();
        if !self.applied_once || self.listing || self.retry_at.is_some() {
            return;
        }
        let drift = self
            .dp
            .repair_firewall(self.calc.state(), &self.firewall)
            .await;
        self.record_drift(drift);
        self.repair_routes().await;
    }

    /// A background firewall read-back ended: repair what it found.
    async fn finish_readback(&mut self, readback: Readback) {
        tracing::debug!(
            took_ms = readback.took.as_millis() as u64,
            "firewall read-back done"
        );
        if self.listing {
            // Never repair towards a half-listed view; the next refresh reads again.
            return;
        }
        let drift = self
            .dp
            .finish_readback(readback, self.calc.state(), &self.firewall)
            .await;
        self.record_drift(drift);
    }

    fn record_drift(&self, drift: Result<DriftReport, DataplaneError>) {
        self.out
            .metrics
            .set_firewall_readbacks(self.dp.readback_totals());
        match drift {
            Ok(drift) if !drift.is_clean() => {
                let m = &self.out.metrics;
                m.drift_repairs("chain", drift.chains.len() as u64);
                m.drift_repairs("set", drift.sets.len() as u64);
                m.drift_repairs(
                    "set_member",
                    (drift.members_missing + drift.members_extra) as u64,
                );
                m.drift_repairs("hook", drift.hooks.len() as u64);
                m.drift_repairs("forward_accept", drift.forward_accepts as u64);
                tracing::warn!(
                    chains = drift.chains.len(),
                    sets = drift.sets.len(),
                    members = drift.members_missing + drift.members_extra,
                    hooks = drift.hooks.len(),
                    forward_accepts = drift.forward_accepts,
                    "firewall had drifted and was repaired"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "firewall refresh failed"),
        }
    }
}

/// Counts an apply's writes by object type.
fn record_writes(m: &Metrics, r: &ApplyReport) {
    m.dataplane_writes("route", r.routes as u64);
    m.dataplane_writes("neighbour", r.neighbours as u64);
    m.dataplane_writes("sysctl", r.sysctls as u64);
    m.dataplane_writes("chain", r.chains as u64);
    m.dataplane_writes("set", r.sets as u64);
    m.dataplane_writes("set_member", r.set_members as u64);
    m.dataplane_writes("forward_accept", r.forward_accepts as u64);
}

/// Status of every local endpoint: `up` when plumbed, `error` when a kernel
/// write for its interface or addresses failed, `down` otherwise (inactive,
/// or not plumbed).
pub fn endpoint_statuses(calc: &CalcEngine, report: &ApplyReport) -> EndpointStatuses {
    let plumbed: HashMap<_, &LocalEndpoint> = calc
        .state()
        .endpoints
        .values()
        .map(|ep| (&ep.key, ep))
        .collect();
    calc.local_endpoint_keys()
        .map(|key| {
            let status = match plumbed.get(key) {
                Some(ep)
                    if report
                        .failures
                        .iter()
                        .any(|f| failure_touches(ep, &f.object)) =>
                {
                    EndpointStatus::Error
                }
                Some(_) => EndpointStatus::Up,
                None => EndpointStatus::Down,
            };
            (status_name(key), status)
        })
        .collect()
}

/// How the status writer names a local endpoint.
fn status_name(key: &WorkloadEndpointKey) -> EndpointName {
    EndpointName {
        orchestrator: key.orchestrator.clone(),
        workload: key.workload.clone(),
        endpoint: key.endpoint.to_string(),
    }
}

/// True when a failed write's object text names the endpoint's interface or address.
fn failure_touches(ep: &LocalEndpoint, object: &str) -> bool {
    let iface = ep.iface.as_str();
    object.split([' ', '/']).any(|token| {
        token == iface
            || ep.ipv4.iter().any(|n| n.addr().to_string() == token)
            || ep.ipv6.iter().any(|n| n.addr().to_string() == token)
    })
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn tick_opt(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Turns SIGTERM/SIGINT into [`Control::Stop`] and SIGHUP into [`Control::Reload`].
fn spawn_signal_forwarder() -> anyhow::Result<mpsc::Receiver<Control>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let control = tokio::select! {
                _ = term.recv() => Control::Stop,
                _ = int.recv() => Control::Stop,
                _ = hup.recv() => Control::Reload,
            };
            if tx.send(control).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// `margay run`: sets everything up and runs the loop until a signal.
pub async fn run_agent(
    loader: SettingsLoader,
    resolved: Resolved,
    log: LogHandle,
) -> anyhow::Result<Option<()>> {
    // Signals first, so a SIGTERM during start-up still exits cleanly.
    let control = spawn_signal_forwarder()?;
    let settings = resolved.settings.clone();
    crate::logging::log_startup(
        crate::cli::VERSION,
        &settings.dataplane.to_string(),
        &settings.entries(),
    );
    let metrics = Metrics::new(crate::cli::VERSION, &settings.dataplane.to_string());
    let server = crate::http::MetricsServer::bind(settings.metrics_addr, metrics.clone())
        .await
        .context("cannot serve metrics")?;
    tracing::info!(addr = %server.local_addr(), "serving /metrics, /livez and /readyz");
    let http = tokio::spawn(server.serve());

    let mut dp = Dataplane::new(dataplane_config(&settings))
        .await
        .context("cannot open the dataplane")?;
    dp.set_etcd_addresses(
        crate::host_guard::resolve_etcd_addresses(&settings.etcd_endpoints).await,
    );
    dp.start()
        .await
        .context("cannot read the existing dataplane state")?;
    crate::host_guard::guard_start(&mut dp, &settings, &metrics).await?;
    let dataplane_events = dp.take_events();

    let etcd = margay_datastore::connect::EtcdConfig::from_settings(&settings);
    let (sync, sync_task) = Syncer::spawn(SyncConfig {
        etcd: etcd.clone(),
        prefix: settings.data_prefix(),
        page_size: margay_datastore::sync::DEFAULT_PAGE_SIZE,
        backoff: BackoffConfig::default(),
    });
    let (report_config, report_rx) = watch::channel(ReportConfig::from_settings(&settings));
    let (endpoint_status, status_rx) = watch::channel(EndpointStatuses::new());
    let reporter = margay_datastore::status::spawn(
        etcd,
        &settings.status_prefix(),
        &settings.hostname,
        report_rx,
        status_rx,
    );

    let outputs = Outputs {
        metrics,
        notifier: Notifier::from_env(),
        log: Some(log),
        report_config,
        endpoint_status,
    };
    let mut agent = Agent::new(loader, resolved, dp, outputs);
    let result = agent
        .run(LoopInputs {
            sync,
            dataplane_events,
            control,
        })
        .await;
    sync_task.abort();
    reporter.abort();
    http.abort();
    result.map(Some)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use margay_dataplane::firewall::manager::DriftReport;
    use margay_policy::names::InterfaceName;
    use tokio::sync::Semaphore;

    use super::*;
    use margay_datastore::sync::ResyncReason;

    /// A dataplane that records what it is asked to do.
    struct Fake {
        applies: Vec<(Changes, FirewallSettings, Vec<String>)>,
        fail_next: usize,
        /// Every apply after this many successes fails.
        fail_after: Option<usize>,
        gate: Option<Arc<Semaphore>>,
        in_flight: u32,
        max_in_flight: u32,
        firewall_repairs: usize,
        route_repairs: usize,
        events: Vec<DataplaneEvent>,
    }

    impl Fake {
        fn new() -> Self {
            Fake {
                applies: Vec::new(),
                fail_next: 0,
                fail_after: None,
                gate: None,
                in_flight: 0,
                max_in_flight: 0,
                firewall_repairs: 0,
                route_repairs: 0,
                events: Vec::new(),
            }
        }
    }

    impl Driver for Fake {
        fn backend_name(&self) -> &'static str {
            "none"
        }

        async fn apply(
            &mut self,
            desired: &DesiredState,
            changes: &Changes,
            settings: &FirewallSettings,
        ) -> Result<ApplyReport, DataplaneError> {
            self.in_flight += 1;
            self.max_in_flight = self.max_in_flight.max(self.in_flight);
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("gate open").forget();
            }
            self.in_flight -= 1;
            if self.fail_next > 0 {
                self.fail_next -= 1;
                return Err(DataplaneError::ReservedProtocol(0));
            }
            if self.fail_after.is_some_and(|n| self.applies.len() >= n) {
                return Err(DataplaneError::ReservedProtocol(0));
            }
            let ifaces = desired
                .endpoints
                .keys()
                .map(|i| i.as_str().to_owned())
                .collect();
            self.applies
                .push((changes.clone(), settings.clone(), ifaces));
            Ok(ApplyReport::default())
        }

        async fn repair_firewall(
            &mut self,
            _desired: &DesiredState,
            _settings: &FirewallSettings,
        ) -> Result<DriftReport, DataplaneError> {
            self.firewall_repairs += 1;
            Ok(DriftReport::default())
        }

        async fn repair_routes(
            &mut self,
            _desired: &DesiredState,
        ) -> Result<usize, DataplaneError> {
            self.route_repairs += 1;
            Ok(0)
        }

        async fn handle_events(
            &mut self,
            events: Vec<DataplaneEvent>,
        ) -> Result<ApplyReport, DataplaneError> {
            self.events.extend(events);
            Ok(ApplyReport::default())
        }

        fn stats(&self) -> DataplaneStats {
            DataplaneStats::default()
        }

        fn uplinks(&self) -> BTreeSet<String> {
            BTreeSet::from(["eth0".to_owned()])
        }
    }

    struct Harness {
        sync: mpsc::Sender<SyncEvent>,
        control: mpsc::Sender<Control>,
        dp_events: mpsc::Sender<DataplaneEvent>,
        report: watch::Receiver<ReportConfig>,
        statuses: watch::Receiver<EndpointStatuses>,
        metrics: Metrics,
    }

    fn agent_with(env: &[(&str, &str)], fake: Fake) -> (Agent<Fake>, LoopInputs, Harness) {
        let environment = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let loader = SettingsLoader::new(
            BTreeMap::new(),
            environment,
            Some(std::path::Path::new("/dev/null")),
            Some("h1".into()),
        )
        .expect("loader");
        let resolved = loader.resolve().expect("settings");
        let metrics = Metrics::new("test", "none");
        let (report_tx, report) = watch::channel(ReportConfig::from_settings(&resolved.settings));
        let (status_tx, statuses) = watch::channel(EndpointStatuses::new());
        let out = Outputs {
            metrics: metrics.clone(),
            notifier: Notifier::disabled(),
            log: None,
            report_config: report_tx,
            endpoint_status: status_tx,
        };
        let (sync_tx, sync_rx) = mpsc::channel(1024);
        let (control_tx, control_rx) = mpsc::channel(4);
        let (dp_tx, dp_rx) = mpsc::channel(16);
        let agent = Agent::new(loader, resolved, fake, out);
        let inputs = LoopInputs {
            sync: sync_rx,
            dataplane_events: Some(dp_rx),
            control: control_rx,
        };
        let harness = Harness {
            sync: sync_tx,
            control: control_tx,
            dp_events: dp_tx,
            report,
            statuses,
            metrics,
        };
        (agent, inputs, harness)
    }

    fn put(key: &str, value: &str) -> KvChange {
        KvChange {
            key: format!("/calico/v1/{key}"),
            value: Some(value.to_owned()),
        }
    }

    fn del(key: &str) -> KvChange {
        KvChange {
            key: format!("/calico/v1/{key}"),
            value: None,
        }
    }

    fn endpoint(n: u32) -> KvChange {
        put(
            &format!("host/h1/workload/k8s/pod{n}/endpoint/eth0"),
            &format!(
                r#"{{"state":"active","name":"cali{n}","profile_ids":["p1"],"ipv4_nets":["10.0.{}.{}/32"]}}"#,
                n / 250,
                n % 250 + 1
            ),
        )
    }

    fn profile() -> KvChange {
        put(
            "policy/profile/p1/rules",
            r#"{"inbound_rules":[{"action":"allow"}],"outbound_rules":[{"action":"allow"}]}"#,
        )
    }

    fn snapshot(changes: Vec<KvChange>) -> SyncEvent {
        SyncEvent::Snapshot {
            keys: changes.len(),
            changes,
            revision: 1,
            reason: ResyncReason::Startup,
            endpoint: "test".into(),
        }
    }

    fn updates(changes: Vec<KvChange>) -> SyncEvent {
        SyncEvent::Updates {
            changes,
            revision: 2,
        }
    }

    /// Lets the agent run until idle (time is paused: sleeping advances it
    /// only once every task waits).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    fn iface(name: &str) -> InterfaceName {
        InterfaceName::new(name).expect("iface")
    }

    fn metric_line(metrics: &Metrics, prefix: &str) -> String {
        metrics
            .render()
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_applied_before_a_snapshot_and_ready() {
        let (mut agent, inputs, h) = agent_with(&[], Fake::new());
        let driver = async {
            h.sync.send(updates(vec![profile()])).await.expect("send");
            settle().await;
            h.sync
                .send(snapshot(vec![endpoint(1)]))
                .await
                .expect("send");
            settle().await;
            h.sync
                .send(updates(vec![put("Ready", "true")]))
                .await
                .expect("send");
            settle().await;
            h.control.send(Control::Stop).await.expect("stop");
        };
        let (result, ()) = tokio::join!(agent.run(inputs), driver);
        result.expect("clean stop");
        let applies = &agent.driver().applies;
        assert_eq!(applies.len(), 1, "one apply, once Ready");
        assert_eq!(applies[0].2, vec!["cali1"]);
        assert!(applies[0].0.endpoints.contains(&iface("cali1")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_update_applies_at_once_and_a_burst_coalesces() {
        let gate = Arc::new(Semaphore::new(0));
        let mut fake = Fake::new();
        fake.gate = Some(gate.clone());
        let (mut agent, inputs, h) = agent_with(&[], fake);
        let driver = async {
            h.sync
                .send(snapshot(vec![put("Ready", "true"), profile()]))
                .await
                .expect("send");
            settle().await;
            gate.add_permits(1); // first apply
            settle().await;
            // A lone update: its apply starts at once (and waits at the gate).
            h.sync.send(updates(vec![endpoint(0)])).await.expect("send");
            settle().await;
            // A burst while that apply is in flight.
            for n in 1..=50 {
                h.sync.send(updates(vec![endpoint(n)])).await.expect("send");
            }
            settle().await;
            gate.add_permits(1); // lone update's apply finishes
            settle().await;
            gate.add_permits(1); // the coalesced burst
            settle().await;
            h.control.send(Control::Stop).await.expect("stop");
        };
        let (result, ()) = tokio::join!(agent.run(inputs), driver);
        result.expect("clean stop");
        let fake = agent.driver();
        assert_eq!(fake.max_in_flight, 1);
        assert_eq!(fake.applies.len(), 3, "first, lone, burst");
        assert_eq!(fake.applies[1].0.endpoints.len(), 1);
        assert_eq!(
            fake.applies[2].0.endpoints.len(),
            50,
            "the burst in one apply"
        );
        assert_eq!(fake.applies[2].2.len(), 51);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_apply_is_retried_with_its_changes() {
        let mut fake = Fake::new();
        fake.fail_next = 2;
        let (mut agent, inputs, h) = agent_with(&[], fake);
        let driver = async {
            h.sync
                .send(snapshot(vec![put("Ready", "true"), profile(), endpoint(7)]))
                .await
                .expect("send");
            settle().await;
            // Two failures, then the retry after backoff succeeds.
            tokio::time::sleep(Duration::from_secs(5)).await;
            h.control.send(Control::Stop).await.expect("stop");
        };
        let (result, ()) = tokio::join!(agent.run(inputs), driver);
        result.expect("clean stop");
        let applies = &agent.driver().applies;
        assert_eq!(applies.len(), 1);
        assert!(applies[0].0.endpoints.contains(&iface("cali7")));
        assert!(
            metric_line(&h.metrics, "margay_dataplane_apply_failures_total").ends_with(" 2"),
            "{}",
            h.metrics.render()
        );
        assert!(metric_line(&h.metrics, "margay_last_apply_timestamp_seconds").len() > 10);
        assert!(
            metric_line(&h.metrics, "margay_dataplane_apply_failures_consecutive").ends_with(" 0"),
            "a success resets the run of failures"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dataplane_that_keeps_failing_is_not_ready() {
        let mut fake = Fake::new();
        fake.fail_after = Some(1);
        let (mut agent, inputs, h) = agent_with(&[], fake);
        let driver = async {
            h.sync
                .send(snapshot(vec![put("Ready", "true"), profile()]))
                .await
                .expect("send");
            settle().await;
            let ready = crate::http::respond("GET /readyz HTTP/1.1", &h.metrics);
            assert_eq!(ready.status, 200, "first apply succeeded");
            // Every later apply fails (and is retried).
            h.sync.send(updates(vec![endpoint(7)])).await.expect("send");
            settle().await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            h.control.send(Control::Stop).await.expect("stop");
        };
        let (result, ()) = tokio::join!(agent.run(inputs), driver);
        result.expect("clean stop");
        let failed = h.metrics.consecutive_apply_failures();
        assert!(
            failed >= crate::http::NOT_READY_AFTER_FAILED_APPLIES,
            "{failed}"
        );
        let readyz = crate::http::respond("GET /readyz HTTP/1.1", &h.metrics);
        assert_eq!(readyz.status, 503, "{}", readyz.body);
    }

    #[tokio::test(start_paused = true)]
    async fn prefixes_matching_an_uplink_or_lo_are_rejected_and_counted_once() {
        let (mut agent, inputs, h) = agent_with(&[], Fake::new());
        let driver = async {
            h.sync
                .send(snapshot(vec![put("Ready", "true"), profile()]))
                .await
                .expect("send");
            settle().await;
            for change in [
                put("config/InterfacePrefix", "eth"),
                // Another settings change re-resolves: no second count.
                put("config/ReportingIntervalSecs", "5"),
                put("host/h1/config/InterfacePrefix", "cali,lo"),
            ] {
                h.sync.send(updates(vec![change])).await.expect("send");
                settle().await;
            }
            h.control.send(Control::Stop).await.expect("stop");
        };
        let (result, ()) = tokio::join!(agent.run(inputs), driver);
        result.expect("clean stop");
        assert_eq!(agent.settings().interface_prefixes, vec!["cali"]);
        let line = |reason: &str| {
            metric_line(
                &h.metrics,
                &format!(
                    "margay_settings_rejected_total{{setting=\"interface_prefix\",reason=\"{reason}\"}}"
                ),
            )
        };
        assert!(
            line("host_interface").ends_with(" 1"),
            "{}",
            h.metrics.render()
        );
        assert!(line("invalid").ends_with(" 1"), "{}", h.metrics.render());
        assert!(agent
            .driver()
            .applies
            .iter()
            .all(|a| a.1.interface_prefixes == vec!["cali"]));
    }

    #[tokio::test(start_paused = true)]
    async fn while_etcd_is_away_nothing_is_touched() {
        let (mut agent, inputs, h) = agent_with(&[], Fake::new());
        let driver = async {
            h.sync
                .send(snapshot(vec![put("Ready", "true"), profile(), endpoint(1)]))
                .await
                .expect("send");
            settle().await;
            h.sync
                .send(SyncEvent::Disconnected {
                    error: "gone".into(),
                })
                .await
                .expect("send");
            settle().await;
            assert!(metric_line(&h.metrics, "margay_datastore_connected").ends_with(" 0"));
            // Back with nothing changed: no apply.
            h.sync
                .send(SyncEvent::Snapshot {
                    changes: vec![],
                    revision: 9,
                    reason: ResyncReason::Reconnect,
                    keys: 3,
                    endpoint: "test".into(),
                })
                .await
                .expect("send");
            settle().await;
            assert!(metric_line(&h.metrics, "margay_datastore_connected").ends_with(" 1"));
            h.control.send(Control::Stop).await.expect("stop");
        };
        let (result, ()) = tokio::join!(agent.run(inputs), driver);
        result.expect("clean stop");
        assert_eq!(agent.driver().applies.len(), 1);
        assert_eq!(agent.driver().firewall_repairs, 0);
    }

    /// A re-list arrives page by page; the half-listed view is never
    /// programmed, not even when etcd goes away before the list ends.
    #[tokio::test(start_paused = true)]
    async fn a_list_in_pages_is_applied_only_once_complete() {
        let (mut agent, inputs, h) = agent_with(&[], Fake::new());
        let driver = async {
            let first = snapshot(vec![put("Ready", "true"), profile(), endpoint(1)]);
            h.sync.send(first).await.expect("send");
            settle().await;
            let part = SyncEvent::SnapshotPart {
                changes: vec![endpoint(2)],
            };
            h.sync.send(part).await.expect("send");
            settle().await;
            let gone = SyncEvent::Disconnected {
                error: "gone".into(),
            };
            h.sync.send(gone).await.expect("send");
            settle().await;
            // Refreshes come and go; nothing is applied or repaired.
            tokio::time::sleep(Duration::from_secs(120)).await;
            let count = "margay_dataplane_apply_duration_seconds_count";
            assert!(
                metric_line(&h.metrics, count).ends_with(" 1"),
                "held while listing"
            );
            let mut end = snapshot(vec![]);
            if let SyncEvent::Snapshot { reason, .. } = &mut end {
                *reason = ResyncReason::Reconnect;
            }
            h.sync.send(end).await.expect("send");
            settle().await;
            h.control.send(Control::Stop).await.expect("stop");
        };
        let (result, ()) = tokio::join!(agent.run(inputs), driver);
        result.expect("clean stop");
        assert_eq!(
            agent.driver().applies.len(),
            2,
            "the first list, then the second"
        );
        assert_eq!(agent.driver().firewall_repairs, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn datastore_settings_apply_live_below_local_layers() {
        // The environment pins the log level; the datastore sets the rest.
        let (mut agent, inputs, mut h) = agent_with(&[("MARGAY_LOG_LEVEL", "warn")], Fake::new());
        let driver = async {
            h.sync
                .send(snapshot(vec![
                    put("Ready", "true"),
                    profile(),
                    put(
                        "host/h1/workload/k8s/pod9/endpoint/eth0",
                        r#"{"state":"active","name":"tap9","profile_ids":["p1"],"ipv4_nets":["10.0.9.9/32"]}"#,
                    ),
                ]))
                .await
                .expect("send");
            settle().await;
            h.sync
                .send(updates(vec![
                    put("config/InterfacePrefix", "tap"),
                    put("config/LogSeverityScreen", "DEBUG"),
                    put("config/ReportingIntervalSecs", "5"),
                    put("host/h1/config/DefaultEndpointToHostAction", "ACCEPT"),
                    // Another host's setting must not apply here.
                    put("host/h2/config/ReportingTTLSecs", "7"),
                ]))
                .await
                .expect("send");
            settle().await;
            assert!(h.report.has_changed().expect("open"));
            h.control.send(Control::Stop).await.expect("stop");
        };
        let (result, ()) = tokio::join!(agent.run(inputs), driver);
        result.expect("clean stop");
        let s = agent.settings();
        assert_eq!(s.interface_prefixes, vec!["tap"]);
        assert_eq!(s.log_level, margay_config::LogLevel::Warn);
        assert_eq!(s.reporting_ttl_secs, 90);
        assert_eq!(
            h.report.borrow_and_update().interval,
            Some(Duration::from_secs(5))
        );
        let applies = &agent.driver().applies;
        let last = applies.last().expect("applied");
        assert_eq!(last.1.interface_prefixes, vec!["tap"]);
        assert_eq!(last.1.endpoint_to_host, EndpointToHostAction::Accept);
        assert!(last.0.settings, "the apply is told settings changed");
        assert_eq!(last.2, vec!["tap9"], "the tap endpoint is plumbed now");
    }

    #[tokio::test(start_paused = true)]
    async fn only_firewall_settings_make_the_firewall_re_lower() {
        let (mut agent, inputs, h) = agent_with(&[], Fake::new());
        let driver = async {
            let first = vec![put("Ready", "true"), profile(), endpoint(1)];
            h.sync.send(snapshot(first)).await.expect("send");
            settle().await;
            let log_level = put("config/LogSeverityScreen", "DEBUG");
            h.sync.send(updates(vec![log_level])).await.expect("send");
            settle().await;
            let to_host = put("host/h1/config/DefaultEndpointToHostAction", "ACCEPT");
            h.sync.send(updates(vec![to_host])).await.expect("send");
            settle().await;
            h.control.send(Control::Stop).await.expect("stop");
        };
        let (result, ()) = tokio::join!(agent.run(inputs), driver);
        result.expect("clean stop");
        assert_eq!(agent.settings().log_level, margay_config::LogLevel::Debug);
        let applies = &agent.driver().applies;
        assert_eq!(
            applies.len(),
            2,
            "the snapshot, then only the firewall setting: {:?}",
            applies.iter().map(|a| a.0.settings).collect::<Vec<_>>()
        );
        assert!(!applies[0].0.settings);
        assert!(applies[1].0.settings, "the firewall is told to re-lower");
        assert_eq!(applies[1].1.endpoint_to_host, EndpointToHostAction::Accept);
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_keys_are_counted_and_never_fatal() {
        let (mut agent, inputs, h) = agent_with(&[], Fake::new());
        let driver = async {
            h.sync
                .send(snapshot(vec![
                    put("Ready", "true"),
                    put("policy/profile/p1/rules", "{not json"),
                    endpoint(3),
                ]))
                .await
                .expect("send");
            settle().await;
            assert!(
                metric_line(&h.metrics, "margay_invalid_objects{kind=\"profile_rules\"}")
                    .ends_with(" 1")
            );
            // Fixed live.
            h.sync.send(updates(vec![profile()])).await.expect("send");
            settle().await;
            h.control.send(Control::Stop).await.expect("stop");
        };
        let (result, ()) = tokio::join!(agent.run(inputs), driver);
        result.expect("clean stop");
        assert!(metric_line(
            &h.metrics,
            "margay_invalid_updates_total{kind=\"profile_rules\"}"
        )
        .ends_with(" 1"));
        assert!(
            metric_line(&h.metrics, "margay_invalid_objects{kind=\"profile_rules\"}")
                .ends_with(" 0")
        );
        let applies = &agent.driver().applies;
        assert_eq!(
            applies.len(),
            2,
            "the endpoint was programmed (failing closed) and then fixed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_repairs_and_netlink_events_go_to_the_dataplane() {
        let (mut agent, inputs, h) = agent_with(&[("MARGAY_REFRESH_INTERVAL", "10")], Fake::new());
        let driver = async {
            // Before the first apply, events are left to the full apply.
            h.dp_events
                .send(DataplaneEvent::LinkGone { index: 1 })
                .await
                .expect("send");
            settle().await;
            h.sync
                .send(snapshot(vec![put("Ready", "true"), profile(), endpoint(1)]))
                .await
                .expect("send");
            settle().await;
            h.dp_events
                .send(DataplaneEvent::AddressChanged { index: 2 })
                .await
                .expect("send");
            settle().await;
            tokio::time::sleep(Duration::from_secs(25)).await;
            h.control.send(Control::Stop).await.expect("stop");
        };
        let (result, ()) = tokio::join!(agent.run(inputs), driver);
        result.expect("clean stop");
        let fake = agent.driver();
        assert_eq!(fake.events.len(), 1);
        assert!(matches!(
            fake.events[0],
            DataplaneEvent::AddressChanged { index: 2 }
        ));
        assert_eq!(fake.firewall_repairs, 2, "every 10 s");
        assert_eq!(fake.route_repairs, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn endpoint_statuses_follow_the_applied_state() {
        let (mut agent, inputs, mut h) = agent_with(&[], Fake::new());
        let driver = async {
            h.sync
                .send(snapshot(vec![
                    put("Ready", "true"),
                    profile(),
                    endpoint(1),
                    put(
                        "host/h1/workload/k8s/idle/endpoint/eth0",
                        r#"{"state":"inactive","name":"cali2","profile_ids":["p1"],"ipv4_nets":[]}"#,
                    ),
                ]))
                .await
                .expect("send");
            settle().await;
            h.sync
                .send(updates(vec![del(
                    "host/h1/workload/k8s/pod1/endpoint/eth0",
                )]))
                .await
                .expect("send");
            settle().await;
            h.control.send(Control::Stop).await.expect("stop");
        };
        let (result, ()) = tokio::join!(agent.run(inputs), driver);
        result.expect("clean stop");
        let statuses = h.statuses.borrow_and_update().clone();
        let by_workload: BTreeMap<_, _> = statuses
            .iter()
            .map(|(k, v)| (k.workload.clone(), *v))
            .collect();
        assert_eq!(
            by_workload,
            BTreeMap::from([("idle".to_owned(), EndpointStatus::Down)]),
            "pod1 went away; idle is inactive"
        );
    }
}
