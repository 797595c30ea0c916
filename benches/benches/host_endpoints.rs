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
//! Needs root; `MARGAY_BENCH_REPS` sets repetitions (default 200).
//! Run: `cargo bench -p margay-benches --bench host_endpoints`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use margay_dataplane::firewall::diff::targets;
use margay_dataplane::firewall::lower::{InterfaceAddresses, Lowerer};
use margay_dataplane::firewall::model::{Hook, ObjectName, Ruleset};
use margay_dataplane::firewall::nft::{NftBackend, NftMode};
use margay_dataplane::firewall::scenario::{changes_between, rule, DesiredBuilder};
use margay_dataplane::firewall::{FirewallManager, FirewallSettings};
use margay_dataplane::netns::NetnsTarget;
use margay_policy::desired::{PortRange, Protocol, RuleAction};
use margay_tests::netns::{is_root, TestNetns};

const WORKLOADS: usize = 50;
const HOST_ENDPOINTS: usize = 10;

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

fn report(what: &str, mut v: Vec<Duration>) {
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
}

fn bench_changes(reps: usize) {
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
    report("one host-endpoint change (apply)", change);
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
    report("address moved (set_interface_addresses)", moves);
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

fn forward_path() {
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
    assert_eq!(a, b, "host endpoints must not touch the forward path");
}

fn main() {
    forward_path();
    if !is_root() {
        println!("not root: skipping the nftables cases");
        return;
    }
    bench_changes(reps());
}
