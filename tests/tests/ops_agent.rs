//! Operations end to end: the real `margay` binary, a real etcd, the agent
//! inside a throw-away network namespace.
//!
//! - `/metrics` is scraped and parsed by the reference OpenMetrics parser
//!   (`prometheus_client.openmetrics.parser`, Debian's python3-prometheus-client);
//!   every contract name is present, and values move: an apply bumps the
//!   apply histogram, a bad key bumps the invalid counters.
//! - With `--log-format json` every line of a run is a JSON object with
//!   `timestamp` and `level`.
//! - systemd notifications reach a `NOTIFY_SOCKET`: READY=1 after the first
//!   apply, STATUS=, WATCHDOG=1 when asked for, STOPPING=1 on SIGTERM.
//! - `margay check` fails with a helpful line when etcd is unreachable and
//!   passes its etcd checks when it is not; `margay status` lists the host.
//!
//! etcd runs in the host's namespace on loopback; the agent reaches it
//! through a small forwarder whose listening socket lives inside the test
//! namespace (created from a thread that entered it), so nothing is added
//! to the host's network namespace.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use margay_tests::etcd::EtcdServer;
use margay_tests::netns::{attach_workload, require_root, TestNetns};
use margay_tests::sandbox::margay_bin;

use margay_tests::contract::METRIC_NAMES as METRICS;

/// Where the agent serves metrics inside its namespace.
const METRICS_PORT: u16 = 9091;
/// How long to wait for the agent to reach a state.
const WAIT: Duration = Duration::from_secs(45);
/// The system Python, which has python3-prometheus-client (a pyenv or venv
/// `python3` first in PATH may not).
const PYTHON: &str = "/usr/bin/python3";

/// Reads OpenMetrics text on stdin with the reference parser and prints
/// `{family: {type, unit, help, samples: [[name, labels, value], ...]}}`.
const PARSER: &str = r#"
import json, math, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out[fam.name] = {"type": fam.type, "unit": fam.unit, "help": fam.documentation,
                     "samples": [[s.name, s.labels, s.value if math.isfinite(s.value) else None]
                                 for s in fam.samples]}
json.dump(out, sys.stdout)
"#;

// ---------------------------------------------------------------- helpers

/// Runs `f` on a thread that entered namespace `ns`; sockets it creates
/// belong to `ns` for their whole life.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let file = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
    })
}

/// Forwards `127.0.0.1:<port>` inside a namespace to `127.0.0.1:<upstream>`
/// in ours. Stops accepting on drop (drop it before the namespace).
struct NsForward {
    ns: String,
    port: u16,
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl NsForward {
    fn new(ns: &TestNetns, upstream: u16) -> Self {
        let listener = in_netns(ns.name(), || TcpListener::bind("127.0.0.1:0"))
            .and_then(|r| r)
            .expect("listen inside the namespace");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(inner) = conn else { continue };
                match TcpStream::connect(("127.0.0.1", upstream)) {
                    Ok(outer) => splice(inner, outer),
                    Err(_) => {
                        let _ = inner.shutdown(Shutdown::Both);
                    }
                }
            }
        });
        NsForward {
            ns: ns.name().to_string(),
            port,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for NsForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let port = self.port;
        // Wake the acceptor from inside the namespace.
        let _ = in_netns(&self.ns, move || TcpStream::connect(("127.0.0.1", port)));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn splice(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    std::thread::spawn(move || pump(a, b2));
    std::thread::spawn(move || pump(b, a2));
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// A file in a scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mgy-ops-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `margay` command with a clean environment: only PATH, an empty config
/// file (so a host's /etc/margay/margay.toml is never read) and `vars`.
fn margay_command(
    scratch: &Scratch,
    ns: Option<&TestNetns>,
    args: &[&str],
    vars: &[(&str, String)],
) -> Command {
    let config = scratch.path("empty.toml");
    std::fs::write(&config, "").expect("write empty config");
    let bin = margay_bin();
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns.name()]).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MARGAY_CONFIG", &config);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// A running agent whose output lines are collected.
struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Agent {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start margay: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(collect_lines(out, lines.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(collect_lines(err, lines.clone()));
        }
        Agent {
            child,
            lines,
            readers,
        }
    }

    fn output(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let lines = self.output();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("margay exited ({status}):\n{}", self.log_tail());
        }
    }

    /// SIGTERM, wait (killing after 15 s), then all output lines.
    fn stop(mut self) -> (Option<i32>, Vec<String>) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut code = None;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                code = status.code();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if code.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (code, self.output())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_lines(
    pipe: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Ok(mut lines) = into.lock() {
                lines.push(line);
            }
        }
    })
}

/// GET `path` from the agent's metrics port inside `ns`; the body on 200.
fn http_get(ns: &str, path: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
    let mut stream = in_netns(ns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1))
    })
    .ok()?
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: margay\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// One parsed scrape: family name -> parsed family.
struct Scrape {
    families: BTreeMap<String, serde_json::Value>,
}

impl Scrape {
    /// Parses OpenMetrics `text` with the reference parser; panics on any
    /// syntax or consistency error it reports.
    fn parse(text: &str) -> Self {
        let mut child = Command::new(PYTHON)
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e}"));
        let mut stdin = child.stdin.take().expect("stdin");
        let input = text.to_string();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child.wait_with_output().expect("parser output");
        let _ = writer.join();
        assert!(
            out.status.success(),
            "OpenMetrics parser rejected the scrape ({}):\n{}\n--- scrape ---\n{text}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let families: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("parser JSON");
        Scrape { families }
    }

    /// Every sample as (sample name, labels, value).
    fn samples(&self) -> impl Iterator<Item = (&str, &serde_json::Value, Option<f64>)> {
        self.families.values().flat_map(|f| {
            f["samples"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| Some((s[0].as_str()?, &s[1], s[2].as_f64())))
        })
    }

    /// Sum of the samples named `name` (all label sets).
    fn sum(&self, name: &str) -> f64 {
        self.samples()
            .filter(|(n, _, _)| *n == name)
            .filter_map(|(_, _, v)| v)
            .sum()
    }

    /// The value of the sample `name` with exactly label `key`=`value`.
    fn labelled(&self, name: &str, key: &str, value: &str) -> Option<f64> {
        self.samples()
            .find(|(n, labels, _)| *n == name && labels[key] == value)
            .and_then(|(_, _, v)| v)
    }

    fn has_sample(&self, name: &str) -> bool {
        self.samples().any(|(n, _, _)| n == name)
    }
}

/// Polls `probe` every 200 ms until it returns `Some`, or panics with `what`.
fn wait_for<T>(agent: &mut Agent, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        agent.assert_running();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; agent log:\n{}",
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One host namespace with a workload, an etcd with data for it, and the
/// agent's environment.
struct Fixture {
    scratch: Scratch,
    // Field order is drop order: forwarder before the namespaces.
    forward: NsForward,
    _workload: TestNetns,
    host: TestNetns,
    etcd: EtcdServer,
    hostname: String,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        let etcd = EtcdServer::new();
        let host = TestNetns::new(&format!("{tag}h"));
        let workload = TestNetns::new(&format!("{tag}w"));
        attach_workload(&host, "caliops0", &workload, "10.65.0.2");
        let forward = NsForward::new(&host, etcd.client_port());
        let hostname = format!("ops-{tag}");
        let fx = Fixture {
            scratch: Scratch::new(tag),
            forward,
            _workload: workload,
            host,
            etcd,
            hostname,
        };
        fx.seed();
        fx
    }

    fn put(&self, key: &str, value: &str) {
        self.etcd.etcdctl_ok(&["put", key, value]);
    }

    /// Ready, a profile and one active endpoint on this host.
    fn seed(&self) {
        self.put("/calico/v1/Ready", "true");
        self.put(
            "/calico/v1/policy/profile/ops-prof/rules",
            r#"{"inbound_rules": [{"action": "allow", "protocol": "tcp", "dst_ports": [80]}], "outbound_rules": [{"action": "allow"}]}"#,
        );
        self.put(
            &format!(
                "/calico/v1/host/{}/workload/cni/ops-wl/endpoint/ops-ep",
                self.hostname
            ),
            r#"{"state": "active", "name": "caliops0", "profile_ids": ["ops-prof"], "ipv4_nets": ["10.65.0.2/32"], "ipv6_nets": []}"#,
        );
    }

    fn vars(&self, log_format: &str) -> Vec<(&'static str, String)> {
        vec![
            ("MARGAY_HOSTNAME", self.hostname.clone()),
            ("MARGAY_ETCD_ENDPOINTS", self.forward.url()),
            ("MARGAY_METRICS_ADDR", format!("127.0.0.1:{METRICS_PORT}")),
            ("MARGAY_LOG_FORMAT", log_format.to_string()),
            ("MARGAY_LOG_LEVEL", "info".to_string()),
            ("MARGAY_DATAPLANE", "nftables".to_string()),
            ("MARGAY_REFRESH_INTERVAL", "2".to_string()),
            ("MARGAY_REPORTING_INTERVAL_SECS", "1".to_string()),
            ("MARGAY_REPORTING_TTL_SECS", "10".to_string()),
        ]
    }

    fn start_agent(&self, log_format: &str, extra: &[(&'static str, String)]) -> Agent {
        let mut vars = self.vars(log_format);
        vars.extend_from_slice(extra);
        Agent::spawn(margay_command(
            &self.scratch,
            Some(&self.host),
            &["run"],
            &vars,
        ))
    }

    fn scrape(&self) -> Option<Scrape> {
        http_get(self.host.name(), "/metrics").map(|t| Scrape::parse(&t))
    }
}

fn python_parser_available() {
    let ok = Command::new(PYTHON)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{PYTHON} cannot import prometheus_client: install python3-prometheus-client \
         (scripts/install-deps.sh does)"
    );
}

// ------------------------------------------------------------------ tests

#[test]
fn metrics_parse_and_move_with_applies_and_bad_keys() {
    if !require_root("metrics_parse_and_move_with_applies_and_bad_keys") {
        return;
    }
    python_parser_available();
    let fx = Fixture::new("om");
    let mut agent = fx.start_agent("json", &[]);

    // First apply done: the agent is ready.
    let first = wait_for(&mut agent, "a first successful apply", || {
        fx.scrape()
            .filter(|s| s.sum("margay_last_apply_timestamp_seconds") > 0.0)
    });
    for name in METRICS {
        let family_sample = if first.has_sample(name) {
            true
        } else {
            // Histograms expose _bucket/_count/_sum samples.
            first.has_sample(&format!("{name}_count"))
                && first.has_sample(&format!("{name}_bucket"))
        };
        assert!(family_sample, "metric {name} missing from the scrape");
    }
    for (name, family) in &first.families {
        let help = family["help"].as_str().unwrap_or_default();
        assert!(!help.is_empty(), "{name} has no help text");
    }
    assert_eq!(first.sum("margay_datastore_connected"), 1.0);
    assert_eq!(first.sum("margay_local_endpoints"), 1.0);
    assert!(first.sum("margay_routes") >= 1.0);
    assert!(first.sum("margay_chains") >= 1.0);
    assert!(first.sum("margay_dataplane_apply_duration_seconds_count") >= 1.0);
    assert!(first.sum("margay_dataplane_writes_total") >= 1.0);
    assert!(first.sum("margay_datastore_events_total") >= 3.0);
    assert!(first.sum("margay_datastore_resyncs_total") >= 1.0);
    assert!(first.sum("process_resident_memory_bytes") > 1e6);
    assert!(first.sum("process_open_fds") >= 3.0);
    assert!(first.sum("process_start_time_seconds") > 1e9);
    let version = first.families["margay_build"]["samples"][0][1]["version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!version.is_empty(), "margay_build_info has no version");
    assert_eq!(
        http_get(fx.host.name(), "/readyz").as_deref(),
        Some("ready\n"),
        "/readyz after the first apply"
    );

    // A bad key: counted as invalid, and nothing else breaks.
    fx.put("/calico/v1/policy/profile/ops-bad/rules", "{not json");
    let bad = wait_for(
        &mut agent,
        "margay_invalid_updates_total and margay_invalid_objects to rise",
        || {
            fx.scrape().filter(|s| {
                s.sum("margay_invalid_updates_total") > first.sum("margay_invalid_updates_total")
                    && s.sum("margay_invalid_objects") >= 1.0
            })
        },
    );
    assert!(
        bad.labelled("margay_invalid_objects", "kind", "profile_rules")
            .unwrap_or(0.0)
            >= 1.0
    );

    // A policy change for the endpoint: another apply, with latency observed.
    let applies = bad.sum("margay_dataplane_apply_duration_seconds_count");
    let latencies = bad.sum("margay_update_latency_seconds_count");
    let writes = bad.sum("margay_dataplane_writes_total");
    fx.put(
        "/calico/v1/policy/profile/ops-prof/rules",
        r#"{"inbound_rules": [{"action": "allow", "protocol": "tcp", "dst_ports": [443]}], "outbound_rules": [{"action": "allow"}]}"#,
    );
    let moved = wait_for(&mut agent, "an apply after a profile change", || {
        fx.scrape().filter(|s| {
            s.sum("margay_dataplane_apply_duration_seconds_count") > applies
                && s.sum("margay_update_latency_seconds_count") > latencies
        })
    });
    assert!(
        moved.sum("margay_dataplane_writes_total") > writes,
        "no kernel writes counted"
    );
    assert!(
        moved
            .labelled("margay_datastore_events_total", "kind", "profile_rules")
            .unwrap_or(0.0)
            >= 3.0
    );
    assert_eq!(moved.sum("margay_dataplane_apply_failures_total"), 0.0);

    // Fixing the key repairs it live.
    fx.put(
        "/calico/v1/policy/profile/ops-bad/rules",
        r#"{"inbound_rules": []}"#,
    );
    wait_for(&mut agent, "the invalid gauge to drop", || {
        fx.scrape().filter(|s| {
            s.has_sample("margay_invalid_objects") && s.sum("margay_invalid_objects") == 0.0
        })
    });
    let (_, _) = agent.stop();
}

#[test]
fn json_logs_are_one_object_per_line() {
    if !require_root("json_logs_are_one_object_per_line") {
        return;
    }
    let fx = Fixture::new("js");
    let mut agent = fx.start_agent("json", &[]);
    wait_for(&mut agent, "the first apply", || {
        http_get(fx.host.name(), "/readyz")
    });
    // A flood of bad keys: logged, but rate-limited.
    for n in 0..60 {
        fx.put(&format!("/calico/v1/policy/profile/flood{n}/rules"), "nope");
    }
    wait_for(&mut agent, "the bad keys to be seen", || {
        let scrape = fx.scrape()?;
        (scrape.sum("margay_invalid_objects") >= 60.0).then_some(())
    });
    let (code, lines) = agent.stop();
    assert_eq!(code, Some(0), "SIGTERM must be a clean exit");
    assert!(lines.len() >= 3, "too few log lines: {lines:?}");
    let mut startup = None;
    let mut invalid_lines = 0;
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let ts = v["timestamp"]
            .as_str()
            .unwrap_or_else(|| panic!("no timestamp: {line}"));
        assert!(ts.len() >= 20 && ts.contains('T'), "odd timestamp {ts}");
        let level = v["level"]
            .as_str()
            .unwrap_or_else(|| panic!("no level: {line}"));
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "{line}"
        );
        assert!(v["message"].is_string(), "no message: {line}");
        if v["message"] == "margay starting" {
            startup = Some(v.clone());
        }
        if v["key"].as_str().is_some_and(|k| k.contains("/flood")) {
            invalid_lines += 1;
        }
    }
    let startup = startup.expect("a startup line");
    assert!(startup["version"].is_string(), "{startup}");
    assert_eq!(startup["backend"], "nftables");
    assert!(startup["settings"]
        .as_str()
        .is_some_and(|s| s.contains("hostname=ops-js")));
    assert!(invalid_lines >= 1, "bad keys were never logged");
    assert!(
        invalid_lines <= 20,
        "{invalid_lines} lines for 60 bad keys: not rate-limited"
    );
}

#[test]
fn systemd_notifications_reach_the_socket() {
    if !require_root("systemd_notifications_reach_the_socket") {
        return;
    }
    let mut fx = Fixture::new("sd");
    let socket_path = fx.scratch.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    // `sh` exports its own pid as WATCHDOG_PID, then execs into `ip netns
    // exec`, which execs margay: all three are the same process.
    let mut cmd = Command::new("sh");
    let inner = margay_command(&fx.scratch, Some(&fx.host), &["run"], &[]);
    let mut envs: Vec<(String, String)> = inner
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
        .collect();
    envs.extend(fx.vars("text").into_iter().map(|(k, v)| (k.to_string(), v)));
    envs.push(("NOTIFY_SOCKET".into(), socket_path.display().to_string()));
    envs.push(("WATCHDOG_USEC".into(), "1000000".into()));
    cmd.env_clear()
        .envs(envs)
        .args(["-c", "export WATCHDOG_PID=$$; exec \"$@\"", "sh"])
        .arg(inner.get_program())
        .args(inner.get_args());
    let mut agent = Agent::spawn(cmd);

    let mut messages: Vec<String> = Vec::new();
    let receive = |messages: &mut Vec<String>| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    wait_for(&mut agent, "READY=1 and a WATCHDOG=1", || {
        receive(&mut messages);
        let ready = messages.iter().any(|m| m.lines().any(|l| l == "READY=1"));
        let watchdog = messages
            .iter()
            .any(|m| m.lines().any(|l| l == "WATCHDOG=1"));
        (ready && watchdog).then_some(())
    });
    let ready = messages
        .iter()
        .find(|m| m.contains("READY=1"))
        .expect("ready message");
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("READY without STATUS: {ready:?}"));
    assert!(status.contains("1 endpoints"), "status line {status:?}");
    // READY only once the dataplane was applied.
    assert!(http_get(fx.host.name(), "/readyz").is_some());

    // etcd goes away: `systemctl status` must say so, not "in sync".
    fx.etcd.stop();
    wait_for(
        &mut agent,
        "a STATUS saying the datastore is disconnected",
        || {
            receive(&mut messages);
            messages
                .iter()
                .any(|m| {
                    m.lines()
                        .any(|l| l.starts_with("STATUS=datastore disconnected"))
                })
                .then_some(())
        },
    );
    fx.etcd.start();
    wait_for(&mut agent, "a STATUS saying it is in sync again", || {
        receive(&mut messages);
        let last = messages
            .iter()
            .flat_map(|m| m.lines())
            .filter_map(|l| l.strip_prefix("STATUS="))
            .next_back()?;
        last.starts_with("in sync").then_some(())
    });

    let (code, _) = agent.stop();
    assert_eq!(code, Some(0));
    receive(&mut messages);
    assert!(
        messages
            .iter()
            .any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "no STOPPING=1 in {messages:?}"
    );
    let readies = messages.iter().filter(|m| m.contains("READY=1")).count();
    assert_eq!(readies, 1, "READY=1 must be sent once: {messages:?}");
}

#[test]
fn check_fails_helpfully_when_etcd_is_unreachable() {
    if !require_root("check_fails_helpfully_when_etcd_is_unreachable") {
        return;
    }
    let scratch = Scratch::new("chk");
    let ns = TestNetns::new("chk");
    // Nothing listens on this port inside the fresh namespace.
    let vars = [
        ("MARGAY_HOSTNAME", "ops-chk".to_string()),
        ("MARGAY_ETCD_ENDPOINTS", "http://127.0.0.1:2".to_string()),
        ("MARGAY_DATAPLANE", "nftables".to_string()),
    ];
    let started = Instant::now();
    let out = margay_command(&scratch, Some(&ns), &["check"], &vars)
        .output()
        .expect("run margay check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "check must fail:\n{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "check took too long"
    );
    let etcd_line = stdout
        .lines()
        .find(|l| l.starts_with("PROBLEM  etcd reachable: "))
        .unwrap_or_else(|| panic!("no etcd problem line in:\n{stdout}"));
    assert!(etcd_line.contains("http://127.0.0.1:2"), "{etcd_line}");
    assert!(etcd_line.contains(" — hint: "), "{etcd_line}");
    // Every check line has the uniform shape; the last line sums up.
    let lines: Vec<&str> = stdout.lines().collect();
    let (summary, checks) = lines.split_last().expect("output");
    for line in checks {
        assert!(
            line.starts_with("ok       ") || line.starts_with("PROBLEM  "),
            "odd check line {line:?}"
        );
    }
    assert!(summary.contains("found a problem"), "{summary}");
    // As root in a namespace these pass.
    assert!(
        stdout.contains("ok       permissions (root; CAP_NET_ADMIN, CAP_NET_RAW effective)"),
        "{stdout}"
    );
    assert!(stdout.contains("ok       tool nft installed"), "{stdout}");
}

#[test]
fn check_passes_etcd_checks_and_status_lists_the_host() {
    if !require_root("check_passes_etcd_checks_and_status_lists_the_host") {
        return;
    }
    let fx = Fixture::new("st");
    let vars = fx.vars("text");
    let out = margay_command(&fx.scratch, Some(&fx.host), &["check"], &vars)
        .output()
        .expect("run margay check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok       etcd reachable ("), "{stdout}");
    assert!(
        stdout.contains("ok       datastore ready (/calico/v1/Ready = true; "),
        "{stdout}"
    );

    let reporting = [("MARGAY_ENDPOINT_REPORTING_ENABLED", "true".to_string())];
    let mut agent = fx.start_agent("text", &reporting);
    wait_for(&mut agent, "the first apply", || {
        http_get(fx.host.name(), "/readyz")
    });
    // `margay status` only reads etcd: run it from our namespace.
    let status_vars = [
        ("MARGAY_HOSTNAME", "ops-observer".to_string()),
        ("MARGAY_ETCD_ENDPOINTS", fx.etcd.client_url()),
    ];
    let table = wait_for(&mut agent, "a heartbeat in margay status", || {
        let out = margay_command(&fx.scratch, None, &["status"], &status_vars)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let row = text.lines().find(|l| l.starts_with("ops-st "))?;
        let cells: Vec<&str> = row.split_whitespace().collect();
        // Heartbeat seen and the endpoint reported up.
        (out.status.success() && cells.get(1) == Some(&"alive") && cells.get(6) == Some(&"1"))
            .then_some(text)
    });
    let header = table.lines().next().unwrap_or_default();
    assert!(header.starts_with("HOST"), "{table}");
    for column in ["STATE", "LAST REPORT", "AGE", "UPTIME", "ENDPOINTS"] {
        assert!(header.contains(column), "no {column} column:\n{table}");
    }
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("ops-st "))
        .expect("host row")
        .split_whitespace()
        .collect();
    assert_eq!(row[1], "alive");
    assert!(
        row[2].ends_with('Z') || row[2].contains('+'),
        "report time {}",
        row[2]
    );
    assert_eq!(
        row[5..],
        ["1", "1", "0", "0"],
        "endpoints, up, down, error:\n{table}"
    );
    drop(agent);
}
