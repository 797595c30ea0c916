//! Route programming throughput: margay's pipelined netlink writer against
//! `ip -batch` doing exactly the same work (the same /32 routes, `dev`,
//! `scope link`, our protocol number, main table), in a throw-away namespace.
//!
//! Run as root: `cargo bench -p margay-benches --bench routes`. On a busy
//! machine run the built binary under `chrt -f 10`, so both contenders (and
//! the `ip` children, which inherit the policy) get a core of their own.
//! Sizes come from `MARGAY_BENCH_ROUTES` (comma list, default `10000,50000`),
//! rounds from `MARGAY_BENCH_ROUNDS` (default 3).
//!
//! Prints routes per second of wall time (median and fastest round) for add
//! and delete with the ratio margay / ip, then the same per second of CPU
//! time (user + system from `/proc/self/stat`, 10 ms ticks, summed over the
//! rounds), which a busy machine disturbs less.
//!
//! Prints the README row `routes/add-delete` from the 50,000-route size (if
//! measured) and exits 1 when margay adds or deletes fewer than 100,000
//! routes per second of wall time there.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use margay_benches::estimates::fail;
use margay_benches::report::{require_root, Row, Table};
use margay_benches::timing::format_count;
use margay_dataplane::firewall::lower::FirewallSettings;
use margay_dataplane::firewall::BackendKind;
use margay_dataplane::{Dataplane, DataplaneConfig};
use margay_policy::desired::{Changes, DesiredState, RouteTarget};
use margay_policy::names::InterfaceName;
use margay_tests::netns::TestNetns;

const PROTO: u8 = 80;
const IFACES: usize = 16;
/// The size the README row reports.
const ROW_SIZE: usize = 50_000;
/// Routes per second margay must reach, adding and deleting.
const TARGET_RATE: f64 = 100_000.0;

fn iface_name(i: usize) -> String {
    format!("cali{}", i % IFACES)
}

fn dst(i: usize) -> Ipv4Net {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    let addr = Ipv4Addr::from(0x0a40_0000 | i);
    Ipv4Net::new(addr, 32).unwrap_or_default()
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// CPU time used so far by this process and by its waited-for children.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    own: Duration,
    children: Duration,
}

fn cpu_now() -> Cpu {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<u64> = after_comm
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14-17 of proc(5) (utime, stime, cutime, cstime) are 11-14 after the comm.
    let tick = |i: usize| f.get(i).copied().unwrap_or(0);
    let ms = |t: u64| Duration::from_millis(t * 10);
    Cpu {
        own: ms(tick(11) + tick(12)),
        children: ms(tick(13) + tick(14)),
    }
}

/// Wall time and CPU time of one measured step.
#[derive(Debug, Clone, Copy, Default)]
struct Took {
    wall: Duration,
    cpu: Duration,
}

fn setup(ns: &TestNetns) {
    for i in 0..IFACES {
        let name = iface_name(i);
        let peer = format!("{name}p");
        ns.exec_ok(&[
            "ip", "link", "add", &name, "type", "veth", "peer", "name", &peer,
        ]);
        ns.exec_ok(&["ip", "link", "set", &name, "up"]);
        ns.exec_ok(&["ip", "link", "set", &peer, "up"]);
    }
}

fn count_ours(ns: &TestNetns) -> usize {
    ns.exec_ok(&["ip", "route", "show", "proto", &PROTO.to_string()])
        .lines()
        .count()
}

/// Writes an `ip -batch` file and times `ip -n <ns> -batch` on it.
fn ip_batch(ns: &TestNetns, lines: impl Iterator<Item = String>) -> Took {
    let path = std::env::temp_dir().join(format!("margay-bench-routes-{}.txt", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("batch file");
    for l in lines {
        writeln!(f, "{l}").expect("write batch file");
    }
    drop(f);
    let (t0, c0) = (Instant::now(), cpu_now());
    let out = Command::new("ip")
        .args(["-n", ns.name(), "-batch"])
        .arg(&path)
        .output()
        .expect("run ip");
    let took = Took {
        wall: t0.elapsed(),
        cpu: cpu_now().children.saturating_sub(c0.children),
    };
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "ip -batch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn ip_round(ns: &TestNetns, n: usize) -> (Took, Took) {
    let add = ip_batch(
        ns,
        (0..n).map(|i| {
            format!(
                "route add {} dev {} scope link proto {PROTO}",
                dst(i),
                iface_name(i)
            )
        }),
    );
    assert_eq!(count_ours(ns), n, "ip added every route");
    let del = ip_batch(
        ns,
        (0..n).map(|i| format!("route del {} proto {PROTO}", dst(i))),
    );
    assert_eq!(count_ours(ns), 0, "ip deleted every route");
    (add, del)
}

fn desired(n: usize) -> DesiredState {
    let ifaces: Vec<InterfaceName> = (0..IFACES)
        .map(|i| InterfaceName::new(&iface_name(i)).expect("valid name"))
        .collect();
    let mut d = DesiredState::default();
    for i in 0..n {
        d.routes.insert(
            IpNet::V4(dst(i)),
            RouteTarget::Interface(ifaces[i % IFACES].clone()),
        );
    }
    d
}

async fn margay_round(ns: &TestNetns, d: &DesiredState) -> (Took, Took) {
    let n = d.routes.len();
    let mut dp = Dataplane::new(DataplaneConfig {
        backend: BackendKind::None,
        route_protocol: PROTO,
        netns: Some(ns.name().to_owned()),
    })
    .await
    .expect("dataplane");
    dp.start().await.expect("start");
    let settings = FirewallSettings::default();
    let changes = Changes {
        routes: d.routes.keys().copied().collect(),
        ..Changes::default()
    };
    let (t0, c0) = (Instant::now(), cpu_now());
    let r = dp.apply(d, &changes, &settings).await.expect("apply adds");
    let add = Took {
        wall: t0.elapsed(),
        cpu: cpu_now().own.saturating_sub(c0.own),
    };
    assert_eq!(
        (r.routes, r.failures.len()),
        (n, 0),
        "margay added every route"
    );
    assert_eq!(count_ours(ns), n);
    let empty = DesiredState::default();
    let (t0, c0) = (Instant::now(), cpu_now());
    let r = dp
        .apply(&empty, &changes, &settings)
        .await
        .expect("apply deletes");
    let del = Took {
        wall: t0.elapsed(),
        cpu: cpu_now().own.saturating_sub(c0.own),
    };
    assert_eq!(r.routes, n, "margay deleted every route");
    assert_eq!(count_ours(ns), 0);
    (add, del)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Samples of one step over all rounds.
#[derive(Default)]
struct Samples(Vec<Took>);

impl Samples {
    fn wall(&self) -> Duration {
        median(self.0.iter().map(|t| t.wall).collect())
    }

    fn best(&self) -> Duration {
        self.0.iter().map(|t| t.wall).min().unwrap_or_default()
    }

    /// Total CPU over the rounds (ticks are coarse; totals smooth them).
    fn cpu_total(&self) -> Duration {
        self.0.iter().map(|t| t.cpu).sum()
    }
}

fn line(label: &str, n: usize, ip: (Duration, Duration), mg: (Duration, Duration)) {
    println!(
        "{label:>5} {n:>8} | {:>12.0} {:>12.0} {:>5.2}x | {:>12.0} {:>12.0} {:>5.2}x",
        rate(n, ip.0),
        rate(n, mg.0),
        ip.0.as_secs_f64() / mg.0.as_secs_f64().max(1e-9),
        rate(n, ip.1),
        rate(n, mg.1),
        ip.1.as_secs_f64() / mg.1.as_secs_f64().max(1e-9),
    );
}

/// Routes per second, rounded to the thousand, with separators.
fn per_second(n: usize, d: Duration) -> String {
    format_count(((rate(n, d) / 1000.0).round() * 1000.0) as usize)
}

/// The README row for `n` routes, from the median rounds; fails the run
/// when margay misses the target.
fn row(n: usize, ip: (Duration, Duration), margay: (Duration, Duration)) -> Row {
    for (step, d) in [("add", margay.0), ("delete", margay.1)] {
        if rate(n, d) < TARGET_RATE {
            fail(
                "routes",
                &format!("{step} of {n} routes took {d:?}, under {TARGET_RATE} per s"),
            );
        }
    }
    Row {
        table: Table::Performance,
        id: "routes/add-delete".into(),
        what: format!(
            "routes over netlink, add / delete {} /32 routes over {IFACES} veths (`routes`, \
             median wall time of the rounds; inside the clock: one whole `Dataplane::apply` \
             (firewall backend `none`): the route diff, every route as a pipelined netlink \
             request and the acks, in a namespace; \
             the reference: `ip -n <ns> -batch` of the same routes, its process start included)",
            format_count(n)
        ),
        margay: format!(
            "{} / {} per s",
            per_second(n, margay.0),
            per_second(n, margay.1)
        ),
        reference: format!(
            "`ip -batch` {} / {} per s",
            per_second(n, ip.0),
            per_second(n, ip.1)
        ),
        target: "≥ 100,000 per s".into(),
    }
}

fn main() {
    require_root("routes");
    let sizes = env_list("MARGAY_BENCH_ROUTES", &[10_000, 50_000]);
    let rounds = env_list("MARGAY_BENCH_ROUNDS", &[3])[0].max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "routes bench: {IFACES} veth interfaces, /32 dev routes, proto {PROTO}, {rounds} rounds \
         (wall: median, best: fastest round, cpu: total over rounds)"
    );
    println!(
        "{:>5} {:>8} | {:>12} {:>12} {:>6} | {:>12} {:>12} {:>6}",
        "", "routes", "ip add/s", "margay add/s", "ratio", "ip del/s", "margay del/s", "ratio"
    );
    let mut row_out = None;
    for n in sizes {
        let ns = TestNetns::new("bench-rt");
        setup(&ns);
        let d = desired(n);
        let (mut ia, mut id, mut ma, mut md) = Default::default();
        let all: [&mut Samples; 4] = [&mut ia, &mut id, &mut ma, &mut md];
        let [ia, id, ma, md] = all;
        for _ in 0..rounds {
            let (a, del) = ip_round(&ns, n);
            ia.0.push(a);
            id.0.push(del);
            let (a, del) = rt.block_on(margay_round(&ns, &d));
            ma.0.push(a);
            md.0.push(del);
        }
        line("wall", n, (ia.wall(), id.wall()), (ma.wall(), md.wall()));
        if n == ROW_SIZE {
            row_out = Some(row(n, (ia.wall(), id.wall()), (ma.wall(), md.wall())));
        }
        line("best", n, (ia.best(), id.best()), (ma.best(), md.best()));
        let total = n * rounds;
        line(
            "cpu",
            total,
            (ia.cpu_total(), id.cpu_total()),
            (ma.cpu_total(), md.cpu_total()),
        );
    }
    match row_out {
        Some(row) => row.emit(),
        None => println!("no README row: {ROW_SIZE} routes not among the sizes measured"),
    }
}
