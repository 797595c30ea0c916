//! Read-back decoding of nf_tables messages: what margay takes from the
//! kernel's dump answers (chain names, each rule's chain, fingerprint comment
//! and hook jump, named sets and their interval elements).
//!
//! [`Session::observe`](super::Session::observe) feeds the kernel's answers
//! through these functions. [`observe_batch`] feeds the messages of an
//! encoded write batch through the same functions, applying them in order to
//! an empty table, so an encode → decode round trip can be checked without a
//! kernel (the fuzz target `nft_roundtrip` does exactly that).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use margay_policy::desired::IpVersion;

use super::nl_err;
use super::uapi::*;
use super::wire::{attrs, be32, find, messages, nested};
use crate::firewall::model::{AddressSet, ObjectName, ObservedRuleset};
use crate::firewall::nft::common::{hook_of_chain, range_to_nets, record_chain, RuleSeen, TABLE};
use crate::firewall::FirewallError;

/// A chain message: its name, and whether it is a base chain (has a hook).
pub(super) struct ChainSeen<'a> {
    pub name: &'a str,
    pub base: bool,
}

/// The chain named by a chain message of our table.
pub(super) fn chain(payload: &[u8]) -> Option<ChainSeen<'_>> {
    let a = attrs(payload);
    if find(&a, NFTA_CHAIN_TABLE).and_then(cstr) != Some(TABLE) {
        return None;
    }
    let name = find(&a, NFTA_CHAIN_NAME).and_then(cstr)?;
    Some(ChainSeen {
        name,
        base: find(&a, NFTA_CHAIN_HOOK).is_some(),
    })
}

/// Decodes a rule message; `None` for rules of chains that are not ours.
pub(super) fn rule(payload: &[u8]) -> Option<RuleSeen> {
    let a = attrs(payload);
    let chain = find(&a, NFTA_RULE_CHAIN).and_then(cstr)?;
    let text = find(&a, NFTA_RULE_USERDATA).and_then(comment);
    RuleSeen::of(chain, || jump_target(&a), text)
}

/// A named (not anonymous) address set of ours, with its family.
pub(super) fn set(payload: &[u8]) -> Option<(ObjectName, IpVersion)> {
    let a = attrs(payload);
    let flags = find(&a, NFTA_SET_FLAGS).map_or(0, be32);
    if flags & NFT_SET_ANONYMOUS != 0 {
        return None;
    }
    let family = match find(&a, NFTA_SET_KEY_LEN).map(be32) {
        Some(4) => IpVersion::V4,
        Some(16) => IpVersion::V6,
        _ => return None,
    };
    let name = find(&a, NFTA_SET_NAME)
        .and_then(cstr)
        .and_then(ObjectName::from_kernel)?;
    Some((name, family))
}

/// The set a set-element message is about.
pub(super) fn elements_set(payload: &[u8]) -> Option<&str> {
    find(&attrs(payload), NFTA_SET_ELEM_LIST_SET).and_then(cstr)
}

/// Appends the interval elements of a set-element message to `keys` as
/// (key, is-end). Err when an element's key does not fit `family`.
pub(super) fn elements(
    payload: &[u8],
    family: IpVersion,
    keys: &mut Vec<(u128, bool)>,
) -> Result<(), ()> {
    let a = attrs(payload);
    let Some(list) = find(&a, NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return Ok(());
    };
    let mut bad = false;
    for (_, elem) in attrs(list) {
        let e = attrs(elem);
        let key = find(&e, NFTA_SET_ELEM_KEY)
            .and_then(|k| nested(k, NFTA_DATA_VALUE))
            .and_then(|v| key_value(v, family));
        let end = find(&e, NFTA_SET_ELEM_FLAGS).map_or(0, be32) & NFT_SET_ELEM_INTERVAL_END != 0;
        match key {
            Some(k) => keys.push((k, end)),
            None => bad = true,
        }
    }
    if bad {
        Err(())
    } else {
        Ok(())
    }
}

pub(super) fn cstr(b: &[u8]) -> Option<&str> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    std::str::from_utf8(&b[..end]).ok()
}

/// The comment in rule userdata (TLV entry of type comment).
fn comment(ud: &[u8]) -> Option<&str> {
    let mut i = 0;
    while i + 2 <= ud.len() {
        let (ty, len) = (ud[i], usize::from(ud[i + 1]));
        let val = ud.get(i + 2..i + 2 + len)?;
        if ty == UDATA_RULE_COMMENT {
            return cstr(val);
        }
        i += 2 + len;
    }
    None
}

/// The chain a hook chain's rule jumps to.
fn jump_target(rule: &[(u16, &[u8])]) -> Option<ObjectName> {
    let exprs = find(rule, NFTA_RULE_EXPRESSIONS)?;
    for (_, e) in attrs(exprs) {
        let a = attrs(e);
        if find(&a, NFTA_EXPR_NAME).and_then(cstr) != Some("immediate") {
            continue;
        }
        let data = find(&a, NFTA_EXPR_DATA)?;
        let verdict =
            nested(data, NFTA_IMMEDIATE_DATA).and_then(|d| nested(d, NFTA_DATA_VERDICT))?;
        let chain = nested(verdict, NFTA_VERDICT_CHAIN).and_then(cstr)?;
        return ObjectName::from_kernel(chain);
    }
    None
}

fn key_value(v: &[u8], family: IpVersion) -> Option<u128> {
    match (family, v.len()) {
        (IpVersion::V4, 4) => Some(u128::from(u32::from_be_bytes(v.try_into().ok()?))),
        (IpVersion::V6, 16) => Some(u128::from_be_bytes(v.try_into().ok()?)),
        _ => None,
    }
}

fn addr_of(k: u128, family: IpVersion) -> IpAddr {
    match family {
        IpVersion::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(k).unwrap_or(u32::MAX))),
        IpVersion::V6 => IpAddr::V6(Ipv6Addr::from(k)),
    }
}

/// Rebuilds members from interval elements: each start runs to the next
/// end element (exclusive) or, without one, to the top of the family.
pub fn intervals_to_nets(
    mut keys: Vec<(u128, bool)>,
    family: IpVersion,
) -> Result<BTreeSet<IpNet>, FirewallError> {
    // Ends sort before starts at the same key (adjacent intervals).
    keys.sort_by_key(|&(k, end)| (k, !end));
    let top: u128 = match family {
        IpVersion::V4 => u128::from(u32::MAX),
        IpVersion::V6 => u128::MAX,
    };
    let mut out = BTreeSet::new();
    for (i, &(k, end)) in keys.iter().enumerate() {
        if end {
            continue;
        }
        let hi = match keys.get(i + 1) {
            Some(&(e, true)) if e > k => e - 1,
            _ => top,
        };
        out.extend(range_to_nets(addr_of(k, family), addr_of(hi, family))?);
    }
    Ok(out)
}

/// Interval elements held per set, with the set's family.
type SetKeys = BTreeMap<ObjectName, (IpVersion, Vec<(u128, bool)>)>;

/// What our table holds after the kernel applied `batch` (an encoded write
/// batch, as [`encode_batch`](super::encode_batch) makes) to an empty table,
/// read through the read-back decoders. Anonymous sets are skipped, as
/// read-back skips them. Err when a set element does not decode.
pub fn observe_batch(batch: &[u8]) -> Result<ObservedRuleset, FirewallError> {
    let mut out = ObservedRuleset::default();
    let mut keys: SetKeys = BTreeMap::new();
    for m in messages(batch) {
        let p = m.payload.get(4..).unwrap_or(&[]);
        let Some(op) = nft_msg(m.ty) else {
            continue;
        };
        match op {
            MSG_NEWCHAIN => {
                if let Some(c) = chain(p) {
                    record_chain(c.name, c.base, &mut out);
                }
            }
            MSG_DELCHAIN => {
                if let Some(n) = chain(p).and_then(|c| ObjectName::from_kernel(c.name)) {
                    out.chains.remove(&n);
                }
            }
            MSG_DELRULE => flush(&mut out, p),
            MSG_NEWRULE => {
                if let Some(seen) = rule(p) {
                    seen.record(&mut out);
                }
            }
            MSG_NEWSET => {
                if let Some((n, f)) = set(p) {
                    keys.entry(n).or_insert((f, Vec::new()));
                }
            }
            MSG_DELSET => {
                if let Some((n, _)) = named_set(p) {
                    keys.remove(&n);
                }
            }
            MSG_NEWSETELEM | MSG_DELSETELEM => apply_elements(&mut keys, p, op)?,
            _ => {}
        }
    }
    for (name, (family, k)) in keys {
        let members = intervals_to_nets(k, family)?;
        out.sets.insert(name, AddressSet { family, members });
    }
    Ok(out)
}

/// A flush (rule delete naming only a chain) empties the chain.
fn flush(out: &mut ObservedRuleset, p: &[u8]) {
    let Some(chain) = find(&attrs(p), NFTA_RULE_CHAIN).and_then(cstr) else {
        return;
    };
    if let Some(hook) = hook_of_chain(chain) {
        out.hooks.remove(&hook);
    } else if let Some(rules) = ObjectName::from_kernel(chain).and_then(|n| out.chains.get_mut(&n))
    {
        rules.clear();
    }
}

/// The set named by a set delete message (which carries no key length).
fn named_set(p: &[u8]) -> Option<(ObjectName, ())> {
    let name = find(&attrs(p), NFTA_SET_NAME).and_then(cstr)?;
    ObjectName::from_kernel(name).map(|n| (n, ()))
}

fn apply_elements(keys: &mut SetKeys, p: &[u8], op: u8) -> Result<(), FirewallError> {
    let Some(name) = elements_set(p).and_then(ObjectName::from_kernel) else {
        return Ok(());
    };
    let Some((family, held)) = keys.get_mut(&name) else {
        return Ok(());
    };
    let mut got = Vec::new();
    elements(p, *family, &mut got)
        .map_err(|()| nl_err("set elements", format!("bad key in {name}")))?;
    if op == MSG_NEWSETELEM {
        held.extend(got);
    } else {
        held.retain(|k| !got.contains(k));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::encode_batch;
    use super::*;
    use crate::firewall::model::{Action, GenericRule, Hook, Match};
    use crate::firewall::FirewallOp;

    fn name(s: &str) -> ObjectName {
        ObjectName::from_kernel(s).expect("our name")
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn a_batch_reads_back_as_what_its_ops_mean() {
        let rule = GenericRule {
            matches: vec![Match::Family(IpVersion::V4)],
            action: Action::Accept,
        };
        let members: BTreeSet<IpNet> = [
            net("10.0.0.0/25"),
            net("10.0.0.128/25"),
            net("255.255.255.0/24"),
        ]
        .into();
        let ops = vec![
            FirewallOp::CreateSet {
                name: name("margay-s"),
                family: IpVersion::V4,
            },
            FirewallOp::AddMembers {
                set: name("margay-s"),
                family: IpVersion::V4,
                members: members.clone(),
            },
            FirewallOp::ReplaceChain {
                name: name("margay-c"),
                rules: vec![rule.clone(), rule.clone()],
            },
            FirewallOp::AttachHook {
                hook: Hook::Forward,
                chain: name("margay-c"),
            },
        ];
        let got = observe_batch(&encode_batch(&ops).expect("encodes")).expect("decodes");
        let mut want = ObservedRuleset::default();
        want.chains
            .insert(name("margay-c"), vec![rule.fingerprint(); 2]);
        want.sets.insert(
            name("margay-s"),
            AddressSet {
                family: IpVersion::V4,
                members,
            },
        );
        want.hooks.insert(Hook::Forward, name("margay-c"));
        assert_eq!(got, want);
    }

    #[test]
    fn a_detached_hook_reads_back_as_gone() {
        let attach = FirewallOp::AttachHook {
            hook: Hook::Output,
            chain: name("margay-output"),
        };
        let detach = FirewallOp::DetachHook {
            hook: Hook::Output,
            chain: name("margay-output"),
        };
        let rebuilt = |ops: &[FirewallOp]| {
            observe_batch(&encode_batch(ops).expect("encodes")).expect("decodes")
        };
        assert!(rebuilt(&[attach.clone(), detach.clone()]).hooks.is_empty());
        let again = rebuilt(&[detach, attach]);
        assert_eq!(again.hooks.get(&Hook::Output), Some(&name("margay-output")));
    }

    #[test]
    fn a_member_of_the_other_family_is_refused_by_name() {
        let ops = [FirewallOp::AddMembers {
            set: name("margay-s"),
            family: IpVersion::V4,
            members: [net("10.0.0.1/32"), net("fd00::1/128")].into(),
        }];
        let e = encode_batch(&ops).expect_err("mixed families");
        assert!(e.to_string().contains("fd00::1/128"), "{e}");
    }

    #[test]
    fn a_rule_too_large_for_one_attribute_is_an_error_not_a_garbled_batch() {
        let rule = GenericRule {
            matches: vec![Match::Family(IpVersion::V4); 2000],
            action: Action::Accept,
        };
        let ops = [FirewallOp::ReplaceChain {
            name: name("margay-c"),
            rules: vec![rule],
        }];
        let e = encode_batch(&ops).expect_err("expressions over 64 KiB");
        assert!(e.to_string().contains("64 KiB"), "{e}");
    }
}
