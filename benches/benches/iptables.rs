//! iptables backend against the raw tools, side by side in one run.
//!
//! For each iptables variant: full programming of a 1,000-endpoint host
//! (about 10,000 generic rules, 100,000 set members) and a one-endpoint
//! change, each timed as margay's `write` (plan + render + tools) and as the
//! bare `ipset restore` + `iptables-restore --noflush` of the very same text
//! in a second throw-away namespace. Prints a table with medians, minima and
//! ratios (each side goes first equally often; the host is shared, so look
//! at both).
//! Needs root; `MARGAY_BENCH_REPS` sets the repetitions (default 5).
//!
//! Run: `cargo bench -p margay-benches --bench iptables`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use margay_dataplane::firewall::diff::{diff, observed_of};
use margay_dataplane::firewall::iptables::plan::{self, Known};
use margay_dataplane::firewall::iptables::{IptablesBackend, Plan, Variant};
use margay_dataplane::firewall::lower::lower;
use margay_dataplane::firewall::model::{fnv1a64, ObservedRuleset};
use margay_dataplane::firewall::scenario::{id, rule, DesiredBuilder};
use margay_dataplane::firewall::{FirewallBackend, FirewallOp, FirewallSettings};
use margay_dataplane::netns::NetnsTarget;
use margay_policy::desired::{
    DesiredState, IpSetId, IpVersion, PortRange, Protocol, RuleAction, SideMatch,
};

const ENDPOINTS: usize = 1_000;
const PROFILES: usize = 100;
const RULES_PER_PROFILE_DIRECTION: usize = 10;
const TAGS: usize = 100;
const MEMBERS_PER_TAG: usize = 1_000;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace for the life of the value.
struct Ns {
    name: String,
}

impl Ns {
    fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("mgy-bench-ipt-{}-{n}", std::process::id());
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

    /// Runs `program args < stdin` inside, as an operator would by hand.
    fn pipe(&self, program: &str, args: &[&str], stdin: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tool");
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(stdin.as_bytes()).expect("feed tool");
        }
        let out = child.wait_with_output().expect("wait tool");
        assert!(
            out.status.success(),
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The scale scenario: endpoints spread over profiles whose rules use tags.
fn scenario(extra_endpoint: bool) -> DesiredState {
    let mut b = DesiredBuilder::new();
    for p in 0..PROFILES {
        let rules = |dir: usize| {
            (0..RULES_PER_PROFILE_DIRECTION)
                .map(|r| {
                    let mut x = rule(RuleAction::Allow);
                    x.ip_version = Some(IpVersion::V4);
                    x.protocol = Some(Protocol(6));
                    x.src = SideMatch {
                        tag: Some(IpSetId::Tag(id(&format!("tag{}", (p + r + dir) % TAGS)))),
                        ..SideMatch::default()
                    };
                    let port = 1000 + u16::try_from(r).expect("small");
                    x.dst.ports = vec![PortRange { lo: port, hi: port }];
                    x
                })
                .collect::<Vec<_>>()
        };
        b.profile(&format!("prof{p}"), rules(0), rules(1));
    }
    let endpoints = ENDPOINTS + usize::from(extra_endpoint);
    let addr = |e: usize| format!("10.0.{}.{}/32", e / 250, 1 + e % 250);
    for t in 0..TAGS {
        let mut members: Vec<String> = (0..MEMBERS_PER_TAG)
            .map(|m| {
                let n = t * MEMBERS_PER_TAG + m;
                format!("10.{}.{}.{}/32", 100 + n / 65536, (n / 256) % 256, n % 256)
            })
            .collect();
        if t == 0 && extra_endpoint {
            // The new endpoint carries tag0: one member more.
            members.push(addr(ENDPOINTS));
        }
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        b.set(IpSetId::Tag(id(&format!("tag{t}"))), &refs);
    }
    for e in 0..endpoints {
        // Interface names like the CNI plugin's: prefix + hex of a hash.
        let ifname = format!("cali{:011x}", fnv1a64(&e.to_le_bytes()) >> 20);
        b.endpoint(&ifname, &addr(e), &[&format!("prof{}", e % PROFILES)]);
    }
    b.build()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Runs a plan's texts with the bare tools.
fn raw_apply(ns: &Ns, variant: Variant, plan: &Plan) -> Duration {
    let t = Instant::now();
    if !plan.ipset_pre.is_empty() {
        ns.pipe("ipset", &["-exist", "restore"], &plan.ipset_pre);
    }
    for f in [IpVersion::V4, IpVersion::V6] {
        if !plan.iptables(f).is_empty() {
            ns.pipe(
                variant.restore_bin(f),
                Variant::RESTORE_ARGS,
                plan.iptables(f),
            );
        }
    }
    if !plan.ipset_post.is_empty() {
        ns.pipe("ipset", &["-exist", "restore"], &plan.ipset_post);
    }
    t.elapsed()
}

struct Row {
    what: &'static str,
    margay: Vec<Duration>,
    raw: Vec<Duration>,
}

fn print_rows(variant: Variant, rows: &[Row], extra: &[(&str, Duration)]) {
    println!("\niptables variant: {}", variant.name());
    println!(
        "{:<36} {:>7} {:>11} {:>11} {:>7} {:>9} {:>9} {:>7}",
        "case", "samples", "margay med", "raw med", "ratio", "margay min", "raw min", "ratio"
    );
    for r in rows {
        let (m, w) = (median(r.margay.clone()), median(r.raw.clone()));
        let (mm, wm) = (min(&r.margay), min(&r.raw));
        println!(
            "{:<36} {:>7} {:>11} {:>11} {:>6.2}x {:>9} {:>9} {:>6.2}x",
            r.what,
            r.margay.len(),
            ms(m),
            ms(w),
            ratio(m, w),
            ms(mm),
            ms(wm),
            ratio(mm, wm)
        );
    }
    for (what, d) in extra {
        println!("{what:<36} {:>7} {:>11}", "", ms(*d));
    }
}

fn min(v: &[Duration]) -> Duration {
    v.iter().copied().min().unwrap_or_default()
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn count_lines(plan: &Plan) -> (usize, usize) {
    let rules = plan
        .v4
        .lines()
        .chain(plan.v6.lines())
        .filter(|l| l.starts_with("-A "))
        .count();
    let members = plan
        .ipset_pre
        .lines()
        .filter(|l| l.starts_with("add "))
        .count();
    (rules, members)
}

/// Times `margay` and `raw` in the given order; returns (margay, raw).
fn timed_pair(
    margay_first: bool,
    margay: impl FnOnce() -> Duration,
    raw: impl FnOnce() -> Duration,
) -> (Duration, Duration) {
    if margay_first {
        let m = margay();
        (m, raw())
    } else {
        let r = raw();
        (margay(), r)
    }
}

/// Full programming, `reps` times (even: each side goes first equally
/// often), each in fresh namespaces.
fn bench_full(variant: Variant, ops: &[FirewallOp], reps: usize) -> (Row, Duration, Duration) {
    let (mut margay, mut raw, mut observe, mut render) = (vec![], vec![], vec![], vec![]);
    for i in 0..reps.next_multiple_of(2) {
        // Let the kernel finish tearing down the previous namespaces.
        std::thread::sleep(Duration::from_secs(2));
        let (a, b) = (Ns::new(), Ns::new());
        let mut be = IptablesBackend::with_variant(&a.target(), variant);
        let t = Instant::now();
        be.observe().expect("observe empty");
        observe.push(t.elapsed());
        let mut plan_be = IptablesBackend::with_variant(&b.target(), variant);
        plan_be.observe().expect("observe empty");
        let t = Instant::now();
        let plan = plan_be.plan(ops).expect("plan");
        render.push(t.elapsed());
        if i == 0 {
            let (rules, members) = count_lines(&plan);
            println!(
                "full program ({}): {rules} kernel rules (v4+v6), {members} set members, {} KiB text",
                variant.name(),
                (plan.v4.len() + plan.v6.len() + plan.ipset_pre.len()) / 1024
            );
        }
        let (m, r) = timed_pair(
            (i & 1) == 0,
            || {
                let t = Instant::now();
                be.write(ops).expect("margay full write");
                t.elapsed()
            },
            || raw_apply(&b, variant, &plan),
        );
        margay.push(m);
        raw.push(r);
        if i == 0 {
            let seen = be.observe().expect("read back");
            let again = plan_be.observe().expect("read back raw");
            assert_eq!(seen, again, "margay and raw namespaces differ");
        }
    }
    let row = Row {
        what: "full programming (write)",
        margay,
        raw,
    };
    (row, median(observe), median(render))
}

/// One-endpoint change back and forth on a fully programmed host, `8 *
/// reps` times; each direction runs margay first and raw first equally often.
fn bench_delta(
    variant: Variant,
    full: &[FirewallOp],
    fwd: &[FirewallOp],
    back: &[FirewallOp],
    reps: usize,
) -> (Row, Duration) {
    let (a, b) = (Ns::new(), Ns::new());
    let mut be = IptablesBackend::with_variant(&a.target(), variant);
    be.write(full).expect("full write");
    let full_plan = IptablesBackend::with_variant(&b.target(), variant)
        .plan(full)
        .expect("plan full");
    raw_apply(&b, variant, &full_plan);
    let (mut margay, mut raw) = (vec![], vec![]);
    // Deltas are quick: many more samples than full runs.
    for i in 0..(reps * 8).next_multiple_of(4) {
        let ops = if (i & 1) == 0 { fwd } else { back };
        // The raw side runs margay's text for the same change (A and B
        // hold the same state; planning is pure here, and untimed).
        let plan = be.plan(ops).expect("plan delta");
        if i == 0 {
            let (rules, members) = count_lines(&plan);
            println!(
                "one-endpoint change ({}): {} ops, {rules} kernel rules, {members} members added",
                variant.name(),
                ops.len()
            );
        }
        let (m, r) = timed_pair(
            (i >> 1) & 1 == 0,
            || {
                let t = Instant::now();
                be.write(ops).expect("margay delta");
                t.elapsed()
            },
            || raw_apply(&b, variant, &plan),
        );
        margay.push(m);
        raw.push(r);
    }
    let read: Vec<Duration> = (0..3)
        .map(|_| {
            let t = Instant::now();
            be.observe().expect("read back");
            t.elapsed()
        })
        .collect();
    let row = Row {
        what: "one-endpoint change (write)",
        margay,
        raw,
    };
    (row, median(read))
}

/// Effective uid 0, from /proc (no extra dependency).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The CPU count and load average, so runs on a busy host can be told apart.
fn print_machine() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "cpus: {}, load average at start: {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// Writes the texts of the full program and of the change both ways into
/// `dir`, for running the tools by hand.
fn dump_texts(
    dir: std::path::PathBuf,
    full: &[FirewallOp],
    fwd: &[FirewallOp],
    back: &[FirewallOp],
) {
    let p = plan::plan(full, &Known::default()).expect("plan");
    let f = plan::plan(fwd, p.known_after()).expect("plan");
    let b = plan::plan(back, f.known_after()).expect("plan");
    for (prefix, p) in [("full", &p), ("fwd", &f), ("back", &b)] {
        for (part, text) in [("ipset", &p.ipset_pre), ("v4", &p.v4), ("v6", &p.v6)] {
            std::fs::write(dir.join(format!("{prefix}.{part}")), text).expect("write dump");
        }
    }
}

fn main() {
    if !is_root() {
        println!("iptables bench skipped: needs root (network namespaces)");
        return;
    }
    // `cargo bench` passes --bench; a filter argument not naming us skips.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !"iptables".contains(&f)) {
        return;
    }
    let reps: usize = std::env::var("MARGAY_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    print_machine();
    let settings = FirewallSettings::default();
    let t = Instant::now();
    let s0 = lower(&scenario(false), &settings);
    let s1 = lower(&scenario(true), &settings);
    let lower_time = t.elapsed();
    let full = diff(&s0, &ObservedRuleset::default(), None);
    let fwd = diff(&s1, &observed_of(&s0), None);
    let back = diff(&s0, &observed_of(&s1), None);
    let rules: usize = s0.chains.values().map(Vec::len).sum();
    let members: usize = s0.sets.values().map(|s| s.members.len()).sum();
    let sets: BTreeSet<&IpNet> = s0.sets.values().flat_map(|s| &s.members).collect();
    println!(
        "scenario: {ENDPOINTS} endpoints, {} chains, {rules} generic rules, {} sets, {members} members ({} distinct); lowering both states {} ms; reps {reps}",
        s0.chains.len(),
        s0.sets.len(),
        sets.len(),
        ms(lower_time)
    );
    // Pure planning (no I/O): the CPU margay adds on top of the tools.
    let pure: Vec<Duration> = (0..reps.max(3))
        .map(|_| {
            let t = Instant::now();
            let p = plan::plan(&full, &Known::default()).expect("pure plan");
            std::hint::black_box(&p);
            t.elapsed()
        })
        .collect();
    println!(
        "pure plan+render of the full program: {} ms",
        ms(median(pure))
    );
    if let Some(dir) = std::env::var_os("MARGAY_BENCH_DUMP") {
        dump_texts(std::path::PathBuf::from(dir), &full, &fwd, &back);
        return;
    }
    if std::env::var_os("MARGAY_BENCH_PLAN_ONLY").is_some() {
        for _ in 0..20 {
            std::hint::black_box(plan::plan(&full, &Known::default()).expect("plan"));
        }
        return;
    }
    for variant in [Variant::Nft, Variant::Legacy] {
        let (full_row, observe_empty, render) = bench_full(variant, &full, reps);
        let (delta_row, read_back) = bench_delta(variant, &full, &fwd, &back, reps);
        print_rows(
            variant,
            &[full_row, delta_row],
            &[
                ("plan+render full program (in write)", render),
                ("observe, empty namespace", observe_empty),
                ("observe, full program (drift read)", read_back),
            ],
        );
    }
}
