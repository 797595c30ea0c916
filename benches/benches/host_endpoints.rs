//! One host-endpoint change applied on nftables, and what host endpoints
//! cost the forward path.
//!
//! Scenario: 50 workloads and 10 host endpoints (named `eth0`..`eth9`,
//! each interface with one address), plus one host endpoint bound by
//! expected address only. Cases, each in a throw-away namespace:
//! * one host-endpoint change: `hep<k>` switches profile, `Changes`
//!   naming only it; inside the clock: the whole `FirewallManager::apply`
//!   (incremental lowering, scoped diff, one netlink transaction and its
//!   ack), nothing else. Target: under 5 ms.
//! * an address moving to another interface: the whole
//!   `FirewallManager::set_interface_addresses` (re-binding, lowering, diff,
//!   write).
//! * the forward path: rules reachable from the forward hook with 0 and
//!   with 20 bound host endpoints (pure; they must be equal).
//!
//! Needs root (exits 1 without); `MARGAY_BENCH_REPS` sets repetitions
//! (default 200). Run: `cargo bench -p margay-benches --bench host_endpoints`.
//! Prints the README rows `host_endpoints/change`, `host_endpoints/address-move`
//! and `host_endpoints/forward-path`; exits 1 when a change's p99 misses
//! 5 ms or a move's maximum misses 1 s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use margay_benches::estimates::fail;
use margay_benches::report::{require_root, Row, Table};
use margay_dataplane::firewall::diff::targets;
use margay_dataplane::firewall::lower::{InterfaceAddresses, Lowerer};
use margay_dataplane::firewall::model::{Hook, ObjectName, Ruleset};
use margay_dataplane::firewall::nft::{NftBackend, NftMode};
use margay_dataplane::firewall::scenario::{changes_between, rule, DesiredBuilder};
use margay_dataplane::firewall::{FirewallManager, FirewallSettings};
use margay_dataplane::netns::NetnsTarget;
use margay_policy::desired::{PortRange, Protocol, RuleAction};
use margay_tests::netns::TestNetns;

const WORKLOADS: usize = 50;
const HOST_ENDPOINTS: usize = 10;
const BENCH: &str = "host_endpoints";
const CHANGE_TARGET: Duration = Duration::from_millis(5);
const MOVE_TARGET: Duration = Duration::from_secs(1);

fn reps() -> usize {
    std::env::var("MARGAY_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn allow_port(port: u16) -> margay_policy::desired::Rule {
    let mut r = rule(RuleAction::Allow);
    r.protocol = Some(Protocol(6));
    r.dst.ports = vec![PortRange { lo: port, hi: port }];
    r
}

/// The workloads and the bound host endpoints (`hep<k>` on `eth<k>`, `k`
/// below `heps`, with profile `web`, or `web2` where `switched[k]`).
fn state(heps: usize, switched: &[bool]) -> DesiredBuilder {
    let mut b = DesiredBuilder::new();
    b.profile("web", vec![allow_port(80)], vec![rule(RuleAction::Allow)])
        .profile("web2", vec![allow_port(81)], vec![rule(RuleAction::Allow)]);
    for i in 0..WORKLOADS {
        b.endpoint(
            &format!("cali{i:04}"),
            &format!("10.0.0.{}/32", i + 1),
            &["web"],
        );
    }
    for k in 0..heps {
        let profile = if switched.get(k) == Some(&true) {
            "web2"
        } else {
            "web"
        };
        b.host_endpoint(
            &format!("hep{k}"),
            Some(&format!("eth{k}")),
            &[],
            &[profile],
        );
    }
    b.host_endpoint("by-addr", None, &["198.19.0.1"], &["web"]);
    b
}

/// `eth<k>` with one address each; the moving address on `eth<at>`.
fn interfaces(heps: usize, at: usize) -> InterfaceAddresses {
    let mut out = InterfaceAddresses::new();
    for k in 0..heps.max(at + 1) {
        let addr = format!("198.18.0.{}", k + 1).parse().expect("address");
        out.insert(format!("eth{k}"), BTreeSet::from([addr]));
    }
    if let Some(set) = out.get_mut(&format!("eth{at}")) {
        set.insert("198.19.0.1".parse().expect("address"));
    }
    out
}

fn percentile(v: &mut [Duration], p: usize) -> Duration {
    v.sort_unstable();
    v[(v.len() - 1) * p / 100]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// Percentiles of one series of samples.
struct Spread {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn report(what: &str, mut v: Vec<Duration>) -> Spread {
    let (p50, p90, p99) = (
        percentile(&mut v, 50),
        percentile(&mut v, 90),
        percentile(&mut v, 99),
    );
    let max = v.last().copied().unwrap_or_default();
    println!(
        "{what:<40} p50 {} ms  p90 {} ms  p99 {} ms  max {} ms  (n={})",
        ms(p50),
        ms(p90),
        ms(p99),
        ms(max),
        v.len()
    );
    Spread { p50, p99, max }
}

/// What [`bench_changes`] measured.
struct Measured {
    change: Spread,
    /// How many chains one change rewrote, and how often.
    chains: BTreeMap<usize, usize>,
    address_move: Spread,
}

fn bench_changes(reps: usize) -> Measured {
    let ns = TestNetns::new("bench-hep");
    let target = NetnsTarget::named(ns.name()).expect("namespace name");
    let backend = NftBackend::with_mode(target, NftMode::Netlink).expect("nft backend");
    let mut m = FirewallManager::new(Box::new(backend));
    m.start().expect("start");
    let settings = FirewallSettings {
        own_endpoints: vec!["192.0.2.100:2379".parse().expect("endpoint")],
        ..FirewallSettings::default()
    };
    m.set_interface_addresses(&interfaces(HOST_ENDPOINTS, 0))
        .expect("interfaces");
    let mut before = state(HOST_ENDPOINTS, &[]).build();
    let full = m
        .apply(
            &before,
            &changes_between(&Default::default(), &before),
            &settings,
        )
        .expect("full apply");
    println!(
        "full program: {} ops, {} chains, {} rules; bound interfaces {}",
        full.ops,
        full.chains_replaced,
        full.rules_written,
        m.host_endpoint_bindings()
            .values()
            .map(BTreeSet::len)
            .sum::<usize>()
    );
    let (mut change, mut inner, mut chains) = (vec![], vec![], BTreeMap::new());
    let mut switched = [false; HOST_ENDPOINTS];
    for i in 0..reps {
        let k = i % HOST_ENDPOINTS;
        switched[k] = !switched[k];
        let after = state(HOST_ENDPOINTS, &switched).build();
        let changes = changes_between(&before, &after);
        let t = Instant::now();
        let stats = m.apply(&after, &changes, &settings).expect("apply");
        change.push(t.elapsed());
        inner.push(Duration::from_micros(stats.micros));
        *chains.entry(stats.chains_replaced).or_insert(0usize) += 1;
        before = after;
    }
    let change = report("one host-endpoint change (apply)", change);
    report("  same, apply's own micros", inner);
    println!("  chains rewritten per change: {chains:?}");
    let mut moves = vec![];
    for i in 0..reps {
        let to = HOST_ENDPOINTS + i % 2;
        let t = Instant::now();
        let stats = m
            .set_interface_addresses(&interfaces(HOST_ENDPOINTS + 2, to))
            .expect("move");
        moves.push(t.elapsed());
        assert!(stats.ops > 0, "the binding moved: {stats:?}");
    }
    let address_move = report("address moved (set_interface_addresses)", moves);
    Measured {
        change,
        chains,
        address_move,
    }
}

/// Rules reachable from `hook` (every chain once).
fn reachable_rules(rs: &Ruleset, hook: Hook) -> usize {
    let mut seen: BTreeSet<ObjectName> = BTreeSet::new();
    let mut todo: Vec<ObjectName> = rs.hooks.get(&hook).into_iter().cloned().collect();
    let mut rules = 0;
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let chain = rs.chains.get(&name).map(Vec::as_slice).unwrap_or_default();
        rules += chain.len();
        todo.extend(targets(chain).cloned());
    }
    rules
}

/// Rules reachable from the forward hook, and the bound interfaces, with
/// no host endpoint and with 20.
struct ForwardPath {
    rules: usize,
    bound_none: usize,
    bound_twenty: usize,
}

fn forward_path() -> ForwardPath {
    let settings = FirewallSettings::default();
    let lowered = |heps: usize| {
        let mut l = Lowerer::new();
        if heps > 0 {
            l.set_interface_addresses(&interfaces(heps, heps));
        }
        l.lower_all(&state(heps, &[]).build(), &settings);
        let bound = l.host_bindings().len();
        (l.ruleset().clone(), bound)
    };
    let (none, bound_none) = lowered(0);
    let (twenty, bound_twenty) = lowered(20);
    let (a, b) = (
        reachable_rules(&none, Hook::Forward),
        reachable_rules(&twenty, Hook::Forward),
    );
    println!(
        "forward path: {a} rules reachable with {bound_none} bound interfaces, \
         {b} with {bound_twenty}"
    );
    if a != b {
        fail(BENCH, "host endpoints must not touch the forward path");
    }
    ForwardPath {
        rules: a,
        bound_none,
        bound_twenty,
    }
}

/// `(2 chains rewritten)`, or every count seen with how often.
fn chains_rewritten(chains: &BTreeMap<usize, usize>) -> String {
    match chains.keys().collect::<Vec<_>>().as_slice() {
        [one] => format!("{one} chains rewritten"),
        _ => format!("chains rewritten per change: {chains:?}"),
    }
}

fn rows(m: &Measured, fwd: &ForwardPath) -> [Row; 3] {
    let row = |id: &str, what: &str, margay: String, target: &str| Row {
        table: Table::Performance,
        id: format!("{BENCH}/{id}"),
        what: what.to_owned(),
        margay,
        reference: "—".into(),
        target: target.into(),
    };
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
    [
        row(
            "change",
            "nftables, one host-endpoint change (`host_endpoints`: 50 workloads + 10 host \
             endpoints; inside the clock: the whole `FirewallManager::apply`: lowering, scoped \
             diff, one netlink transaction and its ack; no routes, sysctls or neighbours)",
            format!(
                "p50 {}, p99 {}, max {} ({})",
                ms(m.change.p50),
                ms(m.change.p99),
                ms(m.change.max),
                chains_rewritten(&m.chains)
            ),
            "< 5 ms",
        ),
        row(
            "address-move",
            "an expected address moved to another interface (same bench; inside the clock: \
             the whole `FirewallManager::set_interface_addresses`: re-binding, lowering, diff \
             and the write of the host chains)",
            format!(
                "p50 {}, max {}",
                ms(m.address_move.p50),
                ms(m.address_move.max)
            ),
            "< 1 s",
        ),
        row(
            "forward-path",
            "the forward path with host endpoints (same bench, no clock: rules reachable \
             from the forward hook, counted on the lowered ruleset)",
            format!(
                "{} rules reachable from the forward hook with {} and with {} bound \
                 interfaces (the same chains)",
                fwd.rules, fwd.bound_none, fwd.bound_twenty
            ),
            "no cost",
        ),
    ]
}

fn main() {
    require_root(BENCH);
    let fwd = forward_path();
    let measured = bench_changes(reps());
    if measured.change.p99 > CHANGE_TARGET {
        fail(
            BENCH,
            &format!(
                "change p99 {:?} misses {CHANGE_TARGET:?}",
                measured.change.p99
            ),
        );
    }
    if measured.address_move.max > MOVE_TARGET {
        fail(
            BENCH,
            &format!(
                "move max {:?} misses {MOVE_TARGET:?}",
                measured.address_move.max
            ),
        );
    }
    for row in rows(&measured, &fwd) {
        row.emit();
    }
}
