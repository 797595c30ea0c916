//! Two real BIRDs, each running a configuration margay rendered, peering
//! across a veth between two namespaces. Proves the rendered filters:
//!
//! * host A exports only its local workload routes (learned from the
//!   kernel, where margay puts them with its route protocol, 80): not its
//!   default route, not a route outside its local set;
//! * host B imports only prefixes inside its pools that do not cover one
//!   of its own local workloads;
//! * what B imports lands in B's kernel as `proto bird`;
//! * the session shows as Established through `BirdControl::bgp_sessions`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use margay_dataplane::bird::control::{BgpSession, BirdControl};
use margay_dataplane::bird::render::render;
use margay_policy::bgp::{AsNumber, BgpConfig, BgpPeer, PeerKind};
use margay_tests::bird::{require_bird, BirdDir, TestBird};
use margay_tests::netns::{require_root, veth_pair, TestNetns};

/// margay's default route protocol number (setting `route_protocol`).
const MARGAY_PROTO: &str = "80";
const CONVERGE: Duration = Duration::from_secs(30);

fn nets(list: &[&str]) -> Vec<Ipv4Net> {
    list.iter().map(|n| n.parse().expect("net")).collect()
}

fn host_config(me: [u8; 4], peer: [u8; 4], pools: &[&str], locals: &[&str]) -> BgpConfig {
    let as_num = AsNumber::new(64511).expect("AS");
    BgpConfig {
        router_id: me.into(),
        local_as: as_num,
        source_v4: me.into(),
        source_v6: None,
        peers: vec![BgpPeer {
            kind: PeerKind::Mesh,
            address: Ipv4Addr::from(peer).into(),
            as_num,
        }],
        pools_v4: nets(pools),
        pools_v6: vec![],
        local_v4: nets(locals),
        local_v6: vec![],
        workload_interface_prefixes: vec!["cali".to_string()],
    }
}

/// A namespace with `iface` at `addr`/24 and a veth `cali0` (peer `wl0`,
/// in the same namespace) for workload routes, each added with margay's protocol.
fn host(ns: &TestNetns, iface: &str, addr: &str, routes: &[&str]) {
    ns.exec_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", iface]);
    ns.exec_ok(&[
        "ip", "link", "add", "cali0", "type", "veth", "peer", "name", "wl0",
    ]);
    ns.exec_ok(&["ip", "link", "set", "wl0", "up"]);
    ns.exec_ok(&["ip", "link", "set", "cali0", "up"]);
    for route in routes {
        let mut args = vec!["ip", "route", "add"];
        args.extend(route.split_whitespace());
        args.extend(["proto", MARGAY_PROTO]);
        ns.exec_ok(&args);
    }
}

/// Destinations of the `proto bird` routes in `ns`'s main table.
fn bird_routes(ns: &TestNetns) -> BTreeSet<String> {
    ns.exec_ok(&["ip", "route", "show", "proto", "bird"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|d| {
            if d.contains('/') {
                d.to_string()
            } else {
                format!("{d}/32")
            }
        })
        .collect()
}

/// `received` and `filtered` of the "Import updates:" row of `protocol`.
fn import_updates(bird: &TestBird, protocol: &str) -> Option<(u64, u64)> {
    let text = bird.birdc(&["show", "protocols", "all", protocol]);
    let row = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Import updates:"))?;
    let numbers: Vec<u64> = row
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    Some((*numbers.first()?, *numbers.get(2)?))
}

async fn session(bird: &TestBird, name: &str) -> Option<BgpSession> {
    let mut control = BirdControl::connect(bird.socket()).await.ok()?;
    let sessions = control.bgp_sessions().await.ok()?;
    sessions.into_iter().find(|s| s.name == name)
}

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + CONVERGE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {CONVERGE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_birds_exchange_exactly_the_local_workload_routes_the_filters_allow() {
    let test = "two_birds_exchange_exactly_the_local_workload_routes_the_filters_allow";
    if !(require_root(test) && require_bird(test)) {
        return;
    }
    let (a, b) = (TestNetns::new("bgp-a"), TestNetns::new("bgp-b"));
    veth_pair(&a, "va", &b, "vb");
    // A: two workloads it owns (a /32 and a /24 inside the pool), one in a
    // second pool B does not have, plus routes that are not its own local
    // workloads: a remote workload route, a foreign prefix, the default.
    // The last "local" is A's fabric subnet: BIRD knows it only from a
    // device route (not learned from the kernel), so it is not exported.
    let a_locals = [
        "10.65.0.5/32",
        "10.65.0.0/24",
        "10.65.8.0/24",
        "172.16.0.0/24",
        "10.0.1.0/24",
    ];
    host(
        &a,
        "va",
        "10.0.1.10",
        &[
            "10.65.0.5/32 dev cali0",
            "10.65.0.0/24 dev cali0",
            "10.65.8.0/24 dev cali0",
            "172.16.0.0/24 dev cali0",
            "10.65.0.6/32 dev cali0",
            "192.168.50.0/24 dev cali0",
            "default via 10.0.1.11 dev va",
        ],
    );
    host(&b, "vb", "10.0.1.11", &["10.65.0.7/32 dev cali0"]);
    let a_cfg = host_config(
        [10, 0, 1, 10],
        [10, 0, 1, 11],
        &["10.65.0.0/16", "172.16.0.0/16"],
        &a_locals,
    );
    let b_cfg = host_config(
        [10, 0, 1, 11],
        [10, 0, 1, 10],
        &["10.65.0.0/16"],
        &["10.65.0.7/32"],
    );
    let (a_dir, b_dir) = (BirdDir::new("peer-a"), BirdDir::new("peer-b"));
    a_dir.write_config(&render(&a_cfg));
    b_dir.write_config(&render(&b_cfg));
    let a_bird = TestBird::start(&a, &a_dir);
    let b_bird = TestBird::start(&b, &b_dir);

    let established = wait_for("A's session to B established", async || {
        session(&a_bird, "Mesh_10_0_1_11")
            .await
            .filter(|s| s.bgp_state == "Established")
    })
    .await;
    assert_eq!(established.kind, Some(PeerKind::Mesh));
    assert_eq!(established.neighbor, Some("10.0.1.11".parse().expect("ip")));
    assert_eq!(established.state, "up");

    // A announces exactly its four local prefixes; B filters two of them:
    // 10.65.0.0/24 covers B's workload 10.65.0.7, 172.16.0.0/24 is outside
    // B's pools.
    let (received, filtered) = wait_for("B to receive A's announcements", async || {
        import_updates(&b_bird, "Mesh_10_0_1_10").filter(|(r, _)| *r >= 4)
    })
    .await;
    assert_eq!(
        (received, filtered),
        (4, 2),
        "A must announce only its locals"
    );
    let expected_b: BTreeSet<String> = ["10.65.0.5/32", "10.65.8.0/24"].map(String::from).into();
    let in_b = wait_for("A's routes in B's kernel", async || {
        Some(bird_routes(&b)).filter(|r| r == &expected_b)
    })
    .await;
    assert_eq!(in_b, expected_b);
    let route = b.exec_ok(&["ip", "route", "show", "10.65.0.5"]);
    assert!(
        route.contains("via 10.0.1.10") && route.contains("proto bird"),
        "{route}"
    );

    // And the other way: B's workload reaches A's kernel.
    let expected_a: BTreeSet<String> = ["10.65.0.7/32"].map(String::from).into();
    wait_for("B's route in A's kernel", async || {
        Some(bird_routes(&a)).filter(|r| r == &expected_a)
    })
    .await;
}
