//! Host endpoints on the real kernel, every backend: a host namespace whose
//! fabric interface (`ext0`, 192.0.2.1) faces a peer namespace (`ext`,
//! 192.0.2.2), and a second link `ext1` (192.0.3.1) to the same peer.
//! Real TCP connections decide: the allowed port opens, another does not,
//! the failsafe port does, replies to the host's own connections come back,
//! the agent's own datastore endpoint stays reachable, a binding by address
//! follows the address to another interface, and deleting the host
//! endpoint leaves the interface unfiltered with no chain behind and the
//! output hook detached (also by an agent restarted without host
//! endpoints, over an attachment an older agent left).
//!
//! Needs root (network namespaces); under CI a missing root fails instead
//! of skipping.

mod common;

use common::backends::{ipt_legacy, ipt_nft, nft_netlink, nft_tool};
use common::hooks::hook_attachments;
use common::{base_state, Backend, Lab, EXT_IP, HOST_IP};
use margay_dataplane::firewall::lower::{InterfaceAddresses, CHAIN_OUTPUT};
use margay_dataplane::firewall::model::{Hook, ObjectName};
use margay_dataplane::firewall::scenario::{changes_between, rule, DesiredBuilder};
use margay_dataplane::firewall::{
    EndpointToHostAction, FirewallManager, FirewallOp, FirewallSettings,
};
use margay_policy::desired::{DesiredState, PortRange, Protocol, Rule, RuleAction};
use margay_tests::netns::{require_root, veth_pair, TestNetns};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Child;
use std::time::{Duration, Instant};

/// The host's address on the second link.
const HOST_IP2: &str = "192.0.3.1";
/// The peer's address on the second link.
const EXT_IP2: &str = "192.0.3.2";
/// An address that moves between the host's two links.
const MOVING_IP: &str = "192.0.9.1";
/// The port of the agent's "own datastore endpoint" on the peer: in no
/// failsafe list.
const ETCD_PORT: u16 = 12379;

fn tcp(action: RuleAction, port: u16) -> Rule {
    let mut r = rule(action);
    r.protocol = Some(Protocol(6));
    r.dst.ports = vec![PortRange { lo: port, hi: port }];
    r
}

/// The lab plus a second link from the host to the peer.
fn lab(tag: &str, workloads: usize) -> Lab {
    let lab = Lab::new(tag, workloads);
    veth_pair(&lab.host, "ext1", &lab.ext, "eth1");
    let addr = |ns: &TestNetns, a: &str, dev: &str| {
        ns.exec_ok(&["ip", "addr", "add", a, "dev", dev]);
    };
    addr(&lab.host, &format!("{HOST_IP2}/24"), "ext1");
    addr(&lab.ext, &format!("{EXT_IP2}/24"), "eth1");
    lab
}

/// What the kernel says each interface of `ns` carries (what the agent
/// learns over netlink).
fn kernel_addrs(ns: &TestNetns) -> InterfaceAddresses {
    let mut out = InterfaceAddresses::new();
    for line in ns.exec_ok(&["ip", "-o", "link", "show"]).lines() {
        if let Some(name) = line.split_whitespace().nth(1) {
            let name = name.trim_end_matches(':');
            let name = name.split('@').next().unwrap_or(name);
            out.insert(name.to_owned(), BTreeSet::new());
        }
    }
    for line in ns.exec_ok(&["ip", "-o", "addr", "show"]).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(cidr)) = (f.get(1), f.get(3)) else {
            continue;
        };
        let addr = cidr.split('/').next().unwrap_or_default();
        if let Ok(a) = addr.parse::<IpAddr>() {
            out.entry((*name).to_owned()).or_default().insert(a);
        }
    }
    out
}

/// A TCP listener in a namespace; killed and reaped on drop.
struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Listens on TCP `port` (IPv4) in `ns`, returning once the socket is up.
fn listen(ns: &TestNetns, port: u16) -> Listener {
    listen_family(ns, "-4", port)
}

/// Listens on TCP `port` in `ns` for `family` (`-4` or `-6`).
fn listen_family(ns: &TestNetns, family: &str, port: u16) -> Listener {
    // Owned by the guard from the start: killed and reaped on every path.
    let listener = Listener(ns.spawn(&["nc", family, "-lk", &port.to_string()]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let ss_family = if family == "-6" { "-6" } else { "-4" };
        let out = ns.exec(&["ss", "-Hltn", ss_family, &format!("sport = :{port}")]);
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return listener;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("listener on {port} did not come up");
}

fn listen_all(ns: &TestNetns, ports: &[u16]) -> Vec<Listener> {
    ports.iter().map(|p| listen(ns, *p)).collect()
}

/// True when a TCP connection from `ns` to `to:port` opens within a second.
fn connects(ns: &TestNetns, to: &str, port: u16) -> bool {
    ns.exec(&["nc", "-z", "-w1", to, &port.to_string()])
        .status
        .success()
}

fn manager(lab: &Lab, b: Backend) -> FirewallManager {
    let mut m = lab.manager(b);
    m.set_interface_addresses(&kernel_addrs(&lab.host))
        .expect("interfaces");
    m
}

/// A manager that has applied one host endpoint on `ext0` with no profile
/// (deny-all), the default failsafe lists and `own` as the agent's datastore
/// endpoint; with the state and settings it applied.
fn deny_all_on_the_fabric(
    lab: &Lab,
    b: Backend,
    own: std::net::SocketAddr,
) -> (FirewallManager, DesiredState, FirewallSettings) {
    let settings = FirewallSettings {
        own_endpoints: vec![own],
        ..FirewallSettings::default()
    };
    let mut m = manager(lab, b);
    let mut bld = DesiredBuilder::new();
    bld.host_endpoint("fabric", Some("ext0"), &[], &[]);
    let state = bld.build();
    apply(&mut m, &DesiredState::default(), &state, &settings);
    (m, state, settings)
}

fn apply(
    m: &mut FirewallManager,
    before: &DesiredState,
    after: &DesiredState,
    s: &FirewallSettings,
) {
    m.apply(after, &changes_between(before, after), s)
        .expect("apply");
}

/// "fabric" on ext0: tcp/80 in, anything out.
fn fabric(b: &mut DesiredBuilder) -> &mut DesiredBuilder {
    b.profile(
        "web",
        vec![tcp(RuleAction::Allow, 80)],
        vec![rule(RuleAction::Allow)],
    )
    .host_endpoint("fabric", Some("ext0"), &[], &["web"])
}

fn skip(test: &str) -> bool {
    !require_root(test)
}

/// Allowed port in, other port not, failsafe port in, replies to the
/// host's own connections back; outbound policy on what the host sends.
pub fn policy_on_the_fabric_interface(b: Backend) {
    if skip("policy_on_the_fabric_interface") {
        return;
    }
    let lab = lab("he-pol", 0);
    let _host = listen_all(&lab.host, &[80, 8080, 22]);
    let _peer = listen_all(&lab.ext, &[9000, 9001]);
    assert!(connects(&lab.ext, HOST_IP, 8080), "open before programming");
    let settings = FirewallSettings::default();
    let mut m = manager(&lab, b);
    let mut bld = DesiredBuilder::new();
    fabric(&mut bld);
    let s0 = bld.build();
    apply(&mut m, &DesiredState::default(), &s0, &settings);
    assert!(connects(&lab.ext, HOST_IP, 80), "allowed port");
    assert!(!connects(&lab.ext, HOST_IP, 8080), "other port");
    assert!(connects(&lab.ext, HOST_IP, 22), "failsafe port");
    assert!(
        connects(&lab.host, EXT_IP, 9000),
        "replies to the host's own connection"
    );
    assert!(connects(&lab.ext, HOST_IP2, 8080), "ext1 is not bound");
    assert!(connects(&lab.host, "127.0.0.1", 8080), "loopback untouched");
    // Outbound: only tcp/9000 may leave (failsafe aside).
    bld.profile(
        "web",
        vec![tcp(RuleAction::Allow, 80)],
        vec![tcp(RuleAction::Allow, 9000)],
    );
    let s1 = bld.build();
    apply(&mut m, &s0, &s1, &settings);
    assert!(connects(&lab.host, EXT_IP, 9000), "allowed out");
    assert!(!connects(&lab.host, EXT_IP, 9001), "not allowed out");
    assert_eq!(m.host_endpoint_bindings().len(), 1);
    // A restarted agent reads the host chains and the output hook back
    // and finds nothing to write.
    let again = manager(&lab, b);
    assert!(again.plan(&s1, &settings).is_empty(), "adopted as is");
}

/// Deny-all: the failsafe port and the own datastore endpoint stay open;
/// a failsafe list change applies live.
pub fn failsafe_and_own_endpoint_survive_deny_all(b: Backend) {
    if skip("failsafe_and_own_endpoint_survive_deny_all") {
        return;
    }
    let lab = lab("he-fs", 0);
    let _host = listen_all(&lab.host, &[22, 8080]);
    let _peer = listen_all(&lab.ext, &[ETCD_PORT, ETCD_PORT + 1]);
    let own = format!("{EXT_IP}:{ETCD_PORT}").parse().expect("endpoint");
    let (mut m, s0, settings) = deny_all_on_the_fabric(&lab, b, own);
    assert!(connects(&lab.ext, HOST_IP, 22), "failsafe in");
    assert!(!connects(&lab.ext, HOST_IP, 8080), "deny-all");
    assert!(connects(&lab.host, EXT_IP, ETCD_PORT), "own endpoint");
    assert!(
        !connects(&lab.host, EXT_IP, ETCD_PORT + 1),
        "only the own endpoint"
    );
    let moved = FirewallSettings {
        failsafe_inbound: vec![(6, 8080)],
        ..settings.clone()
    };
    m.apply(&s0, &Default::default(), &moved).expect("apply");
    assert!(connects(&lab.ext, HOST_IP, 8080), "new failsafe port");
    assert!(!connects(&lab.ext, HOST_IP, 22), "old failsafe port closed");
}

/// Bound by expected address only; the address moves to ext1 and the
/// policy follows it.
pub fn binding_by_address_follows_the_address(b: Backend) {
    if skip("binding_by_address_follows_the_address") {
        return;
    }
    let lab = lab("he-mv", 0);
    lab.host.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{MOVING_IP}/32"),
        "dev",
        "ext0",
    ]);
    let _host = listen_all(&lab.host, &[8080]);
    let settings = FirewallSettings::default();
    let mut m = manager(&lab, b);
    let mut bld = DesiredBuilder::new();
    bld.profile(
        "web",
        vec![tcp(RuleAction::Allow, 80)],
        vec![rule(RuleAction::Allow)],
    )
    .host_endpoint("by-addr", None, &[MOVING_IP], &["web"]);
    let s0 = bld.build();
    apply(&mut m, &DesiredState::default(), &s0, &settings);
    assert!(
        !connects(&lab.ext, HOST_IP, 8080),
        "ext0 carries it: filtered"
    );
    assert!(connects(&lab.ext, HOST_IP2, 8080), "ext1 does not: open");
    lab.host.exec_ok(&[
        "ip",
        "addr",
        "del",
        &format!("{MOVING_IP}/32"),
        "dev",
        "ext0",
    ]);
    lab.host.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{MOVING_IP}/32"),
        "dev",
        "ext1",
    ]);
    let stats = m
        .set_interface_addresses(&kernel_addrs(&lab.host))
        .expect("rebind");
    assert!(stats.ops > 0, "{stats:?}");
    assert!(connects(&lab.ext, HOST_IP, 8080), "ext0 unbound: open");
    assert!(!connects(&lab.ext, HOST_IP2, 8080), "ext1 bound: filtered");
    let bound: Vec<String> = m
        .host_endpoint_bindings()
        .values()
        .flatten()
        .map(|i| i.as_str().to_owned())
        .collect();
    assert_eq!(bound, ["ext1"]);
    assert!(
        m.plan(&s0, &settings).is_empty(),
        "the kernel holds the plan"
    );
}

/// What attaches anything of ours to the filter OUTPUT hook.
fn output_hook_attachments(ns: &TestNetns) -> Vec<String> {
    hook_attachments(ns, Hook::Output)
}

/// Asserts that neither the output hook's attachment nor its chain is
/// left, in read-back and in the kernel's own listing.
fn assert_output_hook_gone(lab: &Lab, b: Backend) {
    let seen = (b.make)(&lab.target)
        .expect("backend")
        .observe()
        .expect("observe");
    assert_eq!(seen.hooks.get(&Hook::Output), None, "output hook attached");
    let output = ObjectName::fixed(CHAIN_OUTPUT);
    assert!(!seen.chains.contains_key(&output), "output chain left");
    let left = output_hook_attachments(&lab.host);
    assert!(left.is_empty(), "output hook attachment left: {left:?}");
}

/// Deleting the host endpoint leaves the interface unfiltered, none of its
/// chains behind, and the output hook detached.
pub fn deleting_leaves_nothing_behind(b: Backend) {
    if skip("deleting_leaves_nothing_behind") {
        return;
    }
    let lab = lab("he-del", 0);
    let _host = listen_all(&lab.host, &[8080]);
    let settings = FirewallSettings::default();
    let mut m = manager(&lab, b);
    let mut bld = DesiredBuilder::new();
    fabric(&mut bld);
    let s0 = bld.build();
    apply(&mut m, &DesiredState::default(), &s0, &settings);
    assert!(!connects(&lab.ext, HOST_IP, 8080));
    assert!(
        !output_hook_attachments(&lab.host).is_empty(),
        "the output hook is attached while an interface is bound"
    );
    bld.state.host_endpoints.clear();
    let s1 = bld.build();
    apply(&mut m, &s0, &s1, &settings);
    assert!(connects(&lab.ext, HOST_IP, 8080), "unfiltered again");
    let mut fresh = (b.make)(&lab.target).expect("backend");
    let seen = fresh.observe().expect("observe");
    let left: Vec<&ObjectName> = seen
        .chains
        .keys()
        .filter(|c| c.as_str().starts_with("margay-h") || c.as_str().contains("fsafe"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_output_hook_gone(&lab, b);
    assert!(m.host_endpoint_bindings().is_empty());
    assert!(m.plan(&s1, &settings).is_empty());
}

/// An agent restarted without host endpoints over an output hook still
/// attached (to an emptied chain, as an older agent left it) detaches it
/// and deletes the chain; read-back does not bring it back.
pub fn a_restart_detaches_a_leftover_output_hook(b: Backend) {
    if skip("a_restart_detaches_a_leftover_output_hook") {
        return;
    }
    let lab = lab("he-left", 0);
    let output = ObjectName::fixed(CHAIN_OUTPUT);
    let leftover = [
        FirewallOp::ReplaceChain {
            name: output.clone(),
            rules: vec![],
        },
        FirewallOp::AttachHook {
            hook: Hook::Output,
            chain: output,
        },
    ];
    let mut older = (b.make)(&lab.target).expect("backend");
    older.write(&leftover).expect("the older agent's leftover");
    assert!(!output_hook_attachments(&lab.host).is_empty(), "leftover");
    let settings = FirewallSettings::default();
    let mut m = manager(&lab, b);
    let none = DesiredBuilder::new().build();
    apply(&mut m, &DesiredState::default(), &none, &settings);
    assert_output_hook_gone(&lab, b);
    let again = manager(&lab, b);
    assert!(
        again.plan(&none, &settings).is_empty(),
        "nothing comes back"
    );
}

/// With `RETURN`, a workload reaching the host meets the host endpoint's
/// inbound policy (and no failsafe).
pub fn workload_to_host_meets_the_host_policy(b: Backend) {
    if skip("workload_to_host_meets_the_host_policy") {
        return;
    }
    let lab = lab("he-wl", 1);
    let _host = listen_all(&lab.host, &[80, 8080, 22]);
    let settings = FirewallSettings {
        endpoint_to_host: EndpointToHostAction::Return,
        ..FirewallSettings::default()
    };
    let mut m = manager(&lab, b);
    let mut bld = base_state(1);
    let s0 = bld.build();
    apply(&mut m, &DesiredState::default(), &s0, &settings);
    assert!(
        lab.connect(0, HOST_IP, 8080),
        "no host endpoint: RETURN lets it in"
    );
    fabric(&mut bld);
    let s1 = bld.build();
    apply(&mut m, &s0, &s1, &settings);
    assert!(lab.connect(0, HOST_IP, 80), "host policy allows 80");
    assert!(!lab.connect(0, HOST_IP, 8080), "host policy denies 8080");
    assert!(!lab.connect(0, HOST_IP, 22), "no failsafe for workloads");
    assert!(
        lab.connect(0, HOST_IP2, 8080),
        "ext1's address is not bound"
    );
}

/// Over IPv6 with a deny-all host endpoint: neighbour discovery still
/// works both ways (the neighbour caches are flushed after programming),
/// so the failsafe port and the own datastore endpoint stay reachable.
pub fn ipv6_neighbour_discovery_and_failsafe(b: Backend) {
    if skip("ipv6_neighbour_discovery_and_failsafe") {
        return;
    }
    let lab = lab("he-v6", 0);
    let v6 = |ns: &TestNetns, a: &str, dev: &str| {
        ns.exec_ok(&["ip", "-6", "addr", "add", a, "dev", dev, "nodad"]);
    };
    v6(&lab.host, "fd00:2::1/64", "ext0");
    v6(&lab.ext, "fd00:2::2/64", "eth0");
    let _host = [22, 8080].map(|p| listen_family(&lab.host, "-6", p));
    let _peer = listen_family(&lab.ext, "-6", ETCD_PORT);
    let own = format!("[fd00:2::2]:{ETCD_PORT}")
        .parse()
        .expect("endpoint");
    let (_manager, _, _) = deny_all_on_the_fabric(&lab, b, own);
    lab.host
        .exec_ok(&["ip", "-6", "neigh", "flush", "dev", "ext0"]);
    lab.ext
        .exec_ok(&["ip", "-6", "neigh", "flush", "dev", "eth0"]);
    assert!(connects(&lab.ext, "fd00:2::1", 22), "failsafe in over IPv6");
    assert!(!connects(&lab.ext, "fd00:2::1", 8080), "deny-all over IPv6");
    lab.host
        .exec_ok(&["ip", "-6", "neigh", "flush", "dev", "ext0"]);
    lab.ext
        .exec_ok(&["ip", "-6", "neigh", "flush", "dev", "eth0"]);
    assert!(
        connects(&lab.host, "fd00:2::2", ETCD_PORT),
        "own endpoint over IPv6"
    );
}

/// A tier in front of the host endpoint's profile decides first.
pub fn a_tier_decides_for_the_host(b: Backend) {
    if skip("a_tier_decides_for_the_host") {
        return;
    }
    let lab = lab("he-tier", 0);
    let _host = listen_all(&lab.host, &[80, 8080]);
    let settings = FirewallSettings::default();
    let mut m = manager(&lab, b);
    let mut bld = DesiredBuilder::new();
    fabric(&mut bld);
    let s0 = bld.build();
    apply(&mut m, &DesiredState::default(), &s0, &settings);
    assert!(connects(&lab.ext, HOST_IP, 80) && !connects(&lab.ext, HOST_IP, 8080));
    bld.policy(
        "ops",
        "mgmt",
        vec![tcp(RuleAction::Allow, 8080), tcp(RuleAction::Deny, 80)],
        vec![rule(RuleAction::NextTier)],
    )
    .host_tier("fabric", "ops", &["mgmt"]);
    let s1 = bld.build();
    apply(&mut m, &s0, &s1, &settings);
    assert!(connects(&lab.ext, HOST_IP, 8080), "tier allow");
    assert!(
        !connects(&lab.ext, HOST_IP, 80),
        "tier deny beats the profile"
    );
}

macro_rules! host_endpoint_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            const B: Backend = Backend {
                make: $make,
                dump: no_dump,
            };
            #[test]
            fn policy_on_the_fabric_interface() {
                super::policy_on_the_fabric_interface(B)
            }
            #[test]
            fn failsafe_and_own_endpoint_survive_deny_all() {
                super::failsafe_and_own_endpoint_survive_deny_all(B)
            }
            #[test]
            fn binding_by_address_follows_the_address() {
                super::binding_by_address_follows_the_address(B)
            }
            #[test]
            fn deleting_leaves_nothing_behind() {
                super::deleting_leaves_nothing_behind(B)
            }
            #[test]
            fn a_restart_detaches_a_leftover_output_hook() {
                super::a_restart_detaches_a_leftover_output_hook(B)
            }
            #[test]
            fn workload_to_host_meets_the_host_policy() {
                super::workload_to_host_meets_the_host_policy(B)
            }
            #[test]
            fn ipv6_neighbour_discovery_and_failsafe() {
                super::ipv6_neighbour_discovery_and_failsafe(B)
            }
            #[test]
            fn a_tier_decides_for_the_host() {
                super::a_tier_decides_for_the_host(B)
            }
        }
    };
}

fn no_dump(_: &TestNetns) -> String {
    String::new()
}

host_endpoint_suite!(nftables, nft_netlink);
host_endpoint_suite!(nftables_tool, nft_tool);
host_endpoint_suite!(iptables, ipt_nft);
host_endpoint_suite!(iptables_legacy, ipt_legacy);
