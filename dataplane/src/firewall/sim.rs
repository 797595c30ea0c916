//! A packet walker over the generic [`Ruleset`], for unit tests only.
//!
//! It gives the generic model the meaning the backends give it (jump, goto,
//! return, marks, sets), so the lowering's semantics can be checked without
//! root or a kernel. The conformance suite checks the real thing.

use std::net::IpAddr;

use margay_policy::desired::IpVersion;

use super::model::{Action, CtState, GenericRule, Hook, Match, ObjectName, Ruleset};

/// What a test packet looks like.
#[derive(Debug, Clone)]
pub struct Packet {
    pub iif: String,
    pub oif: String,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub icmp: Option<(u8, u8)>,
    /// `None`: a new connection.
    pub ct: Option<CtState>,
    pub mark: u32,
    /// Rules this packet was compared with so far (the per-packet cost).
    pub walked: usize,
}

impl Packet {
    /// A new TCP connection.
    pub fn tcp(iif: &str, oif: &str, src: &str, dst: &str, dport: u16) -> Self {
        Packet {
            iif: iif.to_owned(),
            oif: oif.to_owned(),
            proto: 6,
            src: src.parse().expect("test address"),
            dst: dst.parse().expect("test address"),
            sport: 40000,
            dport,
            icmp: None,
            ct: None,
            mark: 0,
            walked: 0,
        }
    }

    fn family(&self) -> IpVersion {
        match self.src {
            IpAddr::V4(_) => IpVersion::V4,
            IpAddr::V6(_) => IpVersion::V6,
        }
    }
}

/// The end of a hook's evaluation in our table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted (explicitly or by falling off the end).
    Accept,
    /// Dropped.
    Drop,
    /// Masqueraded (nat).
    Masquerade,
}

enum Outcome {
    Final(Verdict),
    Return,
}

/// Runs `pkt` through the chain `hook` calls; an unattached hook accepts.
pub fn run_hook(rs: &Ruleset, hook: Hook, pkt: &mut Packet) -> Verdict {
    let Some(chain) = rs.hooks.get(&hook) else {
        return Verdict::Accept;
    };
    match eval_chain(rs, chain, pkt, 0) {
        Outcome::Final(v) => v,
        Outcome::Return => Verdict::Accept,
    }
}

fn eval_chain(rs: &Ruleset, name: &ObjectName, pkt: &mut Packet, depth: usize) -> Outcome {
    assert!(depth < 32, "chain recursion too deep at {name}");
    let rules = rs
        .chains
        .get(name)
        .unwrap_or_else(|| panic!("jump to missing chain {name}"));
    for r in rules {
        pkt.walked += 1;
        if !r.matches.iter().all(|m| matches(rs, m, pkt)) {
            continue;
        }
        match act(rs, r, pkt, depth) {
            Some(o) => return o,
            None => continue,
        }
    }
    Outcome::Return
}

fn act(rs: &Ruleset, r: &GenericRule, pkt: &mut Packet, depth: usize) -> Option<Outcome> {
    match &r.action {
        Action::Accept => Some(Outcome::Final(Verdict::Accept)),
        Action::Drop => Some(Outcome::Final(Verdict::Drop)),
        Action::Masquerade => Some(Outcome::Final(Verdict::Masquerade)),
        Action::Return => Some(Outcome::Return),
        Action::Jump(c) => match eval_chain(rs, c, pkt, depth + 1) {
            Outcome::Final(v) => Some(Outcome::Final(v)),
            Outcome::Return => None,
        },
        Action::Goto(c) => Some(eval_chain(rs, c, pkt, depth + 1)),
        Action::SetMark { value, mask } => {
            pkt.mark = (pkt.mark & !mask) | value;
            None
        }
        Action::Log { .. } | Action::Continue => None,
    }
}

fn iface_ok(actual: &str, name: &str, prefix: bool) -> bool {
    if prefix {
        actual.starts_with(name)
    } else {
        actual == name
    }
}

fn in_set(rs: &Ruleset, set: &ObjectName, addr: IpAddr) -> bool {
    let s = rs
        .sets
        .get(set)
        .unwrap_or_else(|| panic!("rule uses missing set {set}"));
    s.members.iter().any(|n| n.contains(&addr))
}

fn matches(rs: &Ruleset, m: &Match, p: &Packet) -> bool {
    let ports_ok = |ports: &[margay_policy::desired::PortRange], port: u16, negated: bool| {
        ports.iter().any(|r| (r.lo..=r.hi).contains(&port)) != negated
    };
    match m {
        Match::Family(f) => p.family() == *f,
        Match::InInterface { name, prefix } => iface_ok(&p.iif, name, *prefix),
        Match::OutInterface { name, prefix } => iface_ok(&p.oif, name, *prefix),
        Match::Protocol { proto, negated } => (p.proto == *proto) != *negated,
        Match::SrcNet { net, negated } => net.contains(&p.src) != *negated,
        Match::DstNet { net, negated } => net.contains(&p.dst) != *negated,
        Match::SrcSet { set, negated } => in_set(rs, set, p.src) != *negated,
        Match::DstSet { set, negated } => in_set(rs, set, p.dst) != *negated,
        Match::SrcPorts { ports, negated } => ports_ok(ports, p.sport, *negated),
        Match::DstPorts { ports, negated } => ports_ok(ports, p.dport, *negated),
        Match::Icmp {
            icmp_type,
            code,
            negated,
        } => {
            let hit = p
                .icmp
                .is_some_and(|(t, c)| t == *icmp_type && code.is_none_or(|x| x == c));
            hit != *negated
        }
        Match::Mark { value, mask } => p.mark & mask == *value,
        Match::ConnState(s) => p.ct == Some(*s),
    }
}
