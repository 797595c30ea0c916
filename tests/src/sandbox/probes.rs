//! Observing the data path: TCP and ping probes between workloads and the
//! outside, the connectivity matrix, routes, firewall dumps, sysctls and the
//! debug dump printed on failure.

use super::*;

impl Cluster {
    // --- probing ---------------------------------------------------------

    pub(super) fn target(&self, to: &str) -> Ipv4Addr {
        if to == "outside" {
            OUTSIDE_IP
        } else {
            self.workload(to).ip
        }
    }

    pub(super) fn target_port(to: &str, port: u16) -> u16 {
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

impl PingRun {
    /// True while ping is still sending (it has not reached its count).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

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
