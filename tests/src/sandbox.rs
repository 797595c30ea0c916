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
//! With [`ClusterBuilder::bgp`] the hosts route between each other over BGP
//! instead (see the `bgp` module): a second subnet behind the outside
//! namespace, which becomes a router running its own BIRD, and a BIRD beside
//! every agent.
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

mod agents;
mod bgp;
mod binary;
mod datastore;
mod grpc_proxy;
mod host_endpoints;
mod listeners;
mod ns_etcd;
mod probes;
mod setup;
#[cfg(test)]
mod tests;
mod to_host;
mod util;
mod v6;

pub use bgp::{BgpOptions, BGP_PREFIX, ROUTER_AS, ROUTER_IP_B, SUBNET_B};
pub use binary::margay_bin;
pub use grpc_proxy::GRPC_PROXY_PORT;
pub use host_endpoints::{
    line_changes, reach, Origin, Reach, FABRIC_IFACE, OUTSIDE_V6, SIDE_IFACE, SIDE_PEER_IP,
};
use listeners::Listeners;
pub(crate) use ns_etcd::NsEtcd;
use util::*;
pub use util::{allow_all_rules, eventually, fixture, in_netns, wait_for};

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
    /// The host's BIRD, in BGP clusters.
    bird: Option<Child>,
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
    bgp: Option<BgpOptions>,
    via_grpc_proxy: bool,
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

    /// Starts etcd's own `grpc-proxy` in the etcd namespace (port
    /// [`GRPC_PROXY_PORT`]) and points every agent at it instead of etcd.
    pub fn through_grpc_proxy(mut self) -> Self {
        self.via_grpc_proxy = true;
        self
    }

    /// Routes between hosts over BGP (see [`BgpOptions`]): odd hosts on the
    /// first subnet, even ones on the second, the outside namespace their
    /// router running BIRD, every host running BIRD and margay in `bgp` mode.
    pub fn bgp(mut self, options: BgpOptions) -> Self {
        self.bgp = Some(options);
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
    bgp: Option<BgpOptions>,
    via_grpc_proxy: bool,
    dir: PathBuf,
    // Field order is drop order: clients and threads first, then processes,
    // then namespaces (TestNetns kills anything left inside).
    client: NsEtcd,
    listeners: Listeners,
    etcd: Option<Child>,
    grpc_proxy: Option<Child>,
    router_bird: Option<Child>,
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
            if self.bgp.is_some() {
                eprintln!("{}", self.bgp_debug_dump());
            }
        }
        for h in &mut self.hosts {
            for mut child in [h.agent.take(), h.bird.take()].into_iter().flatten() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for mut child in [
            self.router_bird.take(),
            self.grpc_proxy.take(),
            self.etcd.take(),
        ]
        .into_iter()
        .flatten()
        {
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
