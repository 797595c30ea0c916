//! The nftables netlink encoder, round trip: structured ops built from the
//! fuzzer's bytes are encoded (`encode_batch`, the bytes `Session::write`
//! sends), checked for well-formed netlink framing, decoded through the
//! read-back decoders (`observe_batch`), and compared with what the ops
//! mean: every chain with its rules' fingerprints, every set with its
//! members, every hook's jump.
//!
//! The ops are consistent the way the diff makes them (members of a set's
//! own family mostly, never overlapping members, removals of present
//! members only), but rule content is anything: an encoder error is an
//! acceptable answer to bad content; a panic, a malformed buffer or a
//! read-back that differs is not.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use arbitrary::{Result, Unstructured};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use margay_dataplane::firewall::model::{
    Action, AddressSet, CtState, GenericRule, Hook, Match, ObjectName, ObservedRuleset,
};
use margay_dataplane::firewall::nft::netlink::{encode_batch, observe_batch};
use margay_dataplane::firewall::FirewallOp;
use margay_policy::desired::{IpVersion, PortRange};

/// The fuzz target `nft_roundtrip`.
pub fn nft_roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut model = Model::default();
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < 64 {
        match model.op(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    let Ok(batch) = encode_batch(&ops) else {
        return;
    };
    well_formed(&batch);
    let got = observe_batch(&batch).unwrap_or_else(|e| panic!("read-back failed: {e}\n{ops:?}"));
    assert_eq!(got, model.expected(&ops), "read-back differs\n{ops:?}");
}

/// What the ops mean, and the state the generator keeps them consistent with.
#[derive(Default)]
struct Model {
    sets: std::collections::BTreeMap<ObjectName, AddressSet>,
}

impl Model {
    fn op(&mut self, u: &mut Unstructured) -> Result<FirewallOp> {
        Ok(match u.int_in_range(0..=7u8)? {
            0 => FirewallOp::ReplaceChain {
                name: name(u)?,
                rules: (0..u.arbitrary_len::<u16>()?)
                    .map(|_| rule(u))
                    .collect::<Result<_>>()?,
            },
            1 => FirewallOp::DeleteChain { name: name(u)? },
            2 => {
                let (name, family) = (name(u)?, version(u)?);
                self.sets.entry(name.clone()).or_insert(AddressSet {
                    family,
                    members: BTreeSet::new(),
                });
                FirewallOp::CreateSet { name, family }
            }
            3 => {
                let name = name(u)?;
                self.sets.remove(&name);
                FirewallOp::DeleteSet { name }
            }
            4 => self.add(u)?,
            5 => self.remove(u)?,
            6 => FirewallOp::AttachHook {
                hook: hook(u)?,
                chain: name(u)?,
            },
            _ => FirewallOp::DetachHook {
                hook: hook(u)?,
                chain: name(u)?,
            },
        })
    }

    fn add(&mut self, u: &mut Unstructured) -> Result<FirewallOp> {
        let set = name(u)?;
        let family = match self.sets.get(&set) {
            Some(s) => s.family,
            None => version(u)?,
        };
        let mut members = BTreeSet::new();
        for _ in 0..u.arbitrary_len::<[u8; 5]>()? {
            // Mostly the set's family; now and then the other one.
            let f = if u.ratio(1u8, 16)? {
                flip(family)
            } else {
                family
            };
            let n = net(u, f)?;
            let held = self.sets.get(&set).map(|s| &s.members);
            let clash = |m: &IpNet| m.contains(&n) || n.contains(m);
            if !members.iter().any(clash) && !held.is_some_and(|h| h.iter().any(clash)) {
                members.insert(n);
            }
        }
        if let Some(s) = self.sets.get_mut(&set) {
            s.members.extend(members.iter().copied());
        }
        Ok(FirewallOp::AddMembers {
            set,
            family,
            members,
        })
    }

    fn remove(&mut self, u: &mut Unstructured) -> Result<FirewallOp> {
        let names: Vec<ObjectName> = self.sets.keys().cloned().collect();
        let Some(set) = (!names.is_empty())
            .then(|| u.choose(&names))
            .transpose()?
            .cloned()
        else {
            return Ok(FirewallOp::DeleteChain { name: name(u)? });
        };
        let s = self.sets.get_mut(&set).expect("chosen from the keys");
        let mut members = BTreeSet::new();
        for m in s.members.clone() {
            if u.arbitrary()? {
                s.members.remove(&m);
                members.insert(m);
            }
        }
        Ok(FirewallOp::RemoveMembers {
            set,
            family: s.family,
            members,
        })
    }

    /// The table after `ops`: the encoder applies chain deletions last.
    fn expected(&self, ops: &[FirewallOp]) -> ObservedRuleset {
        let mut out = ObservedRuleset {
            sets: self.sets.clone(),
            ..ObservedRuleset::default()
        };
        for op in ops {
            match op {
                FirewallOp::ReplaceChain { name, rules } => {
                    out.chains.insert(
                        name.clone(),
                        rules.iter().map(GenericRule::fingerprint).collect(),
                    );
                }
                FirewallOp::AttachHook { hook, chain } => {
                    out.hooks.insert(*hook, chain.clone());
                }
                FirewallOp::DetachHook { hook, .. } => {
                    out.hooks.remove(hook);
                }
                _ => {}
            }
        }
        for op in ops {
            if let FirewallOp::DeleteChain { name } = op {
                out.chains.remove(name);
            }
        }
        out
    }
}

fn hook(u: &mut Unstructured) -> Result<Hook> {
    Ok(*u.choose(&[
        Hook::Forward,
        Hook::Input,
        Hook::Output,
        Hook::NatPostrouting,
    ])?)
}

fn flip(f: IpVersion) -> IpVersion {
    match f {
        IpVersion::V4 => IpVersion::V6,
        IpVersion::V6 => IpVersion::V4,
    }
}

fn version(u: &mut Unstructured) -> Result<IpVersion> {
    Ok(if u.arbitrary()? {
        IpVersion::V4
    } else {
        IpVersion::V6
    })
}

/// A generated object name (few distinct ones, so ops meet each other).
fn name(u: &mut Unstructured) -> Result<ObjectName> {
    let kind = *u.choose(&["p", "t4", "t6", "wl"])?;
    let detail: String = if u.ratio(1u8, 8)? {
        u.arbitrary()?
    } else {
        u.int_in_range(0..=5u8)?.to_string()
    };
    Ok(ObjectName::generate(kind, &detail))
}

/// A network address (host bits cleared, as the sets hold them).
fn net(u: &mut Unstructured, f: IpVersion) -> Result<IpNet> {
    Ok(match f {
        IpVersion::V4 => {
            let a = Ipv4Addr::from(u.arbitrary::<u32>()?);
            let len = u.int_in_range(0..=32)?;
            IpNet::V4(Ipv4Net::new(a, len).expect("len <= 32").trunc())
        }
        IpVersion::V6 => {
            let a = Ipv6Addr::from(u.arbitrary::<u128>()?);
            let len = u.int_in_range(0..=128)?;
            IpNet::V6(Ipv6Net::new(a, len).expect("len <= 128").trunc())
        }
    })
}

fn any_net(u: &mut Unstructured) -> Result<IpNet> {
    let f = version(u)?;
    net(u, f)
}

/// Text of mostly allowed characters (interface names, log prefixes).
fn word(u: &mut Unstructured, max: usize) -> Result<String> {
    let len = u.int_in_range(0..=max)?;
    (0..len)
        .map(|_| Ok(char::from(*u.choose(b"abz09_-.: \xe9/")?)))
        .collect()
}

fn ports(u: &mut Unstructured) -> Result<Vec<PortRange>> {
    (0..u.arbitrary_len::<[u16; 2]>()?)
        .map(|_| {
            Ok(PortRange {
                lo: u.arbitrary()?,
                hi: u.arbitrary()?,
            })
        })
        .collect()
}

fn rule(u: &mut Unstructured) -> Result<GenericRule> {
    let matches = (0..u.arbitrary_len::<u8>()?)
        .map(|_| matcher(u))
        .collect::<Result<_>>()?;
    Ok(GenericRule {
        matches,
        action: action(u)?,
    })
}

fn matcher(u: &mut Unstructured) -> Result<Match> {
    Ok(match u.int_in_range(0..=13u8)? {
        0 => Match::Family(version(u)?),
        1 => Match::InInterface {
            name: word(u, 17)?,
            prefix: u.arbitrary()?,
        },
        2 => Match::OutInterface {
            name: word(u, 17)?,
            prefix: u.arbitrary()?,
        },
        3 => Match::Protocol {
            proto: u.arbitrary()?,
            negated: u.arbitrary()?,
        },
        4 => Match::SrcNet {
            net: any_net(u)?,
            negated: u.arbitrary()?,
        },
        5 => Match::DstNet {
            net: any_net(u)?,
            negated: u.arbitrary()?,
        },
        6 => Match::SrcSet {
            set: name(u)?,
            negated: u.arbitrary()?,
        },
        7 => Match::DstSet {
            set: name(u)?,
            negated: u.arbitrary()?,
        },
        8 => Match::SrcPorts {
            ports: ports(u)?,
            negated: u.arbitrary()?,
        },
        9 => Match::DstPorts {
            ports: ports(u)?,
            negated: u.arbitrary()?,
        },
        10 => Match::Icmp {
            icmp_type: u.arbitrary()?,
            code: u.arbitrary()?,
            negated: u.arbitrary()?,
        },
        11 => Match::Mark {
            value: u.arbitrary()?,
            mask: u.arbitrary()?,
        },
        12 => Match::ConnState(CtState::EstablishedRelated),
        _ => Match::ConnState(CtState::Invalid),
    })
}

fn action(u: &mut Unstructured) -> Result<Action> {
    Ok(match u.int_in_range(0..=8u8)? {
        0 => Action::Accept,
        1 => Action::Drop,
        2 => Action::Return,
        3 => Action::Jump(name(u)?),
        4 => Action::Goto(name(u)?),
        5 => Action::Log {
            prefix: word(u, 66)?,
        },
        6 => Action::SetMark {
            value: u.arbitrary()?,
            mask: u.arbitrary()?,
        },
        7 => Action::Masquerade,
        _ => Action::Continue,
    })
}

/// Netlink framing: messages tile the buffer, attributes tile each payload
/// after the 4-byte nfgenmsg, and nested attributes tile theirs.
fn well_formed(buf: &[u8]) {
    let mut at = 0;
    while at < buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        assert!(
            len >= 20 && at + len <= buf.len(),
            "message length {len} at {at}"
        );
        attrs_tile(&buf[at + 20..at + len], 0);
        at += (len + 3) & !3;
    }
    assert_eq!(at, buf.len(), "messages do not tile the batch");
}

fn attrs_tile(buf: &[u8], depth: usize) {
    assert!(depth < 16, "nesting too deep");
    let mut at = 0;
    while at < buf.len() {
        assert!(at + 4 <= buf.len(), "attribute header cut at {at}");
        let len = usize::from(u16::from_ne_bytes([buf[at], buf[at + 1]]));
        let ty = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]);
        assert!(
            len >= 4 && at + len <= buf.len(),
            "attribute length {len} at {at} of {}",
            buf.len()
        );
        if ty & 0x8000 != 0 {
            attrs_tile(&buf[at + 4..at + len], depth + 1);
        }
        at += (len + 3) & !3;
    }
}
