//! What every benchmark hands to `make bench`: the rows of the README's
//! figure tables, and the refusal to run without root.
//!
//! A bench prints each figure it owns as one line, `MARGAY-ROW <json>`, with
//! the table it belongs to, a stable id, what is inside the clock, margay's
//! figure, the reference and the target. `make bench` runs every bench,
//! collects those lines and rewrites the README's tables from them (the
//! `bench-table` binary), so the README never shows a figure that the code
//! of the day did not produce.

/// The prefix of a row line on a bench's stdout.
pub const ROW_PREFIX: &str = "MARGAY-ROW ";

/// The README table a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// "Performance": one host.
    Performance,
    /// "Large clusters": fan-out through etcd and its grpc-proxy.
    LargeClusters,
}

impl Table {
    /// The name used in the README's table markers.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Performance => "performance",
            Table::LargeClusters => "large-clusters",
        }
    }
}

/// One row of a README table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The table it goes into.
    pub table: Table,
    /// Stable id (`bench/figure`), unique over the whole run.
    pub id: String,
    /// What was measured, including what is inside the clock.
    pub what: String,
    /// margay's figure.
    pub margay: String,
    /// The reference it is compared with, or "—".
    pub reference: String,
    /// The target, or "—".
    pub target: String,
}

impl Row {
    /// The line a bench prints for this row.
    pub fn line(&self) -> String {
        let json = serde_json::json!({
            "table": self.table.as_str(),
            "id": self.id,
            "what": self.what,
            "margay": self.margay,
            "reference": self.reference,
            "target": self.target,
        });
        format!("{ROW_PREFIX}{json}")
    }

    /// Prints [`Row::line`] on stdout.
    pub fn emit(&self) {
        println!("{}", self.line());
    }
}

/// Exits with status 1 and a clear message unless running as root: under
/// `make bench` a bench that cannot run must fail, not print "skipped".
pub fn require_root(bench: &str) {
    if !nix_is_root() {
        eprintln!("{bench}: needs root (network namespaces, netlink); run `make bench` as root");
        std::process::exit(1);
    }
}

fn nix_is_root() -> bool {
    // The effective uid is the second field of `Uid:` in /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_one_prefixed_json_line() {
        let row = Row {
            table: Table::Performance,
            id: "nft/full".into(),
            what: "a \"quoted\" | piped what".into(),
            margay: "1 ms".into(),
            reference: "—".into(),
            target: "< 2 ms".into(),
        };
        let line = row.line();
        assert!(!line.contains('\n'));
        let json: serde_json::Value =
            serde_json::from_str(line.strip_prefix(ROW_PREFIX).expect("prefix")).expect("json");
        assert_eq!(json["table"], "performance");
        assert_eq!(json["what"], "a \"quoted\" | piped what");
    }
}
