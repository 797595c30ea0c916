//! Host endpoints in the sandbox: their datastore keys and status, TCP
//! servers on a host's own addresses, probes between the outside namespace
//! (a machine on the fabric), hosts and workloads, a second link between a
//! host and the outside namespace, and moving an address between a host's
//! interfaces.
//!
//! A probe only says "blocked" when the handshake went unanswered: a refused
//! connection means the packet reached the host's stack (no listener), which
//! says nothing about the firewall, so it fails the test instead.

use std::net::Ipv6Addr;

use super::*;

/// The outside namespace's address on a host's second link
/// ([`Cluster::add_side_link`]).
pub const SIDE_PEER_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 1);
/// The host-side name of the second link.
pub const SIDE_IFACE: &str = "eth1";
/// The host's interface on the fabric (its uplink; etcd is reached over it).
pub const FABRIC_IFACE: &str = "eth0";
/// The outside namespace's IPv6 address on the fabric, once
/// [`Cluster::add_fabric_v6`] gave the fabric IPv6 (`/64`).
pub const OUTSIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);

/// Where a probe starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The outside namespace: a machine on the fabric (`192.0.2.1`), also
    /// at the far end of every side link.
    Outside,
    /// A host namespace, by host name (`h1`).
    Host(String),
    /// A workload namespace, by workload name.
    Workload(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Outside => f.write_str("outside"),
            Origin::Host(h) => write!(f, "host {h}"),
            Origin::Workload(w) => write!(f, "workload {w}"),
        }
    }
}

/// One expected fact: a TCP connection from `from` to `to` is accepted or
/// dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// Where the connection starts.
    pub from: Origin,
    /// Where it goes.
    pub to: SocketAddr,
    /// True when it must be accepted.
    pub allowed: bool,
}

/// `from` -> `to` must connect (`allowed`) or be dropped (`!allowed`).
pub fn reach(from: Origin, to: SocketAddr, allowed: bool) -> Reach {
    Reach { from, to, allowed }
}

/// Connects to `addr` within `timeout`: true when accepted (then waits for
/// the sandbox listener to record and close it, like the workload probes),
/// false when unanswered or unreachable. Panics on a refused connection.
fn handshake_answered(addr: SocketAddr, timeout: Duration) -> bool {
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(mut stream) => {
            if stream.set_read_timeout(Some(timeout)).is_ok() {
                let mut byte = [0u8; 1];
                let _ = stream.read(&mut byte);
            }
            true
        }
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            panic!("{addr} refused the connection: no listener there (a test bug)")
        }
        Err(_) => false,
    }
}

impl Cluster {
    // --- datastore -------------------------------------------------------

    /// `/calico/v1/host/<host>/endpoint/<id>`.
    pub fn host_endpoint_key(&self, host: &str, id: &str) -> String {
        format!("{PREFIX}/host/{host}/endpoint/{id}")
    }

    /// Writes host endpoint `id` of `host`.
    pub fn put_host_endpoint(&self, host: &str, id: &str, doc: &Value) {
        self.put_json(&self.host_endpoint_key(host, id), doc);
    }

    /// Deletes host endpoint `id` of `host`.
    pub fn delete_host_endpoint(&self, host: &str, id: &str) {
        self.delete(&self.host_endpoint_key(host, id));
    }

    /// The status document margay reports for host endpoint `id` of `host`
    /// (`/calico/felix/v1/host/<host>/endpoint/<id>`), if any.
    pub fn host_endpoint_status(&self, host: &str, id: &str) -> Option<String> {
        let key = format!("/calico/felix/v1/host/{host}/endpoint/{id}");
        self.get_prefix(&key).remove(&key)
    }

    // --- servers and probes ----------------------------------------------

    /// Starts a TCP server in `host`'s namespace on `addr`, one of its
    /// addresses (the socket stays when the address moves to another of the
    /// host's interfaces). Its peers are in [`Cluster::peers`] under
    /// `host-<host>`, as for [`Cluster::listen_on_host`].
    pub fn listen_on_host_addr(&self, host: &str, addr: SocketAddr) {
        let ns = self.host(host).ns().name().to_owned();
        self.listeners
            .listen(&ns, &format!("host-{host}"), addr, true);
    }

    /// The namespace a probe from `origin` runs in.
    fn origin_netns(&self, origin: &Origin) -> String {
        match origin {
            Origin::Outside => self.outside.name().to_owned(),
            Origin::Host(h) => self.host(h).ns().name().to_owned(),
            Origin::Workload(w) => self.workload(w).ns().name().to_owned(),
        }
    }

    /// True when a TCP connection from `from` to `to` is accepted within
    /// [`PROBE_TIMEOUT`]; false when dropped. Panics when refused.
    pub fn can_reach(&self, from: &Origin, to: SocketAddr) -> bool {
        let ns = self.origin_netns(from);
        in_netns(&ns, || handshake_answered(to, PROBE_TIMEOUT))
    }

    /// Probes every fact at once; returns those observed otherwise.
    pub fn check_reach(&self, facts: &[Reach]) -> Vec<Reach> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = facts
                .iter()
                .map(|r| scope.spawn(move || (r, self.can_reach(&r.from, r.to))))
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok())
                .filter(|(r, seen)| r.allowed != *seen)
                .map(|(r, _)| r.clone())
                .collect()
        })
    }

    /// Waits (up to `timeout`) until one round of probes matches every fact;
    /// false, with the last mismatches in `wrong`, otherwise.
    pub fn reach_within(&self, facts: &[Reach], timeout: Duration, wrong: &mut Vec<Reach>) -> bool {
        eventually(timeout, || {
            *wrong = self.check_reach(facts);
            wrong.is_empty()
        })
    }

    /// Waits until one round of probes matches every fact; panics listing
    /// the mismatches, the hosts' firewalls and log tails after
    /// [`CONVERGE_TIMEOUT`].
    pub fn assert_reach(&self, facts: &[Reach]) {
        let mut wrong = Vec::new();
        if !self.reach_within(facts, CONVERGE_TIMEOUT, &mut wrong) {
            panic!(
                "connectivity did not converge in {CONVERGE_TIMEOUT:?}:\n{}\n{}",
                self.describe_reach(&wrong),
                self.host_firewall_dump()
            );
        }
    }

    /// One line per fact: what was expected and what was seen.
    pub fn describe_reach(&self, wrong: &[Reach]) -> String {
        wrong
            .iter()
            .map(|r| {
                format!(
                    "  {} -> {} expected {} but {}",
                    r.from,
                    r.to,
                    if r.allowed { "allow" } else { "drop" },
                    if r.allowed { "dropped" } else { "connected" }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every host's firewall, addresses and log tail, for failures.
    pub fn host_firewall_dump(&self) -> String {
        let mut out = String::new();
        for h in &self.hosts {
            let addrs = h.ns.exec(&["ip", "-br", "addr"]);
            out.push_str(&format!(
                "--- {} addresses:\n{}--- {} firewall:\n{}\n",
                h.name,
                String::from_utf8_lossy(&addrs.stdout),
                h.name,
                self.firewall_dump(&h.name)
            ));
        }
        out.push_str(&self.debug_dump());
        out
    }

    // --- links and addresses ---------------------------------------------

    /// Adds a second link between `host` ([`SIDE_IFACE`]) and the outside
    /// namespace (`side-<host>`, holding [`SIDE_PEER_IP`]/32), with a
    /// route to each other's end, no address on the host side: the
    /// outside reaches an address of the host over it once
    /// [`Self::place_host_address`] puts one there.
    pub fn add_side_link(&self, host: &str) {
        let outside_if = format!("side-{host}");
        let ns = self.host(host).ns();
        veth_pair(ns, SIDE_IFACE, &self.outside, &outside_if);
        let peer = format!("{SIDE_PEER_IP}/32");
        self.outside
            .exec_ok(&["ip", "addr", "add", &peer, "dev", &outside_if]);
        ns.exec_ok(&["ip", "route", "add", &peer, "dev", SIDE_IFACE]);
    }

    /// Puts `addr`/32 on `host`'s interface `iface` ([`FABRIC_IFACE`] or
    /// [`SIDE_IFACE`]), removing it from whichever interface held it, and
    /// points the outside namespace's route for it at that link.
    pub fn place_host_address(&self, host: &str, addr: Ipv4Addr, iface: &str) {
        let h = self.host(host);
        let cidr = format!("{addr}/32");
        let held =
            h.ns.exec_ok(&["ip", "-o", "-4", "addr", "show", "to", &cidr]);
        for old in held.lines().filter_map(|l| l.split_whitespace().nth(1)) {
            h.ns.exec_ok(&["ip", "addr", "del", &cidr, "dev", old]);
        }
        h.ns.exec_ok(&["ip", "addr", "add", &cidr, "dev", iface]);
        let host_ip = h.ip.to_string();
        let outside_if = format!("side-{host}");
        let peer = SIDE_PEER_IP.to_string();
        let route: Vec<&str> = if iface == FABRIC_IFACE {
            vec!["ip", "route", "replace", &cidr, "via", &host_ip]
        } else {
            vec![
                "ip",
                "route",
                "replace",
                &cidr,
                "dev",
                &outside_if,
                "src",
                &peer,
            ]
        };
        self.outside.exec_ok(&route);
    }
}

impl Cluster {
    /// Gives the fabric IPv6: [`OUTSIDE_V6`] on the outside namespace and
    /// `2001:db8:2::<last octet of its IPv4>`/64 on `host`'s uplink (both
    /// without duplicate address detection, so usable at once). Returns the
    /// host's address.
    pub fn add_fabric_v6(&self, host: &str) -> Ipv6Addr {
        let h = self.host(host);
        let octet = u16::from(h.ip.octets()[3]);
        let ip = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, octet);
        for (ns, addr) in [(&self.outside, OUTSIDE_V6), (&h.ns, ip)] {
            let cidr = format!("{addr}/64");
            ns.exec_ok(&["ip", "-6", "addr", "replace", &cidr, "dev", "eth0", "nodad"]);
        }
        ip
    }

    /// [`Cluster::firewall_dump`] of `host` (with iptables, plus
    /// `ip6tables-save`) without what changes by itself: packet counters
    /// (`counter packets N bytes M`, `[n:m]`), ipset memory sizes, comments.
    pub fn firewall_dump_without_counters(&self, host: &str) -> String {
        let mut dump = self.firewall_dump(host);
        if self.dataplane == Dataplane::Iptables {
            dump.push_str(&self.host(host).ns.exec_ok(&["ip6tables-save"]));
        }
        dump.lines()
            .filter(|l| !l.starts_with('#') && !l.trim_start().starts_with("Size in memory"))
            .map(strip_counter)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The lines only `before` has (`- `) and only `after` has (`+ `).
pub fn line_changes(before: &str, after: &str) -> String {
    let only = |sign: &str, a: &str, b: &str| -> Vec<String> {
        let others: Vec<&str> = b.lines().collect();
        a.lines()
            .filter(|l| !others.contains(l))
            .map(|l| format!("{sign} {l}"))
            .collect()
    };
    let mut lines = only("-", before, after);
    lines.extend(only("+", after, before));
    lines.join("\n")
}

/// `counter packets N bytes M` becomes `counter`; a chain line of
/// iptables-save (`:NAME POLICY [n:m]`) loses its `[n:m]`.
fn strip_counter(line: &str) -> String {
    if line.starts_with(':') {
        if let Some(at) = line.find(" [") {
            return line[..at].to_owned();
        }
    }
    const COUNTER: &str = "counter packets ";
    let Some(at) = line.find(COUNTER) else {
        return line.to_owned();
    };
    // "<n> bytes <m>" then the rest of the rule.
    let mut rest = line[at + COUNTER.len()..].splitn(4, ' ').skip(3);
    format!("{}counter {}", &line[..at], rest.next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_stripped_from_firewall_lines() {
        assert_eq!(
            strip_counter("\t\tiifname \"eth0\" counter packets 12 bytes 3400 goto margay-hi-eth0"),
            "\t\tiifname \"eth0\" counter goto margay-hi-eth0"
        );
        assert_eq!(strip_counter("counter packets 0 bytes 0"), "counter ");
        assert_eq!(strip_counter(":OUTPUT ACCEPT [12:960]"), ":OUTPUT ACCEPT");
        let plain = "-A INPUT -j margay-input";
        assert_eq!(strip_counter(plain), plain);
    }

    #[test]
    fn line_changes_name_both_sides() {
        assert_eq!(line_changes("a\nb\n", "b\nc\n"), "- a\n+ c");
        assert_eq!(line_changes("a\n", "a\n"), "");
    }
}
