//! Real BIRD daemons for tests, each inside a test network namespace.
//!
//! [`BirdDir`] is a throw-away directory holding one BIRD's configuration
//! file, control socket and pid file (removed on drop). [`TestBird::start`]
//! runs `bird -f` on it inside a [`TestNetns`] and waits until the socket
//! greets; dropping it kills that BIRD. BIRD never runs in the host's own
//! namespace.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::netns::TestNetns;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// How long BIRD may take to open its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The `bird` binary, if installed.
pub fn bird_binary() -> Option<PathBuf> {
    ["/usr/sbin/bird", "/usr/bin/bird", "/sbin/bird"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// For tests that need BIRD: false (with a message) when it is missing;
/// under CI (`CI` or `MARGAY_REQUIRE_ROOT` set) a missing BIRD is a failure.
pub fn require_bird(test: &str) -> bool {
    if bird_binary().is_some() {
        return true;
    }
    if std::env::var_os("CI").is_some() || std::env::var_os("MARGAY_REQUIRE_ROOT").is_some() {
        panic!("{test}: bird is not installed (apt-get install bird2); CI must run BIRD tests");
    }
    eprintln!("skipping {test}: bird is not installed");
    false
}

/// A directory for one BIRD: `bird.conf`, and `run/` (world-writable, so
/// a BIRD that drops to another user can still write its pid file) with
/// `bird.ctl` and `bird.pid`.
#[derive(Debug)]
pub struct BirdDir {
    root: PathBuf,
}

impl BirdDir {
    /// A fresh directory under the system temp dir.
    pub fn new(tag: &str) -> BirdDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let root =
            std::env::temp_dir().join(format!("margay-bird-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let run = root.join("run");
        std::fs::create_dir_all(&run).expect("create BIRD test dir");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .expect("chmod BIRD test dir");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777))
            .expect("chmod BIRD run dir");
        BirdDir { root }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The configuration file BIRD is started with.
    pub fn config(&self) -> PathBuf {
        self.root.join("bird.conf")
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("run/bird.ctl")
    }

    /// The pid file.
    pub fn pidfile(&self) -> PathBuf {
        self.root.join("run/bird.pid")
    }

    /// Writes the configuration file.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config(), text).expect("write bird.conf");
    }
}

impl Drop for BirdDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A running BIRD (foreground, a child of this test); killed on drop.
#[derive(Debug)]
pub struct TestBird {
    child: Child,
    socket: PathBuf,
}

impl TestBird {
    /// Starts BIRD as root on `dir`'s files inside `ns`; panics if its
    /// socket does not answer within 10 s.
    pub fn start(ns: &TestNetns, dir: &BirdDir) -> TestBird {
        Self::start_with(ns, dir, &[])
    }

    /// Starts BIRD dropping privileges to `user`:`group` (`-u`, `-g`).
    pub fn start_as(ns: &TestNetns, dir: &BirdDir, user: &str, group: &str) -> TestBird {
        Self::start_with(ns, dir, &["-u", user, "-g", group])
    }

    fn start_with(ns: &TestNetns, dir: &BirdDir, extra: &[&str]) -> TestBird {
        let (config, socket, pid) = (dir.config(), dir.socket(), dir.pidfile());
        let mut args = bird_command(&config, &socket, &pid);
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = ns
            .command(&args)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start bird in {}: {e}", ns.name()));
        let mut bird = TestBird { child, socket };
        bird.wait_ready();
        bird
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if answers(&self.socket) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("bird exited during start-up: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "bird's socket {} did not answer within {START_TIMEOUT:?}",
                self.socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runs `birdc -s SOCKET args...` and returns its stdout.
    pub fn birdc(&self, args: &[&str]) -> String {
        birdc(&self.socket, args)
    }

    /// Kills BIRD and waits for it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestBird {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The command line of a foreground BIRD on `config`, with its control
/// socket and pid file where given (run it inside a namespace).
pub fn bird_command(config: &Path, socket: &Path, pid: &Path) -> Vec<String> {
    let bird = bird_binary().unwrap_or_else(|| PathBuf::from("bird"));
    [bird.as_path(), Path::new("-f"), Path::new("-c"), config]
        .into_iter()
        .chain([Path::new("-s"), socket, Path::new("-P"), pid])
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// `birdc -s SOCKET args...`: its stdout (BIRD's socket is a file, so this
/// works from any network namespace; "Unable to connect" when BIRD is down).
pub fn birdc(socket: &Path, args: &[&str]) -> String {
    let out = Command::new("birdc")
        .arg("-s")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run birdc");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when `socket` accepts a connection and sends BIRD's greeting.
pub fn answers(socket: &Path) -> bool {
    let Ok(stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("0001 ")
}
