//! Calculation benchmark at the issue's scale (100 local endpoints, 50,000
//! remote endpoints, 2,000 profiles with 5 rules each, 200 tiered
//! policies): the full load, then single updates on the loaded engine.
//!
//! Single updates alternate between two documents so the engine's state
//! oscillates instead of drifting; changes are taken every 64 updates, as a
//! dataplane batching updates would. Run with
//! `cargo bench -p margay-benches --bench calc`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
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

criterion_group!(benches, bench_load, bench_updates);
criterion_main!(benches);
