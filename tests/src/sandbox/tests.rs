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
