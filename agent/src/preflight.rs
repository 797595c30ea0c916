//! What `margay check` is made of and other modules contribute to: the
//! result of one check ([`CheckResult`]) and finding the tools it runs
//! ([`find_tool`]).

use std::fmt;
use std::path::{Path, PathBuf};

/// Where tools are looked up in addition to `$PATH` (systemd's default
/// PATH has them, an interactive user's may not).
const SBIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// What was checked, e.g. `etcd reachable`.
    pub name: String,
    /// True when fine (a warning is fine: it does not fail `margay check`).
    pub ok: bool,
    /// Fine, but the operator should know (shown as `WARNING`).
    pub warning: bool,
    /// What was found (shown in parentheses when ok, after `:` otherwise).
    pub detail: String,
    /// What to do about a problem (empty when ok).
    pub hint: String,
}

impl CheckResult {
    /// A passed check.
    pub fn ok(name: &str, detail: impl Into<String>) -> Self {
        CheckResult {
            name: name.to_string(),
            ok: true,
            warning: false,
            detail: detail.into(),
            hint: String::new(),
        }
    }

    /// A passed check the operator should still know about, with a hint.
    pub fn warning(name: &str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        CheckResult {
            name: name.to_string(),
            ok: true,
            warning: true,
            detail: detail.into(),
            hint: hint.into(),
        }
    }

    /// A failed check with a hint.
    pub fn problem(name: &str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        CheckResult {
            name: name.to_string(),
            ok: false,
            warning: false,
            detail: detail.into(),
            hint: hint.into(),
        }
    }
}

impl fmt::Display for CheckResult {
    /// `ok       name (detail)`, `WARNING  name: detail — hint: hint` or
    /// `PROBLEM  name: detail — hint: hint`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok && !self.warning {
            write!(f, "{:<9}{}", "ok", self.name)?;
            if !self.detail.is_empty() {
                write!(f, " ({})", self.detail)?;
            }
            return Ok(());
        }
        let label = if self.ok { "WARNING" } else { "PROBLEM" };
        write!(f, "{label:<9}{}", self.name)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        if !self.hint.is_empty() {
            write!(f, " — hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// Finds an executable `name` in `$PATH` and the sbin directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .chain(SBIN_DIRS.iter().copied())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
