//! End-to-end latency of the real `margay` binary at scale: from an etcd
//! write being acknowledged to the new verdict seen by real packets, and
//! cold start to ready.
//!
//! Run as root: `cargo bench -p margay-benches --bench e2e_latency`. It builds
//! a one-host sandbox (tests/src/sandbox.rs), loads `MARGAY_BENCH_REMOTE`
//! remote endpoints (default 20000, spread over 20 other hosts), 1000
//! profiles (each with a tag and a rule using it) and 50 local workloads,
//! starts the agent and times it to `/readyz`; then flips a verdict
//! `MARGAY_BENCH_ITERATIONS` times (default 100) for each of two kinds of
//! write — a profile's rules, and a profile's tags (set membership) — and
//! reports p50 / p90 / p99 / max against the targets (p50 <= 10 ms,
//! p99 <= 50 ms, cold start <= 1 s). `MARGAY_BENCH_DATAPLANE=iptables` picks
//! the other backend. `MARGAY_BENCH_STRICT=1` makes a missed target exit 1.
//!
//! How a verdict is observed: a prober inside the client workload opens a new
//! TCP connection to the server workload every millisecond (each attempt a
//! fresh SYN, 50 ms timeout). The change is seen at the start time of the
//! first attempt with the new outcome, so the resolution is about 1 ms.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use margay_tests::netns::is_root;
use margay_tests::sandbox::{in_netns, margay_bin, Cluster, Dataplane};
use serde_json::json;

const LOCAL: usize = 50;
const PROFILES: usize = 1000;
const REMOTE_HOSTS: usize = 20;
const SERVER_PORT: u16 = 80;
const ATTEMPT_EVERY: Duration = Duration::from_millis(1);
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(50);
const VERDICT_DEADLINE: Duration = Duration::from_secs(5);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("e2e_latency: run with `cargo bench -p margay-benches --bench e2e_latency`");
        return;
    }
    if !is_root() {
        eprintln!("e2e_latency: skipped, needs root (network namespaces)");
        return;
    }
    let remote = env_usize("MARGAY_BENCH_REMOTE", 20_000);
    let iterations = env_usize("MARGAY_BENCH_ITERATIONS", 100);
    let dataplane = match std::env::var("MARGAY_BENCH_DATAPLANE").as_deref() {
        Ok("iptables") => Dataplane::Iptables,
        _ => Dataplane::Nftables,
    };

    // Resolve (and if needed build) the agent binary before any clock starts.
    let bin = margay_bin();
    println!("agent binary: {}", bin.display());

    let mut c = Cluster::builder()
        .hosts(1)
        .dataplane(dataplane)
        .start_agents(false)
        .build();
    let load_start = Instant::now();
    load_scale(&mut c, remote);
    println!(
        "loaded {remote} remote endpoints, {PROFILES} profiles, {LOCAL} local workloads \
         ({} keys) in {:.1} s; backend {}",
        c.get_prefix("/calico/v1/").len(),
        load_start.elapsed().as_secs_f64(),
        dataplane.as_str()
    );

    let cold = cold_start(&mut c);
    let routes = count_routes(&c);
    println!(
        "cold start to ready: {} ms ({routes} routes in the kernel at that moment)",
        cold.as_millis()
    );

    let rules = measure(&c, iterations, flip_rules);
    let tags = measure(&c, iterations, flip_tags);

    let mut ok = cold <= Duration::from_secs(1);
    println!();
    println!(
        "{:<34} {:>6} {:>6} {:>6} {:>6} {:>5}",
        "etcd write -> verdict (ms)", "p50", "p90", "p99", "max", "n"
    );
    for (name, samples) in [
        ("profile rules (allow <-> drop)", &rules),
        ("profile tags (set member)", &tags),
    ] {
        let s = Summary::of(samples);
        println!(
            "{name:<34} {:>6.1} {:>6.1} {:>6.1} {:>6.1} {:>5}",
            s.p50, s.p90, s.p99, s.max, s.n
        );
        ok &= s.n == iterations && s.p50 <= 10.0 && s.p99 <= 50.0;
    }
    println!(
        "targets: p50 <= 10 ms, p99 <= 50 ms, cold start <= 1000 ms: {}",
        if ok { "met" } else { "MISSED" }
    );
    drop(c);
    if !ok && std::env::var_os("MARGAY_BENCH_STRICT").is_some() {
        std::process::exit(1);
    }
}

/// Writes the whole data set, creates the local workloads, and writes the
/// pair used for measuring: `server` (profile SRV) and `client` (CLI).
fn load_scale(c: &mut Cluster, remote: usize) {
    let mut kv: Vec<(String, String)> = Vec::with_capacity(remote + 3 * PROFILES + 64);
    for p in 0..PROFILES {
        let rules = json!({
            "inbound_rules": [{"protocol": "tcp", "dst_ports": [80 + (p % 1000)], "src_tag": format!("T{p}")}],
            "outbound_rules": [{"action": "allow"}]
        });
        kv.push((
            format!("/calico/v1/policy/profile/P{p}/rules"),
            rules.to_string(),
        ));
        kv.push((
            format!("/calico/v1/policy/profile/P{p}/tags"),
            json!([format!("T{p}")]).to_string(),
        ));
        kv.push((
            format!("/calico/v1/policy/profile/P{p}/labels"),
            json!({"group": format!("g{}", p % 10)}).to_string(),
        ));
    }
    // Remote routes are programmed only inside a pool.
    kv.push((
        "/calico/v1/ipam/v4/pool/10.66.0.0-16".into(),
        json!({"cidr": "10.66.0.0/16"}).to_string(),
    ));
    for h in 1..=REMOTE_HOSTS {
        kv.push((
            format!("/calico/v1/host/r{h}/bird_ip"),
            format!("192.0.2.{}", 100 + h),
        ));
    }
    for i in 0..remote {
        let host = 1 + i % REMOTE_HOSTS;
        let ip = format!("10.66.{}.{}/32", i / 250, i % 250 + 1);
        let doc = json!({
            "state": "active", "name": format!("cali{i}"), "profile_ids": [format!("P{}", i % PROFILES)],
            "ipv4_nets": [ip], "ipv6_nets": [], "labels": {"n": format!("{}", i % 100)}
        });
        kv.push((
            format!("/calico/v1/host/r{host}/workload/cni/e{i}/endpoint/e{i}"),
            doc.to_string(),
        ));
    }
    kv.push((
        "/calico/v1/policy/profile/CLI/rules".into(),
        json!({"outbound_rules": [{"action": "allow"}]}).to_string(),
    ));
    kv.push((
        "/calico/v1/policy/profile/CLI/tags".into(),
        json!(["GO"]).to_string(),
    ));
    kv.push((
        "/calico/v1/policy/profile/SRV/rules".into(),
        srv_rules(true).to_string(),
    ));
    c.put_many(&kv);

    c.add_workload("server", "h1", "10.65.1.2");
    c.add_workload("client", "h1", "10.65.1.3");
    c.put_endpoint("server", &["SRV"], &json!({}));
    c.put_endpoint("client", &["CLI"], &json!({}));
    for i in 0..LOCAL - 2 {
        let name = format!("l{i}");
        c.add_workload(&name, "h1", &format!("10.65.2.{}", i + 2));
        c.put_endpoint(&name, &[&format!("P{i}")], &json!({"local": "yes"}));
    }
}

/// SRV's rules: tcp 80 from tag GO when `open`, nothing otherwise.
fn srv_rules(open: bool) -> serde_json::Value {
    let inbound = if open {
        json!([{"protocol": "tcp", "dst_ports": [SERVER_PORT], "src_tag": "GO"}])
    } else {
        json!([])
    };
    json!({"inbound_rules": inbound, "outbound_rules": [{"action": "allow"}]})
}

fn cold_start(c: &mut Cluster) -> Duration {
    let start = Instant::now();
    c.start_agent_nowait("h1");
    let deadline = start + Duration::from_secs(120);
    while !c.agent_ready("h1") {
        assert!(
            Instant::now() < deadline,
            "agent not ready in 120 s:\n{}",
            c.agent_log_tail("h1", 20)
        );
        assert!(
            c.agent_running("h1"),
            "agent exited:\n{}",
            c.agent_log_tail("h1", 20)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

fn count_routes(c: &Cluster) -> usize {
    c.host("h1")
        .ns()
        .exec_ok(&["ip", "-4", "route"])
        .lines()
        .count()
}

/// One write that makes client -> server:80 `open` (or closed) by rules.
fn flip_rules(c: &Cluster, open: bool) {
    c.put_json("/calico/v1/policy/profile/SRV/rules", &srv_rules(open));
}

/// The same by tags: the client's profile joins or leaves tag GO.
fn flip_tags(c: &Cluster, open: bool) {
    let tags = if open { json!(["GO"]) } else { json!([]) };
    c.put_json("/calico/v1/policy/profile/CLI/tags", &tags);
}

/// `iterations` verdict flips by `flip`; returns the latencies in ms.
fn measure(c: &Cluster, iterations: usize, flip: fn(&Cluster, bool)) -> Vec<f64> {
    let server = SocketAddr::V4(SocketAddrV4::new(c.workload("server").ip(), SERVER_PORT));
    let client_ns = c.workload("client").ns().name().to_owned();
    // Start from a known open state.
    flip_rules(c, true);
    flip_tags(c, true);
    assert!(
        wait_verdict(
            &client_ns,
            server,
            true,
            Instant::now(),
            VERDICT_DEADLINE,
            || {}
        )
        .is_some(),
        "client -> server never opened:\n{}",
        c.agent_log_tail("h1", 20)
    );
    let mut samples = Vec::with_capacity(iterations);
    let mut open = true;
    for _ in 0..iterations {
        open = !open;
        let mut acked = Instant::now();
        let seen = wait_verdict(
            &client_ns,
            server,
            open,
            Instant::now(),
            VERDICT_DEADLINE,
            || {
                flip(c, open);
                acked = Instant::now();
            },
        );
        match seen {
            Some(at) => samples.push(at.saturating_duration_since(acked).as_secs_f64() * 1e3),
            None => eprintln!(
                "verdict {} not seen within {VERDICT_DEADLINE:?}",
                if open { "open" } else { "closed" }
            ),
        }
    }
    samples
}

/// Probes `server` from inside `ns` (an attempt every millisecond) while
/// `act` runs on this thread; returns the start time of the first attempt
/// whose outcome is `open`, or None if none by `begin + deadline`.
fn wait_verdict(
    ns: &str,
    server: SocketAddr,
    open: bool,
    begin: Instant,
    deadline: Duration,
    act: impl FnOnce(),
) -> Option<Instant> {
    std::thread::scope(|scope| {
        let prober = scope.spawn(|| in_netns(ns, || probe_until(server, open, begin + deadline)));
        act();
        prober.join().ok().flatten()
    })
}

/// Starts a connection attempt every [`ATTEMPT_EVERY`]; returns the start
/// time of the first attempt whose outcome is `open`.
fn probe_until(server: SocketAddr, open: bool, until: Instant) -> Option<Instant> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, bool)>();
        let mut tick = tokio::time::interval(ATTEMPT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut first: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if Instant::now() >= until {
                        return first;
                    }
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let started = Instant::now();
                        let ok = matches!(
                            tokio::time::timeout(ATTEMPT_TIMEOUT, tokio::net::TcpStream::connect(server)).await,
                            Ok(Ok(_))
                        );
                        let _ = tx.send((started, ok));
                    });
                }
                Some((started, ok)) = rx.recv() => {
                    let earliest = match first {
                        Some(f) => started < f,
                        None => true,
                    };
                    if ok == open && earliest {
                        first = Some(started);
                    }
                    // Attempts finish in start order within one outcome, and
                    // failures take ATTEMPT_TIMEOUT: once one has been seen,
                    // any earlier-started one has also reported.
                    if let Some(f) = first {
                        if Instant::now() >= f + ATTEMPT_TIMEOUT + Duration::from_millis(5) {
                            return first;
                        }
                    }
                }
            }
        }
    })
}

struct Summary {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    n: usize,
}

impl Summary {
    fn of(samples: &[f64]) -> Summary {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let pick = |q: f64| -> f64 {
            if s.is_empty() {
                return f64::NAN;
            }
            let i = ((s.len() as f64 - 1.0) * q).round() as usize;
            s[i.min(s.len() - 1)]
        };
        Summary {
            p50: pick(0.50),
            p90: pick(0.90),
            p99: pick(0.99),
            max: s.last().copied().unwrap_or(f64::NAN),
            n: s.len(),
        }
    }
}
