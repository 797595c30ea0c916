//! A Docker-like host inside a test namespace: what `dockerd` does to
//! iptables at start (policy `FORWARD DROP`, the `DOCKER*` chains and the
//! jumps to them, for IPv4 and IPv6), done with the iptables commands of a
//! chosen variant, plus a way to read back everything that is not margay's.
//!
//! Only ever called on a [`TestNetns`]: never on the host's own namespace.

use crate::netns::TestNetns;

/// Which iptables the "Docker" of a test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iptables {
    /// `iptables-nft` / `ip6tables-nft`.
    Nft,
    /// `iptables-legacy` / `ip6tables-legacy`.
    Legacy,
}

impl Iptables {
    /// The command for IPv4 (`v6` false) or IPv6.
    pub fn bin(self, v6: bool) -> &'static str {
        match (self, v6) {
            (Iptables::Nft, false) => "iptables-nft",
            (Iptables::Nft, true) => "ip6tables-nft",
            (Iptables::Legacy, false) => "iptables-legacy",
            (Iptables::Legacy, true) => "ip6tables-legacy",
        }
    }

    /// The `-save` command for IPv4 or IPv6.
    pub fn save_bin(self, v6: bool) -> String {
        format!("{}-save", self.bin(v6))
    }
}

/// The filter and nat rules `dockerd` (20.x to 27.x) adds with a `docker0`
/// bridge, as iptables arguments.
const DOCKER_RULES: &[&[&str]] = &[
    &["-N", "DOCKER"],
    &["-N", "DOCKER-ISOLATION-STAGE-1"],
    &["-N", "DOCKER-ISOLATION-STAGE-2"],
    &["-N", "DOCKER-USER"],
    &["-P", "FORWARD", "DROP"],
    &["-A", "FORWARD", "-j", "DOCKER-USER"],
    &["-A", "FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1"],
    &[
        "-A",
        "FORWARD",
        "-o",
        "docker0",
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "ACCEPT",
    ],
    &["-A", "FORWARD", "-o", "docker0", "-j", "DOCKER"],
    &[
        "-A", "FORWARD", "-i", "docker0", "!", "-o", "docker0", "-j", "ACCEPT",
    ],
    &[
        "-A", "FORWARD", "-i", "docker0", "-o", "docker0", "-j", "ACCEPT",
    ],
    &[
        "-A",
        "DOCKER-ISOLATION-STAGE-1",
        "-i",
        "docker0",
        "!",
        "-o",
        "docker0",
        "-j",
        "DOCKER-ISOLATION-STAGE-2",
    ],
    &["-A", "DOCKER-ISOLATION-STAGE-1", "-j", "RETURN"],
    &[
        "-A",
        "DOCKER-ISOLATION-STAGE-2",
        "-o",
        "docker0",
        "-j",
        "DROP",
    ],
    &["-A", "DOCKER-ISOLATION-STAGE-2", "-j", "RETURN"],
    &["-A", "DOCKER-USER", "-j", "RETURN"],
    &["-t", "nat", "-N", "DOCKER"],
    &[
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "DOCKER",
    ],
    &["-t", "nat", "-A", "DOCKER", "-i", "docker0", "-j", "RETURN"],
];

/// Makes `ns` look like a Docker host to `variant`'s iptables (both families).
pub fn make_docker_host(ns: &TestNetns, variant: Iptables) {
    for v6 in [false, true] {
        let bin = variant.bin(v6);
        for args in DOCKER_RULES {
            let mut cmd = vec![bin];
            cmd.extend_from_slice(args);
            ns.exec_ok(&cmd);
        }
        let pool = if v6 { "fd00:d0c::/64" } else { "172.17.0.0/16" };
        ns.exec_ok(&[
            bin,
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            pool,
            "!",
            "-o",
            "docker0",
            "-j",
            "MASQUERADE",
        ]);
    }
}

/// Everything `variant`'s `iptables-save` shows for both families that is
/// not margay's: table headers, chain declarations (counters cut off) and
/// rules, with margay's chains and rules (any line naming `margay`) and the
/// save's comment lines left out.
pub fn foreign_iptables(ns: &TestNetns, variant: Iptables) -> String {
    let mut out = String::new();
    for v6 in [false, true] {
        let save = ns.exec_ok(&[&variant.save_bin(v6)]);
        for line in save.lines() {
            if line.starts_with('#') || line.contains("margay") {
                continue;
            }
            let line = match line.strip_prefix(':') {
                Some(decl) => format!(":{}", decl.split(" [").next().unwrap_or(decl)),
                None => line.to_owned(),
            };
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// margay's rules in `variant`'s filter `FORWARD` chains (both families):
/// the lines of `-save` naming `margay` there.
pub fn margay_forward_rules(ns: &TestNetns, variant: Iptables) -> Vec<String> {
    [false, true]
        .into_iter()
        .flat_map(|v6| {
            let save = ns.exec_ok(&[&variant.save_bin(v6)]);
            save.lines()
                .filter(|l| l.starts_with("-A FORWARD") && l.contains("margay"))
                .map(|l| format!("{}: {l}", if v6 { "v6" } else { "v4" }))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A foreign nftables table with base chains of its own (forward, input,
/// and a nat one), sets and rules that touch none of the test's traffic.
pub const FOREIGN_NFT: &str = "table inet foreign {
	set blocked {
		type ipv4_addr
		elements = { 203.0.113.9 }
	}
	chain forward_filter {
		type filter hook forward priority 10; policy accept;
		ip saddr @blocked drop
		tcp dport 9999 reject
	}
	chain input_filter {
		type filter hook input priority -5; policy accept;
		ip saddr 198.51.100.0/24 drop
	}
	chain nat_post {
		type nat hook postrouting priority 110; policy accept;
		ip saddr 198.51.100.0/24 masquerade
	}
}
";

/// Loads [`FOREIGN_NFT`] into `ns`.
pub fn add_foreign_nft(ns: &TestNetns) {
    use std::io::Write as _;
    let mut child = ns
        .command(&["nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(FOREIGN_NFT.as_bytes())
        .expect("write nft input");
    assert!(
        child.wait().expect("nft exits").success(),
        "nft -f refused the foreign table"
    );
}

/// `nft list table inet foreign` in `ns`.
pub fn foreign_nft(ns: &TestNetns) -> String {
    ns.exec_ok(&["nft", "list", "table", "inet", "foreign"])
}

/// Everything on a Docker host's namespace that is not margay's: the foreign
/// nftables table and what both iptables variants show beyond margay's
/// chains and rules. A test reads it before margay starts and checks after
/// each step that margay left it byte for byte as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignState {
    /// [`foreign_nft`]: the foreign nftables table.
    pub nft: String,
    /// [`foreign_iptables`] of iptables-nft (both families).
    pub iptables_nft: String,
    /// [`foreign_iptables`] of iptables-legacy (both families).
    pub iptables_legacy: String,
}

impl ForeignState {
    /// Reads the foreign state of `ns` now.
    pub fn read(ns: &TestNetns) -> ForeignState {
        ForeignState {
            nft: foreign_nft(ns),
            iptables_nft: foreign_iptables(ns, Iptables::Nft),
            iptables_legacy: foreign_iptables(ns, Iptables::Legacy),
        }
    }

    /// Panics, naming `when`, unless `ns`'s foreign state is still `self`.
    pub fn assert_unchanged(&self, ns: &TestNetns, when: &str) {
        assert_eq!(
            &ForeignState::read(ns),
            self,
            "foreign state changed {when}"
        );
    }
}
