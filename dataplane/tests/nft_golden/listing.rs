//! Our encoded batch as text in the form of `nft --debug=netlink`: for each
//! rule message the table and chain, then one `[ ... ]` line per expression
//! and the rule's userdata, the way libnftnl prints them.
//!
//! This reads the bytes with its own small netlink parser, independent of
//! the production decoder, and refuses what it does not know (an unknown
//! expression or attribute is printed as `?`, so it cannot match a capture).

use std::fmt::Write as _;

/// The rule blocks of an encoded batch, each as its lines.
pub fn rule_blocks(batch: &[u8]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (ty, payload) in messages(batch) {
        // NFT_MSG_NEWRULE of subsystem nf_tables (10).
        if ty != (10 << 8) | 6 {
            continue;
        }
        let a = attrs(payload.get(4..).unwrap_or(&[]));
        let mut block = vec![format!(
            "inet {} {}",
            text(find(&a, 1).unwrap_or(&[])),
            text(find(&a, 2).unwrap_or(&[]))
        )];
        for (_, e) in attrs(find(&a, 4).unwrap_or(&[])) {
            let e = attrs(e);
            let kind = text(find(&e, 1).unwrap_or(&[]));
            let data = attrs(find(&e, 2).unwrap_or(&[]));
            block.push(format!("  [ {} ]", expression(&kind, &data)));
        }
        if let Some(ud) = find(&a, 7) {
            block.push(format!("  userdata = {{ {} }}", escaped(ud)));
        }
        out.push(block);
    }
    out
}

/// The rule blocks of an `nft --debug=netlink` capture: a line naming
/// family, table and chain, then its expression and userdata lines.
pub fn captured_blocks(capture: &str) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut open = false;
    for line in capture.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        if words.len() == 3 && words[0] == "inet" && words[1] == "margay" {
            out.push(vec![line.to_owned()]);
            open = true;
        } else if open && (line.starts_with("  [") || line.starts_with("  userdata")) {
            if let Some(b) = out.last_mut() {
                b.push(line.to_owned());
            }
        } else {
            open = false;
        }
    }
    out
}

fn expression(kind: &str, a: &[(u16, &[u8])]) -> String {
    let reg = |t| be32(find(a, t).unwrap_or(&[]));
    let data = |t| find(a, t).map_or_else(|| "?".to_owned(), value);
    match kind {
        "meta" if find(a, 1).is_some() => {
            format!("meta load {} => reg {}", meta_key(reg(2)), reg(1))
        }
        "meta" => format!("meta set {} with reg {}", meta_key(reg(2)), reg(3)),
        "cmp" => format!("cmp {} reg {} {}", cmp_op(reg(2)), reg(1), data(3)),
        "payload" => format!(
            "payload load {}b @ {} header + {} => reg {}",
            reg(4),
            ["link", "network", "transport"]
                .get(reg(2) as usize)
                .unwrap_or(&"?"),
            reg(3),
            reg(1)
        ),
        "bitwise" => format!(
            "bitwise reg {} = ( reg {} & {} ) ^ {}",
            reg(2),
            reg(1),
            data(4),
            data(5)
        ),
        "lookup" => lookup(a),
        "range" => format!(
            "range {} reg {} {} {}",
            ["eq", "neq"].get(reg(2) as usize).unwrap_or(&"?"),
            reg(1),
            data(3),
            data(4)
        ),
        "ct" => format!(
            "ct load {} => reg {}",
            if reg(2) == 0 { "state" } else { "?" },
            reg(1)
        ),
        "immediate" => immediate(a),
        "log" => format!("log prefix {}", text(find(a, 2).unwrap_or(&[]))),
        "counter" => "counter pkts 0 bytes 0".to_owned(),
        "masq" => "masq ".to_owned(),
        _ => format!("? {kind}"),
    }
}

fn meta_key(k: u32) -> &'static str {
    match k {
        3 => "mark",
        6 => "iifname",
        7 => "oifname",
        15 => "nfproto",
        16 => "l4proto",
        _ => "?",
    }
}

fn cmp_op(op: u32) -> &'static str {
    ["eq", "neq", "lt", "lte", "gt", "gte"]
        .get(op as usize)
        .unwrap_or(&"?")
}

fn lookup(a: &[(u16, &[u8])]) -> String {
    let mut s = format!(
        "lookup reg {} set {} ",
        be32(find(a, 2).unwrap_or(&[])),
        text(find(a, 1).unwrap_or(&[]))
    );
    if let Some(f) = find(a, 5) {
        let _ = write!(s, "0x{:x} ", be32(f));
    }
    s.trim_end().to_owned()
}

fn immediate(a: &[(u16, &[u8])]) -> String {
    let dreg = be32(find(a, 1).unwrap_or(&[]));
    let verdict = find(a, 2)
        .and_then(|d| find(&attrs(d), 2))
        .map(attrs)
        .unwrap_or_default();
    let code = be32(find(&verdict, 1).unwrap_or(&[])) as i32;
    let chain = find(&verdict, 2).map(text).unwrap_or_default();
    let v = match code {
        0 => "drop".to_owned(),
        1 => "accept".to_owned(),
        -3 => format!("jump -> {chain}"),
        -4 => format!("goto -> {chain}"),
        -5 => "return".to_owned(),
        _ => "?".to_owned(),
    };
    format!("immediate reg {dreg} {v}")
}

/// A data attribute (`NFTA_DATA_VALUE` inside) as libnftnl prints register
/// data: 32-bit words in host order, the last one zero-padded.
fn value(nest: &[u8]) -> String {
    let Some(v) = find(&attrs(nest), 1) else {
        return "?".to_owned();
    };
    v.chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            format!("0x{:08x}", u32::from_ne_bytes(w))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Userdata bytes as nft prints them: printable ASCII as is, the rest `\xNN`.
fn escaped(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                char::from(c).to_string()
            } else {
                format!("\\x{c:02x}")
            }
        })
        .collect()
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn be32(b: &[u8]) -> u32 {
    b.get(..4)
        .and_then(|x| x.try_into().ok())
        .map_or(u32::MAX, u32::from_be_bytes)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// (type, payload after the 16-byte header) of each netlink message.
fn messages(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = buf.get(at..at + 16) {
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let ty = u16::from_ne_bytes([h[4], h[5]]);
        let Some(payload) = buf.get(at + 16..at + len) else {
            break;
        };
        out.push((ty, payload));
        at += align4(len.max(16));
    }
    out
}

/// (type without flags, payload) of each attribute.
fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = buf.get(at..at + 4) {
        let len = usize::from(u16::from_ne_bytes([h[0], h[1]]));
        let ty = u16::from_ne_bytes([h[2], h[3]]) & 0x3fff;
        let Some(payload) = buf.get(at + 4..at + len.max(4)) else {
            break;
        };
        out.push((ty, payload));
        at += align4(len.max(4));
    }
    out
}

fn find<'a>(a: &[(u16, &'a [u8])], ty: u16) -> Option<&'a [u8]> {
    a.iter().find(|(t, _)| *t == ty).map(|(_, p)| *p)
}
