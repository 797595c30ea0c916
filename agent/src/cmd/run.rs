//! `margay run`: sets up metrics, the dataplane, the syncer and the status
//! writer, then runs the event loop ([`crate::run::Agent`]) until a signal.

use anyhow::Context as _;
use margay_config::Resolved;
use margay_datastore::backoff::BackoffConfig;
use margay_datastore::status::{EndpointStatuses, ReportConfig};
use margay_datastore::sync::{SyncConfig, Syncer};
use tokio::sync::{mpsc, watch};

use crate::dataplane_setup::open_dataplane;
use crate::logging::LogHandle;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::run::{Agent, Control, LoopInputs, Outputs};
use crate::settings::SettingsLoader;

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
        crate::VERSION,
        &settings.dataplane.to_string(),
        &settings.entries(),
    );
    let metrics = Metrics::new(crate::VERSION, &settings.dataplane.to_string());
    let server = crate::http::MetricsServer::bind(settings.metrics_addr, metrics.clone())
        .await
        .context("cannot serve metrics")?;
    tracing::info!(addr = %server.local_addr(), "serving /metrics, /livez and /readyz");
    let http = tokio::spawn(server.serve());

    let mut dp = open_dataplane(&settings).await?;
    let own_endpoints = crate::host_guard::resolve_etcd_endpoints(&settings.etcd_endpoints).await;
    dp.set_etcd_addresses(crate::host_guard::endpoint_addresses(&own_endpoints));
    dp.start()
        .await
        .context("cannot read the existing dataplane state")?;
    crate::host_guard::guard_start(&mut dp, &settings, &metrics).await?;
    let dataplane_events = dp.take_events();

    let etcd = margay_datastore::connect::EtcdConfig::from_settings(&settings);
    let (sync, sync_task) = Syncer::spawn(SyncConfig {
        etcd: etcd.clone(),
        prefix: settings.data_prefix(),
        extra_prefixes: vec![settings.bgp_prefix()],
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

    let bgp = crate::bird_sync::spawn(
        crate::bird_sync::BirdPaths {
            config: settings.bird_config.clone(),
            socket: settings.bird_socket.clone(),
        },
        metrics.clone(),
    );
    let outputs = Outputs {
        bgp: Some(bgp),
        metrics,
        notifier: Notifier::from_env(),
        log: Some(log),
        report_config,
        endpoint_status,
    };
    let mut agent = Agent::new(loader, resolved, dp, outputs).with_own_endpoints(own_endpoints);
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
