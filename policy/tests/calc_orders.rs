//! Property tests in the style of Felix's calculation tests: the same final
//! datastore reached through different histories (shuffled orders, a prior
//! datastore overwritten key by key, deletes and re-adds, values that turn
//! invalid and are fixed later, interface prefixes flipped and restored)
//! gives the same desired state and the same endpoint conflicts; both equal a
//! naive reference calculation; and replaying only the reported `Changes`
//! onto a copy of the previous state reproduces the new state. The small
//! universe (three local endpoint slots on five interfaces, a dozen
//! addresses, pools that come and go) makes interface and address conflicts
//! and remote addresses outside every pool frequent. Host endpoints of this
//! host and another one (by name, by expected addresses sharing the
//! workloads' addresses, or both) are part of it too. BGP keys are part of
//! the universe: every history reaches the same `bgp_config()`, and
//! whenever it differs from the one at the previous take, `Changes.bgp`
//! said so. Remote routes are switched off and on in the middle of every
//! history.

mod calc_support;

use calc_support::*;
use std::net::IpAddr;

use margay_policy::bgp::{AsNumber, BgpConfig, BgpUnavailable};
use margay_policy::calc::CalcEngine;
use margay_policy::desired::{Changes, DesiredState, IpVersion, RuleAction, WorkloadEndpointKey};
use margay_policy::model::{
    self, BgpKey, BgpValue, EndpointState, HostEndpoint, HostEndpointKey, IpPool, Labels, Order,
    Policy, ProfileRules, ResourceKey, TierMetadata, Update, Value, WorkloadEndpoint,
};
use margay_policy::names::{Id, InterfaceName, MacAddr};
use proptest::prelude::*;

const HOSTS: [&str; 3] = [ME, "h2", "h3"];
const IFACES: [&str; 5] = ["cali0", "cali1", "cali2", "cali3", "tap0"];
const PROFILES: [&str; 4] = ["p0", "p1", "p2", "p3"];
const TAGS: [&str; 3] = ["t0", "t1", "t2"];
const TIERS: [&str; 3] = ["tier0", "tier1", "tier2"];
const SELECTORS: [&str; 8] = [
    "app == 'a'",
    "app=='a'",
    "app == 'b'",
    "has(role)",
    "role != 'a'",
    "all()",
    "app == 'a' && role == 'b'",
    "app in {'a', 'b'}",
];
const LABEL_KEYS: [&str; 2] = ["app", "role"];
const LABEL_VALUES: [&str; 2] = ["a", "b"];
const EP_SLOTS: usize = 9;
const HOST_EP_SLOTS: usize = 4;
/// Host endpoint names; `cali0` is a workload interface too (never a conflict).
const HOST_IFACES: [&str; 3] = ["eth0", "eth1", "cali0"];

// ------------------------------------------------------------- generation

fn arb_labels() -> impl Strategy<Value = Labels> {
    prop::collection::btree_map(
        prop::sample::select(&LABEL_KEYS[..]).prop_map(String::from),
        prop::sample::select(&LABEL_VALUES[..]).prop_map(String::from),
        0..3,
    )
}

fn arb_order() -> impl Strategy<Value = Order> {
    prop_oneof![
        (0u8..3).prop_map(|n| Order::Number(f64::from(n))),
        Just(Order::Default)
    ]
}

fn arb_id(names: &'static [&'static str]) -> impl Strategy<Value = Id> {
    prop::sample::select(names).prop_map(id)
}

fn arb_rule() -> impl Strategy<Value = model::Rule> {
    (
        prop::sample::select(vec![
            RuleAction::Allow,
            RuleAction::Deny,
            RuleAction::NextTier,
            RuleAction::Log,
        ]),
        prop::option::of(prop_oneof![Just(IpVersion::V4), Just(IpVersion::V6)]),
        prop::option::weighted(0.4, arb_id(&TAGS)),
        prop::option::weighted(0.2, arb_id(&TAGS)),
        prop::option::weighted(0.4, prop::sample::select(&SELECTORS[..]).prop_map(sel)),
        prop::option::weighted(0.2, prop::sample::select(&SELECTORS[..]).prop_map(sel)),
    )
        .prop_map(
            |(action, ipv, src_tag, not_dst_tag, dst_sel, not_src_sel)| {
                let mut r = rule(action);
                r.ip_version = ipv;
                r.src.tag = src_tag;
                r.dst.not_tag = not_dst_tag;
                r.dst.selector = dst_sel;
                r.src.not_selector = not_src_sel;
                r
            },
        )
}

fn arb_rules() -> impl Strategy<Value = Vec<model::Rule>> {
    prop::collection::vec(arb_rule(), 0..3)
}

/// Mostly inside pool 10.0.0.0/24, some in 10.9.0.0/16, some outside every pool.
fn v4(i: u8) -> ipnet::Ipv4Net {
    match i {
        0..=7 => format!("10.0.0.{i}/32"),
        8..=9 => format!("10.9.0.{i}/32"),
        _ => format!("10.1.0.{i}/32"),
    }
    .parse()
    .expect("v4")
}

fn v6(i: u8) -> ipnet::Ipv6Net {
    format!("fd00::{i}/128").parse().expect("v6")
}

fn arb_endpoint() -> impl Strategy<Value = WorkloadEndpoint> {
    (
        prop::bool::weighted(0.8),
        prop::sample::select(&IFACES[..]),
        prop::option::of(any::<u8>()),
        prop::collection::vec(arb_id(&PROFILES), 0..3),
        prop::collection::vec(0u8..12, 0..3),
        prop::collection::vec(0u8..3, 0..2),
        arb_labels(),
    )
        .prop_map(
            |(active, name, mac, profile_ids, a4, a6, labels)| WorkloadEndpoint {
                state: if active {
                    EndpointState::Active
                } else {
                    EndpointState::Inactive
                },
                name: InterfaceName::new(name).expect("iface"),
                mac: mac.map(|m| MacAddr([0xee, 0, 0, 0, 0, m])),
                profile_ids,
                ipv4_nets: a4.into_iter().map(v4).collect(),
                ipv6_nets: a6.into_iter().map(v6).collect(),
                ipv4_gateway: None,
                ipv6_gateway: None,
                labels,
            },
        )
}

fn arb_host_endpoint() -> impl Strategy<Value = HostEndpoint> {
    (
        prop::option::of(prop::sample::select(&HOST_IFACES[..])),
        prop::collection::vec(0u8..12, 0..3),
        prop::collection::vec(0u8..3, 0..2),
        prop::collection::vec(arb_id(&PROFILES), 0..3),
        arb_labels(),
    )
        .prop_map(|(name, a4, a6, profile_ids, labels)| {
            let mut a4: Vec<IpAddr> = a4.into_iter().map(|i| IpAddr::V4(v4(i).addr())).collect();
            // The data model requires a name or an expected address.
            if name.is_none() && a4.is_empty() {
                a4.push(IpAddr::V4(v4(0).addr()));
            }
            HostEndpoint {
                name: name.map(|n| InterfaceName::new(n).expect("iface")),
                expected_ipv4_addrs: a4,
                expected_ipv6_addrs: a6.into_iter().map(|i| IpAddr::V6(v6(i).addr())).collect(),
                profile_ids,
                labels,
            }
        })
}

/// Host endpoint slot `i`: even slots on this host, odd ones on h2.
fn host_slot_key(i: usize) -> HostEndpointKey {
    HostEndpointKey {
        host: HOSTS[i % 2].to_owned(),
        endpoint: id(&format!("hep{i}")),
    }
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        prop::sample::select(&SELECTORS[..]),
        arb_order(),
        arb_rules(),
        arb_rules(),
    )
        .prop_map(|(s, order, inbound, outbound)| Policy {
            selector: sel(s),
            order,
            inbound,
            outbound,
        })
}

fn slot_key(i: usize) -> WorkloadEndpointKey {
    ep_key(HOSTS[i % HOSTS.len()], &format!("w{i}"))
}

/// One complete datastore: a value (or absence) for every key of a small universe.
fn arb_world() -> impl Strategy<Value = World> {
    let endpoints = prop::collection::vec(prop::option::weighted(0.8, arb_endpoint()), EP_SLOTS);
    let host_endpoints = prop::collection::vec(
        prop::option::weighted(0.7, arb_host_endpoint()),
        HOST_EP_SLOTS,
    );
    let profiles = prop::collection::vec(
        (
            prop::option::weighted(0.8, (arb_rules(), arb_rules())),
            prop::option::of(prop::collection::vec(arb_id(&TAGS), 0..3)),
            prop::option::of(arb_labels()),
        ),
        PROFILES.len(),
    );
    let tiers = prop::collection::vec(
        (
            prop::option::weighted(0.8, arb_order()),
            prop::collection::vec(prop::option::weighted(0.7, arb_policy()), 2),
        ),
        TIERS.len(),
    );
    let pools = prop::collection::vec(prop::option::of(any::<bool>()), 3);
    let misc = (
        prop::collection::vec(prop::option::of(0u8..3), HOSTS.len()),
        prop::collection::vec(prop::option::of(prop::sample::select(vec!["x", "y"])), 4),
        prop::option::of(any::<bool>()),
    );
    (
        (endpoints, host_endpoints),
        profiles,
        tiers,
        pools,
        misc,
        arb_bgp(),
    )
        .prop_map(
            |(
                (endpoints, host_endpoints),
                profiles,
                tiers,
                pools,
                (birds, configs, ready),
                bgp,
            )| {
                let mut w = bgp;
                for (i, hep) in host_endpoints.into_iter().enumerate() {
                    if let Some(hep) = hep {
                        w.insert(
                            ResourceKey::HostEndpoint(host_slot_key(i)),
                            Value::HostEndpoint(hep),
                        );
                    }
                }
                for (i, ep) in endpoints.into_iter().enumerate() {
                    if let Some(ep) = ep {
                        w.insert(
                            ResourceKey::WorkloadEndpoint(slot_key(i)),
                            Value::WorkloadEndpoint(ep),
                        );
                    }
                }
                for (i, (rules, tags, labels)) in profiles.into_iter().enumerate() {
                    let p = id(PROFILES[i]);
                    if let Some((inbound, outbound)) = rules {
                        w.insert(
                            ResourceKey::ProfileRules(p.clone()),
                            Value::ProfileRules(ProfileRules { inbound, outbound }),
                        );
                    }
                    if let Some(t) = tags {
                        w.insert(ResourceKey::ProfileTags(p.clone()), Value::ProfileTags(t));
                    }
                    if let Some(l) = labels {
                        w.insert(ResourceKey::ProfileLabels(p), Value::ProfileLabels(l));
                    }
                }
                for (i, (meta, policies)) in tiers.into_iter().enumerate() {
                    let t = id(TIERS[i]);
                    if let Some(order) = meta {
                        w.insert(
                            ResourceKey::TierMetadata(t.clone()),
                            Value::TierMetadata(TierMetadata { order }),
                        );
                    }
                    for (j, pol) in policies.into_iter().enumerate() {
                        if let Some(pol) = pol {
                            w.insert(
                                ResourceKey::Policy {
                                    tier: t.clone(),
                                    policy: id(&format!("pol{j}")),
                                },
                                Value::Policy(pol),
                            );
                        }
                    }
                }
                for (cidr, masq) in ["10.0.0.0/24", "10.9.0.0/16", "fd00::/64"]
                    .into_iter()
                    .zip(pools)
                {
                    if let Some(masquerade) = masq {
                        w.insert(
                            ResourceKey::IpPool(net(cidr)),
                            Value::IpPool(IpPool {
                                cidr: net(cidr),
                                masquerade,
                            }),
                        );
                    }
                }
                for (h, b) in HOSTS.iter().zip(birds) {
                    if let Some(b) = b {
                        let ip = format!("192.168.0.{b}").parse().expect("ip");
                        w.insert(ResourceKey::HostIp(h.to_string()), Value::HostIp(ip));
                    }
                }
                let config_keys = [
                    ResourceKey::GlobalConfig("A".into()),
                    ResourceKey::GlobalConfig("B".into()),
                    ResourceKey::HostConfig {
                        host: ME.into(),
                        name: "A".into(),
                    },
                    ResourceKey::HostConfig {
                        host: "h2".into(),
                        name: "B".into(),
                    },
                ];
                for (k, v) in config_keys.into_iter().zip(configs) {
                    if let Some(v) = v {
                        w.insert(k, Value::Config(v.into()));
                    }
                }
                if let Some(r) = ready {
                    w.insert(ResourceKey::Ready, Value::Ready(r));
                }
                w
            },
        )
}

/// BGP keys over a small universe: addresses that collide with each other
/// and with the `bird_ip`s (192.168.0.0-2), so precedence and "never to
/// itself" are exercised.
fn arb_bgp() -> impl Strategy<Value = World> {
    let addr = || prop::sample::select(vec!["192.168.0.1", "192.168.0.2", "10.5.0.1", "fd00::7"]);
    let as_num = || prop::option::weighted(0.4, prop::sample::select(vec![64512u32, 65000]));
    (
        as_num(),
        prop::option::of(any::<bool>()),
        prop::collection::vec((addr(), prop::option::weighted(0.4, 1u32..3)), 0..3),
        prop::collection::vec(
            (
                prop::option::weighted(0.3, prop::sample::select(vec!["10.5.0.1", "192.168.0.2"])),
                prop::option::weighted(0.3, prop::sample::select(vec!["fd00::7", "fd00::8"])),
                as_num(),
                prop::collection::vec((addr(), 1u32..3), 0..2),
            ),
            HOSTS.len(),
        ),
    )
        .prop_map(|(global_as, mesh, global_peers, hosts)| {
            let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
            let as_value = |n: u32| BgpValue::AsNumber(AsNumber::new(n).expect("as"));
            let peer = |n: u32| BgpValue::Peer {
                as_num: AsNumber::new(n).expect("as"),
            };
            let mut w = World::new();
            let mut put = |k: BgpKey, v: BgpValue| w.insert(ResourceKey::Bgp(k), Value::Bgp(v));
            if let Some(n) = global_as {
                put(BgpKey::GlobalAsNumber, as_value(n));
            }
            if let Some(enabled) = mesh {
                put(BgpKey::NodeMesh, BgpValue::NodeMesh { enabled });
            }
            for (a, n) in global_peers {
                if let Some(n) = n {
                    put(BgpKey::GlobalPeer(ip(a)), peer(n));
                }
            }
            for (h, (v4, v6, n, peers)) in HOSTS.iter().zip(hosts) {
                let host = h.to_string();
                if let Some(a) = v4 {
                    put(
                        BgpKey::HostAddressV4(host.clone()),
                        BgpValue::Address(ip(a)),
                    );
                }
                if let Some(a) = v6 {
                    put(
                        BgpKey::HostAddressV6(host.clone()),
                        BgpValue::Address(ip(a)),
                    );
                }
                if let Some(n) = n {
                    put(BgpKey::HostAsNumber(host.clone()), as_value(n));
                }
                for (a, n) in peers {
                    put(
                        BgpKey::HostPeer {
                            host: host.clone(),
                            peer: ip(a),
                        },
                        peer(n),
                    );
                }
            }
            w
        })
}

// ------------------------------------------------------------- histories

/// One step of a history.
#[derive(Debug, Clone)]
enum Step {
    Apply(Update),
    /// The value became invalid: `CalcEngine::remove`.
    Invalid(ResourceKey),
    /// Flip the interface prefixes to something else for a while.
    Prefixes(Vec<String>),
    /// Switch remote routes off for a while (`set_remote_routes`).
    RemoteRoutes(bool),
    /// The dataplane takes the changes.
    Take,
}

/// Every key either world mentions.
fn keys_of(a: &World, b: &World) -> Vec<ResourceKey> {
    let mut keys: Vec<ResourceKey> = a.keys().chain(b.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Builds a history that ends in `last`: per key, optionally the value of
/// `first`, optionally an invalid value, then the final value (or a delete);
/// the per-key sequences are interleaved by `times`.
fn history(first: &World, last: &World, noise: &[u8], times: &[u32]) -> Vec<Step> {
    let mut per_key: Vec<Vec<Step>> = Vec::new();
    for (n, key) in keys_of(first, last).into_iter().enumerate() {
        let bits = noise.get(n % noise.len().max(1)).copied().unwrap_or(0);
        let mut steps = Vec::new();
        if bits & 1 != 0 {
            if let Some(v) = first.get(&key) {
                steps.push(Step::Apply(Update {
                    key: key.clone(),
                    value: Some(v.clone()),
                }));
            }
        }
        if bits & 2 != 0 {
            steps.push(Step::Invalid(key.clone()));
        }
        if bits & 4 != 0 {
            steps.push(Step::Take);
        }
        steps.push(Step::Apply(Update {
            key: key.clone(),
            value: last.get(&key).cloned(),
        }));
        per_key.push(steps);
    }
    // Interleave, keeping each key's own order.
    let mut timed: Vec<(u32, usize, usize, Step)> = Vec::new();
    let mut t = 0;
    for (k, steps) in per_key.into_iter().enumerate() {
        let mut ts: Vec<u32> = (0..steps.len())
            .map(|_| {
                t += 1;
                times.get(t % times.len().max(1)).copied().unwrap_or(0)
            })
            .collect();
        ts.sort_unstable();
        for (i, (step, time)) in steps.into_iter().zip(ts).enumerate() {
            timed.push((time, k, i, step));
        }
    }
    timed.sort_by_key(|(time, k, i, _)| (*time, *k, *i));
    let mut out: Vec<Step> = timed.into_iter().map(|(_, _, _, s)| s).collect();
    // Flip the prefixes somewhere in the middle and restore them later.
    let mid = out.len() / 3;
    out.insert(mid, Step::Prefixes(vec!["tap".into()]));
    let late = (out.len() * 2) / 3;
    out.insert(late, Step::Prefixes(vec!["cali".into()]));
    out.insert(out.len() / 4, Step::RemoteRoutes(false));
    out.insert((out.len() * 3) / 4, Step::RemoteRoutes(true));
    out
}

/// Runs a history, checking after every `Take` that the mirror built from
/// the changes equals the state. Returns the engine and the final mirror.
fn run(steps: &[Step]) -> Result<(CalcEngine, DesiredState), TestCaseError> {
    let mut e = CalcEngine::new(ME);
    let mut mirror = DesiredState::default();
    let mut bgp_seen = e.bgp_config();
    for step in steps {
        match step {
            Step::Apply(u) => e.apply(u.clone()),
            Step::Invalid(k) => e.remove(k),
            Step::Prefixes(p) => e.set_interface_prefixes(p.clone()),
            Step::RemoteRoutes(on) => e.set_remote_routes(*on),
            Step::Take => {
                let c = e.take_changes();
                apply_changes(&mut mirror, e.state(), &c);
                prop_assert_eq!(&mirror, e.state(), "mirror diverged after {:?}", step);
                bgp_taken(&e, &c, &mut bgp_seen)?;
            }
        }
    }
    let c = e.take_changes();
    apply_changes(&mut mirror, e.state(), &c);
    bgp_taken(&e, &c, &mut bgp_seen)?;
    Ok((e, mirror))
}

/// `Changes.bgp` is complete: a BGP configuration that differs from the one
/// seen at the previous take was announced.
fn bgp_taken(
    e: &CalcEngine,
    c: &Changes,
    seen: &mut Result<BgpConfig, BgpUnavailable>,
) -> Result<(), TestCaseError> {
    let now = e.bgp_config();
    if now != *seen {
        prop_assert!(
            c.bgp,
            "bgp config changed unannounced: {:?} -> {:?}",
            seen,
            now
        );
    }
    *seen = now;
    Ok(())
}

fn canonical(world: &World) -> CalcEngine {
    let mut e = CalcEngine::new(ME);
    for (k, v) in world {
        e.apply(Update {
            key: k.clone(),
            value: Some(v.clone()),
        });
    }
    e
}

proptest! {
    // 256 cases unless PROPTEST_CASES says otherwise.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    /// Feeding the final documents in key order matches the reference calculation.
    #[test]
    fn canonical_load_matches_the_reference(world in arb_world()) {
        let e = canonical(&world);
        let prefixes = ["cali".to_string()];
        let reference = reference_state(&world, ME, &prefixes);
        prop_assert_eq!(e.state(), &reference);
        prop_assert_eq!(e.conflicts(), reference_conflicts(&world, ME, &prefixes));
        prop_assert_eq!(e.ready(), world.get(&ResourceKey::Ready) == Some(&Value::Ready(true)));
    }

    /// Any history that ends in the same datastore yields the same state,
    /// and the changes reported along the way are complete.
    #[test]
    fn every_history_reaches_the_same_state(
        first in arb_world(),
        last in arb_world(),
        noise in prop::collection::vec(any::<u8>(), 1..64),
        times in prop::collection::vec(any::<u32>(), 1..128),
    ) {
        let expected = canonical(&last);
        let steps = history(&first, &last, &noise, &times);
        let (e, mirror) = run(&steps)?;
        prop_assert_eq!(e.state(), expected.state());
        prop_assert_eq!(&mirror, expected.state());
        prop_assert_eq!(e.conflicts(), expected.conflicts());
        prop_assert_eq!(e.ready(), expected.ready());
        prop_assert_eq!(e.stats(), expected.stats());
        prop_assert_eq!(e.bgp_config(), expected.bgp_config());
    }

    /// Shuffling the final documents alone (no prior world) gives the same state.
    #[test]
    fn shuffled_final_documents_give_the_same_state(
        last in arb_world(),
        times in prop::collection::vec(any::<u32>(), 1..128),
    ) {
        let expected = canonical(&last);
        let steps = history(&World::new(), &last, &[0], &times);
        let (e, mirror) = run(&steps)?;
        prop_assert_eq!(e.state(), expected.state());
        prop_assert_eq!(&mirror, expected.state());
        prop_assert_eq!(e.conflicts(), expected.conflicts());
        prop_assert_eq!(e.bgp_config(), expected.bgp_config());
    }

    /// Re-applying the current documents reports nothing; deleting them all
    /// empties the state back to the two pool sets.
    #[test]
    fn reapplying_is_silent_and_deleting_everything_empties(world in arb_world()) {
        let mut e = canonical(&world);
        let mut mirror = DesiredState::default();
        let c = e.take_changes();
        apply_changes(&mut mirror, e.state(), &c);
        for (k, v) in &world {
            e.apply(Update { key: k.clone(), value: Some(v.clone()) });
        }
        let c = e.take_changes();
        prop_assert!(c.is_empty(), "spurious changes: {:?}", c);
        for k in world.keys().rev() {
            e.remove(k);
        }
        let c = e.take_changes();
        apply_changes(&mut mirror, e.state(), &c);
        prop_assert_eq!(&mirror, e.state());
        let empty = CalcEngine::new(ME);
        prop_assert_eq!(e.state(), empty.state());
        prop_assert!(e.conflicts().is_empty());
        prop_assert_eq!(e.stats(), empty.stats());
    }
}
