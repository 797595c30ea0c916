//! Golden tests of the nftables netlink encoder; no root, no kernel.
//!
//! `golden/nft/batch.nft` is what the text transport renders for the ops
//! of [`cases::ops`] (a handful of representative sets, chains and rules),
//! and `golden/nft/batch.netlink` is what `nft --debug=netlink -f` printed
//! for that script, captured once with `golden/nft/capture.sh` (nftables
//! 1.0.6) and checked in. The tests:
//! * pin the script, so a change of the text transport asks for a new capture;
//! * render the rule messages of our netlink batch for the same ops in
//!   nft's debug form (`[ payload load 4b @ network header + 12 => reg 1 ]`)
//!   and compare them with the capture, expression by expression — where
//!   we deliberately emit a different but equivalent sequence, the test
//!   names the rule and holds our form (see [`DIFFERENCES`]);
//! * pin the whole batch byte for byte (`golden/nft/batch.hex`), which also
//!   covers what nft's listing leaves out (message headers, flags, sets,
//!   elements, chain hooks).
//!
//! Fingerprint comments are masked to `0123456789abcdef` (the capture's
//! comment), so the goldens do not depend on the fingerprint function.
//! `MARGAY_GOLDEN_WRITE=1` rewrites `batch.nft` and `batch.hex`; the
//! capture is only ever rewritten by `capture.sh`.

#[path = "nft_golden/cases.rs"]
mod cases;
#[path = "nft_golden/listing.rs"]
mod listing;

use std::path::PathBuf;

use margay_dataplane::firewall::nft::netlink::encode_batch;
use margay_dataplane::firewall::nft::render_batch;

/// The comment the capture's rules carry in place of fingerprints.
const MASK: &str = "0123456789abcdef";

/// Rules (index into [`cases::rules`]) whose expressions differ from what
/// nft emits for the same text, with our listing and why it is equivalent.
const DIFFERENCES: &[(usize, &str, &[&str])] = &[
    (
        4,
        "one port range: nft 1.0.6 emits `cmp gte` + `cmp lte`, we emit one `range eq` \
         over the same big-endian bounds; the kernel's range expression is the same \
         two comparisons (nft itself emits `range neq` for the negation, rule 5)",
        &[
            "inet margay margay-golden",
            "  [ meta load nfproto => reg 1 ]",
            "  [ cmp eq reg 1 0x00000002 ]",
            "  [ meta load l4proto => reg 1 ]",
            "  [ cmp eq reg 1 0x00000006 ]",
            "  [ payload load 2b @ transport header + 2 => reg 1 ]",
            "  [ range eq reg 1 0x0000401f 0x0000901f ]",
            "  [ immediate reg 0 drop ]",
            "  userdata = { \\x00\\x110123456789abcdef\\x00 }",
        ],
    ),
    (
        14,
        "a prefix on a byte boundary: nft loads only the prefix's bytes (2b of 10.1.0.0/16), \
         we load the whole address and mask it with the netmask; both compare the same \
         16 bits",
        &[
            "inet margay margay-golden",
            "  [ meta load nfproto => reg 1 ]",
            "  [ cmp eq reg 1 0x00000002 ]",
            "  [ payload load 4b @ network header + 12 => reg 1 ]",
            "  [ bitwise reg 1 = ( reg 1 & 0x0000ffff ) ^ 0x00000000 ]",
            "  [ cmp eq reg 1 0x0000010a ]",
            "  [ immediate reg 0 accept ]",
            "  userdata = { \\x00\\x110123456789abcdef\\x00 }",
        ],
    ),
];

fn golden(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/nft")
        .join(file)
}

fn read_golden(file: &str) -> String {
    std::fs::read_to_string(golden(file))
        .unwrap_or_else(|e| panic!("{file}: {e} (MARGAY_GOLDEN_WRITE=1 writes it)"))
}

fn writing() -> bool {
    std::env::var_os("MARGAY_GOLDEN_WRITE").is_some()
}

/// `text` with every rule's fingerprint comment replaced by [`MASK`].
fn masked(text: &str) -> String {
    cases::rules().iter().fold(text.to_owned(), |t, r| {
        t.replace(&format!("{:016x}", r.fingerprint()), MASK)
    })
}

fn masked_bytes(batch: &[u8]) -> Vec<u8> {
    let mut b = batch.to_vec();
    for r in cases::rules() {
        let fp = format!("{:016x}", r.fingerprint()).into_bytes();
        let mut at = 0;
        while let Some(i) = b[at..].windows(16).position(|w| w == fp.as_slice()) {
            b[at + i..at + i + 16].copy_from_slice(MASK.as_bytes());
            at += i + 16;
        }
    }
    b
}

fn hex_lines(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| {
            c.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        })
        .collect()
}

#[test]
fn the_script_is_the_one_the_capture_was_made_from() {
    let script = masked(&render_batch(&cases::ops()).expect("renders"));
    if writing() {
        std::fs::write(golden("batch.nft"), &script).expect("write batch.nft");
    }
    assert_eq!(
        script,
        read_golden("batch.nft"),
        "the text transport changed: rewrite batch.nft and run capture.sh"
    );
}

#[test]
fn the_batch_is_byte_for_byte_the_pinned_one() {
    let batch = encode_batch(&cases::ops()).expect("encodes");
    let hex = hex_lines(&masked_bytes(&batch));
    if writing() {
        std::fs::write(golden("batch.hex"), &hex).expect("write batch.hex");
    }
    let want = read_golden("batch.hex");
    let first = hex
        .lines()
        .zip(want.lines())
        .position(|(a, b)| a != b)
        .map(|i| format!("first difference at byte {}", i * 16));
    assert!(
        hex == want,
        "the encoding changed ({}): {}",
        first.unwrap_or_else(|| "length".to_owned()),
        "check it against nft (rule_expressions_match_the_capture), then rewrite batch.hex"
    );
}

#[test]
fn rule_expressions_match_the_capture() {
    let batch = encode_batch(&cases::ops()).expect("encodes");
    let ours = listing::rule_blocks(&masked_bytes(&batch));
    let nft = listing::captured_blocks(&read_golden("batch.netlink"));
    let rules = cases::rules().len();
    // The golden chain's rules, then the hook chain's jump.
    assert_eq!(nft.len(), rules + 1, "capture: {nft:#?}");
    assert_eq!(ours.len(), nft.len(), "ours: {ours:#?}");
    let mut wrong = Vec::new();
    for (i, (o, n)) in ours.iter().zip(&nft).enumerate() {
        let (want, why) = match DIFFERENCES.iter().find(|d| d.0 == i) {
            Some((_, why, want)) if o != n => (want.iter().map(|l| l.to_string()).collect(), *why),
            Some(_) => (Vec::new(), "now the same as nft: drop it from DIFFERENCES"),
            None => (n.clone(), "nft's"),
        };
        if *o != want {
            let rule = cases::rules()
                .get(i)
                .map(|r| format!("{r:?}"))
                .unwrap_or_default();
            wrong.push(format!(
                "rule {i} {rule}\n want ({why}):\n{}\n ours:\n{}",
                want.join("\n"),
                o.join("\n")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}
