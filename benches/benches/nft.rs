//! nftables backend against the raw tool, side by side in one run.
//!
//! Scenario ([`scale_state`]): 1,000 endpoints, 100 profiles x 10 rules per
//! direction, 100 tags x 1,000 members (about 14,000 generic rules, 100,000
//! set members). Each case runs in throw-away namespaces:
//! * full programming: margay's netlink write of the full diff vs
//!   `nft -f` of the same ops rendered as text;
//! * one-endpoint change (add one endpoint, then remove it, repeatedly):
//!   margay's whole `FirewallManager::apply` (incremental lowering, scoped
//!   diff, one netlink transaction, ack) vs `nft -f` of the same delta;
//! * read-back of the full table: netlink dump vs `nft -j list table`;
//! * read-back of a table of long chains: 10 profiles at the rule cap
//!   (10,000 rules a direction), netlink dump only (inside the clock: the
//!   dumps and parsing of `observe`, nothing else).
//!
//! Needs root; `MARGAY_BENCH_REPS` sets repetitions (default 5).
//! Run: `cargo bench -p margay-benches --bench nft`.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use margay_dataplane::firewall::diff::{diff, observed_of};
use margay_dataplane::firewall::lower::lower;
use margay_dataplane::firewall::model::ObservedRuleset;
use margay_dataplane::firewall::nft::{render_batch, NftBackend, NftMode};
use margay_dataplane::firewall::scenario::{changes_between, rule, scale_state, DesiredBuilder};
use margay_dataplane::firewall::{FirewallBackend, FirewallManager, FirewallOp, FirewallSettings};
use margay_dataplane::netns::NetnsTarget;

const ENDPOINTS: usize = 1_000;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace for the life of the value.
struct Ns {
    name: String,
}

impl Ns {
    fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("mgy-bench-nft-{}-{n}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot create namespace {name}");
        Ns { name }
    }

    fn target(&self) -> NetnsTarget {
        NetnsTarget::named(&self.name).expect("valid namespace name")
    }

    fn backend(&self, mode: NftMode) -> NftBackend {
        NftBackend::with_mode(self.target(), mode).expect("nft backend")
    }

    /// `nft -f -` with `text`, as an operator would; returns the wall time
    /// of the nft process alone (namespace entry included).
    fn nft_f(&self, text: &str) -> Duration {
        let t = Instant::now();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(text.as_bytes()).expect("feed nft");
        }
        let out = child.wait_with_output().expect("wait nft");
        let d = t.elapsed();
        assert!(
            out.status.success(),
            "nft -f failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        d
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

struct Row {
    what: &'static str,
    margay: Duration,
    raw: Duration,
}

fn print_rows(rows: &[Row], extra: &[(&str, Duration)]) {
    println!("\nnftables (table inet margay), medians");
    println!(
        "{:<44} {:>11} {:>11} {:>8}",
        "case", "margay ms", "nft -f ms", "ratio"
    );
    for r in rows {
        let ratio = r.margay.as_secs_f64() / r.raw.as_secs_f64().max(1e-9);
        println!(
            "{:<44} {:>11} {:>11} {:>7.2}x",
            r.what,
            ms(r.margay),
            ms(r.raw),
            ratio
        );
    }
    for (what, d) in extra {
        println!("{:<44} {:>11}", what, ms(*d));
    }
}

/// Full programming, `reps` times, each in fresh namespaces.
fn bench_full(full: &[FirewallOp], reps: usize) -> Row {
    let text = render_batch(full).expect("render");
    println!(
        "full program: {} ops, {} rule lines, {} KiB of nft text",
        full.len(),
        text.lines().filter(|l| l.starts_with("add rule")).count(),
        text.len() / 1024
    );
    let (mut margay, mut raw) = (vec![], vec![]);
    for i in 0..reps {
        let (a, b) = (Ns::new(), Ns::new());
        let mut be = a.backend(NftMode::Netlink);
        let run_margay = |be: &mut NftBackend| {
            let t = Instant::now();
            be.write(full).expect("margay full write");
            t.elapsed()
        };
        // Alternate who goes first so neither always runs on a warmer system.
        if i % 2 == 0 {
            margay.push(run_margay(&mut be));
            raw.push(b.nft_f(&text));
        } else {
            raw.push(b.nft_f(&text));
            margay.push(run_margay(&mut be));
        }
        if i == 0 {
            let seen = be.observe().expect("read back");
            let other = b
                .backend(NftMode::Netlink)
                .observe()
                .expect("read back raw");
            assert_eq!(seen, other, "margay and raw namespaces differ");
        }
    }
    Row {
        what: "full programming (write)",
        margay: median(margay),
        raw: median(raw),
    }
}

/// One-endpoint change back and forth on a fully programmed host.
fn bench_delta(settings: &FirewallSettings, reps: usize) -> (Row, Row, Duration) {
    let s0 = scale_state(ENDPOINTS);
    let s1 = scale_state(ENDPOINTS + 1);
    let (l0, l1) = (lower(&s0, settings), lower(&s1, settings));
    let fwd = render_batch(&diff(&l1, &observed_of(&l0), None)).expect("render");
    let back = render_batch(&diff(&l0, &observed_of(&l1), None)).expect("render");
    let (a, b) = (Ns::new(), Ns::new());
    let mut m = FirewallManager::new(Box::new(a.backend(NftMode::Netlink)));
    m.start().expect("start");
    m.apply(&s0, &changes_between(&Default::default(), &s0), settings)
        .expect("full");
    b.nft_f(&render_batch(&diff(&l0, &ObservedRuleset::default(), None)).expect("render"));
    let (c01, c10) = (changes_between(&s0, &s1), changes_between(&s1, &s0));
    let (mut margay, mut raw, mut ops) = (vec![], vec![], 0);
    for i in 0..reps * 2 {
        let (state, changes, text) = if i % 2 == 0 {
            (&s1, &c01, &fwd)
        } else {
            (&s0, &c10, &back)
        };
        let t = Instant::now();
        let stats = m.apply(state, changes, settings).expect("margay delta");
        margay.push(t.elapsed());
        ops = ops.max(stats.ops);
        raw.push(b.nft_f(text));
    }
    println!(
        "one-endpoint change: {ops} ops, {} lines of nft text (add), {} (remove)",
        fwd.lines().count(),
        back.lines().count()
    );
    // Read-back of the whole table, both ways, and a full drift check.
    let (mut nl, mut tool, mut drift) = (vec![], vec![], vec![]);
    let mut nl_be = a.backend(NftMode::Netlink);
    let mut tool_be = a.backend(NftMode::Tool);
    for _ in 0..reps {
        let t = Instant::now();
        let seen = nl_be.observe().expect("netlink observe");
        nl.push(t.elapsed());
        let t = Instant::now();
        let seen_tool = tool_be.observe().expect("tool observe");
        tool.push(t.elapsed());
        assert_eq!(seen, seen_tool);
        let t = Instant::now();
        assert!(m.repair_drift(&s0, settings).expect("drift").is_clean());
        drift.push(t.elapsed());
    }
    let change = Row {
        what: "one-endpoint change (manager apply)",
        margay: median(margay),
        raw: median(raw),
    };
    let read = Row {
        what: "read back full table (netlink vs nft -j)",
        margay: median(nl),
        raw: median(tool),
    };
    (change, read, median(drift))
}

/// Read-back of 10 profiles x 10,000 inbound rules (the per-direction cap),
/// one endpoint each: a few long chains rather than many short ones.
fn bench_long_chains(settings: &FirewallSettings, reps: usize) -> Duration {
    let mut b = DesiredBuilder::new();
    for p in 0..10 {
        let name = format!("long{p}");
        let allow = rule(margay_policy::desired::RuleAction::Allow);
        b.profile(&name, vec![allow; 10_000], vec![]);
        b.endpoint(&format!("cali{p}"), &format!("10.0.{p}.1/32"), &[&name]);
    }
    let desired = b.build();
    let ns = Ns::new();
    let mut m = FirewallManager::new(Box::new(ns.backend(NftMode::Netlink)));
    m.apply(&desired, &Default::default(), settings)
        .expect("program long chains");
    let mut be = ns.backend(NftMode::Netlink);
    let times = (0..reps)
        .map(|_| {
            let t = Instant::now();
            let seen = be.observe().expect("observe long chains");
            let took = t.elapsed();
            assert!(seen.chains.values().map(Vec::len).sum::<usize>() >= 100_000);
            took
        })
        .collect();
    median(times)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn main() {
    if !is_root() {
        println!("nft bench skipped: needs root (network namespaces)");
        return;
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !"nft".contains(&f)) {
        return;
    }
    let reps: usize = std::env::var("MARGAY_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let settings = FirewallSettings::default();
    let t = Instant::now();
    let s0 = lower(&scale_state(ENDPOINTS), &settings);
    let lower_time = t.elapsed();
    let t = Instant::now();
    let full = diff(&s0, &ObservedRuleset::default(), None);
    let diff_time = t.elapsed();
    let rules: usize = s0.chains.values().map(Vec::len).sum();
    let members: usize = s0.sets.values().map(|s| s.members.len()).sum();
    println!(
        "scenario: {ENDPOINTS} endpoints, {} chains, {rules} generic rules, {} sets, {members} members; reps {reps}",
        s0.chains.len(),
        s0.sets.len(),
    );
    let full_row = bench_full(&full, reps);
    let (change, read, drift) = bench_delta(&settings, reps);
    let long = bench_long_chains(&settings, reps);
    print_rows(
        &[full_row, change, read],
        &[
            ("full lowering (pure)", lower_time),
            ("full diff from empty (pure)", diff_time),
            ("drift check at scale (generation unchanged)", drift),
            ("read back 10 chains x 10,000 rules (netlink)", long),
        ],
    );
}
