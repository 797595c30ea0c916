//! Running the margay agents: spawning, readiness, metrics and health over
//! HTTP, logs, killing and stopping.

use super::*;

impl Cluster {
    // --- agents ----------------------------------------------------------

    pub(super) fn spawn_agent(&mut self, host: &str) {
        let bin = margay_bin();
        let config = self.dir.join("margay.toml");
        let dataplane = self.dataplane.as_str();
        let mut extra = self.agent_args.clone();
        extra.extend(self.bgp_agent_args(host));
        let wrapper = self.agent_wrapper.clone();
        let etcd = self.agent_etcd_url();
        let h = self.host_mut(host);
        assert!(h.agent.is_none(), "agent on {host} already running");
        let bin = bin.to_string_lossy().into_owned();
        let config = config.to_string_lossy().into_owned();
        let metrics = format!("127.0.0.1:{METRICS_PORT}");
        let mut args: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        args.extend([
            bin.as_str(),
            "run",
            "--config",
            &config,
            "--hostname",
            &h.name,
            "--etcd-endpoints",
            &etcd,
            "--dataplane",
            dataplane,
            "--metrics-addr",
            &metrics,
            "--log-format",
            "json",
        ]);
        args.extend(extra.iter().map(String::as_str));
        let cmd = h.ns.command(&args);
        let child = spawn_logged(cmd, &h.log, "MARGAY", &format!("margay on {host}"));
        h.agent = Some(child);
    }

    /// Starts the agent on `host` and waits until it reports ready.
    pub fn start_agent(&mut self, host: &str) {
        self.spawn_agent(host);
        self.wait_agent_ready(host);
    }

    /// Starts the agent on `host` without waiting.
    pub fn start_agent_nowait(&mut self, host: &str) {
        self.spawn_agent(host);
    }

    /// Waits until `host`'s agent answers `/readyz` with 200. Panics (with
    /// the log tail) if it exits or takes too long.
    pub fn wait_agent_ready(&mut self, host: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.agent_ready(host) {
                return;
            }
            if !self.agent_running(host) {
                panic!(
                    "margay on {host} exited:\n{}",
                    self.agent_log_tail(host, 30)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "margay on {host} not ready after {READY_TIMEOUT:?}:\n{}",
                    self.agent_log_tail(host, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when `host`'s agent answers `/readyz` with 200.
    pub fn agent_ready(&self, host: &str) -> bool {
        self.agent_http(host, "/readyz")
            .is_some_and(|(status, _)| status == 200)
    }

    /// `GET path` on `host`'s metrics port: (status, body).
    pub fn agent_http(&self, host: &str, path: &str) -> Option<(u16, String)> {
        let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
        in_netns(self.host(host).ns.name(), || http_get(addr, path))
    }

    /// `host`'s `/metrics` text (empty if unreachable).
    pub fn metrics(&self, host: &str) -> String {
        self.agent_http(host, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The sum of every sample of metric `name` (a series like
    /// `name{label="x"}` also works) on `host`; `None` when the page is
    /// unreachable or has no such sample. Waits on "the agent noticed"
    /// compare this with `Some(..)`, so a missing metric never reads as 0.
    pub fn metric(&self, host: &str, name: &str) -> Option<f64> {
        sum_metric(&self.metrics(host), name)
    }

    /// Like [`Self::metric`], but panics (with the page) when the metric
    /// is not exposed.
    pub fn metric_sum(&self, host: &str, name: &str) -> f64 {
        let page = self.metrics(host);
        sum_metric(&page, name)
            .unwrap_or_else(|| panic!("no metric {name} on {host}; /metrics:\n{page}"))
    }

    /// True while `host`'s agent process is alive.
    pub fn agent_running(&mut self, host: &str) -> bool {
        self.host_mut(host)
            .agent
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id of `host`'s running agent (for reading its
    /// `/proc/<pid>/stat`), if one runs.
    pub fn agent_pid(&self, host: &str) -> Option<u32> {
        self.host(host).agent.as_ref().map(std::process::Child::id)
    }

    /// Kills `host`'s agent at once (SIGKILL), as a crash would.
    pub fn kill_agent(&mut self, host: &str) {
        if let Some(mut child) = self.host_mut(host).agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops `host`'s agent gracefully (SIGTERM) and returns its exit status
    /// code (None if it had to be killed or was not running).
    pub fn stop_agent(&mut self, host: &str) -> Option<i32> {
        let child = self.host_mut(host).agent.take()?;
        terminate(child, Duration::from_secs(10))
    }

    /// The agent's whole log (JSON lines).
    pub fn agent_log(&self, host: &str) -> String {
        std::fs::read_to_string(&self.host(host).log).unwrap_or_default()
    }

    /// The last `n` lines of the agent's log.
    pub fn agent_log_tail(&self, host: &str, n: usize) -> String {
        let log = self.agent_log(host);
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}
