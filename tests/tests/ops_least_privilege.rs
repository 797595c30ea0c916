//! The shipped least-privilege setup, run for real: the real `margay run`
//! as the dedicated user that `deploy/sysusers.d/margay.conf` creates,
//! holding only `CAP_NET_ADMIN` and `CAP_NET_RAW` (as `margay.service`
//! grants them: ambient, inheritable and bounding set, nothing else), on
//! nftables and on iptables with both iptables variants, against a real etcd.
//! It must get ready, program, and enforce: an allowed TCP flow passes and a
//! denied one is dropped.
//!
//! The shipped files are applied to a scratch root (`systemd-sysusers
//! --root`, `systemd-tmpfiles --root`), never to this machine: the agent
//! sees the scratch root's `/run` (with the `xtables.lock` that
//! `deploy/tmpfiles.d/margay.conf` makes) through a bind mount in its own
//! mount namespace (`ip netns exec` gives it one, a slave of the host's, so
//! nothing leaks back). The privileges are dropped with `setpriv`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use margay_tests::netns::require_root;
use margay_tests::sandbox::CONVERGE_TIMEOUT;
use margay_tests::sandbox::{allow, allow_all_rules, deny, wait_for, Cluster, Dataplane};
use serde_json::json;

/// CAP_NET_ADMIN (12) and CAP_NET_RAW (13), as `/proc/<pid>/status` shows them.
const NET_CAPS_MASK: &str = "0000000000003000";

/// The iptables variant to force (by seeding one rule with its tools, so
/// margay's detection follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Nft,
    Legacy,
}

impl Variant {
    fn iptables(self) -> &'static str {
        match self {
            Variant::Nft => "iptables-nft",
            Variant::Legacy => "iptables-legacy",
        }
    }
    fn save(self) -> &'static str {
        match self {
            Variant::Nft => "iptables-nft-save",
            Variant::Legacy => "iptables-legacy-save",
        }
    }
}

#[test]
fn nftables_as_margay_user_with_net_caps_only() {
    if require_root("nftables_as_margay_user_with_net_caps_only") {
        least_privilege_run(Dataplane::Nftables, None);
    }
}

#[test]
fn iptables_nft_as_margay_user_with_net_caps_only() {
    if require_root("iptables_nft_as_margay_user_with_net_caps_only") {
        least_privilege_run(Dataplane::Iptables, Some(Variant::Nft));
    }
}

#[test]
fn iptables_legacy_as_margay_user_with_net_caps_only() {
    if require_root("iptables_legacy_as_margay_user_with_net_caps_only") {
        least_privilege_run(Dataplane::Iptables, Some(Variant::Legacy));
    }
}

fn deploy_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

/// A scratch root with the shipped sysusers and tmpfiles entries applied.
struct ScratchRoot(PathBuf);

impl ScratchRoot {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mgy-priv-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["etc", "run"] {
            std::fs::create_dir_all(dir.join(sub)).expect("scratch root");
        }
        let root = ScratchRoot(dir);
        // As iptables-legacy would have left it: created first, 0600 root.
        let lock = root.lock();
        std::fs::write(&lock, "").expect("lock file");
        std::fs::set_permissions(&lock, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod lock");
        root.apply("systemd-sysusers", "sysusers.d/margay.conf");
        root.apply("systemd-tmpfiles", "tmpfiles.d/margay.conf");
        root
    }

    fn lock(&self) -> PathBuf {
        self.0.join("run/xtables.lock")
    }

    /// Runs `tool --root=<scratch> -` (`--create` for tmpfiles) on a shipped file.
    fn apply(&self, tool: &str, file: &str) {
        let text =
            std::fs::read(deploy_file(file)).unwrap_or_else(|e| panic!("deploy/{file}: {e}"));
        let mut cmd = Command::new(tool);
        cmd.arg(format!("--root={}", self.0.display()));
        if tool == "systemd-tmpfiles" {
            cmd.arg("--create");
        }
        let mut child = cmd
            .arg("-")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, &text).expect("write stdin");
        }
        let out = child.wait_with_output().expect("tool runs");
        assert!(
            out.status.success(),
            "{tool} on deploy/{file} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// (uid, gid) of `name` in the scratch root's /etc/passwd.
    fn user(&self, name: &str) -> (u32, u32) {
        let passwd = std::fs::read_to_string(self.0.join("etc/passwd")).expect("passwd");
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
            .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
            .unwrap_or_else(|| panic!("no user {name} in:\n{passwd}"))
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sh -c` that shows the agent the scratch `/run`, then `setpriv` down to
/// `uid`/`gid` with the two network capabilities and nothing else.
fn wrapper(run_dir: &Path, uid: u32, gid: u32) -> Vec<String> {
    let caps = "-all,+net_admin,+net_raw";
    [
        "sh".to_owned(),
        "-c".to_owned(),
        r#"mount --bind "$0" /run && exec "$@""#.to_owned(),
        run_dir.display().to_string(),
        "setpriv".to_owned(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".to_owned(),
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
        format!("--bounding-set={caps}"),
        "--".to_owned(),
    ]
    .into()
}

/// The `Name:` line of `/proc/<pid>/status`, its value trimmed.
fn proc_status(pid: u32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {field} in:\n{text}"))
}

fn least_privilege_run(dp: Dataplane, variant: Option<Variant>) {
    // One scratch root per test: the two iptables tests run side by side.
    let tag = match variant {
        Some(v) => v.iptables(),
        None => dp.as_str(),
    };
    let root = ScratchRoot::new(tag);
    let lock_mode = std::os::unix::fs::MetadataExt::mode(
        &std::fs::metadata(root.lock()).expect("lock metadata"),
    );
    let (uid, gid) = root.user("margay");
    assert_ne!(uid, 0, "the margay user must not be root");
    let wrap = wrapper(&root.0.join("run"), uid, gid);
    let wrap: Vec<&str> = wrap.iter().map(String::as_str).collect();
    let mut c = Cluster::builder()
        .hosts(1)
        .dataplane(dp)
        .start_agents(false)
        .agent_wrapper(&wrap)
        .build();
    if let Some(v) = variant {
        // One foreign rule of this variant: margay follows the busier one.
        let ns = c.host("h1").ns();
        ns.exec_ok(&[v.iptables(), "-w", "-N", "mgy-seed"]);
        ns.exec_ok(&[v.iptables(), "-w", "-A", "mgy-seed", "-j", "RETURN"]);
    }
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.put_profile_rules(
        "WEB",
        &json!({"inbound_rules": [{"action": "allow", "protocol": "tcp", "dst_ports": [80]}],
                "outbound_rules": [{"action": "allow"}]}),
    );
    c.add_workload("cl", "h1", "10.65.3.2");
    c.add_workload("web", "h1", "10.65.3.3");
    c.put_endpoint("cl", &["OPEN"], &json!({}));
    c.put_endpoint("web", &["WEB"], &json!({}));

    // Ready means the first apply succeeded (it panics with the log tail if not).
    c.start_agent("h1");

    let pid = c.agent_pid("h1").expect("agent pid");
    let uids = proc_status(pid, "Uid");
    assert!(
        uids.split_whitespace().all(|u| u == uid.to_string()),
        "agent runs as uids {uids}, not {uid}"
    );
    for field in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(proc_status(pid, field), NET_CAPS_MASK, "{field}");
    }
    assert_eq!(proc_status(pid, "Groups"), "", "supplementary groups");
    assert_eq!(lock_mode & 0o777, 0o640, "tmpfiles left the lock mode");

    c.assert_matrix(&[
        allow("cl", "web", 80),
        deny("cl", "web", 443),
        allow("web", "cl", 5432),
    ]);
    assert!(c.can_ping("web", "cl"), "ping web -> cl");
    assert!(!c.can_ping("cl", "web"), "WEB allows no icmp");
    // Interface sysctls are written through /proc/sys/net by the user.
    wait_for("interface sysctls", CONVERGE_TIMEOUT, || {
        c.read_sysctl("h1", "net.ipv4.conf.caliweb.proxy_arp") == "1"
    });
    if let Some(v) = variant {
        let save = c.host("h1").ns().exec_ok(&[v.save()]);
        assert!(
            save.contains(":margay-"),
            "no margay chains in {}:\n{save}",
            v.save()
        );
    }
    let metrics = c.metrics("h1");
    assert!(
        metrics.contains("margay_dataplane_apply_failures_total{"),
        "no apply failure series:\n{metrics}"
    );
    assert_eq!(
        c.metric_sum("h1", "margay_dataplane_apply_failures_total"),
        0.0,
        "apply failures:\n{}",
        c.agent_log_tail("h1", 30)
    );
    // Last: holding the lock makes applies wait (and may time one out).
    if variant == Some(Variant::Legacy) {
        lock_is_shared_with_root_holders(&c, &root.lock());
    }
}

/// The agent (as user margay) waits on the same `/run/xtables.lock` that
/// root iptables users (Docker, ...) take: while the test holds it, a
/// change does not go in and the agent's restore sits waiting; once it is
/// released the change is applied.
fn lock_is_shared_with_root_holders(c: &Cluster, lock: &Path) {
    let agent = c.agent_pid("h1").expect("agent pid");
    let file = std::fs::File::open(lock).expect("open lock");
    let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock {}: {e}", lock.display()));
    c.put_profile_rules(
        "WEB",
        &json!({"inbound_rules": [{"action": "allow", "protocol": "tcp", "dst_ports": [443]}],
                "outbound_rules": [{"action": "allow"}]}),
    );
    // The positive event: the agent's restore is running and blocked.
    wait_for(
        "a blocked iptables-legacy-restore",
        CONVERGE_TIMEOUT,
        || restore_child_of(agent),
    );
    c.assert_matrix(&[allow("cl", "web", 80), deny("cl", "web", 443)]);
    drop(held);
    c.assert_matrix(&[deny("cl", "web", 80), allow("cl", "web", 443)]);
}

/// True when a child of `pid` runs `iptables-legacy-restore`.
fn restore_child_of(pid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(Result::ok).any(|e| {
        let path = e.path();
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
        ppid == Some(pid) && String::from_utf8_lossy(&cmdline).contains("iptables-legacy-restore")
    })
}
