//! The generic firewall model that every backend renders.
//!
//! `lower` turns the policy crate's [`margay_policy::desired::DesiredState`]
//! into a [`Ruleset`]: named chains of generic rules plus named address sets,
//! with every name already validated or hashed. A backend (nftables,
//! iptables) only translates these into its own syntax; it never sees
//! datastore strings. This is margay's version of Felix's `generictables`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ipnet::IpNet;
use margay_policy::desired::{IpVersion, PortRange};

pub mod fingerprint;

use fingerprint::{ByteSink as _, Fnv1a};

/// Longest chain or set name we ever generate (fits iptables' 28 and ipset's 31).
pub const MAX_NAME_LEN: usize = 28;

/// A kernel object name (chain or set) that we generated: `[A-Za-z0-9_.-]`, at
/// most [`MAX_NAME_LEN`] bytes, always starting with `margay-` for iptables
/// chains and ipsets (nft objects live in our own table).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName(String);

impl ObjectName {
    /// Builds a name from a trusted `kind` tag (`[a-z0-9]+`) and an arbitrary
    /// `detail`. When `margay-<kind>-<detail>` is in charset and short enough
    /// it is used as is; otherwise the name is `margay-<kind>_<digest>`, where
    /// the digest is 80 bits of the detail's SHA-256 in base32 (stable across
    /// restarts, and no datastore id can be crafted to take another's name).
    /// The `-` / `_` after the kind keeps the two forms apart, so an id that
    /// happens to look like a digest never takes a hashed name either.
    pub fn generate(kind: &str, detail: &str) -> Self {
        debug_assert!(kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let plain = format!("margay-{kind}-{detail}");
        let charset_ok = detail
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if charset_ok && plain.len() <= MAX_NAME_LEN {
            return ObjectName(plain);
        }
        let hashed = format!("margay-{kind}_{}", name_digest(detail));
        // kind tags are short and trusted; keep the bound even so.
        ObjectName(hashed.chars().take(MAX_NAME_LEN).collect())
    }

    /// Wraps a fixed, trusted name (base chains). Panics in debug builds on a
    /// name outside the charset, which would be a programming error.
    pub fn fixed(name: &'static str) -> Self {
        debug_assert!(name.len() <= MAX_NAME_LEN);
        debug_assert!(name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')));
        ObjectName(name.to_owned())
    }

    /// Accepts a name read back from the kernel when it is one we could have
    /// made: `margay-` prefix, charset `[A-Za-z0-9_.-]`, at most
    /// [`MAX_NAME_LEN`] bytes. Anything else is not ours (`None`).
    pub fn from_kernel(name: &str) -> Option<Self> {
        let ok = name.starts_with("margay-")
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        ok.then(|| ObjectName(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Characters of [`name_digest`]: lower-case base32 (RFC 4648 alphabet).
const DIGEST_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Characters of a hashed name's digest (5 bits each: 80 bits).
pub const DIGEST_CHARS: usize = 16;

/// The first 80 bits of SHA-256(`detail`) as 16 base32 characters.
pub fn name_digest(detail: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, detail.as_bytes());
    let bytes = digest.as_ref();
    (0..DIGEST_CHARS)
        .map(|i| {
            let bit = i * 5;
            let pair = u16::from(bytes[bit / 8]) << 8 | u16::from(bytes[bit / 8 + 1]);
            let index = (pair >> (11 - bit % 8)) & 0x1f;
            char::from(DIGEST_ALPHABET[usize::from(index)])
        })
        .collect()
}

/// FNV-1a, 64 bit: a stable, fast hash for fingerprints (not for names that
/// datastore content could steer into each other; see [`name_digest`]).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::new();
    h.put(bytes);
    h.finish()
}

/// The family of an address or net (every backend and the lowering need it).
pub fn net_family(net: &IpNet) -> IpVersion {
    match net {
        IpNet::V4(_) => IpVersion::V4,
        IpNet::V6(_) => IpVersion::V6,
    }
}

/// Connection-tracking states we match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtState {
    /// Established or related: replies and related ICMP.
    EstablishedRelated,
    /// Invalid.
    Invalid,
}

/// One match of a generic rule. All matches of a rule are ANDed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// The packet is of this family (renders as a family guard / picks
    /// iptables vs ip6tables).
    Family(IpVersion),
    /// Input interface is exactly this name, or starts with it when `prefix`.
    InInterface { name: String, prefix: bool },
    /// Output interface is exactly this name, or starts with it when `prefix`.
    OutInterface { name: String, prefix: bool },
    /// IP protocol number (negated when `negated`).
    Protocol { proto: u8, negated: bool },
    /// Source address within `net`.
    SrcNet { net: IpNet, negated: bool },
    /// Destination address within `net`.
    DstNet { net: IpNet, negated: bool },
    /// Source address in the set (the set's family must match the rule's `Family`).
    SrcSet { set: ObjectName, negated: bool },
    /// Destination address in the set.
    DstSet { set: ObjectName, negated: bool },
    /// Source port in any of the ranges (needs a `Protocol` match with ports).
    SrcPorts {
        ports: Vec<PortRange>,
        negated: bool,
    },
    /// Destination port in any of the ranges.
    DstPorts {
        ports: Vec<PortRange>,
        negated: bool,
    },
    /// ICMP (v4 or v6 by `Family`) type and optional code.
    Icmp {
        icmp_type: u8,
        code: Option<u8>,
        negated: bool,
    },
    /// All bits of `mark & mask` equal `value`.
    Mark { value: u32, mask: u32 },
    /// Conntrack state.
    ConnState(CtState),
}

/// What a generic rule does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Accept the packet (final for this hook).
    Accept,
    /// Drop the packet.
    Drop,
    /// Return to the calling chain.
    Return,
    /// Call the chain, continue here if it returns.
    Jump(ObjectName),
    /// Go to the chain; its return goes to our caller.
    Goto(ObjectName),
    /// Log with this prefix (validated charset) and continue.
    Log { prefix: String },
    /// Set `mark = (mark & !mask) | value` and continue.
    SetMark { value: u32, mask: u32 },
    /// Masquerade (nat postrouting only).
    Masquerade,
    /// Nothing (a counter-only rule).
    Continue,
}

/// A generic rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GenericRule {
    /// ANDed matches.
    pub matches: Vec<Match>,
    /// Verdict.
    pub action: Action,
}

impl GenericRule {
    /// A stable fingerprint of the rule, stored in the kernel next to it (nft
    /// rule comment, iptables `--comment`) so read-back can compare rules
    /// without parsing the kernel's rendering of them: FNV-1a of the rule's
    /// explicit, versioned encoding ([`fingerprint::canonical_bytes`]), so
    /// renaming a field or variant in this file changes no fingerprint.
    pub fn fingerprint(&self) -> u64 {
        fingerprint::fingerprint(self)
    }
}

/// What read-back found in the kernel: per chain the fingerprints of its
/// rules in order (a rule without our fingerprint reads as 0), the sets with
/// their members, and which hooks call which chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedRuleset {
    /// Chains we own, with their rule fingerprints.
    pub chains: BTreeMap<ObjectName, Vec<u64>>,
    /// Sets we own.
    pub sets: BTreeMap<ObjectName, AddressSet>,
    /// Hook attachments found.
    pub hooks: BTreeMap<Hook, ObjectName>,
}

/// A named address set of one family, holding nets (a /32 is a host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSet {
    /// Family of every member.
    pub family: IpVersion,
    /// Members.
    pub members: BTreeSet<IpNet>,
}

/// The kernel hooks our base chains attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    /// filter FORWARD.
    Forward,
    /// filter INPUT.
    Input,
    /// filter OUTPUT.
    Output,
    /// nat POSTROUTING.
    NatPostrouting,
}

/// Everything a backend must program: chains, sets, and which chain each hook calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Regular chains by name (base chains included).
    pub chains: BTreeMap<ObjectName, Vec<GenericRule>>,
    /// Address sets by name.
    pub sets: BTreeMap<ObjectName, AddressSet>,
    /// The chain each hook jumps to (the backend owns the hook attachment).
    pub hooks: BTreeMap<Hook, ObjectName>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_clean_names_are_kept_and_the_rest_hashed() {
        assert_eq!(ObjectName::generate("p", "web").as_str(), "margay-p-web");
        let long = ObjectName::generate("p", "a-very-long-profile-name-indeed");
        assert!(long.as_str().len() <= MAX_NAME_LEN);
        assert!(long.as_str().starts_with("margay-p_"));
        let hostile = ObjectName::generate("s", "x\"; flush ruleset");
        assert!(hostile
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')));
        assert_ne!(
            ObjectName::generate("s", "has(a)"),
            ObjectName::generate("s", "has(b)")
        );
    }

    #[test]
    fn digests_are_sha256_in_base32() {
        // SHA-256("abc") = ba7816bf 8f01cfea 414140de ...; its first 80 bits
        // in RFC 4648 base32, lower case (Python's base64.b32encode agrees).
        assert_eq!(name_digest("abc"), "xj4bnp4pahh6uqkb");
        assert_ne!(name_digest("has(a)"), name_digest("has(b)"));
        assert!(name_digest("x")
            .bytes()
            .all(|b| DIGEST_ALPHABET.contains(&b)));
    }

    #[test]
    fn an_id_shaped_like_a_hash_never_takes_a_hashed_name() {
        let long_id = "a-very-long-profile-name-indeed";
        let hashed = ObjectName::generate("pi", long_id);
        // The 16 hex digits of the hash are a valid profile id of their own.
        let digits = &hashed.as_str()["margay-pi_".len()..];
        assert_eq!(digits.len(), DIGEST_CHARS);
        let lookalike = ObjectName::generate("pi", digits);
        assert_eq!(lookalike.as_str(), format!("margay-pi-{digits}"));
        assert_ne!(lookalike, hashed);
    }
}
