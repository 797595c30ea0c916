//! Golden tests of the BIRD configuration renderer, and BIRD's own parse
//! check (`bird -p -c FILE`) of every golden file.
//!
//! Each case in [`cases`] is a [`BgpConfig`] of one shape the issue names;
//! `golden/bird/<case>.conf` is its rendered text. `MARGAY_GOLDEN_WRITE=1`
//! rewrites the files (review the diff). The parse check needs neither root
//! nor a namespace; it fails, not skips, when `bird` is missing under CI
//! (`CI` or `MARGAY_REQUIRE_ROOT` set).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use ipnet::{Ipv4Net, Ipv6Net};
use margay_dataplane::bird::render::render;
use margay_policy::bgp::{AsNumber, BgpConfig, BgpPeer, PeerKind};

fn asn(n: u32) -> AsNumber {
    AsNumber::new(n).expect("non-zero AS")
}

fn peer(kind: PeerKind, address: &str, as_num: u32) -> BgpPeer {
    BgpPeer {
        kind,
        address: address.parse::<IpAddr>().expect("peer address"),
        as_num: asn(as_num),
    }
}

fn v4(s: &str) -> Ipv4Net {
    s.parse().expect("v4 net")
}

fn v6(s: &str) -> Ipv6Net {
    s.parse().expect("v6 net")
}

/// Host 10.0.1.10 in AS 64511 with pool 10.65.0.0/16, two local workloads,
/// no peers yet.
fn base() -> BgpConfig {
    BgpConfig {
        router_id: Ipv4Addr::new(10, 0, 1, 10),
        local_as: asn(64511),
        source_v4: Ipv4Addr::new(10, 0, 1, 10),
        source_v6: None,
        peers: vec![],
        pools_v4: vec![v4("10.65.0.0/16")],
        pools_v6: vec![],
        local_v4: vec![v4("10.65.0.5/32"), v4("10.65.0.6/32")],
        local_v6: vec![],
        workload_interface_prefixes: vec!["cali".to_string()],
    }
}

/// Every golden case: (file stem, configuration).
fn cases() -> Vec<(&'static str, BgpConfig)> {
    let mesh3 = BgpConfig {
        peers: vec![
            peer(PeerKind::Mesh, "10.0.1.11", 64511),
            peer(PeerKind::Mesh, "10.0.2.10", 64511),
        ],
        ..base()
    };
    let global_only = BgpConfig {
        peers: vec![peer(PeerKind::Global, "192.0.2.1", 64511)],
        ..base()
    };
    let node_and_ebgp = BgpConfig {
        local_as: asn(65001),
        peers: vec![
            peer(PeerKind::Mesh, "10.0.1.11", 65001),
            peer(PeerKind::Global, "192.0.2.1", 64512),
            peer(PeerKind::Node, "10.0.1.1", 4_200_000_000),
        ],
        pools_v4: vec![v4("10.65.0.0/16"), v4("10.66.0.0/24")],
        workload_interface_prefixes: vec!["cali".to_string(), "tap".to_string()],
        ..base()
    };
    let dual_stack = BgpConfig {
        source_v6: Some("fd00::10".parse::<Ipv6Addr>().expect("v6")),
        peers: vec![
            peer(PeerKind::Mesh, "10.0.1.11", 64511),
            peer(PeerKind::Mesh, "fd00::11", 64511),
            peer(PeerKind::Node, "fd00::1", 64512),
        ],
        pools_v6: vec![v6("fd65::/112")],
        local_v6: vec![v6("fd65::5/128")],
        ..base()
    };
    let v6_peer_without_source = BgpConfig {
        peers: vec![
            peer(PeerKind::Mesh, "10.0.1.11", 64511),
            peer(PeerKind::Global, "2001:db8::1", 64512),
        ],
        pools_v6: vec![v6("fd65::/112")],
        ..base()
    };
    let empty = BgpConfig {
        peers: vec![peer(PeerKind::Mesh, "10.0.1.11", 64511)],
        pools_v4: vec![],
        local_v4: vec![],
        workload_interface_prefixes: vec![],
        ..base()
    };
    vec![
        ("mesh_v4_three_hosts", mesh3),
        ("global_peer_no_mesh", global_only),
        ("node_peers_and_ebgp", node_and_ebgp),
        ("dual_stack", dual_stack),
        ("v6_peer_without_v6_source", v6_peer_without_source),
        ("no_pools_no_workloads", empty),
    ]
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/bird")
}

fn golden_path(stem: &str) -> PathBuf {
    golden_dir().join(format!("{stem}.conf"))
}

#[test]
fn rendered_text_matches_the_golden_files() {
    let write = std::env::var_os("MARGAY_GOLDEN_WRITE").is_some();
    let mut mismatches = Vec::new();
    for (stem, cfg) in cases() {
        let text = render(&cfg);
        let path = golden_path(stem);
        if write {
            std::fs::write(&path, &text).expect("write golden file");
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (MARGAY_GOLDEN_WRITE=1 makes it)", path.display()));
        if golden != text {
            mismatches.push(format!("{stem}:\n{text}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "rendered text differs from the golden files (MARGAY_GOLDEN_WRITE=1 rewrites them):\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn rendering_is_deterministic() {
    for (stem, cfg) in cases() {
        assert_eq!(render(&cfg), render(&cfg.clone()), "{stem}");
    }
}

/// `bird`, or `None` (after panicking under CI) when it is not installed.
fn bird_binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/bird", "/usr/bin/bird", "/sbin/bird"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some() || std::env::var_os("MARGAY_REQUIRE_ROOT").is_some() {
            panic!("bird is not installed (apt-get install bird2); CI must run the parse check");
        }
        eprintln!("skipping the BIRD parse check: bird is not installed");
    }
    found
}

/// `bird -p -c path`: BIRD's verdict on a file.
fn bird_parse(bird: &Path, path: &Path) -> Result<(), String> {
    let out = Command::new(bird)
        .arg("-p")
        .arg("-c")
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bird.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn bird_accepts_every_golden_file() {
    let Some(bird) = bird_binary() else {
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("golden dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    assert_eq!(files.len(), cases().len(), "one golden file per case");
    let refused: Vec<String> = files
        .iter()
        .filter_map(|f| {
            bird_parse(&bird, f)
                .err()
                .map(|e| format!("{}: {e}", f.display()))
        })
        .collect();
    assert!(
        refused.is_empty(),
        "bird -p refused:\n{}",
        refused.join("\n")
    );
}

#[test]
fn bird_refuses_a_broken_file() {
    // The parse check itself can fail: a file with a stray token is refused.
    let Some(bird) = bird_binary() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("margay-bird-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("broken.conf");
    let text = render(&base()).replace("router id", "router idd");
    std::fs::write(&path, text).expect("write");
    let verdict = bird_parse(&bird, &path);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(verdict.is_err(), "bird -p accepted a broken file");
}

#[test]
fn bird_accepts_a_large_mesh() {
    // 1,000 hosts (999 mesh sessions), 50 global peers, 100 local
    // workloads: the size the render benchmark uses.
    let Some(bird) = bird_binary() else {
        return;
    };
    let mut peers: Vec<BgpPeer> = (1..1000u32)
        .map(|i| BgpPeer {
            kind: PeerKind::Mesh,
            address: IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + i)),
            as_num: asn(64511),
        })
        .collect();
    peers.extend((0..50u32).map(|i| BgpPeer {
        kind: PeerKind::Global,
        address: IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 0, 2, 1)) + i)),
        as_num: asn(65000 + i),
    }));
    let cfg = BgpConfig {
        peers,
        local_v4: (0..100u32)
            .map(|i| {
                Ipv4Net::new(
                    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 65, 0, 2)) + i),
                    32,
                )
                .expect("net")
            })
            .collect(),
        ..base()
    };
    let dir = std::env::temp_dir().join(format!("margay-bird-large-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("large.conf");
    std::fs::write(&path, render(&cfg)).expect("write");
    let verdict = bird_parse(&bird, &path);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(verdict, Ok(()));
}
