//! The firewall conformance suite, written once and run against every
//! backend (see `conformance.rs` for the instantiations).
//!
//! Each test builds its own lab of fresh network namespaces: a "host" with
//! veth pairs to workload namespaces (host side `caliN`, workload
//! `10.65.0.N/32` with a default route via 169.254.1.1, as Calico's CNI
//! plugin makes them), plus an "ext" namespace outside all pools. The host
//! side plumbing (routes, proxy ARP, forwarding) is set by the lab here; in
//! production the routes layer does it. Then: program a desired state,
//! check the kernel shows it, send real packets, change things and check
//! only the delta was written, restart with zero loss, repair drift.

#![allow(dead_code)]

pub mod backends;
pub mod hooks;

use std::process::Child;
use std::time::Duration;

use margay_dataplane::firewall::diff::observed_of;
use margay_dataplane::firewall::lower::{endpoint_chain, lower, rule_set_chain};
use margay_dataplane::firewall::scenario::{
    changes_between, net, profile_rs, rule, DesiredBuilder,
};
use margay_dataplane::firewall::{
    EndpointToHostAction, FirewallBackend, FirewallError, FirewallManager, FirewallOp,
    FirewallSettings,
};
use margay_dataplane::netns::NetnsTarget;
use margay_policy::desired::{
    Changes, DesiredState, Direction, IcmpMatch, IpSetId, PortRange, Protocol, Rule, RuleAction,
};
use margay_policy::names::Id;
use margay_tests::netns::{attach_workload, require_root, veth_pair, TestNetns};

/// Makes the backend under test for a namespace.
pub type MakeBackend = fn(&NetnsTarget) -> Result<Box<dyn FirewallBackend>, FirewallError>;
/// Lists the backend's kernel objects as text (e.g. `nft list table inet margay`).
pub type Dump = fn(&TestNetns) -> String;

/// The backend under test.
#[derive(Clone, Copy)]
pub struct Backend {
    pub make: MakeBackend,
    pub dump: Dump,
}

/// A host namespace with workloads and an outside peer.
pub struct Lab {
    pub host: TestNetns,
    pub wls: Vec<TestNetns>,
    pub ext: TestNetns,
    pub target: NetnsTarget,
}

/// Host-side interface of workload `i`.
pub fn wl_if(i: usize) -> String {
    format!("cali{i}")
}

/// Address of workload `i`.
pub fn wl_ip(i: usize) -> String {
    format!("10.65.0.{}", i + 10)
}

/// The address of the outside peer.
pub const EXT_IP: &str = "192.0.2.2";
/// An address of the host itself (on `lo`).
pub const HOST_IP: &str = "192.0.2.1";

impl Lab {
    /// A host with `n` workloads and an outside peer.
    pub fn new(tag: &str, n: usize) -> Self {
        let host = TestNetns::new(&format!("{tag}-h"));
        host.sysctl("net.ipv4.ip_forward", "1");
        let mut wls = Vec::new();
        for i in 0..n {
            let wl = TestNetns::new(&format!("{tag}-w{i}"));
            let ifc = wl_if(i);
            attach_workload(&host, &ifc, &wl, &wl_ip(i));
            host.exec_ok(&[
                "ip",
                "route",
                "add",
                &format!("{}/32", wl_ip(i)),
                "dev",
                &ifc,
            ]);
            host.sysctl(&format!("net.ipv4.conf.{ifc}.proxy_arp"), "1");
            host.sysctl(&format!("net.ipv4.neigh.{ifc}.proxy_delay"), "0");
            wls.push(wl);
        }
        let ext = TestNetns::new(&format!("{tag}-x"));
        veth_pair(&host, "ext0", &ext, "eth0");
        host.exec_ok(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", "ext0"]);
        ext.exec_ok(&["ip", "addr", "add", &format!("{EXT_IP}/24"), "dev", "eth0"]);
        // Proxy ARP answers for 169.254.1.1 only with a route to it (Felix
        // hosts have a default route). The outside peer has no route back
        // to the pool: only masqueraded traffic gets replies.
        host.exec_ok(&[
            "ip", "route", "add", "default", "via", EXT_IP, "dev", "ext0",
        ]);
        let target = NetnsTarget::named(host.name()).expect("valid namespace name");
        Lab {
            host,
            wls,
            ext,
            target,
        }
    }

    /// A manager over a fresh backend in the host namespace, started.
    pub fn manager(&self, b: Backend) -> FirewallManager {
        let backend = (b.make)(&self.target).expect("backend");
        let mut m = FirewallManager::new(backend);
        m.start().expect("start");
        m
    }

    /// True when one ping from workload `from` to `to` gets an answer.
    pub fn ping(&self, from: usize, to: &str) -> bool {
        self.wls[from]
            .exec(&["ping", "-n", "-q", "-c1", "-W1", to])
            .status
            .success()
    }

    /// Listens on TCP `port` in workload `i` (until the lab goes).
    pub fn listen(&self, i: usize, port: u16) -> Listener {
        let child = self.wls[i].spawn(&["nc", "-lk", &port.to_string()]);
        // Wait until the listener is up.
        for _ in 0..50 {
            let out = self.wls[i].exec(&["ss", "-Hltn", &format!("sport = :{port}")]);
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Listener(child)
    }

    /// True when a TCP connection from workload `from` to `to:port` opens.
    pub fn connect(&self, from: usize, to: &str, port: u16) -> bool {
        self.wls[from]
            .exec(&["nc", "-z", "-w1", to, &port.to_string()])
            .status
            .success()
    }
}

/// A TCP listener inside a workload namespace; killed and reaped on drop.
pub struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tag(t: &str) -> IpSetId {
    IpSetId::Tag(Id::new(t).expect("tag"))
}

fn allow_tcp(port: u16) -> Rule {
    let mut r = rule(RuleAction::Allow);
    r.protocol = Some(Protocol(6));
    r.dst.ports = vec![PortRange { lo: port, hi: port }];
    r
}

fn allow_icmp_from(t: &str) -> Rule {
    let mut r = rule(RuleAction::Allow);
    r.ip_version = Some(margay_policy::desired::IpVersion::V4);
    r.protocol = Some(Protocol(1));
    r.icmp = Some(IcmpMatch {
        icmp_type: 8,
        code: None,
    });
    r.src.tag = Some(tag(t));
    r
}

/// The base scenario: workload 0 is "web" (in: tcp/8080 and ping from tag
/// "client"); workload 1 is "client" (in: nothing); workload 2 has no
/// profile (fail closed). Everyone may send anything out.
pub fn base_state(lab_workloads: usize) -> DesiredBuilder {
    let mut web_in = allow_tcp(8080);
    web_in.src.tag = Some(tag("client"));
    let mut b = DesiredBuilder::new();
    b.profile(
        "web",
        vec![web_in, allow_icmp_from("client")],
        vec![rule(RuleAction::Allow)],
    )
    .profile("client", vec![], vec![rule(RuleAction::Allow)])
    .endpoint(&wl_if(0), &format!("{}/32", wl_ip(0)), &["web"])
    .endpoint(&wl_if(1), &format!("{}/32", wl_ip(1)), &["client"])
    .set(tag("client"), &[&format!("{}/32", wl_ip(1))]);
    if lab_workloads > 2 {
        b.endpoint(&wl_if(2), &format!("{}/32", wl_ip(2)), &[]);
    }
    b
}

fn apply(
    m: &mut FirewallManager,
    before: &DesiredState,
    after: &DesiredState,
    s: &FirewallSettings,
) -> usize {
    m.apply(after, &changes_between(before, after), s)
        .expect("apply")
        .ops
}

fn skip(test: &str) -> bool {
    !require_root(test)
}

// ----- the tests -----

/// Programs the base state; the kernel shows exactly it.
pub fn programs_and_shows_state(b: Backend) {
    if skip("programs_and_shows_state") {
        return;
    }
    let lab = Lab::new("cf-show", 3);
    let settings = FirewallSettings::default();
    let desired = base_state(3).build();
    let mut m = lab.manager(b);
    let ops = apply(&mut m, &DesiredState::default(), &desired, &settings);
    assert!(ops > 0);
    let dump = (b.dump)(&lab.host);
    for i in 0..3 {
        let ifc = margay_dataplane::firewall::scenario::iface(&wl_if(i));
        for d in [Direction::Inbound, Direction::Outbound] {
            let chain = endpoint_chain(d, &ifc);
            assert!(
                dump.contains(chain.as_str()),
                "{chain} missing from:\n{dump}"
            );
        }
    }
    assert!(dump.contains(rule_set_chain(&profile_rs("web", Direction::Inbound)).as_str()));
    assert!(dump.contains(&wl_ip(1)), "tag member missing");
    // The backend's own read-back, from a fresh instance, shows exactly the lowering.
    let mut fresh = (b.make)(&lab.target).expect("backend");
    let seen = fresh.observe().expect("observe");
    assert_eq!(seen, observed_of(&lower(&desired, &settings)));
}

/// Real packets follow profiles, tags, ports and fail-closed.
pub fn packets_follow_policy(b: Backend) {
    if skip("packets_follow_policy") {
        return;
    }
    let lab = Lab::new("cf-pkt", 3);
    // Before programming, everything flows.
    assert!(lab.ping(0, &wl_ip(1)));
    let settings = FirewallSettings::default();
    let desired = base_state(3).build();
    let mut m = lab.manager(b);
    apply(&mut m, &DesiredState::default(), &desired, &settings);
    let _l8080 = lab.listen(0, 8080);
    let _l8081 = lab.listen(0, 8081);
    assert!(lab.ping(1, &wl_ip(0)), "client -> web ping (tagged icmp)");
    assert!(lab.connect(1, &wl_ip(0), 8080), "client -> web tcp/8080");
    assert!(!lab.connect(1, &wl_ip(0), 8081), "tcp/8081 is not allowed");
    assert!(!lab.ping(0, &wl_ip(1)), "client takes nothing in");
    assert!(
        !lab.ping(2, &wl_ip(0)),
        "fail-closed workload sends nothing"
    );
    assert!(
        !lab.ping(1, &wl_ip(2)),
        "fail-closed workload takes nothing"
    );
    // Host to workload is not filtered, and its replies come back.
    let host_ping = lab
        .host
        .exec(&["ping", "-n", "-q", "-c1", "-W1", &wl_ip(1)]);
    assert!(host_ping.status.success(), "host -> workload");
}

/// Tiers decide before profiles; next-tier hands over.
pub fn tiers_decide_first(b: Backend) {
    if skip("tiers_decide_first") {
        return;
    }
    let lab = Lab::new("cf-tier", 2);
    let settings = FirewallSettings::default();
    let s0 = base_state(2).build();
    let mut m = lab.manager(b);
    apply(&mut m, &DesiredState::default(), &s0, &settings);
    let _l = lab.listen(0, 8080);
    let _l2 = lab.listen(0, 9090);
    assert!(lab.connect(1, &wl_ip(0), 8080));

    let mut deny = rule(RuleAction::Deny);
    deny.protocol = Some(Protocol(6));
    deny.dst.ports = vec![PortRange { lo: 8080, hi: 8080 }];
    let mut b1 = base_state(2);
    b1.policy(
        "sec",
        "block",
        vec![deny, allow_tcp(9090)],
        vec![rule(RuleAction::NextTier)],
    )
    .tier(&wl_if(0), "sec", &["block"]);
    let s1 = b1.build();
    apply(&mut m, &s0, &s1, &settings);
    assert!(
        !lab.connect(1, &wl_ip(0), 8080),
        "tier deny beats profile allow"
    );
    assert!(lab.connect(1, &wl_ip(0), 9090), "tier allow beats profile");
    assert!(
        !lab.ping(1, &wl_ip(0)),
        "undecided in a matching tier: drop"
    );

    let mut b2 = base_state(2);
    b2.policy(
        "sec",
        "block",
        vec![rule(RuleAction::NextTier)],
        vec![rule(RuleAction::NextTier)],
    )
    .tier(&wl_if(0), "sec", &["block"]);
    let s2 = b2.build();
    apply(&mut m, &s1, &s2, &settings);
    assert!(
        lab.connect(1, &wl_ip(0), 8080),
        "next-tier: profile decides"
    );
    assert!(lab.ping(1, &wl_ip(0)));
}

/// A one-rule change and a one-member change write only that.
pub fn changes_write_only_the_delta(b: Backend) {
    if skip("changes_write_only_the_delta") {
        return;
    }
    let lab = Lab::new("cf-delta", 3);
    let settings = FirewallSettings::default();
    let s0 = base_state(3).build();
    let mut m = lab.manager(b);
    apply(&mut m, &DesiredState::default(), &s0, &settings);
    let _l = lab.listen(0, 8080);
    assert!(!lab.connect(2, &wl_ip(0), 8080));

    // Workload 2 joins the "client" tag: one member added, nothing else.
    let mut b1 = base_state(3);
    b1.endpoint(&wl_if(2), &format!("{}/32", wl_ip(2)), &["client"])
        .set(
            tag("client"),
            &[&format!("{}/32", wl_ip(1)), &format!("{}/32", wl_ip(2))],
        );
    let s1 = b1.build();
    let stats = m
        .apply(&s1, &changes_between(&s0, &s1), &settings)
        .expect("apply");
    assert!(!stats.full);
    assert_eq!(stats.members_added, 1, "{stats:?}");
    assert_eq!(
        stats.chains_replaced, 2,
        "only workload 2's two chains: {stats:?}"
    );
    assert!(lab.connect(2, &wl_ip(0), 8080), "new tag member is let in");

    // One rule of one profile changes: one chain rewritten.
    let mut b2 = b1.clone();
    let mut web_in = allow_tcp(8081);
    web_in.src.tag = Some(tag("client"));
    b2.profile(
        "web",
        vec![web_in, allow_icmp_from("client")],
        vec![rule(RuleAction::Allow)],
    );
    let s2 = b2.build();
    let stats = m
        .apply(&s2, &changes_between(&s1, &s2), &settings)
        .expect("apply");
    assert_eq!(stats.ops, 1, "{stats:?}");
    assert_eq!(stats.chains_replaced, 1);
    assert!(!lab.connect(1, &wl_ip(0), 8080), "old port closed");

    // Nothing changed: nothing written.
    assert_eq!(
        m.apply(&s2, &Changes::default(), &settings)
            .expect("apply")
            .ops,
        0
    );
    let mut fresh = (b.make)(&lab.target).expect("backend");
    assert_eq!(
        fresh.observe().expect("observe"),
        observed_of(&lower(&s2, &settings))
    );
}

/// A restarted manager adopts the state: zero ops, and a ping stream
/// running across the restart loses nothing.
pub fn restart_is_seamless(b: Backend) {
    if skip("restart_is_seamless") {
        return;
    }
    let lab = Lab::new("cf-restart", 2);
    let settings = FirewallSettings::default();
    let s0 = base_state(2).build();
    let mut m = lab.manager(b);
    apply(&mut m, &DesiredState::default(), &s0, &settings);
    let stream = lab.wls[1]
        .command(&[
            "ping",
            "-n",
            "-q",
            "-i",
            "0.01",
            "-c",
            "150",
            "-W1",
            &wl_ip(0),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ping stream");
    std::thread::sleep(Duration::from_millis(300));
    drop(m);
    let mut again = lab.manager(b);
    assert!(
        again.plan(&s0, &settings).is_empty(),
        "adopted state needs no ops"
    );
    let stats = again
        .apply(
            &s0,
            &changes_between(&DesiredState::default(), &s0),
            &settings,
        )
        .expect("apply");
    assert_eq!(stats.ops, 0, "{stats:?}");
    // A change after the restart converges by diff.
    let mut b1 = base_state(2);
    b1.profile(
        "client",
        vec![allow_icmp_from("web")],
        vec![rule(RuleAction::Allow)],
    )
    .set(tag("web"), &[&format!("{}/32", wl_ip(0))]);
    let s1 = b1.build();
    let stats = again
        .apply(&s1, &changes_between(&s0, &s1), &settings)
        .expect("apply");
    assert!(stats.ops <= 4 && stats.chains_deleted == 0, "{stats:?}");
    let out = stream.wait_with_output().expect("ping stream");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("150 received"),
        "loss across restart:\n{text}"
    );
    assert!(lab.ping(0, &wl_ip(1)), "the change took effect");
}

/// Someone empties one of our chains; repair finds and fixes exactly it.
pub fn drift_is_repaired(b: Backend) {
    if skip("drift_is_repaired") {
        return;
    }
    let lab = Lab::new("cf-drift", 2);
    let settings = FirewallSettings::default();
    let s0 = base_state(2).build();
    let mut m = lab.manager(b);
    apply(&mut m, &DesiredState::default(), &s0, &settings);
    assert!(m.repair_drift(&s0, &settings).expect("check").is_clean());
    let victim = endpoint_chain(
        Direction::Outbound,
        &margay_dataplane::firewall::scenario::iface(&wl_if(1)),
    );
    // Tamper through a second backend instance (backend-neutral "by hand").
    let mut other = (b.make)(&lab.target).expect("backend");
    other
        .write(&[FirewallOp::ReplaceChain {
            name: victim.clone(),
            rules: vec![],
        }])
        .expect("tamper");
    let report = m.repair_drift(&s0, &settings).expect("repair");
    assert_eq!(report.chains, vec![victim], "{report:?}");
    assert!(m.repair_drift(&s0, &settings).expect("check").is_clean());
    assert!(lab.ping(1, &wl_ip(0)));
}

/// Endpoint-to-host follows the setting; masquerade pools reach outside.
pub fn host_access_and_nat(b: Backend) {
    if skip("host_access_and_nat") {
        return;
    }
    let lab = Lab::new("cf-nat", 2);
    let drop = FirewallSettings::default();
    let mut b0 = base_state(2);
    b0.set(IpSetId::AllPools, &["10.65.0.0/16"]);
    let s0 = b0.build();
    let mut m = lab.manager(b);
    apply(&mut m, &DesiredState::default(), &s0, &drop);
    assert!(
        !lab.ping(0, HOST_IP),
        "DROP: workload cannot reach the host"
    );
    assert!(!lab.ping(0, EXT_IP), "not masqueraded: no way back");
    let ret = FirewallSettings {
        endpoint_to_host: EndpointToHostAction::Return,
        ..FirewallSettings::default()
    };
    let stats = m.apply(&s0, &Changes::default(), &ret).expect("apply");
    assert!(
        stats.full && stats.chains_replaced == 1,
        "settings change rewrites one chain: {stats:?}"
    );
    assert!(
        lab.ping(0, HOST_IP),
        "RETURN: outbound policy allows, host accepts"
    );
    let mut b1 = b0.clone();
    b1.set(IpSetId::MasqueradePools, &["10.65.0.0/16"]);
    let s1 = b1.build();
    apply(&mut m, &s0, &s1, &ret);
    assert!(lab.ping(0, EXT_IP), "masqueraded to outside the pools");
    let _ = net("10.65.0.0/16");
}

/// Pools nested in one another (a /24 inside a /16, added and removed in
/// either order) are written in one batch, first time, and masquerading
/// follows: interval sets refuse an element that overlaps one still there.
pub fn nested_pools_apply_first_time(b: Backend) {
    if skip("nested_pools_apply_first_time") {
        return;
    }
    let lab = Lab::new("cf-pools", 1);
    let ret = FirewallSettings {
        endpoint_to_host: EndpointToHostAction::Return,
        ..FirewallSettings::default()
    };
    let with_pools = |pools: &[&str]| {
        let mut bld = base_state(1);
        bld.set(IpSetId::AllPools, pools)
            .set(IpSetId::MasqueradePools, pools);
        bld.build()
    };
    let mut m = lab.manager(b);
    let steps: [&[&str]; 4] = [
        &["10.65.0.0/24"],
        &["10.65.0.0/24", "10.65.0.0/16"],
        &["10.65.0.0/16"],
        &["10.65.0.0/24"],
    ];
    let mut before = DesiredState::default();
    for pools in steps {
        let after = with_pools(pools);
        m.apply(&after, &changes_between(&before, &after), &ret)
            .unwrap_or_else(|e| panic!("pools {pools:?} must apply first time: {e}"));
        assert!(
            m.plan(&after, &ret).is_empty(),
            "pools {pools:?}: the kernel holds what was planned"
        );
        assert!(lab.ping(0, EXT_IP), "pools {pools:?}: masqueraded outside");
        before = after;
    }
}
