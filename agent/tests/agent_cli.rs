//! The `margay` binary's command line: version, exit codes, and the
//! precedence of flag > environment > config file.
//!
//! These run the real binary but never reach the kernel: precedence is
//! observed through which (closed) etcd endpoint `margay plan` reports it
//! could not reach, which happens before any dataplane is opened.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

const MARGAY: &str = env!("CARGO_BIN_EXE_margay");

/// A `margay` command with a clean environment (no stray `MARGAY_*`/`ETCD_*`).
fn margay(args: &[&str]) -> Command {
    let mut cmd = Command::new(MARGAY);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(args);
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A loopback URL nobody listens on.
fn closed_endpoint() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://127.0.0.1:{}", l.local_addr().expect("addr").port())
}

/// A file in the temp dir, removed on drop.
struct ScratchFile(PathBuf);

impl ScratchFile {
    fn new(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!("mgy-cli-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write");
        ScratchFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf8 temp path")
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn version_prints_the_crate_version() {
    let out = margay(&["version"]).output().expect("runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("margay {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = margay(&[]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let out = margay(&["run", "--no-such-flag"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_settings_exit_2_naming_setting_value_and_source() {
    let out = margay(&["run", "--dataplane", "ebpf", "--hostname", "h1"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("invalid dataplane \"ebpf\" (from command line --dataplane)"),
        "{}",
        text(&out)
    );

    let out = margay(&["check", "--hostname", "h1"])
        .env("MARGAY_REFRESH_INTERVAL", "often")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("environment variable MARGAY_REFRESH_INTERVAL"),
        "{}",
        text(&out)
    );

    let file = ScratchFile::new("bad.toml", "metrics_addr = \"everywhere\"\n");
    let out = margay(&["plan", "--hostname", "h1", "--config", file.path()])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("config file key metrics_addr"),
        "{}",
        text(&out)
    );

    let out = margay(&[
        "plan",
        "--hostname",
        "h1",
        "--config",
        "/nonexistent/margay.toml",
    ])
    .output()
    .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("/nonexistent/margay.toml"),
        "{}",
        text(&out)
    );
}

/// Runs `margay plan` and returns which endpoint it says it could not reach.
fn tried_endpoint(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    let start = all
        .find("reachable (")
        .unwrap_or_else(|| panic!("no endpoint in: {all}"));
    let rest = &all[start + "reachable (".len()..];
    rest[..rest.find(')').expect("closing paren")].to_owned()
}

#[test]
fn flag_beats_environment_beats_config_file() {
    let (file_ep, env_ep, legacy_ep, flag_ep) = (
        closed_endpoint(),
        closed_endpoint(),
        closed_endpoint(),
        closed_endpoint(),
    );
    let scratch = ScratchFile::new(
        "precedence.toml",
        &format!("etcd_endpoints = [\"{file_ep}\"]\ndataplane = \"none\"\n"),
    );
    let file = scratch.path();
    let base = ["plan", "--hostname", "h1", "--config", file];

    let with_flag = [&base[..], &["--etcd-endpoints", &flag_ep]].concat();
    let got = tried_endpoint(
        margay(&with_flag)
            .env("MARGAY_ETCD_ENDPOINTS", &env_ep)
            .env("ETCD_ENDPOINTS", &legacy_ep),
    );
    assert_eq!(got, flag_ep, "flag wins");

    let got = tried_endpoint(
        margay(&base)
            .env("MARGAY_ETCD_ENDPOINTS", &env_ep)
            .env("ETCD_ENDPOINTS", &legacy_ep),
    );
    assert_eq!(
        got, env_ep,
        "MARGAY_* beats the Calico-era variable and the file"
    );

    let got = tried_endpoint(margay(&base).env("ETCD_ENDPOINTS", &legacy_ep));
    assert_eq!(got, legacy_ep, "ETCD_ENDPOINTS beats the file");

    assert_eq!(
        tried_endpoint(&mut margay(&base)),
        file_ep,
        "the file beats the default"
    );

    // MARGAY_CONFIG names the file when --config is absent.
    let got = tried_endpoint(margay(&["plan", "--hostname", "h1"]).env("MARGAY_CONFIG", file));
    assert_eq!(got, file_ep);
}

/// The BGP options keep the exact names tools outside this repository use:
/// `run` takes all three, `status` takes `--bird-socket`, and bad values
/// are refused with exit code 2, naming the option.
#[test]
fn bgp_options_have_their_fixed_names() {
    let out = margay(&["run", "--help"]).output().expect("runs");
    let help = text(&out);
    for option in [
        "--inter-host-routes <direct|bgp|none>",
        "--bird-config <FILE>",
        "--bird-socket <PATH>",
    ] {
        assert!(help.contains(option), "run --help lacks {option}: {help}");
    }
    let out = margay(&["status", "--help"]).output().expect("runs");
    assert!(
        text(&out).contains("--bird-socket <PATH>"),
        "{}",
        text(&out)
    );

    let out = margay(&["run", "--hostname", "h1", "--inter-host-routes", "ospf"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out)
            .contains("invalid inter_host_routes \"ospf\" (from command line --inter-host-routes)"),
        "{}",
        text(&out)
    );
    let out = margay(&["status", "--hostname", "h1", "--bird-socket", "bird.ctl"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("invalid bird_socket \"bird.ctl\" (from command line --bird-socket): must be an absolute path"),
        "{}",
        text(&out)
    );
}
