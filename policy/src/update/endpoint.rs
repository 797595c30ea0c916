//! Workload and host endpoint documents.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value as Json;

use crate::model::{EndpointState, HostEndpoint, Labels, WorkloadEndpoint};
use crate::names::{InterfaceName, MacAddr};

use super::special::{address_class, gateway_class, refuse};

use super::fields::{
    addr_of_family, labels, list, opt, opt_list, parse_net, parse_object, profile_ids, show,
    string, type_name, Object,
};

/// Parses a workload endpoint (`.../workload/<orch>/<wl>/endpoint/<id>`).
pub fn workload(text: &str) -> Result<WorkloadEndpoint, String> {
    let obj = parse_object(text)?;
    let ipv4_nets = host_nets(&obj, "ipv4_nets", "an IPv4 /32", |n| match n {
        IpNet::V4(n) if n.prefix_len() == 32 => Some(n),
        _ => None,
    })?;
    let ipv6_nets = host_nets(&obj, "ipv6_nets", "an IPv6 /128", |n| match n {
        IpNet::V6(n) if n.prefix_len() == 128 => Some(n),
        _ => None,
    })?;
    let own4: Vec<IpAddr> = ipv4_nets.iter().map(|n| IpAddr::V4(n.addr())).collect();
    let own6: Vec<IpAddr> = ipv6_nets.iter().map(|n| IpAddr::V6(n.addr())).collect();
    check_nat(&obj, "ipv4_nat", 4, &own4)?;
    check_nat(&obj, "ipv6_nat", 6, &own6)?;
    Ok(WorkloadEndpoint {
        state: state(&obj)?,
        name: interface(opt(&obj, "name").ok_or("name is required")?)?,
        mac: opt(&obj, "mac").map(mac).transpose()?,
        profile_ids: profile_ids(&obj)?,
        ipv4_nets,
        ipv6_nets,
        ipv4_gateway: gateway(&obj, "ipv4_gateway", 4)?,
        ipv6_gateway: gateway(&obj, "ipv6_gateway", 6)?,
        labels: endpoint_labels(&obj)?,
    })
}

/// Parses a host endpoint (`.../host/<host>/endpoint/<id>`): it must name an
/// interface or list at least one expected address.
pub fn host(text: &str) -> Result<HostEndpoint, String> {
    let obj = parse_object(text)?;
    let ep = HostEndpoint {
        name: opt(&obj, "name").map(interface).transpose()?,
        expected_ipv4_addrs: addr_list(&obj, "expected_ipv4_addrs", 4)?,
        expected_ipv6_addrs: addr_list(&obj, "expected_ipv6_addrs", 6)?,
        profile_ids: profile_ids(&obj)?,
        labels: endpoint_labels(&obj)?,
    };
    if ep.name.is_none() && ep.expected_ipv4_addrs.is_empty() && ep.expected_ipv6_addrs.is_empty() {
        return Err(
            "a host endpoint needs a name or expected_ipv4_addrs/expected_ipv6_addrs".into(),
        );
    }
    Ok(ep)
}

fn state(obj: &Object) -> Result<EndpointState, String> {
    let v = opt(obj, "state").ok_or("state is required")?;
    match string(v, "state")? {
        "active" => Ok(EndpointState::Active),
        "inactive" => Ok(EndpointState::Inactive),
        other => Err(format!("state {} is not active or inactive", show(other))),
    }
}

fn interface(v: &Json) -> Result<InterfaceName, String> {
    let s = string(v, "name")?;
    InterfaceName::new(s).map_err(|_| {
        format!(
            "name: {} is not an interface name (^[A-Za-z0-9_-]{{1,15}}$)",
            show(s)
        )
    })
}

fn mac(v: &Json) -> Result<MacAddr, String> {
    let s = string(v, "mac")?;
    MacAddr::parse(s).map_err(|_| {
        format!(
            "mac: {} is not a MAC address (aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff)",
            show(s)
        )
    })
}

fn endpoint_labels(obj: &Object) -> Result<Labels, String> {
    opt(obj, "labels").map_or(Ok(Labels::new()), |v| labels(v, "labels"))
}

/// `ipv4_nets` / `ipv6_nets`: host nets of one family, picked by `pick`.
fn host_nets<T>(
    obj: &Object,
    name: &str,
    expected: &str,
    pick: fn(IpNet) -> Option<T>,
) -> Result<Vec<T>, String> {
    opt_list(obj, name)?
        .iter()
        .enumerate()
        .map(|(n, v)| {
            let what = format!("{name}[{n}]");
            let net = parse_net(string(v, &what)?).map_err(|e| format!("{what}: {e}"))?;
            let host = pick(net).ok_or_else(|| format!("{what}: {net} is not {expected}"))?;
            refuse(&what, net.addr(), address_class)?;
            Ok(host)
        })
        .collect()
}

/// `ipv4_gateway` / `ipv6_gateway`: an address of the family (link-local
/// allowed, other special-purpose addresses not), or null/absent.
fn gateway(obj: &Object, name: &str, version: u8) -> Result<Option<IpAddr>, String> {
    let Some(v) = opt(obj, name) else {
        return Ok(None);
    };
    let addr = addr_of_family(v, version, name)?;
    refuse(name, addr, gateway_class)?;
    Ok(Some(addr))
}

/// `expected_ipv4_addrs` / `expected_ipv6_addrs`.
fn addr_list(obj: &Object, name: &str, version: u8) -> Result<Vec<IpAddr>, String> {
    opt_list(obj, name)?
        .iter()
        .enumerate()
        .map(|(n, v)| addr_of_family(v, version, &format!("{name}[{n}]")))
        .collect()
}

/// `ipv4_nat` / `ipv6_nat` (floating IPs, programmed in a later milestone):
/// validated now so a document that will need them is never half-accepted.
/// Each entry is `{"int_ip": <one of the endpoint's addresses>, "ext_ip": <address>}`.
fn check_nat(obj: &Object, name: &str, version: u8, own: &[IpAddr]) -> Result<(), String> {
    let Some(v) = opt(obj, name) else {
        return Ok(());
    };
    for (n, entry) in list(v, name)?.iter().enumerate() {
        let what = format!("{name}[{n}]");
        let e = entry
            .as_object()
            .ok_or_else(|| format!("{what} must be an object, found {}", type_name(entry)))?;
        let field = |f: &str| opt(e, f).ok_or_else(|| format!("{what}.{f} is required"));
        let int_ip = addr_of_family(field("int_ip")?, version, &format!("{what}.int_ip"))?;
        let ext_what = format!("{what}.ext_ip");
        let ext_ip = addr_of_family(field("ext_ip")?, version, &ext_what)?;
        refuse(&ext_what, ext_ip, address_class)?;
        if !own.contains(&int_ip) {
            return Err(format!(
                "{what}.int_ip {int_ip} is not one of the endpoint's addresses"
            ));
        }
    }
    Ok(())
}
