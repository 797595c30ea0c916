//! BIRD's control-socket replies, parsed (pure).
//!
//! Every reply line starts with a four-digit code followed by `-` (more
//! lines follow) or a space (the last line of the reply); a line starting
//! with a space continues the previous code. Codes `0xxx` are success,
//! `1xxx` table rows, `2xxx` table headers, `8xxx` run-time errors and
//! `9xxx` parse errors (BIRD's `doc/reply_codes`).

use std::net::IpAddr;

use margay_policy::bgp::PeerKind;

/// One line of a reply, with the code it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine {
    /// The four-digit code (inherited by continuation lines).
    pub code: u16,
    /// The text after the code and its separator.
    pub text: String,
    /// True on a line that starts with its own code (not a continuation).
    pub starts_code: bool,
}

/// How a raw line reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    /// `dddd-text`: more lines follow.
    More(u16, String),
    /// `dddd text`: the reply's last line.
    Last(u16, String),
    /// ` text`: continues the previous code.
    Continuation(String),
}

/// Parses one line (without its newline); `None` when it fits no form.
pub fn parse_line(line: &str) -> Option<LineKind> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if let Some(rest) = line.strip_prefix(' ') {
        return Some(LineKind::Continuation(rest.to_string()));
    }
    let (head, tail) = (line.get(..4)?, line.get(4..)?);
    if !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = head.parse().ok()?;
    let mut chars = tail.chars();
    match chars.next() {
        Some('-') => Some(LineKind::More(code, chars.as_str().to_string())),
        Some(' ') | None => Some(LineKind::Last(code, chars.as_str().to_string())),
        Some(_) => None,
    }
}

/// True for codes BIRD uses for errors (8xxx run-time, 9xxx parse).
pub fn is_error_code(code: u16) -> bool {
    (8000..10000).contains(&code)
}

/// Reply codes of a `configure` that took effect or was queued: 0003
/// reconfigured, 0004 in progress, 0005 queued, 0018 confirmed, 0019
/// nothing to do, 0020 configuration OK.
pub fn is_configure_success(code: u16) -> bool {
    matches!(code, 3 | 4 | 5 | 18 | 19 | 20)
}

/// One BGP protocol of `show protocols all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpSession {
    /// BIRD's protocol name (`Mesh_10_0_1_11`).
    pub name: String,
    /// The kind margay gave it, from the name prefix; `None` for a
    /// protocol margay did not name.
    pub kind: Option<PeerKind>,
    /// From `Neighbor address:`.
    pub neighbor: Option<IpAddr>,
    /// The protocol state: `up`, `start`, `down`, ...
    pub state: String,
    /// The BGP state: `Established`, `Active`, `Connect`, `Idle`, ...
    pub bgp_state: String,
    /// Since when it is in that state, as BIRD printed it.
    pub since: String,
    /// The Info column (BGP state and last error), spaces collapsed.
    pub info: String,
}

/// The peer kind encoded in a protocol name by the renderer.
pub fn kind_from_name(name: &str) -> Option<PeerKind> {
    [PeerKind::Mesh, PeerKind::Global, PeerKind::Node]
        .into_iter()
        .find(|k| {
            name.strip_prefix(k.protocol_prefix())
                .is_some_and(|rest| rest.starts_with('_'))
        })
}

/// True for `2024-05-01`: BIRD's long time formats put the date first.
fn looks_like_date(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() == 10 && b[4] == b'-' && b[7] == b'-'
}

/// Parses a `1002` row (`Name Proto Table State Since Info`); `None` for
/// a row that is not a BGP protocol.
fn parse_protocol_row(text: &str) -> Option<BgpSession> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (name, proto, state) = (*words.first()?, *words.get(1)?, *words.get(3)?);
    if proto != "BGP" {
        return None;
    }
    let mut rest = words.get(4..).unwrap_or_default();
    let since = match rest {
        [date, time, tail @ ..] if looks_like_date(date) => {
            rest = tail;
            format!("{date} {time}")
        }
        [time, tail @ ..] => {
            rest = tail;
            (*time).to_string()
        }
        [] => String::new(),
    };
    let info = rest.join(" ");
    Some(BgpSession {
        name: name.to_string(),
        kind: kind_from_name(name),
        neighbor: None,
        state: state.to_string(),
        bgp_state: rest.first().map(|s| s.to_string()).unwrap_or_default(),
        since,
        info,
    })
}

/// The BGP sessions in a `show protocols all` reply.
pub fn parse_bgp_sessions(lines: &[ReplyLine]) -> Vec<BgpSession> {
    let mut sessions = Vec::new();
    let mut current: Option<BgpSession> = None;
    for line in lines {
        if line.code == 1002 && line.starts_code {
            sessions.extend(current.take());
            current = parse_protocol_row(&line.text);
            continue;
        }
        let Some(session) = current.as_mut() else {
            continue;
        };
        let text = line.text.trim();
        if let Some(v) = text.strip_prefix("BGP state:") {
            session.bgp_state = v.trim().to_string();
        } else if let Some(v) = text.strip_prefix("Neighbor address:") {
            session.neighbor = v.trim().parse().ok();
        }
    }
    sessions.extend(current);
    sessions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A captured reply, as the socket sends it, into lines.
    fn lines_of(raw: &str) -> Vec<ReplyLine> {
        let mut out = Vec::new();
        let mut code = 0;
        for raw_line in raw.lines() {
            let (starts_code, text) = match parse_line(raw_line).expect("parses") {
                LineKind::More(c, t) | LineKind::Last(c, t) => {
                    code = c;
                    (true, t)
                }
                LineKind::Continuation(t) => (false, t),
            };
            out.push(ReplyLine {
                code,
                text,
                starts_code,
            });
        }
        out
    }

    #[test]
    fn line_forms() {
        assert_eq!(
            parse_line("0002-Reading configuration from a.conf"),
            Some(LineKind::More(
                2,
                "Reading configuration from a.conf".into()
            ))
        );
        assert_eq!(
            parse_line("0003 Reconfigured"),
            Some(LineKind::Last(3, "Reconfigured".into()))
        );
        assert_eq!(parse_line("0000 "), Some(LineKind::Last(0, String::new())));
        assert_eq!(parse_line("0000"), Some(LineKind::Last(0, String::new())));
        assert_eq!(
            parse_line("     Neighbor address: fd00::1"),
            Some(LineKind::Continuation(
                "    Neighbor address: fd00::1".into()
            ))
        );
        assert_eq!(parse_line("12a4 x"), None);
        assert_eq!(parse_line("1234x"), None);
        assert_eq!(parse_line("12"), None);
        assert_eq!(parse_line(""), None);
    }

    #[test]
    fn codes() {
        assert!(is_error_code(8002) && is_error_code(9001));
        assert!(!is_error_code(3) && !is_error_code(1002));
        for ok in [3, 4, 5, 18, 19, 20] {
            assert!(is_configure_success(ok), "{ok}");
        }
        assert!(!is_configure_success(8002) && !is_configure_success(6));
    }

    #[test]
    fn sessions_from_captured_show_protocols_all() {
        let lines = lines_of(include_str!("testdata/show_protocols_all.txt"));
        let sessions = parse_bgp_sessions(&lines);
        let names: Vec<&str> = sessions.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["Mesh_10_0_1_11", "Global_192_0_2_1", "Node_fd00__1"]
        );
        let mesh = &sessions[0];
        assert_eq!(mesh.kind, Some(PeerKind::Mesh));
        assert_eq!(mesh.neighbor, "10.0.1.11".parse().ok());
        assert_eq!(
            (mesh.state.as_str(), mesh.bgp_state.as_str()),
            ("up", "Established")
        );
        assert_eq!(mesh.since, "15:33:22.991");
        assert_eq!(mesh.info, "Established");
        let global = &sessions[1];
        assert_eq!(global.kind, Some(PeerKind::Global));
        assert_eq!(global.state, "start");
        assert_eq!(global.bgp_state, "Active");
        assert_eq!(global.info, "Active Socket: Network is unreachable");
        let node = &sessions[2];
        assert_eq!(node.kind, Some(PeerKind::Node));
        assert_eq!(node.neighbor, "fd00::1".parse().ok());
    }

    #[test]
    fn long_time_format_and_foreign_names() {
        let lines = lines_of(
            "2002-Name       Proto      Table      State  Since         Info\n\
             1002-upstream BGP --- up 2024-05-01 10:00:00 Established\n\
             1006-  BGP state:          Established\n \
             Neighbor address: 192.0.2.9\n\
             1002-kernel4 Kernel master4 up 2024-05-01 10:00:00\n\
             0000 \n",
        );
        let sessions = parse_bgp_sessions(&lines);
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        assert_eq!(sessions[0].kind, None);
        assert_eq!(sessions[0].since, "2024-05-01 10:00:00");
        assert_eq!(sessions[0].neighbor, "192.0.2.9".parse().ok());
        assert_eq!(kind_from_name("Meshy"), None);
        assert_eq!(kind_from_name("Node_10_0_0_1"), Some(PeerKind::Node));
    }

    #[test]
    fn configure_replies() {
        let ok = lines_of(include_str!("testdata/configure_ok.txt"));
        assert!(is_configure_success(ok.last().expect("line").code));
        let bad = lines_of(include_str!("testdata/configure_syntax_error.txt"));
        let last = bad.last().expect("line");
        assert!(is_error_code(last.code), "{last:?}");
        assert!(last.text.contains("syntax error"), "{last:?}");
    }
}
