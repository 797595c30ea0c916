//! BGP route propagation in the sandbox: from an endpoint written to etcd
//! for a workload on host A to the route in host B's kernel, learned over
//! BGP (`proto bird`), with A and B on different subnets behind the router
//! (tests/src/sandbox/bgp.rs).
//!
//! Run as root: `cargo bench -p margay-benches --bench bgp_latency`.
//! `MARGAY_BENCH_ITERATIONS` samples (default 20); reports p50 / p90 / max
//! against the target (p50 <= 1 s) and the reloads each sample cost.
//! `MARGAY_BENCH_STRICT=1` makes a missed target exit 1.
//!
//! The path measured: margay on A programs the local route and, after its
//! coalescing quiet time, rewrites BIRD's file with the new prefix in the
//! export filter and reloads BIRD; BIRD's kernel protocol has learned the
//! route (netlink, at once) and now exports it; the session to B (mesh) and
//! the router (reflector) carry it; BIRD on B writes it to B's kernel. No
//! BGP timer is on this path: the timers the sandbox sets (connect delay
//! 1 s, connect retry 1-5 s, error wait 1-10 s) only matter while sessions
//! come up. The kernel is polled every millisecond from a thread inside B.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use margay_tests::netns::is_root;
use margay_tests::sandbox::{
    allow_all_rules, in_netns, margay_bin, wait_for, BgpOptions, Cluster, CONVERGE_TIMEOUT,
};
use serde_json::json;

const RELOADS: &str = "margay_bird_config_reloads_total";
/// Longest one sample may take before the run gives up.
const SAMPLE_DEADLINE: Duration = Duration::from_secs(10);
const TARGET_P50: Duration = Duration::from_secs(1);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("bgp_latency: run with `cargo bench -p margay-benches --bench bgp_latency`");
        return;
    }
    if !is_root() {
        eprintln!("bgp_latency: skipped, needs root (network namespaces)");
        return;
    }
    let iterations: u32 = std::env::var("MARGAY_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!("agent binary: {}", margay_bin().display());

    let mut c = Cluster::builder()
        .hosts(2)
        .bgp(BgpOptions::default())
        .start_agents(false)
        .build();
    c.put_pool("10.65.0.0/16", false);
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.start_agent("h1");
    c.start_agent("h2");
    wait_for("h1's sessions", CONVERGE_TIMEOUT, || {
        c.established_sessions("h1").len() == 2
    });

    let mut samples = Vec::new();
    let mut reloads = Vec::new();
    for i in 0..iterations {
        let name = format!("s{i}");
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 65, 7, 1)) + i);
        c.add_workload(&name, "h1", &ip.to_string());
        let before = c.metric_sum("h1", RELOADS);
        let start = Instant::now();
        c.put_endpoint(&name, &["OPEN"], &json!({}));
        let Some(seen) = wait_bgp_route(&c, "h2", ip, start + SAMPLE_DEADLINE) else {
            eprintln!("sample {i}: no route to {ip} on h2 after {SAMPLE_DEADLINE:?}");
            break;
        };
        samples.push(seen.duration_since(start));
        reloads.push(c.metric_sum("h1", RELOADS) - before);
    }

    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| samples.get(((samples.len().max(1) - 1) as f64 * q).round() as usize);
    let (p50, p90, max) = (pick(0.5), pick(0.9), samples.last());
    let ok = samples.len() == iterations as usize && p50.is_some_and(|p| *p <= TARGET_P50);
    println!();
    println!(
        "{:<40} {:>7} {:>7} {:>7} {:>4}",
        "endpoint on h1 -> BGP route on h2 (ms)", "p50", "p90", "max", "n"
    );
    println!(
        "{:<40} {:>7.0} {:>7.0} {:>7.0} {:>4}",
        "(different subnets, mesh + reflector)",
        p50.copied().map_or(f64::NAN, ms),
        p90.copied().map_or(f64::NAN, ms),
        max.copied().map_or(f64::NAN, ms),
        samples.len()
    );
    println!(
        "reloads per sample: {:?}; target p50 <= {} ms: {}",
        reloads,
        TARGET_P50.as_millis(),
        if ok { "met" } else { "MISSED" }
    );
    drop(c);
    if !ok && std::env::var_os("MARGAY_BENCH_STRICT").is_some() {
        std::process::exit(1);
    }
}

/// Polls `host`'s kernel every millisecond for a BIRD route to `ip`; the
/// moment it was first seen, or `None` at `deadline`.
fn wait_bgp_route(c: &Cluster, host: &str, ip: Ipv4Addr, deadline: Instant) -> Option<Instant> {
    let ns = c.host(host).ns().name().to_owned();
    let target = format!("{ip}/32");
    in_netns(&ns, || loop {
        let out = std::process::Command::new("ip")
            .args(["-4", "route", "show", &target])
            .output()
            .ok()?;
        if String::from_utf8_lossy(&out.stdout).contains("proto bird") {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    })
}
