//! The set half of a plan: the net effect of the ops on each set, written
//! as `ipset restore` lines (creates, swaps through a temporary set, member
//! changes, destroys last), each change with the line that takes it back.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;
use margay_policy::desired::IpVersion;

use super::{invalid, Known, Plan};
use crate::firewall::iptables::ipset::{self, SetHeader};
use crate::firewall::iptables::rule::{self, check_ours};
use crate::firewall::model::ObjectName;
use crate::firewall::{FirewallError, FirewallOp};

/// The net effect of the ops on one set.
#[derive(Debug, Default)]
pub(super) struct SetIntent {
    /// Create (or keep) with this family.
    pub(super) create: Option<IpVersion>,
    /// A delete came before the create: start empty.
    fresh: bool,
    /// Destroy at the end.
    delete: bool,
    /// Member changes in op order (true = add).
    members: Vec<(bool, IpNet)>,
}

pub(super) fn set_intents(
    ops: &[FirewallOp],
) -> Result<BTreeMap<ObjectName, SetIntent>, FirewallError> {
    let mut out: BTreeMap<ObjectName, SetIntent> = BTreeMap::new();
    for op in ops {
        let name = match op {
            FirewallOp::CreateSet { name, .. } | FirewallOp::DeleteSet { name } => name,
            FirewallOp::AddMembers { set, .. } | FirewallOp::RemoveMembers { set, .. } => set,
            _ => continue,
        };
        check_ours(name).map_err(|e| invalid("set name", e))?;
        let i = out.entry(name.clone()).or_default();
        match op {
            FirewallOp::CreateSet { family, .. } => {
                i.create = Some(*family);
                i.delete = false;
            }
            FirewallOp::DeleteSet { .. } => {
                *i = SetIntent {
                    fresh: true,
                    delete: true,
                    ..SetIntent::default()
                };
            }
            FirewallOp::AddMembers { members, .. } => {
                i.members.extend(members.iter().map(|m| (true, *m)));
            }
            FirewallOp::RemoveMembers { members, .. } => {
                i.members.extend(members.iter().map(|m| (false, *m)));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Writes the `ipset restore` lines of every set intent into `p`, with
/// their undo lines, and records the sets that exist afterwards in `next`.
pub(super) fn write_sets(
    p: &mut Plan,
    sets: &BTreeMap<ObjectName, SetIntent>,
    known: &Known,
    next: &mut Known,
) {
    for (name, intent) in sets {
        if intent.delete {
            let _ = writeln!(p.ipset_post, "destroy {name}");
            next.sets.remove(name);
            continue;
        }
        let mut target = name.clone();
        let mut swap = None;
        let fam = intent
            .create
            .or_else(|| known.sets.get(name).and_then(|h| h.family))
            .or_else(|| intent.members.first().map(|(_, n)| rule::net_family(n)))
            .unwrap_or(IpVersion::V4);
        if let Some(family) = intent.create {
            match known.sets.get(name) {
                None => {
                    ipset::write_create(&mut p.ipset_pre, name.as_str(), family);
                    p.undo_last(fam, format!("destroy {name}"));
                }
                Some(h) if h.swappable(family) && (intent.fresh || !h.conforms(family)) => {
                    // New content or other options: fill a temporary set
                    // and swap it in, so rules using the set never see it
                    // missing or empty, and the old content stays in the
                    // temporary set until the rules went in (rollback).
                    let tmp = ObjectName::generate("tmp", name.as_str());
                    ipset::write_create(&mut p.ipset_pre, tmp.as_str(), family);
                    p.undo_last(fam, format!("destroy {tmp}"));
                    let _ = writeln!(p.ipset_pre, "flush {tmp}");
                    swap = Some(tmp.clone());
                    target = tmp;
                }
                Some(h) if h.conforms(family) => {}
                Some(_) => {
                    // Another type or family cannot be swapped; this fails
                    // (and says so) while a rule still uses the old set.
                    // When it succeeds no rule used the set, so a rollback
                    // leaves it absent (the next apply re-reads).
                    let _ = writeln!(p.ipset_pre, "destroy {name}");
                    ipset::write_create(&mut p.ipset_pre, name.as_str(), family);
                    p.undo_last(fam, format!("destroy {name}"));
                }
            }
            next.sets.insert(name.clone(), SetHeader::ours(family));
        }
        for (add, net) in member_changes_in_write_order(&intent.members) {
            let (verb, inverse) = if add { ("add", "del") } else { ("del", "add") };
            let mut lines = String::new();
            ipset::write_member(&mut lines, verb, target.as_str(), &net);
            for line in lines.lines() {
                let _ = writeln!(p.ipset_pre, "{line}");
                if swap.is_none() {
                    let rest = line.strip_prefix(verb).unwrap_or(line);
                    p.undo_last(fam, format!("{inverse}{rest}"));
                }
            }
        }
        if let Some(tmp) = swap {
            let _ = writeln!(p.ipset_pre, "swap {tmp} {name}");
            p.undo_last(fam, format!("swap {tmp} {name}"));
            let _ = writeln!(p.ipset_post, "destroy {tmp}");
        }
    }
}

/// The net effect of `changes` (the last change of a member wins), in the
/// order to write it: additions first, then removals. `hash:net` sets take
/// nested members, so a net giving way to one that covers it is never
/// missing in between.
fn member_changes_in_write_order(changes: &[(bool, IpNet)]) -> Vec<(bool, IpNet)> {
    let net_effect: BTreeMap<IpNet, bool> = changes.iter().map(|(add, n)| (*n, *add)).collect();
    let (adds, removals): (Vec<_>, Vec<_>) = net_effect
        .into_iter()
        .map(|(net, add)| (add, net))
        .partition(|(add, _)| *add);
    adds.into_iter().chain(removals).collect()
}
