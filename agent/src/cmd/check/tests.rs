//! Unit tests of `margay check`: each check's verdict and wording.

use super::*;

fn settings() -> Settings {
    Settings::defaults("node-1")
}

#[test]
fn lines_are_aligned_and_uniform() {
    let ok = CheckResult::ok("etcd reachable", "http://127.0.0.1:2379, 3 ms");
    assert_eq!(
        ok.to_string(),
        "ok       etcd reachable (http://127.0.0.1:2379, 3 ms)"
    );
    let bad = CheckResult::problem("etcd reachable", "connection refused", "start etcd");
    assert_eq!(
        bad.to_string(),
        "PROBLEM  etcd reachable: connection refused — hint: start etcd"
    );
    let bare = CheckResult::ok("x", "");
    assert_eq!(bare.to_string(), "ok       x");
    // Names start in the same column.
    assert_eq!(ok.to_string().find("etcd"), bad.to_string().find("etcd"));
}

#[test]
fn capabilities_from_cap_eff() {
    let full = Some("Name:\tx\nCapEff:\t000001ffffffffff\n".to_string());
    assert!(check_capabilities(&full).ok);
    let net_admin_only = Some(format!("CapEff:\t{:016x}\n", 1u64 << 12));
    let r = check_capabilities(&net_admin_only);
    assert!(!r.ok);
    assert_eq!(r.detail, "missing CAP_NET_RAW");
    let none = Some("CapEff:\t0000000000000000\n".to_string());
    assert_eq!(
        check_capabilities(&none).detail,
        "missing CAP_NET_ADMIN, CAP_NET_RAW"
    );
    assert!(!check_capabilities(&None).ok);
}

#[test]
fn sysctl_checks() {
    assert!(check_ip_forward(Some("1\n")).ok);
    let off = check_ip_forward(Some("0\n"));
    assert!(!off.ok && off.hint.contains("ip_forward=1"));
    assert!(!check_ip_forward(None).ok);
    assert!(check_rp_filter(Some("1\n")).ok);
    assert!(check_rp_filter(Some("0")).ok);
    let loose = check_rp_filter(Some("2\n"));
    assert!(!loose.ok && loose.detail.contains("loose"));
}

#[test]
fn tools_and_probes() {
    let found = check_tool("nft", Some(Path::new("/usr/sbin/nft")), "install nftables");
    assert_eq!(
        found.to_string(),
        "ok       tool nft installed (/usr/sbin/nft)"
    );
    let missing = check_tool("ipset", None, "install the ipset package");
    assert!(!missing.ok && missing.hint.contains("ipset"));
    let failed = check_kernel_feature(
        "kernel nf_tables available",
        "nft list tables",
        &Err("exit status: 1 Operation not permitted".into()),
        "run as root",
    );
    assert!(failed
        .to_string()
        .contains("`nft list tables` failed: exit status: 1"));
    assert!(find_tool("sh").is_some());
    assert!(find_tool("surely-not-a-tool-xyz").is_none());
}

#[tokio::test]
async fn probe_reports_exit_status_and_stderr() {
    let sh = find_tool("sh").expect("sh");
    assert_eq!(probe(&sh, &["-c", "true"]).await, Ok(()));
    let err = probe(&sh, &["-c", "echo boom >&2; exit 3"])
        .await
        .expect_err("fails");
    assert!(err.contains("boom") && err.contains('3'), "{err}");
}

#[test]
fn tls_file_rules() {
    let mut s = settings();
    assert!(
        check_tls_files(&s).is_empty(),
        "plain http: nothing to check"
    );
    s.etcd_endpoints = vec!["https://etcd:2379".into()];
    let r = check_tls_files(&s);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].name, "etcd TLS trust");
    let missing = system_trust_check(Path::new("/nonexistent/ca-bundle.crt"));
    assert!(!missing.ok && missing.hint.contains("ETCD_CA_CERT_FILE"));
    let bundle = std::env::current_exe().expect("test binary path");
    let present = system_trust_check(&bundle);
    assert!(present.ok && present.detail.contains("system trust store"));

    let dir = std::env::temp_dir().join(format!("mgy-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = dir.join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "hello").expect("write");
    s.etcd_ca_file = Some(ca.clone());
    s.etcd_cert_file = Some(junk);
    let r = check_tls_files(&s);
    assert!(r[0].ok, "{}", r[0]);
    assert!(!r[1].ok && r[1].detail.contains("not PEM"));
    assert!(r
        .iter()
        .any(|c| c.name == "etcd client certificate" && !c.ok));
    s.etcd_cert_file = None;
    s.etcd_ca_file = Some(dir.join("missing.pem"));
    let r = check_tls_files(&s);
    assert!(!r[0].ok && r[0].detail.contains("missing.pem"));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn etcd_result_lines() {
    let s = settings();
    let down = etcd_results(&s, &Err("transport error: connection refused".into()));
    assert_eq!(down.len(), 1);
    let line = down[0].to_string();
    assert!(line.starts_with("PROBLEM  etcd reachable: http://127.0.0.1:2379: transport error"));
    assert!(line.contains("hint: is etcd running"));
    let up = etcd_results(
        &s,
        &Ok(EtcdProbe {
            millis: 3,
            ready: Some("true".into()),
            host_keys: 2,
        }),
    );
    assert_eq!(
        up[0].to_string(),
        "ok       etcd reachable (http://127.0.0.1:2379, 3 ms)"
    );
    assert!(up[1].ok && up[1].detail.contains("2 keys for host node-1"));
    let not_ready = etcd_results(
        &s,
        &Ok(EtcdProbe {
            millis: 1,
            ready: None,
            host_keys: 0,
        }),
    );
    assert!(
        !not_ready[1].ok
            && not_ready[1]
                .hint
                .contains("etcdctl put /calico/v1/Ready true")
    );
}

#[tokio::test]
async fn refused_etcd_is_described_in_words() {
    // A loopback port that was free a moment ago: connecting is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut s = settings();
    s.etcd_endpoints = vec![format!("http://127.0.0.1:{port}")];
    let err = probe_etcd(&s).await.expect_err("nothing listens there");
    let text = format!("{err:#}");
    assert!(text.contains("connect"), "{text}");
    // At most once: another process may take the port in the meantime
    // (then it is "connection reset"), but no error is ever said twice.
    assert!(
        text.matches("connect error").count() <= 1,
        "repeated: {text}"
    );
    assert!(!text.contains("MetadataMap"), "debug dump leaked: {text}");
}
