//! The value types of margay's settings and their text parsers.
//!
//! Every setting arrives as text (a flag, an environment variable, a TOML
//! scalar rendered as text, a datastore string). Each parser here takes that
//! text and returns the typed value or a short reason; the caller adds which
//! setting and which source the text came from. Every type also renders back
//! to canonical text that its parser accepts (used for `margay check` and for
//! the defaults table).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Why a text could not be parsed; the caller names setting and source.
pub type Reason = String;

/// Which firewall backend programs the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataplaneKind {
    /// nftables (the default).
    Nftables,
    /// iptables + ipset.
    Iptables,
    /// No firewall at all (routes are still programmed).
    None,
}

impl DataplaneKind {
    /// Parses `nftables` (or `nft`), `iptables` or `none`, any case.
    pub fn parse(text: &str) -> Result<Self, Reason> {
        match text.trim().to_ascii_lowercase().as_str() {
            "nftables" | "nft" => Ok(DataplaneKind::Nftables),
            "iptables" => Ok(DataplaneKind::Iptables),
            "none" => Ok(DataplaneKind::None),
            _ => Err("expected one of nftables, iptables, none".into()),
        }
    }
}

impl fmt::Display for DataplaneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataplaneKind::Nftables => "nftables",
            DataplaneKind::Iptables => "iptables",
            DataplaneKind::None => "none",
        })
    }
}

/// How routes to workloads on other hosts are made (`InterHostRoutes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterHostRoutes {
    /// A route via the other host's `bird_ip` (the default; hosts share one L2 segment).
    Direct,
    /// BIRD learns them from its BGP peers; margay programs none itself.
    Bgp,
    /// No routes to other hosts' workloads at all.
    None,
}

impl InterHostRoutes {
    /// Parses `direct`, `bgp` or `none`, any case.
    pub fn parse(text: &str) -> Result<Self, Reason> {
        match text.trim().to_ascii_lowercase().as_str() {
            "direct" => Ok(InterHostRoutes::Direct),
            "bgp" => Ok(InterHostRoutes::Bgp),
            "none" => Ok(InterHostRoutes::None),
            _ => Err("expected one of direct, bgp, none".into()),
        }
    }
}

impl fmt::Display for InterHostRoutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InterHostRoutes::Direct => "direct",
            InterHostRoutes::Bgp => "bgp",
            InterHostRoutes::None => "none",
        })
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// Human-readable text (the default).
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json`, any case.
    pub fn parse(text: &str) -> Result<Self, Reason> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json".into()),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The least severe level that is still logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Informational (the default).
    Info,
    /// Debugging detail.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// Parses a level, any case. Besides `error`, `warn`, `info`, `debug`
    /// and `trace` it takes Felix's `LogSeverityScreen` spellings: `warning`,
    /// `critical` and `fatal` (the last two mean `error`).
    pub fn parse(text: &str) -> Result<Self, Reason> {
        match text.trim().to_ascii_lowercase().as_str() {
            "error" | "critical" | "fatal" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err("expected one of error, warn, info, debug, trace".into()),
        }
    }

    /// The level as a `tracing` filter directive (`info`, `debug`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to traffic from a workload to its own host
/// (`DefaultEndpointToHostAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointToHostAction {
    /// Drop it (the default).
    Drop,
    /// Run the workload's outbound policy, then the host's own rules.
    Return,
    /// Run the workload's outbound policy, then accept.
    Accept,
}

impl EndpointToHostAction {
    /// Parses `DROP`, `RETURN` or `ACCEPT`, any case.
    pub fn parse(text: &str) -> Result<Self, Reason> {
        match text.trim().to_ascii_uppercase().as_str() {
            "DROP" => Ok(EndpointToHostAction::Drop),
            "RETURN" => Ok(EndpointToHostAction::Return),
            "ACCEPT" => Ok(EndpointToHostAction::Accept),
            _ => Err("expected one of DROP, RETURN, ACCEPT".into()),
        }
    }
}

impl fmt::Display for EndpointToHostAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndpointToHostAction::Drop => "DROP",
            EndpointToHostAction::Return => "RETURN",
            EndpointToHostAction::Accept => "ACCEPT",
        })
    }
}

/// The transport protocol of a failsafe port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortProtocol {
    /// TCP (the default when a port is written without protocol).
    Tcp,
    /// UDP.
    Udp,
}

impl PortProtocol {
    /// The IP protocol number (tcp 6, udp 17).
    pub fn number(self) -> u8 {
        match self {
            PortProtocol::Tcp => 6,
            PortProtocol::Udp => 17,
        }
    }
}

impl fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        })
    }
}

/// One failsafe port, as in Felix's `tcp:22`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtoPort {
    /// tcp or udp.
    pub protocol: PortProtocol,
    /// 1-65535.
    pub port: u16,
}

impl fmt::Display for ProtoPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol, self.port)
    }
}

/// Parses Felix's failsafe port list: comma-separated `tcp:<port>`,
/// `udp:<port>` or a bare `<port>` (TCP), spaces allowed; `none` or empty text
/// is the empty list. Duplicates are dropped, order is kept.
pub fn parse_port_list(text: &str) -> Result<Vec<ProtoPort>, Reason> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut out: Vec<ProtoPort> = Vec::new();
    for item in text.split(',').map(str::trim) {
        let entry = parse_proto_port(item)?;
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

fn parse_proto_port(item: &str) -> Result<ProtoPort, Reason> {
    let (proto, port) = match item.split_once(':') {
        Some((proto, port)) => (proto.trim(), port.trim()),
        None => ("tcp", item),
    };
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => PortProtocol::Tcp,
        "udp" => PortProtocol::Udp,
        _ => return Err(format!("{item:?}: protocol must be tcp or udp")),
    };
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(ProtoPort { protocol, port }),
        _ => Err(format!("{item:?}: port must be a number from 1 to 65535")),
    }
}

/// Renders a port list in the form [`parse_port_list`] reads (`none` when empty).
pub fn render_port_list(ports: &[ProtoPort]) -> String {
    if ports.is_empty() {
        return "none".into();
    }
    join(ports.iter().map(ToString::to_string))
}

/// Parses a hostname as used in datastore keys: 1-253 printable characters,
/// no `/` and no whitespace.
pub fn parse_hostname(text: &str) -> Result<String, Reason> {
    let name = text.trim();
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 253 {
        return Err("must be at most 253 characters".into());
    }
    if name
        .chars()
        .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err("must not contain '/', whitespace or control characters".into());
    }
    Ok(name.to_owned())
}

/// Parses a comma-separated list of etcd URLs (`http://` or `https://`,
/// host and optional port, no path). At least one is required.
pub fn parse_endpoints(text: &str) -> Result<Vec<String>, Reason> {
    let mut out: Vec<String> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let url = parse_endpoint(item)?;
        if !out.contains(&url) {
            out.push(url);
        }
    }
    if out.is_empty() {
        return Err("at least one endpoint is required".into());
    }
    Ok(out)
}

fn parse_endpoint(item: &str) -> Result<String, Reason> {
    let rest = item
        .strip_prefix("http://")
        .or_else(|| item.strip_prefix("https://"))
        .ok_or_else(|| format!("{item:?}: must start with http:// or https://"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        return Err(format!(
            "{item:?}: must be scheme://host[:port] with no path"
        ));
    }
    if authority
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("{item:?}: must not contain whitespace"));
    }
    check_port_suffix(item, authority)?;
    Ok(item.strip_suffix('/').unwrap_or(item).to_owned())
}

/// Checks the `:port` of `host:port`, `[v6]:port`, `host` or `[v6]`.
fn check_port_suffix(item: &str, authority: &str) -> Result<(), Reason> {
    let port = if let Some(v6) = authority.strip_prefix('[') {
        let (_, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{item:?}: unclosed '[' in host"))?;
        match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("{item:?}: junk after ']'"))?,
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, p)) if !host.is_empty() => Some(p),
            Some(_) => return Err(format!("{item:?}: missing host")),
            None => None,
        }
    };
    match port {
        Some(p) if p.parse::<u16>().map(|n| n == 0).unwrap_or(true) => {
            Err(format!("{item:?}: port must be a number from 1 to 65535"))
        }
        _ => Ok(()),
    }
}

/// Parses an optional file path: empty text means "not set".
pub fn parse_optional_path(text: &str) -> Result<Option<PathBuf>, Reason> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.contains('\0') {
        return Err("must not contain NUL".into());
    }
    Ok(Some(PathBuf::from(text)))
}

/// Parses a required absolute path (`/etc/bird/bird.conf`): not empty, starting
/// with `/`, no NUL. A relative path would depend on the agent's working
/// directory, which a service manager does not promise.
pub fn parse_absolute_path(text: &str) -> Result<PathBuf, Reason> {
    let text = text.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.contains('\0') {
        return Err("must not contain NUL".into());
    }
    if !text.starts_with('/') {
        return Err("must be an absolute path (start with '/')".into());
    }
    Ok(PathBuf::from(text))
}

/// Parses the etcd key prefix (`/calico`): absolute, no empty segments, no
/// whitespace; one trailing `/` is dropped.
pub fn parse_prefix(text: &str) -> Result<String, Reason> {
    let text = text.trim();
    let trimmed = text.strip_suffix('/').unwrap_or(text);
    if !trimmed.starts_with('/') || trimmed.len() < 2 {
        return Err("must start with '/' and name at least one segment, e.g. /calico".into());
    }
    // `/calico//` keeps a trailing `/` after the one dropped: an empty
    // last segment, and keys like `/calico//v1`.
    if trimmed.contains("//") || trimmed.ends_with('/') {
        return Err("must not contain empty segments".into());
    }
    if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".into());
    }
    Ok(trimmed.to_owned())
}

/// Longest duration a seconds setting may hold (one day).
const MAX_SECONDS: f64 = 86_400.0;

/// Parses a non-negative number of seconds, fractions allowed (`30`, `0.5`).
/// Zero is allowed (it disables what the setting times).
pub fn parse_seconds(text: &str) -> Result<Duration, Reason> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| "expected a number of seconds".to_string())?;
    if !secs.is_finite() || !(0.0..=MAX_SECONDS).contains(&secs) {
        return Err(format!("must be between 0 and {MAX_SECONDS} seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Renders a duration as seconds (`30`, `0.5`), the form [`parse_seconds`] reads.
pub fn render_seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        d.as_secs_f64().to_string()
    }
}

/// Parses a whole number of seconds within `min..=86400`.
pub fn parse_whole_seconds(text: &str, min: u64) -> Result<u64, Reason> {
    match text.trim().parse::<u64>() {
        Ok(n) if (min..=MAX_SECONDS as u64).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a whole number of seconds from {min} to {}",
            MAX_SECONDS as u64
        )),
    }
}

/// Parses `HOST:PORT` where HOST is an IP address (IPv6 in brackets) or
/// `localhost` (127.0.0.1). Port 0 asks the kernel for a free port.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, Reason> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
    }
    Err("expected HOST:PORT with an IP address (IPv6 in brackets) or localhost".into())
}

/// Parses a boolean: `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`, any case.
pub fn parse_bool(text: &str) -> Result<bool, Reason> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "t" | "y" => Ok(true),
        "false" | "no" | "off" | "0" | "f" | "n" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// The loopback interface, which no workload interface prefix may match.
pub const LOOPBACK: &str = "lo";

/// Parses the interface prefix list (`cali,tap`): each 1-14 characters of
/// `[A-Za-z0-9_-]`; at least one. An interface name has at most 15
/// characters, and a prefix must leave room for at least one of its own (it
/// is also what iptables' `prefix+` wildcard can hold).
pub fn parse_interface_prefixes(text: &str) -> Result<Vec<String>, Reason> {
    let mut out: Vec<String> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ok = item.len() <= 14
            && item
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !ok {
            return Err(format!(
                "{item:?}: a prefix is 1-14 characters of letters, digits, '_' and '-'"
            ));
        }
        if LOOPBACK.starts_with(item) {
            return Err(format!(
                "{item:?} matches the loopback interface {LOOPBACK:?}: margay would treat \
                 the host's own loopback traffic (its /livez too) as workload traffic"
            ));
        }
        if !out.iter().any(|p| p == item) {
            out.push(item.to_owned());
        }
    }
    if out.is_empty() {
        return Err("at least one prefix is required".into());
    }
    Ok(out)
}

/// Parses the netlink route protocol number we stamp on our routes. 0-4 are
/// the kernel's own (unspec, redirect, kernel, boot, static) and are refused:
/// we would adopt and delete routes that are not ours.
pub fn parse_route_protocol(text: &str) -> Result<u8, Reason> {
    match text.trim().parse::<u8>() {
        Ok(n) if n >= 5 => Ok(n),
        Ok(_) => Err("0-4 are reserved by the kernel; use 5-255".into()),
        Err(_) => Err("expected a number from 5 to 255".into()),
    }
}

/// Joins rendered items with `,`.
pub fn join<I: Iterator<Item = String>>(items: I) -> String {
    items.collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests;
