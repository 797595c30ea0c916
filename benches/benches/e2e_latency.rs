//! End-to-end latency of the real `margay` binary at scale: from an etcd
//! write leaving the client to the new verdict seen by real packets.
//!
//! Run as root: `cargo bench -p margay-benches --bench e2e_latency`. It builds
//! a one-host sandbox (tests/src/sandbox.rs), loads `MARGAY_BENCH_REMOTE`
//! remote endpoints (default 20000, spread over 20 other hosts; the first
//! 10,000 also carry tag `BIG`), 1000 profiles (each with a tag and a rule
//! using it) and 50 local workloads, starts the agent and waits until it is
//! ready and the first verdict holds (cold start is the `cold_start`
//! bench's). Then, `MARGAY_BENCH_ITERATIONS` times each (default 100), it
//! flips a verdict by three kinds of write: a profile's rules; a profile's
//! tags (one member of a small set); the same with a tag that 10,000 remote
//! endpoints carry (one member of a 10,000-member set). It reports p50 /
//! p90 / p99 / max against the targets (p50 ≤ 10 ms, p99 ≤ 50 ms) and emits
//! one README row per kind. `MARGAY_BENCH_DATAPLANE=iptables` picks the
//! other backend.
//!
//! How a verdict is observed ([`margay_benches::verdict`]): a prober inside
//! the client workload starts fresh TCP connection attempts to a port of
//! the server nothing listens on (a SYN that passes is answered with a
//! reset by the server's kernel, a dropped one is not), on a fixed
//! schedule: a few 500 µs apart before the write (the old verdict, seen),
//! then, from the moment the write is about to leave, one every
//! `MARGAY_BENCH_PROBE_US` µs (default 80) until the new verdict has held
//! for 20 attempts. Probing costs CPU that, on a 2-core host, slows what
//! is measured, so it is cheap (no handshakes, no listener) and dense only
//! in the window that needs it; the prober's thread runs at a real-time
//! priority so that its schedule holds on a busy host. The clock starts
//! just before the put is handed to the etcd client's open connection
//! (etcd's commit is inside it) and stops at the start of the first
//! attempt with the new verdict. The achieved spacing is measured and a
//! median over 100 µs fails the bench; each sample's bracket (the gap to
//! the attempt before, which saw the old verdict) is printed and written
//! into the row: it widens when the host stalls the prober during the
//! change (the 10,000-member set row shows it). A new verdict seen before
//! the write, one that comes and goes, or none within 5 s is an error:
//! counted, reported, and the bench exits 1 without that row.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use margay_benches::report::{require_root, Row, Table};
use margay_benches::timing::{format_count, format_duration, percentile};
use margay_benches::verdict::{classify, passes, probe_around, ProbeConfig, Sample, SampleError};
use margay_dataplane::netns::NetnsTarget;
use margay_tests::sandbox::{margay_bin, Cluster, Dataplane};
use serde_json::json;

const LOCAL: usize = 50;
const PROFILES: usize = 1000;
const REMOTE_HOSTS: usize = 20;
/// Remote endpoints carrying tag `BIG`.
const BIG_MEMBERS: usize = 10_000;
/// Not one of the sandbox's workload ports: nothing listens on it, so a SYN
/// that passes is answered with a reset by the server's kernel.
const SERVER_PORT: u16 = 9000;
/// An answer inside one host takes tens of µs; an attempt not answered
/// after this long met a drop.
const ATTEMPT_GRACE: Duration = Duration::from_millis(25);
const VERDICT_DEADLINE: Duration = Duration::from_secs(5);
const P50_TARGET: Duration = Duration::from_millis(10);
const P99_TARGET: Duration = Duration::from_millis(50);
const RESOLUTION_TARGET: Duration = Duration::from_micros(100);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One kind of verdict flip.
struct Kind {
    id: &'static str,
    label: &'static str,
    what: &'static str,
    reference: &'static str,
    /// The tag SRV's rule allows.
    server_tag: &'static str,
    /// Whether the flip rewrites SRV's rules (else CLI's tags).
    by_rules: bool,
}

const KINDS: [Kind; 3] = [
    Kind {
        id: "rules",
        label: "profile rules (allow <-> none)",
        what: "a profile's rules changed (allow ↔ none)",
        reference: "Felix: about 10 applies per second",
        server_tag: "GO",
        by_rules: true,
    },
    Kind {
        id: "tags",
        label: "profile tags (small set member)",
        what: "a profile's tags changed (the client joins or leaves a small set)",
        reference: "—",
        server_tag: "GO",
        by_rules: false,
    },
    Kind {
        id: "set-10k",
        label: "tag of 10,000 endpoints (member)",
        what: "the client joins or leaves a tag 10,000 remote endpoints carry \
               (one member of a 10,000-member set)",
        reference: "—",
        server_tag: "BIG",
        by_rules: false,
    },
];

/// The run's settings, for the report.
struct Scale {
    remote: usize,
    iterations: usize,
    spacing: Duration,
    dataplane: Dataplane,
}

/// What the samples of one kind came to.
struct Outcome {
    latencies: Vec<Duration>,
    resolutions: Vec<Duration>,
    gaps: Vec<Duration>,
    /// Per sample, the longest `connect` call among the attempts around
    /// the change.
    stalls: Vec<Duration>,
    /// Per sample, the put's round trip (etcd's commit, fsync included):
    /// inside the clock, as the agent only hears of a committed write.
    put_round_trips: Vec<Duration>,
    errors: Vec<SampleError>,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("e2e_latency: run with `cargo bench -p margay-benches --bench e2e_latency`");
        return;
    }
    require_root("e2e_latency");
    let remote = env_usize("MARGAY_BENCH_REMOTE", 20_000);
    let iterations = env_usize("MARGAY_BENCH_ITERATIONS", 100).max(1);
    let spacing = Duration::from_micros(env_usize("MARGAY_BENCH_PROBE_US", 80) as u64);
    let dataplane = match std::env::var("MARGAY_BENCH_DATAPLANE").as_deref() {
        Ok("iptables") => Dataplane::Iptables,
        _ => Dataplane::Nftables,
    };
    assert!(
        remote >= BIG_MEMBERS,
        "MARGAY_BENCH_REMOTE must be at least {BIG_MEMBERS} (the big set's members)"
    );
    // Resolve (and if needed build) the agent binary before any clock starts.
    let bin = margay_bin();
    println!("agent binary: {}", bin.display());
    let started = Instant::now();
    let mut c = Cluster::builder()
        .hosts(1)
        .dataplane(dataplane)
        .start_agents(false)
        .build();
    let keys = load_scale(&mut c, remote);
    println!(
        "loaded {remote} remote endpoints ({BIG_MEMBERS} with tag BIG), {PROFILES} profiles, \
         {LOCAL} local workloads ({} keys); backend {}",
        keys + LOCAL,
        dataplane.as_str()
    );
    let server = SocketAddr::V4(SocketAddrV4::new(c.workload("server").ip(), SERVER_PORT));
    c.start_agent("h1");
    let cfg = ProbeConfig {
        spacing,
        spacing_before: Duration::from_micros(500),
        grace: ATTEMPT_GRACE,
        warm_up: 4,
        settle: 20,
        deadline: VERDICT_DEADLINE,
    };
    let outcomes: Vec<Outcome> = KINDS
        .iter()
        .map(|k| measure(&c, k, server, iterations, &cfg))
        .collect();
    drop(c);
    let scale = Scale {
        remote,
        iterations,
        spacing,
        dataplane,
    };
    let ok = report(&outcomes, &scale);
    println!("bench time: {:.0} s", started.elapsed().as_secs_f64());
    if !ok {
        std::process::exit(1);
    }
}

/// Writes the whole data set, creates the local workloads, and writes the
/// pair used for measuring: `server` (profile SRV) and `client` (CLI).
/// Returns how many keys were written in bulk.
fn load_scale(c: &mut Cluster, remote: usize) -> usize {
    let mut kv: Vec<(String, String)> = Vec::with_capacity(remote + 3 * PROFILES + 64);
    for p in 0..PROFILES {
        let rules = json!({
            "inbound_rules": [{"protocol": "tcp", "dst_ports": [80 + (p % 1000)], "src_tag": format!("T{p}")}],
            "outbound_rules": [{"action": "allow"}]
        });
        let prefix = format!("/calico/v1/policy/profile/P{p}");
        kv.push((format!("{prefix}/rules"), rules.to_string()));
        kv.push((
            format!("{prefix}/tags"),
            json!([format!("T{p}")]).to_string(),
        ));
        let labels = json!({"group": format!("g{}", p % 10)});
        kv.push((format!("{prefix}/labels"), labels.to_string()));
    }
    kv.push((
        "/calico/v1/policy/profile/BIGP/rules".into(),
        json!({"inbound_rules": [], "outbound_rules": []}).to_string(),
    ));
    kv.push((
        "/calico/v1/policy/profile/BIGP/tags".into(),
        json!(["BIG"]).to_string(),
    ));
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
        let mut profiles = vec![format!("P{}", i % PROFILES)];
        if i < BIG_MEMBERS {
            profiles.push("BIGP".into());
        }
        let doc = json!({
            "state": "active", "name": format!("cali{i}"), "profile_ids": profiles,
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
        srv_rules(Some("GO")).to_string(),
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
    kv.len()
}

/// SRV's rules: tcp [`SERVER_PORT`] from `tag` when given, nothing otherwise.
fn srv_rules(tag: Option<&str>) -> serde_json::Value {
    let inbound = match tag {
        Some(tag) => json!([{"protocol": "tcp", "dst_ports": [SERVER_PORT], "src_tag": tag}]),
        None => json!([]),
    };
    json!({"inbound_rules": inbound, "outbound_rules": [{"action": "allow"}]})
}

const SRV_RULES: &str = "/calico/v1/policy/profile/SRV/rules";
const CLI_TAGS: &str = "/calico/v1/policy/profile/CLI/tags";

/// The write that makes client → server `open` (or not) for `kind`;
/// returns the moment it left the client.
fn flip(c: &Cluster, kind: &Kind, open: bool) -> Instant {
    let tag = open.then_some(kind.server_tag);
    if kind.by_rules {
        c.put_json_timed(SRV_RULES, &srv_rules(tag))
    } else {
        c.put_json_timed(CLI_TAGS, &json!(tag.into_iter().collect::<Vec<_>>()))
    }
}

/// `iterations` verdict flips of `kind`, starting from "open".
fn measure(
    c: &Cluster,
    kind: &Kind,
    server: SocketAddr,
    iterations: usize,
    cfg: &ProbeConfig,
) -> Outcome {
    c.put_json(SRV_RULES, &srv_rules(Some(kind.server_tag)));
    c.put_json(CLI_TAGS, &json!([kind.server_tag]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let client_ns = NetnsTarget::named(c.workload("client").ns().name()).expect("ns name");
    while !passes(&client_ns, server, Duration::from_millis(200)).expect("probe") {
        assert!(
            Instant::now() < deadline,
            "client -> server never opened for {}:\n{}",
            kind.id,
            c.agent_log_tail("h1", 20)
        );
    }
    let mut out = Outcome {
        latencies: vec![],
        resolutions: vec![],
        gaps: vec![],
        stalls: vec![],
        put_round_trips: vec![],
        errors: vec![],
    };
    let mut open = true;
    for _ in 0..iterations {
        open = !open;
        let mut acked = None;
        let run = probe_around(&client_ns, server, open, cfg, || {
            let sent = flip(c, kind, open);
            acked = Some(Instant::now());
            sent
        })
        .expect("probe");
        out.put_round_trips
            .extend(acked.map(|a| a.saturating_duration_since(run.write_at)));
        out.gaps.extend(run.gaps());
        match classify(&run.attempts, run.write_at, open) {
            Ok(Sample {
                latency,
                resolution,
                first_new,
            }) => {
                out.latencies.push(latency);
                out.resolutions.push(resolution);
                // The longest connect call around the change.
                let around = first_new.saturating_sub(3)..(first_new + 3).min(run.attempts.len());
                let stall = run.attempts[around].iter().map(|a| a.syscall).max();
                out.stalls.extend(stall);
            }
            Err(e) => {
                eprintln!(
                    "{}: verdict {}: {e}",
                    kind.id,
                    if open { "open" } else { "closed" }
                );
                if out.errors.is_empty() {
                    eprintln!(
                        "agent log at the first error:\n{}",
                        c.agent_log_tail("h1", 30)
                    );
                }
                out.errors.push(e);
                // Let a late verdict land before the next sample starts.
                wait_stable(&client_ns, server, open);
            }
        }
    }
    out
}

/// After a failed sample: waits (bounded) until the verdict is `open`
/// (polling with a deadline).
fn wait_stable(client_ns: &NetnsTarget, server: SocketAddr, open: bool) {
    let deadline = Instant::now() + VERDICT_DEADLINE;
    while passes(client_ns, server, Duration::from_millis(100)).ok() != Some(open)
        && Instant::now() < deadline
    {}
}

fn pct(v: &[Duration], q: f64) -> Duration {
    percentile(v, q).unwrap_or_default()
}

fn micros(d: Duration) -> String {
    format!("{} µs", d.as_micros())
}

/// Prints the table and the rows; false when anything failed.
fn report(outcomes: &[Outcome], scale: &Scale) -> bool {
    let all_gaps: Vec<Duration> = outcomes.iter().flat_map(|o| o.gaps.clone()).collect();
    let achieved = pct(&all_gaps, 0.5);
    println!(
        "\nprobe schedule every {}; achieved spacing p50 {}, p99 {}, max {}",
        micros(scale.spacing),
        micros(achieved),
        micros(pct(&all_gaps, 0.99)),
        micros(pct(&all_gaps, 1.0))
    );
    println!(
        "{:<34} {:>7} {:>7} {:>7} {:>7} {:>5} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "etcd write -> verdict (ms)",
        "p50",
        "p90",
        "p99",
        "max",
        "n",
        "errors",
        "brkt p50",
        "brkt max",
        "stall p50",
        "put p50"
    );
    for (kind, o) in KINDS.iter().zip(outcomes) {
        print_line(kind, o);
    }
    println!(
        "(brkt: gap between the last attempt with the old verdict and the first with the new; \
         stall: longest connect call around the change; \
         put: the etcd put's round trip, inside the clock)"
    );
    if achieved > RESOLUTION_TARGET {
        eprintln!(
            "e2e_latency: the prober kept a spacing of {} (p50), over {}: no rows",
            micros(achieved),
            micros(RESOLUTION_TARGET)
        );
        return false;
    }
    let mut ok = true;
    for (kind, o) in KINDS.iter().zip(outcomes) {
        let (p50, p99) = (pct(&o.latencies, 0.5), pct(&o.latencies, 0.99));
        let met = o.errors.is_empty()
            && o.latencies.len() == scale.iterations
            && p50 <= P50_TARGET
            && p99 <= P99_TARGET;
        if met {
            row(kind, o, scale, achieved).emit();
        } else {
            eprintln!(
                "e2e_latency: {}: failed ({} errors, {} samples, p50 {} / p99 {} against \
                 p50 ≤ 10 ms, p99 ≤ 50 ms); no row",
                kind.id,
                o.errors.len(),
                o.latencies.len(),
                format_duration(p50),
                format_duration(p99)
            );
            ok = false;
        }
    }
    ok
}

fn print_line(kind: &Kind, o: &Outcome) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let l = &o.latencies;
    println!(
        "{:<34} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>5} {:>6} {:>9} {:>9} {:>9} {:>9}",
        kind.label,
        ms(pct(l, 0.5)),
        ms(pct(l, 0.9)),
        ms(pct(l, 0.99)),
        ms(pct(l, 1.0)),
        l.len(),
        o.errors.len(),
        micros(pct(&o.resolutions, 0.5)),
        micros(pct(&o.resolutions, 1.0)),
        micros(pct(&o.stalls, 0.5)),
        micros(pct(&o.put_round_trips, 0.5))
    );
    if !o.errors.is_empty() {
        let count = |f: fn(&SampleError) -> bool| o.errors.iter().filter(|e| f(e)).count();
        println!(
            "  errors: {} verdicts seen before the write, {} timed out, {} came and went, {} without a baseline",
            count(|e| matches!(e, SampleError::BeforeWrite { .. })),
            count(|e| *e == SampleError::TimedOut),
            count(|e| *e == SampleError::Flapped),
            count(|e| *e == SampleError::NoBaseline),
        );
    }
}

/// The README row of one kind.
fn row(kind: &Kind, o: &Outcome, scale: &Scale, achieved: Duration) -> Row {
    let backend = match scale.dataplane {
        Dataplane::Iptables => "/iptables",
        _ => "",
    };
    Row {
        table: Table::Performance,
        id: format!("e2e_latency{backend}/{}", kind.id),
        what: format!(
            "etcd write → new verdict in real packets, 50 local + {} remote endpoints, \
             1,000 profiles, {}: {}. Clock: from the put leaving the test's etcd client to the \
             first TCP SYN from inside the client workload that gets the new verdict; a SYN \
             every {} (achieved p50 {}), the change bracketed within p50 {} (`e2e_latency`)",
            format_count(scale.remote),
            scale.dataplane.as_str(),
            kind.what,
            micros(scale.spacing),
            micros(achieved),
            micros(pct(&o.resolutions, 0.5))
        ),
        margay: format!(
            "p50 {}, p99 {}, max {} ({} samples)",
            format_duration(pct(&o.latencies, 0.5)),
            format_duration(pct(&o.latencies, 0.99)),
            format_duration(pct(&o.latencies, 1.0)),
            o.latencies.len()
        ),
        reference: kind.reference.into(),
        target: "p50 ≤ 10 ms, p99 ≤ 50 ms".into(),
    }
}
