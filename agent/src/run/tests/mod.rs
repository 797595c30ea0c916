//! Unit tests of the event loop, with a fake dataplane and paused time:
//! the harness here, the tests by theme in the submodules.

mod applying;
mod bgp;
mod settings_and_repairs;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use margay_dataplane::firewall::lower::{EndpointToHostAction, FirewallSettings};
use margay_dataplane::firewall::manager::DriftReport;
use margay_dataplane::{ApplyReport, DataplaneError, DataplaneEvent, DataplaneStats};
use margay_datastore::status::{EndpointName, EndpointStatus, EndpointStatuses, ReportConfig};
use margay_datastore::sync::{KvChange, ResyncReason, SyncEvent};
use margay_policy::desired::{Changes, DesiredState};
use margay_policy::names::{Id, InterfaceName};
use tokio::sync::{mpsc, watch, Semaphore};

use super::*;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::settings::SettingsLoader;

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
    /// What `host_endpoint_bindings` answers.
    bindings: BTreeMap<Id, BTreeSet<InterfaceName>>,
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
            bindings: BTreeMap::new(),
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

    async fn repair_routes(&mut self, _desired: &DesiredState) -> Result<usize, DataplaneError> {
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

    fn host_endpoint_bindings(&self) -> BTreeMap<Id, BTreeSet<InterfaceName>> {
        self.bindings.clone()
    }
}

struct Harness {
    sync: mpsc::Sender<SyncEvent>,
    control: mpsc::Sender<Control>,
    dp_events: mpsc::Sender<DataplaneEvent>,
    report: watch::Receiver<ReportConfig>,
    statuses: watch::Receiver<EndpointStatuses>,
    bgp: watch::Receiver<Option<margay_policy::bgp::BgpConfig>>,
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
    let (bgp_tx, bgp) = watch::channel(None);
    let out = Outputs {
        bgp: Some(bgp_tx),
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
        bgp,
        metrics,
    };
    (agent, inputs, harness)
}

/// Runs an agent with environment `env` through `events` (each followed by
/// a settle), then stops it.
async fn run_through(env: &[(&str, &str)], events: Vec<SyncEvent>) -> (Agent<Fake>, Harness) {
    let (mut agent, inputs, h) = agent_with(env, Fake::new());
    let driver = async {
        for event in events {
            h.sync.send(event).await.expect("send");
            settle().await;
        }
        h.control.send(Control::Stop).await.expect("stop");
    };
    let (result, ()) = tokio::join!(agent.run(inputs), driver);
    result.expect("clean stop");
    (agent, h)
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

/// Sends the usual first snapshot (ready, one allow-all profile) and lets
/// the agent take it in.
async fn send_ready_snapshot(sync: &mpsc::Sender<SyncEvent>) {
    sync.send(snapshot(vec![put("Ready", "true"), profile()]))
        .await
        .expect("send");
    settle().await;
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
