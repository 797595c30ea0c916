//! The soak: the real `margay run` in a sandbox host namespace against a
//! real etcd, fed a long stream of endpoint, profile and policy churn
//! (adds, updates, deletes, batched in transactions; see [`churn`]) while
//! etcd is compacted, etcd is restarted on the same data directory and the
//! agent gets SIGHUPs. Afterwards:
//!
//! - the kernel equals `margay plan`'s expectation (`margay plan --json`
//!   against the same etcd and kernel has nothing to do), and holds routes;
//! - resident memory at the end is less than 5 % above what it was after
//!   the warm-up, and no file descriptors were added since then;
//! - the agent process never restarted (same pid, same start time);
//! - its metrics say every update it received was applied.
//!
//! The run goes in rounds of [`SoakConfig::round`] updates. Each round ends
//! with a barrier: a marker endpoint on another host gets a new address and
//! the test waits for its route in the kernel, which proves the agent has
//! applied everything written before it. Memory and descriptors are read at
//! these barriers, when the agent is idle. The warm-up is the first
//! [`SoakConfig::warmup_rounds`] rounds: by then every key has been written
//! and every disruption (compaction, etcd restart, SIGHUP) has happened at
//! least once, so every code path has allocated what it keeps.

pub mod churn;
pub mod process;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::sandbox::{margay_bin, Cluster, Dataplane, ORCHESTRATOR, PREFIX};
use churn::{Churn, Op, Shape};
use process::Sample;

/// Allowed RSS growth from the end of the warm-up to the end of the run.
pub const MAX_RSS_GROWTH: f64 = 0.05;
/// How long one barrier may take before the run fails.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(60);
/// Updates per round of the long soak (`SOAK_ROUND` changes it).
const LONG_ROUND: u64 = 2_000;
/// The long soak prints a progress line every this many rounds.
const PROGRESS_EVERY: u64 = 25;
/// The host whose agent is soaked.
const HOST: &str = "h1";

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Updates (key changes) to write after the seed.
    pub updates: u64,
    /// The agent's firewall backend.
    pub dataplane: Dataplane,
    /// Updates per round (between barriers).
    pub round: u64,
    /// Rounds of warm-up before the baseline reading.
    pub warmup_rounds: u64,
    /// Compact etcd in every n-th round.
    pub compact_every: u64,
    /// Restart etcd in every n-th round.
    pub restart_every: u64,
    /// SIGHUP the agent in every n-th round.
    pub sighup_every: u64,
    /// Largest transaction.
    pub max_batch: usize,
    /// The objects the stream moves between.
    pub shape: Shape,
    /// Seed of the stream.
    pub seed: u64,
}

impl SoakConfig {
    /// The test-sized soak CI runs (about a minute per backend).
    pub fn ci(dataplane: Dataplane) -> Self {
        SoakConfig {
            updates: 40_000,
            dataplane,
            round: 1_000,
            warmup_rounds: 12,
            compact_every: 3,
            restart_every: 5,
            sighup_every: 2,
            max_batch: 40,
            shape: Shape {
                local: 8,
                remote: 120,
                profiles: 8,
                policies: 6,
            },
            seed: 0x5eed,
        }
    }

    /// The long soak (`make soak`): `SOAK_UPDATES` (default 1,000,000) on
    /// `SOAK_DATAPLANE` (default nftables), disruptions spaced so a
    /// million updates see hundreds of each. The warm-up is the first tenth
    /// of the run (at least 20 rounds, 40,000 updates; `SOAK_WARMUP_ROUNDS`
    /// sets it). `SOAK_COMPACT_EVERY`, `SOAK_RESTART_EVERY` and
    /// `SOAK_SIGHUP_EVERY` space the disruptions (in rounds of 2,000
    /// updates), e.g. to tell which one costs memory.
    pub fn long_from_env() -> Self {
        let updates = env_number("SOAK_UPDATES").unwrap_or(1_000_000);
        let dataplane = match std::env::var("SOAK_DATAPLANE").as_deref() {
            Ok("iptables") => Dataplane::Iptables,
            Ok("nftables") | Err(_) => Dataplane::Nftables,
            Ok(other) => panic!("SOAK_DATAPLANE={other}: nftables or iptables"),
        };
        let round = env_number("SOAK_ROUND").unwrap_or(LONG_ROUND).max(1);
        SoakConfig {
            updates,
            dataplane,
            round,
            warmup_rounds: env_number("SOAK_WARMUP_ROUNDS")
                .unwrap_or((updates / round / 10).max(20)),
            compact_every: env_number("SOAK_COMPACT_EVERY").unwrap_or(2),
            restart_every: env_number("SOAK_RESTART_EVERY").unwrap_or(10),
            sighup_every: env_number("SOAK_SIGHUP_EVERY").unwrap_or(3),
            max_batch: 50,
            shape: Shape {
                local: 16,
                remote: 240,
                profiles: 12,
                policies: 8,
            },
            seed: env_number("SOAK_SEED").unwrap_or(0x5eed),
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    Some(
        digits
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text}: {e}")),
    )
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Backend.
    pub dataplane: String,
    /// Updates written by the test (seed excluded).
    pub written: u64,
    /// `margay_updates_applied_total` at the end.
    pub applied: f64,
    /// `margay_datastore_events_total` at the end.
    pub received: f64,
    /// `margay_pending_updates` at the end.
    pub pending: f64,
    /// Wall time of the churn.
    pub duration: Duration,
    /// At the first barrier (after the seed).
    pub start: Option<Sample>,
    /// After the warm-up.
    pub warm: Option<Sample>,
    /// At the last barrier.
    pub end: Option<Sample>,
    /// Most open fds at any barrier up to the end of the warm-up: the
    /// count moves within this range as connections to etcd drop and come
    /// back; growth is a count above it.
    pub fds_warm_max: usize,
    /// What the fds were at that reading, and at the end (`/proc/<pid>/fd`
    /// link targets), to name a leak.
    pub fd_targets: (Vec<String>, Vec<String>),
    /// The agent's sockets at the end (`ss -anp`), to name a leak.
    pub sockets: Vec<String>,
    /// Largest RSS seen at any barrier, KiB.
    pub rss_peak_kib: u64,
    /// etcd restarts done.
    pub etcd_restarts: u64,
    /// Compactions done.
    pub compactions: u64,
    /// SIGHUPs sent.
    pub sighups: u64,
    /// Rounds (barriers) passed.
    pub rounds: u64,
    /// `margay_datastore_resyncs_total` by reason.
    pub resyncs: BTreeMap<String, f64>,
    /// Routes of ours in the kernel at the end.
    pub routes: usize,
    /// The agent's pid throughout.
    pub pid: u32,
    /// Everything that was wrong; empty for a pass.
    pub problems: Vec<String>,
}

impl Figures {
    /// RSS growth from the warm-up reading to the end, as a fraction.
    pub fn rss_growth(&self) -> Option<f64> {
        let (warm, end) = (self.warm?, self.end?);
        Some(end.rss_kib as f64 / warm.rss_kib as f64 - 1.0)
    }

    fn check_process(&mut self) {
        match self.rss_growth() {
            Some(g) if g >= MAX_RSS_GROWTH => self.problems.push(format!(
                "RSS grew {:.1} % after the warm-up (limit {:.0} %)",
                g * 100.0,
                MAX_RSS_GROWTH * 100.0
            )),
            Some(_) => {}
            None => self.problems.push("no RSS readings".to_owned()),
        }
        if let Some(end) = self.end {
            if end.fds > self.fds_warm_max {
                let new = added_targets(&self.fd_targets.0, &self.fd_targets.1);
                self.problems.push(format!(
                    "open fds grew from at most {} during the warm-up to {} at the end (new: {new:?}; sockets now:\n{})",
                    self.fds_warm_max, end.fds, self.sockets.join("\n")
                ));
            }
        }
    }

    fn check_metrics(&mut self) {
        if self.applied <= 0.0 {
            self.problems
                .push("margay_updates_applied_total is 0 or missing".to_owned());
        }
        if self.applied != self.received {
            self.problems.push(format!(
                "the agent received {} updates but applied {}",
                self.received, self.applied
            ));
        }
        if self.pending != 0.0 {
            self.problems
                .push(format!("{} updates still pending at the end", self.pending));
        }
        if self.routes == 0 {
            self.problems
                .push("no routes of ours in the kernel at the end".to_owned());
        }
    }
}

/// The fd targets in `now` beyond those in `before` (counting duplicates).
fn added_targets(before: &[String], now: &[String]) -> Vec<String> {
    let mut left: Vec<&String> = before.iter().collect();
    now.iter()
        .filter(|t| match left.iter().position(|b| b == t) {
            Some(i) => {
                left.swap_remove(i);
                false
            }
            None => true,
        })
        .cloned()
        .collect()
}

fn kib(s: Option<Sample>) -> String {
    s.map_or("-".to_owned(), |s| {
        format!("{} KiB (anon {} KiB)", s.rss_kib, s.anon_kib)
    })
}

fn fds(s: Option<Sample>) -> String {
    s.map_or("-".to_owned(), |s| s.fds.to_string())
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.duration.as_secs_f64();
        writeln!(
            f,
            "soak figures ({} backend, agent pid {})",
            self.dataplane, self.pid
        )?;
        writeln!(
            f,
            "  updates written:          {} in {} rounds",
            self.written, self.rounds
        )?;
        writeln!(
            f,
            "  updates applied (metric): {} (received {}, pending {})",
            self.applied, self.received, self.pending
        )?;
        writeln!(
            f,
            "  duration:                 {secs:.1} s ({:.0} updates/s)",
            self.written as f64 / secs.max(0.001)
        )?;
        writeln!(
            f,
            "  RSS start / after warm-up / end: {} / {} / {} (growth {}, peak {} KiB)",
            kib(self.start),
            kib(self.warm),
            kib(self.end),
            self.rss_growth()
                .map_or("-".to_owned(), |g| format!("{:+.2} %", g * 100.0)),
            self.rss_peak_kib
        )?;
        writeln!(
            f,
            "  fds start / after warm-up (most during warm-up) / end: {} / {} ({}) / {}",
            fds(self.start),
            fds(self.warm),
            self.fds_warm_max,
            fds(self.end)
        )?;
        writeln!(
            f,
            "  etcd restarts: {}, compactions: {}, SIGHUPs: {}",
            self.etcd_restarts, self.compactions, self.sighups
        )?;
        let resyncs: Vec<String> = self
            .resyncs
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        writeln!(f, "  agent resyncs: {}", resyncs.join(", "))?;
        writeln!(f, "  routes of ours at the end: {}", self.routes)?;
        if self.problems.is_empty() {
            write!(f, "  result: PASS (kernel == plan, no restart, no leak)")
        } else {
            write!(
                f,
                "  result: FAIL\n    - {}",
                self.problems.join("\n    - ")
            )
        }
    }
}

/// Runs the soak and returns its figures (with `problems` filled in).
/// Panics on a failure that stops the run (agent dead, barrier timeout).
pub fn run(cfg: &SoakConfig) -> Figures {
    let mut soak = Soak::start(cfg);
    soak.churn();
    soak.finish()
}

/// A running soak.
struct Soak<'a> {
    cfg: &'a SoakConfig,
    cluster: Cluster,
    churn: Churn,
    figures: Figures,
    start_ticks: u64,
    marker: u32,
    log_debug: bool,
}

impl<'a> Soak<'a> {
    fn start(cfg: &'a SoakConfig) -> Self {
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

    fn write(&self, ops: &[Op]) {
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
    fn churn(&mut self) {
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
    fn note_warmup_fds(&mut self, sample: Sample) -> Sample {
        let start = self.figures.start.map_or(sample.fds, |s| s.fds);
        let sample = process::settled_sample(self.figures.pid, start, Duration::from_secs(1))
            .unwrap_or(sample);
        if sample.fds >= self.figures.fds_warm_max {
            self.figures.fds_warm_max = sample.fds;
            self.figures.fd_targets.0 = process::fd_targets(self.figures.pid);
        }
        sample
    }

    fn write_updates(&mut self, n: u64) {
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

    fn disrupt(&mut self, round: u64) {
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
    fn sighup(&mut self) {
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
    fn barrier(&mut self) -> Sample {
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

    fn has_route(&self, addr: &str) -> bool {
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
    fn assert_same_agent(&mut self) {
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
    fn finish(mut self) -> Figures {
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

    fn read_metrics(&mut self) {
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

    fn our_routes(&self) -> usize {
        self.cluster
            .host(HOST)
            .ns()
            .exec_ok(&["ip", "-4", "route", "show", "proto", "80"])
            .lines()
            .count()
    }

    /// `margay plan --json` against the same etcd and kernel must find
    /// nothing to do, and nothing invalid in what the stream wrote.
    fn check_plan(&mut self) {
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

    fn plan(&self) -> Value {
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
fn sum_series(text: &str, name: &str) -> f64 {
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

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_summed_and_a_missing_one_panics() {
        let text = "# HELP x\nmargay_a_total{k=\"1\"} 2\nmargay_a_total{k=\"2\"} 3\nmargay_ab 7\nmargay_b 1.5\n";
        assert_eq!(sum_series(text, "margay_a_total"), 5.0);
        assert_eq!(sum_series(text, "margay_a_total{k=\"2\"}"), 3.0);
        assert_eq!(sum_series(text, "margay_b"), 1.5);
        let missing = std::panic::catch_unwind(|| sum_series(text, "margay_c"));
        assert!(missing.is_err());
    }

    #[test]
    fn added_fd_targets_count_duplicates() {
        let v = |xs: &[&str]| xs.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let before = v(&["/dev/null", "socket:[1]"]);
        let now = v(&["/dev/null", "/dev/null", "socket:[1]", "socket:[2]"]);
        assert_eq!(
            added_targets(&before, &now),
            v(&["/dev/null", "socket:[2]"])
        );
    }

    #[test]
    fn growth_and_fd_checks_fail_when_they_should() {
        let mut f = Figures {
            fds_warm_max: 20,
            warm: Some(Sample {
                rss_kib: 1000,
                anon_kib: 500,
                fds: 19,
            }),
            end: Some(Sample {
                rss_kib: 1049,
                anon_kib: 500,
                fds: 20,
            }),
            ..Figures::default()
        };
        f.check_process();
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        f.end = Some(Sample {
            rss_kib: 1050,
            anon_kib: 500,
            fds: 21,
        });
        f.check_process();
        assert_eq!(f.problems.len(), 2, "{:?}", f.problems);
    }
}
