//! What a flush of host-network objects reports: how many writes took
//! effect, how many wait or are blocked, and each write the kernel refused
//! as a [`WriteFailure`]. Shared by the route, neighbour and sysctl managers.
//!
//! A failure is typed: the [`ObjectKind`], and the interface and workload
//! address the object belongs to, so the agent can tell which endpoint it
//! concerns without reading the text (which is only for logs).

use std::fmt;
use std::net::IpAddr;

use margay_policy::names::InterfaceName;

/// The kinds of host-network objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// A route of ours.
    Route,
    /// A static neighbour entry.
    Neighbour,
    /// A per-interface sysctl.
    Sysctl,
}

impl ObjectKind {
    /// The log value (`route`, `neighbour`, `sysctl`).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Route => "route",
            ObjectKind::Neighbour => "neighbour",
            ObjectKind::Sysctl => "sysctl",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a write created/replaced or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Create or replace.
    Upsert,
    /// Delete.
    Delete,
}

/// A write the kernel refused (logged, counted, retried later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    /// What kind of object.
    pub kind: ObjectKind,
    /// The object, as text for logs (`10.0.0.1/32`, `10.0.0.1 dev cali1`,
    /// a sysctl path).
    pub object: String,
    /// The interface the object belongs to (neighbour entries, sysctls).
    pub iface: Option<InterfaceName>,
    /// The workload address the object is for (a route's destination
    /// address, a neighbour entry's address).
    pub addr: Option<IpAddr>,
    /// What we tried.
    pub op: WriteKind,
    /// The errno, or `None` when the reply was lost.
    pub errno: Option<i32>,
}

impl fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.op {
            WriteKind::Upsert => "write",
            WriteKind::Delete => "delete",
        };
        match self.errno {
            Some(e) => write!(
                f,
                "{what} {}: {}",
                self.object,
                std::io::Error::from_raw_os_error(e)
            ),
            None => write!(f, "{what} {}: reply lost", self.object),
        }
    }
}

/// What one flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Objects created or replaced.
    pub upserts: usize,
    /// Objects deleted.
    pub deletes: usize,
    /// Out-of-sync objects waiting for their interface.
    pub waiting: usize,
    /// Out-of-sync objects blocked after a refusal.
    pub blocked: usize,
    /// Refusals in this flush.
    pub failures: Vec<WriteFailure>,
}

/// At most this many refusals are logged one by one per flush; the rest are
/// counted in one line (datastore content can cause many at once).
pub const REFUSALS_LOGGED_PER_FLUSH: usize = 5;

impl FlushReport {
    /// Logs this flush's refusals of objects of kind `what`: the first
    /// [`REFUSALS_LOGGED_PER_FLUSH`] one per line, then a count of the others.
    pub fn log_refusals(&self, what: ObjectKind) {
        let what = what.as_str();
        for f in self.failures.iter().take(REFUSALS_LOGGED_PER_FLUSH) {
            tracing::warn!(kind = what, object = %f.object, failure = %f, "kernel refused a write; will retry");
        }
        let more = self
            .failures
            .len()
            .saturating_sub(REFUSALS_LOGGED_PER_FLUSH);
        if more > 0 {
            tracing::warn!(
                kind = what,
                more,
                "kernel refused more writes in this flush; will retry"
            );
        }
    }
}

impl FlushReport {
    /// Writes that took effect.
    pub fn writes(&self) -> usize {
        self.upserts + self.deletes
    }

    /// Folds another report into this one.
    pub fn merge(&mut self, other: FlushReport) {
        self.upserts += other.upserts;
        self.deletes += other.deletes;
        self.waiting += other.waiting;
        self.blocked += other.blocked;
        self.failures.extend(other.failures);
    }
}
