//! Self-tests of the sandbox: output parsers and a whole cluster coming up
//! and cleaning up after itself.

use super::*;
use crate::netns::require_root;

#[test]
fn metric_samples_are_summed() {
    let text = "# HELP x_total X.\nx_total{kind=\"a\"} 2\nx_total{kind=\"b\"} 3\n\
                x_total_more 100\ny 7\n";
    assert_eq!(sum_metric(text, "x_total"), Some(5.0));
    assert_eq!(sum_metric(text, "y"), Some(7.0));
    assert_eq!(sum_metric(text, "x_total{kind=\"b\"}"), Some(3.0));
    assert_eq!(sum_metric(text, "z"), None, "absent is not 0");
    assert_eq!(sum_metric("", "y"), None, "unreachable is not 0");
}

#[test]
fn ping_summary_is_parsed() {
    let text = "--- 10.0.0.1 ping statistics ---\n\
                300 packets transmitted, 298 received, 0.666% packet loss, time 3001ms\n";
    assert_eq!(parse_ping_summary(text), Some((300, 298)));
    assert_eq!(parse_ping_summary("nothing"), None);
}

/// The plumbing without any agent: etcd answers from the test thread,
/// hosts reach etcd over the fabric, the outside server records peers,
/// workloads are wired as the CNI plugin would, and nothing is left.
#[test]
fn cluster_plumbing_works_and_cleans_up() {
    if !require_root("cluster_plumbing_works_and_cleans_up") {
        return;
    }
    let names;
    let dir;
    {
        let mut c = Cluster::builder().hosts(2).start_agents(false).build();
        dir = c.dir.clone();
        c.put("/calico/v1/x", "1");
        assert_eq!(
            c.get_prefix("/calico/v1/")
                .get("/calico/v1/x")
                .map(String::as_str),
            Some("1")
        );
        assert_eq!(
            c.get_prefix("/calico/v1/host/h2/bird_ip")
                .values()
                .next()
                .map(String::as_str),
            Some("192.0.2.12")
        );
        // Hosts reach etcd and the outside server over the fabric.
        let h1 = c.host("h1").ns().name().to_owned();
        assert!(in_netns(&h1, || tcp_connects(
            SocketAddr::from((ETCD_IP, 2379)),
            PROBE_TIMEOUT
        )));
        assert!(in_netns(&h1, || tcp_connects(
            SocketAddr::from((OUTSIDE_IP, OUTSIDE_PORT)),
            PROBE_TIMEOUT
        )));
        assert!(eventually(Duration::from_secs(2), || c
            .outside_peers()
            .contains(&IpAddr::from(Ipv4Addr::new(192, 0, 2, 11)))));

        // A workload is wired but, without margay, unreachable.
        c.add_workload("a", "h1", "10.65.1.2");
        let w = c.workload("a");
        assert_eq!(w.iface(), "calia");
        assert_eq!(w.mac().len(), 17);
        let wl_routes = w.ns().exec_ok(&["ip", "-4", "route"]);
        assert!(
            wl_routes.contains("default via 169.254.1.1 dev eth0"),
            "{wl_routes}"
        );
        assert!(!c.can_connect("a", "outside", 0));

        // Cutting etcd keeps the test's client working, not the hosts'.
        c.cut_etcd();
        c.put("/calico/v1/y", "2");
        assert!(!in_netns(&h1, || tcp_connects(
            SocketAddr::from((ETCD_IP, 2379)),
            PROBE_TIMEOUT
        )));
        let rev = c.compact();
        assert!(rev > 1);
        c.restore_etcd();
        assert!(in_netns(&h1, || tcp_connects(
            SocketAddr::from((ETCD_IP, 2379)),
            PROBE_TIMEOUT
        )));
        assert_eq!(c.get_prefix("/calico/v1/y").len(), 1);

        names = [
            c.fabric().name().to_owned(),
            h1,
            c.workload("a").ns().name().to_owned(),
        ];
    }
    let list = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .into_owned();
    for name in names {
        assert!(!list.contains(&name), "namespace {name} left behind");
    }
    assert!(!dir.exists(), "scratch dir left behind");
}

/// What margay will render for a host (the shape the lead fixed), written by
/// hand so the topology can be checked without the agent: the router as a
/// global peer, plus a mesh session to each of `mesh`.
fn hand_written_host_config(ip: Ipv4Addr, mesh: &[Ipv4Addr]) -> String {
    let mut text = format!(
        "log stderr all;\nrouter id {ip};\nprotocol device {{ }}\n\
         protocol direct {{ ipv4; interface \"-cali*\", \"*\"; }}\n\
         protocol kernel {{ ipv4 {{ import all; export where source = RTS_BGP; }}; learn; scan time 10; }}\n\
         template bgp peer {{\n  local {ip} as {ROUTER_AS};\n  multihop;\n  \
         connect delay time 1;\n  connect retry time 5;\n  error wait time 1, 10;\n  \
         ipv4 {{ import where net ~ [ 10.65.0.0/16+ ]; \
         export where source = RTS_INHERIT && net ~ [ 10.65.0.0/16+ ]; next hop self; gateway recursive; }};\n}}\n\
         protocol bgp Global_192_0_2_1 from peer {{ neighbor {ROUTER_IP} as {ROUTER_AS}; }}\n"
    );
    for peer in mesh {
        let name = peer.to_string().replace('.', "_");
        text.push_str(&format!(
            "protocol bgp Mesh_{name} from peer {{ neighbor {peer} as {ROUTER_AS}; }}\n"
        ));
    }
    text
}

/// The BGP topology without any agent: hosts on both subnets reach etcd
/// through the router, every BIRD starts, and a route one host's kernel
/// holds reaches the other host (over the mesh and through the router, the
/// route reflector) and the router's kernel as `proto bird`; withdrawn, it
/// goes from both.
#[test]
fn bgp_topology_carries_routes_between_subnets() {
    if !require_root("bgp_topology_carries_routes_between_subnets") {
        return;
    }
    let dir;
    {
        let mut c = Cluster::builder()
            .hosts(2)
            .start_agents(false)
            .bgp(BgpOptions::default())
            .build();
        dir = c.dir.clone();
        let (h1, h2) = (c.host("h1").ip(), c.host("h2").ip());
        assert_eq!(h2, Ipv4Addr::new(203, 0, 113, 12), "h2 is on subnet B");
        let h2_ns = c.host("h2").ns().name().to_owned();
        assert!(in_netns(&h2_ns, || tcp_connects(
            SocketAddr::from((ETCD_IP, 2379)),
            PROBE_TIMEOUT
        )));
        assert!(c.bird_config("h1").contains("router id 192.0.2.11;"));
        assert_eq!(
            c.get_prefix(&format!("{BGP_PREFIX}/global/peer_v4/192.0.2.1"))
                .values()
                .next()
                .map(String::as_str),
            Some(r#"{"as_num":"64511","ip":"192.0.2.1"}"#)
        );

        c.write_bird_config("h1", &hand_written_host_config(h1, &[h2]));
        c.write_bird_config("h2", &hand_written_host_config(h2, &[h1]));
        for host in ["h1", "h2"] {
            let reply = c.birdc(host, &["configure"]);
            assert!(reply.contains("Reconfigured"), "{host}: {reply}");
        }
        wait_for("every session established", CONVERGE_TIMEOUT, || {
            c.established_sessions("h1").len() == 2
                && c.established_sessions("h2").len() == 2
                && c.router_established_sessions().len() == 2
        });

        // A workload's route as margay programs it (its own protocol number).
        c.add_workload("x", "h1", "10.65.1.2");
        let h1_ns = c.host("h1").ns();
        h1_ns.exec_ok(&[
            "ip",
            "route",
            "add",
            "10.65.1.2/32",
            "dev",
            "calix",
            "proto",
            "80",
        ]);
        let wl = Ipv4Addr::new(10, 65, 1, 2);
        wait_for("the route on h2 and the router", CONVERGE_TIMEOUT, || {
            c.route("h2", wl).contains("proto bird")
                && c.router_route(wl).contains("via 192.0.2.11 ")
        });
        let on_h2 = c.route("h2", wl);
        assert!(on_h2.contains(&format!("via {ROUTER_IP_B} ")), "{on_h2}");

        h1_ns.exec_ok(&["ip", "route", "del", "10.65.1.2/32"]);
        wait_for(
            "the route gone from h2 and the router",
            CONVERGE_TIMEOUT,
            || c.route("h2", wl).is_empty() && c.router_route(wl).is_empty(),
        );
    }
    assert!(!dir.exists(), "scratch dir left behind");
}
