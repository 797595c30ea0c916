//! Many agents against one etcd, directly or through etcd's own
//! `grpc-proxy`: the harness of the fan-out benchmark.
//!
//! [`FanoutHosts::new`] makes a hub namespace holding a bridge
//! ([`HUB_IP`]`/16`) and `n` agent namespaces, each hanging off the bridge by
//! a veth pair (`eth0` inside, its own address) and holding a veth pair whose
//! `cali0` end is its one local endpoint's interface. Nothing runs in the host's own
//! namespace.
//!
//! [`FanoutRun::start`] then starts, for one [`Mode`], a fresh etcd in the
//! hub (on [`HUB_IP`] and the hub's loopback), loads the datastore
//! ([`data::datastore`]), starts the mode's `etcd grpc-proxy start`
//! processes in the hub, and one real `margay run --dataplane none` per
//! agent namespace, each with its own hostname, pointed at etcd or at its
//! proxy (agents spread round-robin over the proxies), serving `/metrics` on
//! its own address. [`FanoutRun::write_shared_profile`] changes the profile every
//! agent's local endpoint uses, and [`FanoutRun::wait_applied`] reads, from
//! each agent's `margay_last_apply_revision` and
//! `margay_last_apply_timestamp_seconds`, when that write was applied there.
//! Dropping a run kills its processes; dropping the hosts removes the
//! namespaces (also on panic).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::etcd::{remove_env_with_prefix, scratch_root, ETCD_BIN};
use crate::netns::TestNetns;
use crate::sandbox::{in_netns, margay_bin, NsEtcd};

pub mod data;
pub mod procstat;
mod scrape;

use scrape::{http_get, last_apply, metric, sample};

/// The hub's address on the bridge: etcd and the proxies listen here.
pub const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// etcd's client port.
const ETCD_PORT: u16 = 2379;
/// The first proxy's port; proxy `k` listens on this + `k`.
const PROXY_BASE_PORT: u16 = 23790;
/// Where each agent serves `/metrics` and `/readyz`, on its own address.
const METRICS_PORT: u16 = 9091;
/// How long etcd or a proxy may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long all agents together may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// The pause between two passes over the agents' metrics while waiting.
const POLL_PAUSE: Duration = Duration::from_millis(10);

/// Where the agents get their data from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every agent watches etcd itself.
    Direct,
    /// Through this many `etcd grpc-proxy` processes, agents spread over them.
    Proxies(usize),
}

impl Mode {
    /// A short name for ids and tables: `direct`, `proxy1`, `proxy4`.
    pub fn label(self) -> String {
        match self {
            Mode::Direct => "direct".into(),
            Mode::Proxies(k) => format!("proxy{k}"),
        }
    }

    fn proxies(self) -> usize {
        match self {
            Mode::Direct => 0,
            Mode::Proxies(k) => k,
        }
    }
}

/// The namespaces: a hub with a bridge, and one namespace per agent.
#[derive(Debug)]
pub struct FanoutHosts {
    dir: PathBuf,
    agents: Vec<AgentHost>,
    hub: TestNetns,
}

#[derive(Debug)]
struct AgentHost {
    ip: Ipv4Addr,
    ns: TestNetns,
}

impl FanoutHosts {
    /// The hub and `n` agent namespaces, connected.
    pub fn new(n: usize) -> Self {
        assert!(n > 0 && n < 60_000, "between 1 and 60,000 agents");
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n_run = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = scratch_root().join(format!("mgy-fanout-{}-{n_run}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        std::fs::write(dir.join("margay.toml"), "")
            .unwrap_or_else(|e| panic!("cannot write the config file: {e}"));
        let hub = TestNetns::new("fohub");
        ip(&hub, &["link", "add", "br0", "type", "bridge"]);
        ip(&hub, &["link", "set", "br0", "up"]);
        ip(
            &hub,
            &["addr", "add", &format!("{HUB_IP}/16"), "dev", "br0"],
        );
        let agents = (0..n).map(|a| AgentHost::new(&hub, a)).collect();
        FanoutHosts { dir, agents, hub }
    }

    /// How many agent namespaces there are.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// True when there are none (never: [`Self::new`] makes at least one).
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }
}

impl Drop for FanoutHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl AgentHost {
    /// Agent namespace `a`: `eth0` on the hub's bridge with address
    /// 10.99.x.y/16 (never the hub's), and `cali0` for its endpoint.
    fn new(hub: &TestNetns, a: usize) -> Self {
        let ns = TestNetns::new("fa");
        let addr = Ipv4Addr::from(u32::from(HUB_IP) + 1 + a as u32);
        let port = format!("fa{a}");
        ip_cmd(&[
            "-n",
            hub.name(),
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ]);
        ip(hub, &["link", "set", &port, "master", "br0", "up"]);
        ip(&ns, &["addr", "add", &format!("{addr}/16"), "dev", "eth0"]);
        ip(&ns, &["link", "set", "eth0", "up"]);
        // The endpoint's interface: one end of a veth pair kept inside (no
        // dummy links in every kernel); both ends up so it has carrier.
        let peer = format!("{}p", data::LOCAL_IFACE);
        ip(
            &ns,
            &[
                "link",
                "add",
                data::LOCAL_IFACE,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
        );
        ip(&ns, &["link", "set", &peer, "up"]);
        ip(&ns, &["link", "set", data::LOCAL_IFACE, "up"]);
        AgentHost { ip: addr, ns }
    }

    fn metrics_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip, METRICS_PORT))
    }
}

/// One mode's processes: etcd, its proxies, the agents.
pub struct FanoutRun<'h> {
    hosts: &'h FanoutHosts,
    dir: PathBuf,
    // Drop order: the client first, then agents, proxies, etcd.
    client: Option<NsEtcd>,
    agents: Vec<Child>,
    proxies: Vec<Child>,
    etcd: Option<Child>,
}

impl<'h> FanoutRun<'h> {
    /// Fresh etcd with the datastore of `endpoints` remote endpoints and
    /// `profiles` profiles, `mode`'s proxies, and every agent, ready.
    pub fn start(hosts: &'h FanoutHosts, mode: Mode, endpoints: usize, profiles: usize) -> Self {
        let dir = hosts.dir.join(mode.label());
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let mut run = FanoutRun {
            hosts,
            dir,
            client: None,
            agents: Vec::new(),
            proxies: Vec::new(),
            etcd: None,
        };
        run.start_etcd();
        run.client = Some(NsEtcd::new(hosts.hub.name()));
        run.put_all(&data::datastore(hosts.len(), endpoints, profiles));
        for k in 0..mode.proxies() {
            run.start_proxy(k);
        }
        for a in 0..hosts.len() {
            let endpoint = match mode {
                Mode::Direct => ETCD_PORT,
                Mode::Proxies(k) => PROXY_BASE_PORT + (a % k) as u16,
            };
            run.spawn_agent(a, endpoint);
        }
        run.wait_all_ready();
        run
    }

    /// etcd's process id.
    pub fn etcd_pid(&self) -> u32 {
        self.etcd.as_ref().map_or(0, Child::id)
    }

    /// The proxies' process ids.
    pub fn proxy_pids(&self) -> Vec<u32> {
        self.proxies.iter().map(Child::id).collect()
    }

    /// The agents' process ids.
    pub fn agent_pids(&self) -> Vec<u32> {
        self.agents.iter().map(Child::id).collect()
    }

    /// How many watchers etcd itself serves now (its
    /// `etcd_debugging_mvcc_watcher_total`): one per agent and tree when
    /// direct, the proxies' coalesced ones otherwise.
    pub fn etcd_watchers(&self) -> Option<u64> {
        let addr = SocketAddr::from(([127, 0, 0, 1], ETCD_PORT));
        let page = in_netns(self.hosts.hub.name(), || http_get(addr, "/metrics"))?;
        sample(&page, "etcd_debugging_mvcc_watcher_total").map(|v| v as u64)
    }

    /// Writes version `n` of the shared profile's rules; returns the time
    /// taken just before the request left the client, and the write's revision.
    pub fn write_shared_profile(&self, n: usize) -> (SystemTime, i64) {
        let (key, value) = data::shared_profile_rules(n);
        self.client()
            .run(move |mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    let sent = SystemTime::now();
                    let resp = c.put(key, value, None).await?;
                    Ok((sent, resp.header().map_or(0, |h| h.revision())))
                }
            })
            .unwrap_or_else(|e| panic!("etcd put of the shared profile: {e}"))
    }

    /// Waits until every agent's last apply covers `revision`, and returns
    /// each agent's apply time. An agent that applied a later revision
    /// (nothing else is written) or that is not there by `deadline` is an error.
    pub fn wait_applied(
        &self,
        revision: i64,
        deadline: Duration,
    ) -> Result<Vec<SystemTime>, String> {
        let addrs = self.metrics_addrs();
        in_netns(self.hosts.hub.name(), || {
            let mut applied: Vec<Option<SystemTime>> = vec![None; addrs.len()];
            let give_up = Instant::now() + deadline;
            loop {
                for (a, addr) in addrs.iter().enumerate() {
                    if applied[a].is_some() {
                        continue;
                    }
                    let Some((rev, at)) = last_apply(*addr) else {
                        continue;
                    };
                    if rev > revision {
                        return Err(format!("agent {a} applied revision {rev}, past {revision}"));
                    }
                    if rev == revision {
                        applied[a] = Some(at);
                    }
                }
                if applied.iter().all(Option::is_some) {
                    return Ok(applied.into_iter().flatten().collect());
                }
                if Instant::now() >= give_up {
                    let missing = applied.iter().filter(|a| a.is_none()).count();
                    return Err(format!(
                        "{missing} agents did not apply revision {revision} in {deadline:?}"
                    ));
                }
                std::thread::sleep(POLL_PAUSE);
            }
        })
    }

    /// Kills every proxy at once (SIGKILL) and waits until every agent
    /// says it lost etcd (`margay_datastore_connected` 0) within `deadline`.
    pub fn kill_proxies(&mut self, deadline: Duration) -> Result<(), String> {
        for mut child in self.proxies.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let addrs = self.metrics_addrs();
        in_netns(self.hosts.hub.name(), || {
            let give_up = Instant::now() + deadline;
            let mut connected: Vec<SocketAddr> = addrs;
            while !connected.is_empty() {
                if Instant::now() >= give_up {
                    return Err(format!(
                        "{} agents still connected after {deadline:?}",
                        connected.len()
                    ));
                }
                std::thread::sleep(POLL_PAUSE);
                connected.retain(|addr| metric(*addr, "margay_datastore_connected") != Some(0.0));
            }
            Ok(())
        })
    }

    /// Starts the proxies of `mode` again on their ports.
    pub fn restart_proxies(&mut self, mode: Mode) {
        for k in 0..mode.proxies() {
            self.start_proxy(k);
        }
    }

    /// Full lists every agent took since it started other than its first
    /// (`margay_datastore_resyncs_total` of every reason but `startup`).
    pub fn relists(&self) -> Result<u64, String> {
        let addrs = self.metrics_addrs();
        in_netns(self.hosts.hub.name(), || {
            let mut total = 0.0;
            for addr in addrs {
                let page =
                    http_get(addr, "/metrics").ok_or(format!("agent at {addr} does not answer"))?;
                total += page
                    .lines()
                    .filter(|l| {
                        l.starts_with("margay_datastore_resyncs_total{")
                            && !l.contains("\"startup\"")
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>();
            }
            Ok(total as u64)
        })
    }

    /// The last lines of agent `a`'s log.
    pub fn agent_log_tail(&self, a: usize, lines: usize) -> String {
        let log =
            std::fs::read_to_string(self.dir.join(format!("agent-{a}.log"))).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn metrics_addrs(&self) -> Vec<SocketAddr> {
        self.hosts
            .agents
            .iter()
            .map(AgentHost::metrics_addr)
            .collect()
    }

    fn client(&self) -> &NsEtcd {
        self.client
            .as_ref()
            .unwrap_or_else(|| panic!("no etcd client"))
    }

    fn start_etcd(&mut self) {
        let client_urls = format!("http://{HUB_IP}:{ETCD_PORT},http://127.0.0.1:{ETCD_PORT}");
        let data = format!("--data-dir={}", self.dir.join("etcd-data").display());
        let mut cmd = self.hosts.hub.command(&[
            ETCD_BIN,
            "--name=fanout",
            &data,
            &format!("--listen-client-urls={client_urls}"),
            &format!("--advertise-client-urls=http://{HUB_IP}:{ETCD_PORT}"),
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=fanout=http://127.0.0.1:2380",
            "--logger=zap",
            "--log-outputs=stderr",
        ]);
        remove_env_with_prefix(&mut cmd, "ETCD");
        self.etcd = Some(spawn_logged(cmd, &self.dir.join("etcd.log")));
        self.wait_listening("etcd", SocketAddr::from((HUB_IP, ETCD_PORT)));
    }

    fn start_proxy(&mut self, k: usize) {
        let port = PROXY_BASE_PORT + k as u16;
        let data = format!(
            "--data-dir={}",
            self.dir.join(format!("proxy-{k}")).display()
        );
        let mut cmd = self.hosts.hub.command(&[
            ETCD_BIN,
            "grpc-proxy",
            "start",
            &format!("--endpoints=127.0.0.1:{ETCD_PORT}"),
            &format!("--listen-addr={HUB_IP}:{port}"),
            &data,
        ]);
        remove_env_with_prefix(&mut cmd, "ETCD");
        let log = self.dir.join(format!("proxy-{k}.log"));
        self.proxies.push(spawn_logged(cmd, &log));
        self.wait_listening("etcd grpc-proxy", SocketAddr::from((HUB_IP, port)));
    }

    fn wait_listening(&self, what: &str, addr: SocketAddr) {
        let listening = in_netns(self.hosts.hub.name(), || {
            let give_up = Instant::now() + START_TIMEOUT;
            while Instant::now() < give_up {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        assert!(
            listening,
            "{what} not listening on {addr} after {START_TIMEOUT:?}"
        );
    }

    /// Writes every pair, 100 to a transaction.
    fn put_all(&self, kvs: &[(String, String)]) {
        self.client()
            .put_many(kvs)
            .unwrap_or_else(|e| panic!("loading the datastore: {e}"));
    }

    fn spawn_agent(&mut self, a: usize, etcd_port: u16) {
        let host = &self.hosts.agents[a];
        let bin = margay_bin();
        let config = self.hosts.dir.join("margay.toml");
        let (bin, config) = (bin.to_string_lossy(), config.to_string_lossy());
        let mut cmd = host.ns.command(&[
            &bin,
            "run",
            "--config",
            &config,
            "--hostname",
            &data::agent_hostname(a),
            "--etcd-endpoints",
            &format!("http://{HUB_IP}:{etcd_port}"),
            "--dataplane",
            "none",
            "--inter-host-routes",
            "none",
            "--metrics-addr",
            &host.metrics_addr().to_string(),
            "--log-format",
            "json",
            "--log-level",
            "warn",
        ]);
        remove_env_with_prefix(&mut cmd, "MARGAY");
        self.agents
            .push(spawn_logged(cmd, &self.dir.join(format!("agent-{a}.log"))));
    }

    fn wait_all_ready(&mut self) {
        let addrs = self.metrics_addrs();
        let give_up = Instant::now() + READY_TIMEOUT;
        let mut waiting: Vec<usize> = (0..addrs.len()).collect();
        while !waiting.is_empty() {
            if let Some(a) = waiting.iter().copied().find(|&a| self.agent_exited(a)) {
                panic!("agent {a} exited:\n{}", self.agent_log_tail(a, 20));
            }
            assert!(
                Instant::now() < give_up,
                "{} agents not ready after {READY_TIMEOUT:?}; agent {}:\n{}",
                waiting.len(),
                waiting[0],
                self.agent_log_tail(waiting[0], 20)
            );
            waiting = in_netns(self.hosts.hub.name(), || {
                waiting
                    .into_iter()
                    .filter(|&a| {
                        !http_get(addrs[a], "/readyz").is_some_and(|r| {
                            r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200")
                        })
                    })
                    .collect()
            });
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn agent_exited(&mut self, a: usize) -> bool {
        !matches!(self.agents[a].try_wait(), Ok(None))
    }
}

impl Drop for FanoutRun<'_> {
    fn drop(&mut self) {
        self.client = None;
        let children = self
            .agents
            .iter_mut()
            .chain(self.proxies.iter_mut())
            .chain(self.etcd.iter_mut());
        for child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_logged(mut cmd: Command, log: &std::path::Path) -> Child {
    let out = File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("cannot clone a log handle: {e}"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// `ip -n <ns> args`, panicking on failure.
fn ip(ns: &TestNetns, args: &[&str]) {
    let mut all = vec!["-n", ns.name()];
    all.extend_from_slice(args);
    ip_cmd(&all);
}

fn ip_cmd(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
