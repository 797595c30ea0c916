//! `margay status --bird-socket PATH` against a real etcd and a real BIRD
//! (in a test namespace): the BGP sessions are listed per family with
//! their peer type; BIRD gone is an error (exit 1) that says so.

use std::process::{Command, Output};

use margay_tests::bird::{require_bird, BirdDir, TestBird};
use margay_tests::etcd::EtcdServer;
use margay_tests::netns::{require_root, TestNetns};

const MARGAY: &str = env!("CARGO_BIN_EXE_margay");

/// Two sessions margay would configure (a mesh neighbour, a node-specific
/// IPv6 peer) and one an operator added by hand.
const CONFIG: &str = "router id 10.0.1.10;
protocol device {}
protocol bgp Mesh_10_0_1_11 { local as 64511; neighbor 10.0.1.11 as 64511; multihop; ipv4 { import none; export none; }; }
protocol bgp Node_fd00__1 { local as 64511; neighbor fd00::1 as 65000; multihop; ipv6 { import none; export none; }; }
protocol bgp upstream { local as 64511; neighbor 192.0.2.9 as 65001; multihop; ipv4 { import none; export none; }; }
";

fn status(etcd: &EtcdServer, socket: &str) -> Output {
    Command::new(MARGAY)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["status", "--etcd-endpoints", &etcd.client_url()])
        .args(["--bird-socket", socket])
        .output()
        .expect("margay runs")
}

/// The cells of the row of `table` for peer `addr` (columns are two or
/// more spaces apart).
fn row(table: &str, addr: &str) -> Option<Vec<String>> {
    let line = table.lines().find(|l| l.starts_with(addr))?;
    Some(
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect(),
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn status_lists_bgp_sessions_from_bird_and_fails_when_bird_is_gone() {
    let test = "status_lists_bgp_sessions_from_bird_and_fails_when_bird_is_gone";
    if !(require_root(test) && require_bird(test)) {
        return;
    }
    let etcd = EtcdServer::new();
    let ns = TestNetns::new("st-bird");
    let dir = BirdDir::new("status");
    dir.write_config(CONFIG);
    let mut bird = TestBird::start(&ns, &dir);
    let socket = dir.socket();
    let socket = socket.to_str().expect("utf-8");

    let out = status(&etcd, socket);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v4 = stdout.find("IPv4 BGP status").expect("IPv4 table");
    let v6 = stdout.find("IPv6 BGP status").expect("IPv6 table");
    let (v4_table, v6_table) = (&stdout[v4..v6], &stdout[v6..]);
    let mesh = row(v4_table, "10.0.1.11").unwrap_or_else(|| panic!("no mesh row: {all}"));
    assert_eq!(mesh[1], "node-to-node mesh", "{all}");
    assert_eq!(mesh[2], "start", "{all}");
    let other = row(v4_table, "192.0.2.9").unwrap_or_else(|| panic!("no upstream row: {all}"));
    assert_eq!(other[1], "other", "{all}");
    let node = row(v6_table, "fd00::1").unwrap_or_else(|| panic!("no v6 row: {all}"));
    assert_eq!(node[1], "node specific", "{all}");
    assert!(row(v4_table, "fd00::1").is_none(), "{all}");

    bird.stop();
    let out = status(&etcd, socket);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("BIRD unreachable") && all.contains("not running"),
        "{all}"
    );
}

/// `margay check` output and exit code (etcd closed: that check fails too).
fn check(extra: &[&str]) -> String {
    let out = Command::new(MARGAY)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["check", "--etcd-endpoints", "http://127.0.0.1:9"])
        .args(extra)
        .output()
        .expect("margay runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    text(&out)
}

#[test]
fn check_reports_an_unreachable_bird_socket_only_in_bgp_mode() {
    let socket = "/nonexistent/margay-test/bird.ctl";
    let bgp = check(&["--inter-host-routes", "bgp", "--bird-socket", socket]);
    let line = bgp
        .lines()
        .find(|l| l.contains("BIRD control socket"))
        .unwrap_or_else(|| panic!("no BIRD socket check: {bgp}"));
    assert!(
        line.starts_with("PROBLEM") && line.contains(socket),
        "{line}"
    );
    assert!(bgp.contains("tool bird installed"), "{bgp}");
    let direct = check(&["--inter-host-routes", "direct", "--bird-socket", socket]);
    assert!(!direct.contains("BIRD"), "{direct}");
}
