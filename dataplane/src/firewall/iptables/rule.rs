//! Rendering one generic rule as `iptables-restore` lines for one family.
//!
//! Pure text generation, no I/O. Every line carries a comment tag
//! (`<fingerprint>:<index>:<families>[:<piece>/<pieces>]`) that read-back
//! uses to rebuild the generic chain from the two per-family kernel chains.
//! A rule that cannot match in a family is left out of that family; a rule
//! that can match nowhere becomes a counter-only line in the IPv4 chain so
//! the chain still has every index. Port lists longer than one `multiport`
//! match allows become several kernel rules ("pieces") with disjoint ports.

use std::fmt::{self, Write as _};

use ipnet::IpNet;
use margay_policy::desired::{IpVersion, PortRange};

use crate::firewall::model::{Action, CtState, GenericRule, Match, ObjectName};

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

/// Which families' chains hold a rule (the third field of the comment tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FamTag {
    /// Only the IPv4 chain.
    V4,
    /// Only the IPv6 chain.
    V6,
    /// Both chains.
    Both,
    /// Can match nowhere: a counter-only line in the IPv4 chain.
    Neither,
}

impl FamTag {
    /// The tag character.
    pub fn as_char(self) -> char {
        match self {
            FamTag::V4 => '4',
            FamTag::V6 => '6',
            FamTag::Both => 'b',
            FamTag::Neither => 'n',
        }
    }

    /// Parses the tag character.
    pub fn from_char(c: &str) -> Option<Self> {
        match c {
            "4" => Some(FamTag::V4),
            "6" => Some(FamTag::V6),
            "b" => Some(FamTag::Both),
            "n" => Some(FamTag::Neither),
            _ => None,
        }
    }

    /// True when the rule has kernel lines in `family`'s chain.
    pub fn present_in(self, family: IpVersion) -> bool {
        matches!(
            (self, family),
            (FamTag::Both, _)
                | (FamTag::V4 | FamTag::Neither, IpVersion::V4)
                | (FamTag::V6, IpVersion::V6)
        )
    }

    /// True when the rule's lines carry real matches (not a placeholder).
    fn matches_in(self, family: IpVersion) -> bool {
        self != FamTag::Neither && self.present_in(family)
    }
}

/// The family of a net.
pub fn net_family(net: &IpNet) -> IpVersion {
    match net {
        IpNet::V4(_) => IpVersion::V4,
        IpNet::V6(_) => IpVersion::V6,
    }
}

/// The families a rule can match in. A `Family` match, a positive net or a
/// positive set of one family, or an ICMP match on protocol 1 / 58 limits
/// it; negated nets and sets of the other family do not (they always hold
/// there). `set_family` knows the family of the sets being programmed.
pub fn rule_families(
    rule: &GenericRule,
    set_family: &dyn Fn(&ObjectName) -> Option<IpVersion>,
) -> FamTag {
    let (mut v4, mut v6) = (true, true);
    let mut limit = |f: IpVersion| match f {
        IpVersion::V4 => v6 = false,
        IpVersion::V6 => v4 = false,
    };
    let has_icmp = rule.matches.iter().any(|m| matches!(m, Match::Icmp { .. }));
    for m in &rule.matches {
        match m {
            Match::Family(f) => limit(*f),
            Match::SrcNet {
                net,
                negated: false,
            }
            | Match::DstNet {
                net,
                negated: false,
            } => limit(net_family(net)),
            Match::SrcSet {
                set,
                negated: false,
            }
            | Match::DstSet {
                set,
                negated: false,
            } => {
                if let Some(f) = set_family(set) {
                    limit(f);
                }
            }
            Match::Protocol {
                proto: 1,
                negated: false,
            } if has_icmp => limit(IpVersion::V4),
            Match::Protocol {
                proto: 58,
                negated: false,
            } if has_icmp => limit(IpVersion::V6),
            _ => {}
        }
    }
    match (v4, v6) {
        (true, true) => FamTag::Both,
        (true, false) => FamTag::V4,
        (false, true) => FamTag::V6,
        (false, false) => FamTag::Neither,
    }
}

/// The comment tag of one kernel line of a rule.
pub fn tag(fp: u64, idx: usize, fam: FamTag, piece: usize, pieces: usize) -> String {
    let mut s = String::new();
    write_tag(&mut s, fp, idx, fam, piece, pieces);
    s
}

/// Appends [`tag`] to `out`.
fn write_tag(out: &mut String, fp: u64, idx: usize, fam: FamTag, piece: usize, pieces: usize) {
    let _ = write!(out, "{fp:016x}:{idx}:{}", fam.as_char());
    if pieces > 1 {
        let _ = write!(out, ":{piece}/{pieces}");
    }
}

/// Appends `-A <chain> -m comment --comment <tag>`.
fn write_head(out: &mut String, chain: &ObjectName, tag: (u64, usize, FamTag, usize, usize)) {
    out.push_str("-A ");
    out.push_str(chain.as_str());
    out.push_str(" -m comment --comment ");
    let (fp, idx, fam, piece, pieces) = tag;
    write_tag(out, fp, idx, fam, piece, pieces);
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
mod tests {
    use super::*;
    use crate::firewall::model::Action;

    fn name(s: &'static str) -> ObjectName {
        ObjectName::fixed(s)
    }

    fn r(matches: Vec<Match>, action: Action) -> GenericRule {
        GenericRule { matches, action }
    }

    fn render(rule: &GenericRule, family: IpVersion) -> String {
        let fam = rule_families(rule, &|_| None);
        let mut out = String::new();
        render_rule(
            &mut out,
            &name("margay-c"),
            3,
            rule,
            (fam, rule.fingerprint()),
            family,
        )
        .expect("renders");
        out
    }

    fn tagged(rule: &GenericRule, fam: char) -> String {
        format!(
            "-A margay-c -m comment --comment {:016x}:3:{fam}",
            rule.fingerprint()
        )
    }

    #[test]
    fn plain_rule_renders_in_both_families_with_its_tag() {
        let rule = r(
            vec![Match::ConnState(CtState::EstablishedRelated)],
            Action::Accept,
        );
        let want = format!(
            "{} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
            tagged(&rule, 'b')
        );
        assert_eq!(render(&rule, IpVersion::V4), want);
        assert_eq!(render(&rule, IpVersion::V6), want);
    }

    #[test]
    fn family_match_limits_the_rule_to_one_family() {
        let rule = r(
            vec![
                Match::Family(IpVersion::V6),
                Match::Protocol {
                    proto: 58,
                    negated: false,
                },
                Match::Icmp {
                    icmp_type: 135,
                    code: None,
                    negated: false,
                },
            ],
            Action::Accept,
        );
        assert_eq!(render(&rule, IpVersion::V4), "");
        assert_eq!(
            render(&rule, IpVersion::V6),
            format!(
                "{} -p 58 -m icmp6 --icmpv6-type 135 -j ACCEPT\n",
                tagged(&rule, '6')
            )
        );
    }

    #[test]
    fn icmp_implies_its_protocol_and_code() {
        let rule = r(
            vec![
                Match::Family(IpVersion::V4),
                Match::Icmp {
                    icmp_type: 8,
                    code: Some(0),
                    negated: true,
                },
            ],
            Action::Drop,
        );
        assert_eq!(
            render(&rule, IpVersion::V4),
            format!(
                "{} -p 1 -m icmp ! --icmp-type 8/0 -j DROP\n",
                tagged(&rule, '4')
            )
        );
    }

    #[test]
    fn nets_sets_interfaces_marks_and_second_nets() {
        let rule = r(
            vec![
                Match::InInterface {
                    name: "cali".into(),
                    prefix: true,
                },
                Match::OutInterface {
                    name: "eth0".into(),
                    prefix: false,
                },
                Match::SrcNet {
                    net: "10.0.0.0/8".parse().expect("net"),
                    negated: false,
                },
                Match::SrcNet {
                    net: "10.1.0.0/16".parse().expect("net"),
                    negated: true,
                },
                Match::DstSet {
                    set: name("margay-s4-x"),
                    negated: true,
                },
                Match::Mark {
                    value: 0x100,
                    mask: 0x300,
                },
            ],
            Action::SetMark {
                value: 0x200,
                mask: 0x200,
            },
        );
        assert_eq!(
            render(&rule, IpVersion::V4),
            format!(
                "{} -i cali+ -o eth0 -s 10.0.0.0/8 -m iprange ! --src-range 10.1.0.0-10.1.255.255 \
                 -m set ! --match-set margay-s4-x dst -m mark --mark 0x100/0x300 \
                 -j MARK --set-xmark 0x200/0x200\n",
                tagged(&rule, '4')
            )
        );
        assert_eq!(render(&rule, IpVersion::V6), "");
    }

    #[test]
    fn negated_net_of_the_other_family_always_holds() {
        let rule = r(
            vec![Match::DstNet {
                net: "10.0.0.0/8".parse().expect("net"),
                negated: true,
            }],
            Action::Drop,
        );
        assert_eq!(
            render(&rule, IpVersion::V6),
            format!("{} -j DROP\n", tagged(&rule, 'b'))
        );
        assert_eq!(
            render(&rule, IpVersion::V4),
            format!("{} ! -d 10.0.0.0/8 -j DROP\n", tagged(&rule, 'b'))
        );
    }

    #[test]
    fn known_set_family_limits_the_rule() {
        let rule = r(
            vec![Match::SrcSet {
                set: name("margay-t6-a"),
                negated: false,
            }],
            Action::Accept,
        );
        let fam = rule_families(&rule, &|s| {
            (s.as_str() == "margay-t6-a").then_some(IpVersion::V6)
        });
        assert_eq!(fam, FamTag::V6);
    }

    #[test]
    fn long_port_lists_become_disjoint_pieces() {
        let ports: Vec<PortRange> = (1..=20)
            .map(|p| PortRange {
                lo: p * 10,
                hi: p * 10,
            })
            .collect();
        let rule = r(
            vec![
                Match::Protocol {
                    proto: 6,
                    negated: false,
                },
                Match::DstPorts {
                    ports,
                    negated: false,
                },
                Match::SrcPorts {
                    ports: vec![PortRange { lo: 5, hi: 5 }, PortRange { lo: 1, hi: 4 }],
                    negated: true,
                },
            ],
            Action::Accept,
        );
        let text = render(&rule, IpVersion::V4);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let fp = rule.fingerprint();
        assert!(lines[0].starts_with(&format!(
            "-A margay-c -m comment --comment {fp:016x}:3:b:0/2 -p 6"
        )));
        assert!(lines[0].contains(" -m multiport ! --sports 1:5 "));
        assert!(lines[0].contains(
            " -m multiport --dports 10,20,30,40,50,60,70,80,90,100,110,120,130,140,150 -j ACCEPT"
        ));
        assert!(lines[1].contains(":3:b:1/2 "));
        assert!(lines[1].contains(" -m multiport --dports 160,170,180,190,200 -j ACCEPT"));
    }

    #[test]
    fn port_chunks_merge_and_weigh_ranges() {
        let p = |lo, hi| PortRange { lo, hi };
        assert_eq!(
            port_chunks(&[p(80, 80), p(81, 90), p(443, 443)]),
            vec!["80:90,443"]
        );
        let many: Vec<PortRange> = (0..8).map(|i| p(i * 100, i * 100 + 1)).collect();
        assert_eq!(port_chunks(&many).len(), 2);
        assert!(port_chunks(&[]).is_empty());
    }

    #[test]
    fn contradictions_become_counter_lines() {
        let rule = r(
            vec![
                Match::Protocol {
                    proto: 6,
                    negated: false,
                },
                Match::Protocol {
                    proto: 6,
                    negated: true,
                },
            ],
            Action::Accept,
        );
        assert_eq!(
            render(&rule, IpVersion::V4),
            format!("{}\n", tagged(&rule, 'b'))
        );
        let nowhere = r(
            vec![Match::Family(IpVersion::V4), Match::Family(IpVersion::V6)],
            Action::Drop,
        );
        assert_eq!(
            render(&nowhere, IpVersion::V4),
            format!("{}\n", tagged(&nowhere, 'n'))
        );
        assert_eq!(render(&nowhere, IpVersion::V6), "");
    }

    #[test]
    fn actions_render() {
        assert_eq!(
            render_action(&Action::Goto(name("margay-x"))),
            Ok(" -g margay-x".into())
        );
        assert_eq!(
            render_action(&Action::Jump(name("margay-x"))),
            Ok(" -j margay-x".into())
        );
        assert_eq!(
            render_action(&Action::Masquerade),
            Ok(" -j MASQUERADE".into())
        );
        assert_eq!(render_action(&Action::Continue), Ok(String::new()));
        assert_eq!(
            render_action(&Action::Log {
                prefix: "calico-packet: ".into()
            }),
            Ok(" -j LOG --log-prefix \"calico-packet: \"".into())
        );
        assert_eq!(
            render_action(&Action::SetMark {
                value: 0x1,
                mask: 0x2
            }),
            Ok(" -j MARK --set-xmark 0x1/0x3".into())
        );
    }

    #[test]
    fn hostile_text_is_refused() {
        assert!(render_action(&Action::Log {
            prefix: "x\" -j ACCEPT".into()
        })
        .is_err());
        assert!(render_action(&Action::Jump(name("INPUT"))).is_err());
        let rule = r(
            vec![Match::InInterface {
                name: "eth0 -j ACCEPT".into(),
                prefix: false,
            }],
            Action::Drop,
        );
        let mut out = String::new();
        assert!(render_rule(
            &mut out,
            &name("margay-c"),
            0,
            &rule,
            (FamTag::Both, rule.fingerprint()),
            IpVersion::V4
        )
        .is_err());
        let two = r(
            vec![
                Match::InInterface {
                    name: "a".into(),
                    prefix: false,
                },
                Match::InInterface {
                    name: "b".into(),
                    prefix: false,
                },
            ],
            Action::Drop,
        );
        assert!(render_rule(
            &mut out,
            &name("margay-c"),
            0,
            &two,
            (FamTag::Both, two.fingerprint()),
            IpVersion::V4
        )
        .is_err());
    }

    #[test]
    fn ports_need_a_port_protocol() {
        let rule = r(
            vec![Match::DstPorts {
                ports: vec![PortRange { lo: 1, hi: 1 }],
                negated: false,
            }],
            Action::Drop,
        );
        let mut out = String::new();
        assert!(render_rule(
            &mut out,
            &name("margay-c"),
            0,
            &rule,
            (FamTag::Both, rule.fingerprint()),
            IpVersion::V4
        )
        .is_err());
    }
}
