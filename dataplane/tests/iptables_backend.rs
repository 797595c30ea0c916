//! The iptables + ipset backend against the real kernel, in throw-away
//! network namespaces, for both iptables variants: writes land as expected,
//! read-back matches what was written (also from a fresh backend, as after a
//! restart), deltas touch only their chain, hook rules stay first and
//! single, foreign rules survive, names from outside cannot reach the
//! kernel unhashed, and sets change type by swap.

use std::collections::BTreeSet;

use ipnet::IpNet;
use margay_dataplane::firewall::diff::apply_to;
use margay_dataplane::firewall::iptables::{IptablesBackend, Variant};
use margay_dataplane::firewall::model::{
    Action, CtState, GenericRule, Hook, Match, ObjectName, ObservedRuleset,
};
use margay_dataplane::firewall::{FirewallBackend, FirewallError, FirewallOp};
use margay_dataplane::netns::NetnsTarget;
use margay_policy::desired::{IpVersion, PortRange};
use margay_tests::netns::{require_root, TestNetns};

fn name(s: &'static str) -> ObjectName {
    ObjectName::fixed(s)
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test net")
}

fn rule(matches: Vec<Match>, action: Action) -> GenericRule {
    GenericRule { matches, action }
}

fn backend(ns: &TestNetns, variant: Variant) -> IptablesBackend {
    let target = NetnsTarget::named(ns.name()).expect("valid namespace name");
    IptablesBackend::with_variant(&target, variant)
}

fn save(ns: &TestNetns, variant: Variant, family: IpVersion, counters: bool) -> String {
    let bin = variant.save_bin(family);
    if counters {
        ns.exec_ok(&[bin, "-c"])
    } else {
        ns.exec_ok(&[bin])
    }
}

/// The `iptables` binary of a variant, for foreign rules.
fn iptables_bin(variant: Variant) -> &'static str {
    match variant {
        Variant::Nft => "iptables-nft",
        Variant::Legacy => "iptables-legacy",
    }
}

fn expected(op_lists: &[&[FirewallOp]]) -> ObservedRuleset {
    let mut o = ObservedRuleset::default();
    for ops in op_lists {
        apply_to(&mut o, ops);
    }
    o
}

const MARK: u32 = 0x0100_0000;

fn profile_rules(extra: bool) -> Vec<GenericRule> {
    let mut rules = vec![
        rule(
            vec![
                Match::Family(IpVersion::V4),
                Match::SrcSet {
                    set: name("margay-t4-web"),
                    negated: false,
                },
            ],
            Action::SetMark {
                value: MARK,
                mask: MARK,
            },
        ),
        rule(
            vec![
                Match::Family(IpVersion::V6),
                Match::SrcSet {
                    set: name("margay-t6-web"),
                    negated: false,
                },
            ],
            Action::SetMark {
                value: MARK,
                mask: MARK,
            },
        ),
        rule(
            vec![
                Match::Protocol {
                    proto: 6,
                    negated: false,
                },
                Match::DstPorts {
                    ports: vec![
                        PortRange { lo: 80, hi: 80 },
                        PortRange { lo: 8000, hi: 8080 },
                    ],
                    negated: false,
                },
            ],
            Action::Log {
                prefix: "margay-test: ".into(),
            },
        ),
        rule(
            vec![Match::Mark {
                value: MARK,
                mask: MARK,
            }],
            Action::Return,
        ),
    ];
    if extra {
        rules.push(rule(
            vec![Match::SrcNet {
                net: net("10.2.0.0/16"),
                negated: false,
            }],
            Action::Drop,
        ));
    }
    rules
}

/// A small but complete program: sets of both families, filter and nat
/// chains, all three kinds of hooks.
fn program() -> Vec<FirewallOp> {
    vec![
        FirewallOp::CreateSet {
            name: name("margay-t4-web"),
            family: IpVersion::V4,
        },
        FirewallOp::CreateSet {
            name: name("margay-t6-web"),
            family: IpVersion::V6,
        },
        FirewallOp::CreateSet {
            name: name("margay-masq4"),
            family: IpVersion::V4,
        },
        FirewallOp::CreateSet {
            name: name("margay-pools4"),
            family: IpVersion::V4,
        },
        FirewallOp::AddMembers {
            set: name("margay-t4-web"),
            family: IpVersion::V4,
            members: [net("10.0.0.1/32"), net("10.0.0.2/32"), net("10.1.0.0/16")].into(),
        },
        FirewallOp::AddMembers {
            set: name("margay-t6-web"),
            family: IpVersion::V6,
            members: [net("fd00::1/128")].into(),
        },
        FirewallOp::AddMembers {
            set: name("margay-masq4"),
            family: IpVersion::V4,
            members: [net("10.0.0.0/16")].into(),
        },
        FirewallOp::AddMembers {
            set: name("margay-pools4"),
            family: IpVersion::V4,
            members: [net("10.0.0.0/16"), net("10.1.0.0/16")].into(),
        },
        FirewallOp::ReplaceChain {
            name: name("margay-pi-web"),
            rules: profile_rules(false),
        },
        FirewallOp::ReplaceChain {
            name: name("margay-to-cali1"),
            rules: vec![
                rule(
                    vec![Match::ConnState(CtState::EstablishedRelated)],
                    Action::Accept,
                ),
                rule(vec![], Action::Jump(name("margay-pi-web"))),
                rule(
                    vec![Match::Mark {
                        value: MARK,
                        mask: MARK,
                    }],
                    Action::Return,
                ),
                rule(vec![], Action::Drop),
            ],
        },
        FirewallOp::ReplaceChain {
            name: name("margay-forward"),
            rules: vec![rule(
                vec![Match::OutInterface {
                    name: "cali1".into(),
                    prefix: false,
                }],
                Action::Goto(name("margay-to-cali1")),
            )],
        },
        FirewallOp::ReplaceChain {
            name: name("margay-out"),
            rules: vec![rule(
                vec![Match::Protocol {
                    proto: 1,
                    negated: false,
                }],
                Action::Continue,
            )],
        },
        FirewallOp::ReplaceChain {
            name: name("margay-nat-post"),
            rules: vec![rule(
                vec![
                    Match::Family(IpVersion::V4),
                    Match::SrcSet {
                        set: name("margay-masq4"),
                        negated: false,
                    },
                    Match::DstSet {
                        set: name("margay-pools4"),
                        negated: true,
                    },
                ],
                Action::Masquerade,
            )],
        },
        FirewallOp::AttachHook {
            hook: Hook::Forward,
            chain: name("margay-forward"),
        },
        FirewallOp::AttachHook {
            hook: Hook::Output,
            chain: name("margay-out"),
        },
        FirewallOp::AttachHook {
            hook: Hook::NatPostrouting,
            chain: name("margay-nat-post"),
        },
    ]
}

/// Lines of `chain` in a save dump.
fn chain_lines<'a>(dump: &'a str, chain: &str) -> Vec<&'a str> {
    let prefix = format!("-A {chain} ");
    dump.lines()
        .filter(|l| l.starts_with(&prefix) || l.contains(&format!("] {prefix}")))
        .collect()
}

/// The packet count of the first rule of `chain` in an `iptables-save -c` dump.
fn first_rule_packets(dump: &str, chain: &str) -> u64 {
    let line = chain_lines(dump, chain)
        .first()
        .copied()
        .expect("chain has a rule");
    let inner = line
        .strip_prefix('[')
        .and_then(|l| l.split(':').next())
        .expect("counter prefix");
    inner.parse().expect("packet count")
}

macro_rules! both_variants {
    ($body:ident: $nft:ident, $legacy:ident) => {
        #[test]
        fn $nft() {
            if require_root(stringify!($nft)) {
                $body(Variant::Nft);
            }
        }

        #[test]
        fn $legacy() {
            if require_root(stringify!($legacy)) {
                $body(Variant::Legacy);
            }
        }
    };
}

both_variants!(full_program_round_trips: full_program_round_trips_nft, full_program_round_trips_legacy);
both_variants!(delta_touches_only_its_chain: delta_touches_only_its_chain_nft, delta_touches_only_its_chain_legacy);
both_variants!(hook_rules_stay_first_and_single: hook_rules_stay_first_nft, hook_rules_stay_first_legacy);
both_variants!(set_type_changes_swap_in_place: set_type_changes_nft, set_type_changes_legacy);
both_variants!(drift_is_seen_and_repaired: drift_is_seen_and_repaired_nft, drift_is_seen_and_repaired_legacy);
both_variants!(deletes_leave_nothing_behind: deletes_leave_nothing_behind_nft, deletes_leave_nothing_behind_legacy);

fn full_program_round_trips(variant: Variant) {
    let ns = TestNetns::new("ipt-full");
    let mut be = backend(&ns, variant);
    assert_eq!(
        be.observe().expect("observe empty"),
        ObservedRuleset::default()
    );
    let ops = program();
    be.write(&ops).expect("write program");

    let v4 = save(&ns, variant, IpVersion::V4, false);
    let forward = v4
        .lines()
        .find(|l| l.starts_with("-A FORWARD "))
        .expect("FORWARD rule");
    assert_eq!(
        forward,
        "-A FORWARD -m comment --comment margay-hook -j margay-forward"
    );
    let nat = v4.split("*nat").nth(1).expect("nat table");
    assert!(nat.contains("-A POSTROUTING -m comment --comment margay-hook -j margay-nat-post"));
    let masq = chain_lines(nat, "margay-nat-post");
    assert_eq!(masq.len(), 1, "{v4}");
    assert!(masq[0].contains("--match-set margay-masq4 src"));
    assert!(masq[0].contains("! --match-set margay-pools4 dst"));
    assert!(masq[0].ends_with("-j MASQUERADE"));
    // Family-specific rules land in their family only.
    assert_eq!(chain_lines(&v4, "margay-pi-web").len(), 3);
    assert!(v4.contains("--match-set margay-t4-web src"));
    assert!(!v4.contains("margay-t6-web"));
    assert!(v4.contains("--log-prefix \"margay-test: \""));
    let v6 = save(&ns, variant, IpVersion::V6, false);
    assert_eq!(chain_lines(&v6, "margay-pi-web").len(), 3);
    assert!(v6.contains("--match-set margay-t6-web src"));
    assert!(!v6.contains("margay-t4-web"));
    assert!(chain_lines(&v6, "margay-nat-post").is_empty());
    assert!(v6.contains(":margay-nat-post - [0:0]"));
    // Every rule of ours is tagged with its fingerprint.
    for line in v4
        .lines()
        .chain(v6.lines())
        .filter(|l| l.starts_with("-A margay-"))
    {
        assert!(line.contains("-m comment --comment \""), "untagged: {line}");
    }
    let sets = ns.exec_ok(&["ipset", "save"]);
    assert!(sets.contains("create margay-t4-web hash:net family inet "));
    assert!(sets.contains("create margay-t6-web hash:net family inet6 "));
    assert!(sets.contains("add margay-t4-web 10.1.0.0/16"));
    assert!(sets.contains("add margay-t6-web fd00::1"));

    let want = expected(&[&ops]);
    assert_eq!(be.observe().expect("observe"), want);
    // A restarted agent: variant found from what is there, same read-back.
    let target = NetnsTarget::named(ns.name()).expect("name");
    let mut again = IptablesBackend::new(&target).expect("detect");
    assert_eq!(again.variant(), variant);
    assert_eq!(again.observe().expect("observe after restart"), want);
    // Writing the same program again changes nothing and plans no hook moves.
    let replay = again.plan(&ops).expect("plan");
    // (members are re-added idempotently; sets are not re-created)
    assert!(!replay.ipset_pre.contains("create"), "{}", replay.ipset_pre);
    assert!(!replay.v4.contains("-I FORWARD"), "{}", replay.v4);
    again.apply(replay).expect("replay");
    assert_eq!(again.observe().expect("observe"), want);
    assert_eq!(
        save(&ns, variant, IpVersion::V4, false)
            .matches("margay-hook")
            .count(),
        3
    );
}

fn delta_touches_only_its_chain(variant: Variant) {
    let ns = TestNetns::new("ipt-delta");
    let mut be = backend(&ns, variant);
    let ops = program();
    be.write(&ops).expect("write program");
    ns.exec_ok(&["ping", "-c", "2", "-W", "1", "127.0.0.1"]);
    let before = save(&ns, variant, IpVersion::V4, true);
    assert!(first_rule_packets(&before, "margay-out") >= 2, "{before}");

    let delta = vec![FirewallOp::ReplaceChain {
        name: name("margay-pi-web"),
        rules: profile_rules(true),
    }];
    let plan = be.plan(&delta).expect("plan delta");
    assert!(plan.ipset_pre.is_empty() && plan.ipset_post.is_empty());
    for text in [&plan.v4, &plan.v6] {
        for line in text.lines() {
            assert!(
                matches!(line, "*filter" | "COMMIT" | ":margay-pi-web - [0:0]")
                    || line.starts_with("-A margay-pi-web "),
                "delta wrote {line}"
            );
        }
    }
    assert_eq!(plan.v4.lines().filter(|l| l.starts_with("-A ")).count(), 4);
    be.apply(plan).expect("apply delta");
    let after = save(&ns, variant, IpVersion::V4, true);
    // Untouched chains keep their rules (and so their counters).
    assert_eq!(
        first_rule_packets(&after, "margay-out"),
        first_rule_packets(&before, "margay-out")
    );
    assert_eq!(chain_lines(&after, "margay-pi-web").len(), 4);
    assert_eq!(be.observe().expect("observe"), expected(&[&ops, &delta]));

    // Rewriting margay-out itself does reset them: the check above means something.
    let out = vec![FirewallOp::ReplaceChain {
        name: name("margay-out"),
        rules: vec![rule(
            vec![Match::Protocol {
                proto: 1,
                negated: false,
            }],
            Action::Continue,
        )],
    }];
    be.write(&out).expect("rewrite margay-out");
    assert_eq!(
        first_rule_packets(&save(&ns, variant, IpVersion::V4, true), "margay-out"),
        0
    );
}

fn hook_rules_stay_first_and_single(variant: Variant) {
    let ns = TestNetns::new("ipt-hook");
    let ipt = iptables_bin(variant);
    // Someone else's rules, before and after we arrive.
    ns.exec_ok(&[ipt, "-A", "FORWARD", "-s", "192.0.2.1", "-j", "ACCEPT"]);
    let mut be = backend(&ns, variant);
    let ops = program();
    be.write(&ops).expect("write program");
    ns.exec_ok(&[ipt, "-I", "FORWARD", "1", "-s", "192.0.2.9", "-j", "DROP"]);
    ns.exec_ok(&[
        ipt,
        "-A",
        "FORWARD",
        "-m",
        "comment",
        "--comment",
        "margay-hook",
        "-j",
        "margay-forward",
    ]);
    let observed = be.observe().expect("observe");
    assert_eq!(
        observed.hooks.get(&Hook::Forward),
        None,
        "not first: must read as detached"
    );
    assert_eq!(observed.hooks.get(&Hook::Output), Some(&name("margay-out")));

    let attach = vec![FirewallOp::AttachHook {
        hook: Hook::Forward,
        chain: name("margay-forward"),
    }];
    be.write(&attach).expect("re-attach");
    let v4 = save(&ns, variant, IpVersion::V4, false);
    let forward: Vec<&str> = v4
        .lines()
        .filter(|l| l.starts_with("-A FORWARD "))
        .collect();
    assert_eq!(
        forward,
        [
            "-A FORWARD -m comment --comment margay-hook -j margay-forward",
            "-A FORWARD -s 192.0.2.9/32 -j DROP",
            "-A FORWARD -s 192.0.2.1/32 -j ACCEPT",
        ]
    );
    assert_eq!(
        be.observe().expect("observe").hooks.get(&Hook::Forward),
        Some(&name("margay-forward"))
    );
}

fn set_type_changes_swap_in_place(variant: Variant) {
    let ns = TestNetns::new("ipt-swap");
    // An older run left a set with other options, in use by a rule.
    ns.exec_ok(&[
        "ipset",
        "create",
        "margay-t4-web",
        "hash:net",
        "family",
        "inet",
        "maxelem",
        "65536",
    ]);
    ns.exec_ok(&["ipset", "add", "margay-t4-web", "10.9.9.9"]);
    ns.exec_ok(&[iptables_bin(variant), "-N", "margay-old"]);
    ns.exec_ok(&[
        iptables_bin(variant),
        "-A",
        "margay-old",
        "-m",
        "set",
        "--match-set",
        "margay-t4-web",
        "src",
        "-j",
        "ACCEPT",
    ]);
    // And a set of the wrong family nobody uses.
    ns.exec_ok(&[
        "ipset",
        "create",
        "margay-t6-x",
        "hash:net",
        "family",
        "inet",
    ]);
    let mut be = backend(&ns, variant);
    let observed = be.observe().expect("observe");
    assert!(
        observed.sets.is_empty(),
        "non-conforming sets read as absent: {observed:?}"
    );
    // An untagged rule reads as 0; an IPv4-only chain also reads as damaged (0).
    assert_eq!(
        observed.chains.get(&name("margay-old")),
        Some(&vec![0, 0]),
        "untagged, one-family chain"
    );

    let ops = vec![
        FirewallOp::CreateSet {
            name: name("margay-t4-web"),
            family: IpVersion::V4,
        },
        FirewallOp::AddMembers {
            set: name("margay-t4-web"),
            family: IpVersion::V4,
            members: [net("10.0.0.1/32")].into(),
        },
        FirewallOp::CreateSet {
            name: name("margay-t6-x"),
            family: IpVersion::V6,
        },
        FirewallOp::AddMembers {
            set: name("margay-t6-x"),
            family: IpVersion::V6,
            members: [net("fd00::5/128")].into(),
        },
    ];
    be.write(&ops).expect("swap in");
    let header = ns.exec_ok(&["ipset", "list", "-t", "margay-t4-web"]);
    assert!(header.contains("maxelem 1048576"), "{header}");
    assert!(
        header.contains("References: 1"),
        "still used by the old rule: {header}"
    );
    let sets = ns.exec_ok(&["ipset", "save"]);
    assert!(sets.contains("add margay-t4-web 10.0.0.1\n"));
    assert!(
        !sets.contains("10.9.9.9"),
        "swapped-in set starts from the ops' members"
    );
    assert!(!sets.contains("margay-tmp-"), "temporary set removed");
    assert!(sets.contains("create margay-t6-x hash:net family inet6 "));
    let observed = be.observe().expect("observe");
    assert_eq!(observed.sets, expected(&[&ops]).sets);
}

fn drift_is_seen_and_repaired(variant: Variant) {
    let ns = TestNetns::new("ipt-drift");
    let mut be = backend(&ns, variant);
    let ops = program();
    be.write(&ops).expect("write program");
    let want = expected(&[&ops]);
    // Someone deletes one of our v6 rules and a set member.
    let v6ipt = match variant {
        Variant::Nft => "ip6tables-nft",
        Variant::Legacy => "ip6tables-legacy",
    };
    ns.exec_ok(&[v6ipt, "-D", "margay-to-cali1", "4"]);
    ns.exec_ok(&["ipset", "del", "margay-t4-web", "10.0.0.2"]);
    let drifted = be.observe().expect("observe drift");
    assert_ne!(
        drifted.chains[&name("margay-to-cali1")],
        want.chains[&name("margay-to-cali1")]
    );
    assert_eq!(
        drifted.chains[&name("margay-pi-web")],
        want.chains[&name("margay-pi-web")]
    );
    assert!(!drifted.sets[&name("margay-t4-web")]
        .members
        .contains(&net("10.0.0.2/32")));

    let repair: Vec<FirewallOp> = ops
        .iter()
        .filter(|op| match op {
            FirewallOp::ReplaceChain { name: n, .. } => n.as_str() == "margay-to-cali1",
            FirewallOp::AddMembers { set, .. } => set.as_str() == "margay-t4-web",
            _ => false,
        })
        .cloned()
        .collect();
    be.write(&repair).expect("repair");
    assert_eq!(be.observe().expect("observe repaired"), want);
}

fn deletes_leave_nothing_behind(variant: Variant) {
    let ns = TestNetns::new("ipt-del");
    let mut be = backend(&ns, variant);
    let ops = program();
    be.write(&ops).expect("write program");
    ns.exec_ok(&[iptables_bin(variant), "-A", "OUTPUT", "-j", "ACCEPT"]);
    let delete = vec![
        FirewallOp::ReplaceChain {
            name: name("margay-to-cali1"),
            rules: vec![rule(vec![], Action::Drop)],
        },
        FirewallOp::DeleteChain {
            name: name("margay-pi-web"),
        },
        // Hooked: its hook rule goes with it, the foreign OUTPUT rule stays.
        FirewallOp::DeleteChain {
            name: name("margay-out"),
        },
        FirewallOp::DeleteSet {
            name: name("margay-t4-web"),
        },
        FirewallOp::DeleteSet {
            name: name("margay-t6-web"),
        },
    ];
    be.write(&delete).expect("delete");
    for family in [IpVersion::V4, IpVersion::V6] {
        let dump = save(&ns, variant, family, false);
        assert!(
            !dump.contains("margay-pi-web") && !dump.contains("margay-out"),
            "{dump}"
        );
    }
    let v4 = save(&ns, variant, IpVersion::V4, false);
    assert!(v4.contains("-A OUTPUT -j ACCEPT"));
    let sets = ns.exec_ok(&["ipset", "save"]);
    assert!(!sets.contains("margay-t4-web") && !sets.contains("margay-t6-web"));
    let mut want = expected(&[&ops, &delete]);
    want.hooks.remove(&Hook::Output);
    assert_eq!(be.observe().expect("observe"), want);
}

#[test]
fn hostile_names_never_reach_the_kernel() {
    if !require_root("hostile_names_never_reach_the_kernel") {
        return;
    }
    let ns = TestNetns::new("ipt-hostile");
    let mut be = backend(&ns, Variant::Nft);
    let set = ObjectName::generate("s4", "has(x) && \"; -j ACCEPT\n-F INPUT");
    let chain = ObjectName::generate("pi", "web\" -j ACCEPT; $(reboot)");
    let ops = vec![
        FirewallOp::CreateSet {
            name: set.clone(),
            family: IpVersion::V4,
        },
        FirewallOp::ReplaceChain {
            name: chain.clone(),
            rules: vec![rule(
                vec![Match::SrcSet {
                    set: set.clone(),
                    negated: false,
                }],
                Action::Accept,
            )],
        },
    ];
    be.write(&ops).expect("write hashed names");
    let ok = |n: &str| {
        n.starts_with("margay-")
            && n.len() <= 28
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    };
    assert!(ok(set.as_str()) && ok(chain.as_str()));
    let v4 = save(&ns, Variant::Nft, IpVersion::V4, false);
    assert!(v4.contains(&format!(":{chain} - [0:0]")));
    assert!(!v4.contains("reboot") && !v4.contains("-F INPUT"));
    assert!(ns.exec_ok(&["ipset", "list", "-n"]).lines().all(ok));

    // A value outside the allowed charset is refused before anything runs.
    let bad = vec![
        FirewallOp::CreateSet {
            name: name("margay-t4-never"),
            family: IpVersion::V4,
        },
        FirewallOp::ReplaceChain {
            name: name("margay-bad"),
            rules: vec![rule(
                vec![Match::InInterface {
                    name: "eth0 -j ACCEPT".into(),
                    prefix: false,
                }],
                Action::Drop,
            )],
        },
    ];
    let before = (
        save(&ns, Variant::Nft, IpVersion::V4, false),
        ns.exec_ok(&["ipset", "save"]),
    );
    let err = be.write(&bad).expect_err("hostile interface refused");
    assert!(matches!(err, FirewallError::Invalid { .. }), "{err}");
    let after = (
        save(&ns, Variant::Nft, IpVersion::V4, false),
        ns.exec_ok(&["ipset", "save"]),
    );
    assert_eq!(strip_comments(&before.0), strip_comments(&after.0));
    assert_eq!(before.1, after.1);
}

fn strip_comments(dump: &str) -> String {
    dump.lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn variant_follows_what_the_namespace_uses() {
    if !require_root("variant_follows_what_the_namespace_uses") {
        return;
    }
    let detect = |ns: &TestNetns| {
        let target = NetnsTarget::named(ns.name()).expect("name");
        IptablesBackend::new(&target).expect("detect").variant()
    };
    let legacy = TestNetns::new("ipt-var-l");
    legacy.exec_ok(&["iptables-legacy", "-A", "INPUT", "-j", "ACCEPT"]);
    assert_eq!(detect(&legacy), Variant::Legacy);
    let nft = TestNetns::new("ipt-var-n");
    nft.exec_ok(&["ip6tables-nft", "-A", "INPUT", "-j", "ACCEPT"]);
    assert_eq!(detect(&nft), Variant::Nft);
    let fresh = TestNetns::new("ipt-var-f");
    let version = fresh.exec_ok(&["iptables", "-V"]);
    let want = if version.contains("nf_tables") {
        Variant::Nft
    } else {
        Variant::Legacy
    };
    assert_eq!(detect(&fresh), want);
}

#[test]
fn many_port_ranges_split_and_read_back_whole() {
    if !require_root("many_port_ranges_split_and_read_back_whole") {
        return;
    }
    let ns = TestNetns::new("ipt-ports");
    let mut be = backend(&ns, Variant::Nft);
    let ports: Vec<PortRange> = (0..40)
        .map(|i| PortRange {
            lo: 1000 + i * 10,
            hi: 1000 + i * 10 + 1,
        })
        .collect();
    let ops = vec![FirewallOp::ReplaceChain {
        name: name("margay-ports"),
        rules: vec![
            rule(
                vec![
                    Match::Protocol {
                        proto: 17,
                        negated: false,
                    },
                    Match::DstPorts {
                        ports,
                        negated: false,
                    },
                ],
                Action::Accept,
            ),
            rule(vec![], Action::Drop),
        ],
    }];
    be.write(&ops).expect("write");
    let v4 = save(&ns, Variant::Nft, IpVersion::V4, false);
    // 40 ranges weigh 80: six multiport matches of at most 15.
    assert_eq!(chain_lines(&v4, "margay-ports").len(), 7, "{v4}");
    let observed = be.observe().expect("observe");
    assert_eq!(observed, expected(&[&ops]));
    let chains: BTreeSet<&ObjectName> = observed.chains.keys().collect();
    assert_eq!(chains, [&name("margay-ports")].into());
}
