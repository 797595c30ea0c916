//! A real, throw-away etcd server for tests.
//!
//! [`EtcdServer::new`] starts `etcd` (found on `PATH`) on two free `127.0.0.1` ports
//! (client and peer) with a fresh data directory, and returns once the server
//! answers `GET /health`. [`EtcdServer::stop`] and [`EtcdServer::start`] take
//! the same server down and up again on the same ports and data, so tests can
//! cut an agent off from its datastore and bring it back. Dropping the value
//! kills the process and removes the directory, even when the test panics.
//!
//! [`CutoffProxy`] sits between a client and the server and can cut the
//! client off (and restore it) while the server keeps running.
//!
//! Nothing here uses the network beyond loopback. The data directory lives on
//! `/dev/shm` when available (fsync there is free), else in the temp dir.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod certs;
mod ports;
mod proxy;
#[cfg(test)]
mod tests;

use certs::make_certs;
use ports::{bind_any, local_port};
pub(crate) use ports::{free_port_pair, http_get, scratch_root};
pub use proxy::CutoffProxy;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The etcd server binary, looked up on `PATH` (Debian: `etcd-server`).
pub const ETCD_BIN: &str = "etcd";
/// The etcdctl binary, looked up on `PATH`.
pub const ETCDCTL_BIN: &str = "etcdctl";

/// Removes every variable of the caller's environment starting with
/// `prefix` from `cmd`: etcd reads `ETCD_*` as flags and margay `MARGAY_*` as
/// settings, and a test's own environment must not reach the process it starts.
pub fn remove_env_with_prefix(cmd: &mut Command, prefix: &str) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(prefix) {
            cmd.env_remove(key);
        }
    }
}

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
    tls: Option<TlsPaths>,
    netns: Option<String>,
    /// Largest request etcd accepts (`--max-request-bytes`), when not its default.
    max_request_bytes: Option<usize>,
    /// How often etcd tells watchers that asked for it how far they are
    /// (`--experimental-watch-progress-notify-interval`), when not its 10 min.
    progress_notify_interval: Option<Duration>,
}

/// PEM files of a TLS-enabled test server: a throw-away CA, and a client
/// certificate signed by it (the server requires client certificates).
#[derive(Debug, Clone)]
pub struct TlsPaths {
    /// The CA certificate that signed the server and client certificates.
    pub ca: PathBuf,
    /// The CA's key (to sign more certificates, see [`crate::certs`]).
    pub ca_key: PathBuf,
    /// A client certificate etcd accepts.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl EtcdServer {
    /// Starts a new server on free loopback ports and waits until it is
    /// healthy. Panics (with etcd's log tail) if it cannot be started.
    pub fn new() -> Self {
        Self::start_new(false)
    }

    /// Like [`Self::new`], but serving `https://` only, with a throw-away CA
    /// and client-certificate authentication (see [`Self::tls`]). Needs
    /// `openssl` on `PATH`.
    pub fn new_tls() -> Self {
        Self::start_new(true)
    }

    /// [`Self::new_tls`] and [`Self::new_in_netns`] at once: an `https://`
    /// server with client-certificate authentication on the loopback of
    /// namespace `netns`. Needs root and `openssl`.
    pub fn new_tls_in_netns(netns: &str) -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            let mut server = Self::unstarted();
            server.netns = Some(netns.to_owned());
            server.tls = Some(make_certs(&server.dir));
            match server.try_start() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("cannot start etcd with TLS in {netns}: {last_error}");
    }

    /// Like [`Self::new`], but inside the network namespace `netns` (as made
    /// by `ip netns add`, e.g. a [`crate::netns::TestNetns`]): it listens on
    /// that namespace's loopback, so an agent run there with
    /// `ip netns exec` reaches it at [`Self::client_url`]. The test process
    /// itself talks to it through [`Self::etcdctl`] ([`Self::client`] cannot
    /// reach it). Needs root.
    pub fn new_in_netns(netns: &str) -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            let mut server = Self::unstarted();
            server.netns = Some(netns.to_owned());
            match server.try_start() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("cannot start etcd in {netns}: {last_error}");
    }

    /// Like [`Self::new`], but accepting requests (a put, a transaction) of
    /// up to `bytes` instead of etcd's default 1.5 MiB.
    pub fn with_max_request_bytes(bytes: usize) -> Self {
        Self::start_configured(|server| server.max_request_bytes = Some(bytes))
    }

    /// Like [`Self::new`], but sending watch progress notifications every
    /// `interval` instead of every 10 minutes.
    pub fn with_progress_notify_interval(interval: Duration) -> Self {
        Self::start_configured(|server| server.progress_notify_interval = Some(interval))
    }

    /// A new server, changed by `configure` before it starts.
    fn start_configured(configure: impl Fn(&mut Self)) -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            let mut server = Self::unstarted();
            configure(&mut server);
            match server.try_start() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("cannot start etcd: {last_error}");
    }

    fn start_new(tls: bool) -> Self {
        // A free port found by binding port 0 can be taken by someone else
        // before etcd binds it; try a few fresh pairs before giving up.
        let mut last_error = String::new();
        for _ in 0..3 {
            let mut server = Self::unstarted();
            if tls {
                server.tls = Some(make_certs(&server.dir));
            }
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
            tls: None,
            netns: None,
            max_request_bytes: None,
            progress_notify_interval: None,
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The CA and client certificate of a server made by [`Self::new_tls`].
    pub fn tls(&self) -> Option<&TlsPaths> {
        self.tls.as_ref()
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
        let mut cmd = self.command(ETCDCTL_BIN);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.client_url()));
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.cert.display()))
                .arg(format!("--key={}", tls.key.display()));
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {ETCDCTL_BIN}: {e}"))
    }

    /// Runs `etcdctl` and panics unless it succeeds; returns its stdout.
    pub fn etcdctl_ok(&self, args: &[&str]) -> String {
        etcdctl_stdout(args, self.etcdctl(args))
    }

    /// `program`, run inside this server's namespace when it has one.
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, program]);
                cmd
            }
            None => Command::new(program),
        }
    }

    /// Connects an etcd v3 client to this server. Panics for a server in a
    /// namespace (use [`Self::etcdctl`] there).
    pub async fn client(&self) -> etcd_client::Client {
        if let Some(ns) = &self.netns {
            panic!("etcd runs in namespace {ns}; use etcdctl()");
        }
        let opts = self.tls.as_ref().map(|tls| {
            let read = |p: &Path| {
                std::fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
            };
            let config = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca)))
                .identity(etcd_client::Identity::from_pem(
                    read(&tls.cert),
                    read(&tls.key),
                ));
            etcd_client::ConnectOptions::new().with_tls(config)
        });
        etcd_client::Client::connect([self.client_url()], opts)
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
        let mut cmd = self.command(ETCD_BIN);
        // etcd reads ETCD_* variables as flags; never let the test's own
        // environment (e.g. ETCD_ENDPOINTS) reach it.
        remove_env_with_prefix(&mut cmd, "ETCD");
        cmd.arg("--name=mgy-test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=mgy-test={peer}"))
            .arg("--initial-cluster-state=new");
        if let Some(bytes) = self.max_request_bytes {
            cmd.arg(format!("--max-request-bytes={bytes}"));
        }
        if let Some(interval) = self.progress_notify_interval {
            cmd.arg(format!(
                "--experimental-watch-progress-notify-interval={}ms",
                interval.as_millis()
            ));
        }
        if let Some(tls) = &self.tls {
            let certs = self.dir.join("certs");
            cmd.arg(format!(
                "--cert-file={}",
                certs.join("server.pem").display()
            ))
            .arg(format!(
                "--key-file={}",
                certs.join("server-key.pem").display()
            ))
            .arg(format!("--trusted-ca-file={}", tls.ca.display()))
            .arg("--client-cert-auth=true");
        }
        cmd.arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("cannot spawn {ETCD_BIN}: {e}"))
    }

    fn healthy(&self) -> bool {
        if self.tls.is_some() || self.netns.is_some() {
            return self
                .etcdctl(&["--command-timeout=1s", "endpoint", "health"])
                .status
                .success();
        }
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

/// The stdout of a finished `etcdctl args` run; panics with its stderr
/// unless it succeeded.
pub(crate) fn etcdctl_stdout(args: &[&str], out: std::process::Output) -> String {
    if !out.status.success() {
        panic!(
            "etcdctl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}
