//! Property test: incremental lowering agrees with full lowering, and the
//! diff it scopes converges the observed ruleset.

use super::tests::assert_same;
use super::*;
use crate::firewall::diff::{apply_to, diff, observed_of};
use crate::firewall::scenario::{changes_between, rule, DesiredBuilder};
use margay_policy::desired::{Direction, PortRange, Protocol, RuleAction};
use margay_policy::names::Id;
use proptest::prelude::*;

const IFACES: [&str; 6] = ["cali0a", "cali0b", "cali1a", "cali", "tap9", "calixy"];
const PROFILES: [&str; 3] = ["p0", "p1", "p2"];
const TAGS: [&str; 3] = ["t0", "t1", "t2"];

#[derive(Debug, Clone)]
enum Edit {
    Endpoint {
        ifc: usize,
        profiles: Vec<usize>,
        remove: bool,
    },
    Profile {
        p: usize,
        tag: usize,
        port: u16,
        action: u8,
    },
    DropProfile {
        p: usize,
    },
    Members {
        tag: usize,
        members: Vec<u8>,
    },
    DropTag {
        tag: usize,
    },
    Pools {
        masq: bool,
        n: u8,
    },
    Tier {
        ifc: usize,
        remove: bool,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (
            0usize..6,
            proptest::collection::vec(0usize..3, 0..3),
            any::<bool>()
        )
            .prop_map(|(ifc, profiles, remove)| Edit::Endpoint {
                ifc,
                profiles,
                remove
            }),
        (0usize..3, 0usize..3, 1u16..100, 0u8..4).prop_map(|(p, tag, port, action)| {
            Edit::Profile {
                p,
                tag,
                port,
                action,
            }
        }),
        (0usize..3).prop_map(|p| Edit::DropProfile { p }),
        (0usize..3, proptest::collection::vec(0u8..8, 0..5))
            .prop_map(|(tag, members)| Edit::Members { tag, members }),
        (0usize..3).prop_map(|tag| Edit::DropTag { tag }),
        (any::<bool>(), 0u8..4).prop_map(|(masq, n)| Edit::Pools { masq, n }),
        (0usize..6, any::<bool>()).prop_map(|(ifc, remove)| Edit::Tier { ifc, remove }),
    ]
}

fn tag(i: usize) -> IpSetId {
    IpSetId::Tag(Id::new(TAGS[i]).expect("tag"))
}

fn apply_edit(b: &mut DesiredBuilder, e: &Edit) {
    match e {
        Edit::Endpoint {
            ifc,
            profiles,
            remove,
        } => edit_endpoint(b, *ifc, profiles, *remove),
        Edit::Profile {
            p,
            tag: t,
            port,
            action,
        } => edit_profile(b, *p, *t, *port, *action),
        Edit::DropProfile { p } => {
            for d in [Direction::Inbound, Direction::Outbound] {
                b.state
                    .rule_sets
                    .remove(&crate::firewall::scenario::profile_rs(PROFILES[*p], d));
            }
        }
        Edit::Members { tag: t, members } => edit_members(b, *t, members),
        Edit::DropTag { tag: t } => {
            b.state.ip_sets.remove(&tag(*t));
        }
        Edit::Pools { masq, n } => {
            let nets = ["10.9.0.0/16", "10.9.1.0/24", "fd00::/64", "10.8.0.0/16"];
            let id = if *masq {
                IpSetId::MasqueradePools
            } else {
                IpSetId::AllPools
            };
            b.set(id, &nets[..usize::from(*n)]);
        }
        Edit::Tier { ifc, remove } => edit_tier(b, *ifc, *remove),
    }
}

fn edit_endpoint(b: &mut DesiredBuilder, ifc: usize, profiles: &[usize], remove: bool) {
    let name = IFACES[ifc];
    if remove {
        let i = crate::firewall::scenario::iface(name);
        b.state.endpoints.remove(&i);
        b.state.programs.remove(&i);
    } else {
        let ps: Vec<&str> = profiles.iter().map(|p| PROFILES[*p]).collect();
        b.endpoint(name, &format!("10.9.0.{ifc}/32"), &ps);
    }
}

fn edit_profile(b: &mut DesiredBuilder, p: usize, t: usize, port: u16, action: u8) {
    let mut r = rule(match action {
        0 => RuleAction::Allow,
        1 => RuleAction::Deny,
        2 => RuleAction::NextTier,
        _ => RuleAction::Log,
    });
    r.protocol = Some(Protocol(6));
    r.dst.ports = vec![PortRange { lo: port, hi: port }];
    r.src.tag = Some(tag(t));
    b.profile(PROFILES[p], vec![r.clone()], vec![r]);
}

fn edit_members(b: &mut DesiredBuilder, t: usize, members: &[u8]) {
    let m: Vec<String> = members
        .iter()
        .map(|x| {
            if x % 2 == 0 {
                format!("10.9.1.{x}/32")
            } else {
                format!("fd00::{x}/128")
            }
        })
        .collect();
    let refs: Vec<&str> = m.iter().map(String::as_str).collect();
    b.set(tag(t), &refs);
}

fn edit_tier(b: &mut DesiredBuilder, ifc: usize, remove: bool) {
    let i = crate::firewall::scenario::iface(IFACES[ifc]);
    let Some(p) = b.state.programs.get_mut(&i) else {
        return;
    };
    if remove {
        p.inbound.tiers.clear();
        p.outbound.tiers.clear();
        return;
    }
    let mut allow = rule(RuleAction::Allow);
    allow.src.not_tag = Some(tag(0));
    b.policy(
        "tier1",
        "pol",
        vec![allow],
        vec![rule(RuleAction::NextTier)],
    );
    if b.state
        .programs
        .get(&i)
        .is_some_and(|p| p.inbound.tiers.is_empty())
    {
        b.tier(IFACES[ifc], "tier1", &["pol"]);
    }
}

proptest! {
    #[test]
    fn incremental_lowering_matches_full_lowering(edits in proptest::collection::vec(edit(), 1..25)) {
        let settings = FirewallSettings {
            interface_prefixes: vec!["cali".into(), "tap".into(), "bad prefix!".into()],
            ..FirewallSettings::default()
        };
        let mut b = DesiredBuilder::new();
        let mut l = Lowerer::new();
        l.lower_all(&b.build(), &settings);
        let mut observed = observed_of(l.ruleset());
        for e in &edits {
            let before = b.build();
            apply_edit(&mut b, e);
            let after = b.build();
            let dirty = l.update(&after, &changes_between(&before, &after));
            let full = lower(&after, &settings);
            assert_same(l.ruleset(), &full);
            let ops = diff(l.ruleset(), &observed, Some(&dirty));
            apply_to(&mut observed, &ops);
            prop_assert_eq!(&observed, &observed_of(&full));
        }
    }
}
