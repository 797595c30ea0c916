//! Parser tests: every value type's accepted spellings and the reasons
//! given for bad text.

use super::*;

#[test]
fn port_lists_follow_felix_format() {
    let ports = parse_port_list("tcp:22, udp:68,179 ,TCP:22").expect("valid");
    assert_eq!(
        ports,
        vec![
            ProtoPort {
                protocol: PortProtocol::Tcp,
                port: 22
            },
            ProtoPort {
                protocol: PortProtocol::Udp,
                port: 68
            },
            ProtoPort {
                protocol: PortProtocol::Tcp,
                port: 179
            },
        ]
    );
    assert_eq!(render_port_list(&ports), "tcp:22,udp:68,tcp:179");
    assert_eq!(parse_port_list("none"), Ok(vec![]));
    assert_eq!(parse_port_list(""), Ok(vec![]));
    assert!(parse_port_list("sctp:5")
        .unwrap_err()
        .contains("tcp or udp"));
    assert!(parse_port_list("tcp:0").unwrap_err().contains("1 to 65535"));
    assert!(parse_port_list("tcp:70000").is_err());
    assert!(parse_port_list("tcp:22,,udp:1").is_err());
}

#[test]
fn endpoints_are_urls_without_paths() {
    assert_eq!(
        parse_endpoints("http://127.0.0.1:2379/, https://[::1]:2379,http://etcd").expect("valid"),
        vec!["http://127.0.0.1:2379", "https://[::1]:2379", "http://etcd"]
    );
    assert!(parse_endpoints("127.0.0.1:2379")
        .unwrap_err()
        .contains("http://"));
    assert!(parse_endpoints("http://a:2379/v2")
        .unwrap_err()
        .contains("no path"));
    assert!(parse_endpoints("http://a:port")
        .unwrap_err()
        .contains("port"));
    assert!(parse_endpoints("http://a:0").is_err());
    assert!(parse_endpoints("http://:2379")
        .unwrap_err()
        .contains("missing host"));
    assert!(parse_endpoints(" , ").unwrap_err().contains("at least one"));
}

#[test]
fn prefixes_hostnames_and_numbers() {
    assert_eq!(parse_prefix("/calico/").as_deref(), Ok("/calico"));
    assert_eq!(parse_prefix("/a/b").as_deref(), Ok("/a/b"));
    assert!(parse_prefix("calico").is_err());
    assert!(parse_prefix("/").is_err());
    assert!(parse_prefix("/a//b").is_err());
    // One trailing `/` is dropped; a second would leave an empty segment.
    assert!(parse_prefix("/calico//").is_err());
    assert!(parse_hostname("a/b").is_err());
    assert!(parse_hostname(" ").is_err());
    assert_eq!(parse_hostname(" h1 ").as_deref(), Ok("h1"));
    assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
    assert!(parse_seconds("-1").is_err());
    assert!(parse_seconds("NaN").is_err());
    assert_eq!(render_seconds(Duration::from_millis(1500)), "1.5");
    assert_eq!(render_seconds(Duration::from_secs(30)), "30");
    assert!(parse_whole_seconds("0", 1).unwrap_err().contains("from 1"));
    assert_eq!(parse_route_protocol("80"), Ok(80));
    assert!(parse_route_protocol("4").unwrap_err().contains("reserved"));
    assert!(parse_route_protocol("256").is_err());
}

#[test]
fn enums_parse_any_case_and_felix_spellings() {
    assert_eq!(DataplaneKind::parse("NFT"), Ok(DataplaneKind::Nftables));
    assert_eq!(LogLevel::parse("WARNING"), Ok(LogLevel::Warn));
    assert_eq!(LogLevel::parse("Critical"), Ok(LogLevel::Error));
    assert_eq!(
        EndpointToHostAction::parse("return"),
        Ok(EndpointToHostAction::Return)
    );
    assert_eq!(parse_bool("True"), Ok(true));
    assert!(parse_bool("maybe").is_err());
    assert_eq!(
        parse_socket_addr("localhost:9091"),
        Ok(SocketAddr::from(([127, 0, 0, 1], 9091)))
    );
    assert!(parse_socket_addr("[::1]:0").is_ok());
    assert!(parse_socket_addr("example.com:80").is_err());
    assert!(
        parse_interface_prefixes("cali,tap,cali")
            .expect("valid")
            .len()
            == 2
    );
    assert!(parse_interface_prefixes("ca li").is_err());
    // Prefixes matching the loopback interface would firewall the host's own traffic.
    for bad in ["lo", "l", "cali,lo"] {
        assert!(
            parse_interface_prefixes(bad)
                .unwrap_err()
                .contains("loopback"),
            "{bad}"
        );
    }
    assert!(
        parse_interface_prefixes("lol").is_ok(),
        "matches lol*, not lo"
    );
    // 14 characters leave room for one of the interface's own; 15 do not.
    assert!(parse_interface_prefixes("abcdefghijklmn").is_ok());
    assert!(parse_interface_prefixes("abcdefghijklmno")
        .unwrap_err()
        .contains("1-14 characters"));
}

#[test]
fn inter_host_routes_parse_any_case_and_render_lower_case() {
    for (text, mode) in [
        ("direct", InterHostRoutes::Direct),
        ("BGP", InterHostRoutes::Bgp),
        (" None ", InterHostRoutes::None),
    ] {
        assert_eq!(InterHostRoutes::parse(text), Ok(mode), "{text}");
        assert_eq!(InterHostRoutes::parse(&mode.to_string()), Ok(mode));
    }
    assert_eq!(InterHostRoutes::Bgp.to_string(), "bgp");
    for bad in ["", "ospf", "bgp,direct", "direkt"] {
        assert!(
            InterHostRoutes::parse(bad)
                .unwrap_err()
                .contains("direct, bgp, none"),
            "{bad:?}"
        );
    }
}

#[test]
fn absolute_paths_are_required() {
    assert_eq!(
        parse_absolute_path(" /run/bird/bird.ctl "),
        Ok(PathBuf::from("/run/bird/bird.ctl"))
    );
    assert!(parse_absolute_path("bird.conf")
        .unwrap_err()
        .contains("absolute"));
    assert!(parse_absolute_path("./bird.conf").is_err());
    assert!(parse_absolute_path("  ").unwrap_err().contains("empty"));
    assert!(parse_absolute_path("/a\0b").unwrap_err().contains("NUL"));
}
