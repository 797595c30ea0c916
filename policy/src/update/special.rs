//! Special-purpose addresses that no workload and no host route may use.
//!
//! A workload address becomes a route on every host (`<ip> dev <iface>` here,
//! `<ip> via <bird_ip>` elsewhere) and a member of address sets, so one of
//! these in a document would take over the host's own traffic: loopback,
//! the unspecified address (`0.0.0.0/8` "this network", `::`), multicast,
//! the limited broadcast, link-local (the host's own link: `169.254.1.1` is
//! the workloads' next hop, `fe80::/10` every interface's) and IPv4-mapped
//! IPv6 (`::ffff:0:0/96`, an IPv4 address in disguise). A document naming
//! one is invalid as a whole, like any other invalid document.
//!
//! Gateways are next hops the workload uses, not routes: link-local is their
//! normal form (`fe80::1`, `169.254.1.1`), so [`gateway_class`] allows it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The special class of `addr` when a workload or host may not use it as
/// its own address, e.g. `"loopback"`.
pub fn address_class(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(a) => v4_class(a, true),
        IpAddr::V6(a) => v6_class(a, true),
    }
}

/// The special class of `addr` when it may not be a workload's gateway
/// (like [`address_class`], but link-local is allowed).
pub fn gateway_class(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(a) => v4_class(a, false),
        IpAddr::V6(a) => v6_class(a, false),
    }
}

fn v4_class(a: Ipv4Addr, link_local: bool) -> Option<&'static str> {
    if a.octets()[0] == 0 {
        Some("unspecified (0.0.0.0/8)")
    } else if a.is_loopback() {
        Some("loopback (127.0.0.0/8)")
    } else if a.is_multicast() {
        Some("multicast (224.0.0.0/4)")
    } else if a.is_broadcast() {
        Some("broadcast (255.255.255.255)")
    } else if link_local && a.is_link_local() {
        Some("link-local (169.254.0.0/16)")
    } else {
        None
    }
}

fn v6_class(a: Ipv6Addr, link_local: bool) -> Option<&'static str> {
    let first = a.segments()[0];
    if a.is_unspecified() {
        Some("unspecified (::)")
    } else if a.is_loopback() {
        Some("loopback (::1)")
    } else if a.is_multicast() {
        Some("multicast (ff00::/8)")
    } else if a.to_ipv4_mapped().is_some() {
        Some("IPv4-mapped (::ffff:0:0/96)")
    } else if link_local && first & 0xffc0 == 0xfe80 {
        Some("link-local (fe80::/10)")
    } else {
        None
    }
}

/// `Err` naming `what`, the address and its class when `class` has one.
pub fn refuse(
    what: &str,
    addr: IpAddr,
    class: fn(IpAddr) -> Option<&'static str>,
) -> Result<(), String> {
    match class(addr) {
        Some(c) => Err(format!("{what}: {addr} is a special-purpose address: {c}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<&'static str> {
        address_class(s.parse().expect("ip"))
    }

    #[test]
    fn every_special_class_is_named_and_ordinary_addresses_pass() {
        for (addr, want) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("169.254.1.1", "link-local"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("ff02::1", "multicast"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("::ffff:10.0.0.1", "IPv4-mapped"),
        ] {
            let got = class(addr).unwrap_or_else(|| panic!("{addr} passed"));
            assert!(got.starts_with(want), "{addr}: {got}");
        }
        for addr in [
            "10.0.0.1",
            "198.19.0.2",
            "1.0.0.0",
            "223.255.255.255",
            "255.255.255.254",
            "169.253.0.1",
            "fd00::1",
            "2001:db8::1",
            "dead::beef",
            "fec0::1",
        ] {
            assert_eq!(class(addr), None, "{addr}");
        }
    }

    #[test]
    fn gateways_may_be_link_local() {
        assert_eq!(gateway_class("fe80::1".parse().expect("ip")), None);
        assert_eq!(gateway_class("169.254.1.1".parse().expect("ip")), None);
        assert!(gateway_class("127.0.0.1".parse().expect("ip")).is_some());
        assert!(gateway_class("::".parse().expect("ip")).is_some());
    }
}
