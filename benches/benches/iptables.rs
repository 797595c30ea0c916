//! iptables backend against the raw tools, side by side in one run.
//!
//! For each iptables variant (iptables-nft, iptables-legacy): full
//! programming of a 1,000-endpoint host (about 10,000 generic rules,
//! 100,000 set members) and a one-endpoint change. margay's clock holds
//! the whole `FirewallManager::apply`, as on the nftables rows: lowering,
//! diff, plan and render, `ipset restore` and one `iptables-restore
//! --noflush` per family (the manager has already read the namespace back
//! in `start`; no routes, sysctls or neighbours). The reference is the bare
//! `ipset restore` + `iptables-restore --noflush` of the very same text
//! (planned before the clock starts) in a second throw-away namespace.
//! Both sides run their tools as margay does in production: spawned from a
//! thread inside the namespace, never through `ip netns exec`. Each side
//! goes first equally often; the table shows medians, minima and ratios.
//! Needs root (exits 1 without); `MARGAY_BENCH_REPS` sets the repetitions
//! (default 5). Prints the README rows (`MARGAY-ROW`); a missed target
//! makes it exit 1 without that row.
//!
//! Run: `cargo bench -p margay-benches --bench iptables`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use margay_benches::report::{require_root, Row, Table};
use margay_benches::timing::{
    format_count, format_duration, format_ratio, in_turn, median, minimum, ratio, timed,
};
use margay_dataplane::firewall::diff::{diff, observed_of};
use margay_dataplane::firewall::iptables::plan::{self, Known};
use margay_dataplane::firewall::iptables::{IptablesBackend, Plan, Variant};
use margay_dataplane::firewall::lower::lower;
use margay_dataplane::firewall::model::{fnv1a64, ObservedRuleset};
use margay_dataplane::firewall::scenario::{changes_between, id, rule, DesiredBuilder};
use margay_dataplane::firewall::{FirewallBackend, FirewallManager, FirewallOp, FirewallSettings};
use margay_dataplane::netns::NetnsTarget;
use margay_policy::desired::{
    DesiredState, IpSetId, IpVersion, PortRange, Protocol, RuleAction, SideMatch,
};

const ENDPOINTS: usize = 1_000;
const PROFILES: usize = 100;
const RULES_PER_PROFILE_DIRECTION: usize = 10;
const TAGS: usize = 100;
const MEMBERS_PER_TAG: usize = 1_000;
/// Full programming: margay at most this many times the raw tools' time.
const FULL_MAX_RATIO: f64 = 1.5;
/// One-endpoint change: margay at most this many times the raw tools' time.
const CHANGE_MAX_RATIO: f64 = 1.2;

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

    /// Runs `f` on a thread inside the namespace: the tools it spawns run
    /// there directly, as under a margay that lives in the namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.target().run_in(f).expect("enter namespace")
    }

    /// Everything read back from the namespace (untimed; a check).
    fn observed(&self, variant: Variant) -> ObservedRuleset {
        IptablesBackend::with_variant(&self.target(), variant)
            .observe()
            .expect("read back")
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `program args < stdin` from this thread (inside a namespace).
fn pipe(program: &str, args: &[&str], stdin: &str) {
    let mut child = Command::new(program)
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

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Runs a plan's texts with the bare tools inside `ns`; the clock covers
/// the tool processes alone.
fn raw_apply(ns: &Ns, variant: Variant, plan: &Plan) -> Duration {
    ns.run(|| {
        let t = Instant::now();
        if !plan.ipset_pre.is_empty() {
            pipe("ipset", &["-exist", "restore"], &plan.ipset_pre);
        }
        for f in [IpVersion::V4, IpVersion::V6] {
            if !plan.iptables(f).is_empty() {
                pipe(
                    variant.restore_bin(f),
                    Variant::RESTORE_ARGS,
                    plan.iptables(f),
                );
            }
        }
        if !plan.ipset_post.is_empty() {
            pipe("ipset", &["-exist", "restore"], &plan.ipset_post);
        }
        t.elapsed()
    })
}

/// A manager over an iptables backend acting in "its own" namespace: only
/// call it from [`Ns::run`].
fn manager(variant: Variant) -> FirewallManager {
    let backend = IptablesBackend::with_variant(&NetnsTarget::current(), variant);
    FirewallManager::new(Box::new(backend))
}

/// Both sides' samples of one case.
struct Samples {
    what: &'static str,
    margay: Vec<Duration>,
    raw: Vec<Duration>,
}

impl Samples {
    fn median_ratio(&self) -> f64 {
        ratio(median(&self.margay), median(&self.raw))
    }
}

fn print_rows(variant: Variant, rows: &[&Samples], extra: &[(&str, Duration)]) {
    println!("\niptables variant: {}", variant.name());
    println!(
        "{:<36} {:>7} {:>11} {:>11} {:>7} {:>9} {:>9} {:>7}",
        "case", "samples", "margay med", "raw med", "ratio", "margay min", "raw min", "ratio"
    );
    for r in rows {
        let (m, w) = (median(&r.margay), median(&r.raw));
        let (mm, wm) = (minimum(&r.margay), minimum(&r.raw));
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

/// The scale scenario with and without one more endpoint, as the manager
/// sees it and as ops for the raw side.
struct Case {
    settings: FirewallSettings,
    s0: DesiredState,
    s1: DesiredState,
    full: Vec<FirewallOp>,
    fwd: Vec<FirewallOp>,
    back: Vec<FirewallOp>,
}

/// Full programming, `reps` times (even: each side goes first equally
/// often), each in fresh namespaces. Returns the samples and the medians
/// of reading back an empty namespace and of planning the full text.
fn bench_full(variant: Variant, case: &Case, reps: usize) -> (Samples, Duration, Duration) {
    let changes = changes_between(&DesiredState::default(), &case.s0);
    let (mut margay, mut raw, mut observe, mut render) = (vec![], vec![], vec![], vec![]);
    for i in 0..reps.next_multiple_of(2) {
        // Let the kernel finish tearing down the previous namespaces.
        std::thread::sleep(Duration::from_secs(2));
        let (a, b) = (Ns::new(), Ns::new());
        let mut m = manager(variant);
        observe.push(a.run(|| timed(|| m.start().expect("start")).1));
        let mut plan_be = IptablesBackend::with_variant(&b.target(), variant);
        plan_be.observe().expect("observe empty");
        let (plan, took) = timed(|| plan_be.plan(&case.full).expect("plan"));
        render.push(took);
        if i == 0 {
            let (rules, members) = count_lines(&plan);
            println!(
                "full program ({}): {rules} kernel rules (v4+v6), {members} set members, {} KiB text",
                variant.name(),
                (plan.v4.len() + plan.v6.len() + plan.ipset_pre.len()) / 1024
            );
        }
        let (margay_took, raw_took) = in_turn(
            (i & 1) == 0,
            || {
                a.run(|| {
                    let (stats, took) = timed(|| {
                        m.apply(&case.s0, &changes, &case.settings)
                            .expect("margay full apply")
                    });
                    assert!(stats.full && stats.ops > 0);
                    took
                })
            },
            || raw_apply(&b, variant, &plan),
        );
        margay.push(margay_took);
        raw.push(raw_took);
        if i == 0 {
            assert_eq!(
                a.observed(variant),
                b.observed(variant),
                "margay and raw namespaces differ"
            );
        }
    }
    let samples = Samples {
        what: "full programming (whole apply)",
        margay,
        raw,
    };
    (samples, median(&observe), median(&render))
}

/// One-endpoint change back and forth on a fully programmed host, `8 *
/// reps` times; each direction runs margay first and raw first equally
/// often. Returns the samples and the median time of a full read-back.
fn bench_delta(variant: Variant, case: &Case, reps: usize) -> (Samples, Duration) {
    let (a, b) = (Ns::new(), Ns::new());
    let mut m = manager(variant);
    a.run(|| {
        m.start().expect("start");
        let changes = changes_between(&DesiredState::default(), &case.s0);
        m.apply(&case.s0, &changes, &case.settings)
            .expect("full apply");
    });
    let full_plan = IptablesBackend::with_variant(&b.target(), variant)
        .plan(&case.full)
        .expect("plan full");
    raw_apply(&b, variant, &full_plan);
    // The raw side runs the texts of the same change both ways, planned
    // (purely, untimed) from what the namespace holds before each.
    let fwd_plan = plan::plan(&case.fwd, full_plan.known_after()).expect("plan fwd");
    let back_plan = plan::plan(&case.back, fwd_plan.known_after()).expect("plan back");
    let (rules, members) = count_lines(&fwd_plan);
    println!(
        "one-endpoint change ({}): {} ops, {rules} kernel rules, {members} members added",
        variant.name(),
        case.fwd.len()
    );
    let (c01, c10) = (
        changes_between(&case.s0, &case.s1),
        changes_between(&case.s1, &case.s0),
    );
    let (mut margay, mut raw) = (vec![], vec![]);
    // Deltas are quick: many more samples than full runs.
    for i in 0..(reps * 8).next_multiple_of(4) {
        let (state, changes, plan) = if (i & 1) == 0 {
            (&case.s1, &c01, &fwd_plan)
        } else {
            (&case.s0, &c10, &back_plan)
        };
        let (margay_took, raw_took) = in_turn(
            (i >> 1) & 1 == 0,
            || {
                a.run(|| {
                    timed(|| {
                        m.apply(state, changes, &case.settings)
                            .expect("margay delta")
                    })
                    .1
                })
            },
            || raw_apply(&b, variant, plan),
        );
        margay.push(margay_took);
        raw.push(raw_took);
    }
    assert_eq!(
        a.observed(variant),
        b.observed(variant),
        "margay and raw namespaces differ after the changes"
    );
    let read: Vec<Duration> = (0..3)
        .map(|_| {
            a.run(|| {
                let mut be = IptablesBackend::with_variant(&NetnsTarget::current(), variant);
                timed(|| be.observe().expect("read back")).1
            })
        })
        .collect();
    let samples = Samples {
        what: "one-endpoint change (whole apply)",
        margay,
        raw,
    };
    (samples, median(&read))
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
fn dump_texts(dir: std::path::PathBuf, case: &Case) {
    let p = plan::plan(&case.full, &Known::default()).expect("plan");
    let f = plan::plan(&case.fwd, p.known_after()).expect("plan");
    let b = plan::plan(&case.back, f.known_after()).expect("plan");
    for (prefix, p) in [("full", &p), ("fwd", &f), ("back", &b)] {
        for (part, text) in [("ipset", &p.ipset_pre), ("v4", &p.v4), ("v6", &p.v6)] {
            std::fs::write(dir.join(format!("{prefix}.{part}")), text).expect("write dump");
        }
    }
}

/// One variant's figures.
struct VariantFigures {
    variant: Variant,
    full: Samples,
    change: Samples,
}

const APPLY: &str = "the whole `FirewallManager::apply`: lowering, diff, plan and render, \
                     `ipset restore` + `iptables-restore --noflush` spawned inside the namespace; \
                     no routes/sysctls/neighbours";
const RAW: &str = "`ipset restore` + `iptables-restore --noflush` of the same text, \
                   spawned inside the namespace";

/// Prints the README rows; false when a target was missed (row left out).
fn emit_rows(scale: &str, figures: &[VariantFigures]) -> bool {
    let mut ok = true;
    for f in figures {
        let full_ok = f.full.median_ratio() <= FULL_MAX_RATIO;
        let change_ok = f.change.median_ratio() <= CHANGE_MAX_RATIO;
        let (fm, fr) = (median(&f.full.margay), median(&f.full.raw));
        let (cm, cr) = (median(&f.change.margay), median(&f.change.raw));
        let rows: Vec<(Row, bool)> = match f.variant {
            Variant::Nft => vec![
                (
                    Row {
                        table: Table::Performance,
                        id: "iptables/nft-full".into(),
                        what: format!("iptables-nft, full programming: {scale}; {APPLY} (`iptables`)"),
                        margay: format_duration(fm),
                        reference: format!(
                            "{RAW}: {} ({})",
                            format_duration(fr),
                            format_ratio(f.full.median_ratio())
                        ),
                        target: "≤ 1.5×".into(),
                    },
                    full_ok,
                ),
                (
                    Row {
                        table: Table::Performance,
                        id: "iptables/nft-one-endpoint".into(),
                        what: format!("iptables-nft, one-endpoint change at that scale; {APPLY} (`iptables`)"),
                        margay: format_duration(cm),
                        reference: format!(
                            "the same delta with the raw tools: {} ({})",
                            format_duration(cr),
                            format_ratio(f.change.median_ratio())
                        ),
                        target: "≤ 1.2×".into(),
                    },
                    change_ok,
                ),
            ],
            Variant::Legacy => vec![(
                Row {
                    table: Table::Performance,
                    id: "iptables/legacy".into(),
                    what: "iptables-legacy, full / one-endpoint change: the same scale and spans (`iptables`)".into(),
                    margay: format!("{} / {}", format_duration(fm), format_duration(cm)),
                    reference: format!(
                        "{} / {} ({} / {})",
                        format_duration(fr),
                        format_duration(cr),
                        format_ratio(f.full.median_ratio()),
                        format_ratio(f.change.median_ratio())
                    ),
                    target: "≤ 1.5× / 1.2×".into(),
                },
                full_ok && change_ok,
            )],
        };
        for (row, met) in rows {
            if met {
                row.emit();
            } else {
                eprintln!(
                    "iptables: {}: target {} missed ({} vs {})",
                    row.id, row.target, row.margay, row.reference
                );
                ok = false;
            }
        }
    }
    ok
}

fn main() {
    require_root("iptables");
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
    let (s0, s1) = (scenario(false), scenario(true));
    let ((l0, l1), lower_time) = timed(|| (lower(&s0, &settings), lower(&s1, &settings)));
    let case = Case {
        full: diff(&l0, &ObservedRuleset::default(), None),
        fwd: diff(&l1, &observed_of(&l0), None),
        back: diff(&l0, &observed_of(&l1), None),
        settings,
        s0,
        s1,
    };
    let rules: usize = l0.chains.values().map(Vec::len).sum();
    let members: usize = l0.sets.values().map(|s| s.members.len()).sum();
    let sets: BTreeSet<&IpNet> = l0.sets.values().flat_map(|s| &s.members).collect();
    println!(
        "scenario: {ENDPOINTS} endpoints, {} chains, {rules} generic rules, {} sets, {members} members ({} distinct); lowering both states {} ms; reps {reps}",
        l0.chains.len(),
        l0.sets.len(),
        sets.len(),
        ms(lower_time)
    );
    // Pure planning (no I/O): the CPU margay adds on top of the tools.
    let pure: Vec<Duration> = (0..reps.max(3))
        .map(|_| {
            let (p, took) = timed(|| plan::plan(&case.full, &Known::default()).expect("pure plan"));
            std::hint::black_box(&p);
            took
        })
        .collect();
    println!(
        "pure plan+render of the full program: {} ms",
        ms(median(&pure))
    );
    if let Some(dir) = std::env::var_os("MARGAY_BENCH_DUMP") {
        dump_texts(std::path::PathBuf::from(dir), &case);
        return;
    }
    if std::env::var_os("MARGAY_BENCH_PLAN_ONLY").is_some() {
        for _ in 0..20 {
            std::hint::black_box(plan::plan(&case.full, &Known::default()).expect("plan"));
        }
        return;
    }
    let mut figures = vec![];
    for variant in [Variant::Nft, Variant::Legacy] {
        let (full, observe_empty, render) = bench_full(variant, &case, reps);
        let (change, read_back) = bench_delta(variant, &case, reps);
        print_rows(
            variant,
            &[&full, &change],
            &[
                ("plan+render full program (in apply)", render),
                ("observe, empty namespace (start)", observe_empty),
                ("observe, full program (drift read)", read_back),
            ],
        );
        figures.push(VariantFigures {
            variant,
            full,
            change,
        });
    }
    let scale = format!(
        "{} endpoints, {} rules (before the v4/v6 split), {} set members",
        format_count(ENDPOINTS),
        format_count(rules),
        format_count(members)
    );
    if !emit_rows(&scale, &figures) {
        std::process::exit(1);
    }
}
