//! The iptables + ipset backend.
//!
//! Renders [`FirewallOp`]s into `iptables-restore --noflush` input (one
//! process per family per apply, holding a `*filter` and/or `*nat`
//! section, each committed as a whole) and `ipset restore -exist` input,
//! using the variant (nf_tables or legacy) the host already uses, never
//! both ([`variant`]).
//!
//! Ownership: every chain and set we make is named `margay-...`
//! ([`ObjectName`](crate::firewall::model::ObjectName) guarantees the
//! charset and the 28-byte limit); every rule of ours carries a comment tag
//! with its generic fingerprint ([`rule`]); our hook rules are the jumps to
//! `margay-` chains in `INPUT`/`FORWARD`/`OUTPUT` and nat `POSTROUTING`,
//! kept first and single, and nothing else in those chains is touched.
//! Rules of one family only go to that family's chain; read-back merges
//! the two families again ([`save`]).
//!
//! Restarts: read-back ([`FirewallBackend::observe`]) costs two
//! `iptables-save` and one `ipset save`; the manager diffs it against the
//! desired state and we apply only the difference: nothing is flushed
//! wholesale, and nothing is removed on exit. What read-back found (chain
//! tables, set headers, the built-in chains' rules) is kept and updated by
//! our own writes, so an apply runs no reads: just the restores it needs.
//!
//! Atomicity: each restore commits a table at once, but the ipset and the
//! per-family restores are separate processes. They run in an order where
//! every intermediate state is consistent (sets exist before rules use
//! them and go after the last rule using them). When a restore is refused,
//! the set changes made for the families whose rules did not go in are
//! taken back (the plan carries their inverse; a replaced set's old
//! content waits in a temporary set until the rules went in), so sets and
//! rules of a family change together or not at all. After a failure our
//! knowledge of the kernel is dropped and re-read before the next apply.

mod dump;
mod exec;
pub mod forward_accept;
pub mod ipset;
pub mod plan;
pub mod rule;
pub mod save;
mod savecache;
pub mod variant;

use std::time::Instant;

use margay_policy::desired::IpVersion;

pub use self::plan::Plan;
use self::plan::{Known, FAMILIES};
pub use self::variant::Variant;
use super::model::ObservedRuleset;
use super::{FirewallBackend, FirewallError, FirewallOp};
use crate::netns::NetnsTarget;

/// An iptables table we write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `filter`: the forward, input and output hooks.
    Filter,
    /// `nat`: the postrouting hook (masquerade).
    Nat,
}

impl Table {
    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
        }
    }

    /// The table called `name`, if it is one we use.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "filter" => Some(Table::Filter),
            "nat" => Some(Table::Nat),
            _ => None,
        }
    }
}

/// Programs `margay-` chains and sets with iptables-restore and ipset.
#[derive(Debug)]
pub struct IptablesBackend {
    netns: NetnsTarget,
    variant: Variant,
    /// What we know of our objects; `None` until read (or after a failure).
    known: Option<Known>,
    /// The last `iptables-save` pair with its nf_tables generation.
    saves: savecache::SaveCache,
}

impl IptablesBackend {
    /// A backend for `netns`, using the variant the host already uses.
    pub fn new(netns: &NetnsTarget) -> Result<Self, FirewallError> {
        let variant = variant::detect(netns)?;
        tracing::info!(variant = variant.name(), "iptables variant chosen");
        Ok(Self::with_variant(netns, variant))
    }

    /// A backend for `netns` with a given variant.
    pub fn with_variant(netns: &NetnsTarget, variant: Variant) -> Self {
        IptablesBackend {
            netns: netns.clone(),
            variant,
            known: None,
            saves: savecache::SaveCache::new(variant),
        }
    }

    /// The variant in use.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// How many read-backs ran `iptables-save` (the others found the
    /// nf_tables generation unchanged and reused the last one).
    pub fn save_runs(&self) -> u64 {
        self.saves.saves()
    }

    /// Both families' `iptables-save`, or the last pair when the nf_tables
    /// generation has not moved since it was read.
    fn save_both(&mut self) -> Result<(save::FamilyDump, save::FamilyDump), FirewallError> {
        let before = self.saves.generation(&self.netns);
        if let Some(hit) = self.saves.get(before) {
            return Ok(hit);
        }
        let v4 = self.save(IpVersion::V4)?;
        let v6 = self.save(IpVersion::V6)?;
        let after = self.saves.generation(&self.netns);
        self.saves
            .put(before.filter(|b| Some(*b) == after), &v4, &v6);
        Ok((v4, v6))
    }

    /// Builds the texts `ops` would write, reading our objects first if
    /// they are not known yet (at start, or after a failed apply).
    pub fn plan(&mut self, ops: &[FirewallOp]) -> Result<Plan, FirewallError> {
        if self.known.is_none() {
            self.observe()?;
        }
        match &self.known {
            Some(known) => plan::plan(ops, known),
            None => plan::plan(ops, &Known::default()),
        }
    }

    /// Runs a plan made by [`IptablesBackend::plan`].
    pub fn apply(&mut self, plan: Plan) -> Result<(), FirewallError> {
        let started = Instant::now();
        let result = self.run_plan(&plan);
        tracing::debug!(
            variant = self.variant.name(),
            ipset_bytes = plan.ipset_pre.len() + plan.ipset_post.len(),
            v4_bytes = plan.v4.len(),
            v6_bytes = plan.v6.len(),
            duration_ms = started.elapsed().as_millis() as u64,
            ok = result.is_ok(),
            "iptables apply"
        );
        self.known = match result {
            Ok(()) => Some(plan.next),
            Err(_) => None,
        };
        result
    }

    /// Removes every chain of ours this variant shows, with the hook rules
    /// in built-in chains that call them (as identified by read-back: the
    /// `margay-` names and jumps to them). Returns how many chains went.
    pub fn remove_chains(&mut self) -> Result<usize, FirewallError> {
        self.observe()?;
        let ops: Vec<FirewallOp> = self
            .known
            .iter()
            .flat_map(|k| k.chains.keys())
            .map(|name| FirewallOp::DeleteChain { name: name.clone() })
            .collect();
        self.write(&ops)?;
        Ok(ops.len())
    }

    /// Destroys every `margay-` set (call once no rule of ours uses them).
    /// Returns how many sets went.
    pub fn remove_sets(&mut self) -> Result<usize, FirewallError> {
        self.observe()?;
        let ops: Vec<FirewallOp> = self
            .known
            .iter()
            .flat_map(|k| k.sets.keys())
            .map(|name| FirewallOp::DeleteSet { name: name.clone() })
            .collect();
        self.write(&ops)?;
        Ok(ops.len())
    }

    /// Sets first, rules next (one restore per family), set removals last.
    /// When the sets or a family's rules are refused, what `ipset_pre` did
    /// to the sets of every family whose rules did not go in is taken
    /// back: each family is left all old or all new ([`Plan::ipset_rollback`]).
    fn run_plan(&self, plan: &Plan) -> Result<(), FirewallError> {
        if let Err(e) = self.ipset_restore(&plan.ipset_pre) {
            // ipset restore stops at the line it names: the ones before it
            // ran. Without a line number nothing is taken back (an undo of a
            // step that did not run could be wrong); the next apply re-reads.
            let ran = match &e {
                FirewallError::Tool { stderr, .. } => {
                    exec::failing_line(stderr).map_or(0, |n| n.saturating_sub(1))
                }
                _ => 0,
            };
            self.roll_back_sets(plan, ran, &FAMILIES);
            return Err(e);
        }
        for (i, family) in FAMILIES.into_iter().enumerate() {
            let text = plan.iptables(family);
            if text.is_empty() {
                continue;
            }
            let bin = self.variant.restore_bin(family);
            if let Err(e) = exec::run(&self.netns, bin, Variant::RESTORE_ARGS, Some(text)) {
                let not_in = FAMILIES.get(i..).unwrap_or_default();
                tracing::error!(
                    tool = bin,
                    error = %e,
                    "iptables-restore refused our input; rolling back the set changes of the families it did not write"
                );
                self.roll_back_sets(plan, usize::MAX, not_in);
                return Err(e);
            }
        }
        self.ipset_restore(&plan.ipset_post)
    }

    /// Takes back what the first `ran` lines of the plan's `ipset_pre` did
    /// to sets of `families`.
    fn roll_back_sets(&self, plan: &Plan, ran: usize, families: &[IpVersion]) {
        let undo = plan.ipset_rollback(ran, families);
        if undo.is_empty() {
            return;
        }
        if let Err(e) = self.ipset_restore(&undo) {
            tracing::error!(error = %e, "could not roll back set changes; re-reading before the next apply");
        }
    }

    fn ipset_restore(&self, text: &str) -> Result<(), FirewallError> {
        if text.is_empty() {
            return Ok(());
        }
        exec::run(&self.netns, "ipset", &["-exist", "restore"], Some(text)).map(drop)
    }

    /// One family's `iptables-save`, all tables (one process; only filter
    /// and nat are looked at).
    fn save(&self, family: IpVersion) -> Result<save::FamilyDump, FirewallError> {
        let text = dump::save(&self.netns, self.variant, family)?;
        Ok(save::parse(&text))
    }
}

impl FirewallBackend for IptablesBackend {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn observe(&mut self) -> Result<ObservedRuleset, FirewallError> {
        self.known = None;
        let (v4, v6) = self.save_both()?;
        let merged = save::merge(&v4, &v6);
        let sets = ipset::parse_save(&exec::run(&self.netns, "ipset", &["save"], None)?);
        let builtins = [(IpVersion::V4, v4), (IpVersion::V6, v6)]
            .into_iter()
            .flat_map(|(f, dump)| dump.builtins.into_iter().map(move |(h, r)| ((f, h), r)))
            .collect();
        self.known = Some(Known {
            chains: merged.tables,
            sets: sets.headers.clone(),
            builtins,
        });
        Ok(ObservedRuleset {
            chains: merged.chains,
            sets: sets.observed(),
            hooks: merged.hooks,
        })
    }

    fn write(&mut self, ops: &[FirewallOp]) -> Result<(), FirewallError> {
        if ops.is_empty() {
            return Ok(());
        }
        let plan = self.plan(ops)?;
        self.apply(plan)
    }

    fn observer(&self) -> Result<Option<Box<dyn FirewallBackend>>, FirewallError> {
        Ok(Some(Box::new(IptablesBackend {
            netns: self.netns.clone(),
            variant: self.variant,
            known: None,
            saves: self.saves.share(),
        })))
    }
}
