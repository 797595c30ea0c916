//! A host endpoint bound by expected address only follows that address from
//! one interface to another, end to end: netlink address events, fed to a
//! [`Dataplane`] the way the agent does, move the binding and the kernel
//! chains (both backends), and real packets show which interface is
//! filtered. Nothing polls: the move is seen only through the events.
//!
//! Lab: a host namespace with two fabric interfaces, `fab1` (10.78.1.1/24,
//! peer namespace at .2) and `fab2` (10.78.2.1/24, peer at .2); the host
//! endpoint `svc` expects 10.78.9.9, which starts on `fab1`. Its profile
//! allows nothing, and ping is not a failsafe port, so a bound interface
//! answers no ping while an unbound one does.

mod routes_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use margay_dataplane::firewall::iptables::Variant;
use margay_dataplane::firewall::lower::FirewallSettings;
use margay_dataplane::firewall::scenario::{changes_between, DesiredBuilder};
use margay_dataplane::firewall::BackendKind;
use margay_dataplane::{Dataplane, DataplaneConfig, DataplaneEvent};
use margay_policy::desired::{
    DesiredState, Direction, DirectionProgram, EndpointProgram, IpVersion, LocalHostEndpoint,
};
use margay_policy::names::{Id, InterfaceName};
use margay_tests::netns::{require_root, veth_pair, TestNetns};
use routes_support::{iface, pump_reports_until, PROTO};
use tokio::sync::mpsc;

/// The address the host endpoint expects.
const SERVICE_IP: &str = "10.78.9.9";

/// The host and its two fabric peers.
struct Lab {
    host: TestNetns,
    peers: [TestNetns; 2],
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let host = TestNetns::new(&format!("{tag}-h"));
        let peers = [1, 2].map(|n| {
            let peer = TestNetns::new(&format!("{tag}-p{n}"));
            veth_pair(&host, &format!("fab{n}"), &peer, "eth0");
            host.exec_ok(&[
                "ip",
                "addr",
                "add",
                &format!("10.78.{n}.1/24"),
                "dev",
                &format!("fab{n}"),
            ]);
            peer.exec_ok(&[
                "ip",
                "addr",
                "add",
                &format!("10.78.{n}.2/24"),
                "dev",
                "eth0",
            ]);
            peer
        });
        host.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{SERVICE_IP}/32"),
            "dev",
            "fab1",
        ]);
        Lab { host, peers }
    }

    /// True when peer `n` (1 or 2) gets an answer to any of three pings of the host's
    /// address on the link between them.
    fn host_answers(&self, n: usize) -> bool {
        self.peers[n - 1]
            .exec(&[
                "ping",
                "-n",
                "-q",
                "-c3",
                "-i0.2",
                "-W1",
                &format!("10.78.{n}.1"),
            ])
            .status
            .success()
    }

    /// Moves the service address from `fab<from>` to `fab<to>`.
    fn move_service_address(&self, from: usize, to: usize) {
        let addr = format!("{SERVICE_IP}/32");
        self.host
            .exec_ok(&["ip", "addr", "del", &addr, "dev", &format!("fab{from}")]);
        self.host
            .exec_ok(&["ip", "addr", "add", &addr, "dev", &format!("fab{to}")]);
    }
}

/// The host endpoint `svc`, bound by [`SERVICE_IP`] alone, with a profile
/// that allows nothing either way.
fn desired() -> DesiredState {
    let mut d = DesiredBuilder::new()
        .profile("closed", vec![], vec![])
        .build();
    let program = |direction| DirectionProgram {
        tiers: vec![],
        profiles: vec![margay_dataplane::firewall::scenario::profile_rs(
            "closed", direction,
        )],
        fail_closed: false,
    };
    let id = Id::new("svc").expect("id");
    d.host_endpoints.insert(
        id.clone(),
        LocalHostEndpoint {
            id,
            name: None,
            expected_addrs: vec![SERVICE_IP.parse().expect("ip")],
            program: EndpointProgram {
                inbound: program(Direction::Inbound),
                outbound: program(Direction::Outbound),
            },
        },
    );
    d
}

fn bound_to(n: usize) -> BTreeMap<Id, BTreeSet<InterfaceName>> {
    BTreeMap::from([(
        Id::new("svc").expect("id"),
        BTreeSet::from([iface(&format!("fab{n}"))]),
    )])
}

/// Our firewall as text, whichever backend wrote it.
fn firewall_text(ns: &TestNetns, backend: BackendKind) -> String {
    match backend {
        BackendKind::Nftables => ns.exec_ok(&["nft", "list", "table", "inet", "margay"]),
        _ => [Variant::Nft, Variant::Legacy]
            .iter()
            .map(|v| ns.exec(&[v.save_bin(IpVersion::V4)]))
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .collect(),
    }
}

/// Feeds watcher events to `dp` until `done` holds (20 s liveness guard);
/// returns the firewall chains the events wrote.
async fn pump_until(
    dp: &mut Dataplane,
    events: &mut mpsc::Receiver<DataplaneEvent>,
    done: impl Fn(&Dataplane) -> bool,
) -> usize {
    let mut chains = 0;
    pump_reports_until(dp, events, done, |report, took| {
        if report.chains > 0 {
            eprintln!(
                "events handled in {took:?}, firewall write {} us, {} chains",
                report.firewall.micros, report.chains
            );
        }
        chains += report.chains;
    })
    .await;
    chains
}

/// A started dataplane in the lab's host namespace, and its events.
async fn started(lab: &Lab, backend: BackendKind) -> (Dataplane, mpsc::Receiver<DataplaneEvent>) {
    let mut dp = Dataplane::new(DataplaneConfig {
        backend,
        route_protocol: PROTO,
        netns: Some(lab.host.name().to_owned()),
    })
    .await
    .expect("dataplane opens");
    let events = dp.take_events().expect("events once");
    dp.start().await.expect("dataplane starts");
    (dp, events)
}

async fn first_apply(dp: &mut Dataplane, d: &DesiredState) {
    dp.apply(
        d,
        &changes_between(&DesiredState::default(), d),
        &FirewallSettings::default(),
    )
    .await
    .expect("apply");
}

async fn the_binding_follows_the_address(backend: BackendKind, tag: &str) {
    let lab = Lab::new(tag);
    let (mut dp, mut events) = started(&lab, backend).await;
    first_apply(&mut dp, &desired()).await;
    assert_eq!(dp.host_endpoint_bindings(), bound_to(1));
    let text = firewall_text(&lab.host, backend);
    assert!(
        text.contains("margay-hi-fab1") && !text.contains("margay-hi-fab2"),
        "{text}"
    );
    assert!(
        !lab.host_answers(1),
        "fab1 is bound: its policy drops the ping"
    );
    assert!(lab.host_answers(2), "fab2 is not filtered");

    lab.move_service_address(1, 2);
    let moved_at = Instant::now();
    let chains = pump_until(&mut dp, &mut events, |dp| {
        dp.host_endpoint_bindings() == bound_to(2)
    })
    .await;
    let took = moved_at.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "binding followed after {took:?}"
    );
    assert!(chains > 0, "the move rewrote chains from the event");
    let text = firewall_text(&lab.host, backend);
    assert!(
        text.contains("margay-hi-fab2") && !text.contains("margay-hi-fab1"),
        "{text}"
    );
    assert!(lab.host_answers(1), "fab1 is unfiltered again");
    assert!(!lab.host_answers(2), "fab2 is bound now");
}

#[tokio::test]
async fn nftables_host_endpoint_follows_its_address() {
    if !require_root("nftables_host_endpoint_follows_its_address") {
        return;
    }
    the_binding_follows_the_address(BackendKind::Nftables, "hf-nft").await;
}

#[tokio::test]
async fn iptables_host_endpoint_follows_its_address() {
    if !require_root("iptables_host_endpoint_follows_its_address") {
        return;
    }
    the_binding_follows_the_address(BackendKind::Iptables, "hf-ipt").await;
}

#[tokio::test]
async fn an_address_moved_before_the_first_apply_binds_where_it_is_then() {
    if !require_root("an_address_moved_before_the_first_apply_binds_where_it_is_then") {
        return;
    }
    let lab = Lab::new("hf-early");
    let (mut dp, _events) = started(&lab, BackendKind::Nftables).await;
    // The agent skips events until its first apply: none are handled here.
    lab.move_service_address(1, 2);
    first_apply(&mut dp, &desired()).await;
    assert_eq!(dp.host_endpoint_bindings(), bound_to(2));
    let text = firewall_text(&lab.host, BackendKind::Nftables);
    assert!(
        text.contains("margay-hi-fab2") && !text.contains("margay-hi-fab1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_route_repair_after_lost_events_moves_the_binding_too() {
    if !require_root("a_route_repair_after_lost_events_moves_the_binding_too") {
        return;
    }
    let lab = Lab::new("hf-lost");
    let (mut dp, _events) = started(&lab, BackendKind::Nftables).await;
    let d = desired();
    first_apply(&mut dp, &d).await;
    assert_eq!(dp.host_endpoint_bindings(), bound_to(1));
    // Events lost (an overrun): the agent answers with a route repair.
    lab.move_service_address(1, 2);
    dp.repair_routes(&d).await.expect("repair");
    assert_eq!(dp.host_endpoint_bindings(), bound_to(2));
    assert!(!lab.host_answers(2), "fab2 is filtered after the repair");
}

#[tokio::test]
async fn an_address_moved_while_no_host_endpoint_exists_counts_when_one_comes() {
    if !require_root("an_address_moved_while_no_host_endpoint_exists_counts_when_one_comes") {
        return;
    }
    let lab = Lab::new("hf-later");
    let (mut dp, mut events) = started(&lab, BackendKind::Nftables).await;
    let empty = DesiredBuilder::new().build();
    first_apply(&mut dp, &empty).await;
    lab.move_service_address(1, 2);
    pump_until(&mut dp, &mut events, |dp| {
        dp.host()
            .interface_addresses()
            .get("fab2")
            .is_some_and(|on| on.contains(&SERVICE_IP.parse().expect("ip")))
    })
    .await;
    let d = desired();
    dp.apply(
        &d,
        &changes_between(&empty, &d),
        &FirewallSettings::default(),
    )
    .await
    .expect("apply");
    assert_eq!(dp.host_endpoint_bindings(), bound_to(2));
    assert!(!lab.host_answers(2), "fab2 is filtered");
    assert!(lab.host_answers(1), "fab1 is not");
}
