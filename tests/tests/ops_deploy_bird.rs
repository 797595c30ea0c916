//! The BIRD part of the deployment kit (`deploy/bird/`), checked with the
//! real tools: the placeholder parses with `bird -p`, both drop-ins pass
//! `systemd-analyze verify` on top of their units, and the permission recipe
//! of `deploy/bird/README.md` works with a real BIRD running as user `bird`
//! in a test namespace: an unprivileged user in group `bird` (margay under
//! the drop-in) replaces the file the way margay's applier does (a sibling
//! with the target's owner, group and mode, renamed over it) and reloads
//! BIRD through its socket. With Debian's ownership of the file (`bird:bird`)
//! that fails: an unprivileged process cannot give its file another owner,
//! which is why the README makes margay the file's owner.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use margay_tests::netns::{require_root, TestNetns};
use margay_tests::sandbox::{eventually, margay_bin};

fn bird_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/bird")
}

/// A scratch directory any user may traverse, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mgy-bird-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        sh(&format!("chmod 0755 {}", dir.display()));
        Scratch(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd`; returns (success, stdout + stderr).
fn sh_output(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn sh(script: &str) -> String {
    let (ok, text) = sh_output(Command::new("sh").args(["-c", script]));
    assert!(ok, "`{script}` failed:\n{text}");
    text
}

#[test]
fn placeholder_parses_with_bird() {
    let placeholder = bird_dir().join("bird.conf");
    let (ok, text) = sh_output(Command::new("bird").arg("-p").arg("-c").arg(&placeholder));
    assert!(ok, "bird -p rejects {}:\n{text}", placeholder.display());
}

#[test]
fn drop_ins_pass_systemd_analyze_verify() {
    let scratch = Scratch::new("units");
    let margay_unit = std::fs::read_to_string(bird_dir().join("../margay.service"))
        .expect("deploy/margay.service");
    std::fs::write(
        scratch.path("margay.service"),
        margay_unit.replace(
            "ExecStart=/usr/local/bin/margay run",
            &format!("ExecStart={} run", margay_bin().display()),
        ),
    )
    .expect("unit copy");
    std::fs::copy(
        "/lib/systemd/system/bird.service",
        scratch.path("bird.service"),
    )
    .expect("Debian's bird.service (bird2, scripts/install-deps.sh installs it)");
    for (unit, drop_in) in [
        ("margay.service", "margay.service.d/bird.conf"),
        ("bird.service", "bird.service.d/margay.conf"),
    ] {
        let dir = scratch.path(&format!("{unit}.d"));
        std::fs::create_dir_all(&dir).expect("drop-in dir");
        std::fs::copy(
            bird_dir().join(drop_in),
            Path::new(&dir).join("margay-bird.conf"),
        )
        .unwrap_or_else(|e| panic!("copy {drop_in}: {e}"));
    }
    let (ok, text) = sh_output(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(scratch.path("margay.service"))
            .arg(scratch.path("bird.service")),
    );
    // Unknown or misspelt keys are only warnings (exit 0): demand silence.
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}

/// A process killed and reaped on drop, even when the test panics.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The group id of `bird` (made by the bird2 package).
fn bird_gid() -> String {
    sh("id -g bird").trim().to_owned()
}

/// As `nobody` with supplementary group `bird` (what margay's drop-in gives
/// margay), like `dataplane/src/bird/apply.rs`: writes `text` next to
/// `conf`, gives it `conf`'s owner, group and mode, renames it over `conf`
/// and asks BIRD to reload; returns (success, output).
fn replace_and_reload_as_group_member(
    ns: &TestNetns,
    conf: &str,
    sock: &str,
    text: &str,
) -> (bool, String) {
    let script = format!(
        "set -e; tmp={conf}.margay-tmp; printf '%s' \"$1\" >$tmp; \
         chown $(stat -c %u:%g {conf}) $tmp; chmod $(stat -c %a {conf}) $tmp; \
         mv -f $tmp {conf}; birdc -s {sock} configure"
    );
    let gid = bird_gid();
    sh_output(&mut ns.command(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        &format!("--groups={gid}"),
        "--inh-caps=-all",
        "sh",
        "-c",
        &script,
        "sh",
        text,
    ]))
}

#[test]
fn group_bird_member_replaces_the_file_and_reloads_bird() {
    if !require_root("group_bird_member_replaces_the_file_and_reloads_bird") {
        return;
    }
    let scratch = Scratch::new("perm");
    let (etc, run) = (scratch.path("etc"), scratch.path("run"));
    let (conf, sock) = (format!("{etc}/bird.conf"), format!("{run}/bird.ctl"));
    let placeholder = bird_dir().join("bird.conf");
    // As deploy/bird/README.md sets up /etc/bird (margay, here nobody, owns
    // the file), and Debian /run/bird.
    sh(&format!(
        "install -d -m 2770 -o bird -g bird {etc} && install -d -m 0775 -o bird -g bird {run} && \
         install -m 0640 -o 65534 -g bird {} {conf}",
        placeholder.display()
    ));
    let ns = TestNetns::new("birdperm");
    ns.exec_ok(&["ip", "addr", "add", "192.0.2.60/32", "dev", "lo"]);
    let _bird = Reaped(ns.spawn(&[
        "bird", "-f", "-u", "bird", "-g", "bird", "-c", &conf, "-s", &sock,
    ]));
    let status = || ns.exec(&["birdc", "-s", &sock, "show", "status"]);
    assert!(
        eventually(Duration::from_secs(10), || {
            String::from_utf8_lossy(&status().stdout).contains("Daemon is up")
        }),
        "BIRD did not come up on the placeholder"
    );

    let (ok, out) = replace_and_reload_as_group_member(
        &ns,
        &conf,
        &sock,
        "router id 192.0.2.61;\nprotocol device {\n}\n",
    );
    assert!(
        ok && out.contains("Reconfigured"),
        "reload as group bird failed:\n{out}"
    );
    let shown = String::from_utf8_lossy(&status().stdout).into_owned();
    assert!(shown.contains("Router ID is 192.0.2.61"), "{shown}");

    // Debian's ownership (bird:bird): the copy cannot get owner bird, the
    // write fails, and BIRD keeps running what it had.
    sh(&format!("chown bird:bird {conf}"));
    let (ok, out) = replace_and_reload_as_group_member(
        &ns,
        &conf,
        &sock,
        "router id 192.0.2.62;\nprotocol device {\n}\n",
    );
    assert!(
        !ok && out.contains("Operation not permitted"),
        "expected the owner change to fail:\n{out}"
    );
    let shown = String::from_utf8_lossy(&status().stdout).into_owned();
    assert!(shown.contains("Router ID is 192.0.2.61"), "{shown}");
}
