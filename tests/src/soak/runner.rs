//! The soak run itself: a sandbox with one agent, churn written in rounds
//! with etcd restarts, compactions and SIGHUPs, a barrier after each round,
//! and the final kernel-versus-plan comparison.

use super::*;

/// Runs the soak and returns its figures (with `problems` filled in).
/// Panics on a failure that stops the run (agent dead, barrier timeout).
pub fn run(cfg: &SoakConfig) -> Figures {
    let mut soak = Soak::start(cfg);
    soak.churn();
    soak.finish()
}

/// A running soak.
pub(super) struct Soak<'a> {
    cfg: &'a SoakConfig,
    cluster: Cluster,
    churn: Churn,
    figures: Figures,
    start_ticks: u64,
    marker: u32,
    log_debug: bool,
}

impl<'a> Soak<'a> {
    pub(super) fn start(cfg: &'a SoakConfig) -> Self {
        let cluster = Cluster::builder()
            .hosts(1)
            .dataplane(cfg.dataplane)
            .agent_arg("--refresh-interval")
            .agent_arg("5")
            .build();
        let host = cluster.host(HOST).ns();
        for i in 0..cfg.shape.local {
            let iface = Churn::local_iface(i);
            let peer = format!("sk{i}");
            host.exec_ok(&[
                "ip", "link", "add", &iface, "type", "veth", "peer", "name", &peer,
            ]);
            host.exec_ok(&["ip", "link", "set", &iface, "up"]);
            host.exec_ok(&["ip", "link", "set", &peer, "up"]);
        }
        let pid = cluster
            .agent_pid(HOST)
            .unwrap_or_else(|| panic!("no agent on {HOST}"));
        let start_ticks =
            process::start_ticks(pid).unwrap_or_else(|| panic!("cannot read /proc/{pid}/stat"));
        let mut soak = Soak {
            cfg,
            churn: Churn::new(cfg.seed, cfg.shape),
            figures: Figures {
                dataplane: cfg.dataplane.as_str().to_owned(),
                pid,
                ..Figures::default()
            },
            cluster,
            start_ticks,
            marker: 0,
            log_debug: false,
        };
        // Status reports every 2 s: the reporter's own etcd connection comes
        // back within seconds of each etcd restart, so the warm-up sees it
        // both ways, and the reporter is soaked too.
        soak.cluster
            .put(&format!("{PREFIX}/config/ReportingIntervalSecs"), "2");
        let seed = soak.churn.seed();
        for chunk in seed.chunks(100) {
            soak.write(chunk);
        }
        let start = soak.barrier();
        soak.figures.start = Some(start);
        soak.note_warmup_fds(start);
        soak
    }

    pub(super) fn write(&self, ops: &[Op]) {
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        for op in ops {
            match op {
                Op::Put(k, v) => puts.push((k.clone(), v.clone())),
                Op::Delete(k) => deletes.push(k.clone()),
            }
        }
        self.cluster.txn(&puts, &deletes);
    }

    /// Writes every round, with the disruptions in the middle of rounds.
    pub(super) fn churn(&mut self) {
        let started = Instant::now();
        let mut round = 0;
        while self.figures.written < self.cfg.updates {
            round += 1;
            let budget = self.cfg.round.min(self.cfg.updates - self.figures.written);
            self.write_updates(budget / 2);
            self.disrupt(round);
            self.write_updates(budget - budget / 2);
            let mut sample = self.barrier();
            if round <= self.cfg.warmup_rounds {
                sample = self.note_warmup_fds(sample);
            }
            if round == self.cfg.warmup_rounds {
                self.figures.warm = Some(sample);
            }
            if round.is_multiple_of(PROGRESS_EVERY) {
                eprintln!(
                    "soak: round {round}, {} updates, {:.0} s, RSS {} KiB (anon {} KiB), fds {}",
                    self.figures.written,
                    started.elapsed().as_secs_f64(),
                    sample.rss_kib,
                    sample.anon_kib,
                    sample.fds
                );
            }
        }
        self.figures.duration = started.elapsed();
        self.figures.rounds = round;
    }

    /// Raises the warm-up fd range to a reading, once it has settled
    /// (for up to a second) towards the count at the start, which only a
    /// connection being re-established at this moment can exceed.
    pub(super) fn note_warmup_fds(&mut self, sample: Sample) -> Sample {
        let start = self.figures.start.map_or(sample.fds, |s| s.fds);
        let sample = process::settled_sample(self.figures.pid, start, Duration::from_secs(1))
            .unwrap_or(sample);
        if sample.fds >= self.figures.fds_warm_max {
            self.figures.fds_warm_max = sample.fds;
            self.figures.fd_targets.0 = process::fd_targets(self.figures.pid);
        }
        sample
    }

    pub(super) fn write_updates(&mut self, n: u64) {
        let mut left = n;
        while left > 0 {
            let max = self
                .cfg
                .max_batch
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let ops = self.churn.batch(max);
            self.write(&ops);
            left -= ops.len() as u64;
            self.figures.written += ops.len() as u64;
        }
    }

    pub(super) fn disrupt(&mut self, round: u64) {
        if round.is_multiple_of(self.cfg.compact_every) {
            self.cluster.compact();
            self.figures.compactions += 1;
        }
        if round.is_multiple_of(self.cfg.restart_every) {
            self.cluster.stop_etcd();
            self.cluster.start_etcd();
            self.figures.etcd_restarts += 1;
        }
        if round.is_multiple_of(self.cfg.sighup_every) {
            self.sighup();
        }
    }

    /// Flips the config file's log level between `info` and `warn` and
    /// sends SIGHUP, so each reload changes a live setting.
    pub(super) fn sighup(&mut self) {
        self.log_debug = !self.log_debug;
        let level = if self.log_debug { "warn" } else { "info" };
        std::fs::write(
            self.cluster.config_path(),
            format!("log_level = \"{level}\"\n"),
        )
        .unwrap_or_else(|e| panic!("cannot write the config file: {e}"));
        let pid = nix::unistd::Pid::from_raw(
            i32::try_from(self.figures.pid).unwrap_or_else(|_| panic!("pid out of range")),
        );
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)
            .unwrap_or_else(|e| panic!("cannot SIGHUP the agent: {e}"));
        self.figures.sighups += 1;
    }

    /// Moves the marker endpoint to a new address and waits for its route:
    /// then everything written before has been applied. Returns a reading
    /// of the (now idle) agent.
    pub(super) fn barrier(&mut self) -> Sample {
        self.marker += 1;
        let addr = format!("10.99.{}.{}", (self.marker >> 8) & 0xff, self.marker & 0xff);
        let key = format!("{PREFIX}/host/h2/workload/{ORCHESTRATOR}/marker/endpoint/eth0");
        let doc = json!({
            "state": "active", "name": "calimarker", "profile_ids": [],
            "ipv4_nets": [format!("{addr}/32")], "labels": {},
        });
        self.cluster.put(&key, &doc.to_string());
        let deadline = Instant::now() + BARRIER_TIMEOUT;
        loop {
            self.assert_same_agent();
            if self.has_route(&addr) {
                break;
            }
            if Instant::now() > deadline {
                let routes = self.cluster.host(HOST).ns().exec(&["ip", "-4", "route"]);
                panic!(
                    "barrier {}: no route to {addr} after {BARRIER_TIMEOUT:?}\nroutes:\n{}\nagent log:\n{}",
                    self.marker,
                    String::from_utf8_lossy(&routes.stdout),
                    self.cluster.agent_log_tail(HOST, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let sample = process::sample(self.figures.pid)
            .unwrap_or_else(|| panic!("agent pid {} is gone", self.figures.pid));
        self.figures.rss_peak_kib = self.figures.rss_peak_kib.max(sample.rss_kib);
        sample
    }

    pub(super) fn has_route(&self, addr: &str) -> bool {
        let out = self.cluster.host(HOST).ns().exec(&[
            "ip",
            "-4",
            "route",
            "show",
            "exact",
            &format!("{addr}/32"),
        ]);
        String::from_utf8_lossy(&out.stdout).contains("via 192.0.2.12")
    }

    /// Panics unless the agent started at the beginning still runs.
    pub(super) fn assert_same_agent(&mut self) {
        let running = self.cluster.agent_running(HOST);
        let ticks = process::start_ticks(self.figures.pid);
        if !running || ticks != Some(self.start_ticks) {
            panic!(
                "the agent (pid {}) exited or restarted:\n{}",
                self.figures.pid,
                self.cluster.agent_log_tail(HOST, 40)
            );
        }
    }

    /// The end checks: plan vs kernel, process readings, metrics.
    pub(super) fn finish(mut self) -> Figures {
        let end = self.barrier();
        self.figures.end = process::settled_sample(
            self.figures.pid,
            self.figures.fds_warm_max,
            Duration::from_secs(10),
        )
        .or(Some(end));
        self.figures.fd_targets.1 = process::fd_targets(self.figures.pid);
        self.figures.sockets = self
            .cluster
            .host(HOST)
            .ns()
            .exec_ok(&["ss", "-anp"])
            .lines()
            .filter(|l| l.contains(&format!("pid={},", self.figures.pid)))
            .map(str::to_owned)
            .collect();
        self.read_metrics();
        self.figures.routes = self.our_routes();
        self.check_plan();
        self.figures.check_process();
        self.figures.check_metrics();
        self.assert_same_agent();
        self.figures
    }

    pub(super) fn read_metrics(&mut self) {
        let text = self.cluster.metrics(HOST);
        let sum = |name: &str| sum_series(&text, name);
        self.figures.applied = sum("margay_updates_applied_total");
        self.figures.received = sum("margay_datastore_events_total");
        self.figures.pending = sum("margay_pending_updates");
        for reason in ["startup", "reconnect", "compacted", "refresh"] {
            let series = format!("margay_datastore_resyncs_total{{reason=\"{reason}\"}}");
            self.figures.resyncs.insert(reason.to_owned(), sum(&series));
        }
    }

    pub(super) fn our_routes(&self) -> usize {
        self.cluster
            .host(HOST)
            .ns()
            .exec_ok(&["ip", "-4", "route", "show", "proto", "80"])
            .lines()
            .count()
    }

    /// `margay plan --json` against the same etcd and kernel must find
    /// nothing to do, and nothing invalid in what the stream wrote.
    pub(super) fn check_plan(&mut self) {
        let plan = self.plan();
        let field = |name: &str| plan["plan"][name].clone();
        if field("routes") != json!([]) || field("firewall") != json!([]) {
            self.figures.problems.push(format!(
                "the kernel differs from what `margay plan` expects: {}",
                truncate(&plan["plan"].to_string(), 2_000)
            ));
        }
        if plan["ready"] != json!(true) {
            self.figures
                .problems
                .push(format!("plan: not ready: {plan}"));
        }
        if plan["invalid"].as_array().is_none_or(|a| !a.is_empty()) {
            self.figures.problems.push(format!(
                "plan: invalid keys in the stream: {}",
                truncate(&plan["invalid"].to_string(), 2_000)
            ));
        }
    }

    pub(super) fn plan(&self) -> Value {
        let bin = margay_bin();
        let config = self.cluster.config_path();
        let out = self.cluster.host(HOST).ns().exec(&[
            &bin.to_string_lossy(),
            "plan",
            "--json",
            "--config",
            &config.to_string_lossy(),
            "--hostname",
            HOST,
            "--etcd-endpoints",
            "http://192.0.2.2:2379",
            "--dataplane",
            self.cfg.dataplane.as_str(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "margay plan ({}): {e}\nstdout: {stdout}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// The sum of every sample of `name` (a metric name, or one series with
/// its labels) in a `/metrics` text. Panics when it is not there at all: a
/// missing metric must fail the soak, never read as 0.
pub(super) fn sum_series(text: &str, name: &str) -> f64 {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|rest| {
                rest.starts_with(' ') || (rest.starts_with('{') && !name.contains('{'))
            })
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(!values.is_empty(), "metric {name} is missing from /metrics");
    values.iter().sum()
}

pub(super) fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
