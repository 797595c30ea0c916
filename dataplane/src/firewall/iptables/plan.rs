//! Turning [`FirewallOp`]s into the texts of one apply.
//!
//! Pure: given the ops and what we know of our kernel objects ([`Known`],
//! including the rules of the built-in chains hooks go into), it produces
//! an `ipset restore` text run first (creates, swaps, members), one
//! `iptables-restore --noflush` text per family holding a `*filter` and/or
//! `*nat` section, and an `ipset restore` text run last (destroys, once no
//! rule references the sets), plus what we will know after it succeeded.
//!
//! Tables: a chain belongs to `nat` when the nat postrouting hook calls it,
//! it masquerades, a nat chain jumps to it, or it already lives there;
//! otherwise to `filter`. Every chain exists in both families' tables
//! (rules that only match one family are only in that family's chain).
//! Within a section: all replaced chains are declared first (which creates
//! or flushes them), then their rules, then hook rules, then deletions:
//! every chain being deleted is declared (flushed) before any is deleted,
//! so a deleted chain that jumps to another deleted one never holds it
//! busy, whatever their names' order.
//!
//! The set half (the `ipset restore` texts and their undo) is in `sets`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use margay_policy::desired::IpVersion;

use super::ipset::SetHeader;
use super::rule::{self, check_ours, FamTag, RenderError};
use super::save::BuiltinRule;
use super::Table;
use crate::firewall::model::{Action, GenericRule, Hook, ObjectName};
use crate::firewall::{FirewallError, FirewallOp};
use sets::{set_intents, write_sets};

mod sets;

/// The comment on our hook rules in built-in chains.
pub const HOOK_COMMENT: &str = "margay-hook";
/// The two families, in the order we write them.
pub const FAMILIES: [IpVersion; 2] = [IpVersion::V4, IpVersion::V6];

/// What we know of our kernel objects (from read-back and our own writes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Our chains and the tables they exist in.
    pub chains: BTreeMap<ObjectName, BTreeSet<Table>>,
    /// Our sets and their headers.
    pub sets: BTreeMap<ObjectName, SetHeader>,
    /// The rules of the built-in chains our hooks live in. Hook rules are
    /// removed by their saved text, so a stale entry can only make an apply
    /// fail (and the next one re-read), never remove a rule not ours.
    pub builtins: Builtins,
}

/// Current rules of built-in chains, per family and hook.
pub type Builtins = BTreeMap<(IpVersion, Hook), Vec<BuiltinRule>>;

/// The texts of one apply, in the order they run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// `ipset restore` input run first: creates, swaps, member changes.
    pub ipset_pre: String,
    /// `iptables-restore --noflush` input.
    pub v4: String,
    /// `ip6tables-restore --noflush` input.
    pub v6: String,
    /// `ipset restore` input run last: destroys.
    pub ipset_post: String,
    /// How to take back `ipset_pre`: per line of it that changed something
    /// (1-based), the family of the set it changed and the inverse line;
    /// run newest first.
    pub ipset_undo: Vec<(usize, IpVersion, String)>,
    /// Bytes of `ipset_pre` already counted, and the lines in them.
    pre_counted: (usize, usize),
    /// What we know once all of it succeeded.
    pub(crate) next: Known,
}

impl Plan {
    /// The restore text for `family`.
    pub fn iptables(&self, family: IpVersion) -> &str {
        match family {
            IpVersion::V4 => &self.v4,
            IpVersion::V6 => &self.v6,
        }
    }

    /// What we know of the kernel once the plan ran.
    pub fn known_after(&self) -> &Known {
        &self.next
    }

    /// The `ipset restore` input that takes back what the first `applied`
    /// lines of `ipset_pre` (all of it with `usize::MAX`) did to sets of
    /// `families`, newest first. A set has one family and only rules of that
    /// family use it, so when one family's rules went in and the other's
    /// were refused, taking back the refused family's sets leaves each
    /// family whole: all new or all old.
    pub fn ipset_rollback(&self, applied: usize, families: &[IpVersion]) -> String {
        let mut out = String::new();
        for (_, _, line) in self
            .ipset_undo
            .iter()
            .rev()
            .filter(|(n, f, _)| *n <= applied && families.contains(f))
        {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Records `inverse` as the undo of the line just written to `ipset_pre`
    /// (a change to a set of `family`).
    fn undo_last(&mut self, family: IpVersion, inverse: String) {
        let (bytes, lines) = self.pre_counted;
        let tail = self.ipset_pre.get(bytes..).unwrap_or_default();
        let line = lines + tail.bytes().filter(|b| *b == b'\n').count();
        self.pre_counted = (self.ipset_pre.len(), line);
        self.ipset_undo.push((line, family, inverse));
    }

    /// True when nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.ipset_pre.is_empty()
            && self.v4.is_empty()
            && self.v6.is_empty()
            && self.ipset_post.is_empty()
    }
}

/// The built-in chain and table of a hook.
pub fn hook_chain(hook: Hook) -> (Table, &'static str) {
    match hook {
        Hook::Forward => (Table::Filter, "FORWARD"),
        Hook::Input => (Table::Filter, "INPUT"),
        Hook::Output => (Table::Filter, "OUTPUT"),
        Hook::NatPostrouting => (Table::Nat, "POSTROUTING"),
    }
}

/// Builds the plan for `ops`.
pub fn plan(ops: &[FirewallOp], known: &Known) -> Result<Plan, FirewallError> {
    let sets = set_intents(ops)?;
    let chains = chain_intents(ops)?;
    let hooks = hook_intents(ops)?;
    let detached = detach_intents(ops, &hooks)?;
    let mut next = known.clone();
    let mut p = Plan::default();
    write_sets(&mut p, &sets, known, &mut next);
    let set_family = |name: &ObjectName| match sets.get(name).and_then(|s| s.create) {
        Some(f) => Some(f),
        None => known.sets.get(name).and_then(|h| h.family),
    };
    let tables = assign_tables(&chains, &hooks, known);
    let metas: Metas = chains
        .iter()
        .filter_map(|(name, intent)| match intent {
            ChainIntent::Replace(rules) => Some((name, rules)),
            ChainIntent::Delete => None,
        })
        .map(|(name, rules)| {
            let m = rules
                .iter()
                .map(|r| (rule::rule_families(r, &set_family), r.fingerprint()));
            (name.clone(), m.collect())
        })
        .collect();
    for family in FAMILIES {
        let mut sections: BTreeMap<Table, Section> = BTreeMap::new();
        write_chains(&mut sections, &chains, &tables, known, family, &metas)?;
        write_hooks(&mut sections, &hooks, &mut next.builtins, family);
        write_detaches(
            &mut sections,
            (&chains, &detached),
            &mut next.builtins,
            family,
        );
        let text = match family {
            IpVersion::V4 => &mut p.v4,
            IpVersion::V6 => &mut p.v6,
        };
        for (table, s) in &sections {
            s.write(text, *table);
        }
    }
    for (name, intent) in &chains {
        match intent {
            ChainIntent::Replace(_) => {
                let t = tables.get(name).copied().unwrap_or(Table::Filter);
                next.chains.insert(name.clone(), [t].into());
            }
            ChainIntent::Delete => {
                next.chains.remove(name);
            }
        }
    }
    p.next = next;
    Ok(p)
}

/// A render refusal as the backend's error, saying where it happened.
fn invalid(place: &str, e: RenderError) -> FirewallError {
    FirewallError::Invalid {
        what: e.what,
        value: format!("{} (in {place})", e.value),
    }
}

// ----- chains -----

/// Per replaced chain, each rule's families and fingerprint.
type Metas = BTreeMap<ObjectName, Vec<(FamTag, u64)>>;

enum ChainIntent<'a> {
    Replace(&'a [GenericRule]),
    Delete,
}

fn chain_intents(
    ops: &[FirewallOp],
) -> Result<BTreeMap<ObjectName, ChainIntent<'_>>, FirewallError> {
    let mut out = BTreeMap::new();
    for op in ops {
        let (name, intent) = match op {
            FirewallOp::ReplaceChain { name, rules } => (name, ChainIntent::Replace(rules)),
            FirewallOp::DeleteChain { name } => (name, ChainIntent::Delete),
            _ => continue,
        };
        check_ours(name).map_err(|e| invalid("chain name", e))?;
        out.insert(name.clone(), intent);
    }
    Ok(out)
}

fn hook_intents(ops: &[FirewallOp]) -> Result<BTreeMap<Hook, ObjectName>, FirewallError> {
    let mut out = BTreeMap::new();
    for op in ops {
        if let FirewallOp::AttachHook { hook, chain } = op {
            check_ours(chain).map_err(|e| invalid("hook chain", e))?;
            out.insert(*hook, chain.clone());
        }
    }
    Ok(out)
}

/// The hooks to detach (one attached anew by the same ops stays).
fn detach_intents(
    ops: &[FirewallOp],
    attached: &BTreeMap<Hook, ObjectName>,
) -> Result<BTreeSet<Hook>, FirewallError> {
    let mut out = BTreeSet::new();
    for op in ops {
        if let FirewallOp::DetachHook { hook, chain } = op {
            check_ours(chain).map_err(|e| invalid("hook chain", e))?;
            if !attached.contains_key(hook) {
                out.insert(*hook);
            }
        }
    }
    Ok(out)
}

/// The table of every replaced chain (see the module doc).
fn assign_tables(
    chains: &BTreeMap<ObjectName, ChainIntent<'_>>,
    hooks: &BTreeMap<Hook, ObjectName>,
    known: &Known,
) -> BTreeMap<ObjectName, Table> {
    let mut nat: BTreeSet<&ObjectName> = known
        .chains
        .iter()
        .filter(|(_, t)| t.contains(&Table::Nat))
        .map(|(n, _)| n)
        .collect();
    nat.extend(
        hooks
            .iter()
            .filter(|(h, _)| **h == Hook::NatPostrouting)
            .map(|(_, c)| c),
    );
    for (name, intent) in chains {
        if let ChainIntent::Replace(rules) = intent {
            if rules.iter().any(|r| r.action == Action::Masquerade) {
                nat.insert(name);
            }
        }
    }
    loop {
        let before = nat.len();
        for (name, intent) in chains {
            if let (ChainIntent::Replace(rules), true) = (intent, nat.contains(name)) {
                nat.extend(rules.iter().filter_map(|r| match &r.action {
                    Action::Jump(t) | Action::Goto(t) => Some(t),
                    _ => None,
                }));
            }
        }
        if nat.len() == before {
            break;
        }
    }
    chains
        .keys()
        .map(|n| {
            (
                n.clone(),
                if nat.contains(n) {
                    Table::Nat
                } else {
                    Table::Filter
                },
            )
        })
        .collect()
}

/// One `*table ... COMMIT` section being built.
#[derive(Default)]
struct Section {
    decls: String,
    rules: String,
    hooks: String,
    /// Declarations (flushes) of the chains deleted below.
    delete_flushes: String,
    /// The `-X` lines, after every flush.
    deletes: String,
}

impl Section {
    fn write(&self, out: &mut String, table: Table) {
        if self.decls.is_empty()
            && self.rules.is_empty()
            && self.hooks.is_empty()
            && self.delete_flushes.is_empty()
            && self.deletes.is_empty()
        {
            return;
        }
        let _ = writeln!(out, "*{}", table.name());
        out.push_str(&self.decls);
        out.push_str(&self.rules);
        out.push_str(&self.hooks);
        out.push_str(&self.delete_flushes);
        out.push_str(&self.deletes);
        out.push_str("COMMIT\n");
    }
}

fn write_chains(
    sections: &mut BTreeMap<Table, Section>,
    chains: &BTreeMap<ObjectName, ChainIntent<'_>>,
    tables: &BTreeMap<ObjectName, Table>,
    known: &Known,
    family: IpVersion,
    metas: &Metas,
) -> Result<(), FirewallError> {
    let no_tables = BTreeSet::new();
    for (name, intent) in chains {
        let was_in = known.chains.get(name).unwrap_or(&no_tables);
        match intent {
            ChainIntent::Replace(rules) => {
                let table = tables.get(name).copied().unwrap_or(Table::Filter);
                let s = sections.entry(table).or_default();
                let _ = writeln!(s.decls, ":{name} - [0:0]");
                for (idx, r) in rules.iter().enumerate() {
                    let meta = metas.get(name).and_then(|m| m.get(idx)).copied();
                    let meta = meta.unwrap_or((FamTag::Both, r.fingerprint()));
                    rule::render_rule(&mut s.rules, name, idx, r, meta, family)
                        .map_err(|e| invalid(&format!("rule {idx} of chain {name}"), e))?;
                }
                // A chain that moved table leaves the old one.
                for old in was_in.iter().filter(|t| **t != table) {
                    delete_chain(sections.entry(*old).or_default(), name);
                }
            }
            ChainIntent::Delete => {
                for t in was_in {
                    delete_chain(sections.entry(*t).or_default(), name);
                }
            }
        }
    }
    Ok(())
}

/// Declaring first makes the delete work whether or not the chain (still)
/// exists and whatever it holds; all declarations of a section come before
/// its first `-X`, so no chain being deleted still references another.
fn delete_chain(s: &mut Section, name: &ObjectName) {
    let _ = writeln!(s.delete_flushes, ":{name} - [0:0]");
    let _ = writeln!(s.deletes, "-X {name}");
}

/// Puts each hook's rule first in its built-in chain, exactly once, unless
/// it already is; never touches rules that are not ours. `builtins` is
/// updated to what the chains hold afterwards.
fn write_hooks(
    sections: &mut BTreeMap<Table, Section>,
    hooks: &BTreeMap<Hook, ObjectName>,
    builtins: &mut Builtins,
    family: IpVersion,
) {
    for (hook, chain) in hooks {
        let (table, builtin) = hook_chain(*hook);
        let current = builtins.entry((family, *hook)).or_default();
        let ours = current.iter().filter(|r| r.ours.is_some()).count();
        let in_place = current.first().and_then(|r| r.ours.as_ref()) == Some(chain) && ours == 1;
        if in_place {
            continue;
        }
        let s = sections.entry(table).or_default();
        for r in current.iter().filter(|r| r.ours.is_some()) {
            let _ = writeln!(s.hooks, "-D {builtin} {}", r.spec);
        }
        let spec = format!("-m comment --comment {HOOK_COMMENT} -j {chain}");
        let _ = writeln!(s.hooks, "-I {builtin} 1 {spec}");
        current.retain(|r| r.ours.is_none());
        current.insert(
            0,
            BuiltinRule {
                spec,
                ours: Some(chain.clone()),
            },
        );
    }
}

/// Removes our rules from the built-in chains of detached hooks, and any
/// hook rule that calls a chain being deleted (so the delete succeeds even
/// for a rule read-back did not count as attached: not first, or in one
/// family only).
fn write_detaches(
    sections: &mut BTreeMap<Table, Section>,
    (chains, detached): (&BTreeMap<ObjectName, ChainIntent<'_>>, &BTreeSet<Hook>),
    builtins: &mut Builtins,
    family: IpVersion,
) {
    for ((f, hook), rules) in builtins.iter_mut() {
        if *f != family {
            continue;
        }
        let (table, builtin) = hook_chain(*hook);
        let detaching = detached.contains(hook);
        let doomed = |r: &BuiltinRule| {
            r.ours
                .as_ref()
                .is_some_and(|c| detaching || matches!(chains.get(c), Some(ChainIntent::Delete)))
        };
        for r in rules.iter().filter(|r| doomed(r)) {
            let s = sections.entry(table).or_default();
            let _ = writeln!(s.hooks, "-D {builtin} {}", r.spec);
        }
        rules.retain(|r| !doomed(r));
    }
}

#[cfg(test)]
mod tests;
