use super::*;
use crate::hostnet::links::Link;
use crate::hostnet::report::ObjectKind;
use margay_policy::names::InterfaceName;

fn iface(s: &str) -> InterfaceName {
    InterfaceName::new(s).expect("valid")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

fn links() -> LinkCache {
    LinkCache::from_links([
        (
            2,
            Link {
                name: "cali1".into(),
                up: true,
            },
        ),
        (
            3,
            Link {
                name: "cali2".into(),
                up: false,
            },
        ),
    ])
}

fn desired() -> BTreeMap<IpNet, RouteTarget> {
    BTreeMap::from([
        (net("10.0.0.1/32"), RouteTarget::Interface(iface("cali1"))),
        (net("10.0.0.2/32"), RouteTarget::Interface(iface("cali2"))),
        (net("10.0.0.3/32"), RouteTarget::Interface(iface("cali3"))),
        (
            net("10.0.1.0/32"),
            RouteTarget::Gateway("192.168.0.2".parse().expect("ip")),
        ),
    ])
}

/// Plays the kernel: every planned write succeeds.
fn accept_all(m: &mut RouteManager, links: &LinkCache) -> FlushReport {
    let planned = m.plan_writes(links);
    let mut report = FlushReport::default();
    for w in planned.writes {
        m.record(w.dst, w.kind, WriteResult::Ok, &mut report);
    }
    report
}

#[test]
fn routes_wait_for_usable_interfaces() {
    let mut m = RouteManager::new(80);
    m.set_desired_all(&desired());
    let planned = m.plan_writes(&links());
    let dsts: Vec<_> = planned.writes.iter().map(|w| w.dst.to_string()).collect();
    assert_eq!(dsts, vec!["10.0.0.1/32", "10.0.1.0/32"]);
    assert_eq!(planned.waiting, 2);
    accept_all(&mut m, &links());
    assert_eq!(m.tracker().pending_len(), 2);
    let mut l = links();
    l.update(
        9,
        Link {
            name: "cali3".into(),
            up: true,
        },
    );
    let r = accept_all(&mut m, &l);
    assert_eq!(r.upserts, 1);
    assert_eq!(m.tracker().pending_len(), 1);
}

#[test]
fn new_routes_never_overwrite_and_known_ones_are_replaced() {
    let mut m = RouteManager::new(80);
    let one = BTreeMap::from([(net("10.0.0.1/32"), RouteTarget::Interface(iface("cali1")))]);
    m.set_desired_all(&one);
    let w = &m.plan_writes(&links()).writes[0];
    assert_eq!(
        w.msg.header.flags & netlink_packet_core::NLM_F_EXCL,
        netlink_packet_core::NLM_F_EXCL
    );
    m.objects
        .tracker_mut()
        .set_observed(net("10.0.0.1/32"), KernelRoute::Unrecognised);
    let w = &m.plan_writes(&links()).writes[0];
    assert_eq!(
        w.msg.header.flags & netlink_packet_core::NLM_F_REPLACE,
        netlink_packet_core::NLM_F_REPLACE
    );
}

#[test]
fn refusals_block_until_their_trigger() {
    let mut m = RouteManager::new(80);
    m.set_desired_all(&desired());
    let mut r = FlushReport::default();
    m.record(
        net("10.0.0.1/32"),
        WriteKind::Upsert,
        WriteResult::Errno(EEXIST),
        &mut r,
    );
    m.record(
        net("10.0.1.0/32"),
        WriteKind::Upsert,
        WriteResult::Errno(101),
        &mut r,
    );
    assert_eq!(r.failures.len(), 2);
    let first = &r.failures[0];
    assert_eq!(first.kind, ObjectKind::Route);
    assert_eq!(first.object, "10.0.0.1/32");
    assert_eq!(first.addr, Some("10.0.0.1".parse().expect("ip")));
    assert_eq!(first.iface, None);
    assert!(m.needs_resync());
    assert!(m.plan_writes(&links()).writes.is_empty());
    m.unblock_rejected();
    assert_eq!(m.plan_writes(&links()).writes.len(), 1);
    let foreign_gone = RawRoute {
        dst: net("10.0.0.1/32"),
        protocol: 4,
        table: model::MAIN_TABLE,
        oif: Some(2),
        gateway: None,
        scope_link: true,
        simple: true,
    };
    assert!(m.on_route_event(&foreign_gone, true, &links()));
    assert_eq!(m.plan_writes(&links()).writes.len(), 2);
}

#[test]
fn deletes_of_missing_routes_count_as_done_and_others_route_events_apply() {
    let mut m = RouteManager::new(80);
    m.objects
        .tracker_mut()
        .set_observed(net("10.9.9.9/32"), KernelRoute::Dev(iface("cali1")));
    let mut r = FlushReport::default();
    m.record(
        net("10.9.9.9/32"),
        WriteKind::Delete,
        WriteResult::Errno(ESRCH),
        &mut r,
    );
    assert!(m.tracker().in_sync());
    assert_eq!(r.writes(), 0);
    // Someone deletes one of our routes by hand: it becomes pending again.
    m.set_desired_all(&BTreeMap::from([(
        net("10.0.0.1/32"),
        RouteTarget::Interface(iface("cali1")),
    )]));
    accept_all(&mut m, &links());
    let ours = RawRoute {
        dst: net("10.0.0.1/32"),
        protocol: 80,
        table: model::MAIN_TABLE,
        oif: Some(2),
        gateway: None,
        scope_link: true,
        simple: true,
    };
    assert!(m.on_route_event(&ours, true, &links()));
    assert_eq!(m.tracker().pending_len(), 1);
    assert!(m.on_route_event(&ours, false, &links()));
    assert!(m.tracker().in_sync());
}

#[test]
fn vanished_links_forget_their_routes() {
    let mut m = RouteManager::new(80);
    m.set_desired_all(&desired());
    accept_all(&mut m, &links());
    assert!(m.on_link_vanished("cali1"));
    assert_eq!(m.tracker().observed().len(), 1);
    assert!(m.needs_resync());
    let mut l = links();
    l.remove(2);
    let planned = m.plan_writes(&l);
    assert!(planned.writes.is_empty());
    assert_eq!(planned.waiting, 3);
}

fn protecting(addrs: &[&str], etcd: &[&str]) -> Protected {
    let facts = crate::hostnet::routes::protect::HostFacts {
        addresses: addrs.iter().map(|a| a.parse().expect("ip")).collect(),
        ..Default::default()
    };
    let etcd: Vec<std::net::IpAddr> = etcd.iter().map(|a| a.parse().expect("ip")).collect();
    Protected::new(&facts, &etcd)
}

#[test]
fn routes_covering_protected_addresses_are_never_written_and_ours_are_deleted() {
    use crate::hostnet::routes::protect::ProtectReason;
    let mut m = RouteManager::new(80);
    m.set_protected(protecting(&["10.0.0.3"], &["10.0.1.0"]));
    // One of ours already covers the etcd address (a previous run wrote it).
    m.objects.tracker_mut().set_observed(
        net("10.0.1.0/32"),
        KernelRoute::Via("192.168.0.2".parse().expect("ip")),
    );
    m.set_desired_all(&desired());
    let mut l = links();
    l.update(
        9,
        Link {
            name: "cali3".into(),
            up: true,
        },
    );
    let planned = m.plan_writes(&l);
    let writes: Vec<_> = planned
        .writes
        .iter()
        .map(|w| (w.dst.to_string(), w.kind))
        .collect();
    assert_eq!(
        writes,
        vec![
            ("10.0.0.1/32".to_owned(), WriteKind::Upsert),
            ("10.0.1.0/32".to_owned(), WriteKind::Delete),
        ]
    );
    let refused = m.take_newly_refused();
    let why: Vec<_> = refused
        .iter()
        .map(|r| (r.dst.to_string(), r.reason))
        .collect();
    assert_eq!(
        why,
        vec![
            ("10.0.0.3/32".to_owned(), ProtectReason::HostAddress),
            ("10.0.1.0/32".to_owned(), ProtectReason::EtcdEndpoint),
        ]
    );
    // Reported once: the same desired state again reports nothing.
    m.set_desired_all(&desired());
    assert!(m.take_newly_refused().is_empty());
    // An incremental update refuses too.
    let more = BTreeMap::from([(net("10.0.0.0/24"), RouteTarget::Interface(iface("cali1")))]);
    m.update_desired(&more, &BTreeSet::from([net("10.0.0.0/24")]));
    assert_eq!(m.take_newly_refused().len(), 1);
    assert!(!m.tracker().desired().contains_key(&net("10.0.0.0/24")));
    // The host gives the address up: the route comes back.
    m.set_protected(protecting(&[], &["10.0.1.0"]));
    assert!(m.tracker().desired().contains_key(&net("10.0.0.3/32")));
    assert!(m.tracker().desired().contains_key(&net("10.0.0.0/24")));
    assert_eq!(m.refused().len(), 1);
    // And it is refused again when the address returns.
    m.set_protected(protecting(&["10.0.0.3"], &["10.0.1.0"]));
    assert_eq!(m.take_newly_refused().len(), 2);
    assert_eq!(m.refused().len(), 3);
}

#[test]
fn start_up_finds_our_routes_covering_protected_addresses() {
    let mut m = RouteManager::new(80);
    m.objects
        .tracker_mut()
        .set_observed(net("198.19.0.2/32"), KernelRoute::Dev(iface("caliw3")));
    m.objects
        .tracker_mut()
        .set_observed(net("10.0.0.1/32"), KernelRoute::Dev(iface("cali1")));
    assert!(m.observed_covering_protected().is_empty());
    m.set_protected(protecting(&[], &["198.19.0.2"]));
    let found = m.observed_covering_protected();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].dst, net("198.19.0.2/32"));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn all_up() -> LinkCache {
        LinkCache::from_links((0..4).map(|i| {
            (
                i + 10,
                Link {
                    name: format!("cali{i}"),
                    up: true,
                },
            )
        }))
    }

    fn target() -> impl Strategy<Value = RouteTarget> {
        prop_oneof![
            (0u8..4).prop_map(|i| RouteTarget::Interface(iface(&format!("cali{i}")))),
            (1u8..4)
                .prop_map(|g| RouteTarget::Gateway(format!("192.168.0.{g}").parse().expect("ip"))),
        ]
    }

    fn routes() -> impl Strategy<Value = BTreeMap<IpNet, RouteTarget>> {
        prop::collection::btree_map(
            (0u8..24).prop_map(|i| net(&format!("10.0.0.{i}/32"))),
            target(),
            0..16,
        )
    }

    fn observed() -> impl Strategy<Value = BTreeMap<IpNet, KernelRoute>> {
        routes().prop_map(|m| m.iter().map(|(d, t)| (*d, KernelRoute::from(t))).collect())
    }

    proptest! {
        #[test]
        fn a_flush_writes_exactly_the_diff_and_converges(
            desired in routes(),
            seen in observed(),
        ) {
            let links = all_up();
            let mut m = RouteManager::new(80);
            m.objects.tracker_mut().replace_observed(seen.clone());
            m.set_desired_all(&desired);
            let want = RouteManager::diff(&desired, &seen);
            let planned = m.plan_writes(&links);
            prop_assert_eq!(planned.writes.len(), want.len());
            let r = accept_all(&mut m, &links);
            prop_assert_eq!(r.writes(), want.len());
            prop_assert!(m.tracker().in_sync());
            prop_assert!(m.plan_writes(&links).writes.is_empty());
        }

        #[test]
        fn removing_and_readding_a_route_converges(desired in routes(), pick in 0usize..16) {
            let links = all_up();
            let mut m = RouteManager::new(80);
            m.set_desired_all(&desired);
            accept_all(&mut m, &links);
            let Some((dst, t)) = desired.iter().nth(pick % desired.len().max(1)) else {
                return Ok(());
            };
            let (dst, t) = (*dst, t.clone());
            let dirty = BTreeSet::from([dst]);
            let mut less = desired.clone();
            less.remove(&dst);
            m.update_desired(&less, &dirty);
            prop_assert_eq!(accept_all(&mut m, &links).deletes, 1);
            m.update_desired(&desired, &dirty);
            prop_assert_eq!(accept_all(&mut m, &links).upserts, 1);
            prop_assert_eq!(m.tracker().observed().get(&dst), Some(&KernelRoute::from(&t)));
            prop_assert!(m.tracker().in_sync());
        }
    }
}

#[test]
fn the_pure_diff_matches_what_a_flush_would_write() {
    let observed = BTreeMap::from([
        (net("10.0.0.1/32"), KernelRoute::Dev(iface("cali1"))),
        (net("10.5.5.5/32"), KernelRoute::Dev(iface("cali1"))),
    ]);
    let ops = RouteManager::diff(&desired(), &observed);
    assert_eq!(ops.len(), 4);
    assert!(matches!(&ops[3], Op::Delete { key, .. } if *key == net("10.5.5.5/32")));
}
