//! Dual-stack workloads for the sandbox: an IPv6 /128 beside the IPv4 /32,
//! as the Calico CNI plugin sets them up, and probes over IPv6 (TCP and
//! `ping -6`).
//!
//! The workload's IPv6 next hop is the host-side veth's link-local address
//! (what the CNI plugin reads and routes via). Duplicate address detection
//! would hold every new address "tentative" for a second or more, so the
//! workload's /128 is added `nodad` and host namespaces create interfaces
//! with `accept_dad=0`: the test then waits on the address being usable,
//! never on a fixed sleep. Host namespaces forward IPv6 (the machine's
//! setting, like `ip_forward` for IPv4).

use std::net::{Ipv6Addr, SocketAddr};

use super::{
    eventually, in_netns, tcp_connects, wait_for, Cluster, Probe, CONVERGE_TIMEOUT, PROBE_TIMEOUT,
    WORKLOAD_PORTS,
};

impl Cluster {
    /// Like [`Cluster::add_workload`], plus `ip6`/128 on the workload's
    /// `eth0`, a default IPv6 route via the host side's link-local address,
    /// and listeners on `ip6` too. The endpoint document then carries it in
    /// `ipv6_nets`.
    pub fn add_workload_v6(&mut self, name: &str, host: &str, ip: &str, ip6: &str) {
        let ip6: Ipv6Addr = ip6.parse().unwrap_or_else(|e| panic!("bad ip6 {ip6}: {e}"));
        {
            let hns = self.host(host).ns();
            hns.sysctl("net.ipv6.conf.all.forwarding", "1");
            hns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        }
        self.add_workload(name, host, ip);
        let iface = self.workload(name).iface().to_owned();
        let link_local = self.wait_link_local(host, &iface);
        let wl = self.workload(name).ns();
        wl.exec_ok(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{ip6}/128"),
            "dev",
            "eth0",
            "nodad",
        ]);
        wl.exec_ok(&[
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            &link_local.to_string(),
            "dev",
            "eth0",
        ]);
        let ns_name = wl.name().to_owned();
        for port in WORKLOAD_PORTS {
            self.listeners
                .listen(&ns_name, name, SocketAddr::from((ip6, port)), true);
        }
        if let Some(w) = self.workloads.get_mut(name) {
            w.ip6 = Some(ip6);
        }
    }

    /// The (usable, not tentative) link-local address of `iface` in `host`.
    fn wait_link_local(&self, host: &str, iface: &str) -> Ipv6Addr {
        let ns = self.host(host).ns();
        let mut found = None;
        wait_for(
            &format!("a link-local address on {iface}"),
            CONVERGE_TIMEOUT,
            || {
                let text = ns.exec_ok(&[
                    "ip", "-6", "-o", "addr", "show", "dev", iface, "scope", "link",
                ]);
                found = text
                    .lines()
                    .filter(|l| !l.contains("tentative"))
                    .find_map(|l| l.split_whitespace().skip_while(|w| *w != "inet6").nth(1))
                    .and_then(|cidr| cidr.split('/').next())
                    .and_then(|a| a.parse().ok());
                found.is_some()
            },
        );
        found.unwrap_or_else(|| panic!("no link-local address on {iface}"))
    }

    /// Workload `name`'s IPv6 address. Panics if it has none.
    pub fn ip6(&self, name: &str) -> Ipv6Addr {
        self.workload(name)
            .ip6
            .unwrap_or_else(|| panic!("workload {name} has no IPv6 address"))
    }

    /// True when workload `from` opens a TCP connection to `to`'s IPv6
    /// address on `port`.
    pub fn can_connect6(&self, from: &str, to: &str, port: u16) -> bool {
        let addr = SocketAddr::from((self.ip6(to), port));
        in_netns(self.workload(from).ns().name(), || {
            tcp_connects(addr, PROBE_TIMEOUT)
        })
    }

    /// True when one `ping -6` from workload `from` to `to` is answered.
    pub fn can_ping6(&self, from: &str, to: &str) -> bool {
        let ip = self.ip6(to).to_string();
        self.workload(from)
            .ns()
            .exec(&["ping", "-6", "-n", "-q", "-c1", "-W1", &ip])
            .status
            .success()
    }

    /// [`Cluster::assert_matrix`] over IPv6: waits until every probe, made
    /// to the destination's IPv6 address, matches; panics listing the ones
    /// that do not.
    pub fn assert_matrix_v6(&self, probes: &[Probe]) {
        let mut wrong: Vec<Probe> = Vec::new();
        let ok = eventually(CONVERGE_TIMEOUT, || {
            wrong = std::thread::scope(|scope| {
                let handles: Vec<_> = probes
                    .iter()
                    .map(|p| scope.spawn(move || (p, self.can_connect6(&p.from, &p.to, p.port))))
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().ok())
                    .filter(|(p, seen)| p.allowed != *seen)
                    .map(|(p, _)| p.clone())
                    .collect()
            });
            wrong.is_empty()
        });
        if !ok {
            let lines: Vec<String> = wrong
                .iter()
                .map(|p| {
                    let want = if p.allowed { "allow" } else { "deny" };
                    format!(
                        "  {} -> [{}]:{} expected {want}",
                        p.from,
                        self.ip6(&p.to),
                        p.port
                    )
                })
                .collect();
            panic!(
                "IPv6 connectivity did not converge in {CONVERGE_TIMEOUT:?}:\n{}\n{}",
                lines.join("\n"),
                self.debug_dump()
            );
        }
    }

    /// `ip -6 route show <ip6>/128` in `host` (empty when there is none).
    pub fn route6(&self, host: &str, ip6: Ipv6Addr) -> String {
        self.host(host)
            .ns()
            .exec_ok(&["ip", "-6", "route", "show", &format!("{ip6}/128")])
            .trim()
            .to_owned()
    }
}
