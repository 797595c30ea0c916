//! Reading `iptables-save` back into the generic model.
//!
//! Only two kinds of lines matter: rules of our chains (`-A margay-...`),
//! whose comment tag gives fingerprint, index and families, and rules of
//! the built-in chains our hooks live in (`INPUT`, `FORWARD`, `OUTPUT`,
//! nat `POSTROUTING`), where a jump to a `margay-` chain is one of ours.
//! The IPv4 and IPv6 dumps are then merged: a chain reads as its generic
//! fingerprints in order when both families hold exactly the lines the tags
//! promise; anything else (a missing line, a foreign rule, a chain in one
//! family only) reads as the best guess followed by a 0, which no desired
//! chain equals, so the diff rewrites the chain.

use std::collections::{BTreeMap, BTreeSet};

use margay_policy::desired::IpVersion;

use super::rule::FamTag;
use super::Table;
use crate::firewall::model::{Hook, ObjectName};

/// The comment tag of one kernel line of one of our rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// Generic rule fingerprint.
    pub fp: u64,
    /// Index of the generic rule in its chain.
    pub idx: usize,
    /// Which families hold the rule.
    pub fam: FamTag,
    /// Piece number and count (0 of 1 unless split).
    pub piece: (usize, usize),
}

impl Tag {
    /// Parses `<16 hex>:<idx>:<fam>[:<k>/<n>]`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(':');
        let fp = parts.next().filter(|h| h.len() == 16)?;
        let fp = u64::from_str_radix(fp, 16).ok()?;
        let idx = parts.next()?.parse().ok()?;
        let fam = FamTag::from_char(parts.next()?)?;
        let piece = match parts.next() {
            None => (0, 1),
            Some(p) => {
                let (k, n) = p.split_once('/')?;
                let (k, n) = (k.parse().ok()?, n.parse().ok()?);
                if k >= n {
                    return None;
                }
                (k, n)
            }
        };
        parts.next().is_none().then_some(Tag {
            fp,
            idx,
            fam,
            piece,
        })
    }
}

/// A rule in a built-in chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinRule {
    /// The rule as saved, after `-A <chain> ` (replayable after `-D <chain> `).
    pub spec: String,
    /// The `margay-` chain it jumps or goes to, making it one of our hook rules.
    pub ours: Option<ObjectName>,
}

/// What one family's `iptables-save` holds of interest to us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyDump {
    /// Our chains per table, each line's tag (`None`: a line we did not tag).
    pub chains: BTreeMap<ObjectName, BTreeMap<Table, Vec<Option<Tag>>>>,
    /// The rules of the built-in chains our hooks use.
    pub builtins: BTreeMap<Hook, Vec<BuiltinRule>>,
}

/// The hook that lives in built-in `chain` of `table`.
pub fn hook_of(table: Table, chain: &str) -> Option<Hook> {
    match (table, chain) {
        (Table::Filter, "FORWARD") => Some(Hook::Forward),
        (Table::Filter, "INPUT") => Some(Hook::Input),
        (Table::Filter, "OUTPUT") => Some(Hook::Output),
        (Table::Nat, "POSTROUTING") => Some(Hook::NatPostrouting),
        _ => None,
    }
}

/// Parses one family's `iptables-save` output (any tables; only filter and
/// nat are looked at).
pub fn parse(text: &str) -> FamilyDump {
    let mut dump = FamilyDump::default();
    let mut table = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = Table::from_name(name.trim());
            continue;
        }
        let Some(t) = table else { continue };
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if let Some(name) = ObjectName::from_kernel(name) {
                dump.chains.entry(name).or_default().entry(t).or_default();
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
            parse_rule(&mut dump, t, chain, spec);
        }
    }
    dump
}

fn parse_rule(dump: &mut FamilyDump, table: Table, chain: &str, spec: &str) {
    if let Some(name) = ObjectName::from_kernel(chain) {
        let words = tokens(spec);
        let tag = option_value(&words, "--comment").and_then(Tag::parse);
        dump.chains
            .entry(name)
            .or_default()
            .entry(table)
            .or_default()
            .push(tag);
    } else if let Some(hook) = hook_of(table, chain) {
        let words = tokens(spec);
        let ours = option_value(&words, "-j")
            .or_else(|| option_value(&words, "-g"))
            .and_then(ObjectName::from_kernel);
        dump.builtins.entry(hook).or_default().push(BuiltinRule {
            spec: spec.to_owned(),
            ours,
        });
    }
}

/// The word after `option` (the first occurrence).
fn option_value<'a>(words: &'a [String], option: &str) -> Option<&'a str> {
    let at = words.iter().position(|w| w == option)?;
    words.get(at + 1).map(String::as_str)
}

/// Splits a saved rule into words: whitespace separated, `"..."` quoted
/// with `\` escapes (as iptables-save writes comments and log prefixes).
pub fn tokens(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped, mut in_word) = (false, false, false);
    for c in spec.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
            in_word = true;
        } else if c.is_whitespace() && !quoted {
            if in_word {
                out.push(std::mem::take(&mut cur));
                in_word = false;
            }
        } else {
            cur.push(c);
            in_word = true;
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// The chains (with their tables) and hooks both families agree on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    /// Generic fingerprints per chain (a trailing 0 marks a damaged chain).
    pub chains: BTreeMap<ObjectName, Vec<u64>>,
    /// Tables each chain was found in (either family).
    pub tables: BTreeMap<ObjectName, BTreeSet<Table>>,
    /// Hooks whose chain has exactly our one rule, first, in both families.
    pub hooks: BTreeMap<Hook, ObjectName>,
}

/// Merges the IPv4 and IPv6 dumps.
pub fn merge(v4: &FamilyDump, v6: &FamilyDump) -> Merged {
    let mut m = Merged::default();
    let names: BTreeSet<&ObjectName> = v4.chains.keys().chain(v6.chains.keys()).collect();
    for name in names {
        let (a, b) = (v4.chains.get(name), v6.chains.get(name));
        let tables: BTreeSet<Table> = a
            .into_iter()
            .chain(b)
            .flat_map(|t| t.keys().copied())
            .collect();
        let fps = match (a, b, tables.len()) {
            (Some(a), Some(b), 1) => merge_chain(single(a), single(b)),
            // In one family only, or in two tables: damaged.
            _ => {
                let first = a.or(b).and_then(|t| t.values().next());
                let mut fps = first.map(|l| best_guess(l)).unwrap_or_default();
                fps.push(0);
                fps
            }
        };
        m.chains.insert(name.clone(), fps);
        m.tables.insert(name.clone(), tables);
    }
    for hook in [
        Hook::Forward,
        Hook::Input,
        Hook::Output,
        Hook::NatPostrouting,
    ] {
        let a = attached(v4.builtins.get(&hook));
        if a.is_some() && a == attached(v6.builtins.get(&hook)) {
            if let Some(chain) = a {
                m.hooks.insert(hook, chain);
            }
        }
    }
    m
}

fn single(tables: &BTreeMap<Table, Vec<Option<Tag>>>) -> &[Option<Tag>] {
    tables
        .values()
        .next()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The chain a hook's built-in chain calls when our rule is its only one of
/// ours and comes first.
fn attached(rules: Option<&Vec<BuiltinRule>>) -> Option<ObjectName> {
    let rules = rules?;
    let first = rules.first()?.ours.clone()?;
    let count = rules.iter().filter(|r| r.ours.is_some()).count();
    (count == 1).then_some(first)
}

/// One generic rule as one family shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    idx: usize,
    fp: u64,
    fam: FamTag,
}

/// Collapses a family's lines into generic rules, checking pieces, order
/// and that each rule belongs in this family. `None` when anything is off.
fn collapse(lines: &[Option<Tag>], family: IpVersion) -> Option<Vec<Seen>> {
    let mut out: Vec<Seen> = Vec::new();
    let mut expect_piece = 0;
    let mut pieces = 1;
    for line in lines {
        let t = (*line)?;
        if !t.fam.present_in(family) {
            return None;
        }
        if expect_piece > 0 {
            let last = out.last()?;
            if (t.idx, t.fp, t.piece) != (last.idx, last.fp, (expect_piece, pieces)) {
                return None;
            }
        } else {
            if t.piece.0 != 0 || out.last().is_some_and(|l| l.idx >= t.idx) {
                return None;
            }
            out.push(Seen {
                idx: t.idx,
                fp: t.fp,
                fam: t.fam,
            });
            pieces = t.piece.1;
        }
        expect_piece = (t.piece.0 + 1) % pieces;
    }
    (expect_piece == 0).then_some(out)
}

/// Rebuilds a generic chain from its two family chains.
fn merge_chain(v4: &[Option<Tag>], v6: &[Option<Tag>]) -> Vec<u64> {
    let (Some(a), Some(b)) = (collapse(v4, IpVersion::V4), collapse(v6, IpVersion::V6)) else {
        return damaged(v4, v6);
    };
    let mut by_idx: BTreeMap<usize, (u64, FamTag, u8)> = BTreeMap::new();
    for (seen, bit) in a.iter().map(|s| (s, 1u8)).chain(b.iter().map(|s| (s, 2u8))) {
        let e = by_idx.entry(seen.idx).or_insert((seen.fp, seen.fam, 0));
        if (e.0, e.1) != (seen.fp, seen.fam) {
            return damaged(v4, v6);
        }
        e.2 |= bit;
    }
    let complete = by_idx.iter().enumerate().all(|(i, (idx, (_, fam, bits)))| {
        let want = u8::from(fam.present_in(IpVersion::V4))
            | (u8::from(fam.present_in(IpVersion::V6)) << 1);
        i == *idx && *bits == want
    });
    if !complete {
        return damaged(v4, v6);
    }
    by_idx.values().map(|(fp, _, _)| *fp).collect()
}

fn damaged(v4: &[Option<Tag>], v6: &[Option<Tag>]) -> Vec<u64> {
    let mut fps = best_guess(if v4.len() >= v6.len() { v4 } else { v6 });
    fps.push(0);
    fps
}

/// Fingerprints of distinct tagged rules in line order, 0 for untagged lines.
fn best_guess(lines: &[Option<Tag>]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut last = None;
    for line in lines {
        match line {
            Some(t) if last == Some((t.idx, t.fp)) => {}
            Some(t) => {
                out.push(t.fp);
                last = Some((t.idx, t.fp));
            }
            None => {
                out.push(0);
                last = None;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &'static str) -> ObjectName {
        ObjectName::fixed(s)
    }

    const V4: &str = r#"# Generated by iptables-nft-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:margay-forward - [0:0]
:margay-x - [0:0]
:DOCKER - [0:0]
-A FORWARD -m comment --comment margay-hook -j margay-forward
-A FORWARD -j DOCKER
-A INPUT -m comment --comment "a \"quoted\" thing" -j ACCEPT
-A INPUT -j margay-input
-A margay-forward -m comment --comment "00000000000000aa:0:b" -j margay-x
-A margay-x -s 10.0.0.0/8 -m comment --comment "00000000000000bb:0:4" -j ACCEPT
-A margay-x -p tcp -m comment --comment "00000000000000cc:1:b:0/2" -m multiport --dports 1 -j DROP
-A margay-x -p tcp -m comment --comment "00000000000000cc:1:b:1/2" -m multiport --dports 2 -j DROP
-A margay-x -m comment --comment "00000000000000ee:3:b" -j RETURN
-A DOCKER -j RETURN
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
:margay-nat-post - [0:0]
-A POSTROUTING -j margay-nat-post
-A margay-nat-post -m comment --comment "00000000000000ff:0:4" -j MASQUERADE
COMMIT
"#;

    const V6: &str = r#"*filter
:FORWARD ACCEPT [0:0]
:margay-forward - [0:0]
:margay-x - [0:0]
-A FORWARD -m comment --comment margay-hook -j margay-forward
-A margay-forward -m comment --comment "00000000000000aa:0:b" -j margay-x
-A margay-x -p tcp -m comment --comment "00000000000000cc:1:b:0/2" -m multiport --dports 1 -j DROP
-A margay-x -p tcp -m comment --comment "00000000000000cc:1:b:1/2" -m multiport --dports 2 -j DROP
-A margay-x -s fd00::/8 -m comment --comment "00000000000000dd:2:6" -j ACCEPT
-A margay-x -m comment --comment "00000000000000ee:3:b" -j RETURN
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
:margay-nat-post - [0:0]
-A POSTROUTING -j margay-nat-post
COMMIT
"#;

    #[test]
    fn tags_parse_strictly() {
        let t = Tag::parse("00000000000000cc:1:b:1/2").expect("tag");
        assert_eq!(
            (t.fp, t.idx, t.fam, t.piece),
            (0xcc, 1, FamTag::Both, (1, 2))
        );
        assert!(Tag::parse("cc:1:b").is_none());
        assert!(Tag::parse("00000000000000cc:1:x").is_none());
        assert!(Tag::parse("00000000000000cc:1:b:2/2").is_none());
        assert!(Tag::parse("00000000000000cc:1:b:0/2:9").is_none());
        assert!(Tag::parse("margay-hook").is_none());
    }

    #[test]
    fn tokens_follow_quotes_and_escapes() {
        assert_eq!(
            tokens(r#"-m comment --comment "a \"b\" c" -j LOG --log-prefix "x: ""#),
            [
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "LOG",
                "--log-prefix",
                "x: "
            ]
        );
    }

    #[test]
    fn both_families_merge_into_generic_chains() {
        let (a, b) = (parse(V4), parse(V6));
        assert!(
            !a.chains.contains_key(&name("margay-input")),
            "jump target only, no chain"
        );
        let m = merge(&a, &b);
        assert_eq!(m.chains[&name("margay-forward")], vec![0xaa]);
        assert_eq!(m.chains[&name("margay-x")], vec![0xbb, 0xcc, 0xdd, 0xee]);
        assert_eq!(m.chains[&name("margay-nat-post")], vec![0xff]);
        assert_eq!(m.tables[&name("margay-nat-post")], [Table::Nat].into());
        assert_eq!(m.tables[&name("margay-x")], [Table::Filter].into());
        assert!(!m.chains.contains_key(&name("DOCKER")));
        // FORWARD: ours first and alone in both families.
        assert_eq!(m.hooks.get(&Hook::Forward), Some(&name("margay-forward")));
        // INPUT: ours is not first; POSTROUTING: fine in both.
        assert_eq!(m.hooks.get(&Hook::Input), None);
        assert_eq!(
            m.hooks.get(&Hook::NatPostrouting),
            Some(&name("margay-nat-post"))
        );
        let fwd = &a.builtins[&Hook::Forward];
        assert_eq!(
            fwd[0].spec,
            "-m comment --comment margay-hook -j margay-forward"
        );
        assert_eq!(fwd[1].ours, None);
    }

    #[test]
    fn damage_reads_as_a_trailing_zero() {
        let v6_missing_line = V6.replace(
            "-A margay-x -s fd00::/8 -m comment --comment \"00000000000000dd:2:6\" -j ACCEPT\n",
            "",
        );
        let m = merge(&parse(V4), &parse(&v6_missing_line));
        assert_eq!(m.chains[&name("margay-x")].last(), Some(&0));
        let missing_piece = V4.replace(
            "-A margay-x -p tcp -m comment --comment \"00000000000000cc:1:b:1/2\" -m multiport --dports 2 -j DROP\n",
            "",
        );
        let m = merge(&parse(&missing_piece), &parse(V6));
        assert_eq!(m.chains[&name("margay-x")].last(), Some(&0));
        let foreign = V4.replace("-A DOCKER -j RETURN", "-A margay-x -j ACCEPT");
        let m = merge(&parse(&foreign), &parse(V6));
        assert_eq!(m.chains[&name("margay-x")].last(), Some(&0));
        // margay-nat-post exists in v6 too, but its v4-only rule is missing there? No:
        // the rule is tagged 4, so v6 holding none is right.
        assert_eq!(m.chains[&name("margay-nat-post")], vec![0xff]);
        let one_family = merge(&parse(V4), &FamilyDump::default());
        assert_eq!(one_family.chains[&name("margay-forward")], vec![0xaa, 0]);
        assert!(one_family.hooks.is_empty());
    }

    #[test]
    fn duplicate_hook_rules_are_not_attached() {
        let dup = V4.replace(
            "-A FORWARD -j DOCKER",
            "-A FORWARD -m comment --comment margay-hook -j margay-forward",
        );
        let m = merge(&parse(&dup), &parse(V6));
        assert_eq!(m.hooks.get(&Hook::Forward), None);
    }
}
