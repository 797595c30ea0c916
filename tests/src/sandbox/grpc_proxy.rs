//! etcd's own `grpc-proxy` in the sandbox: started in the etcd namespace on
//! [`GRPC_PROXY_PORT`] of the fabric address, in front of etcd's loopback
//! listener, so agents built with [`ClusterBuilder::through_grpc_proxy`]
//! reach etcd only through it. Killing it cuts them off while the test keeps
//! writing to etcd; starting it again (same address) lets them back in.

use super::*;

/// The port the proxy listens on, on [`ETCD_IP`].
pub const GRPC_PROXY_PORT: u16 = 23790;

/// How long a started proxy may take to accept connections.
const PROXY_START_TIMEOUT: Duration = Duration::from_secs(15);

impl Cluster {
    /// The etcd URL the agents are given.
    pub(super) fn agent_etcd_url(&self) -> String {
        if self.via_grpc_proxy {
            format!("http://{ETCD_IP}:{GRPC_PROXY_PORT}")
        } else {
            format!("http://{ETCD_IP}:2379")
        }
    }

    /// Starts `etcd grpc-proxy start` (forwarding to etcd's loopback
    /// listener) and waits until it accepts connections. Does nothing when
    /// it already runs.
    pub fn start_grpc_proxy(&mut self) {
        if self.grpc_proxy.is_some() {
            return;
        }
        let data = self.dir.join("grpc-proxy");
        let listen = format!("--listen-addr={ETCD_IP}:{GRPC_PROXY_PORT}");
        let data = format!("--data-dir={}", data.display());
        let cmd = self.etcd_ns.command(&[
            ETCD_BIN,
            "grpc-proxy",
            "start",
            "--endpoints=127.0.0.1:2379",
            &listen,
            &data,
        ]);
        let log = self.dir.join("grpc-proxy.log");
        self.grpc_proxy = Some(spawn_logged(cmd, &log, "ETCD", "etcd grpc-proxy"));
        let addr = SocketAddr::from((ETCD_IP, GRPC_PROXY_PORT));
        let ns = self.etcd_ns.name().to_owned();
        wait_for("etcd grpc-proxy to listen", PROXY_START_TIMEOUT, || {
            in_netns(&ns, || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
        });
    }

    /// Kills the proxy at once (SIGKILL): every connection through it drops.
    pub fn kill_grpc_proxy(&mut self) {
        if let Some(mut child) = self.grpc_proxy.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The proxy's log (what it printed on both outputs).
    pub fn grpc_proxy_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("grpc-proxy.log")).unwrap_or_default()
    }
}
