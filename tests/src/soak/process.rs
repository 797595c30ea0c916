//! What the soak reads about the agent process from outside: resident
//! memory (`/proc/<pid>/status` `VmRSS`), open file descriptors
//! (`/proc/<pid>/fd`), and its start time, which changes if it restarted.

use std::time::Duration;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Its anonymous part (`RssAnon`: heap and stacks, not the binary's
    /// pages), KiB.
    pub anon_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
}

/// Reads `pid` now; `None` when it is gone.
pub fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Sample {
        rss_kib: status_kib(&status, "VmRSS")?,
        anon_kib: status_kib(&status, "RssAnon")?,
        fds: fd_count(pid)?,
    })
}

/// Like [`sample`], but when the descriptor count is above `fds_before`, it
/// reads again for up to `settle` and keeps the lowest count: a connection
/// being re-established at the moment of a reading is not a leak, one that
/// stays is.
pub fn settled_sample(pid: u32, fds_before: usize, settle: Duration) -> Option<Sample> {
    let mut best = sample(pid)?;
    let deadline = std::time::Instant::now() + settle;
    while best.fds > fds_before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let now = sample(pid)?;
        best.fds = best.fds.min(now.fds);
        best.rss_kib = now.rss_kib;
    }
    Some(best)
}

/// A `<field>:   <n> kB` line of `/proc/<pid>/status`, in KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Number of entries in `/proc/<pid>/fd`.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Where each of `pid`'s fds points (`socket:[…]`, `anon_inode:[…]`, a
/// path), sorted; empty when it is gone.
pub fn fd_targets(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut targets: Vec<String> = dir
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.display().to_string())
        .collect();
    targets.sort();
    targets
}

/// The process start time (field 22 of `/proc/<pid>/stat`, clock ticks
/// since boot): a restarted process under the same pid would differ.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; count after its ')'.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        let s = sample(me).expect("own process");
        assert!(s.rss_kib > 0 && s.fds >= 3, "{s:?}");
        let t = start_ticks(me).expect("start time");
        assert_eq!(start_ticks(me), Some(t));
    }

    #[test]
    fn parses_status_fields() {
        let status = "Name:\tmargay\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 2000 kB\nThreads:\t4\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(12345));
        assert_eq!(status_kib(status, "RssAnon"), Some(2000));
        assert_eq!(status_kib("Name:\tx\n", "VmRSS"), None);
    }
}
