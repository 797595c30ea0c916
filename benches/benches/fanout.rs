//! Fan-out: N real agents, each in its own network namespace, against one
//! etcd, directly and through etcd's own `grpc-proxy`.
//!
//! Run as root: `cargo bench -p margay-benches --bench fanout`. For each N
//! (`MARGAY_FANOUT_AGENTS`, default `50,100,200`) it makes a hub namespace
//! (bridge, etcd, proxies) and N agent namespaces on veth pairs
//! (tests/src/fanout.rs), and for each mode (`MARGAY_FANOUT_MODES`, default
//! `direct,proxy1,proxy4`: every agent on etcd; all on one proxy; spread
//! over four) starts a fresh etcd holding 5,000 remote endpoints on 100
//! other hosts, 100 profiles (rules with selectors and tags, tags, labels)
//! and one local endpoint per agent, the mode's proxies, and N
//! `margay run --dataplane none --inter-host-routes none` with their own
//! hostnames, and waits until all are ready.
//!
//! Then it times `MARGAY_FANOUT_WRITES` writes (default 50, after one
//! untimed warm-up), one at a time: each rewrites the rules of the profile
//! every agent's local endpoint uses, so every agent must recompute and
//! apply. The clock starts just before the put leaves the client and stops
//! at the LAST agent's apply: each agent's `margay_last_apply_revision`
//! says its last apply covered this write's revision, and
//! `margay_last_apply_timestamp_seconds` when that apply ended (the value
//! is the time, so how often the bench polls does not limit resolution).
//! Over the same window it reads etcd's and the proxies' CPU time
//! (utime + stime from `/proc/<pid>/stat`, idle background included) and,
//! at the end, their `VmRSS` and the sum of the agents'. In the proxy modes
//! it then kills the proxies, waits until every agent says it lost etcd,
//! writes once more, starts the proxies again on the same ports, and times
//! from that start to the last agent's apply of the outage's write; a
//! single agent that listed again instead of resuming its watch
//! (`margay_datastore_resyncs_total` other than `startup`) fails the run.
//!
//! Everything runs on this machine's cores: with 200 agents reacting at
//! once the latency is bound by CPU, not by etcd or the proxy. A write not
//! applied by every agent within 60 s fails the bench (exit 1, no row for
//! that configuration). With the defaults it takes about 3 minutes.

use std::time::{Duration, Instant, SystemTime};

use margay_benches::report::{require_root, Row, Table};
use margay_tests::fanout::procstat::{cpu_time, rss_bytes};
use margay_tests::fanout::{FanoutHosts, FanoutRun, Mode};
use margay_tests::sandbox::margay_bin;

/// Remote endpoints in the datastore.
const ENDPOINTS: usize = 5_000;
/// Profiles in the datastore.
const PROFILES: usize = 100;
/// How long agents may take to notice their proxy is gone.
const OUTAGE_NOTICE: Duration = Duration::from_secs(30);
/// How long one write may take to reach every agent.
const WRITE_DEADLINE: Duration = Duration::from_secs(60);

/// One configuration's figures.
struct Figures {
    mode: Mode,
    agents: usize,
    writes: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    window: Duration,
    etcd_cpu: Duration,
    etcd_rss: u64,
    proxy_cpu: Duration,
    proxy_rss: u64,
    agents_rss: u64,
    etcd_watchers: u64,
    ready_after: Duration,
    /// Proxy modes: from starting the killed proxies again to the last
    /// agent's apply of the write made while they were down.
    resumed_after: Option<Duration>,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("fanout: run with `cargo bench -p margay-benches --bench fanout`");
        return;
    }
    require_root("fanout");
    let agent_counts = env_list("MARGAY_FANOUT_AGENTS", "50,100,200");
    let modes = env_list("MARGAY_FANOUT_MODES", "direct,proxy1,proxy4");
    let writes: usize = std::env::var("MARGAY_FANOUT_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let counts: Vec<usize> = agent_counts.iter().map(|n| parse_or_exit(n)).collect();
    let modes: Vec<Mode> = modes.iter().map(|m| mode_or_exit(m)).collect();
    // Resolve (and if needed build) the agent binary before any clock starts.
    let bin = margay_bin();
    eprintln!("fanout: agent {}", bin.display());

    let started = Instant::now();
    let mut all = Vec::new();
    let mut failed = false;
    for &n in &counts {
        let hosts = FanoutHosts::new(n);
        for &mode in &modes {
            match measure(&hosts, mode, writes) {
                Ok(figures) => {
                    eprintln!("{}", line(&figures));
                    all.push(figures);
                }
                Err(e) => {
                    eprintln!("fanout: {}-{n} FAILED: {e}", mode.label());
                    failed = true;
                }
            }
        }
    }
    println!(
        "\nfanout: {writes} writes each, 5,000 endpoints, 100 profiles ({:.0} s in all)",
        started.elapsed().as_secs_f64()
    );
    println!("{}", header());
    for figures in &all {
        println!("{}", line(figures));
    }
    for figures in &all {
        row(figures, &all).emit();
    }
    if failed {
        std::process::exit(1);
    }
}

/// Starts `mode` on `hosts`, times `writes` writes to all agents, reads
/// the processes' CPU and memory.
fn measure(hosts: &FanoutHosts, mode: Mode, writes: usize) -> Result<Figures, String> {
    let starting = Instant::now();
    let mut run = FanoutRun::start(hosts, mode, ENDPOINTS, PROFILES);
    let ready_after = starting.elapsed();
    // Warm-up: every agent has applied once since its snapshot.
    let (_, revision) = run.write_shared_profile(1);
    run.wait_applied(revision, WRITE_DEADLINE)?;

    let etcd = run.etcd_pid();
    let proxies = run.proxy_pids();
    let etcd_before = cpu_time(etcd).ok_or("etcd is gone")?;
    let proxies_before = total_cpu(&proxies)?;
    let window = Instant::now();
    let mut latencies = Vec::with_capacity(writes);
    for w in 0..writes {
        let (sent, revision) = run.write_shared_profile(w + 2);
        let applied = run.wait_applied(revision, WRITE_DEADLINE)?;
        latencies.push(all_applied_after(sent, &applied)?);
    }
    let window = window.elapsed();
    let etcd_cpu = cpu_time(etcd).ok_or("etcd is gone")? - etcd_before;
    let proxy_cpu = total_cpu(&proxies)? - proxies_before;
    let etcd_rss = rss_bytes(etcd).ok_or("etcd is gone")?;
    let proxy_rss = total_rss(&proxies)?;
    let etcd_watchers = run
        .etcd_watchers()
        .ok_or("etcd does not say how many watchers it has")?;
    let resumed_after = match mode {
        Mode::Direct => None,
        Mode::Proxies(_) => Some(restart_proxies(&mut run, mode, writes + 2)?),
    };
    latencies.sort();
    Ok(Figures {
        mode,
        agents: hosts.len(),
        writes,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
        window,
        etcd_cpu,
        etcd_rss,
        proxy_cpu,
        proxy_rss,
        agents_rss: total_rss(&run.agent_pids())?,
        etcd_watchers,
        ready_after,
        resumed_after,
    })
}

/// Kills the proxies, waits until every agent says it lost etcd, writes
/// version `version` of the shared profile, starts the proxies again on
/// their ports: returns the time from starting them again to the last
/// agent's apply of that write. Every agent must have resumed its watch:
/// a single full list among them is an error.
fn restart_proxies(run: &mut FanoutRun, mode: Mode, version: usize) -> Result<Duration, String> {
    let relists_before = run.relists()?;
    run.kill_proxies(OUTAGE_NOTICE)?;
    let (_, revision) = run.write_shared_profile(version);
    let restarted = SystemTime::now();
    run.restart_proxies(mode);
    let applied = run.wait_applied(revision, WRITE_DEADLINE)?;
    let relists = run.relists()? - relists_before;
    if relists > 0 {
        return Err(format!(
            "{relists} full lists by the agents instead of watch resumes"
        ));
    }
    all_applied_after(restarted, &applied)
}

/// From the write leaving the client to the last agent's apply. An apply
/// stamped before the write was sent cannot be this write's: an error.
fn all_applied_after(sent: SystemTime, applied: &[SystemTime]) -> Result<Duration, String> {
    let last = applied.iter().max().ok_or("no agents")?;
    last.duration_since(sent)
        .map_err(|_| "an agent's apply of the write is stamped before the write was sent".into())
}

fn total_cpu(pids: &[u32]) -> Result<Duration, String> {
    pids.iter()
        .map(|&p| cpu_time(p).ok_or_else(|| format!("process {p} is gone")))
        .sum()
}

fn total_rss(pids: &[u32]) -> Result<u64, String> {
    pids.iter()
        .map(|&p| rss_bytes(p).ok_or_else(|| format!("process {p} is gone")))
        .sum()
}

/// Nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn header() -> String {
    format!(
        "{:<7} {:>4} {:>9} {:>9} {:>9} {:>13} {:>8} {:>10} {:>9} {:>14} {:>9} {:>22} {:>8} {:>8}",
        "mode",
        "N",
        "p50",
        "p99",
        "max",
        "etcd CPU/wr",
        "watchers",
        "etcd %core",
        "etcd RSS",
        "proxy CPU/wr",
        "proxy RSS",
        "agents RSS",
        "ready",
        "resume"
    )
}

fn line(f: &Figures) -> String {
    format!(
        "{:<7} {:>4} {:>9} {:>9} {:>9} {:>13} {:>8} {:>10} {:>9} {:>14} {:>9} {:>22} {:>8} {:>8}",
        f.mode.label(),
        f.agents,
        ms(f.p50),
        ms(f.p99),
        ms(f.max),
        ms(per_write(f.etcd_cpu, f.writes)),
        f.etcd_watchers,
        format!(
            "{:.0}%",
            100.0 * f.etcd_cpu.as_secs_f64() / f.window.as_secs_f64().max(1e-9)
        ),
        mb(f.etcd_rss),
        proxy_or_dash(f, ms(per_write(f.proxy_cpu, f.writes))),
        proxy_or_dash(f, mb(f.proxy_rss)),
        format!(
            "{} ({}/agent)",
            mb(f.agents_rss),
            mb(f.agents_rss / f.agents as u64)
        ),
        secs(f.ready_after),
        f.resumed_after.map_or("—".into(), secs),
    )
}

/// The README row of one configuration; proxy rows take the direct run of
/// the same N as their reference.
fn row(f: &Figures, all: &[Figures]) -> Row {
    let n = f.agents;
    let direct = all.iter().find(|d| d.mode == Mode::Direct && d.agents == n);
    let reference = match (f.mode, direct) {
        (Mode::Proxies(_), Some(d)) => format!(
            "direct: p50 {} / p99 {}, etcd {} CPU per write",
            ms(d.p50),
            ms(d.p99),
            ms(per_write(d.etcd_cpu, d.writes))
        ),
        _ => "—".into(),
    };
    let via = match f.mode {
        Mode::Direct => "each watching etcd directly".to_owned(),
        Mode::Proxies(1) => "all through one `etcd grpc-proxy`".to_owned(),
        Mode::Proxies(k) => format!("spread over {k} grpc-proxies"),
    };
    let proxy = if f.mode == Mode::Direct {
        String::new()
    } else {
        format!(
            "; proxies {} CPU per write, RSS {}; proxies killed and restarted: all {n} resumed \
             (no relist), the outage's write applied {} after the restart",
            ms(per_write(f.proxy_cpu, f.writes)),
            mb(f.proxy_rss),
            f.resumed_after.map_or("—".into(), secs),
        )
    };
    Row {
        table: Table::LargeClusters,
        id: format!("fanout/{}-{n}", f.mode.label()),
        what: format!(
            "{n} agents, {via} (`fanout`, 5,000 endpoints): a profile write leaving the client → \
             the last of the {n} has applied it, p50 / p99 of {} writes; CPU (utime+stime) per \
             write; RSS",
            f.writes
        ),
        margay: format!(
            "p50 {} / p99 {}; etcd {} CPU per write, {} watchers, RSS {}{proxy}; agents {} ({} each)",
            ms(f.p50),
            ms(f.p99),
            ms(per_write(f.etcd_cpu, f.writes)),
            f.etcd_watchers,
            mb(f.etcd_rss),
            mb(f.agents_rss),
            mb(f.agents_rss / n as u64),
        ),
        reference,
        target: "—".into(),
    }
}

fn proxy_or_dash(f: &Figures, text: String) -> String {
    if f.mode == Mode::Direct {
        "—".into()
    } else {
        text
    }
}

fn per_write(total: Duration, writes: usize) -> Duration {
    total / writes.max(1) as u32
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn mb(bytes: u64) -> String {
    let mb = bytes as f64 / (1024.0 * 1024.0);
    if mb < 10.0 {
        format!("{mb:.1} MB")
    } else {
        format!("{mb:.0} MB")
    }
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_or_exit(n: &str) -> usize {
    match n.parse() {
        Ok(n) if n > 0 => n,
        _ => {
            eprintln!("fanout: MARGAY_FANOUT_AGENTS: {n:?} is not a positive number");
            std::process::exit(2);
        }
    }
}

fn mode_or_exit(m: &str) -> Mode {
    if m == "direct" {
        return Mode::Direct;
    }
    match m.strip_prefix("proxy").and_then(|k| k.parse().ok()) {
        Some(k) if k > 0 => Mode::Proxies(k),
        _ => {
            eprintln!("fanout: MARGAY_FANOUT_MODES: {m:?} is not direct or proxy<k>");
            std::process::exit(2);
        }
    }
}
