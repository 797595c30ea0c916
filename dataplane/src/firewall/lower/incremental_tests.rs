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
const HOST_IFACES: [&str; 4] = ["eth0", "eth1", "lo", "cali0a"];
const HOST_ADDRS: [&str; 3] = ["192.0.2.1", "192.0.2.2", "fd00::9"];

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
    HostEndpoint {
        hep: usize,
        name: Option<usize>,
        addr: usize,
        profiles: Vec<usize>,
        remove: bool,
    },
    /// Where each of `HOST_ADDRS` is now (an index past `HOST_IFACES`: nowhere).
    Addrs {
        placement: Vec<usize>,
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
        (
            0usize..3,
            proptest::option::of(0usize..4),
            0usize..3,
            proptest::collection::vec(0usize..3, 0..3),
            any::<bool>()
        )
            .prop_map(|(hep, name, addr, profiles, remove)| Edit::HostEndpoint {
                hep,
                name,
                addr,
                profiles,
                remove
            }),
        proptest::collection::vec(0usize..5, 3).prop_map(|placement| Edit::Addrs { placement }),
    ]
}

fn edit_host_endpoint(
    b: &mut DesiredBuilder,
    hep: usize,
    name: Option<usize>,
    addr: usize,
    profiles: &[usize],
    remove: bool,
) {
    let id = format!("hep{hep}");
    if remove {
        b.state
            .host_endpoints
            .remove(&crate::firewall::scenario::id(&id));
        return;
    }
    let ps: Vec<&str> = profiles.iter().map(|p| PROFILES[*p]).collect();
    b.host_endpoint(&id, name.map(|n| HOST_IFACES[n]), &[HOST_ADDRS[addr]], &ps);
}

fn placed(placement: &[usize]) -> InterfaceAddresses {
    let mut out: InterfaceAddresses = HOST_IFACES
        .iter()
        .map(|i| ((*i).to_owned(), BTreeSet::new()))
        .collect();
    for (addr, at) in HOST_ADDRS.iter().zip(placement) {
        if let Some(iface) = HOST_IFACES.get(*at) {
            let a = addr.parse().expect("test address");
            out.entry((*iface).to_owned()).or_default().insert(a);
        }
    }
    out
}

/// `observed` without the hooks `desired` no longer uses, whose chains the
/// diff leaves attached but empty (no op detaches a hook).
fn without_unused_hooks(
    mut observed: crate::firewall::model::ObservedRuleset,
    desired: &Ruleset,
) -> crate::firewall::model::ObservedRuleset {
    let unused: Vec<_> = observed
        .hooks
        .iter()
        .filter(|(h, _)| !desired.hooks.contains_key(h))
        .map(|(h, c)| (*h, c.clone()))
        .collect();
    for (hook, chain) in unused {
        if !desired.chains.contains_key(&chain) {
            let rules = observed.chains.remove(&chain);
            assert_eq!(rules, Some(vec![]), "{chain} left with rules");
        }
        observed.hooks.remove(&hook);
    }
    observed
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
        Edit::HostEndpoint {
            hep,
            name,
            addr,
            profiles,
            remove,
        } => edit_host_endpoint(b, *hep, *name, *addr, profiles, *remove),
        // Not a desired-state edit: the loop hands it to the lowerer.
        Edit::Addrs { .. } => {}
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
        let mut addrs = placed(&[0, 1, 4]);
        l.set_interface_addresses(&addrs);
        l.lower_all(&b.build(), &settings);
        let mut observed = observed_of(l.ruleset());
        for e in &edits {
            let before = b.build();
            apply_edit(&mut b, e);
            let after = b.build();
            let dirty = match e {
                Edit::Addrs { placement } => {
                    addrs = placed(placement);
                    l.set_interface_addresses(&addrs)
                }
                _ => l.update(&after, &changes_between(&before, &after)),
            };
            let mut fresh = Lowerer::new();
            fresh.set_interface_addresses(&addrs);
            fresh.lower_all(&after, &settings);
            let full = fresh.ruleset();
            assert_same(l.ruleset(), full);
            prop_assert_eq!(l.host_bindings(), fresh.host_bindings());
            let ops = diff(l.ruleset(), &observed, Some(&dirty));
            apply_to(&mut observed, &ops);
            prop_assert_eq!(&without_unused_hooks(observed.clone(), full), &observed_of(full));
        }
    }
}
