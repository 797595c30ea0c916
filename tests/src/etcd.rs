//! A real, throw-away etcd server for tests.
//!
//! [`EtcdServer::new`] starts `/usr/bin/etcd` on two free `127.0.0.1` ports
//! (client and peer) with a fresh data directory, and returns once the server
//! answers `GET /health`. [`EtcdServer::stop`] and [`EtcdServer::start`] take
//! the same server down and up again on the same ports and data, so tests can
//! cut an agent off from its datastore and bring it back. Dropping the value
//! kills the process and removes the directory, even when the test panics.
//!
//! Nothing here uses the network beyond loopback. The data directory lives on
//! `/dev/shm` when available (fsync there is free), else in the temp dir.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Where the etcd binary lives (tests rely on the distribution package).
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// Where the etcdctl binary lives.
pub const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";

/// How long to wait for etcd to become healthy after a start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One etcd server process with its own ports and data directory.
#[derive(Debug)]
pub struct EtcdServer {
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts a new server on free loopback ports and waits until it is
    /// healthy. Panics (with etcd's log tail) if it cannot be started.
    pub fn new() -> Self {
        // A free port found by binding port 0 can be taken by someone else
        // before etcd binds it; try a few fresh pairs before giving up.
        let mut last_error = String::new();
        for _ in 0..3 {
            let mut server = Self::unstarted();
            match server.try_start() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("cannot start etcd: {last_error}");
    }

    fn unstarted() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = scratch_root().join(format!("mgy-etcd-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let (client_port, peer_port) = free_port_pair();
        EtcdServer {
            dir,
            client_port,
            peer_port,
            child: None,
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The scratch directory (holds `data/` and `etcd.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True while the process started by this value is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the server again (same ports, same data) after [`Self::stop`],
    /// and waits until healthy. Does nothing when already running.
    pub fn start(&mut self) {
        if self.is_running() {
            return;
        }
        if let Err(e) = self.try_start() {
            panic!("cannot restart etcd: {e}");
        }
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after a timeout)
    /// and waits for it to exit. Data and ports are kept for [`Self::start`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `etcdctl` (API v3) against this server with `args`.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        Command::new(ETCDCTL_BIN)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.client_url()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {ETCDCTL_BIN}: {e}"))
    }

    /// Runs `etcdctl` and panics unless it succeeds; returns its stdout.
    pub fn etcdctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        if !out.status.success() {
            panic!(
                "etcdctl {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Connects an etcd v3 client to this server.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.client_url()], None)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to etcd at {}: {e}", self.client_url()))
    }

    /// The last lines of etcd's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn try_start(&mut self) -> Result<(), String> {
        let child = self.spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if !self.is_running() {
                self.child = None;
                return Err(format!("etcd exited early:\n{}", self.log_tail(20)));
            }
            if self.healthy() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        Err(format!("etcd not healthy in time:\n{}", self.log_tail(20)))
    }

    fn spawn(&self) -> Result<Child, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open etcd log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot clone etcd log handle: {e}"))?;
        let client = self.client_url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(ETCD_BIN);
        // etcd reads ETCD_* variables as flags; never let the test's own
        // environment (e.g. ETCD_ENDPOINTS) reach it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD") {
                cmd.env_remove(key);
            }
        }
        cmd.arg("--name=mgy-test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=mgy-test={peer}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("cannot spawn {ETCD_BIN}: {e}"))
    }

    fn healthy(&self) -> bool {
        http_get(self.client_port, "/health")
            .map(|body| body.contains("\"health\":\"true\""))
            .unwrap_or(false)
    }
}

impl Default for EtcdServer {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `/dev/shm` when writable (tmpfs: fsync is free), else the temp dir.
fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && nix::unistd::access(shm, nix::unistd::AccessFlags::W_OK).is_ok() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Two distinct free loopback ports (both held while choosing).
fn free_port_pair() -> (u16, u16) {
    let a = bind_any();
    let b = bind_any();
    (local_port(&a), local_port(&b))
}

fn bind_any() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("cannot bind loopback: {e}"))
}

fn local_port(listener: &TcpListener) -> u16 {
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no local address: {e}"))
        .port()
}

/// A minimal HTTP/1.0 GET on loopback; returns the whole response text.
fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stops_restarts_and_cleans_up() {
        let dir;
        {
            let mut etcd = EtcdServer::new();
            dir = etcd.dir().to_path_buf();
            etcd.etcdctl_ok(&["put", "/mgy/a", "1"]);
            let port = etcd.client_port();

            etcd.stop();
            assert!(!etcd.is_running());
            assert!(
                etcd.etcdctl(&["--command-timeout=1s", "get", "/mgy/a"])
                    .status
                    .code()
                    != Some(0)
            );

            etcd.start();
            assert_eq!(etcd.client_port(), port, "restart must keep the port");
            let got = etcd.etcdctl_ok(&["get", "--print-value-only", "/mgy/a"]);
            assert_eq!(got.trim(), "1", "restart must keep the data");
        }
        assert!(!dir.exists(), "data dir {} left behind", dir.display());
    }

    #[test]
    fn two_servers_do_not_share_anything() {
        let a = EtcdServer::new();
        let b = EtcdServer::new();
        assert_ne!(a.client_url(), b.client_url());
        a.etcdctl_ok(&["put", "/mgy/only-a", "x"]);
        let got = b.etcdctl_ok(&["get", "--print-value-only", "/mgy/only-a"]);
        assert_eq!(got.trim(), "");
    }

    #[tokio::test]
    async fn async_client_connects() {
        let etcd = EtcdServer::new();
        let mut client = etcd.client().await;
        client.put("/mgy/k", "v", None).await.expect("put");
        let resp = client.get("/mgy/k", None).await.expect("get");
        let value = resp.kvs().first().map(|kv| kv.value().to_vec());
        assert_eq!(value.as_deref(), Some(&b"v"[..]));
    }
}
