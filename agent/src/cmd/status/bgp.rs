//! The BGP part of `margay status --bird-socket PATH`: this host's BGP
//! sessions as BIRD reports them, in the shape `calicoctl status` printed
//! (one table per address family: peer address, peer type, state, since,
//! info).
//!
//! ```text
//! IPv4 BGP status (BIRD at /run/bird/bird.ctl)
//! PEER ADDRESS  PEER TYPE          STATE  SINCE         INFO
//! 10.0.1.11     node-to-node mesh  up     15:33:22.991  Established
//! 192.0.2.1     global             start  15:33:22.234  Active Socket: Connection refused
//!
//! IPv6 BGP status (BIRD at /run/bird/bird.ctl)
//! no IPv6 peers
//! ```
//!
//! BGP protocols margay did not configure (names without its `Mesh_`,
//! `Global_`, `Node_` prefixes) are listed with type `other`. Rendering is
//! pure; [`read_sessions`] talks to BIRD.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use margay_dataplane::bird::control::{BgpSession, BirdControl, BirdError};

use crate::logging::sanitize;

/// This host's BGP sessions, read from BIRD's control socket.
pub async fn read_sessions(socket: &Path) -> Result<Vec<BgpSession>, BirdError> {
    BirdControl::connect(socket).await?.bgp_sessions().await
}

/// The two tables (IPv4, IPv6) for `sessions`.
pub fn render_sessions(sessions: &[BgpSession], socket: &Path) -> String {
    let mut out = String::new();
    for (family, v6) in [("IPv4", false), ("IPv6", true)] {
        let _ = writeln!(
            out,
            "\n{family} BGP status (BIRD at {})",
            sanitize(&socket.display().to_string())
        );
        let rows: Vec<Vec<String>> = sessions
            .iter()
            .filter(|s| is_v6(s) == v6)
            .map(session_row)
            .collect();
        if rows.is_empty() {
            let _ = writeln!(out, "no {family} peers");
            continue;
        }
        out.push_str(&aligned(
            &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
            rows,
        ));
    }
    out
}

/// IPv6 by neighbour address; a session without one counts as IPv6 when
/// its name holds an IPv6 address (`Node_fd00__1`).
fn is_v6(session: &BgpSession) -> bool {
    match session.neighbor {
        Some(IpAddr::V6(_)) => true,
        Some(IpAddr::V4(_)) => false,
        None => session.name.contains("__"),
    }
}

fn session_row(session: &BgpSession) -> Vec<String> {
    vec![
        session
            .neighbor
            .map_or_else(|| sanitize(&session.name).into_owned(), |a| a.to_string()),
        session.kind.map_or("other", |k| k.describe()).to_string(),
        sanitize(&session.state).into_owned(),
        sanitize(&session.since).into_owned(),
        sanitize(&session.info).into_owned(),
    ]
}

/// Left-aligned columns, two spaces apart, trailing blanks trimmed.
fn aligned(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut all = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    all.extend(rows);
    let widths: Vec<usize> = (0..header.len())
        .map(|c| all.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in all {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_policy::bgp::PeerKind;

    fn session(name: &str, kind: Option<PeerKind>, neighbor: &str, info: &str) -> BgpSession {
        BgpSession {
            name: name.to_string(),
            kind,
            neighbor: neighbor.parse().ok(),
            state: if info == "Established" { "up" } else { "start" }.to_string(),
            bgp_state: info.split(' ').next().unwrap_or_default().to_string(),
            since: "15:33:22.991".to_string(),
            info: info.to_string(),
        }
    }

    #[test]
    fn sessions_are_split_by_family_with_calicoctl_peer_types() {
        let sessions = vec![
            session(
                "Mesh_10_0_1_11",
                Some(PeerKind::Mesh),
                "10.0.1.11",
                "Established",
            ),
            session(
                "Global_192_0_2_1",
                Some(PeerKind::Global),
                "192.0.2.1",
                "Active Socket: Connection refused",
            ),
            session("Node_fd00__1", Some(PeerKind::Node), "fd00::1", "Connect"),
            session("upstream", None, "192.0.2.9", "Established"),
        ];
        let text = render_sessions(&sessions, Path::new("/run/bird/bird.ctl"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "IPv4 BGP status (BIRD at /run/bird/bird.ctl)");
        assert!(
            lines[2].starts_with("PEER ADDRESS  PEER TYPE          STATE"),
            "{text}"
        );
        assert!(
            lines[3]
                .starts_with("10.0.1.11     node-to-node mesh  up     15:33:22.991  Established"),
            "{text}"
        );
        assert!(lines[4].contains("global") && lines[4].ends_with("Connection refused"));
        assert!(lines[5].starts_with("192.0.2.9     other"), "{text}");
        assert_eq!(lines[7], "IPv6 BGP status (BIRD at /run/bird/bird.ctl)");
        assert!(
            lines[9].starts_with("fd00::1       node specific"),
            "{text}"
        );
    }

    #[test]
    fn no_peers_says_so() {
        let text = render_sessions(&[], Path::new("/s"));
        assert!(
            text.contains("no IPv4 peers") && text.contains("no IPv6 peers"),
            "{text}"
        );
    }
}
