//! The per-interface object manager that routes, neighbours and sysctls
//! share: what we want per interface, what the kernel has, which objects
//! wait for their interface, which are blocked after a refusal, and what is
//! forgotten when an interface vanishes.
//!
//! [`IfaceObjects`] is pure: [`IfaceObjects::plan`] sorts every out-of-sync
//! object into a [`Step`] to carry out, waiting (its interface is missing or
//! down) or blocked; the kind-specific manager turns steps into kernel
//! writes and hands each result back as an [`Outcome`] to
//! [`IfaceObjects::record`]. What differs between kinds (key and value
//! types, which interface an object lives on, what it needs of it, how it
//! is deleted, how a failure is reported) is the [`IfaceObject`] trait.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use margay_policy::names::InterfaceName;

use super::links::LinkCache;
use super::report::{FlushReport, ObjectKind, WriteFailure, WriteKind};
use super::tracker::{DeltaTracker, Op};

/// What an object needs of its interface before it can be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkNeed {
    /// The interface exists and is up (routes, neighbours).
    Up,
    /// The interface exists, up or not (sysctls).
    Exists,
}

/// What happens to an object we no longer want.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletePolicy {
    /// Always send a delete (routes: deleted by destination).
    Send,
    /// Send a delete while the interface is up; otherwise the kernel already
    /// dropped the object with its interface (neighbours).
    SendWhileUp,
    /// Never revert it in the kernel; just stop tracking it (sysctls).
    Forget,
}

/// Why an out-of-sync object is not being retried right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// An object that is not ours holds the key (a foreign route); retried
    /// when it goes, or at the next full repair.
    Conflict,
    /// The kernel refused it (errno, `None` when the reply was lost);
    /// retried on link or address changes and full repairs.
    Rejected(Option<i32>),
}

/// One kind of per-interface kernel object.
pub trait IfaceObject {
    /// What identifies an object (its text goes into failure reports).
    type Key: Ord + Clone + std::fmt::Display;
    /// What we want the object to be.
    type Value: Eq + Clone;
    /// The kind, for failure reports and logs.
    const KIND: ObjectKind;
    /// What an upsert needs of the object's interface.
    const NEEDS: LinkNeed;
    /// How an object we no longer want goes.
    const DELETE: DeletePolicy;

    /// The interface the object lives on (`None`: it needs none, e.g. a
    /// route via a gateway).
    fn iface<'a>(key: &'a Self::Key, value: &'a Self::Value) -> Option<&'a InterfaceName>;

    /// The interface a failed write of `key` is reported against.
    fn failed_iface(_key: &Self::Key) -> Option<InterfaceName> {
        None
    }

    /// The workload address a failed write of `key` is reported against.
    fn failed_addr(_key: &Self::Key) -> Option<IpAddr> {
        None
    }

    /// The report of a refused write of `key`.
    fn failure(key: &Self::Key, op: WriteKind, errno: Option<i32>) -> WriteFailure {
        WriteFailure {
            kind: Self::KIND,
            object: key.to_string(),
            iface: Self::failed_iface(key),
            addr: Self::failed_addr(key),
            op,
            errno,
        }
    }
}

/// Objects whose keys sort by interface first, so one interface's objects
/// form a key range.
pub trait KeyedByIface: IfaceObject {
    /// Every possible key of `iface`.
    fn keys_of(iface: &InterfaceName) -> RangeInclusive<Self::Key>;
}

/// One write to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<K, V> {
    /// Create or replace `key` as `value`; `existing` is what the kernel
    /// holds (`None`: nothing of ours); `ifindex` is its interface's index
    /// when it has one (`None` with [`LinkNeed::Exists`], or no interface).
    Upsert {
        key: K,
        value: V,
        existing: Option<V>,
        ifindex: Option<u32>,
    },
    /// Delete `key`; `ifindex` as for upserts.
    Delete { key: K, ifindex: Option<u32> },
}

/// The result of planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<K, V> {
    /// Writes to carry out, in key order.
    pub steps: Vec<Step<K, V>>,
    /// Objects waiting for their interface.
    pub waiting: usize,
    /// Out-of-sync objects blocked after a refusal.
    pub blocked: usize,
}

/// A plan of part of the out-of-sync objects, with the last key it
/// looked at (`None` when none was left).
pub type PlanChunk<K, V> = (Plan<K, V>, Option<K>);

/// What the kernel made of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written or deleted.
    Done,
    /// It already had the value (nothing written).
    Unchanged,
    /// A delete found nothing.
    AlreadyGone,
    /// The interface went away under us: the object waits again.
    Waiting,
    /// Refused (errno, `None` when the reply was lost); `block` says whether
    /// and why to stop retrying it for now.
    Failed {
        errno: Option<i32>,
        block: Option<Blocked>,
    },
}

/// Desired and observed objects of one kind, and those blocked.
#[derive(Debug, Clone)]
pub struct IfaceObjects<T: IfaceObject> {
    tracker: DeltaTracker<T::Key, T::Value>,
    blocked: BTreeMap<T::Key, Blocked>,
}

impl<T: IfaceObject> Default for IfaceObjects<T> {
    fn default() -> Self {
        IfaceObjects {
            tracker: DeltaTracker::new(),
            blocked: BTreeMap::new(),
        }
    }
}

impl<T: IfaceObject> IfaceObjects<T> {
    /// The tracker (for stats and tests).
    pub fn tracker(&self) -> &DeltaTracker<T::Key, T::Value> {
        &self.tracker
    }

    /// The tracker, to record what the kernel has or what we want.
    pub fn tracker_mut(&mut self) -> &mut DeltaTracker<T::Key, T::Value> {
        &mut self.tracker
    }

    /// Objects blocked after a refusal.
    pub fn blocked(&self) -> &BTreeMap<T::Key, Blocked> {
        &self.blocked
    }

    /// Keeps only the blocks for which `keep` holds.
    pub fn retain_blocked(&mut self, keep: impl FnMut(&T::Key, &mut Blocked) -> bool) {
        self.blocked.retain(keep);
    }

    /// Lifts the block on `key`; true when there was one.
    pub fn unblock(&mut self, key: &T::Key) -> bool {
        self.blocked.remove(key).is_some()
    }

    /// Gives every blocked object another chance.
    pub fn unblock_all(&mut self) {
        self.blocked.clear();
    }

    /// Replaces every desired object and lifts every block.
    pub fn replace_desired(&mut self, desired: BTreeMap<T::Key, T::Value>) {
        self.tracker.replace_desired(desired);
        self.blocked.clear();
    }

    /// Replaces the observed side (after a full dump or to force re-reads).
    pub fn replace_observed(&mut self, observed: BTreeMap<T::Key, T::Value>) {
        self.tracker.replace_observed(observed);
    }

    /// The kernel dropped the objects on interface `name` (gone, down, or
    /// re-created with defaults): forget we saw them.
    pub fn forget_iface(&mut self, name: &str) {
        self.tracker
            .forget_observed(|k, v| T::iface(k, v).is_some_and(|i| i.as_str() == name));
    }

    /// Sorts every out-of-sync object into a step, waiting or blocked.
    /// Deletes that need no request (see [`DeletePolicy`]) are recorded as
    /// done here.
    pub fn plan(&mut self, links: &LinkCache) -> Plan<T::Key, T::Value> {
        let ops = self.tracker.pending();
        self.plan_ops(ops, links)
    }

    /// [`Self::plan`] for at most `max` out-of-sync objects after key
    /// `after`, with the last key looked at (`None`: nothing was left).
    pub fn plan_after(
        &mut self,
        links: &LinkCache,
        after: Option<&T::Key>,
        max: usize,
    ) -> PlanChunk<T::Key, T::Value> {
        let ops = self.tracker.pending_after(after, max);
        let last = ops.last().map(|op| op.key().clone());
        (self.plan_ops(ops, links), last)
    }

    fn plan_ops(
        &mut self,
        ops: Vec<Op<T::Key, T::Value>>,
        links: &LinkCache,
    ) -> Plan<T::Key, T::Value> {
        let mut plan = Plan {
            steps: Vec::new(),
            waiting: 0,
            blocked: 0,
        };
        for op in ops {
            if self.blocked.contains_key(op.key()) {
                plan.blocked += 1;
                continue;
            }
            match op {
                Op::Upsert {
                    key,
                    value,
                    existing,
                } => match link_for::<T>(T::iface(&key, &value), links) {
                    Some(ifindex) => plan.steps.push(Step::Upsert {
                        key,
                        value,
                        existing,
                        ifindex,
                    }),
                    None => plan.waiting += 1,
                },
                Op::Delete { key, existing } => self.plan_delete(key, &existing, links, &mut plan),
            }
        }
        plan
    }

    fn plan_delete(
        &mut self,
        key: T::Key,
        existing: &T::Value,
        links: &LinkCache,
        plan: &mut Plan<T::Key, T::Value>,
    ) {
        match T::DELETE {
            DeletePolicy::Send => plan.steps.push(Step::Delete { key, ifindex: None }),
            DeletePolicy::SendWhileUp => {
                match T::iface(&key, existing).and_then(|i| links.usable(i)) {
                    Some(i) => plan.steps.push(Step::Delete {
                        key,
                        ifindex: Some(i),
                    }),
                    None => self.tracker.mark_deleted(&key),
                }
            }
            DeletePolicy::Forget => self.tracker.mark_deleted(&key),
        }
    }

    /// Records what the kernel made of one step.
    pub fn record(
        &mut self,
        key: T::Key,
        op: WriteKind,
        outcome: Outcome,
        report: &mut FlushReport,
    ) {
        match (op, outcome) {
            (WriteKind::Upsert, Outcome::Done) => {
                self.tracker.mark_upserted(&key);
                report.upserts += 1;
            }
            (WriteKind::Delete, Outcome::Done) => {
                self.tracker.mark_deleted(&key);
                report.deletes += 1;
            }
            (_, Outcome::Unchanged) => self.tracker.mark_upserted(&key),
            (_, Outcome::AlreadyGone) => self.tracker.mark_deleted(&key),
            (_, Outcome::Waiting) => report.waiting += 1,
            (_, Outcome::Failed { errno, block }) => {
                report.failures.push(T::failure(&key, op, errno));
                report.blocked += 1;
                if let Some(b) = block {
                    self.blocked.insert(key, b);
                }
            }
        }
    }
}

impl<T: KeyedByIface> IfaceObjects<T> {
    /// Replaces the desired objects of `iface` with `objects` (empty: the
    /// endpoint is gone), lifting their blocks.
    pub fn set_iface(
        &mut self,
        iface: &InterfaceName,
        objects: impl IntoIterator<Item = (T::Key, T::Value)>,
    ) {
        for key in self.tracker.desired_keys_in(T::keys_of(iface)) {
            self.tracker.remove_desired(&key);
            self.blocked.remove(&key);
        }
        for (key, value) in objects {
            self.tracker.set_desired(key, value);
        }
    }
}

/// Whether an object on `iface` can be written now: `Some(index)` (the
/// index when the interface must be up), or `None` to wait.
fn link_for<T: IfaceObject>(
    iface: Option<&InterfaceName>,
    links: &LinkCache,
) -> Option<Option<u32>> {
    let Some(iface) = iface else {
        return Some(None);
    };
    match T::NEEDS {
        LinkNeed::Up => links.usable(iface).map(Some),
        LinkNeed::Exists => links.exists(iface.as_str()).then_some(None),
    }
}

#[cfg(test)]
mod tests;
