//! A real, throw-away etcd cluster of several members for failover tests.
//!
//! [`EtcdCluster::new`] starts `n` `etcd` processes (found on `PATH`), each
//! on two free `127.0.0.1` ports with its own data directory, forming one
//! cluster, and returns once every member answers `GET /health` (which
//! needs a leader). [`EtcdCluster::kill`] kills one member at once, as a
//! crash would; the others keep serving while a quorum is left. Dropping the
//! value kills every member and removes the directories, even when the test
//! panics. [`EtcdCluster::new_in_netns`] runs the members inside a network
//! namespace, on its loopback (for an agent run there). Elections are tuned short (heartbeat 50 ms, election 500 ms) so a
//! leader's death costs well under a second.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::etcd::{
    free_port_pair, http_get, remove_env_with_prefix, scratch_root, ETCDCTL_BIN, ETCD_BIN,
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// How long the members may take to elect a leader and become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One member: its ports, data directory and process.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

/// Several etcd processes forming one cluster on loopback.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    netns: Option<String>,
}

impl EtcdCluster {
    /// Starts an `n`-member cluster and waits until every member is
    /// healthy. Panics (with the members' log tails) if it cannot.
    pub fn new(n: usize) -> Self {
        Self::start(n, None)
    }

    /// Like [`Self::new`], inside namespace `netns` (reached from the test
    /// through [`Self::etcdctl`]). Needs root.
    pub fn new_in_netns(n: usize, netns: &str) -> Self {
        Self::start(n, Some(netns.to_owned()))
    }

    fn start(n: usize, netns: Option<String>) -> Self {
        let id = COUNTER.fetch_add(1, Ordering::Relaxed);
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("m{i}");
                let dir =
                    scratch_root().join(format!("mgy-etcdc-{}-{id}-{name}", std::process::id()));
                std::fs::create_dir_all(&dir)
                    .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
                let (client_port, peer_port) = free_port_pair();
                Member {
                    name,
                    client_port,
                    peer_port,
                    dir,
                    child: None,
                }
            })
            .collect();
        let mut cluster = EtcdCluster { members, netns };
        let initial = cluster.initial_cluster();
        for i in 0..n {
            let child = cluster.spawn(i, &initial, id);
            cluster.members[i].child = Some(child);
        }
        cluster.wait_healthy();
        cluster
    }

    /// `m0=http://127.0.0.1:p0,m1=...`, the same for every member.
    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&self, i: usize, initial: &str, id: u32) -> Child {
        let m = &self.members[i];
        let log = std::fs::File::create(m.dir.join("etcd.log"))
            .unwrap_or_else(|e| panic!("cannot create etcd log: {e}"));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone log handle: {e}"));
        let mut cmd = self.command(ETCD_BIN);
        remove_env_with_prefix(&mut cmd, "ETCD");
        let client = m.client_url();
        let peer = m.peer_url();
        cmd.arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", m.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={initial}"))
            .arg(format!(
                "--initial-cluster-token=mgy-{}-{id}",
                std::process::id()
            ))
            .arg("--initial-cluster-state=new")
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {ETCD_BIN}: {e}"))
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let healthy = self.members.iter().all(|m| self.member_healthy(m));
            if healthy {
                return;
            }
            let exited = self.members.iter_mut().any(|m| {
                m.child
                    .as_mut()
                    .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
            });
            if exited || Instant::now() >= deadline {
                let tails: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| format!("--- {}:\n{}", m.name, m.log_tail()))
                    .collect();
                panic!(
                    "etcd cluster not healthy (exited: {exited}):\n{}",
                    tails.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn member_healthy(&self, m: &Member) -> bool {
        if self.netns.is_none() {
            return http_get(m.client_port, "/health")
                .is_some_and(|body| body.contains("\"health\":\"true\""));
        }
        self.command(ETCDCTL_BIN)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", m.client_url()))
            .args(["--command-timeout=1s", "endpoint", "health"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `program`, run inside the cluster's namespace when it has one.
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

    /// Every member's client URL, in member order.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// The index of the member serving `url`.
    pub fn member_of(&self, url: &str) -> Option<usize> {
        self.members.iter().position(|m| m.client_url() == url)
    }

    /// Kills member `i` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `etcdctl` (API v3) against the members still running.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(Member::client_url)
            .collect();
        self.command(ETCDCTL_BIN)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", live.join(",")))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {ETCDCTL_BIN}: {e}"))
    }

    /// Puts `key` = `value` through the live members, retrying (1 s a try)
    /// for up to `within`: a write sent just after a leader's death can be
    /// lost with it until the others have elected a new one.
    pub fn put_retrying(&self, key: &str, value: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let out = self.etcdctl(&["--command-timeout=1s", "put", key, value]);
            if out.status.success() {
                return;
            }
            if Instant::now() >= deadline {
                // Say what the live members think, so a cluster that could
                // not elect a leader is told apart from anything of ours.
                let status = self.etcdctl(&["--command-timeout=1s", "endpoint", "status"]);
                panic!(
                    "etcdctl put {key} failed for {within:?}: {}\nlive members: {}{}",
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&status.stdout),
                    String::from_utf8_lossy(&status.stderr)
                );
            }
        }
    }

    /// Runs `etcdctl` and panics unless it succeeds; returns its stdout.
    pub fn etcdctl_ok(&self, args: &[&str]) -> String {
        crate::etcd::etcdctl_stdout(args, self.etcdctl(args))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for m in &self.members {
            let _ = std::fs::remove_dir_all(&m.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_members_replicate_and_survive_one_death() {
        let mut cluster = EtcdCluster::new(3);
        let dirs: Vec<PathBuf> = cluster.members.iter().map(|m| m.dir.clone()).collect();
        cluster.etcdctl_ok(&["put", "/mgy/c", "1"]);
        cluster.kill(0);
        cluster.put_retrying("/mgy/c", "2", Duration::from_secs(10));
        let got = cluster.etcdctl_ok(&["get", "--print-value-only", "/mgy/c"]);
        assert_eq!(got.trim(), "2");
        drop(cluster);
        assert!(dirs.iter().all(|d| !d.exists()), "data dirs left behind");
    }
}
