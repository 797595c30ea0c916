//! Throw-away network namespaces for tests.
//!
//! [`TestNetns::new`] makes a uniquely named namespace with `lo` up and
//! removes it on drop (killing whatever still runs inside), even when the test
//! panics. A run that was killed outright (Ctrl-C, SIGKILL) cannot drop
//! anything, so the first namespace a test process makes first removes those
//! of earlier test processes that are gone (the names carry their pid).
//! Nothing here touches the host's own namespace: links are created with
//! `ip -n <ns>` and moved between test namespaces only.

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// True when running as root (namespaces, nft, iptables need it).
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// For tests that need root: returns false, with a clear message, when not
/// root. Under CI (env `CI` or `MARGAY_REQUIRE_ROOT` set, as `make test`
/// does) a missing root is a failure, not a skip.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() || std::env::var_os("MARGAY_REQUIRE_ROOT").is_some() {
        panic!("{test}: needs root, and CI (`make test`) must run root-only tests");
    }
    eprintln!("skipping {test}: needs root (network namespaces)");
    false
}

/// A network namespace that exists for the life of this value.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
}

impl TestNetns {
    /// Creates `mgy-<tag>-<pid>-<n>` with loopback up. Panics if `ip` fails.
    pub fn new(tag: &str) -> Self {
        SWEEP.call_once(remove_namespaces_of_dead_test_runs);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("mgy-{tag}-{}-{n}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = TestNetns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace name (as under /var/run/netns).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command running `args` inside the namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs `args` inside the namespace and returns its output (any status).
    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ip netns exec {}: {e}", self.name))
    }

    /// Runs `args` inside the namespace, panics on failure, returns stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        run_ok(&mut self.command(args))
    }

    /// `GET path` from `127.0.0.1:port` inside the namespace, through `nc`:
    /// the whole HTTP/1.1 response, empty when nothing answered.
    pub fn http_get(&self, port: u16, path: &str) -> String {
        use std::io::Write as _;
        let port = port.to_string();
        let mut child = self
            .command(&["nc", "-w", "2", "127.0.0.1", &port])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("nc starts");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = write!(
                stdin,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
        }
        let out = child.wait_with_output().expect("nc runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The value of one series (`name{labels}` as exposed) on the
    /// `/metrics` page at `127.0.0.1:port`; `None` when it is not there.
    pub fn metric(&self, port: u16, series: &str) -> Option<f64> {
        self.http_get(port, "/metrics").lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// Starts `args` inside the namespace in the background.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn in {}: {e}", self.name))
    }

    /// Sets a sysctl inside the namespace (e.g. `net.ipv4.ip_forward`, `1`).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec_ok(&["sysctl", "-qw", &format!("{key}={value}")]);
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        remove_namespace(&self.name);
    }
}

/// Kills whatever runs in namespace `name`, then deletes it.
fn remove_namespace(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// The pid of the test process that made namespace `name`
/// (`mgy-<tag...>-<pid>-<n>`), if it is one of ours.
fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("mgy-")?;
    let mut parts = rest.rsplit('-');
    parts.next()?.parse::<u32>().ok()?;
    let pid = parts.next()?.parse::<u32>().ok()?;
    parts.next().map(|_| pid)
}

/// Removes the namespaces of test processes that no longer exist.
fn remove_namespaces_of_dead_test_runs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let listing = String::from_utf8_lossy(&out.stdout);
    for name in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = creator_pid(name) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing namespace {name} left by a test run that is gone");
            remove_namespace(name);
        }
    }
}

/// Connects two namespaces with a veth pair `a_if` (in `a`) <-> `b_if` (in
/// `b`), both up. Names must be valid interface names (<= 15 chars).
pub fn veth_pair(a: &TestNetns, a_if: &str, b: &TestNetns, b_if: &str) {
    run_ok(Command::new("ip").args([
        "-n",
        a.name(),
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]));
    a.exec_ok(&["ip", "link", "set", a_if, "up"]);
    b.exec_ok(&["ip", "link", "set", b_if, "up"]);
}

/// A workload as the Calico CNI plugin would make it: a namespace `wl` with
/// `eth0` holding `addr`/32 and a default route via 169.254.1.1, attached by
/// veth to `host` where the host side is `host_if` (e.g. `cali1234`). Sets
/// nothing on the host side beyond bringing it up: plumbing the host side is
/// margay's job.
pub fn attach_workload(host: &TestNetns, host_if: &str, wl: &TestNetns, addr: &str) {
    veth_pair(host, host_if, wl, "eth0");
    wl.exec_ok(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "eth0"]);
    wl.exec_ok(&[
        "ip",
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    wl.exec_ok(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_created_connected_and_removed() {
        if !require_root("namespaces_are_created_connected_and_removed") {
            return;
        }
        let name;
        {
            let a = TestNetns::new("fx-a");
            let b = TestNetns::new("fx-b");
            name = a.name().to_owned();
            veth_pair(&a, "va", &b, "vb");
            a.exec_ok(&["ip", "addr", "add", "192.0.2.1/24", "dev", "va"]);
            b.exec_ok(&["ip", "addr", "add", "192.0.2.2/24", "dev", "vb"]);
            let ping = a.exec(&["ping", "-c1", "-W2", "192.0.2.2"]);
            assert!(ping.status.success(), "veth ping failed");
        }
        let list = run_ok(Command::new("ip").args(["netns", "list"]));
        assert!(!list.contains(&name), "namespace {name} left behind");
    }

    #[test]
    fn creator_pids_are_read_from_our_names_only() {
        assert_eq!(creator_pid("mgy-fab-4242-0"), Some(4242));
        assert_eq!(creator_pid("mgy-bench-nft-17-3"), Some(17));
        assert_eq!(creator_pid("mgy-4242-0"), None);
        assert_eq!(creator_pid("mgydemo-h1"), None);
        assert_eq!(creator_pid("other-fab-4242-0"), None);
        assert_eq!(creator_pid("mgy-fab-x-0"), None);
    }

    #[test]
    fn namespaces_of_dead_test_runs_are_swept() {
        if !require_root("namespaces_of_dead_test_runs_are_swept") {
            return;
        }
        let mut gone = Command::new("true")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run true: {e}"));
        let dead_pid = gone.id();
        let _ = gone.wait();
        let stale = format!("mgy-sweep-{dead_pid}-0");
        let alive = format!("mgy-sweep-{}-999", std::process::id());
        for name in [&stale, &alive] {
            run_ok(Command::new("ip").args(["netns", "add", name]));
        }
        remove_namespaces_of_dead_test_runs();
        let list = run_ok(Command::new("ip").args(["netns", "list"]));
        remove_namespace(&alive);
        assert!(!list.contains(&stale), "{stale} was not swept");
        assert!(list.contains(&alive), "{alive} of a live run was swept");
    }
}
