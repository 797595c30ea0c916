//! Traffic from workloads to their host itself: a TCP server in a host
//! namespace on the host's own address, and probes from workloads to it,
//! for the `DefaultEndpointToHostAction` checks.

use std::net::SocketAddr;

use super::{eventually, Cluster, CONVERGE_TIMEOUT, PROBE_TIMEOUT};

impl Cluster {
    /// Starts a TCP server on `host`'s own address (its `bird_ip`), `port`.
    pub fn listen_on_host(&self, host: &str, port: u16) {
        let h = self.host(host);
        let addr = SocketAddr::from((h.ip(), port));
        self.listeners
            .listen(h.ns().name(), &format!("host-{host}"), addr, true);
    }

    /// True when workload `from` opens a TCP connection to `host`'s own
    /// address on `port`.
    pub fn can_connect_host(&self, from: &str, host: &str, port: u16) -> bool {
        let addr = SocketAddr::from((self.host(host).ip(), port));
        self.can_connect_addr(from, addr, PROBE_TIMEOUT)
    }

    /// Waits until every `(workload, allowed)` sees `host`:`port` as
    /// expected in one round; panics with the agents' state otherwise.
    pub fn assert_to_host(&self, host: &str, port: u16, expect: &[(&str, bool)]) {
        let mut wrong = Vec::new();
        let ok = eventually(CONVERGE_TIMEOUT, || {
            wrong = expect
                .iter()
                .filter(|(from, allowed)| self.can_connect_host(from, host, port) != *allowed)
                .map(|(from, allowed)| {
                    format!("  {from} -> {host}:{port} expected allowed={allowed}")
                })
                .collect();
            wrong.is_empty()
        });
        assert!(
            ok,
            "workload -> host verdicts did not converge in {CONVERGE_TIMEOUT:?}:\n{}\n{}",
            wrong.join("\n"),
            self.debug_dump()
        );
    }
}
