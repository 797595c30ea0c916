//! Rendering one generic rule as `iptables-restore` lines for one family.
//!
//! Pure text generation, no I/O. Every line carries a comment tag
//! (`<fingerprint>:<index>:<families>[:<piece>/<pieces>]`) that read-back
//! uses to rebuild the generic chain from the two per-family kernel chains.
//! A rule that cannot match in a family is left out of that family; a rule
//! that can match nowhere becomes a counter-only line in the IPv4 chain so
//! the chain still has every index. Port lists longer than one `multiport`
//! match allows become several kernel rules ("pieces") with disjoint ports.
//!
//! The comment tag and the families a rule lands in are in `comment`.

use std::fmt::{self, Write as _};

use ipnet::IpNet;
use margay_policy::desired::{IpVersion, PortRange};

use crate::firewall::model::{Action, CtState, GenericRule, Match, ObjectName};

mod comment;

use comment::write_head;
pub use comment::{net_family, rule_families, tag, FamTag};

/// Longest `--log-prefix` iptables accepts.
const MAX_LOG_PREFIX: usize = 29;
/// `multiport` takes at most 15 ports, a range counting as two.
const MULTIPORT_WEIGHT: usize = 15;
/// Longest interface name (IFNAMSIZ - 1).
const MAX_IFACE_LEN: usize = 15;

/// Why a rule cannot be rendered (a programming error upstream: the
/// lowering only produces renderable rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// What was refused.
    pub what: &'static str,
    /// The refused value.
    pub value: String,
}

impl RenderError {
    fn new(what: &'static str, value: impl fmt::Display) -> Self {
        RenderError {
            what,
            value: value.to_string(),
        }
    }
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refusing to render {} {:?}", self.what, self.value)
    }
}

/// A chain name we may write: ours (`margay-` prefix, checked charset).
pub fn check_ours(name: &ObjectName) -> Result<(), RenderError> {
    match ObjectName::from_kernel(name.as_str()) {
        Some(_) => Ok(()),
        None => Err(RenderError::new(
            "name that is not ours (margay-, <= 28 chars)",
            name,
        )),
    }
}

/// Appends the kernel lines of rule `idx` of `chain` for `family` to `out`;
/// `fam` is [`rule_families`] and `fp` the fingerprint of `rule` (both
/// computed once for the two families). Nothing is appended when the rule
/// has no lines in that family.
pub fn render_rule(
    out: &mut String,
    chain: &ObjectName,
    idx: usize,
    rule: &GenericRule,
    (fam, fp): (FamTag, u64),
    family: IpVersion,
) -> Result<(), RenderError> {
    if !fam.present_in(family) {
        return Ok(());
    }
    let body = if fam.matches_in(family) {
        RuleBody::build(rule, family)?
    } else {
        None
    };
    let Some(body) = body else {
        // Can never match here: keep the index with a counter-only line.
        write_head(out, chain, (fp, idx, fam, 0, 1));
        out.push('\n');
        return Ok(());
    };
    let pieces = body.piece_count();
    for piece in 0..pieces {
        write_head(out, chain, (fp, idx, fam, piece, pieces));
        out.push_str(&body.common);
        body.write_piece_ports(out, piece);
        out.push_str(&body.target);
        out.push('\n');
    }
    Ok(())
}

/// A rule's text split into the part shared by all pieces and the chunked
/// positive port lists that make the pieces.
struct RuleBody {
    common: String,
    /// Per positive port list: its direction flag (`--sports`/`--dports`)
    /// and its chunks.
    port_lists: Vec<(&'static str, Vec<String>)>,
    target: String,
}

impl RuleBody {
    /// `None` when the rule can never match in `family`.
    fn build(rule: &GenericRule, family: IpVersion) -> Result<Option<Self>, RenderError> {
        let mut b = Builder::new(family);
        for m in &rule.matches {
            if !b.add(m)? {
                return Ok(None);
            }
        }
        if !b.finish_protocol()? {
            return Ok(None);
        }
        let target = render_action(&rule.action)?;
        Ok(Some(RuleBody {
            common: b.text,
            port_lists: b.port_lists,
            target,
        }))
    }

    fn piece_count(&self) -> usize {
        self.port_lists.iter().map(|(_, c)| c.len()).product()
    }

    /// Writes the port chunks of piece number `piece` (mixed radix over the lists).
    fn write_piece_ports(&self, out: &mut String, mut piece: usize) {
        for (flag, chunks) in &self.port_lists {
            let chunk = &chunks[piece % chunks.len()];
            piece /= chunks.len();
            let _ = write!(out, " -m multiport {flag} {chunk}");
        }
    }
}

/// Accumulates the match text of one rule for one family.
struct Builder {
    family: IpVersion,
    text: String,
    protos: Vec<u8>,
    not_protos: Vec<u8>,
    needs_ports: bool,
    icmp: bool,
    src_net_used: bool,
    dst_net_used: bool,
    in_iface: bool,
    out_iface: bool,
    port_lists: Vec<(&'static str, Vec<String>)>,
}

impl Builder {
    fn new(family: IpVersion) -> Self {
        Builder {
            family,
            text: String::new(),
            protos: Vec::new(),
            not_protos: Vec::new(),
            needs_ports: false,
            icmp: false,
            src_net_used: false,
            dst_net_used: false,
            in_iface: false,
            out_iface: false,
            port_lists: Vec::new(),
        }
    }

    /// Adds one match; `Ok(false)` when it can never hold in this family.
    fn add(&mut self, m: &Match) -> Result<bool, RenderError> {
        match m {
            Match::Family(f) => return Ok(*f == self.family),
            Match::InInterface { name, prefix } => {
                let first = !std::mem::replace(&mut self.in_iface, true);
                self.iface("-i", name, *prefix, first)?;
            }
            Match::OutInterface { name, prefix } => {
                let first = !std::mem::replace(&mut self.out_iface, true);
                self.iface("-o", name, *prefix, first)?;
            }
            Match::Protocol {
                proto,
                negated: false,
            } => self.protos.push(*proto),
            Match::Protocol {
                proto,
                negated: true,
            } => self.not_protos.push(*proto),
            Match::SrcNet { net, negated } => return Ok(self.net(true, net, *negated)),
            Match::DstNet { net, negated } => return Ok(self.net(false, net, *negated)),
            Match::SrcSet { set, negated } => self.set(set, "src", *negated)?,
            Match::DstSet { set, negated } => self.set(set, "dst", *negated)?,
            Match::SrcPorts { ports, negated } => {
                return Ok(self.ports("--sports", ports, *negated))
            }
            Match::DstPorts { ports, negated } => {
                return Ok(self.ports("--dports", ports, *negated))
            }
            Match::Icmp {
                icmp_type,
                code,
                negated,
            } => self.icmp_match(*icmp_type, *code, *negated),
            Match::Mark { value, mask } => {
                let _ = write!(self.text, " -m mark --mark 0x{value:x}/0x{mask:x}");
            }
            Match::ConnState(state) => {
                let s = match state {
                    CtState::EstablishedRelated => "RELATED,ESTABLISHED",
                    CtState::Invalid => "INVALID",
                };
                let _ = write!(self.text, " -m conntrack --ctstate {s}");
            }
        }
        Ok(true)
    }

    fn iface(
        &mut self,
        flag: &str,
        name: &str,
        prefix: bool,
        first: bool,
    ) -> Result<(), RenderError> {
        if !first {
            return Err(RenderError::new("second interface match", flag));
        }
        let max = if prefix {
            MAX_IFACE_LEN - 1
        } else {
            MAX_IFACE_LEN
        };
        let charset_ok = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !charset_ok || name.len() > max || (name.is_empty() && !prefix) {
            return Err(RenderError::new("interface name", name));
        }
        let plus = if prefix { "+" } else { "" };
        let _ = write!(self.text, " {flag} {name}{plus}");
        Ok(())
    }

    /// `-s`/`-d` for the first net of a side, `iprange` for further ones.
    fn net(&mut self, src: bool, net: &IpNet, negated: bool) -> bool {
        if net_family(net) != self.family {
            // Never in a net of the other family: "not in it" always holds.
            return negated;
        }
        let net = net.trunc();
        let bang = if negated { "! " } else { "" };
        let used = if src {
            &mut self.src_net_used
        } else {
            &mut self.dst_net_used
        };
        if !std::mem::replace(used, true) {
            let flag = if src { "-s" } else { "-d" };
            let _ = write!(self.text, " {bang}{flag} {net}");
        } else {
            let flag = if src { "--src-range" } else { "--dst-range" };
            let (lo, hi) = (net.network(), net.broadcast());
            let _ = write!(self.text, " -m iprange {bang}{flag} {lo}-{hi}");
        }
        true
    }

    fn set(&mut self, set: &ObjectName, dir: &str, negated: bool) -> Result<(), RenderError> {
        check_ours(set)?;
        let bang = if negated { "! " } else { "" };
        let _ = write!(self.text, " -m set {bang}--match-set {set} {dir}");
        Ok(())
    }

    /// Positive lists become pieces; negated ones one `multiport` per chunk.
    fn ports(&mut self, flag: &'static str, ports: &[PortRange], negated: bool) -> bool {
        self.needs_ports = true;
        let chunks = port_chunks(ports);
        if negated {
            for c in chunks {
                let _ = write!(self.text, " -m multiport ! {flag} {c}");
            }
            return true;
        }
        if chunks.is_empty() {
            // "In any of no ranges" never holds.
            return false;
        }
        self.port_lists.push((flag, chunks));
        true
    }

    fn icmp_match(&mut self, icmp_type: u8, code: Option<u8>, negated: bool) {
        self.icmp = true;
        let bang = if negated { "! " } else { "" };
        let (module, flag) = match self.family {
            IpVersion::V4 => ("icmp", "--icmp-type"),
            IpVersion::V6 => ("icmp6", "--icmpv6-type"),
        };
        let _ = write!(self.text, " -m {module} {bang}{flag} {icmp_type}");
        if let Some(c) = code {
            let _ = write!(self.text, "/{c}");
        }
    }

    /// Resolves the protocol matches into at most one `-p` (prepended);
    /// `Ok(false)` when they contradict each other or the other matches.
    fn finish_protocol(&mut self) -> Result<bool, RenderError> {
        self.protos.sort_unstable();
        self.protos.dedup();
        let implied = match (self.icmp, self.family) {
            (false, _) => None,
            (true, IpVersion::V4) => Some(1u8),
            (true, IpVersion::V6) => Some(58u8),
        };
        let positive = match (self.protos.as_slice(), implied) {
            ([], None) => None,
            ([], Some(i)) => Some(i),
            ([p], None) => Some(*p),
            ([p], Some(i)) if *p == i => Some(i),
            _ => return Ok(false),
        };
        let proto = match positive {
            Some(p) if self.not_protos.contains(&p) => return Ok(false),
            Some(p) => format!(" -p {p}"),
            None => match self.not_protos.as_slice() {
                [] => String::new(),
                [n] => format!(" ! -p {n}"),
                _ => {
                    return Err(RenderError::new(
                        "several negated protocols without a positive one",
                        format!("{:?}", self.not_protos),
                    ))
                }
            },
        };
        if self.needs_ports && !matches!(positive, Some(6 | 17 | 33 | 132 | 136)) {
            if positive.is_some() {
                return Ok(false);
            }
            return Err(RenderError::new("port match without a port protocol", ""));
        }
        self.text.insert_str(0, &proto);
        Ok(true)
    }
}

/// Sorted, merged port ranges, cut into `multiport` lists of weight <= 15.
pub fn port_chunks(ports: &[PortRange]) -> Vec<String> {
    let mut sorted: Vec<PortRange> = ports
        .iter()
        .map(|p| PortRange {
            lo: p.lo.min(p.hi),
            hi: p.lo.max(p.hi),
        })
        .collect();
    sorted.sort_unstable();
    let mut merged: Vec<PortRange> = Vec::new();
    for p in sorted {
        match merged.last_mut() {
            Some(last) if u32::from(p.lo) <= u32::from(last.hi) + 1 => last.hi = last.hi.max(p.hi),
            _ => merged.push(p),
        }
    }
    let mut chunks = Vec::new();
    let (mut cur, mut weight) = (String::new(), 0);
    for p in merged {
        let w = if p.lo == p.hi { 1 } else { 2 };
        if weight + w > MULTIPORT_WEIGHT {
            chunks.push(std::mem::take(&mut cur));
            weight = 0;
        }
        if !cur.is_empty() {
            cur.push(',');
        }
        if p.lo == p.hi {
            let _ = write!(cur, "{}", p.lo);
        } else {
            let _ = write!(cur, "{}:{}", p.lo, p.hi);
        }
        weight += w;
    }
    if !cur.is_empty() {
        chunks.push(cur);
    }
    chunks
}

/// The ` -j ...` / ` -g ...` part (empty for a counter-only rule).
fn render_action(action: &Action) -> Result<String, RenderError> {
    Ok(match action {
        Action::Accept => " -j ACCEPT".into(),
        Action::Drop => " -j DROP".into(),
        Action::Return => " -j RETURN".into(),
        Action::Jump(c) => {
            check_ours(c)?;
            format!(" -j {c}")
        }
        Action::Goto(c) => {
            check_ours(c)?;
            format!(" -g {c}")
        }
        Action::Log { prefix } => render_log(prefix)?,
        Action::SetMark { value, mask } => {
            // xmark: mark = (mark & !m) ^ v; with m = mask | value this is
            // (mark & !mask) | value, the generic meaning.
            format!(" -j MARK --set-xmark 0x{value:x}/0x{:x}", mask | value)
        }
        Action::Masquerade => " -j MASQUERADE".into(),
        Action::Continue => String::new(),
    })
}

fn render_log(prefix: &str) -> Result<String, RenderError> {
    let ok = prefix.len() <= MAX_LOG_PREFIX
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'_' | b'.' | b':' | b'-'));
    if !ok {
        return Err(RenderError::new("log prefix", prefix));
    }
    if prefix.is_empty() {
        Ok(" -j LOG".into())
    } else {
        Ok(format!(" -j LOG --log-prefix \"{prefix}\""))
    }
}

#[cfg(test)]
mod tests;
