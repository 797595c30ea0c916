//! Small helpers the sandbox is built from: running code inside a network
//! namespace, TCP and HTTP probes, polling until a condition holds, fixtures,
//! metric and ping output parsing, and starting and stopping child processes.

use super::*;

/// Runs `f` on a fresh thread that has entered network namespace `ns`, and
/// returns its result. Sockets made there belong to `ns` for good.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_netns(ns);
                f()
            })
            .join()
            .unwrap_or_else(|_| panic!("thread in namespace {ns} panicked"))
    })
}

/// Moves the calling thread into network namespace `ns` (only this thread).
pub(super) fn enter_netns(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("cannot enter namespace {ns}: {e}"));
}

/// True when a TCP connection to `addr` is accepted within `timeout`. It
/// then waits (up to `timeout`) for the server to close it: the sandbox's
/// listeners record the peer before they close, so once a probe has returned
/// its connection is in [`Cluster::peers`].
pub(super) fn tcp_connects(addr: SocketAddr, timeout: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    if stream.set_read_timeout(Some(timeout)).is_ok() {
        let mut byte = [0u8; 1];
        let _ = stream.read(&mut byte);
    }
    true
}

/// A minimal HTTP/1.0 GET; returns (status code, body).
pub(super) fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like [`eventually`], but panics with `what` on timeout.
pub fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    assert!(
        eventually(timeout, f),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// The text of a real Calico v1 document from `tests/fixtures/calico-v1` (a
/// copy of `shared/fixtures/calico-v1`).
pub fn fixture(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/calico-v1")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Profile rules accepting everything in both directions.
pub fn allow_all_rules() -> Value {
    json!({"inbound_rules": [{"action": "allow"}], "outbound_rules": [{"action": "allow"}]})
}

/// Instantiates scenario functions `fn name(Dataplane)` as root-only tests
/// for both backends: `nftables::name` and `iptables::name`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod nftables {
            $(
                #[test]
                fn $name() {
                    if $crate::netns::require_root(stringify!($name)) {
                        super::$name($crate::sandbox::Dataplane::Nftables);
                    }
                }
            )*
        }
        mod iptables {
            $(
                #[test]
                fn $name() {
                    if $crate::netns::require_root(stringify!($name)) {
                        super::$name($crate::sandbox::Dataplane::Iptables);
                    }
                }
            )*
        }
    };
}

/// Sums the samples of metric `name` (any labels) in exposition text;
/// `None` when there is none.
pub(super) fn sum_metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(None, |sum, v| Some(sum.unwrap_or(0.0) + v))
}

/// Parses "N packets transmitted, M received" from ping's summary.
pub(super) fn parse_ping_summary(text: &str) -> Option<(u32, u32)> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut numbers = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(str::parse::<u32>);
    let sent = numbers.next()?.ok()?;
    let received = numbers.next()?.ok()?;
    Some((sent, received))
}

/// SIGTERM, wait up to `grace`, then SIGKILL; the exit code if it exited.
pub(super) fn terminate(mut child: Child, grace: Duration) -> Option<i32> {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Connects `ns` to the fabric bridge: port `port` on the bridge, `eth0` =
/// `ip`/24 in `ns`.
pub(super) fn attach_to_fabric(fabric: &TestNetns, ns: &TestNetns, port: &str, ip: Ipv4Addr) {
    attach_to_bridge(fabric, "br0", ns, port, "eth0", ip);
}

/// Connects `ns` to bridge `bridge` of the fabric: port `port` on the
/// bridge, `iface` = `ip`/24 in `ns`.
pub(super) fn attach_to_bridge(
    fabric: &TestNetns,
    bridge: &str,
    ns: &TestNetns,
    port: &str,
    iface: &str,
    ip: Ipv4Addr,
) {
    veth_pair(fabric, port, ns, iface);
    fabric.exec_ok(&["ip", "link", "set", port, "master", bridge]);
    ns.exec_ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", iface]);
}

/// A fresh scratch directory on /dev/shm (or the temp dir).
pub(super) fn scratch_dir() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let shm = Path::new("/dev/shm");
    let root = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = root.join(format!("mgy-sandbox-{}-{n}", std::process::id()));
    match std::fs::create_dir_all(&dir) {
        Ok(()) => dir,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => dir,
        Err(e) => panic!("cannot create {}: {e}", dir.display()),
    }
}

/// Starts `cmd` with stdout and stderr appended to `log` and without the
/// caller's environment variables starting with `scrub` (so a test's own
/// settings never leak into the process under test); `what` names it in
/// panics.
pub(super) fn spawn_logged(mut cmd: Command, log: &Path, scrub: &str, what: &str) -> Child {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("cannot open {what} log {}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("cannot clone log handle: {e}"));
    crate::etcd::remove_env_with_prefix(&mut cmd, scrub);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"))
}
