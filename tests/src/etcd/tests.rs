//! Self-tests of the etcd fixtures: start/stop/restart, isolation between
//! servers, the cut-off proxy, and a server inside a network namespace.

use super::*;

#[test]
fn starts_stops_restarts_and_cleans_up() {
    let dir;
    {
        let mut etcd = EtcdServer::new();
        dir = etcd.dir().to_path_buf();
        etcd.etcdctl_ok(&["put", "/mgy/a", "1"]);
        let port = etcd.client_port();

        etcd.stop();
        assert!(!etcd.is_running());
        assert!(
            etcd.etcdctl(&["--command-timeout=1s", "get", "/mgy/a"])
                .status
                .code()
                != Some(0)
        );

        etcd.start();
        assert_eq!(etcd.client_port(), port, "restart must keep the port");
        let got = etcd.etcdctl_ok(&["get", "--print-value-only", "/mgy/a"]);
        assert_eq!(got.trim(), "1", "restart must keep the data");
    }
    assert!(!dir.exists(), "data dir {} left behind", dir.display());
}

#[test]
fn two_servers_do_not_share_anything() {
    let a = EtcdServer::new();
    let b = EtcdServer::new();
    assert_ne!(a.client_url(), b.client_url());
    a.etcdctl_ok(&["put", "/mgy/only-a", "x"]);
    let got = b.etcdctl_ok(&["get", "--print-value-only", "/mgy/only-a"]);
    assert_eq!(got.trim(), "");
}

#[test]
fn proxy_forwards_cuts_and_restores() {
    let etcd = EtcdServer::new();
    let proxy = CutoffProxy::new(etcd.client_port());
    let via = |args: &[&str]| {
        Command::new(ETCDCTL_BIN)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", proxy.url()))
            .arg("--command-timeout=2s")
            .args(args)
            .output()
            .expect("etcdctl runs")
    };
    assert!(via(&["put", "/mgy/p", "1"]).status.success());
    proxy.cut();
    assert!(
        !via(&["get", "/mgy/p"]).status.success(),
        "cut proxy still forwards"
    );
    etcd.etcdctl_ok(&["put", "/mgy/p", "2"]);
    proxy.restore();
    let out = via(&["get", "--print-value-only", "/mgy/p"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
}

#[tokio::test]
async fn tls_server_requires_and_accepts_client_certificates() {
    let etcd = EtcdServer::new_tls();
    assert!(etcd.client_url().starts_with("https://"));
    etcd.etcdctl_ok(&["put", "/mgy/t", "tls"]);
    let mut client = etcd.client().await;
    let resp = client.get("/mgy/t", None).await.expect("get over TLS");
    assert_eq!(resp.kvs().len(), 1);
    // Without a client certificate the server refuses.
    let ca = etcd.tls().expect("tls").ca.display().to_string();
    let out = Command::new(ETCDCTL_BIN)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", etcd.client_url()))
        .arg(format!("--cacert={ca}"))
        .args(["--command-timeout=2s", "get", "/mgy/t"])
        .output()
        .expect("etcdctl runs");
    assert!(!out.status.success());
}

#[test]
fn runs_inside_a_namespace_on_its_loopback() {
    if !crate::netns::require_root("runs_inside_a_namespace_on_its_loopback") {
        return;
    }
    let ns = crate::netns::TestNetns::new("etcdfx");
    let mut etcd = EtcdServer::new_in_netns(ns.name());
    etcd.etcdctl_ok(&["put", "/mgy/ns", "1"]);
    // Not reachable from the root namespace's loopback.
    assert!(http_get(etcd.client_port(), "/health").is_none());
    etcd.stop();
    etcd.start();
    let got = etcd.etcdctl_ok(&["get", "--print-value-only", "/mgy/ns"]);
    assert_eq!(got.trim(), "1");
}

#[tokio::test]
async fn async_client_connects() {
    let etcd = EtcdServer::new();
    let mut client = etcd.client().await;
    client.put("/mgy/k", "v", None).await.expect("put");
    let resp = client.get("/mgy/k", None).await.expect("get");
    let value = resp.kvs().first().map(|kv| kv.value().to_vec());
    assert_eq!(value.as_deref(), Some(&b"v"[..]));
}
