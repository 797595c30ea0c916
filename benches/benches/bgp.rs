//! `CalcEngine::bgp_config()` at the scale of issue 12: 1,000 other hosts in
//! the node-to-node mesh (every tenth with its own `ip_addr_v4` and AS), 50
//! global peers, 3 node-specific peers, 100 local endpoints, on top of the
//! calc benchmark's world (50,000 remote endpoints, 2,000 profiles).
//!
//! Measured twice: with remote routes off (`InterHostRoutes = bgp`, the mode
//! BIRD runs in: the desired routes are the local ones only) and on (`direct`:
//! 50,000 remote routes the export scan must skip). Run with
//! `cargo bench -p margay-benches --bench bgp`. Prints the README row
//! `bgp/config` from criterion's medians of this run.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::Criterion;
use margay_benches::estimates::{criterion_full_run, fail, ms, CriterionRun};
use margay_benches::report::{Row, Table};
use margay_benches::{bgp_path, calc_load, host_name, CalcScale, LOCAL_HOST};
use margay_policy::calc::CalcEngine;
use margay_policy::model::BgpKey;

const MESH_HOSTS: usize = 1_000;
const GLOBAL_PEERS: usize = 50;

/// The BGP keys, as raw datastore text (they go through the parser).
fn bgp_keys() -> Vec<(String, String)> {
    let mut keys = vec![
        (bgp_path(&BgpKey::GlobalAsNumber), "64512".to_owned()),
        (
            bgp_path(&BgpKey::NodeMesh),
            r#"{"enabled": true}"#.to_owned(),
        ),
        (
            format!("host/{LOCAL_HOST}/ip_addr_v4"),
            "172.31.255.1".to_owned(),
        ),
    ];
    let peer = |ip: Ipv4Addr, as_num: u32| format!(r#"{{"ip": "{ip}", "as_num": "{as_num}"}}"#);
    for p in 0..GLOBAL_PEERS {
        let ip = Ipv4Addr::new(10, 255, 0, p as u8 + 1);
        keys.push((format!("global/peer_v4/{ip}"), peer(ip, 65000 + p as u32)));
    }
    for p in 0..3u8 {
        let ip = Ipv4Addr::new(10, 254, 0, p + 1);
        keys.push((format!("host/{LOCAL_HOST}/peer_v4/{ip}"), peer(ip, 65100)));
    }
    for h in (0..MESH_HOSTS).step_by(10) {
        let host = host_name(h);
        let ip = Ipv4Addr::new(172, 20, (h / 256) as u8, (h % 256) as u8);
        keys.push((format!("host/{host}/ip_addr_v4"), ip.to_string()));
        keys.push((format!("host/{host}/as_num"), "64513".to_owned()));
    }
    keys
}

fn loaded() -> CalcEngine {
    let scale = CalcScale {
        remote_hosts: MESH_HOSTS,
        ..CalcScale::issue()
    };
    let mut e = CalcEngine::new(LOCAL_HOST);
    for u in calc_load(&scale) {
        e.apply(u);
    }
    for (path, value) in bgp_keys() {
        let key = format!("/calico/bgp/v1/{path}");
        e.apply_raw("/calico/v1", &key, Some(&value))
            .unwrap_or_else(|err| panic!("bench key {key}: {err}"));
    }
    e.take_changes();
    e
}

fn bench_bgp_config(c: &mut Criterion) {
    let mut e = loaded();
    let config = e.bgp_config().expect("the local host has an address");
    eprintln!(
        "bgp_config: {} peers, {} local v4 + {} local v6 exports, {} pools; engine {:?}",
        config.peers.len(),
        config.local_v4.len(),
        config.local_v6.len(),
        config.pools_v4.len() + config.pools_v6.len(),
        e.stats()
    );
    assert_eq!(config.peers.len(), MESH_HOSTS + GLOBAL_PEERS + 3);
    assert_eq!(config.local_v4.len(), 100);
    let mut g = c.benchmark_group("bgp_config");
    g.bench_function("direct_mode_50k_remote_routes", |b| {
        b.iter(|| black_box(e.bgp_config()))
    });
    e.set_remote_routes(false);
    e.take_changes();
    g.bench_function("bgp_mode", |b| b.iter(|| black_box(e.bgp_config())));
    g.finish();
}

const BENCH: &str = "bgp";

fn main() {
    let run = CriterionRun::fresh(BENCH).unwrap_or_else(|e| fail(BENCH, &e.to_string()));
    let mut c = Criterion::default()
        .output_directory(run.dir())
        .configure_from_args();
    bench_bgp_config(&mut c);
    c.final_summary();
    if criterion_full_run() {
        let median = |name: &str| {
            run.median("bgp_config", name)
                .unwrap_or_else(|e| fail(BENCH, &e.to_string()))
        };
        Row {
            table: Table::Performance,
            id: "bgp/config".into(),
            what: "BIRD configuration: `bgp_config()` for 1,000 mesh hosts + 50 global peers + \
                   100 local workloads (`bgp`, criterion median; inside the clock: computing the \
                   `BgpConfig` from the loaded engine's state; no rendering, no file, no BIRD)"
                .into(),
            margay: format!(
                "{} ({} in direct mode, with 50,000 remote routes in the state)",
                ms(median("bgp_mode")),
                ms(median("direct_mode_50k_remote_routes"))
            ),
            reference: "—".into(),
            target: "—".into(),
        }
        .emit();
    }
}
