//! The canonical byte encoding of a [`GenericRule`] that its fingerprint
//! hashes.
//!
//! The fingerprint is stored in the kernel next to each rule (nft rule
//! comment, iptables `--comment` tag) and compared on read-back, so it must
//! not change when code changes: not when a field or variant is renamed or
//! reordered, not with the compiler's `Debug` output. The encoding is
//! therefore written out by hand, field by field, with a fixed tag byte for
//! every variant and a version byte in front; only a deliberate change of
//! [`ENCODING_VERSION`] (or of this file) changes fingerprints.
//!
//! Encoding, version 1 (integers little-endian):
//! * rule: version `u8`, match count `u32`, each match, then the action;
//! * text (interface, set and chain names, log prefix): length `u32`, bytes;
//! * bool: `0` / `1`; `Option<u8>`: `0`, or `1` and the value;
//! * family: `4` / `6`; net: family, address bytes (4 / 16), prefix length;
//! * port list: count `u32`, then `lo` and `hi` as `u16` each;
//! * a match or an action: its tag byte (the constants below), then its
//!   fields in declaration order.
//!
//! Every variable-length part is length-prefixed, so the encoding is
//! injective: distinct rules have distinct encodings.

use ipnet::IpNet;
use margay_policy::desired::{IpVersion, PortRange};

use super::{Action, CtState, GenericRule, Match};

/// The version byte every encoding starts with.
pub const ENCODING_VERSION: u8 = 1;

// Match tags.
const M_FAMILY: u8 = 1;
const M_IN_INTERFACE: u8 = 2;
const M_OUT_INTERFACE: u8 = 3;
const M_PROTOCOL: u8 = 4;
const M_SRC_NET: u8 = 5;
const M_DST_NET: u8 = 6;
const M_SRC_SET: u8 = 7;
const M_DST_SET: u8 = 8;
const M_SRC_PORTS: u8 = 9;
const M_DST_PORTS: u8 = 10;
const M_ICMP: u8 = 11;
const M_MARK: u8 = 12;
const M_CONN_STATE: u8 = 13;

// Action tags.
const A_ACCEPT: u8 = 1;
const A_DROP: u8 = 2;
const A_RETURN: u8 = 3;
const A_JUMP: u8 = 4;
const A_GOTO: u8 = 5;
const A_LOG: u8 = 6;
const A_SET_MARK: u8 = 7;
const A_MASQUERADE: u8 = 8;
const A_CONTINUE: u8 = 9;

/// Where encoded bytes go: a buffer, or straight into a hash.
pub trait ByteSink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl ByteSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// FNV-1a, 64 bit, fed incrementally (the same value as
/// [`super::fnv1a64`] over the concatenated input).
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Fnv1a {
    /// The FNV-1a offset basis.
    pub fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    /// The hash of everything put so far.
    pub fn finish(self) -> u64 {
        self.0
    }
}

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

impl ByteSink for Fnv1a {
    fn put(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The canonical encoding of `rule` as bytes.
pub fn canonical_bytes(rule: &GenericRule) -> Vec<u8> {
    let mut out = Vec::new();
    encode_rule(rule, &mut out);
    out
}

/// FNV-1a of the canonical encoding of `rule`, without building it.
pub fn fingerprint(rule: &GenericRule) -> u64 {
    let mut h = Fnv1a::new();
    encode_rule(rule, &mut h);
    h.finish()
}

/// Writes the canonical encoding of `rule` into `out`.
pub fn encode_rule(rule: &GenericRule, out: &mut impl ByteSink) {
    out.put(&[ENCODING_VERSION]);
    put_len(out, rule.matches.len());
    for m in &rule.matches {
        encode_match(m, out);
    }
    encode_action(&rule.action, out);
}

fn encode_match(m: &Match, out: &mut impl ByteSink) {
    match m {
        Match::Family(f) => {
            out.put(&[M_FAMILY]);
            put_family(out, *f);
        }
        Match::InInterface { name, prefix } => {
            out.put(&[M_IN_INTERFACE]);
            put_str(out, name);
            put_bool(out, *prefix);
        }
        Match::OutInterface { name, prefix } => {
            out.put(&[M_OUT_INTERFACE]);
            put_str(out, name);
            put_bool(out, *prefix);
        }
        Match::Protocol { proto, negated } => out.put(&[M_PROTOCOL, *proto, u8::from(*negated)]),
        Match::SrcNet { net, negated } => put_net_match(out, M_SRC_NET, net, *negated),
        Match::DstNet { net, negated } => put_net_match(out, M_DST_NET, net, *negated),
        Match::SrcSet { set, negated } => put_set_match(out, M_SRC_SET, set.as_str(), *negated),
        Match::DstSet { set, negated } => put_set_match(out, M_DST_SET, set.as_str(), *negated),
        Match::SrcPorts { ports, negated } => put_ports_match(out, M_SRC_PORTS, ports, *negated),
        Match::DstPorts { ports, negated } => put_ports_match(out, M_DST_PORTS, ports, *negated),
        Match::Icmp {
            icmp_type,
            code,
            negated,
        } => {
            out.put(&[M_ICMP, *icmp_type]);
            match code {
                Some(c) => out.put(&[1, *c]),
                None => out.put(&[0]),
            }
            put_bool(out, *negated);
        }
        Match::Mark { value, mask } => {
            out.put(&[M_MARK]);
            out.put(&value.to_le_bytes());
            out.put(&mask.to_le_bytes());
        }
        Match::ConnState(state) => {
            let s = match state {
                CtState::EstablishedRelated => 1,
                CtState::Invalid => 2,
            };
            out.put(&[M_CONN_STATE, s]);
        }
    }
}

fn encode_action(a: &Action, out: &mut impl ByteSink) {
    match a {
        Action::Accept => out.put(&[A_ACCEPT]),
        Action::Drop => out.put(&[A_DROP]),
        Action::Return => out.put(&[A_RETURN]),
        Action::Jump(chain) => {
            out.put(&[A_JUMP]);
            put_str(out, chain.as_str());
        }
        Action::Goto(chain) => {
            out.put(&[A_GOTO]);
            put_str(out, chain.as_str());
        }
        Action::Log { prefix } => {
            out.put(&[A_LOG]);
            put_str(out, prefix);
        }
        Action::SetMark { value, mask } => {
            out.put(&[A_SET_MARK]);
            out.put(&value.to_le_bytes());
            out.put(&mask.to_le_bytes());
        }
        Action::Masquerade => out.put(&[A_MASQUERADE]),
        Action::Continue => out.put(&[A_CONTINUE]),
    }
}

/// A count or length as `u32` (saturating: rules never get near it).
fn put_len(out: &mut impl ByteSink, n: usize) {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    out.put(&n.to_le_bytes());
}

fn put_str(out: &mut impl ByteSink, s: &str) {
    put_len(out, s.len());
    out.put(s.as_bytes());
}

fn put_bool(out: &mut impl ByteSink, b: bool) {
    out.put(&[u8::from(b)]);
}

fn put_family(out: &mut impl ByteSink, f: IpVersion) {
    out.put(&[match f {
        IpVersion::V4 => 4,
        IpVersion::V6 => 6,
    }]);
}

fn put_net_match(out: &mut impl ByteSink, tag: u8, net: &IpNet, negated: bool) {
    out.put(&[tag]);
    match net {
        IpNet::V4(n) => {
            put_family(out, IpVersion::V4);
            out.put(&n.addr().octets());
        }
        IpNet::V6(n) => {
            put_family(out, IpVersion::V6);
            out.put(&n.addr().octets());
        }
    }
    out.put(&[net.prefix_len()]);
    put_bool(out, negated);
}

fn put_set_match(out: &mut impl ByteSink, tag: u8, set: &str, negated: bool) {
    out.put(&[tag]);
    put_str(out, set);
    put_bool(out, negated);
}

fn put_ports_match(out: &mut impl ByteSink, tag: u8, ports: &[PortRange], negated: bool) {
    out.put(&[tag]);
    put_len(out, ports.len());
    for p in ports {
        out.put(&p.lo.to_le_bytes());
        out.put(&p.hi.to_le_bytes());
    }
    put_bool(out, negated);
}

#[cfg(test)]
mod tests;
