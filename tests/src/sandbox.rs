//! A whole cluster in network namespaces, for end-to-end tests of the real
//! `margay` binary: real etcd, real kernel, real packets.
//!
//! [`Cluster::builder`] makes:
//! - a fabric namespace holding a bridge that every other namespace hangs off
//!   (`192.0.2.0/24`);
//! - an etcd namespace (`192.0.2.2:2379` on the fabric, and its own loopback,
//!   which is what the test's own client uses, so the agents can be cut off
//!   while the test keeps writing);
//! - an "outside" namespace: the hosts' default router `192.0.2.1` and a TCP
//!   server on `198.51.100.1:8080` that records who connected. It has no route
//!   to the pools, so only masqueraded traffic gets answers;
//! - N host namespaces `h1`, `h2`, … (`192.0.2.11`, `.12`, …) with
//!   `ip_forward=1`, their `bird_ip` in etcd and a margay agent each;
//! - workloads added by the test: namespaces attached to a host by veth (host
//!   side `cali<name>`), a /32 and a default route via `169.254.1.1` — what the
//!   CNI plugin does, nothing of what margay must do.
//!
//! Every namespace is a [`TestNetns`], so dropping the [`Cluster`] (also on
//! panic) kills what runs inside and deletes them. The root namespace is never
//! touched: the test process reaches etcd, the agents' metrics and the
//! workloads from short-lived threads that enter the namespace (`setns`), and
//! every socket it opens lives inside our namespaces.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::etcd::ETCD_BIN;
use crate::netns::{attach_workload, veth_pair, TestNetns};

mod to_host;
mod v6;

/// The etcd server's address on the fabric.
pub const ETCD_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The hosts' default router (in the outside namespace).
pub const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The server outside every pool.
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The outside server's TCP port.
pub const OUTSIDE_PORT: u16 = 8080;
/// TCP ports every workload listens on.
pub const WORKLOAD_PORTS: [u16; 4] = [80, 443, 5432, 7890];
/// Where each agent serves `/metrics` and `/readyz`, inside its host namespace.
pub const METRICS_PORT: u16 = 9091;
/// The datastore prefix.
pub const PREFIX: &str = "/calico/v1";
/// The orchestrator segment used in endpoint keys.
pub const ORCHESTRATOR: &str = "cni";

/// How long one TCP probe waits for the handshake. Everything is on veths in
/// one machine, so an accepted connection completes in well under this.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long [`Cluster::assert_matrix`] waits for the expected state.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an agent may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Which firewall backend the agents use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataplane {
    /// `table inet margay`.
    Nftables,
    /// iptables (nft variant) + ipset.
    Iptables,
}

impl Dataplane {
    /// The `--dataplane` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Dataplane::Nftables => "nftables",
            Dataplane::Iptables => "iptables",
        }
    }
}

// ---------------------------------------------------------------------------
// Entering namespaces
// ---------------------------------------------------------------------------

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
fn enter_netns(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("cannot enter namespace {ns}: {e}"));
}

/// True when a TCP connection to `addr` is accepted within `timeout`. It
/// then waits (up to `timeout`) for the server to close it: the sandbox's
/// listeners record the peer before they close, so once a probe has returned
/// its connection is in [`Cluster::peers`].
fn tcp_connects(addr: SocketAddr, timeout: Duration) -> bool {
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
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
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

// ---------------------------------------------------------------------------
// The margay binary
// ---------------------------------------------------------------------------

/// The `margay` binary to test: `$MARGAY_BIN`, else the one next to this test
/// executable's profile directory, built (once per process) with cargo so it
/// is never stale.
pub fn margay_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("MARGAY_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no current exe: {e}"));
        // target/<profile>/deps/<test>-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("unexpected test path {}", exe.display()))
            .to_path_buf();
        build_margay(&profile_dir);
        let bin = profile_dir.join("margay");
        assert!(bin.is_file(), "no margay binary at {}", bin.display());
        bin
    })
    .clone()
}

fn build_margay(profile_dir: &Path) {
    let Some(target_dir) = profile_dir.parent() else {
        panic!("no target dir above {}", profile_dir.display());
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "margay-agent", "--target-dir"])
        .arg(target_dir);
    if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    if let Some(manifest_dir) = option_env!("CARGO_MANIFEST_DIR") {
        cmd.current_dir(manifest_dir);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo build -p margay-agent: {e}"));
    assert!(status.success(), "cargo build -p margay-agent failed");
}

// ---------------------------------------------------------------------------
// etcd, from inside its namespace
// ---------------------------------------------------------------------------

type Job = Box<dyn FnOnce(&mut Option<etcd_client::Client>, &tokio::runtime::Runtime) + Send>;

/// An etcd client living on a thread inside the etcd namespace, talking to
/// etcd's loopback listener (so cutting the fabric never cuts the test off).
struct NsEtcd {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NsEtcd {
    fn new(ns: &str) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let ns = ns.to_owned();
        let thread = std::thread::spawn(move || {
            enter_netns(&ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("cannot build runtime: {e}"));
            let mut client = None;
            while let Ok(job) = rx.recv() {
                job(&mut client, &rt);
            }
        });
        NsEtcd {
            jobs: Some(tx),
            thread: Some(thread),
        }
    }

    /// Runs `f` with a connected client (connecting first when needed). A
    /// failed attempt drops the client and is retried on a fresh connection
    /// (etcd may just have been restarted), up to three times in all.
    fn run<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: Fn(etcd_client::Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |slot, rt| {
            let mut result = Err("not tried".to_owned());
            for attempt in 0..3 {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(200));
                }
                result = rt
                    .block_on(Self::attempt(slot, &f))
                    .map_err(|e| e.to_string());
                if result.is_ok() {
                    break;
                }
                *slot = None;
            }
            let _ = tx.send(result);
        });
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .unwrap_or_else(|| panic!("etcd client thread is gone"));
        rx.recv()
            .unwrap_or_else(|_| panic!("etcd client thread died"))
    }

    async fn attempt<T, F, Fut>(
        slot: &mut Option<etcd_client::Client>,
        f: &F,
    ) -> Result<T, etcd_client::Error>
    where
        F: Fn(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = match slot {
            Some(client) => client.clone(),
            None => {
                let options = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(Duration::from_secs(10));
                let client =
                    etcd_client::Client::connect(["http://127.0.0.1:2379"], Some(options)).await?;
                *slot = Some(client.clone());
                client
            }
        };
        f(client).await
    }
}

impl Drop for NsEtcd {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Listeners: every workload port and the outside server
// ---------------------------------------------------------------------------

/// What the listener thread is told.
enum ListenerCmd {
    /// Serve this listener under a tag; record peers when the flag is set.
    Add(String, TcpListener, bool),
    /// Close every listener with this tag (so its namespace can go away).
    Remove(String, mpsc::Sender<()>),
}

/// One thread that keeps accepting (and closing) connections on every
/// listener, recording the peers of those marked to be recorded.
struct Listeners {
    cmds: mpsc::Sender<ListenerCmd>,
    seen: Arc<Mutex<BTreeMap<String, Vec<SocketAddr>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listeners {
    fn new() -> Self {
        let (cmds, rx) = mpsc::channel::<ListenerCmd>();
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let seen = Arc::clone(&seen);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || Self::pump(&rx, &seen, &stop))
        };
        Listeners {
            cmds,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn pump(
        rx: &mpsc::Receiver<ListenerCmd>,
        seen: &Mutex<BTreeMap<String, Vec<SocketAddr>>>,
        stop: &AtomicBool,
    ) {
        let mut all: Vec<(String, TcpListener, bool)> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    ListenerCmd::Add(tag, listener, record) => all.push((tag, listener, record)),
                    ListenerCmd::Remove(tag, done) => {
                        all.retain(|(t, _, _)| *t != tag);
                        let _ = done.send(());
                    }
                }
            }
            for (tag, listener, record) in &all {
                while let Ok((stream, peer)) = listener.accept() {
                    // Record before closing: the prober waits for the close.
                    if *record {
                        if let Ok(mut seen) = seen.lock() {
                            seen.entry(tag.clone()).or_default().push(peer);
                        }
                    }
                    drop(stream);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Listens on `addr` inside `ns`; `tag` names it for [`Self::peers`].
    fn listen(&self, ns: &str, tag: &str, addr: SocketAddr, record: bool) {
        let listener = in_netns(ns, || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("cannot listen on {addr} in {ns}: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("cannot make listener non-blocking: {e}"));
        self.cmds
            .send(ListenerCmd::Add(tag.to_owned(), listener, record))
            .unwrap_or_else(|_| panic!("listener thread is gone"));
    }

    /// Closes the listeners tagged `tag` and waits until they are closed.
    fn remove(&self, tag: &str) {
        let (tx, rx) = mpsc::channel();
        if self
            .cmds
            .send(ListenerCmd::Remove(tag.to_owned(), tx))
            .is_ok()
        {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
    }

    fn peers(&self, tag: &str) -> Vec<SocketAddr> {
        self.seen
            .lock()
            .map(|seen| seen.get(tag).cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Hosts and workloads
// ---------------------------------------------------------------------------

/// One host namespace and its agent.
#[derive(Debug)]
pub struct Host {
    name: String,
    ip: Ipv4Addr,
    ns: TestNetns,
    agent: Option<Child>,
    log: PathBuf,
}

impl Host {
    /// The hostname the agent runs as (`h1`, …).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The host's fabric address (its `bird_ip`).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// The host's namespace (run `nft`, `ip route`, … in it).
    pub fn ns(&self) -> &TestNetns {
        &self.ns
    }
}

/// One workload namespace attached to a host.
#[derive(Debug)]
pub struct Workload {
    name: String,
    host: String,
    ip: Ipv4Addr,
    /// Set by [`Cluster::add_workload_v6`].
    ip6: Option<std::net::Ipv6Addr>,
    iface: String,
    mac: String,
    ns: TestNetns,
}

impl Workload {
    /// The workload's address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// The host it is attached to.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// Host-side interface name (`cali<name>`).
    pub fn iface(&self) -> &str {
        &self.iface
    }
    /// The workload side's MAC address.
    pub fn mac(&self) -> &str {
        &self.mac
    }
    /// The workload's namespace.
    pub fn ns(&self) -> &TestNetns {
        &self.ns
    }
}

/// One expected connectivity fact: a TCP connection from workload `from` to
/// `to` (a workload name, or `"outside"`) on `port` is accepted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Source workload.
    pub from: String,
    /// Destination workload, or `"outside"`.
    pub to: String,
    /// TCP port.
    pub port: u16,
    /// True when the connection must be accepted.
    pub allowed: bool,
}

/// `from` -> `to`:`port` must connect.
pub fn allow(from: &str, to: &str, port: u16) -> Probe {
    Probe {
        from: from.to_owned(),
        to: to.to_owned(),
        port,
        allowed: true,
    }
}

/// `from` -> `to`:`port` must not connect.
pub fn deny(from: &str, to: &str, port: u16) -> Probe {
    Probe {
        allowed: false,
        ..allow(from, to, port)
    }
}

// ---------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------

/// Builds a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    hosts: usize,
    dataplane: Dataplane,
    ready: bool,
    start_agents: bool,
    agent_args: Vec<String>,
    agent_wrapper: Vec<String>,
}

impl ClusterBuilder {
    /// Number of hosts (default 2).
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }
    /// Firewall backend (default nftables).
    pub fn dataplane(mut self, dataplane: Dataplane) -> Self {
        self.dataplane = dataplane;
        self
    }
    /// Whether to write `/calico/v1/Ready = true` before starting the agents
    /// (default true).
    pub fn ready(mut self, ready: bool) -> Self {
        self.ready = ready;
        self
    }
    /// Whether to start the agents (default true; false to write data first
    /// and call [`Cluster::start_agent`] later).
    pub fn start_agents(mut self, start: bool) -> Self {
        self.start_agents = start;
        self
    }
    /// Extra arguments for every `margay run`.
    pub fn agent_arg(mut self, arg: &str) -> Self {
        self.agent_args.push(arg.to_owned());
        self
    }
    /// A command (with its arguments) every `margay run` is started under,
    /// e.g. `setpriv ... ` to drop privileges; empty by default.
    pub fn agent_wrapper(mut self, wrapper: &[&str]) -> Self {
        self.agent_wrapper = wrapper.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Creates the namespaces, starts etcd and (by default) the agents, and
    /// waits until each agent reports ready.
    pub fn build(self) -> Cluster {
        Cluster::create(self)
    }
}

/// The running sandbox; dropping it removes everything.
pub struct Cluster {
    dataplane: Dataplane,
    agent_args: Vec<String>,
    agent_wrapper: Vec<String>,
    dir: PathBuf,
    // Field order is drop order: clients and threads first, then processes,
    // then namespaces (TestNetns kills anything left inside).
    client: NsEtcd,
    listeners: Listeners,
    etcd: Option<Child>,
    etcd_on_fabric: bool,
    workloads: BTreeMap<String, Workload>,
    hosts: Vec<Host>,
    outside: TestNetns,
    etcd_ns: TestNetns,
    fabric: TestNetns,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("fabric", &self.fabric.name())
            .field("hosts", &self.hosts)
            .field("workloads", &self.workloads.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A builder with 2 hosts, nftables, Ready, agents started.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            hosts: 2,
            dataplane: Dataplane::Nftables,
            ready: true,
            start_agents: true,
            agent_args: Vec::new(),
            agent_wrapper: Vec::new(),
        }
    }

    fn create(b: ClusterBuilder) -> Cluster {
        let dir = scratch_dir();
        std::fs::write(dir.join("margay.toml"), "")
            .unwrap_or_else(|e| panic!("cannot write config file: {e}"));
        let fabric = TestNetns::new("fab");
        fabric.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        fabric.exec_ok(&["ip", "link", "set", "br0", "up"]);
        let etcd_ns = TestNetns::new("etcd");
        attach_to_fabric(&fabric, &etcd_ns, "p-etcd", ETCD_IP);
        let outside = TestNetns::new("out");
        attach_to_fabric(&fabric, &outside, "p-out", ROUTER_IP);
        outside.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{OUTSIDE_IP}/32"),
            "dev",
            "lo",
        ]);
        let client = NsEtcd::new(etcd_ns.name());
        let listeners = Listeners::new();
        listeners.listen(
            outside.name(),
            "outside",
            SocketAddr::from((OUTSIDE_IP, OUTSIDE_PORT)),
            true,
        );
        let mut cluster = Cluster {
            dataplane: b.dataplane,
            agent_args: b.agent_args.clone(),
            agent_wrapper: b.agent_wrapper.clone(),
            dir,
            client,
            listeners,
            etcd: None,
            etcd_on_fabric: true,
            workloads: BTreeMap::new(),
            hosts: Vec::new(),
            outside,
            etcd_ns,
            fabric,
        };
        cluster.start_etcd();
        if b.ready {
            cluster.put(&format!("{PREFIX}/Ready"), "true");
        }
        for i in 1..=b.hosts {
            cluster.add_host(i);
        }
        if b.start_agents {
            let names: Vec<String> = cluster.hosts.iter().map(|h| h.name.clone()).collect();
            for name in &names {
                cluster.spawn_agent(name);
            }
            if b.ready {
                for name in &names {
                    cluster.wait_agent_ready(name);
                }
            }
        }
        cluster
    }

    fn add_host(&mut self, i: usize) {
        let name = format!("h{i}");
        let octet = u8::try_from(10 + i).unwrap_or_else(|_| panic!("too many hosts"));
        let ip = Ipv4Addr::new(192, 0, 2, octet);
        let ns = TestNetns::new(&name);
        attach_to_fabric(&self.fabric, &ns, &format!("p-{name}"), ip);
        ns.exec_ok(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &ROUTER_IP.to_string(),
        ]);
        // A container host forwards: the machine's setting, not margay's.
        ns.sysctl("net.ipv4.ip_forward", "1");
        self.put(&format!("{PREFIX}/host/{name}/bird_ip"), &ip.to_string());
        let log = self.dir.join(format!("agent-{name}.log"));
        self.hosts.push(Host {
            name,
            ip,
            ns,
            agent: None,
            log,
        });
    }

    // --- accessors -------------------------------------------------------

    /// The config file every agent is started with (`--config`), empty at
    /// first; write it and send SIGHUP to reload.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("margay.toml")
    }

    /// The backend the agents use.
    pub fn dataplane(&self) -> Dataplane {
        self.dataplane
    }

    /// Host `name` (`h1`, …). Panics if unknown.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    fn host_mut(&mut self, name: &str) -> &mut Host {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Workload `name`. Panics if unknown.
    pub fn workload(&self, name: &str) -> &Workload {
        self.workloads
            .get(name)
            .unwrap_or_else(|| panic!("no workload {name}"))
    }

    /// The fabric namespace (holds bridge `br0`, ports `p-<host>`).
    pub fn fabric(&self) -> &TestNetns {
        &self.fabric
    }

    /// The outside namespace (router + server).
    pub fn outside(&self) -> &TestNetns {
        &self.outside
    }

    // --- etcd ------------------------------------------------------------

    /// Starts (or restarts) etcd and waits until it answers.
    pub fn start_etcd(&mut self) {
        if self.etcd.is_some() {
            return;
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap_or_else(|e| panic!("cannot open etcd log: {e}"));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone log handle: {e}"));
        let clients = if self.etcd_on_fabric {
            format!("http://{ETCD_IP}:2379,http://127.0.0.1:2379")
        } else {
            "http://127.0.0.1:2379".to_owned()
        };
        let data = self.dir.join("etcd-data");
        let data = data.to_string_lossy();
        let mut cmd = self.etcd_ns.command(&[
            ETCD_BIN,
            "--name=sandbox",
            &format!("--data-dir={data}"),
            &format!("--listen-client-urls={clients}"),
            &format!("--advertise-client-urls=http://{ETCD_IP}:2379"),
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=sandbox=http://127.0.0.1:2380",
            "--logger=zap",
            "--log-outputs=stderr",
        ]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd: {e}"));
        self.etcd = Some(child);
        let health = SocketAddr::from(([127, 0, 0, 1], 2379));
        let ns = self.etcd_ns.name().to_owned();
        wait_for("etcd to become healthy", Duration::from_secs(30), || {
            in_netns(&ns, || http_get(health, "/health"))
                .is_some_and(|(_, body)| body.contains("\"health\":\"true\""))
        });
    }

    /// Stops etcd (SIGTERM, wait). Data is kept for [`Self::start_etcd`].
    pub fn stop_etcd(&mut self) {
        if let Some(child) = self.etcd.take() {
            terminate(child, Duration::from_secs(10));
        }
    }

    /// Cuts the agents off from etcd: restarts it listening on its loopback
    /// only, so the agents' connections break and new ones are refused while
    /// the test keeps reading and writing.
    pub fn cut_etcd(&mut self) {
        self.stop_etcd();
        self.etcd_on_fabric = false;
        self.start_etcd();
    }

    /// Undoes [`Self::cut_etcd`].
    pub fn restore_etcd(&mut self) {
        self.stop_etcd();
        self.etcd_on_fabric = true;
        self.start_etcd();
    }

    /// Writes `key` = `value` (a plain string).
    pub fn put(&self, key: &str, value: &str) {
        let (k, v) = (key.to_owned(), value.to_owned());
        self.client
            .run(move |mut c| {
                let (k, v) = (k.clone(), v.clone());
                async move { c.put(k, v, None).await }
            })
            .unwrap_or_else(|e| panic!("etcd put {key}: {e}"));
    }

    /// Writes `key` = the JSON text of `value`.
    pub fn put_json(&self, key: &str, value: &Value) {
        self.put(key, &value.to_string());
    }

    /// Writes many keys in transactions of up to 100 puts each.
    pub fn put_many(&self, pairs: &[(String, String)]) {
        for chunk in pairs.chunks(100) {
            let chunk = chunk.to_vec();
            self.client
                .run(move |mut c| {
                    let ops: Vec<etcd_client::TxnOp> = chunk
                        .iter()
                        .map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.as_str(), None))
                        .collect();
                    async move { c.txn(etcd_client::Txn::new().and_then(ops)).await }
                })
                .unwrap_or_else(|e| panic!("etcd txn: {e}"));
        }
    }

    /// Writes `puts` and deletes `deletes` in one transaction (one etcd
    /// revision; the keys must all differ).
    pub fn txn(&self, puts: &[(String, String)], deletes: &[String]) {
        let (puts, deletes) = (puts.to_vec(), deletes.to_vec());
        self.client
            .run(move |mut c| {
                let ops: Vec<etcd_client::TxnOp> = puts
                    .iter()
                    .map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.as_str(), None))
                    .chain(
                        deletes
                            .iter()
                            .map(|k| etcd_client::TxnOp::delete(k.as_str(), None)),
                    )
                    .collect();
                async move { c.txn(etcd_client::Txn::new().and_then(ops)).await }
            })
            .unwrap_or_else(|e| panic!("etcd txn: {e}"));
    }

    /// Deletes `key`.
    pub fn delete(&self, key: &str) {
        let k = key.to_owned();
        self.client
            .run(move |mut c| {
                let k = k.clone();
                async move { c.delete(k, None).await }
            })
            .unwrap_or_else(|e| panic!("etcd delete {key}: {e}"));
    }

    /// Deletes every key under `prefix`.
    pub fn delete_prefix(&self, prefix: &str) {
        let k = prefix.to_owned();
        self.client
            .run(move |mut c| {
                let k = k.clone();
                async move {
                    c.delete(k, Some(etcd_client::DeleteOptions::new().with_prefix()))
                        .await
                }
            })
            .unwrap_or_else(|e| panic!("etcd delete prefix {prefix}: {e}"));
    }

    /// Every key and value under `prefix`.
    pub fn get_prefix(&self, prefix: &str) -> BTreeMap<String, String> {
        let k = prefix.to_owned();
        let resp = self
            .client
            .run(move |mut c| {
                let k = k.clone();
                async move {
                    c.get(k, Some(etcd_client::GetOptions::new().with_prefix()))
                        .await
                }
            })
            .unwrap_or_else(|e| panic!("etcd get {prefix}: {e}"));
        resp.kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect()
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let resp = self
            .client
            .run(|mut c| async move { c.get("/", None).await })
            .unwrap_or_else(|e| panic!("etcd get: {e}"));
        resp.header()
            .map(|h| h.revision())
            .unwrap_or_else(|| panic!("etcd response without header"))
    }

    /// Compacts the history up to the current revision (physically), so a
    /// watch from any older revision fails with "compacted".
    pub fn compact(&self) -> i64 {
        let rev = self.revision();
        self.client
            .run(move |mut c| async move {
                c.compact(
                    rev,
                    Some(etcd_client::CompactionOptions::new().with_physical()),
                )
                .await
            })
            .unwrap_or_else(|e| panic!("etcd compact {rev}: {e}"));
        rev
    }

    // --- agents ----------------------------------------------------------

    fn spawn_agent(&mut self, host: &str) {
        let bin = margay_bin();
        let config = self.dir.join("margay.toml");
        let dataplane = self.dataplane.as_str();
        let extra = self.agent_args.clone();
        let wrapper = self.agent_wrapper.clone();
        let h = self.host_mut(host);
        assert!(h.agent.is_none(), "agent on {host} already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&h.log)
            .unwrap_or_else(|e| panic!("cannot open agent log: {e}"));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone log handle: {e}"));
        let bin = bin.to_string_lossy().into_owned();
        let config = config.to_string_lossy().into_owned();
        let etcd = format!("http://{ETCD_IP}:2379");
        let metrics = format!("127.0.0.1:{METRICS_PORT}");
        let mut args: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        args.extend([
            bin.as_str(),
            "run",
            "--config",
            &config,
            "--hostname",
            &h.name,
            "--etcd-endpoints",
            &etcd,
            "--dataplane",
            dataplane,
            "--metrics-addr",
            &metrics,
            "--log-format",
            "json",
        ]);
        args.extend(extra.iter().map(String::as_str));
        let mut cmd = h.ns.command(&args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MARGAY") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start margay on {host}: {e}"));
        h.agent = Some(child);
    }

    /// Starts the agent on `host` and waits until it reports ready.
    pub fn start_agent(&mut self, host: &str) {
        self.spawn_agent(host);
        self.wait_agent_ready(host);
    }

    /// Starts the agent on `host` without waiting.
    pub fn start_agent_nowait(&mut self, host: &str) {
        self.spawn_agent(host);
    }

    /// Waits until `host`'s agent answers `/readyz` with 200. Panics (with
    /// the log tail) if it exits or takes too long.
    pub fn wait_agent_ready(&mut self, host: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.agent_ready(host) {
                return;
            }
            if !self.agent_running(host) {
                panic!(
                    "margay on {host} exited:\n{}",
                    self.agent_log_tail(host, 30)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "margay on {host} not ready after {READY_TIMEOUT:?}:\n{}",
                    self.agent_log_tail(host, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when `host`'s agent answers `/readyz` with 200.
    pub fn agent_ready(&self, host: &str) -> bool {
        self.agent_http(host, "/readyz")
            .is_some_and(|(status, _)| status == 200)
    }

    /// `GET path` on `host`'s metrics port: (status, body).
    pub fn agent_http(&self, host: &str, path: &str) -> Option<(u16, String)> {
        let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
        in_netns(self.host(host).ns.name(), || http_get(addr, path))
    }

    /// `host`'s `/metrics` text (empty if unreachable).
    pub fn metrics(&self, host: &str) -> String {
        self.agent_http(host, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The sum of every sample of metric `name` (a series like
    /// `name{label="x"}` also works) on `host`; `None` when the page is
    /// unreachable or has no such sample. Waits on "the agent noticed"
    /// compare this with `Some(..)`, so a missing metric never reads as 0.
    pub fn metric(&self, host: &str, name: &str) -> Option<f64> {
        sum_metric(&self.metrics(host), name)
    }

    /// Like [`Self::metric`], but panics (with the page) when the metric
    /// is not exposed.
    pub fn metric_sum(&self, host: &str, name: &str) -> f64 {
        let page = self.metrics(host);
        sum_metric(&page, name)
            .unwrap_or_else(|| panic!("no metric {name} on {host}; /metrics:\n{page}"))
    }

    /// True while `host`'s agent process is alive.
    pub fn agent_running(&mut self, host: &str) -> bool {
        self.host_mut(host)
            .agent
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id of `host`'s running agent (for reading its
    /// `/proc/<pid>/stat`), if one runs.
    pub fn agent_pid(&self, host: &str) -> Option<u32> {
        self.host(host).agent.as_ref().map(std::process::Child::id)
    }

    /// Kills `host`'s agent at once (SIGKILL), as a crash would.
    pub fn kill_agent(&mut self, host: &str) {
        if let Some(mut child) = self.host_mut(host).agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops `host`'s agent gracefully (SIGTERM) and returns its exit status
    /// code (None if it had to be killed or was not running).
    pub fn stop_agent(&mut self, host: &str) -> Option<i32> {
        let child = self.host_mut(host).agent.take()?;
        terminate(child, Duration::from_secs(10))
    }

    /// The agent's whole log (JSON lines).
    pub fn agent_log(&self, host: &str) -> String {
        std::fs::read_to_string(&self.host(host).log).unwrap_or_default()
    }

    /// The last `n` lines of the agent's log.
    pub fn agent_log_tail(&self, host: &str, n: usize) -> String {
        let log = self.agent_log(host);
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    // --- workloads -------------------------------------------------------

    /// Adds workload `name` on `host` with address `ip`, as the CNI plugin
    /// would (namespace, veth `cali<name>`, /32, default via 169.254.1.1),
    /// listening on [`WORKLOAD_PORTS`]. Writes no endpoint.
    pub fn add_workload(&mut self, name: &str, host: &str, ip: &str) {
        assert!(
            !name.is_empty() && name.len() <= 11 && name.bytes().all(|b| b.is_ascii_alphanumeric()),
            "workload name {name:?}: 1-11 alphanumerics"
        );
        assert!(!self.workloads.contains_key(name), "workload {name} exists");
        let ip: Ipv4Addr = ip.parse().unwrap_or_else(|e| panic!("bad ip {ip}: {e}"));
        let iface = format!("cali{name}");
        let ns = TestNetns::new("wl");
        attach_workload(self.host(host).ns(), &iface, &ns, &ip.to_string());
        let mac = ns
            .exec_ok(&["cat", "/sys/class/net/eth0/address"])
            .trim()
            .to_owned();
        for port in WORKLOAD_PORTS {
            self.listeners
                .listen(ns.name(), name, SocketAddr::from((ip, port)), true);
        }
        self.workloads.insert(
            name.to_owned(),
            Workload {
                name: name.to_owned(),
                host: host.to_owned(),
                ip,
                ip6: None,
                iface,
                mac,
                ns,
            },
        );
    }

    /// Removes workload `name`'s namespace and veth (the CNI DEL), leaving
    /// its endpoint key alone.
    pub fn remove_workload_ns(&mut self, name: &str) {
        // Open sockets would keep the namespace (and so the veth) alive.
        self.listeners.remove(name);
        self.workloads.remove(name);
    }

    /// The endpoint key of workload `name` (under its current host).
    pub fn endpoint_key(&self, name: &str) -> String {
        let w = self.workload(name);
        format!(
            "{PREFIX}/host/{}/workload/{ORCHESTRATOR}/{}/endpoint/{}",
            w.host, w.name, w.name
        )
    }

    /// The endpoint document the CNI plugin would write for workload `name`.
    pub fn endpoint_doc(&self, name: &str, profiles: &[&str], labels: &Value) -> Value {
        let w = self.workload(name);
        json!({
            "state": "active",
            "name": w.iface,
            "mac": w.mac,
            "profile_ids": profiles,
            "ipv4_nets": [format!("{}/32", w.ip)],
            "ipv6_nets": w.ip6.map(|a| format!("{a}/128")).into_iter().collect::<Vec<_>>(),
            "labels": labels,
        })
    }

    /// Writes workload `name`'s endpoint with `profiles` and `labels`.
    pub fn put_endpoint(&self, name: &str, profiles: &[&str], labels: &Value) {
        let doc = self.endpoint_doc(name, profiles, labels);
        self.put_json(&self.endpoint_key(name), &doc);
    }

    /// Writes a profile's rules document.
    pub fn put_profile_rules(&self, profile: &str, rules: &Value) {
        self.put_json(&format!("{PREFIX}/policy/profile/{profile}/rules"), rules);
    }

    /// Writes a profile's tags.
    pub fn put_profile_tags(&self, profile: &str, tags: &[&str]) {
        self.put_json(
            &format!("{PREFIX}/policy/profile/{profile}/tags"),
            &json!(tags),
        );
    }

    /// Writes a profile's labels.
    pub fn put_profile_labels(&self, profile: &str, labels: &Value) {
        self.put_json(&format!("{PREFIX}/policy/profile/{profile}/labels"), labels);
    }

    /// Writes a tier's metadata.
    pub fn put_tier(&self, tier: &str, order: &Value) {
        self.put_json(
            &format!("{PREFIX}/policy/tier/{tier}/metadata"),
            &json!({ "order": order }),
        );
    }

    /// Writes a tiered policy.
    pub fn put_policy(&self, tier: &str, id: &str, policy: &Value) {
        self.put_json(&format!("{PREFIX}/policy/tier/{tier}/policy/{id}"), policy);
    }

    /// Writes an IPv4 pool.
    pub fn put_pool(&self, cidr: &str, masquerade: bool) {
        let key = format!("{PREFIX}/ipam/v4/pool/{}", cidr.replace('/', "-"));
        self.put_json(&key, &json!({ "cidr": cidr, "masquerade": masquerade }));
    }

    // --- probing ---------------------------------------------------------

    fn target(&self, to: &str) -> Ipv4Addr {
        if to == "outside" {
            OUTSIDE_IP
        } else {
            self.workload(to).ip
        }
    }

    fn target_port(to: &str, port: u16) -> u16 {
        if to == "outside" {
            OUTSIDE_PORT
        } else {
            port
        }
    }

    /// True when workload `from` can open a TCP connection to `to` (a
    /// workload, or `"outside"` whose port is always [`OUTSIDE_PORT`]).
    pub fn can_connect(&self, from: &str, to: &str, port: u16) -> bool {
        let addr = SocketAddr::from((self.target(to), Self::target_port(to, port)));
        self.can_connect_addr(from, addr, PROBE_TIMEOUT)
    }

    /// True when workload `from` can connect to `addr` within `timeout`.
    pub fn can_connect_addr(&self, from: &str, addr: SocketAddr, timeout: Duration) -> bool {
        in_netns(self.workload(from).ns.name(), || {
            tcp_connects(addr, timeout)
        })
    }

    /// True when one ping from workload `from` to `to` is answered.
    pub fn can_ping(&self, from: &str, to: &str) -> bool {
        let ip = self.target(to).to_string();
        self.workload(from)
            .ns
            .exec(&["ping", "-n", "-q", "-c1", "-W1", &ip])
            .status
            .success()
    }

    /// Probes every fact at once (one thread each); returns the ones whose
    /// observation differs from the expectation.
    pub fn check_matrix(&self, probes: &[Probe]) -> Vec<Probe> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = probes
                .iter()
                .map(|p| scope.spawn(move || (p, self.can_connect(&p.from, &p.to, p.port))))
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok())
                .filter(|(p, seen)| p.allowed != *seen)
                .map(|(p, _)| p.clone())
                .collect()
        })
    }

    /// Waits until one round of probes matches every fact; panics listing
    /// the mismatches (and the agents' log tails) after [`CONVERGE_TIMEOUT`].
    pub fn assert_matrix(&self, probes: &[Probe]) {
        let mut wrong = Vec::new();
        let ok = eventually(CONVERGE_TIMEOUT, || {
            wrong = self.check_matrix(probes);
            wrong.is_empty()
        });
        if !ok {
            let lines: Vec<String> = wrong
                .iter()
                .map(|p| {
                    format!(
                        "  {} -> {}:{} expected {} but {}",
                        p.from,
                        p.to,
                        p.port,
                        if p.allowed { "allow" } else { "deny" },
                        if p.allowed { "blocked" } else { "connected" }
                    )
                })
                .collect();
            panic!(
                "connectivity did not converge in {CONVERGE_TIMEOUT:?}:\n{}\n{}",
                lines.join("\n"),
                self.debug_dump()
            );
        }
    }

    /// Source addresses the outside server has seen.
    pub fn outside_peers(&self) -> Vec<IpAddr> {
        self.peers("outside")
    }

    /// Source addresses workload `name` (or `"outside"`) has accepted
    /// connections from, oldest first.
    pub fn peers(&self, name: &str) -> Vec<IpAddr> {
        self.listeners
            .peers(name)
            .iter()
            .map(SocketAddr::ip)
            .collect()
    }

    /// Starts `ping -i interval -c count` from `from` to `to`.
    pub fn start_ping(&self, from: &str, to: &str, interval: Duration, count: u32) -> PingRun {
        let ip = self.target(to).to_string();
        let interval = format!("{:.3}", interval.as_secs_f64());
        let count = count.to_string();
        let child = self
            .workload(from)
            .ns
            .command(&[
                "ping", "-n", "-q", "-i", &interval, "-c", &count, "-W", "1", &ip,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ping: {e}"));
        PingRun { child: Some(child) }
    }

    // --- kernel state ----------------------------------------------------

    /// `ip -4 route show <ip>/32` in `host` (empty when there is none).
    pub fn route(&self, host: &str, ip: Ipv4Addr) -> String {
        self.host(host)
            .ns
            .exec_ok(&["ip", "-4", "route", "show", &format!("{ip}/32")])
            .trim()
            .to_owned()
    }

    /// True when `host` has a route to workload `wl`'s address as expected:
    /// on its interface when local, via the owner's fabric address if remote.
    pub fn has_route_to(&self, host: &str, wl: &str) -> bool {
        let w = self.workload(wl);
        let route = self.route(host, w.ip);
        if w.host == host {
            route.contains(&format!("dev {}", w.iface))
        } else {
            route.contains(&format!("via {}", self.host(&w.host).ip))
        }
    }

    /// The firewall state margay keeps in `host`: `nft list table inet
    /// margay`, or `iptables-save` plus `ipset list` (counters stripped).
    pub fn firewall_dump(&self, host: &str) -> String {
        let ns = &self.host(host).ns;
        match self.dataplane {
            Dataplane::Nftables => String::from_utf8_lossy(
                &ns.exec(&["nft", "list", "table", "inet", "margay"]).stdout,
            )
            .into_owned(),
            Dataplane::Iptables => {
                let save = ns.exec_ok(&["iptables-save"]);
                let sets = ns.exec_ok(&["ipset", "list"]);
                let save: Vec<String> = save
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| match l.find(" [") {
                        Some(i) if l.starts_with(':') => l[..i].to_owned(),
                        _ => l.to_owned(),
                    })
                    .collect();
                format!("{}\n{sets}", save.join("\n"))
            }
        }
    }

    /// Removes margay's firewall from `host` by hand, as a careless admin
    /// would: the nft table, or every iptables chain, rule and ipset.
    pub fn wipe_firewall(&self, host: &str) {
        let ns = &self.host(host).ns;
        match self.dataplane {
            Dataplane::Nftables => {
                ns.exec_ok(&["nft", "delete", "table", "inet", "margay"]);
            }
            Dataplane::Iptables => {
                // The agent may repair between two commands (then a chain or
                // set is in use again): retry the whole wipe a few times.
                for _ in 0..5 {
                    for table in ["filter", "nat", "mangle", "raw"] {
                        ns.exec(&["iptables", "-t", table, "-F"]);
                        ns.exec(&["iptables", "-t", table, "-X"]);
                    }
                    if ns.exec(&["ipset", "destroy"]).status.success() {
                        break;
                    }
                }
            }
        }
    }

    /// A sysctl's value inside `host` (`net.ipv4.conf.calia.proxy_arp`).
    pub fn read_sysctl(&self, host: &str, key: &str) -> String {
        self.host(host)
            .ns
            .exec_ok(&["sysctl", "-n", key])
            .trim()
            .to_owned()
    }

    // --- debugging -------------------------------------------------------

    /// Routes, firewall summary and log tails of every host, for failures.
    pub fn debug_dump(&self) -> String {
        let mut out = String::new();
        for h in &self.hosts {
            let routes = h.ns.exec(&["ip", "-4", "route"]);
            out.push_str(&format!(
                "--- {} routes:\n{}--- {} log tail:\n{}\n",
                h.name,
                String::from_utf8_lossy(&routes.stdout),
                h.name,
                self.agent_log_tail(&h.name, 15)
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for h in &self.hosts {
                eprintln!(
                    "--- agent {} log tail ---\n{}",
                    h.name,
                    self.agent_log_tail(&h.name, 40)
                );
            }
        }
        for h in &mut self.hosts {
            if let Some(mut child) = h.agent.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(mut child) = self.etcd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `ping`; [`PingRun::finish`] waits for it and reports counts.
#[derive(Debug)]
pub struct PingRun {
    child: Option<Child>,
}

impl PingRun {
    /// Waits for ping to finish; returns (transmitted, received).
    pub fn finish(mut self) -> (u32, u32) {
        let Some(child) = self.child.take() else {
            return (0, 0);
        };
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("ping failed: {e}"));
        parse_ping_summary(&String::from_utf8_lossy(&out.stdout))
            .unwrap_or_else(|| panic!("no ping summary in {:?}", out.stdout))
    }
}

impl Drop for PingRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sums the samples of metric `name` (any labels) in exposition text;
/// `None` when there is none.
fn sum_metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(None, |sum, v| Some(sum.unwrap_or(0.0) + v))
}

/// Parses "N packets transmitted, M received" from ping's summary.
fn parse_ping_summary(text: &str) -> Option<(u32, u32)> {
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
fn terminate(mut child: Child, grace: Duration) -> Option<i32> {
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
fn attach_to_fabric(fabric: &TestNetns, ns: &TestNetns, port: &str, ip: Ipv4Addr) {
    veth_pair(fabric, port, ns, "eth0");
    fabric.exec_ok(&["ip", "link", "set", port, "master", "br0"]);
    ns.exec_ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
}

/// A fresh scratch directory on /dev/shm (or the temp dir).
fn scratch_dir() -> PathBuf {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::require_root;

    #[test]
    fn metric_samples_are_summed() {
        let text = "# HELP x_total X.\nx_total{kind=\"a\"} 2\nx_total{kind=\"b\"} 3\n\
                    x_total_more 100\ny 7\n";
        assert_eq!(sum_metric(text, "x_total"), Some(5.0));
        assert_eq!(sum_metric(text, "y"), Some(7.0));
        assert_eq!(sum_metric(text, "x_total{kind=\"b\"}"), Some(3.0));
        assert_eq!(sum_metric(text, "z"), None, "absent is not 0");
        assert_eq!(sum_metric("", "y"), None, "unreachable is not 0");
    }

    #[test]
    fn ping_summary_is_parsed() {
        let text = "--- 10.0.0.1 ping statistics ---\n\
                    300 packets transmitted, 298 received, 0.666% packet loss, time 3001ms\n";
        assert_eq!(parse_ping_summary(text), Some((300, 298)));
        assert_eq!(parse_ping_summary("nothing"), None);
    }

    /// The plumbing without any agent: etcd answers from the test thread,
    /// hosts reach etcd over the fabric, the outside server records peers,
    /// workloads are wired as the CNI plugin would, and nothing is left.
    #[test]
    fn cluster_plumbing_works_and_cleans_up() {
        if !require_root("cluster_plumbing_works_and_cleans_up") {
            return;
        }
        let names;
        let dir;
        {
            let mut c = Cluster::builder().hosts(2).start_agents(false).build();
            dir = c.dir.clone();
            c.put("/calico/v1/x", "1");
            assert_eq!(
                c.get_prefix("/calico/v1/")
                    .get("/calico/v1/x")
                    .map(String::as_str),
                Some("1")
            );
            assert_eq!(
                c.get_prefix("/calico/v1/host/h2/bird_ip")
                    .values()
                    .next()
                    .map(String::as_str),
                Some("192.0.2.12")
            );
            // Hosts reach etcd and the outside server over the fabric.
            let h1 = c.host("h1").ns().name().to_owned();
            assert!(in_netns(&h1, || tcp_connects(
                SocketAddr::from((ETCD_IP, 2379)),
                PROBE_TIMEOUT
            )));
            assert!(in_netns(&h1, || tcp_connects(
                SocketAddr::from((OUTSIDE_IP, OUTSIDE_PORT)),
                PROBE_TIMEOUT
            )));
            assert!(eventually(Duration::from_secs(2), || c
                .outside_peers()
                .contains(&IpAddr::from(Ipv4Addr::new(192, 0, 2, 11)))));

            // A workload is wired but, without margay, unreachable.
            c.add_workload("a", "h1", "10.65.1.2");
            let w = c.workload("a");
            assert_eq!(w.iface(), "calia");
            assert_eq!(w.mac().len(), 17);
            let wl_routes = w.ns().exec_ok(&["ip", "-4", "route"]);
            assert!(
                wl_routes.contains("default via 169.254.1.1 dev eth0"),
                "{wl_routes}"
            );
            assert!(!c.can_connect("a", "outside", 0));

            // Cutting etcd keeps the test's client working, not the hosts'.
            c.cut_etcd();
            c.put("/calico/v1/y", "2");
            assert!(!in_netns(&h1, || tcp_connects(
                SocketAddr::from((ETCD_IP, 2379)),
                PROBE_TIMEOUT
            )));
            let rev = c.compact();
            assert!(rev > 1);
            c.restore_etcd();
            assert!(in_netns(&h1, || tcp_connects(
                SocketAddr::from((ETCD_IP, 2379)),
                PROBE_TIMEOUT
            )));
            assert_eq!(c.get_prefix("/calico/v1/y").len(), 1);

            names = [
                c.fabric().name().to_owned(),
                h1,
                c.workload("a").ns().name().to_owned(),
            ];
        }
        let list = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["netns", "list"])
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default(),
        )
        .into_owned();
        for name in names {
            assert!(!list.contains(&name), "namespace {name} left behind");
        }
        assert!(!dir.exists(), "scratch dir left behind");
    }
}
