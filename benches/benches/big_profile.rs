//! One big profile beside ordinary work: what a periodic firewall refresh
//! costs, and how long an unrelated change waits, with the real `margay`
//! binary, real etcd and the real kernel (issue 9, case 5).
//!
//! Run as root: `cargo bench -p margay-benches --bench big_profile`.
//! Knobs (environment):
//! * `MARGAY_BENCH_DATAPLANE` = `nftables` (default) | `iptables`;
//! * `MARGAY_BENCH_SHAPE` = `plain` (N inbound + N outbound `{}` rules, the
//!   issue's "50k + 50k") | `src_tag` (N inbound rules, each `src_tag` of
//!   its own tag);
//! * `MARGAY_BENCH_RULES` = N (default 50000);
//! * `MARGAY_BENCH_REFRESH` = the agent's `refresh_interval` in seconds
//!   (default 30, as in the issue);
//! * `MARGAY_BENCH_SAMPLES` = unrelated changes timed (default 6);
//! * `MARGAY_BENCH_FOREIGN=1`: while measuring, another nf_tables user
//!   adds and deletes a table of its own in the agent's namespace every
//!   500 ms, so every refresh reads the firewall back (the worst case for
//!   the generation check; iptables-legacy reads back every time anyway);
//! * `MARGAY_BIN` = the agent binary (else built next to this bench).
//!
//! What is inside each clock:
//! * **load**: from the big profile's etcd put being acknowledged to the
//!   agent's `margay_rules` gauge reaching the expected count (not reached
//!   when the document is rejected: then the bench waits for the
//!   `margay_invalid_objects` gauge instead).
//! * **CPU per refresh**: the agent process's user + system CPU time plus
//!   that of its ended children (`/proc/<pid>/stat`: utime, stime, cutime,
//!   cstime; all threads; the iptables backend runs tools) over `3 × refresh_interval` with no
//!   datastore change, divided by 3. It includes the agent's idle cost
//!   (watch, timers), measured over one period before the big profile is
//!   put and printed as "idle".
//! * **unrelated change**: from the etcd put of a new endpoint on another
//!   host (profile `OTHER`, not the big one) being acknowledged to its route (`ip -4 route show <ip>/32` in the
//!   agent's namespace, polled every 2 ms) being seen. The puts are spread
//!   over the refresh cycle (one every `0.37 × refresh_interval` plus the
//!   wait), so some land while a refresh runs.

use std::time::{Duration, Instant};

use margay_tests::netns::is_root;
use margay_tests::sandbox::{margay_bin, Cluster, Dataplane};
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// user + system CPU seconds of `pid` (all threads) and of its children
/// that have ended (iptables-save, ipset, iptables-restore).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime, stime, cutime, cstime are fields 14-17 (1-based); here 11-14.
    (ticks(11) + ticks(12) + ticks(13) + ticks(14)) as f64 / 100.0
}

fn big_rules(shape: &str, n: usize) -> serde_json::Value {
    match shape {
        "src_tag" => {
            let inbound: Vec<_> = (0..n)
                .map(|i| json!({"src_tag": format!("t{i}")}))
                .collect();
            json!({"inbound_rules": inbound, "outbound_rules": [{}]})
        }
        _ => {
            let rules: Vec<_> = (0..n).map(|_| json!({})).collect();
            json!({"inbound_rules": rules, "outbound_rules": rules})
        }
    }
}

fn expected_rules(shape: &str, n: usize) -> f64 {
    match shape {
        "src_tag" => n as f64,
        _ => 2.0 * n as f64,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("big_profile: run with `cargo bench -p margay-benches --bench big_profile`");
        return;
    }
    if !is_root() {
        eprintln!("big_profile: skipped, needs root (network namespaces)");
        return;
    }
    let dataplane = match std::env::var("MARGAY_BENCH_DATAPLANE").as_deref() {
        Ok("iptables") => Dataplane::Iptables,
        _ => Dataplane::Nftables,
    };
    let shape = std::env::var("MARGAY_BENCH_SHAPE").unwrap_or_else(|_| "plain".into());
    let n = env_usize("MARGAY_BENCH_RULES", 50_000);
    let refresh = env_usize("MARGAY_BENCH_REFRESH", 30);
    let samples = env_usize("MARGAY_BENCH_SAMPLES", 6);
    let bin = margay_bin();
    println!(
        "agent {}; backend {}; shape {shape}; N = {n}; refresh_interval = {refresh} s",
        bin.display(),
        dataplane.as_str()
    );

    let refresh_arg = refresh.to_string();
    let mut c = Cluster::builder()
        .hosts(2)
        .dataplane(dataplane)
        .start_agents(false)
        .agent_arg("--refresh-interval")
        .agent_arg(&refresh_arg)
        .build();
    c.put_pool("10.65.0.0/16", false);
    c.put_pool("10.70.0.0/16", false);
    c.add_workload("big", "h1", "10.65.1.2");
    c.put_endpoint("big", &["BIG"], &json!({}));
    c.put_profile_rules(
        "BIG",
        &json!({"inbound_rules": [{}], "outbound_rules": [{}]}),
    );
    c.put_profile_rules(
        "OTHER",
        &json!({"inbound_rules": [{}], "outbound_rules": [{}]}),
    );
    c.start_agent("h1");
    let pid = c.agent_pid("h1").expect("agent pid");
    let period = Duration::from_secs(refresh as u64);

    let idle = cpu_per_refresh(pid, period, 1);
    println!("idle: CPU per refresh {:.3} s", idle);

    let before_invalid = c.metric_sum("h1", "margay_invalid_objects");
    let t = Instant::now();
    c.put_profile_rules("BIG", &big_rules(&shape, n));
    let want = expected_rules(&shape, n);
    let loaded = wait_until(Duration::from_secs(900), || {
        c.metric_sum("h1", "margay_rules") >= want
            || c.metric_sum("h1", "margay_invalid_objects") > before_invalid
    });
    let rejected = c.metric_sum("h1", "margay_invalid_objects") > before_invalid;
    println!(
        "big profile {}: {:.1} s (margay_rules = {})",
        if rejected {
            "REJECTED as invalid"
        } else if loaded {
            "applied"
        } else {
            "NOT applied within 900 s"
        },
        t.elapsed().as_secs_f64(),
        c.metric_sum("h1", "margay_rules")
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let foreign = std::env::var("MARGAY_BENCH_FOREIGN").is_ok_and(|v| v == "1");
    let churn = foreign.then(|| {
        let ns = c.host("h1").ns().name().to_owned();
        let stop = stop.clone();
        std::thread::spawn(move || foreign_churn(&ns, &stop))
    });
    // Let one whole refresh pass before measuring.
    std::thread::sleep(period + Duration::from_secs(1));

    let per = cpu_per_refresh(pid, period, 3);
    println!("loaded: CPU per refresh {per:.3} s (idle {idle:.3} s)");

    let mut delays = Vec::new();
    for i in 0..samples {
        let ip = format!("10.70.0.{}", i + 1);
        let key = format!("/calico/v1/host/h2/workload/cni/u{i}/endpoint/u{i}");
        let doc = json!({"state": "active", "name": format!("caliu{i}"), "profile_ids": ["OTHER"],
            "ipv4_nets": [format!("{ip}/32")], "ipv6_nets": []});
        c.put_json(&key, &doc);
        let acked = Instant::now();
        let seen = wait_until(Duration::from_secs(300), || {
            !c.host("h1")
                .ns()
                .exec_ok(&["ip", "-4", "route", "show", &format!("{ip}/32")])
                .trim()
                .is_empty()
        });
        let ms = acked.elapsed().as_secs_f64() * 1e3;
        println!(
            "unrelated change {i}: {}{ms:.0} ms",
            if seen { "" } else { "NOT SEEN after " }
        );
        delays.push(ms);
        std::thread::sleep(period.mul_f64(0.37));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = churn {
        let _ = t.join();
    }
    delays.sort_by(f64::total_cmp);
    let p50 = delays.get(delays.len() / 2).copied().unwrap_or(f64::NAN);
    let max = delays.last().copied().unwrap_or(f64::NAN);
    println!(
        "SUMMARY backend={} shape={shape} N={n} refresh={refresh}s foreign={foreign} rejected={rejected} \
         cpu_per_refresh={per:.3}s idle={idle:.3}s change_p50={p50:.0}ms change_max={max:.0}ms",
        dataplane.as_str()
    );
    println!(
        "drift repairs: {}",
        c.metric_sum("h1", "margay_drift_repairs_total")
    );
}

/// Another nf_tables user: a table of its own, added and deleted.
fn foreign_churn(ns: &str, stop: &std::sync::atomic::AtomicBool) {
    let mut add = true;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let verb = if add { "add" } else { "delete" };
        let _ = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "nft",
                verb,
                "table",
                "inet",
                "bench-foreign",
            ])
            .status();
        add = !add;
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// CPU seconds of `pid` per refresh, over `n` refresh periods.
fn cpu_per_refresh(pid: u32, period: Duration, n: u32) -> f64 {
    let c0 = cpu_seconds(pid);
    std::thread::sleep(period * n);
    (cpu_seconds(pid) - c0) / f64::from(n)
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}
