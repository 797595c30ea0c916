//! Rendering BIRD's configuration for a large cluster: 1,000 hosts in the
//! node mesh (999 mesh sessions), 50 global peers, 100 local workloads,
//! two pools. Target: under 5 ms per render (issue 12).
//!
//! `cargo bench -p margay-benches --bench bird_render`
//!
//! Prints the README row `bird_render/render`: criterion's median of this
//! run, and beside it the median wall time of `bird -p -c <file>` on the
//! rendered text (the parse check margay runs before every reload; process
//! start included), which must accept it. Exits 1 when the render misses
//! 5 ms or BIRD refuses the text.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ipnet::Ipv4Net;
use margay_benches::estimates::{criterion_full_run, fail, ms, CriterionRun};
use margay_benches::report::{Row, Table};
use margay_dataplane::bird::render::render;
use margay_policy::bgp::{AsNumber, BgpConfig, BgpPeer, PeerKind};

const BENCH: &str = "bird_render";
const TARGET: Duration = Duration::from_millis(5);
/// Runs of `bird -p` timed.
const PARSE_RUNS: usize = 9;

const HOSTS: u32 = 1_000;
const GLOBAL_PEERS: u32 = 50;
const LOCAL_WORKLOADS: u32 = 100;

fn peer(kind: PeerKind, address: Ipv4Addr, as_num: u32) -> BgpPeer {
    BgpPeer {
        kind,
        address: IpAddr::V4(address),
        as_num: AsNumber::new(as_num).expect("non-zero AS"),
    }
}

/// Host 0 of a mesh of [`HOSTS`] hosts at 10.0.0.0/16 (.0.1 upwards).
fn big_config() -> BgpConfig {
    let me = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)));
    let mut peers: Vec<BgpPeer> = (1..HOSTS)
        .map(|i| peer(PeerKind::Mesh, Ipv4Addr::from(u32::from(me) + i), 64511))
        .collect();
    peers.extend((0..GLOBAL_PEERS).map(|i| {
        let router = Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 0, 2, 1)) + i);
        peer(PeerKind::Global, router, 65000 + i)
    }));
    peers.sort();
    let workload_base = u32::from(Ipv4Addr::new(10, 65, 0, 0));
    BgpConfig {
        router_id: me,
        local_as: AsNumber::new(64511).expect("AS"),
        source_v4: me,
        source_v6: None,
        peers,
        pools_v4: vec![
            "10.65.0.0/16".parse().expect("pool"),
            "10.66.0.0/16".parse().expect("pool"),
        ],
        pools_v6: vec![],
        local_v4: (0..LOCAL_WORKLOADS)
            .map(|i| Ipv4Net::new(Ipv4Addr::from(workload_base + 2 + i), 32).expect("net"))
            .collect(),
        local_v6: vec![],
        workload_interface_prefixes: vec!["cali".to_string()],
    }
}

/// The criterion function name, which carries the size of the text.
fn function_name(size: usize) -> String {
    format!("mesh{HOSTS}_global{GLOBAL_PEERS}_local{LOCAL_WORKLOADS}_{size}B")
}

fn bench_render(c: &mut Criterion, cfg: &BgpConfig, size: usize) {
    let mut g = c.benchmark_group("bird_render");
    g.bench_function(function_name(size), |b| b.iter(|| render(black_box(cfg))));
    g.finish();
}

/// Median wall time of `bird -p -c <file>` on `text` over [`PARSE_RUNS`];
/// fails the run when BIRD refuses it or cannot be started.
fn bird_parse_check(text: &str) -> Duration {
    let path = std::env::temp_dir().join(format!("margay-bench-bird-{}.conf", std::process::id()));
    if let Err(e) = std::fs::write(&path, text) {
        fail(BENCH, &format!("writing {}: {e}", path.display()));
    }
    let mut runs = Vec::with_capacity(PARSE_RUNS);
    for _ in 0..PARSE_RUNS {
        let start = Instant::now();
        let out = Command::new("bird").arg("-p").arg("-c").arg(&path).output();
        runs.push(start.elapsed());
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => fail(
                BENCH,
                &format!(
                    "bird -p refused the text: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Err(e) => fail(BENCH, &format!("running bird -p: {e}")),
        }
    }
    let _ = std::fs::remove_file(&path);
    runs.sort_unstable();
    runs[runs.len() / 2]
}

fn main() {
    let run = CriterionRun::fresh(BENCH).unwrap_or_else(|e| fail(BENCH, &e.to_string()));
    let mut c = Criterion::default()
        .output_directory(run.dir())
        .configure_from_args();
    let cfg = big_config();
    let text = render(&cfg);
    bench_render(&mut c, &cfg, text.len());
    c.final_summary();
    if !criterion_full_run() {
        return;
    }
    let median = run
        .median("bird_render", &function_name(text.len()))
        .unwrap_or_else(|e| fail(BENCH, &e.to_string()));
    let parse = bird_parse_check(&text);
    if median > TARGET {
        fail(BENCH, &format!("render took {median:?}, target {TARGET:?}"));
    }
    Row {
        table: Table::Performance,
        id: "bird_render/render".into(),
        what: format!(
            "rendering that configuration, {} KB of BIRD text (`bird_render`, criterion median; \
             inside the clock: `render()` of a ready `BgpConfig` into a string; no file, no \
             BIRD); beside it the median wall time of `bird -p -c` on that text, the parse \
             check margay runs before each reload (process start included)",
            text.len() / 1000
        ),
        margay: format!("{}; `bird -p` of it {}", ms(median), ms(parse)),
        reference: "—".into(),
        target: "< 5 ms".into(),
    }
    .emit();
}
