//! Shared by the agent's integration tests that run the real binary: start
//! `margay run` inside a test namespace with its log (stderr) in a file,
//! wait for a condition (printing the log when it times out), signal it and
//! stop it. The agent is killed when the handle drops, however the test ends.
//!
//! Each test file includes this with `mod common;` and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use margay_tests::netns::TestNetns;
use nix::sys::signal::Signal;

/// The `margay` binary cargo built for these tests.
pub const MARGAY: &str = env!("CARGO_BIN_EXE_margay");
/// How long [`Agent::wait_until`] waits.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running `margay run`, killed on drop if still alive.
pub struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    /// Starts `margay run ARGS` inside `ns`. Stdout is discarded and stderr
    /// (the log) appended to `log`, so a restarted agent continues the same
    /// file. `MARGAY_LOG` is removed so the config decides the log level, and
    /// `MARGAY_REQUIRE_ROOT` (the test harness's switch) is not passed on.
    pub fn run(ns: &TestNetns, args: &[&str], log: &Path) -> Agent {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", log.display()));
        let mut argv = vec![MARGAY, "run"];
        argv.extend_from_slice(args);
        let child = ns
            .command(&argv)
            .env_remove("MARGAY_LOG")
            .env_remove("MARGAY_REQUIRE_ROOT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("margay starts");
        Agent {
            child,
            log: log.to_owned(),
        }
    }

    /// `margay run` for host `h1` against `etcd_url` on `backend`, metrics
    /// on 127.0.0.1:9091, its log in `log`.
    pub fn run_h1(ns: &TestNetns, etcd_url: &str, backend: &str, log: &Path) -> Agent {
        let args = [
            "--hostname",
            "h1",
            "--etcd-endpoints",
            etcd_url,
            "--metrics-addr",
            "127.0.0.1:9091",
            "--dataplane",
            backend,
        ];
        Agent::run(ns, &args, log)
    }

    /// The log so far (empty when there is none yet).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to [`WAIT`] for `done`, polling every 100 ms; panics with
    /// `what` and the agent's log on timeout.
    pub fn wait_until(&self, what: &str, done: impl FnMut() -> bool) {
        self.poll_until(
            what,
            Instant::now() + WAIT,
            Duration::from_millis(100),
            done,
        );
    }

    /// Like [`Agent::wait_until`], for a test that bounds the wait itself:
    /// until `deadline`, polling every 50 ms.
    pub fn wait_until_by(&self, what: &str, deadline: Instant, done: impl FnMut() -> bool) {
        self.poll_until(what, deadline, Duration::from_millis(50), done);
    }

    /// Waits up to [`WAIT`] for a log line containing `text`.
    pub fn wait_for_log_line(&self, text: &str) {
        self.wait_until(&format!("the log line {text:?}"), || {
            self.log().lines().any(|l| l.contains(text))
        });
    }

    fn poll_until(
        &self,
        what: &str,
        deadline: Instant,
        every: Duration,
        mut done: impl FnMut() -> bool,
    ) {
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; margay log:\n{}",
                self.log()
            );
            std::thread::sleep(every);
        }
    }

    /// Sends `sig` to the agent.
    pub fn signal(&self, sig: Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, sig).expect("signal");
    }

    /// Panics (with the log) when the agent has exited.
    pub fn assert_alive(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "margay died:\n{}",
            self.log()
        );
    }

    /// SIGTERM, then the exit status (panics if it is not out within [`WAIT`]).
    pub fn stop(mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "margay ignored SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
