//! Running a variant's `-save` tool for one family, also without root.
//!
//! `iptables-legacy-save` with no `-t` lists the tables named in
//! `/proc/net/ip_tables_names` (`ip6_tables_names` for IPv6), a file the
//! kernel makes readable by root only. An agent running as an unprivileged
//! user with `CAP_NET_ADMIN` (as the shipped `margay.service` does) may use
//! every table but not read that list, so the plain save fails. Then the
//! tables margay looks at (`filter` and `nat`) are saved one by one, which
//! needs only `CAP_NET_ADMIN`. Root, and iptables-nft, keep the single
//! process.

use margay_policy::desired::IpVersion;

use super::exec;
use super::variant::Variant;
use crate::firewall::FirewallError;
use crate::netns::NetnsTarget;

/// The tables saved one by one when the table list cannot be read.
const TABLES: [&str; 2] = ["filter", "nat"];

/// `variant`'s `-save` output for `family`.
pub fn save(
    netns: &NetnsTarget,
    variant: Variant,
    family: IpVersion,
) -> Result<String, FirewallError> {
    let bin = variant.save_bin(family);
    match exec::run(netns, bin, &[], None) {
        Err(FirewallError::Tool { stderr, .. })
            if variant == Variant::Legacy && names_unreadable(&stderr) =>
        {
            tracing::debug!(
                tool = bin,
                "table list not readable; saving filter and nat one by one"
            );
            per_table(netns, bin)
        }
        other => other,
    }
}

/// True when the tool failed on reading the kernel's table list.
fn names_unreadable(stderr: &str) -> bool {
    stderr.contains("_tables_names") && stderr.contains("Permission denied")
}

fn per_table(netns: &NetnsTarget, bin: &str) -> Result<String, FirewallError> {
    let mut out = String::new();
    for table in TABLES {
        out.push_str(&exec::run(netns, bin, &["-t", table], None)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_table_list_refusal_falls_back() {
        assert!(names_unreadable(
            "Failed to list table names in /proc/net/ip_tables_names: Permission denied\n"
        ));
        assert!(names_unreadable(
            "Failed to list table names in /proc/net/ip6_tables_names: Permission denied"
        ));
        assert!(!names_unreadable(
            "Fatal: can't open lock file /run/xtables.lock: Permission denied"
        ));
        assert!(!names_unreadable("iptables-save: line 3 failed"));
    }
}
