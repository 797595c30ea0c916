//! The comment tag on every kernel line of a rule
//! (`<fingerprint>:<index>:<families>[:<piece>/<pieces>]`) and the families
//! part of it: which of the two per-family chains hold the rule.

use std::fmt::Write as _;

use margay_policy::desired::IpVersion;

use crate::firewall::model::{GenericRule, Match, ObjectName};

pub use crate::firewall::model::net_family;

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
    pub(super) fn matches_in(self, family: IpVersion) -> bool {
        self != FamTag::Neither && self.present_in(family)
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
pub(super) fn write_head(
    out: &mut String,
    chain: &ObjectName,
    tag: (u64, usize, FamTag, usize, usize),
) {
    out.push_str("-A ");
    out.push_str(chain.as_str());
    out.push_str(" -m comment --comment ");
    let (fp, idx, fam, piece, pieces) = tag;
    write_tag(out, fp, idx, fam, piece, pieces);
}
