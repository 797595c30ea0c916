//! Route programming throughput: margay's pipelined netlink writer against
//! `ip -batch` doing exactly the same work (the same /32 routes, `dev`,
//! `scope link`, our protocol number, main table), in a throw-away namespace.
//!
//! Run as root: `cargo bench -p margay-benches --bench routes`. Sizes come
//! from `MARGAY_BENCH_ROUTES` (comma list, default `10000,50000`), rounds
//! from `MARGAY_BENCH_ROUNDS` (default 3; the median is reported).
//! Prints routes per second for add and delete, and margay / ip.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use margay_dataplane::firewall::lower::FirewallSettings;
use margay_dataplane::firewall::BackendKind;
use margay_dataplane::{Dataplane, DataplaneConfig};
use margay_policy::desired::{Changes, DesiredState, RouteTarget};
use margay_policy::names::InterfaceName;
use margay_tests::netns::{is_root, TestNetns};

const PROTO: u8 = 80;
const IFACES: usize = 16;

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

fn setup(ns: &TestNetns) {
    for i in 0..IFACES {
        let name = iface_name(i);
        let peer = format!("{name}p");
        ns.exec_ok(&["ip", "link", "add", &name, "type", "veth", "peer", "name", &peer]);
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
fn ip_batch(ns: &TestNetns, lines: impl Iterator<Item = String>) -> Duration {
    let path = std::env::temp_dir().join(format!("margay-bench-routes-{}.txt", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("batch file");
    for l in lines {
        writeln!(f, "{l}").expect("write batch file");
    }
    drop(f);
    let t0 = Instant::now();
    let out = Command::new("ip")
        .args(["-n", ns.name(), "-batch"])
        .arg(&path)
        .output()
        .expect("run ip");
    let took = t0.elapsed();
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "ip -batch failed: {}", String::from_utf8_lossy(&out.stderr));
    took
}

fn ip_round(ns: &TestNetns, n: usize) -> (Duration, Duration) {
    let add = ip_batch(
        ns,
        (0..n).map(|i| format!("route add {} dev {} scope link proto {PROTO}", dst(i), iface_name(i))),
    );
    assert_eq!(count_ours(ns), n, "ip added every route");
    let del = ip_batch(ns, (0..n).map(|i| format!("route del {} proto {PROTO}", dst(i))));
    assert_eq!(count_ours(ns), 0, "ip deleted every route");
    (add, del)
}

fn desired(n: usize) -> DesiredState {
    let ifaces: Vec<InterfaceName> = (0..IFACES)
        .map(|i| InterfaceName::new(&iface_name(i)).expect("valid name"))
        .collect();
    let mut d = DesiredState::default();
    for i in 0..n {
        d.routes
            .insert(IpNet::V4(dst(i)), RouteTarget::Interface(ifaces[i % IFACES].clone()));
    }
    d
}

async fn margay_round(ns: &TestNetns, d: &DesiredState) -> (Duration, Duration) {
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
    let t0 = Instant::now();
    let r = dp.apply(d, &changes, &settings).await.expect("apply adds");
    let add = t0.elapsed();
    assert_eq!((r.routes, r.failures.len()), (n, 0), "margay added every route");
    assert_eq!(count_ours(ns), n);
    let empty = DesiredState::default();
    let t0 = Instant::now();
    let r = dp.apply(&empty, &changes, &settings).await.expect("apply deletes");
    let del = t0.elapsed();
    assert_eq!(r.routes, n, "margay deleted every route");
    assert_eq!(count_ours(ns), 0);
    (add, del)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    if !is_root() {
        eprintln!("routes bench: needs root (network namespaces); skipped");
        return;
    }
    let sizes = env_list("MARGAY_BENCH_ROUTES", &[10_000, 50_000]);
    let rounds = env_list("MARGAY_BENCH_ROUNDS", &[3])[0].max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("routes bench: {IFACES} veth interfaces, /32 dev routes, proto {PROTO}, median of {rounds} rounds");
    println!(
        "{:>8} | {:>12} {:>12} {:>6} | {:>12} {:>12} {:>6}",
        "routes", "ip add/s", "margay add/s", "ratio", "ip del/s", "margay del/s", "ratio"
    );
    for n in sizes {
        let ns = TestNetns::new("bench-rt");
        setup(&ns);
        let d = desired(n);
        let (mut ia, mut id, mut ma, mut md) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            let (a, del) = ip_round(&ns, n);
            ia.push(a);
            id.push(del);
            let (a, del) = rt.block_on(margay_round(&ns, &d));
            ma.push(a);
            md.push(del);
        }
        let (ia, id, ma, md) = (median(ia), median(id), median(ma), median(md));
        println!(
            "{n:>8} | {:>12.0} {:>12.0} {:>5.2}x | {:>12.0} {:>12.0} {:>5.2}x",
            rate(n, ia),
            rate(n, ma),
            ia.as_secs_f64() / ma.as_secs_f64(),
            rate(n, id),
            rate(n, md),
            id.as_secs_f64() / md.as_secs_f64(),
        );
    }
}
