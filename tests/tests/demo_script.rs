//! The README's first command, run the way `make demo` runs it:
//! `deploy/sandbox/sandbox.sh demo` with the freshly built agent. It must
//! pass (observed connectivity equals expected, before and after the live
//! change), and leave no namespace, process (BIRDs included) or state
//! directory behind; with `--keep` it must leave a sandbox that `status`
//! describes and `down` removes. The default routing is BGP (two subnets, a
//! router running BIRD as route reflector, BIRD + margay on each host): the
//! demo must show each host's BGP-learned route to the other's workloads;
//! the iptables run uses `--routing direct`, the single-subnet mode.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use margay_tests::netns::require_root;
use margay_tests::sandbox::{eventually, margay_bin};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sandbox/sandbox.sh")
}

/// A sandbox name of our own (the script allows `[a-z][a-z0-9]{0,11}`).
fn unique_name(tag: &str) -> String {
    format!("mgy{tag}{}", std::process::id() % 100_000)
}

fn sandbox(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .env("MARGAY_BIN", margay_bin())
        .output()
        .unwrap_or_else(|e| panic!("cannot run sandbox.sh: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn namespaces_of(name: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip netns list: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(&format!("{name}-")))
        .map(str::to_owned)
        .collect()
}

/// Removes the sandbox if a failed assertion left it behind.
struct Teardown(String);

impl Drop for Teardown {
    fn drop(&mut self) {
        if !namespaces_of(&self.0).is_empty() {
            let _ = sandbox(&["down", "--name", &self.0]);
        }
    }
}

/// The pids of the BIRD processes whose command line names sandbox `name`'s
/// state directory.
fn birds_of(name: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("^bird .*/margay-sandbox/{name}/")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run pgrep: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// True once no BIRD of sandbox `name` runs (a killed process takes a moment
/// to go).
fn no_bird_left(name: &str) -> bool {
    eventually(Duration::from_secs(5), || birds_of(name).is_empty())
}

fn demo_passes_and_cleans_up(dataplane: &str, routing: &str, tag: &str) {
    let name = unique_name(tag);
    let _teardown = Teardown(name.clone());
    let out = sandbox(&[
        "demo",
        "--name",
        &name,
        "--dataplane",
        dataplane,
        "--routing",
        routing,
    ]);
    let log = text(&out);
    assert!(out.status.success(), "demo failed:\n{log}");
    assert!(log.contains("PASS: observed connectivity matched"), "{log}");
    assert!(log.contains("16 probes, 0 unexpected"), "{log}");
    let h2 = if routing == "direct" {
        "192.0.2.12"
    } else {
        "203.0.113.12"
    };
    assert!(
        log.contains("192.0.2.11") && log.contains(h2),
        "the outside server should see both hosts' addresses:\n{log}"
    );
    if routing != "direct" {
        // Each host learned the other's workloads from BIRD, via the router.
        for (host, route) in [
            (
                "h1 (192.0.2.11) learned over BGP:\n    10.65.2.2 via 192.0.2.1 ",
                "h1",
            ),
            (
                "h2 (203.0.113.12) learned over BGP:\n    10.65.1.2 via 203.0.113.1 ",
                "h2",
            ),
        ] {
            assert!(log.contains(host), "{route}'s BGP routes missing:\n{log}");
        }
    }
    assert_eq!(namespaces_of(&name), Vec::<String>::new(), "{log}");
    assert!(no_bird_left(&name), "BIRD left running:\n{log}");
    assert!(
        !Path::new("/run/margay-sandbox").join(&name).exists(),
        "state directory left behind"
    );
}

#[test]
fn demo_passes_with_nftables_and_cleans_up() {
    if require_root("demo_passes_with_nftables_and_cleans_up") {
        demo_passes_and_cleans_up("nftables", "bgp", "n");
    }
}

#[test]
fn demo_passes_with_iptables_and_direct_routing_and_cleans_up() {
    if require_root("demo_passes_with_iptables_and_direct_routing_and_cleans_up") {
        demo_passes_and_cleans_up("iptables", "direct", "i");
    }
}

#[test]
fn keep_leaves_a_sandbox_that_status_shows_and_down_removes() {
    if !require_root("keep_leaves_a_sandbox_that_status_shows_and_down_removes") {
        return;
    }
    let name = unique_name("k");
    let _teardown = Teardown(name.clone());
    let out = sandbox(&["demo", "--name", &name, "--keep"]);
    let log = text(&out);
    assert!(out.status.success(), "demo --keep failed:\n{log}");
    assert!(
        log.contains("nft list table inet margay")
            && log.contains("birdc -s")
            && log.contains("down --name"),
        "--keep should say how to look inside and how to remove it:\n{log}"
    );
    assert!(
        namespaces_of(&name).contains(&format!("{name}-h1")),
        "kept sandbox is gone:\n{log}"
    );

    let status = sandbox(&["status", "--name", &name]);
    let status_text = text(&status);
    assert!(status.status.success(), "{status_text}");
    assert!(
        status_text.contains("h1 (192.0.2.11): running") && status_text.contains("web h1"),
        "{status_text}"
    );

    assert_eq!(
        birds_of(&name).len(),
        3,
        "BIRD on h1, h2 and the router:\n{status_text}"
    );

    let down = sandbox(&["down", "--name", &name]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(namespaces_of(&name), Vec::<String>::new());
    assert!(no_bird_left(&name), "BIRD left running");
}
