//! Calculation benchmark at the issue's scale (100 local endpoints, 50,000
//! remote endpoints, 2,000 profiles with 5 rules each, 200 tiered
//! policies): the full load, then single updates on the loaded engine.
//!
//! Single updates alternate between two documents so the engine's state
//! oscillates instead of drifting; changes are taken every 64 updates, as a
//! dataplane batching updates would. Run with
//! `cargo bench -p margay-benches --bench calc`.
//!
//! Prints three README rows (`calc/full-load`, `calc/endpoint-update`,
//! `calc/profile-change`) from criterion's medians of this run, and exits 1
//! when one misses its target.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use margay_benches::estimates::{criterion_full_run, fail, ms, us, CriterionRun};
use margay_benches::report::{Row, Table};
use margay_benches::{
    calc_load, calc_load_etcd_order, describe, profile_rules, remote_endpoint,
    remote_endpoint_delete, used_profiles, CalcScale, LOCAL_HOST,
};
use margay_policy::calc::CalcEngine;
use margay_policy::model::Update;

/// Changes are taken after this many updates.
const TAKE_EVERY: u64 = 64;

fn loaded(scale: &CalcScale) -> CalcEngine {
    let mut e = CalcEngine::new(LOCAL_HOST);
    for u in calc_load(scale) {
        e.apply(u);
    }
    e.take_changes();
    e
}

/// Times `iters` updates produced by `make(k)` for a running counter `k`
/// (updates are built before the clock starts).
fn time_updates(
    engine: &mut CalcEngine,
    counter: &mut u64,
    iters: u64,
    make: &dyn Fn(u64) -> Update,
) -> Duration {
    let updates: Vec<Update> = (0..iters).map(|k| make(*counter + k)).collect();
    *counter += iters;
    let start = Instant::now();
    for (n, u) in updates.into_iter().enumerate() {
        engine.apply(u);
        if matches!((n as u64 + 1) % TAKE_EVERY, 0) {
            black_box(engine.take_changes());
        }
    }
    black_box(engine.take_changes());
    start.elapsed()
}

/// Puts every remote endpoint back to its loaded document (untimed).
fn reset_endpoints(engine: &mut CalcEngine, scale: &CalcScale) {
    for i in 0..scale.remote_endpoints {
        engine.apply(remote_endpoint(scale, i, 0));
    }
    engine.take_changes();
}

fn bench_load(c: &mut Criterion) {
    let scale = CalcScale::issue();
    let updates = calc_load(&scale);
    eprintln!("world: {:?}", describe(&updates));
    let e = loaded(&scale);
    eprintln!("loaded: {:?}", e.stats());
    let etcd_order = calc_load_etcd_order(&scale);
    let mut g = c.benchmark_group("calc");
    g.sample_size(10);
    for (name, updates) in [
        ("full_load", &updates),
        ("full_load_etcd_order", &etcd_order),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || updates.clone(),
                |ups| {
                    let mut e = CalcEngine::new(LOCAL_HOST);
                    for u in ups {
                        e.apply(u);
                    }
                    black_box(e.take_changes());
                    e
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn bench_updates(c: &mut Criterion) {
    let scale = CalcScale::issue();
    let mut engine = loaded(&scale);
    let n = scale.remote_endpoints as u64;
    // Visit endpoints in a scattered order; every endpoint flips between its
    // two documents on each pass over all of them.
    let endpoint_of = move |k: u64| ((k % n) * 7919 % n) as usize;
    let pass = move |k: u64| (k / n) % 2;
    let mut g = c.benchmark_group("calc/remote_endpoint");
    let mut counter = 0;
    g.bench_function("move_address", |b| {
        b.iter_custom(|iters| {
            time_updates(&mut engine, &mut counter, iters, &|k| {
                let v = if pass(k) == 0 { 1 } else { 0 };
                remote_endpoint(&scale, endpoint_of(k), v)
            })
        })
    });
    reset_endpoints(&mut engine, &scale);
    let mut counter = 0;
    g.bench_function("change_labels", |b| {
        b.iter_custom(|iters| {
            time_updates(&mut engine, &mut counter, iters, &|k| {
                let v = if pass(k) == 0 { 2 } else { 0 };
                remote_endpoint(&scale, endpoint_of(k), v)
            })
        })
    });
    reset_endpoints(&mut engine, &scale);
    let mut counter = 0;
    g.bench_function("delete_then_recreate", |b| {
        b.iter_custom(|iters| {
            time_updates(&mut engine, &mut counter, iters, &|k| {
                let i = endpoint_of(k / 2);
                if k % 2 == 0 {
                    remote_endpoint_delete(&scale, i)
                } else {
                    remote_endpoint(&scale, i, 0)
                }
            })
        })
    });
    g.finish();
    reset_endpoints(&mut engine, &scale);

    let used = used_profiles(&scale);
    let unused: Vec<usize> = (0..scale.profiles).filter(|p| !used.contains(p)).collect();
    let mut g = c.benchmark_group("calc/profile_rules");
    for (name, profiles, variant) in [
        ("used_change_port", used.clone(), 1u8),
        ("used_new_selector", used.clone(), 2u8),
        ("unused_change_port", unused, 1u8),
    ] {
        let m = profiles.len() as u64;
        let mut counter = 0;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                time_updates(&mut engine, &mut counter, iters, &|k| {
                    let p = profiles[(k % m) as usize];
                    let v = if matches!((k / m) % 2, 0) { variant } else { 0 };
                    profile_rules(p, v)
                })
            })
        });
        for &p in &profiles {
            engine.apply(profile_rules(p, 0));
        }
        engine.take_changes();
    }
    g.finish();
    eprintln!("after updates: {:?}", engine.stats());
}

const BENCH: &str = "calc";
const LOAD_TARGET: Duration = Duration::from_millis(300);
const ENDPOINT_TARGET: Duration = Duration::from_micros(10);
const PROFILE_TARGET: Duration = Duration::from_micros(100);

fn main() {
    let run = CriterionRun::fresh(BENCH).unwrap_or_else(|e| fail(BENCH, &e.to_string()));
    let mut c = Criterion::default()
        .output_directory(run.dir())
        .configure_from_args();
    bench_load(&mut c);
    bench_updates(&mut c);
    c.final_summary();
    if criterion_full_run() {
        for row in rows(&run) {
            row.emit();
        }
    }
}

/// The medians of `names` in `group`; fails the run when one is missing.
fn medians(run: &CriterionRun, group: &str, names: &[&str]) -> Vec<Duration> {
    names
        .iter()
        .map(|name| {
            run.median(group, name)
                .unwrap_or_else(|e| fail(BENCH, &e.to_string()))
        })
        .collect()
}

/// `lo–hi` of `figures` in µs.
fn range(figures: &[Duration]) -> String {
    let lo = figures.iter().min().copied().unwrap_or_default();
    let hi = figures.iter().max().copied().unwrap_or_default();
    format!("{}–{}", us(lo).trim_end_matches(" µs"), us(hi))
}

fn check(what: &str, figures: &[Duration], target: Duration) {
    if let Some(worst) = figures.iter().max().filter(|w| **w > target) {
        fail(
            BENCH,
            &format!("{what}: {worst:?} misses the target {target:?}"),
        );
    }
}

fn rows(run: &CriterionRun) -> Vec<Row> {
    let load = medians(run, "calc", &["full_load", "full_load_etcd_order"]);
    let endpoint = medians(
        run,
        "calc/remote_endpoint",
        &["move_address", "change_labels", "delete_then_recreate"],
    );
    let profile = medians(
        run,
        "calc/profile_rules",
        &[
            "used_change_port",
            "unused_change_port",
            "used_new_selector",
        ],
    );
    check("full load", &load, LOAD_TARGET);
    check("one remote endpoint update", &endpoint, ENDPOINT_TARGET);
    check("one profile rule change", &profile, PROFILE_TARGET);
    let row = |id: &str, what: &str, margay: String, reference: &str, target: &str| Row {
        table: Table::Performance,
        id: format!("{BENCH}/{id}"),
        what: what.to_owned(),
        margay,
        reference: reference.to_owned(),
        target: target.to_owned(),
    };
    vec![
        row(
            "full-load",
            "calculation, full load: 100 local + 50,000 remote endpoints, 2,000 profiles, \
             200 policies (`calc`, criterion median; inside the clock: a new `CalcEngine` \
             applying every typed update, built beforehand, then `take_changes`; no JSON \
             parsing, no etcd, no kernel)",
            format!("{} ({} in etcd key order)", ms(load[0]), ms(load[1])),
            "—",
            "< 300 ms",
        ),
        row(
            "endpoint-update",
            "calculation, one remote endpoint update on that loaded engine: address moved, \
             labels changed, deleted or re-created (same clock; changes taken every 64 updates)",
            range(&endpoint),
            "Felix aims at 1,000 updates/s",
            "< 10 µs",
        ),
        row(
            "profile-change",
            "calculation, one profile rule change, of a profile local endpoints use or not \
             (same clock)",
            format!(
                "{} ({} when it adds a selector set)",
                range(&profile[..2]),
                us(profile[2])
            ),
            "—",
            "< 100 µs",
        ),
    ]
}
