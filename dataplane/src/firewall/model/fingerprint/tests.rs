//! The canonical encoding pinned byte for byte, fingerprints pinned to fixed
//! values (an accidental change of either fails here), and distinct rules
//! encoded and hashed apart.

use super::*;
use crate::firewall::model::{fnv1a64, ObjectName};
use proptest::prelude::*;

fn rule(matches: Vec<Match>, action: Action) -> GenericRule {
    GenericRule { matches, action }
}

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

/// A rule using every kind of field: text, bool, option, net, ports, marks.
fn busy_rule() -> GenericRule {
    rule(
        vec![
            Match::Family(IpVersion::V4),
            Match::InInterface {
                name: "cali".into(),
                prefix: true,
            },
            Match::Protocol {
                proto: 6,
                negated: false,
            },
            Match::SrcNet {
                net: net("10.0.0.0/8"),
                negated: true,
            },
            Match::DstSet {
                set: ObjectName::fixed("margay-t4-web"),
                negated: false,
            },
            Match::DstPorts {
                ports: vec![
                    PortRange { lo: 80, hi: 80 },
                    PortRange { lo: 8000, hi: 8080 },
                ],
                negated: false,
            },
            Match::Mark {
                value: 0,
                mask: 0x0300_0000,
            },
        ],
        Action::Jump(ObjectName::fixed("margay-pi-web")),
    )
}

#[test]
fn fnv1a_matches_the_reference_vectors() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    let mut h = Fnv1a::new();
    h.put(b"foo");
    h.put(b"bar");
    assert_eq!(h.finish(), fnv1a64(b"foobar"));
}

#[test]
fn the_encoding_is_pinned_byte_for_byte() {
    assert_eq!(
        canonical_bytes(&rule(vec![], Action::Accept)),
        [ENCODING_VERSION, 0, 0, 0, 0, A_ACCEPT]
    );
    let r = rule(
        vec![
            Match::OutInterface {
                name: "ab".into(),
                prefix: false,
            },
            Match::DstNet {
                net: net("fd00::/64"),
                negated: false,
            },
            Match::Icmp {
                icmp_type: 8,
                code: Some(0),
                negated: true,
            },
            Match::ConnState(CtState::Invalid),
        ],
        Action::Log { prefix: "x".into() },
    );
    let mut want = vec![1, 4, 0, 0, 0];
    want.extend([3, 2, 0, 0, 0, b'a', b'b', 0]);
    want.extend([
        6, 6, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0,
    ]);
    want.extend([11, 8, 1, 0, 1]);
    want.extend([13, 2]);
    want.extend([6, 1, 0, 0, 0, b'x']);
    assert_eq!(canonical_bytes(&r), want);
}

#[test]
fn fingerprints_are_pinned() {
    // Fixed values: if one of these changes, every rule in every kernel
    // is rewritten once on upgrade. Change them only together with
    // ENCODING_VERSION, on purpose. (Computed independently from the
    // format in the module doc, outside Rust.)
    assert_eq!(
        rule(vec![], Action::Drop).fingerprint(),
        0xfb4e_9ac7_3bab_ae6a
    );
    assert_eq!(
        rule(
            vec![Match::ConnState(CtState::EstablishedRelated)],
            Action::Accept
        )
        .fingerprint(),
        0xde87_d2b3_2f39_b546
    );
    assert_eq!(busy_rule().fingerprint(), 0xf175_db8f_ae93_9a36);
    for r in [rule(vec![], Action::Drop), busy_rule()] {
        assert_eq!(r.fingerprint(), fnv1a64(&canonical_bytes(&r)));
    }
}

/// Rules that differ from `busy_rule` (and from each other) in one place each.
fn neighbours() -> Vec<GenericRule> {
    let base = busy_rule();
    let mut out = vec![base.clone()];
    for (i, m) in header_changes().into_iter().chain(address_changes()) {
        let mut r = base.clone();
        r.matches[i] = m;
        out.push(r);
    }
    let mut swapped = base.clone();
    swapped.matches.swap(0, 2);
    out.push(swapped);
    let mut fewer = base.clone();
    fewer.matches.pop();
    out.push(fewer);
    for action in other_actions() {
        let mut r = base.clone();
        r.action = action;
        out.push(r);
    }
    out
}

/// Changes to `busy_rule`'s family, interface and protocol matches (by index).
fn header_changes() -> Vec<(usize, Match)> {
    vec![
        (0, Match::Family(IpVersion::V6)),
        (
            1,
            Match::InInterface {
                name: "cali".into(),
                prefix: false,
            },
        ),
        (
            1,
            Match::OutInterface {
                name: "cali".into(),
                prefix: true,
            },
        ),
        (
            1,
            Match::InInterface {
                name: "calj".into(),
                prefix: true,
            },
        ),
        (
            2,
            Match::Protocol {
                proto: 6,
                negated: true,
            },
        ),
        (
            2,
            Match::Protocol {
                proto: 17,
                negated: false,
            },
        ),
    ]
}

/// Changes to `busy_rule`'s net, set, port and mark matches (by index).
fn address_changes() -> Vec<(usize, Match)> {
    vec![
        (
            3,
            Match::SrcNet {
                net: net("10.0.0.0/9"),
                negated: true,
            },
        ),
        (
            3,
            Match::DstNet {
                net: net("10.0.0.0/8"),
                negated: true,
            },
        ),
        (
            4,
            Match::SrcSet {
                set: ObjectName::fixed("margay-t4-web"),
                negated: false,
            },
        ),
        (
            5,
            Match::SrcPorts {
                ports: vec![
                    PortRange { lo: 80, hi: 80 },
                    PortRange { lo: 8000, hi: 8080 },
                ],
                negated: false,
            },
        ),
        (
            5,
            Match::DstPorts {
                ports: vec![PortRange { lo: 80, hi: 8080 }],
                negated: false,
            },
        ),
        (
            6,
            Match::Mark {
                value: 0x0100_0000,
                mask: 0x0300_0000,
            },
        ),
    ]
}

/// Every action `busy_rule` does not have.
fn other_actions() -> Vec<Action> {
    vec![
        Action::Goto(ObjectName::fixed("margay-pi-web")),
        Action::Jump(ObjectName::fixed("margay-pi-wed")),
        Action::Accept,
        Action::Drop,
        Action::Return,
        Action::Continue,
        Action::Masquerade,
        Action::Log {
            prefix: "margay-pi-web".into(),
        },
        Action::SetMark { value: 1, mask: 1 },
        Action::SetMark { value: 1, mask: 3 },
    ]
}

#[test]
fn distinct_rules_have_distinct_encodings_and_fingerprints() {
    let rules = neighbours();
    for (i, a) in rules.iter().enumerate() {
        for b in &rules[i + 1..] {
            assert_ne!(a, b, "the test rules are distinct");
            assert_ne!(canonical_bytes(a), canonical_bytes(b), "{a:?} / {b:?}");
            assert_ne!(a.fingerprint(), b.fingerprint(), "{a:?} / {b:?}");
        }
    }
}

fn small_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ab]{0,2}").expect("regex")
}

fn set_name() -> impl Strategy<Value = ObjectName> {
    prop_oneof![
        Just(ObjectName::fixed("margay-a")),
        Just(ObjectName::fixed("margay-ab")),
    ]
}

fn small_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        Just(net("10.0.0.0/8")),
        Just(net("10.0.0.0/9")),
        Just(net("::a00:0/104")),
    ]
}

fn ports() -> impl Strategy<Value = Vec<PortRange>> {
    proptest::collection::vec(
        (0u16..3, 0u16..3).prop_map(|(lo, hi)| PortRange { lo, hi }),
        0..3,
    )
}

fn a_match() -> impl Strategy<Value = Match> {
    let b = any::<bool>;
    prop_oneof![
        prop_oneof![Just(IpVersion::V4), Just(IpVersion::V6)].prop_map(Match::Family),
        (small_text(), b()).prop_map(|(name, prefix)| Match::InInterface { name, prefix }),
        (small_text(), b()).prop_map(|(name, prefix)| Match::OutInterface { name, prefix }),
        (0u8..3, b()).prop_map(|(proto, negated)| Match::Protocol { proto, negated }),
        (small_net(), b()).prop_map(|(net, negated)| Match::SrcNet { net, negated }),
        (small_net(), b()).prop_map(|(net, negated)| Match::DstNet { net, negated }),
        (set_name(), b()).prop_map(|(set, negated)| Match::SrcSet { set, negated }),
        (set_name(), b()).prop_map(|(set, negated)| Match::DstSet { set, negated }),
        (ports(), b()).prop_map(|(ports, negated)| Match::SrcPorts { ports, negated }),
        (ports(), b()).prop_map(|(ports, negated)| Match::DstPorts { ports, negated }),
        (0u8..2, proptest::option::of(0u8..2), b()).prop_map(|(icmp_type, code, negated)| {
            Match::Icmp {
                icmp_type,
                code,
                negated,
            }
        }),
        (0u32..2, 0u32..2).prop_map(|(value, mask)| Match::Mark { value, mask }),
        prop_oneof![Just(CtState::EstablishedRelated), Just(CtState::Invalid)]
            .prop_map(Match::ConnState),
    ]
}

fn an_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Accept),
        Just(Action::Drop),
        Just(Action::Return),
        Just(Action::Masquerade),
        Just(Action::Continue),
        set_name().prop_map(Action::Jump),
        set_name().prop_map(Action::Goto),
        small_text().prop_map(|prefix| Action::Log { prefix }),
        (0u32..2, 0u32..2).prop_map(|(value, mask)| Action::SetMark { value, mask }),
    ]
}

fn a_rule() -> impl Strategy<Value = GenericRule> {
    (proptest::collection::vec(a_match(), 0..3), an_action())
        .prop_map(|(matches, action)| GenericRule { matches, action })
}

proptest! {
    #[test]
    fn the_encoding_is_injective(a in a_rule(), b in a_rule()) {
        prop_assert_eq!(a == b, canonical_bytes(&a) == canonical_bytes(&b));
        prop_assert_eq!(a.fingerprint(), fnv1a64(&canonical_bytes(&a)));
    }
}
