//! nftables backend against the raw tool, side by side in one run.
//!
//! Scenario ([`scale_state`]): 1,000 endpoints, 100 profiles x 10 rules per
//! direction, 100 tags x 1,000 members (about 14,000 generic rules, 100,000
//! set members). Each case runs in throw-away namespaces, and what is inside
//! each clock is the same on every row that programs:
//! * full programming and one-endpoint change: margay's whole
//!   `FirewallManager::apply` (lowering, diff, one netlink transaction and
//!   its ack; the manager has already read the namespace back in `start`;
//!   no routes, sysctls or neighbours) vs `nft -f` of the same ops,
//!   rendered as text before the clock starts;
//! * read-back of the full table: the netlink dump and its parsing vs
//!   `nft -j list table` and the parsing of its JSON into the same model;
//! * read-back of a table of long chains: 10 profiles at the rule cap
//!   (10,000 rules a direction), netlink dump only.
//!
//! The tool runs as margay does in production: from inside the namespace
//! (a thread that entered it spawns `nft`), not through `ip netns exec`,
//! which would add an unshare and a remount per sample. In every loop
//! iteration the side that runs first alternates.
//!
//! Needs root (exits 1 without); `MARGAY_BENCH_REPS` sets repetitions
//! (default 5). Prints the README rows (`MARGAY-ROW`); a missed target
//! makes it exit 1 without that row.
//! Run: `cargo bench -p margay-benches --bench nft`.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use margay_benches::report::{require_root, Row, Table};
use margay_benches::timing::{
    format_count, format_duration, format_ratio, in_turn, median, ratio, timed,
};
use margay_dataplane::firewall::diff::{diff, observed_of};
use margay_dataplane::firewall::lower::lower;
use margay_dataplane::firewall::model::ObservedRuleset;
use margay_dataplane::firewall::nft::{render_batch, NftBackend, NftMode};
use margay_dataplane::firewall::scenario::{changes_between, rule, scale_state, DesiredBuilder};
use margay_dataplane::firewall::{FirewallBackend, FirewallManager, FirewallSettings};
use margay_dataplane::netns::NetnsTarget;
use margay_policy::desired::DesiredState;

const ENDPOINTS: usize = 1_000;
/// Full programming: margay at most this many times the tool's time.
const FULL_MAX_RATIO: f64 = 1.5;
/// One-endpoint change: the whole apply under this.
const CHANGE_MAX: Duration = Duration::from_millis(5);

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

    /// A started manager (the namespace read back) over a netlink backend.
    fn manager(&self) -> FirewallManager {
        let mut m = FirewallManager::new(Box::new(self.backend(NftMode::Netlink)));
        m.start().expect("start");
        m
    }

    /// `nft -f -` with `text`, spawned from a thread inside the namespace;
    /// the clock covers the nft process alone (spawn, parse, commit, exit).
    fn nft_f(&self, text: &str) -> Duration {
        self.target()
            .run_in(|| {
                let t = Instant::now();
                let mut child = Command::new("nft")
                    .args(["-f", "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn nft");
                if let Some(mut pipe) = child.stdin.take() {
                    pipe.write_all(text.as_bytes()).expect("feed nft");
                }
                let out = child.wait_with_output().expect("wait nft");
                let took = t.elapsed();
                assert!(
                    out.status.success(),
                    "nft -f failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                took
            })
            .expect("enter namespace")
    }

    /// `nft -j list table` and its parsing, by margay's tool-mode backend
    /// acting in its own namespace from a thread inside this one.
    fn nft_json_observe(&self) -> (ObservedRuleset, Duration) {
        self.target()
            .run_in(|| {
                let mut be = NftBackend::with_mode(NetnsTarget::current(), NftMode::Tool)
                    .expect("tool backend");
                let t = Instant::now();
                let seen = be.observe().expect("tool observe");
                (seen, t.elapsed())
            })
            .expect("enter namespace")
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Medians of both sides of one comparison.
struct Pair {
    margay: Duration,
    raw: Duration,
}

impl Pair {
    fn of(margay: &[Duration], raw: &[Duration]) -> Self {
        Pair {
            margay: median(margay),
            raw: median(raw),
        }
    }

    fn ratio(&self) -> f64 {
        ratio(self.margay, self.raw)
    }
}

/// Full programming, `reps` times, each in fresh namespaces.
fn bench_full(state: &DesiredState, settings: &FirewallSettings, reps: usize) -> Pair {
    let ops = diff(&lower(state, settings), &ObservedRuleset::default(), None);
    let text = render_batch(&ops).expect("render");
    println!(
        "full program: {} ops, {} rule lines, {} KiB of nft text",
        ops.len(),
        text.lines().filter(|l| l.starts_with("add rule")).count(),
        text.len() / 1024
    );
    let changes = changes_between(&DesiredState::default(), state);
    let (mut margay, mut raw) = (vec![], vec![]);
    for i in 0..reps {
        let (a, b) = (Ns::new(), Ns::new());
        let mut m = a.manager();
        let (stats, nft) = in_turn(
            i % 2 == 0,
            || {
                timed(|| {
                    m.apply(state, &changes, settings)
                        .expect("margay full apply")
                })
            },
            || b.nft_f(&text),
        );
        let ((stats, took), nft) = (stats, nft);
        assert!(
            stats.full,
            "a fresh manager's first apply compares everything"
        );
        if stats.ops != ops.len() {
            println!(
                "note: the manager wrote {} ops, the pure diff has {}",
                stats.ops,
                ops.len()
            );
        }
        margay.push(took);
        raw.push(nft);
        if i == 0 {
            let seen = a.backend(NftMode::Netlink).observe().expect("read back");
            let other = b
                .backend(NftMode::Netlink)
                .observe()
                .expect("read back raw");
            assert_eq!(seen, other, "margay and raw namespaces differ");
        }
    }
    Pair::of(&margay, &raw)
}

/// What the one-endpoint change bench measured.
struct DeltaFigures {
    change: Pair,
    read_back: Pair,
    drift: Duration,
}

/// One-endpoint change back and forth on a fully programmed host, then
/// read-backs of the whole table.
fn bench_delta(settings: &FirewallSettings, reps: usize) -> DeltaFigures {
    let s0 = scale_state(ENDPOINTS);
    let s1 = scale_state(ENDPOINTS + 1);
    let (l0, l1) = (lower(&s0, settings), lower(&s1, settings));
    let fwd = render_batch(&diff(&l1, &observed_of(&l0), None)).expect("render");
    let back = render_batch(&diff(&l0, &observed_of(&l1), None)).expect("render");
    let (a, b) = (Ns::new(), Ns::new());
    let mut m = a.manager();
    m.apply(&s0, &changes_between(&Default::default(), &s0), settings)
        .expect("full");
    b.nft_f(&render_batch(&diff(&l0, &ObservedRuleset::default(), None)).expect("render"));
    let (c01, c10) = (changes_between(&s0, &s1), changes_between(&s1, &s0));
    let (mut margay, mut raw, mut ops) = (vec![], vec![], 0);
    for i in 0..reps * 4 {
        let (state, changes, text) = if i % 2 == 0 {
            (&s1, &c01, &fwd)
        } else {
            (&s0, &c10, &back)
        };
        // Each direction runs margay first and the tool first equally often.
        let ((stats, took), nft) = in_turn(
            (i / 2) % 2 == 0,
            || timed(|| m.apply(state, changes, settings).expect("margay delta")),
            || b.nft_f(text),
        );
        margay.push(took);
        raw.push(nft);
        ops = ops.max(stats.ops);
    }
    println!(
        "one-endpoint change: {ops} ops, {} lines of nft text (add), {} (remove)",
        fwd.lines().count(),
        back.lines().count()
    );
    // Does going second cost either side (the other's teardown still
    // running)? Samples 0, 1, 4, 5, … ran margay first.
    let by_order = |v: &[Duration], first: bool| -> Duration {
        let picked: Vec<Duration> = (0..v.len())
            .filter(|i| ((i / 2) % 2 == 0) == first)
            .map(|i| v[i])
            .collect();
        median(&picked)
    };
    println!(
        "one-endpoint change by order: margay first {} / second {}; nft -f first {} / second {}",
        format_duration(by_order(&margay, true)),
        format_duration(by_order(&margay, false)),
        format_duration(by_order(&raw, false)),
        format_duration(by_order(&raw, true)),
    );
    let (mut nl, mut tool, mut drift) = (vec![], vec![], vec![]);
    let mut nl_be = a.backend(NftMode::Netlink);
    for i in 0..reps {
        let ((seen, took), (seen_tool, tool_took)) = in_turn(
            i % 2 == 0,
            || timed(|| nl_be.observe().expect("netlink observe")),
            || a.nft_json_observe(),
        );
        nl.push(took);
        tool.push(tool_took);
        assert_eq!(seen, seen_tool);
        let (report, took) = timed(|| m.repair_drift(&s0, settings).expect("drift"));
        assert!(report.is_clean());
        drift.push(took);
    }
    assert_eq!(
        nl_be.observe().expect("read back"),
        b.backend(NftMode::Netlink)
            .observe()
            .expect("read back raw"),
        "margay and raw namespaces differ after the changes"
    );
    DeltaFigures {
        change: Pair::of(&margay, &raw),
        read_back: Pair::of(&nl, &tool),
        drift: median(&drift),
    }
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
    let times: Vec<Duration> = (0..reps)
        .map(|_| {
            let (seen, took) = timed(|| be.observe().expect("observe long chains"));
            assert!(seen.chains.values().map(Vec::len).sum::<usize>() >= 100_000);
            took
        })
        .collect();
    median(&times)
}

fn print_table(full: &Pair, d: &DeltaFigures, extra: &[(&str, Duration)]) {
    println!("\nnftables (table inet margay), medians");
    println!(
        "{:<46} {:>11} {:>11} {:>8}",
        "case", "margay", "nft", "ratio"
    );
    for (what, p) in [
        ("full programming (whole apply / nft -f)", full),
        ("one-endpoint change (whole apply / nft -f)", &d.change),
        ("read back full table (netlink / nft -j)", &d.read_back),
    ] {
        println!(
            "{what:<46} {:>11} {:>11} {:>7.2}x",
            format_duration(p.margay),
            format_duration(p.raw),
            p.ratio()
        );
    }
    for (what, took) in extra {
        println!("{what:<46} {:>11}", format_duration(*took));
    }
}

/// The README rows; false when a target was missed (that row left out).
fn emit_rows(scale: &str, full: &Pair, d: &DeltaFigures, long: Duration) -> bool {
    let apply = "the whole `FirewallManager::apply`: lowering, diff, one netlink transaction \
                 and its ack; no routes/sysctls/neighbours";
    let tool = "`nft -f` run inside the namespace, text rendered beforehand";
    let mut ok = true;
    let mut row =
        |id: &str, what: String, margay: String, reference: String, target: &str, met: bool| {
            if met {
                Row {
                    table: Table::Performance,
                    id: id.into(),
                    what,
                    margay,
                    reference,
                    target: target.into(),
                }
                .emit();
            } else {
                eprintln!("nft: {id}: target {target} missed ({margay} vs {reference})");
                ok = false;
            }
        };
    row(
        "nft/full",
        format!("nftables, full programming: {scale}; {apply} (`nft`)"),
        format_duration(full.margay),
        format!(
            "{tool}: {} ({})",
            format_duration(full.raw),
            format_ratio(full.ratio())
        ),
        "≤ 1.5×",
        full.ratio() <= FULL_MAX_RATIO,
    );
    row(
        "nft/one-endpoint",
        format!("nftables, one-endpoint change at that scale; {apply} (`nft`)"),
        format_duration(d.change.margay),
        format!(
            "{tool}, the same delta: {} ({})",
            format_duration(d.change.raw),
            format_ratio(d.change.ratio())
        ),
        "< 5 ms",
        d.change.margay < CHANGE_MAX,
    );
    row(
        "nft/read-back",
        "nftables, drift read-back of the full table: netlink dump and parsing (`nft`)".into(),
        format_duration(d.read_back.margay),
        format!(
            "`nft -j list table` inside the namespace, with parsing: {}",
            format_duration(d.read_back.raw)
        ),
        "—",
        true,
    );
    row(
        "nft/long-chains",
        "nftables, read-back of a table of long chains: 10 profiles × 10,000 rules, \
         netlink dump and parsing, chain by chain (`nft`)"
            .into(),
        format_duration(long),
        "one whole-table dump before the chain-by-chain fix: 9.7 s (2026-11-29, not re-run)".into(),
        "—",
        true,
    );
    ok
}

fn main() {
    require_root("nft");
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
    let state = scale_state(ENDPOINTS);
    let (s0, lower_time) = timed(|| lower(&state, &settings));
    let (_, diff_time) = timed(|| diff(&s0, &ObservedRuleset::default(), None));
    let rules: usize = s0.chains.values().map(Vec::len).sum();
    let members: usize = s0.sets.values().map(|s| s.members.len()).sum();
    println!(
        "scenario: {ENDPOINTS} endpoints, {} chains, {rules} generic rules, {} sets, {members} members; reps {reps}",
        s0.chains.len(),
        s0.sets.len(),
    );
    let full = bench_full(&state, &settings, reps);
    let delta = bench_delta(&settings, reps);
    let long = bench_long_chains(&settings, reps);
    print_table(
        &full,
        &delta,
        &[
            ("full lowering (pure, inside the full apply)", lower_time),
            ("full diff from empty (pure, inside it too)", diff_time),
            ("drift check at scale (generation unchanged)", delta.drift),
            ("read back 10 chains x 10,000 rules (netlink)", long),
        ],
    );
    let scale = format!(
        "{} endpoints, {} rules, {} set members",
        format_count(ENDPOINTS),
        format_count(rules),
        format_count(members)
    );
    if !emit_rows(&scale, &full, &delta, long) {
        std::process::exit(1);
    }
}
