//! Shared helpers for the routes integration tests: desired states built
//! from short descriptions, a dataplane in a throw-away namespace, and an
//! event pump that feeds watcher events to the dataplane until a condition
//! holds.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use margay_dataplane::firewall::lower::FirewallSettings;
use margay_dataplane::firewall::BackendKind;
use margay_dataplane::{ApplyReport, Dataplane, DataplaneConfig, DataplaneEvent};
use margay_policy::desired::{
    Changes, DesiredState, LocalEndpoint, RouteTarget, WorkloadEndpointKey,
};
use margay_policy::names::{Id, InterfaceName, MacAddr};
use margay_tests::netns::TestNetns;
use tokio::sync::mpsc;

/// Our route protocol number in these tests.
pub const PROTO: u8 = 80;

pub fn iface(s: &str) -> InterfaceName {
    InterfaceName::new(s).expect("valid interface name")
}

pub fn net(s: &str) -> IpNet {
    s.parse().expect("valid net")
}

/// A local endpoint on `name` with the given addresses.
pub fn endpoint(name: &str, mac: Option<&str>, nets: &[&str]) -> LocalEndpoint {
    let (v6, v4): (Vec<&str>, Vec<&str>) = nets.iter().partition(|n| n.contains(':'));
    LocalEndpoint {
        key: WorkloadEndpointKey {
            host: "h1".into(),
            orchestrator: "k8s".into(),
            workload: format!("wl-{name}"),
            endpoint: Id::new(name).expect("id"),
        },
        iface: iface(name),
        mac: mac.map(|m| MacAddr::parse(m).expect("mac")),
        ipv4: v4.iter().map(|s| s.parse().expect("v4")).collect(),
        ipv6: v6.iter().map(|s| s.parse().expect("v6")).collect(),
    }
}

/// Adds an endpoint and its routes to `d`.
pub fn add_endpoint(d: &mut DesiredState, ep: LocalEndpoint) {
    for n in &ep.ipv4 {
        d.routes
            .insert(IpNet::V4(*n), RouteTarget::Interface(ep.iface.clone()));
    }
    for n in &ep.ipv6 {
        d.routes
            .insert(IpNet::V6(*n), RouteTarget::Interface(ep.iface.clone()));
    }
    d.endpoints.insert(ep.iface.clone(), ep);
}

/// Changes naming every key of `d` (and of `old`, for removals).
pub fn all_changes(d: &DesiredState, old: Option<&DesiredState>) -> Changes {
    let mut c = Changes::default();
    let olds = old.into_iter();
    let mut eps: BTreeSet<InterfaceName> = d.endpoints.keys().cloned().collect();
    let mut routes: BTreeSet<IpNet> = d.routes.keys().copied().collect();
    for o in olds {
        eps.extend(o.endpoints.keys().cloned());
        routes.extend(o.routes.keys().copied());
    }
    c.endpoints = eps;
    c.routes = routes;
    c
}

/// Makes a veth pair `name` <-> `name`p inside `ns`, both up.
pub fn veth(ns: &TestNetns, name: &str) {
    let peer = format!("{name}p");
    ns.exec_ok(&[
        "ip", "link", "add", name, "type", "veth", "peer", "name", &peer,
    ]);
    ns.exec_ok(&["ip", "link", "set", name, "up"]);
    ns.exec_ok(&["ip", "link", "set", &peer, "up"]);
}

/// A started dataplane (no firewall) acting in `ns`, and its event channel.
pub async fn dataplane(ns: &TestNetns) -> (Dataplane, mpsc::Receiver<DataplaneEvent>) {
    dataplane_guarding(ns, Vec::new()).await
}

/// Like [`dataplane`], with `etcd` as the etcd endpoints' addresses (no
/// endpoint route may cover them).
pub async fn dataplane_guarding(
    ns: &TestNetns,
    etcd: Vec<std::net::IpAddr>,
) -> (Dataplane, mpsc::Receiver<DataplaneEvent>) {
    let mut dp = Dataplane::new(DataplaneConfig {
        backend: BackendKind::None,
        route_protocol: PROTO,
        netns: Some(ns.name().to_owned()),
    })
    .await
    .expect("dataplane opens");
    dp.set_etcd_addresses(etcd);
    let events = dp.take_events().expect("events once");
    dp.start().await.expect("dataplane starts");
    (dp, events)
}

/// Writes to routes, neighbours and sysctls (the no-op firewall re-counts
/// its objects after a restart, since it keeps nothing in the kernel).
pub fn host_writes(r: &ApplyReport) -> usize {
    r.routes + r.neighbours + r.sysctls
}

pub async fn apply(dp: &mut Dataplane, d: &DesiredState, c: &Changes) -> ApplyReport {
    dp.apply(d, c, &FirewallSettings::default())
        .await
        .expect("apply succeeds")
}

/// `ip route show proto PROTO` (v4 and v6) inside `ns`.
pub fn our_routes(ns: &TestNetns) -> String {
    let p = PROTO.to_string();
    let v4 = ns.exec_ok(&["ip", "route", "show", "proto", &p]);
    let v6 = ns.exec_ok(&["ip", "-6", "route", "show", "proto", &p]);
    format!("{v4}{v6}")
}

/// Feeds events to the dataplane until `done` holds; panics after a
/// generous deadline (this is a liveness guard, not a timing assertion).
/// Returns the host writes (routes, neighbours, sysctls) the events caused.
pub async fn pump_until(
    dp: &mut Dataplane,
    events: &mut mpsc::Receiver<DataplaneEvent>,
    done: impl FnMut(&Dataplane) -> bool,
) -> usize {
    let mut writes = 0;
    pump_reports_until(dp, events, done, |report, _| writes += host_writes(report)).await;
    writes
}

/// Like [`pump_until`], handing each batch's report and how long handling
/// it took to `each`.
pub async fn pump_reports_until(
    dp: &mut Dataplane,
    events: &mut mpsc::Receiver<DataplaneEvent>,
    mut done: impl FnMut(&Dataplane) -> bool,
    mut each: impl FnMut(&ApplyReport, Duration),
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(dp) {
        assert!(
            Instant::now() < deadline,
            "condition not reached from events"
        );
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        {
            let mut batch = vec![ev];
            while let Ok(more) = events.try_recv() {
                batch.push(more);
            }
            let t0 = Instant::now();
            let report = dp.handle_events(batch).await.expect("events handled");
            each(&report, t0.elapsed());
        }
    }
}

/// Every event caused before now: adds and deletes a foreign marker route
/// (a blackhole in `ns`) and collects events up to the marker's deletion.
/// Netlink delivers in order, so whatever earlier change would be reported
/// has arrived by then; no fixed sleep decides that "nothing came".
/// `inspect` sees each event as it arrives.
pub async fn events_until_marker(
    ns: &TestNetns,
    events: &mut mpsc::Receiver<DataplaneEvent>,
    mut inspect: impl FnMut(&DataplaneEvent),
) -> Vec<DataplaneEvent> {
    static MARKERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = MARKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let marker = format!("192.0.2.{}/32", n % 250 + 1);
    ns.exec_ok(&["ip", "route", "add", "blackhole", &marker]);
    ns.exec_ok(&["ip", "route", "del", "blackhole", &marker]);
    let marker = net(&marker);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("the marker route {marker} never came back as an event"))
            .expect("event channel open");
        inspect(&ev);
        let done =
            matches!(&ev, DataplaneEvent::Route { route, removed: true } if route.dst == marker);
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

/// Feeds every event caused before now (see [`events_until_marker`]) to
/// the dataplane; returns the host writes that caused.
pub async fn pump_pending(
    ns: &TestNetns,
    dp: &mut Dataplane,
    events: &mut mpsc::Receiver<DataplaneEvent>,
) -> usize {
    let batch = events_until_marker(ns, events, |_| {}).await;
    host_writes(&dp.handle_events(batch).await.expect("events handled"))
}
