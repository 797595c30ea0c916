//! Running the iptables and ipset tools inside the target namespace.
//!
//! One process per call, input on stdin, output captured. A refusal becomes
//! [`FirewallError::Tool`] with the tool's message and, when the tool names
//! the input line it choked on, that line.

use std::io::Write as _;
use std::process::{Output, Stdio};

use crate::firewall::FirewallError;
use crate::netns::NetnsTarget;

/// How much of a tool's stderr an error keeps.
const MAX_STDERR: usize = 2048;

/// Runs `program args` in `netns`, feeding `stdin`; returns stdout.
pub fn run(
    netns: &NetnsTarget,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, FirewallError> {
    let out = output(netns, program, args, stdin)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(FirewallError::Tool {
            tool: program.to_owned(),
            status: out.status.to_string(),
            stderr: describe_failure(&stderr, stdin),
        });
    }
    String::from_utf8(out.stdout).map_err(|e| FirewallError::Parse {
        what: format!("{program} output"),
        detail: e.to_string(),
    })
}

/// Runs the tool and returns its raw output, whatever its exit status.
pub fn output(
    netns: &NetnsTarget,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<Output, FirewallError> {
    let spawn_err = |source| FirewallError::Spawn {
        tool: program.to_owned(),
        source,
    };
    let mut cmd = netns.command(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn_err)?;
    let pipe = child.stdin.take();
    std::thread::scope(|scope| {
        // Feed stdin from a second thread so a tool that writes a lot while
        // reading cannot deadlock against us.
        let writer = pipe.map(|mut pipe| {
            let text = stdin.unwrap_or_default();
            scope.spawn(move || pipe.write_all(text.as_bytes()))
        });
        let out = child.wait_with_output().map_err(spawn_err)?;
        if let Some(w) = writer {
            // A write error (the tool quit early) shows in its exit status;
            // report it only if the tool claims success.
            let written = w
                .join()
                .unwrap_or_else(|_| Err(std::io::ErrorKind::Other.into()));
            if let (Err(e), true) = (written, out.status.success()) {
                return Err(spawn_err(e));
            }
        }
        Ok(out)
    })
}

/// The tool's message, trimmed, plus the input line it names (`line N`)
/// and the object (chain or set) that line writes.
pub fn describe_failure(stderr: &str, stdin: Option<&str>) -> String {
    // One line, so a log line holds all of it.
    let mut msg: String = stderr
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_STDERR)
        .collect();
    let at = failing_line(stderr).and_then(|n| n.checked_sub(1));
    let line = at.and_then(|i| stdin?.lines().nth(i));
    if let Some(line) = line {
        let shown: String = line.chars().take(300).collect();
        msg.push_str(&format!(" [input: {shown}]"));
    }
    if let Some(object) = at.and_then(|i| object_before(stdin?, i)) {
        msg.push_str(&format!(" [object: {object}]"));
    }
    if stderr.contains("can't open lock file") {
        msg.push_str(LOCK_HINT);
    }
    msg
}

/// Appended when iptables-legacy cannot open `/run/xtables.lock`: as an
/// unprivileged user margay may only read it if the shipped tmpfiles entry
/// made it group-readable.
const LOCK_HINT: &str = " [hint: margay runs unprivileged? install deploy/tmpfiles.d/margay.conf \
     and run `systemd-tmpfiles --create margay.conf` so group margay may read the lock]";

/// The chain or set that input line `idx` (0-based) writes; for a line
/// naming none (`COMMIT`), the nearest one above it that does.
pub fn object_before(input: &str, idx: usize) -> Option<&str> {
    let lines: Vec<&str> = input.lines().take(idx + 1).collect();
    lines.iter().rev().find_map(|l| object_of_line(l))
}

/// `:C ...`, `-A C ...`, `-X C` and the like name chain `C`; `-I/-D` of a
/// built-in chain name the `margay-` chain they jump to; ipset lines
/// (`add S m`, `create S ...`, `swap A B`) name their first set.
fn object_of_line(line: &str) -> Option<&str> {
    if let Some(decl) = line.strip_prefix(':') {
        return decl.split_whitespace().next();
    }
    let mut words = line.split_whitespace();
    let first = words.next()?;
    let second = words.next();
    match first {
        "-A" | "-X" | "-N" | "-F" => second,
        "-I" | "-D" => line
            .split_whitespace()
            .skip_while(|w| *w != "-j" && *w != "-g")
            .nth(1)
            .or(second),
        "add" | "del" | "create" | "destroy" | "flush" | "swap" => second,
        _ => None,
    }
}

/// The number after the first `line ` in a tool's message.
pub fn failing_line(stderr: &str) -> Option<usize> {
    let lower = stderr.to_ascii_lowercase();
    let at = lower.find("line ")? + "line ".len();
    let digits: String = lower[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_lock_gets_the_tmpfiles_hint() {
        let msg = describe_failure(
            "Fatal: can't open lock file /run/xtables.lock: Permission denied\n",
            Some("*filter\nCOMMIT\n"),
        );
        assert!(msg.starts_with(
            "Fatal: can't open lock file /run/xtables.lock: Permission denied [hint: "
        ));
        assert!(
            msg.contains("systemd-tmpfiles --create margay.conf"),
            "{msg}"
        );
        assert!(!describe_failure("iptables-restore: line 2 failed", None).contains("hint"));
    }

    #[test]
    fn failure_names_the_input_line() {
        let input = "*filter\n-A margay-x -j NOPE\nCOMMIT\n";
        let msg = describe_failure("iptables-restore: line 2 failed\n", Some(input));
        assert_eq!(
            msg,
            "iptables-restore: line 2 failed [input: -A margay-x -j NOPE] [object: margay-x]"
        );
        let ipset = describe_failure(
            "ipset v7.17: Error in line 1: Syntax error",
            Some("add x y\n"),
        );
        assert!(ipset.ends_with("[input: add x y] [object: x]"));
        // The failure names the chain; a COMMIT line names the
        // chain written above it.
        let restore = "*filter\n:margay-pi-solo2 - [0:0]\n-X margay-pi-solo2\n\
                       -A margay-y -j ACCEPT\nCOMMIT\n";
        assert_eq!(
            describe_failure(
                "iptables-nft-restore v1.8.9 (nf_tables): \nline 3: CHAIN_DEL failed",
                Some(restore)
            ),
            "iptables-nft-restore v1.8.9 (nf_tables): line 3: CHAIN_DEL failed \
             [input: -X margay-pi-solo2] [object: margay-pi-solo2]"
        );
        assert!(describe_failure("line 5: failed", Some(restore))
            .ends_with("[input: COMMIT] [object: margay-y]"));
        let hook = "-I FORWARD 1 -m comment --comment margay-hook -j margay-fw\n";
        assert_eq!(object_before(hook, 0), Some("margay-fw"));
        assert_eq!(
            describe_failure("no line here", Some(input)),
            "no line here"
        );
    }

    #[test]
    fn runs_a_program_with_stdin() {
        let out = run(&NetnsTarget::current(), "cat", &[], Some("hello\n")).expect("cat runs");
        assert_eq!(out, "hello\n");
        let err = run(&NetnsTarget::current(), "false", &[], None).expect_err("false fails");
        assert!(matches!(err, FirewallError::Tool { .. }));
        let missing = run(&NetnsTarget::current(), "/nonexistent/tool", &[], None);
        assert!(matches!(missing, Err(FirewallError::Spawn { .. })));
    }
}
