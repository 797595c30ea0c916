//! ipset text: the `create`/`add` lines we write and the `ipset save` we read.
//!
//! Our sets are `hash:net` of one family with a fixed `maxelem`; a set with
//! our name but another header is "not conforming": read-back leaves it
//! out, so the diff asks for it again and the writer replaces it (swap when
//! the kernel allows, else destroy and create). `hash:net` cannot hold a
//! `/0`, so one is stored as its two halves and read back as one net.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use margay_policy::desired::IpVersion;

use crate::firewall::model::{AddressSet, ObjectName};

/// `maxelem` of every set we create (a selector set may hold every
/// endpoint address of the cluster).
pub const MAXELEM: u64 = 1 << 20;
/// Initial `hashsize` (the kernel grows it as needed).
pub const HASHSIZE: u64 = 1024;

/// What `ipset save` says about a set (its `create` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetHeader {
    /// Set type, e.g. `hash:net`.
    pub kind: String,
    /// `family inet|inet6`, if given.
    pub family: Option<IpVersion>,
    /// `maxelem`, if given.
    pub maxelem: Option<u64>,
    /// Options beyond family/hashsize/maxelem/bucketsize/initval (timeout, counters, ...).
    pub extras: bool,
}

impl SetHeader {
    /// The header of a set we create.
    pub fn ours(family: IpVersion) -> Self {
        SetHeader {
            kind: "hash:net".into(),
            family: Some(family),
            maxelem: Some(MAXELEM),
            extras: false,
        }
    }

    /// Exactly what we would have created for `family`.
    pub fn conforms(&self, family: IpVersion) -> bool {
        *self == SetHeader::ours(family)
    }

    /// The kernel can `swap` a set of this header with one of ours of
    /// `family` (same type and family; options may differ).
    pub fn swappable(&self, family: IpVersion) -> bool {
        self.kind == "hash:net" && self.family == Some(family)
    }

    /// Parses the words after `create <name>`.
    fn parse(words: &[&str]) -> Option<Self> {
        let (kind, opts) = words.split_first()?;
        let mut h = SetHeader {
            kind: (*kind).to_owned(),
            family: None,
            maxelem: None,
            extras: false,
        };
        let mut it = opts.iter();
        while let Some(opt) = it.next() {
            match *opt {
                "family" => {
                    h.family = match it.next().copied() {
                        Some("inet") => Some(IpVersion::V4),
                        Some("inet6") => Some(IpVersion::V6),
                        _ => return None,
                    }
                }
                "maxelem" => h.maxelem = it.next()?.parse().ok(),
                "hashsize" | "bucketsize" | "initval" => {
                    it.next()?;
                }
                _ => h.extras = true,
            }
        }
        Some(h)
    }
}

/// The `family` word of `ipset create`.
pub fn family_word(family: IpVersion) -> &'static str {
    match family {
        IpVersion::V4 => "inet",
        IpVersion::V6 => "inet6",
    }
}

/// Appends `create <name> hash:net family ... maxelem ...`.
pub fn write_create(out: &mut String, name: &str, family: IpVersion) {
    let _ = writeln!(
        out,
        "create {name} hash:net family {} hashsize {HASHSIZE} maxelem {MAXELEM}",
        family_word(family)
    );
}

/// Appends `add|del <set> <member>` (two lines for a `/0`).
pub fn write_member(out: &mut String, verb: &str, set: &str, net: &IpNet) {
    for part in storable(net) {
        out.push_str(verb);
        out.push(' ');
        out.push_str(set);
        out.push(' ');
        push_net(out, &part);
        out.push('\n');
    }
}

/// Appends `net` in CIDR form; IPv4 by hand, as sets hold many of them.
fn push_net(out: &mut String, net: &IpNet) {
    match net {
        IpNet::V4(n) => {
            for (i, octet) in n.addr().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u8(out, octet);
            }
            out.push('/');
            push_u8(out, n.prefix_len());
        }
        IpNet::V6(n) => {
            let _ = write!(out, "{n}");
        }
    }
}

fn push_u8(out: &mut String, v: u8) {
    if v >= 100 {
        out.push(char::from(b'0' + v / 100));
    }
    if v >= 10 {
        out.push(char::from(b'0' + (v / 10) % 10));
    }
    out.push(char::from(b'0' + v % 10));
}

/// `net` as `hash:net` can store it: truncated, a `/0` as two `/1`s.
fn storable(net: &IpNet) -> impl Iterator<Item = IpNet> {
    let net = net.trunc();
    let halves = (net.prefix_len() == 0)
        .then(|| net.subnets(1).ok())
        .flatten()
        .into_iter()
        .flatten();
    let whole = (net.prefix_len() != 0).then_some(net);
    whole.into_iter().chain(halves)
}

/// Everything `ipset save` showed about our sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedSets {
    /// Header of every set of ours.
    pub headers: BTreeMap<ObjectName, SetHeader>,
    /// Members of every set of ours.
    pub members: BTreeMap<ObjectName, BTreeSet<IpNet>>,
}

impl SavedSets {
    /// The conforming sets as the generic model sees them.
    pub fn observed(&self) -> BTreeMap<ObjectName, AddressSet> {
        let mut out = BTreeMap::new();
        for (name, header) in &self.headers {
            let Some(family) = header.family.filter(|f| header.conforms(*f)) else {
                continue;
            };
            let members = self.members.get(name).cloned().unwrap_or_default();
            out.insert(
                name.clone(),
                AddressSet {
                    family,
                    members: join_halves(members),
                },
            );
        }
        out
    }
}

/// Parses `ipset save`, keeping only sets whose names are ours.
pub fn parse_save(text: &str) -> SavedSets {
    let mut saved = SavedSets::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["create", name, rest @ ..] => {
                let (Some(name), Some(h)) = (ObjectName::from_kernel(name), SetHeader::parse(rest))
                else {
                    continue;
                };
                saved.headers.insert(name, h);
            }
            ["add", name, member, ..] => {
                let (Some(name), Some(net)) = (ObjectName::from_kernel(name), parse_member(member))
                else {
                    continue;
                };
                saved.members.entry(name).or_default().insert(net);
            }
            _ => {}
        }
    }
    saved
}

/// `10.0.0.1` or `10.0.0.0/24` (ipset omits a full-length prefix).
fn parse_member(word: &str) -> Option<IpNet> {
    if word.contains('/') {
        return word.parse().ok();
    }
    match word.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => Ipv4Net::new(a, 32).ok().map(IpNet::V4),
        IpAddr::V6(a) => Ipv6Net::new(a, 128).ok().map(IpNet::V6),
    }
}

/// Reads two stored `/1` halves back as the `/0` they came from.
fn join_halves(mut members: BTreeSet<IpNet>) -> BTreeSet<IpNet> {
    for any in ["0.0.0.0/0", "::/0"] {
        let Ok(any) = any.parse::<IpNet>() else {
            continue;
        };
        let halves: Vec<IpNet> = storable(&any).collect();
        if halves.iter().all(|h| members.contains(h)) {
            for h in &halves {
                members.remove(h);
            }
            members.insert(any);
        }
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    const SAVE: &str = "\
create margay-t4-web hash:net family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x1
add margay-t4-web 10.0.0.7
add margay-t4-web 10.1.0.0/16
create margay-s6-x hash:net family inet6 hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x2
add margay-s6-x fd00::1
create margay-old hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x3
add margay-old 10.9.9.9
create margay-any hash:net family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x4
add margay-any 0.0.0.0/1
add margay-any 128.0.0.0/1
create KUBE-x hash:ip family inet hashsize 1024 maxelem 65536
add KUBE-x 10.0.0.1
create margay-tmo hash:net family inet hashsize 1024 maxelem 1048576 timeout 30
";

    #[test]
    fn save_is_parsed_for_our_sets_only() {
        let saved = parse_save(SAVE);
        assert_eq!(saved.headers.len(), 5);
        assert!(!saved.headers.keys().any(|n| n.as_str() == "KUBE-x"));
        let obs = saved.observed();
        let names: Vec<&str> = obs.keys().map(ObjectName::as_str).collect();
        // maxelem 65536 and timeout sets are not conforming: left out.
        assert_eq!(names, ["margay-any", "margay-s6-x", "margay-t4-web"]);
        let web = &obs[&ObjectName::fixed("margay-t4-web")];
        assert_eq!(web.family, IpVersion::V4);
        assert_eq!(web.members, [net("10.0.0.7/32"), net("10.1.0.0/16")].into());
        assert_eq!(
            obs[&ObjectName::fixed("margay-s6-x")].members,
            [net("fd00::1/128")].into()
        );
        assert_eq!(
            obs[&ObjectName::fixed("margay-any")].members,
            [net("0.0.0.0/0")].into()
        );
        let old = &saved.headers[&ObjectName::fixed("margay-old")];
        assert!(old.swappable(IpVersion::V4) && !old.conforms(IpVersion::V4));
        assert!(!old.swappable(IpVersion::V6));
        assert!(saved.headers[&ObjectName::fixed("margay-tmo")].extras);
    }

    #[test]
    fn ipv4_is_written_like_display() {
        for s in [
            "0.0.0.0/1",
            "10.0.0.9/32",
            "192.168.100.0/24",
            "255.255.255.255/32",
            "1.20.3.0/25",
        ] {
            let mut out = String::new();
            push_net(&mut out, &net(s));
            assert_eq!(out, net(s).to_string());
        }
    }

    #[test]
    fn members_are_written_storable() {
        let mut out = String::new();
        write_member(&mut out, "add", "margay-a", &net("10.0.0.9/24"));
        write_member(&mut out, "del", "margay-b", &net("::/0"));
        assert_eq!(
            out,
            "add margay-a 10.0.0.0/24\ndel margay-b ::/1\ndel margay-b 8000::/1\n"
        );
        let mut c = String::new();
        write_create(&mut c, "margay-a", IpVersion::V6);
        assert_eq!(
            c,
            "create margay-a hash:net family inet6 hashsize 1024 maxelem 1048576\n"
        );
    }
}
