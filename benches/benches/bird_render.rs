//! Rendering BIRD's configuration for a large cluster: 1,000 hosts in the
//! node mesh (999 mesh sessions), 50 global peers, 100 local workloads,
//! two pools. Target: under 5 ms per render (issue 12).
//!
//! `cargo bench -p margay-benches --bench bird_render`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use ipnet::Ipv4Net;
use margay_dataplane::bird::render::render;
use margay_policy::bgp::{AsNumber, BgpConfig, BgpPeer, PeerKind};

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

fn bench_render(c: &mut Criterion) {
    let cfg = big_config();
    let size = render(&cfg).len();
    let mut g = c.benchmark_group("bird_render");
    g.bench_function(
        format!("mesh{HOSTS}_global{GLOBAL_PEERS}_local{LOCAL_WORKLOADS}_{size}B"),
        |b| b.iter(|| render(black_box(&cfg))),
    );
    g.finish();
}

criterion_group!(benches, bench_render);
criterion_main!(benches);
