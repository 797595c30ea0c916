//! The loop of [`Agent`]: one task waits on every input, handles what woke
//! it, folds in what is already queued, then applies at most once.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use margay_config::{InterHostRoutes, Resolved, Settings};
use margay_dataplane::{DataplaneEvent, Readback};
use margay_datastore::backoff::{Backoff, BackoffConfig};
use margay_datastore::settings::DatastoreSettings;
use margay_datastore::sync::SyncEvent;
use margay_policy::calc::CalcEngine;
use margay_policy::desired::Changes;
use tokio::sync::mpsc;

use super::{Agent, Control, Driver, LoopInputs, Outputs};
use crate::dataplane_setup::firewall_settings;
use crate::logging::LogLimiter;
use crate::settings::SettingsLoader;

/// Most queued events folded into one apply, so a flood cannot postpone
/// applying (and metrics, and signals) indefinitely.
const MAX_DRAIN: usize = 256;

/// Retry timing after a failed apply.
const APPLY_RETRY: BackoffConfig = BackoffConfig {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

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

impl<D: Driver> Agent<D> {
    /// An agent with resolved `settings`, a started dataplane `dp` and its outputs.
    pub fn new(loader: SettingsLoader, resolved: Resolved, dp: D, out: Outputs) -> Self {
        let settings = resolved.settings;
        let data_prefix = settings.data_prefix();
        let mut calc = CalcEngine::new(settings.hostname.clone());
        calc.set_interface_prefixes(settings.interface_prefixes.clone());
        calc.set_remote_routes(settings.inter_host_routes == InterHostRoutes::Direct);
        Agent {
            datastore: DatastoreSettings::new(&data_prefix, &settings.hostname),
            firewall: firewall_settings(&settings, &[]),
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
            ingested_revision: 0,
            pending_updates: 0,
            oldest_pending: None,
            retry_at: None,
            retry_backoff: Backoff::new(APPLY_RETRY),
            invalid: HashMap::new(),
            warned: BTreeSet::new(),
            waiting_logged: false,
            last_write_failures: 0,
            bgp_dirty: true,
            bgp_unavailable_logged: false,
        }
    }

    /// The etcd endpoints the agent talks to (resolved): the firewall keeps
    /// them reachable through host endpoints. Fixed for the agent's life
    /// (changing `etcd_endpoints` needs a restart).
    pub fn with_own_endpoints(mut self, endpoints: Vec<SocketAddr>) -> Self {
        self.firewall.own_endpoints = endpoints;
        self
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
            self.publish_bgp();
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
