//! What a soak run measured ([`Figures`]), the pass/fail checks on those
//! figures (RSS growth, fd growth, metrics), and their printed table.

use super::*;

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

    pub(super) fn check_process(&mut self) {
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

    pub(super) fn check_metrics(&mut self) {
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
pub(super) fn added_targets(before: &[String], now: &[String]) -> Vec<String> {
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

pub(super) fn kib(s: Option<Sample>) -> String {
    s.map_or("-".to_owned(), |s| {
        format!("{} KiB (anon {} KiB)", s.rss_kib, s.anon_kib)
    })
}

pub(super) fn fds(s: Option<Sample>) -> String {
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
