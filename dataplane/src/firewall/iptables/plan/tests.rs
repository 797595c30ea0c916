//! Rendering of op lists into iptables-restore and ipset scripts, replayed against a small model of the tables.

use super::*;
use crate::firewall::model::Match;
use ipnet::IpNet;

fn name(s: &'static str) -> ObjectName {
    ObjectName::fixed(s)
}

fn rule(matches: Vec<Match>, action: Action) -> GenericRule {
    GenericRule { matches, action }
}

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

fn fp(r: &GenericRule) -> String {
    format!("{:016x}", r.fingerprint())
}

#[test]
fn full_program_renders_sets_chains_hooks_in_order() {
    let accept = rule(
        vec![Match::SrcSet {
            set: name("margay-t4-a"),
            negated: false,
        }],
        Action::Accept,
    );
    let masq = rule(vec![Match::Family(IpVersion::V4)], Action::Masquerade);
    let fwd = rule(vec![], Action::Jump(name("margay-x")));
    let ops = vec![
        FirewallOp::CreateSet {
            name: name("margay-t4-a"),
            family: IpVersion::V4,
        },
        FirewallOp::AddMembers {
            set: name("margay-t4-a"),
            family: IpVersion::V4,
            members: [net("10.0.0.1/32"), net("10.0.0.2/32")].into(),
        },
        FirewallOp::ReplaceChain {
            name: name("margay-x"),
            rules: vec![accept.clone()],
        },
        FirewallOp::ReplaceChain {
            name: name("margay-forward"),
            rules: vec![fwd.clone()],
        },
        FirewallOp::ReplaceChain {
            name: name("margay-nat-post"),
            rules: vec![masq.clone()],
        },
        FirewallOp::AttachHook {
            hook: Hook::Forward,
            chain: name("margay-forward"),
        },
        FirewallOp::AttachHook {
            hook: Hook::NatPostrouting,
            chain: name("margay-nat-post"),
        },
    ];
    let p = plan(&ops, &Known::default()).expect("plan");
    assert_eq!(
        p.ipset_pre,
        "create margay-t4-a hash:net family inet hashsize 1024 maxelem 1048576\n\
         add margay-t4-a 10.0.0.1/32\nadd margay-t4-a 10.0.0.2/32\n"
    );
    let v4 = format!(
        "*filter\n:margay-forward - [0:0]\n:margay-x - [0:0]\n\
         -A margay-forward -m comment --comment {}:0:b -j margay-x\n\
         -A margay-x -m comment --comment {}:0:4 -m set --match-set margay-t4-a src -j ACCEPT\n\
         -I FORWARD 1 -m comment --comment margay-hook -j margay-forward\nCOMMIT\n\
         *nat\n:margay-nat-post - [0:0]\n\
         -A margay-nat-post -m comment --comment {}:0:4 -j MASQUERADE\n\
         -I POSTROUTING 1 -m comment --comment margay-hook -j margay-nat-post\nCOMMIT\n",
        fp(&fwd),
        fp(&accept),
        fp(&masq)
    );
    assert_eq!(p.v4, v4);
    let v6 = format!(
        "*filter\n:margay-forward - [0:0]\n:margay-x - [0:0]\n\
         -A margay-forward -m comment --comment {}:0:b -j margay-x\n\
         -I FORWARD 1 -m comment --comment margay-hook -j margay-forward\nCOMMIT\n\
         *nat\n:margay-nat-post - [0:0]\n\
         -I POSTROUTING 1 -m comment --comment margay-hook -j margay-nat-post\nCOMMIT\n",
        fp(&fwd)
    );
    assert_eq!(p.v6, v6);
    assert!(p.ipset_post.is_empty());
    assert_eq!(p.next.chains[&name("margay-nat-post")], [Table::Nat].into());
    assert_eq!(
        p.next.sets[&name("margay-t4-a")],
        SetHeader::ours(IpVersion::V4)
    );
}

#[test]
fn nat_reaches_through_jumps_and_is_remembered() {
    let ops = vec![
        FirewallOp::ReplaceChain {
            name: name("margay-np"),
            rules: vec![rule(vec![], Action::Goto(name("margay-nq")))],
        },
        FirewallOp::ReplaceChain {
            name: name("margay-nq"),
            rules: vec![rule(vec![], Action::Return)],
        },
        FirewallOp::AttachHook {
            hook: Hook::NatPostrouting,
            chain: name("margay-np"),
        },
    ];
    let p = plan(&ops, &Known::default()).expect("plan");
    assert_eq!(p.next.chains[&name("margay-nq")], [Table::Nat].into());
    // Later, a delta rewriting only margay-nq stays in nat.
    let delta = vec![FirewallOp::ReplaceChain {
        name: name("margay-nq"),
        rules: vec![],
    }];
    let p2 = plan(&delta, &p.next).expect("plan");
    assert_eq!(p2.v4, "*nat\n:margay-nq - [0:0]\nCOMMIT\n");
}

#[test]
fn hooks_in_place_are_left_alone_and_misplaced_ones_moved() {
    let ops = vec![FirewallOp::AttachHook {
        hook: Hook::Forward,
        chain: name("margay-forward"),
    }];
    let ours = BuiltinRule {
        spec: "-m comment --comment margay-hook -j margay-forward".into(),
        ours: Some(name("margay-forward")),
    };
    let foreign = BuiltinRule {
        spec: "-j DOCKER".into(),
        ours: None,
    };
    let mut known = Known::default();
    for f in FAMILIES {
        known
            .builtins
            .insert((f, Hook::Forward), vec![ours.clone(), foreign.clone()]);
    }
    assert!(plan(&ops, &known).expect("plan").is_empty());
    known.builtins.insert(
        (IpVersion::V6, Hook::Forward),
        vec![foreign.clone(), ours.clone()],
    );
    let p = plan(&ops, &known).expect("plan");
    assert_eq!(p.v4, "");
    // Afterwards ours is first in both families, the foreign rule kept.
    assert_eq!(
        p.next.builtins[&(IpVersion::V6, Hook::Forward)],
        vec![ours, foreign]
    );
    assert!(plan(&ops, &p.next).expect("plan").is_empty());
    assert_eq!(
        p.v6,
        "*filter\n-D FORWARD -m comment --comment margay-hook -j margay-forward\n\
         -I FORWARD 1 -m comment --comment margay-hook -j margay-forward\nCOMMIT\n"
    );
}

#[test]
fn deletes_come_last_and_only_where_the_chain_is() {
    let mut known = Known::default();
    known
        .chains
        .insert(name("margay-old"), [Table::Filter].into());
    known
        .sets
        .insert(name("margay-t4-old"), SetHeader::ours(IpVersion::V4));
    let ops = vec![
        FirewallOp::ReplaceChain {
            name: name("margay-a"),
            rules: vec![],
        },
        FirewallOp::DeleteChain {
            name: name("margay-old"),
        },
        FirewallOp::DeleteChain {
            name: name("margay-never"),
        },
        FirewallOp::DeleteSet {
            name: name("margay-t4-old"),
        },
    ];
    let p = plan(&ops, &known).expect("plan");
    let want = "*filter\n:margay-a - [0:0]\n:margay-old - [0:0]\n-X margay-old\nCOMMIT\n";
    assert_eq!(p.v4, want);
    assert_eq!(p.v6, want);
    assert_eq!(p.ipset_post, "destroy margay-t4-old\n");
    assert!(p.ipset_pre.is_empty());
    assert!(!p.next.chains.contains_key(&name("margay-old")));
    assert!(!p.next.sets.contains_key(&name("margay-t4-old")));
}

#[test]
fn a_covering_member_is_added_before_the_covered_one_goes() {
    let mut known = Known::default();
    known
        .sets
        .insert(name("margay-masq4"), SetHeader::ours(IpVersion::V4));
    let member = |add: bool, m: &str| {
        let (set, family, members) = (name("margay-masq4"), IpVersion::V4, [net(m)].into());
        if add {
            FirewallOp::AddMembers {
                set,
                family,
                members,
            }
        } else {
            FirewallOp::RemoveMembers {
                set,
                family,
                members,
            }
        }
    };
    // The diff removes a nested member first (nftables needs that).
    let ops = vec![member(false, "10.65.0.0/24"), member(true, "10.65.0.0/16")];
    let p = plan(&ops, &known).expect("plan");
    assert_eq!(
        p.ipset_pre,
        "add margay-masq4 10.65.0.0/16\ndel margay-masq4 10.65.0.0/24\n"
    );
}

#[test]
fn deleted_chains_are_all_flushed_before_any_is_deleted() {
    // The case: an endpoint chain jumps to a profile chain whose
    // name sorts first; both go in one apply.
    let mut known = Known::default();
    for c in ["margay-pi-solo2", "margay-to-caliw3", "margay-a-last"] {
        known
            .chains
            .insert(ObjectName::fixed(c), [Table::Filter].into());
    }
    let ops = vec![
        FirewallOp::DeleteChain {
            name: name("margay-pi-solo2"),
        },
        FirewallOp::DeleteChain {
            name: name("margay-to-caliw3"),
        },
        FirewallOp::DeleteChain {
            name: name("margay-a-last"),
        },
    ];
    let p = plan(&ops, &known).expect("plan");
    let want = "*filter\n:margay-a-last - [0:0]\n:margay-pi-solo2 - [0:0]\n\
                :margay-to-caliw3 - [0:0]\n-X margay-a-last\n-X margay-pi-solo2\n\
                -X margay-to-caliw3\nCOMMIT\n";
    assert_eq!(p.v4, want);
    assert_eq!(p.v6, want);
    for text in [&p.v4, &p.v6] {
        let first_x = text.find("\n-X ").expect("a delete");
        let last_decl = text.rfind("\n:").expect("a declaration");
        assert!(last_decl < first_x, "a delete before a flush:\n{text}");
    }
}

/// Sets a (other maxelem), b (other family) and c (deleted first) known,
/// and the ops that re-create them as the lowering now wants them.
fn set_type_change_ops() -> (Known, Vec<FirewallOp>) {
    let mut known = Known::default();
    let mut small = SetHeader::ours(IpVersion::V4);
    small.maxelem = Some(65536);
    known.sets.insert(name("margay-a"), small);
    known
        .sets
        .insert(name("margay-b"), SetHeader::ours(IpVersion::V4));
    known
        .sets
        .insert(name("margay-c"), SetHeader::ours(IpVersion::V4));
    let add = |set: &'static str, m: &str| FirewallOp::AddMembers {
        set: name(set),
        family: IpVersion::V6,
        members: [net(m)].into(),
    };
    let ops = vec![
        FirewallOp::CreateSet {
            name: name("margay-a"),
            family: IpVersion::V4,
        },
        FirewallOp::AddMembers {
            set: name("margay-a"),
            family: IpVersion::V4,
            members: [net("10.0.0.1/32")].into(),
        },
        FirewallOp::CreateSet {
            name: name("margay-b"),
            family: IpVersion::V6,
        },
        add("margay-b", "fd00::1/128"),
        FirewallOp::DeleteSet {
            name: name("margay-c"),
        },
        FirewallOp::CreateSet {
            name: name("margay-c"),
            family: IpVersion::V4,
        },
    ];
    (known, ops)
}

#[test]
fn set_type_changes_swap_or_recreate() {
    let (known, ops) = set_type_change_ops();
    let p = plan(&ops, &known).expect("plan");
    let tmp = ObjectName::generate("tmp", "margay-a");
    let tmp_c = ObjectName::generate("tmp", "margay-c");
    assert_eq!(
        p.ipset_pre,
        format!(
            "create {tmp} hash:net family inet hashsize 1024 maxelem 1048576\nflush {tmp}\n\
             add {tmp} 10.0.0.1/32\nswap {tmp} margay-a\n\
             destroy margay-b\ncreate margay-b hash:net family inet6 hashsize 1024 maxelem 1048576\n\
             add margay-b fd00::1/128\n\
             create {tmp_c} hash:net family inet hashsize 1024 maxelem 1048576\nflush {tmp_c}\n\
             swap {tmp_c} margay-c\n"
        )
    );
    // The old contents stay in the temporary sets until the rules went in.
    assert_eq!(p.ipset_post, format!("destroy {tmp}\ndestroy {tmp_c}\n"));
    // Rollback, newest first; after line 4 only what lines 1-4 did.
    assert_eq!(
        p.ipset_rollback(usize::MAX, &FAMILIES),
        format!(
            "swap {tmp_c} margay-c\ndestroy {tmp_c}\ndel margay-b fd00::1/128\n\
             destroy margay-b\nswap {tmp} margay-a\ndestroy {tmp}\n"
        )
    );
    assert_eq!(
        p.ipset_rollback(4, &FAMILIES),
        format!("swap {tmp} margay-a\ndestroy {tmp}\n")
    );
    assert_eq!(p.ipset_rollback(3, &FAMILIES), format!("destroy {tmp}\n"));
    // v4 rules went in, v6 refused: only margay-b (v6) is taken back.
    assert_eq!(
        p.ipset_rollback(usize::MAX, &[IpVersion::V6]),
        "del margay-b fd00::1/128\ndestroy margay-b\n"
    );
    assert!(
        !p.ipset_post.contains("destroy margay-c\n"),
        "re-created set stays"
    );
    assert_eq!(
        p.next.sets[&name("margay-b")],
        SetHeader::ours(IpVersion::V6)
    );
}

#[test]
fn deleting_a_hooked_chain_detaches_it() {
    let mut known = Known::default();
    known
        .chains
        .insert(name("margay-out"), [Table::Filter].into());
    let hook = BuiltinRule {
        spec: "-m comment --comment margay-hook -j margay-out".into(),
        ours: Some(name("margay-out")),
    };
    let foreign = BuiltinRule {
        spec: "-j ACCEPT".into(),
        ours: None,
    };
    known.builtins.insert(
        (IpVersion::V4, Hook::Output),
        vec![hook.clone(), foreign.clone()],
    );
    let ops = vec![FirewallOp::DeleteChain {
        name: name("margay-out"),
    }];
    let p = plan(&ops, &known).expect("plan");
    assert_eq!(
        p.v4,
        "*filter\n-D OUTPUT -m comment --comment margay-hook -j margay-out\n\
         :margay-out - [0:0]\n-X margay-out\nCOMMIT\n"
    );
    assert_eq!(
        p.v6,
        "*filter\n:margay-out - [0:0]\n-X margay-out\nCOMMIT\n"
    );
    assert_eq!(
        p.next.builtins[&(IpVersion::V4, Hook::Output)],
        vec![foreign]
    );
}

#[test]
fn a_detached_hook_leaves_its_builtin_chain_in_both_families() {
    let mut known = Known::default();
    known
        .chains
        .insert(name("margay-output"), [Table::Filter].into());
    let hook = BuiltinRule {
        spec: "-m comment --comment margay-hook -j margay-output".into(),
        ours: Some(name("margay-output")),
    };
    let foreign = BuiltinRule {
        spec: "-j ACCEPT".into(),
        ours: None,
    };
    for family in FAMILIES {
        known
            .builtins
            .insert((family, Hook::Output), vec![hook.clone(), foreign.clone()]);
    }
    let detach = FirewallOp::DetachHook {
        hook: Hook::Output,
        chain: name("margay-output"),
    };
    let p = plan(std::slice::from_ref(&detach), &known).expect("plan");
    let want = "*filter\n-D OUTPUT -m comment --comment margay-hook -j margay-output\nCOMMIT\n";
    assert_eq!(p.v4, want);
    assert_eq!(p.v6, want);
    for family in FAMILIES {
        assert_eq!(
            p.next.builtins[&(family, Hook::Output)],
            vec![foreign.clone()]
        );
    }
    // Attached again by the same ops: the attachment stays.
    let attach = FirewallOp::AttachHook {
        hook: Hook::Output,
        chain: name("margay-output"),
    };
    let p = plan(&[detach, attach], &known).expect("plan");
    assert!(p.is_empty(), "{p:?}");
}

/// Plays restore text on a model of one table's user chains with
/// iptables' rule: a chain still jumped to cannot be deleted. Returns
/// the first refused line.
fn play(text: &str, chains: &mut BTreeMap<String, Vec<String>>) -> Result<(), String> {
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [decl, ..] if decl.starts_with(':') => {
                chains.insert(decl[1..].to_owned(), vec![]);
            }
            ["-A", chain, .., "-j" | "-g", target] => {
                chains
                    .entry((*chain).to_owned())
                    .or_default()
                    .push((*target).to_owned());
            }
            ["-X", chain] => {
                if chains.values().flatten().any(|t| t == chain) {
                    return Err(line.to_owned());
                }
                chains.remove(*chain);
            }
            _ => {}
        }
    }
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
    /// Any set of chains jumping to each other, any subset deleted and
    /// the rest rewritten without the deleted targets: no delete is
    /// refused, and only the deleted chains are gone.
    #[test]
    fn deletes_never_hit_a_busy_chain(
        jumps in proptest::collection::vec(proptest::collection::vec(0usize..6, 0..3), 6),
        doomed in proptest::collection::vec(proptest::prelude::any::<bool>(), 6),
    ) {
        let names: Vec<ObjectName> = (0..6)
            .map(|i| ObjectName::generate("c", &format!("n{}", 5 - i)))
            .collect();
        let mut known = Known::default();
        let mut kernel: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, targets) in jumps.iter().enumerate() {
            known.chains.insert(names[i].clone(), [Table::Filter].into());
            kernel.insert(
                names[i].to_string(),
                targets.iter().map(|t| names[*t].to_string()).collect(),
            );
        }
        let ops: Vec<FirewallOp> = (0..6)
            .map(|i| {
                if doomed[i] {
                    FirewallOp::DeleteChain { name: names[i].clone() }
                } else {
                    let rules = jumps[i]
                        .iter()
                        .filter(|t| !doomed[**t])
                        .map(|t| rule(vec![], Action::Jump(names[*t].clone())))
                        .collect();
                    FirewallOp::ReplaceChain { name: names[i].clone(), rules }
                }
            })
            .collect();
        let p = plan(&ops, &known).expect("plan");
        play(&p.v4, &mut kernel).map_err(|l| {
            proptest::test_runner::TestCaseError::fail(format!("refused {l} in\n{}", p.v4))
        })?;
        let left: BTreeSet<String> = kernel.keys().cloned().collect();
        let want: BTreeSet<String> = (0..6)
            .filter(|i| !doomed[*i])
            .map(|i| names[i].to_string())
            .collect();
        proptest::prop_assert_eq!(left, want);
    }
}

#[test]
fn foreign_names_are_refused() {
    let ops = vec![FirewallOp::DeleteChain {
        name: name("INPUT"),
    }];
    assert!(plan(&ops, &Known::default()).is_err());
    let ops = vec![FirewallOp::AttachHook {
        hook: Hook::Input,
        chain: name("ACCEPT"),
    }];
    assert!(plan(&ops, &Known::default()).is_err());
}
