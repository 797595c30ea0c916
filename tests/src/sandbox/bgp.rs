//! The BGP topology of the sandbox ([`ClusterBuilder::bgp`]): two subnets
//! joined by a router, BIRD on the router and on every host, and the BGP keys
//! calicoctl would write.
//!
//! - subnet A is the usual fabric bridge `br0` (`192.0.2.0/24`), subnet B a
//!   second bridge `br1` in the fabric namespace ([`SUBNET_B`]). Odd hosts
//!   (`h1`, `h3`, …) sit on A (`192.0.2.1x`), even ones on B
//!   (`203.0.113.1x`), each with a default route via the router's address on
//!   its subnet; etcd (on A) has a route back to B.
//! - the router is the outside namespace ([`ROUTER_IP`] on A, [`ROUTER_IP_B`]
//!   on B), forwarding, and running its own BIRD configured here, not by
//!   margay: AS [`ROUTER_AS`], every host an iBGP route-reflector client
//!   (next hop kept), importing everything, exporting what BGP learned, and
//!   writing it to its kernel. Short timers (connect retry 1 s, error wait
//!   1-5 s) so a restarted host is back within seconds.
//! - every host runs `bird -f -c <dir>/bird.conf -s <dir>/bird.ctl -P
//!   <dir>/bird.pid`, started on a placeholder (router id + device protocol)
//!   as the Debian unit would, and margay with `--inter-host-routes bgp
//!   --bird-config <dir>/bird.conf --bird-socket <dir>/bird.ctl`.
//!
//! Everything runs inside the cluster's namespaces and is killed with it.

use super::*;

/// Where the BGP keys live.
pub const BGP_PREFIX: &str = "/calico/bgp/v1";
/// The router's (and the cluster's) AS number.
pub const ROUTER_AS: u32 = 64511;
/// The router's address on subnet B.
pub const ROUTER_IP_B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The second subnet.
pub const SUBNET_B: &str = "203.0.113.0/24";
/// How long a BIRD may take to open its control socket.
const BIRD_START_TIMEOUT: Duration = Duration::from_secs(10);

/// How a BGP cluster starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpOptions {
    /// `global/node_mesh` (default true).
    pub node_mesh: bool,
    /// Whether the router is written as a global peer of every host
    /// (`global/peer_v4/192.0.2.1`, default true).
    pub router_peer: bool,
    /// Whether every host's BIRD starts with the cluster (default true;
    /// false to start them later with [`Cluster::start_bird`]).
    pub start_bird: bool,
    /// Whether the agents get `--inter-host-routes bgp` (default true;
    /// false to leave the mode to the datastore's `InterHostRoutes`).
    pub mode_on_command_line: bool,
}

impl Default for BgpOptions {
    fn default() -> Self {
        BgpOptions {
            node_mesh: true,
            router_peer: true,
            start_bird: true,
            mode_on_command_line: true,
        }
    }
}

impl Cluster {
    /// Subnet B: bridge `br1`, the router's second leg, forwarding, and
    /// etcd's way back.
    pub(super) fn add_subnet_b_and_router(&mut self) {
        self.fabric
            .exec_ok(&["ip", "link", "add", "br1", "type", "bridge"]);
        self.fabric.exec_ok(&["ip", "link", "set", "br1", "up"]);
        attach_to_bridge(
            &self.fabric,
            "br1",
            &self.outside,
            "p-out-b",
            "eth1",
            ROUTER_IP_B,
        );
        self.outside.sysctl("net.ipv4.ip_forward", "1");
        self.etcd_ns.exec_ok(&[
            "ip",
            "route",
            "add",
            SUBNET_B,
            "via",
            &ROUTER_IP.to_string(),
        ]);
    }

    /// Writes the BGP keys, starts the router's BIRD and (per `options`) a
    /// BIRD on every host, each on its placeholder file.
    pub(super) fn start_bgp(&mut self, options: &BgpOptions) {
        self.put(
            &format!("{BGP_PREFIX}/global/as_num"),
            &ROUTER_AS.to_string(),
        );
        self.set_node_mesh(options.node_mesh);
        if options.router_peer {
            self.put_global_peer(&ROUTER_IP.to_string(), &ROUTER_AS.to_string());
        }
        let dir = self.dir.join("bird-router");
        create_dir(&dir);
        let neighbours: Vec<Ipv4Addr> = self.hosts.iter().map(|h| h.ip).collect();
        write_file(&dir.join("bird.conf"), &router_config(&neighbours));
        let child = spawn_bird(&self.outside, &dir, "router");
        self.router_bird = Some(child);
        wait_bird_socket(&dir.join("bird.ctl"), "router");
        let names: Vec<String> = self.hosts.iter().map(|h| h.name.clone()).collect();
        for name in &names {
            create_dir(&self.bird_dir(name));
            let placeholder = placeholder_config(self.host(name).ip);
            write_file(&self.bird_config_path(name), &placeholder);
            if options.start_bird {
                self.start_bird(name);
            }
        }
    }

    /// The flags that put `host`'s agent in BGP mode (none outside BGP
    /// clusters).
    pub(super) fn bgp_agent_args(&self, host: &str) -> Vec<String> {
        let Some(options) = &self.bgp else {
            return Vec::new();
        };
        let mut args = Vec::new();
        if options.mode_on_command_line {
            args.extend(["--inter-host-routes".to_owned(), "bgp".to_owned()]);
        }
        args.extend([
            "--bird-config".to_owned(),
            self.bird_config_path(host).to_string_lossy().into_owned(),
            "--bird-socket".to_owned(),
            self.bird_socket_path(host).to_string_lossy().into_owned(),
        ]);
        args
    }

    // --- host BIRDs --------------------------------------------------------

    /// The directory of `host`'s BIRD (config, socket, pid file, log).
    pub fn bird_dir(&self, host: &str) -> PathBuf {
        self.dir.join(format!("bird-{host}"))
    }

    /// The file margay owns and `host`'s BIRD reads.
    pub fn bird_config_path(&self, host: &str) -> PathBuf {
        self.bird_dir(host).join("bird.conf")
    }

    /// `host`'s BIRD control socket.
    pub fn bird_socket_path(&self, host: &str) -> PathBuf {
        self.bird_dir(host).join("bird.ctl")
    }

    /// The current text of `host`'s BIRD configuration file.
    pub fn bird_config(&self, host: &str) -> String {
        std::fs::read_to_string(self.bird_config_path(host)).unwrap_or_default()
    }

    /// Replaces `host`'s BIRD configuration file by hand.
    pub fn write_bird_config(&self, host: &str, text: &str) {
        write_file(&self.bird_config_path(host), text);
    }

    /// Starts BIRD on `host` on whatever its file holds, and waits until its
    /// control socket answers.
    pub fn start_bird(&mut self, host: &str) {
        let dir = self.bird_dir(host);
        let h = self.host_mut(host);
        assert!(h.bird.is_none(), "BIRD on {host} already running");
        let child = spawn_bird(&h.ns, &dir, host);
        h.bird = Some(child);
        let socket = self.bird_socket_path(host);
        let running = eventually(BIRD_START_TIMEOUT, || {
            crate::bird::answers(&socket) || !self.bird_alive(host)
        }) && self.bird_alive(host);
        assert!(
            running,
            "BIRD on {host} did not start:\n{}",
            self.bird_log_tail(host, 20)
        );
    }

    /// Kills `host`'s BIRD at once (SIGKILL), as a crash would.
    pub fn kill_bird(&mut self, host: &str) {
        if let Some(mut child) = self.host_mut(host).bird.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn bird_alive(&self, host: &str) -> bool {
        let Some(child) = self.host(host).bird.as_ref() else {
            return false;
        };
        // `try_wait` needs `&mut`; a zero signal asks the kernel instead.
        i32::try_from(child.id())
            .is_ok_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
    }

    /// `birdc -s <socket> <args>` against `host`'s BIRD: its output (an
    /// error line when BIRD does not answer).
    pub fn birdc(&self, host: &str, args: &[&str]) -> String {
        let socket = self.bird_socket_path(host);
        crate::bird::birdc(&socket, args)
    }

    /// `birdc` against the router's BIRD.
    pub fn router_birdc(&self, args: &[&str]) -> String {
        let socket = self.dir.join("bird-router/bird.ctl");
        crate::bird::birdc(&socket, args)
    }

    /// Names of `host`'s BGP sessions that are Established.
    pub fn established_sessions(&self, host: &str) -> Vec<String> {
        established(&self.birdc(host, &["show", "protocols"]))
    }

    /// Names of the router's BGP sessions that are Established (`h1`, …).
    pub fn router_established_sessions(&self) -> Vec<String> {
        established(&self.router_birdc(&["show", "protocols"]))
    }

    /// `ip -4 route show <ip>/32` in the router (empty when there is none).
    pub fn router_route(&self, ip: Ipv4Addr) -> String {
        self.outside
            .exec_ok(&["ip", "-4", "route", "show", &format!("{ip}/32")])
            .trim()
            .to_owned()
    }

    /// True when `host`'s kernel has a route to workload `wl` that BIRD put
    /// there (`proto bird`).
    pub fn has_bgp_route_to(&self, host: &str, wl: &str) -> bool {
        self.route(host, self.workload(wl).ip)
            .contains("proto bird")
    }

    /// True when the router's kernel has a BGP route to workload `wl`, via
    /// the fabric address of the host it lives on.
    pub fn router_has_route_to(&self, wl: &str) -> bool {
        let w = self.workload(wl);
        let via = format!("via {} ", self.host(&w.host).ip);
        let route = self.router_route(w.ip);
        route.contains("proto bird") && route.contains(&via)
    }

    /// `margay status --bird-socket <socket>` run inside `host`: its
    /// standard output and error.
    pub fn margay_status(&self, host: &str) -> String {
        let bin = margay_bin().to_string_lossy().into_owned();
        let socket = self.bird_socket_path(host).to_string_lossy().into_owned();
        let etcd = format!("http://{ETCD_IP}:2379");
        let mut cmd = self.host(host).ns.command(&[
            &bin,
            "status",
            "--etcd-endpoints",
            &etcd,
            "--bird-socket",
            &socket,
        ]);
        crate::etcd::remove_env_with_prefix(&mut cmd, "MARGAY");
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run margay status: {e}"));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    // --- BGP keys ----------------------------------------------------------

    /// Writes `<BGP_PREFIX>/<key>` = `value` (a plain string).
    pub fn put_bgp(&self, key: &str, value: &str) {
        self.put(&format!("{BGP_PREFIX}/{key}"), value);
    }

    /// Deletes `<BGP_PREFIX>/<key>`.
    pub fn delete_bgp(&self, key: &str) {
        self.delete(&format!("{BGP_PREFIX}/{key}"));
    }

    /// Turns the node-to-node mesh on or off.
    pub fn set_node_mesh(&self, enabled: bool) {
        self.put_json(
            &format!("{BGP_PREFIX}/global/node_mesh"),
            &json!({ "enabled": enabled }),
        );
    }

    /// Writes a global IPv4 peer as calicoctl does (`ip` is used verbatim
    /// in the key and the document, so tests can write hostile ones).
    pub fn put_global_peer(&self, ip: &str, as_num: &str) {
        self.put_json(
            &format!("{BGP_PREFIX}/global/peer_v4/{ip}"),
            &json!({ "ip": ip, "as_num": as_num }),
        );
    }

    /// The last `n` lines of `host`'s BIRD log.
    pub fn bird_log_tail(&self, host: &str, n: usize) -> String {
        log_tail(&self.bird_dir(host).join("bird.log"), n)
    }

    /// Every BIRD's sessions, the router's routes and the BIRD log tails.
    pub fn bgp_debug_dump(&self) -> String {
        let mut out = format!(
            "--- router protocols:\n{}--- router routes:\n{}--- router BIRD log:\n{}\n",
            self.router_birdc(&["show", "protocols"]),
            String::from_utf8_lossy(&self.outside.exec(&["ip", "-4", "route"]).stdout),
            log_tail(&self.dir.join("bird-router/bird.log"), 15),
        );
        for h in &self.hosts {
            out.push_str(&format!(
                "--- {} protocols:\n{}--- {} BIRD log:\n{}\n",
                h.name,
                self.birdc(&h.name, &["show", "protocols"]),
                h.name,
                self.bird_log_tail(&h.name, 15),
            ));
        }
        out
    }
}

/// The router's BIRD configuration: an iBGP route reflector for `hosts`.
fn router_config(hosts: &[Ipv4Addr]) -> String {
    let mut text = format!(
        "log stderr all;\n\
         router id {ROUTER_IP};\n\
         protocol device {{ }}\n\
         protocol direct {{ ipv4; interface \"eth*\"; }}\n\
         protocol kernel {{\n  ipv4 {{ import none; export where source = RTS_BGP; }};\n}}\n\
         template bgp host {{\n  local {ROUTER_IP} as {ROUTER_AS};\n  multihop;\n  rr client;\n  \
         connect delay time 1;\n  connect retry time 1;\n  error wait time 1, 5;\n  \
         ipv4 {{ import all; export where source = RTS_BGP; }};\n}}\n"
    );
    for ip in hosts {
        let name = ip.to_string().replace('.', "_");
        text.push_str(&format!(
            "protocol bgp host_{name} from host {{ neighbor {ip} as {ROUTER_AS}; }}\n"
        ));
    }
    text
}

/// What a host's BIRD starts on before margay writes the real file.
fn placeholder_config(ip: Ipv4Addr) -> String {
    format!("log stderr all;\nrouter id {ip};\nprotocol device {{ }}\n")
}

/// Starts `bird` in the foreground inside `ns`, on `<dir>/bird.conf`, with
/// its socket and pid file in `dir` and its output in `<dir>/bird.log`.
fn spawn_bird(ns: &TestNetns, dir: &Path, what: &str) -> Child {
    let path = |f: &str| dir.join(f);
    let args = crate::bird::bird_command(&path("bird.conf"), &path("bird.ctl"), &path("bird.pid"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_logged(
        ns.command(&args),
        &dir.join("bird.log"),
        "BIRD",
        &format!("BIRD on {what}"),
    )
}

fn wait_bird_socket(socket: &Path, what: &str) {
    wait_for(
        &format!("BIRD on {what} to answer on its socket"),
        BIRD_START_TIMEOUT,
        || crate::bird::answers(socket),
    );
}

/// The names of the BGP protocols in `show protocols` output that are up
/// and Established.
fn established(protocols: &str) -> Vec<String> {
    protocols
        .lines()
        .filter(|l| l.contains(" BGP ") && l.contains("Established"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn create_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
