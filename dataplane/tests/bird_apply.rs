//! `bird::apply` against a real BIRD 2 in a test network namespace.
//!
//! Each test starts its own BIRD (socket and pid file in a temp dir) and
//! checks what BIRD runs through its control socket: the BGP protocols of
//! `show protocols all` and the "Last reconfiguration" of `show status`.

use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use ipnet::Ipv4Net;
use margay_dataplane::bird::apply::{ApplyOutcome, BirdConfigApplier, RejectStage};
use margay_dataplane::bird::control::BirdControl;
use margay_dataplane::bird::render::render;
use margay_policy::bgp::{AsNumber, BgpConfig, BgpPeer, PeerKind};
use margay_tests::bird::{bird_binary, require_bird, BirdDir, TestBird};
use margay_tests::netns::{require_root, TestNetns};

/// What BIRD runs before margay writes anything.
const PLACEHOLDER: &str = "router id 10.9.9.9;\nprotocol device {}\n";

/// A configuration with one mesh peer per address in `peers`.
fn config_with_peers(peers: &[[u8; 4]]) -> String {
    let net: Ipv4Net = "10.65.0.0/16".parse().expect("net");
    render(&BgpConfig {
        router_id: Ipv4Addr::new(10, 0, 1, 10),
        local_as: AsNumber::new(64511).expect("AS"),
        source_v4: Ipv4Addr::new(10, 0, 1, 10),
        source_v6: None,
        peers: peers
            .iter()
            .map(|p| BgpPeer {
                kind: PeerKind::Mesh,
                address: Ipv4Addr::from(*p).into(),
                as_num: AsNumber::new(64511).expect("AS"),
            })
            .collect(),
        pools_v4: vec![net],
        pools_v6: vec![],
        local_v4: vec![],
        local_v6: vec![],
        workload_interface_prefixes: vec!["cali".to_string()],
    })
}

fn applier(dir: &BirdDir) -> BirdConfigApplier {
    BirdConfigApplier::new(
        dir.config(),
        dir.socket(),
        bird_binary().expect("bird installed"),
    )
}

/// The names of the BGP protocols BIRD runs.
async fn protocols(socket: &Path) -> Vec<String> {
    let mut control = BirdControl::connect(socket).await.expect("connect");
    let sessions = control.bgp_sessions().await.expect("show protocols");
    sessions.into_iter().map(|s| s.name).collect()
}

/// BIRD's "Last reconfiguration on ..." line, if it ever reconfigured.
async fn last_reconfiguration(socket: &Path) -> Option<String> {
    let mut control = BirdControl::connect(socket).await.expect("connect");
    let lines = control.command("show status").await.expect("show status");
    lines
        .iter()
        .find(|l| l.text.contains("Last reconfiguration"))
        .map(|l| l.text.clone())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read config")
}

fn ready(test: &str) -> bool {
    require_root(test) && require_bird(test)
}

#[tokio::test]
async fn a_changed_text_is_written_and_reloaded_an_unchanged_one_is_not() {
    if !ready("a_changed_text_is_written_and_reloaded_an_unchanged_one_is_not") {
        return;
    }
    let ns = TestNetns::new("bird-apply");
    let dir = BirdDir::new("apply");
    dir.write_config(PLACEHOLDER);
    let bird = TestBird::start(&ns, &dir);
    let mut applier = applier(&dir);
    let text = config_with_peers(&[[10, 0, 1, 11], [10, 0, 2, 10]]);

    assert_eq!(
        applier.apply(&text).await.expect("apply"),
        ApplyOutcome::Reloaded
    );
    assert_eq!(read(&dir.config()), text);
    assert_eq!(
        protocols(bird.socket()).await,
        ["Mesh_10_0_1_11", "Mesh_10_0_2_10"]
    );
    let reloaded_at = last_reconfiguration(bird.socket()).await;
    assert!(reloaded_at.is_some(), "BIRD never reconfigured");

    // The same text again: nothing written, no reload (BIRD's clock has
    // millisecond resolution, so a second reload would move it).
    assert_eq!(
        applier.apply(&text).await.expect("apply"),
        ApplyOutcome::Unchanged
    );
    assert_eq!(last_reconfiguration(bird.socket()).await, reloaded_at);

    let fewer = config_with_peers(&[[10, 0, 1, 11]]);
    assert_eq!(
        applier.apply(&fewer).await.expect("apply"),
        ApplyOutcome::Reloaded
    );
    assert_eq!(protocols(bird.socket()).await, ["Mesh_10_0_1_11"]);
    let leftovers: Vec<_> = std::fs::read_dir(dir.root())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("margay-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[tokio::test]
async fn a_text_bird_cannot_parse_touches_neither_file_nor_bird() {
    if !ready("a_text_bird_cannot_parse_touches_neither_file_nor_bird") {
        return;
    }
    let ns = TestNetns::new("bird-parse");
    let dir = BirdDir::new("parse");
    dir.write_config(PLACEHOLDER);
    let bird = TestBird::start(&ns, &dir);
    let mut applier = applier(&dir);
    let good = config_with_peers(&[[10, 0, 1, 11]]);
    assert_eq!(
        applier.apply(&good).await.expect("apply"),
        ApplyOutcome::Reloaded
    );
    let reloaded_at = last_reconfiguration(bird.socket()).await;

    let broken = config_with_peers(&[[10, 0, 1, 12]]).replace("neighbor", "neighbour");
    let outcome = applier.apply(&broken).await.expect("apply");
    let ApplyOutcome::Rejected { stage, message } = outcome else {
        panic!("accepted a broken text: {outcome:?}");
    };
    assert_eq!(stage, RejectStage::Parse);
    assert!(message.contains("syntax error"), "{message}");
    assert_eq!(read(&dir.config()), good, "the old file must stay");
    assert_eq!(protocols(bird.socket()).await, ["Mesh_10_0_1_11"]);
    assert_eq!(last_reconfiguration(bird.socket()).await, reloaded_at);
    assert_eq!(
        applier.last_rejection().map(|r| r.0),
        Some(RejectStage::Parse)
    );
    // The same broken text again is not re-checked.
    assert_eq!(
        applier.apply(&broken).await.expect("apply"),
        ApplyOutcome::Unchanged
    );
}

#[tokio::test]
async fn without_bird_the_file_is_written_and_reloaded_once_bird_runs() {
    if !ready("without_bird_the_file_is_written_and_reloaded_once_bird_runs") {
        return;
    }
    let ns = TestNetns::new("bird-pending");
    let dir = BirdDir::new("pending");
    dir.write_config(PLACEHOLDER);
    let mut applier = applier(&dir);
    let first = config_with_peers(&[[10, 0, 1, 11]]);

    // No socket at all.
    let outcome = applier.apply(&first).await.expect("apply");
    assert_eq!(outcome, ApplyOutcome::WrittenPendingReload);
    assert_eq!(read(&dir.config()), first);
    assert!(applier.reload_pending());
    assert_eq!(
        applier.retry_pending().await.expect("retry"),
        ApplyOutcome::WrittenPendingReload
    );

    let mut bird = TestBird::start(&ns, &dir);
    assert_eq!(
        applier.retry_pending().await.expect("retry"),
        ApplyOutcome::Reloaded
    );
    assert!(!applier.reload_pending());
    assert!(last_reconfiguration(bird.socket()).await.is_some());

    // A stale socket (BIRD killed): connection refused, also "not running".
    bird.stop();
    let second = config_with_peers(&[[10, 0, 1, 12]]);
    let outcome = applier.apply(&second).await.expect("apply");
    assert_eq!(outcome, ApplyOutcome::WrittenPendingReload);
    let bird = TestBird::start(&ns, &dir);
    assert_eq!(protocols(bird.socket()).await, ["Mesh_10_0_1_12"]);
    assert_eq!(
        applier.retry_pending().await.expect("retry"),
        ApplyOutcome::Reloaded
    );
}

/// A reload BIRD refuses although `bird -p` (run by root) accepts the
/// text: BIRD runs as `nobody` and cannot read a 0600 root file. The
/// previous content is put back and BIRD keeps running it.
#[tokio::test]
async fn a_reload_bird_refuses_restores_the_previous_file() {
    if !ready("a_reload_bird_refuses_restores_the_previous_file") {
        return;
    }
    let ns = TestNetns::new("bird-refuse");
    let dir = BirdDir::new("refuse");
    let good = config_with_peers(&[[10, 0, 1, 11]]);
    dir.write_config(&good);
    let bird = TestBird::start_as(&ns, &dir, "nobody", "nogroup");
    std::fs::set_permissions(dir.config(), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut applier = applier(&dir);

    let next = config_with_peers(&[[10, 0, 1, 12]]);
    let outcome = applier.apply(&next).await.expect("apply");
    let ApplyOutcome::Rejected { stage, message } = outcome else {
        panic!("BIRD took a file it cannot read: {outcome:?}");
    };
    assert_eq!(stage, RejectStage::Reload);
    assert!(message.contains("Permission denied"), "{message}");
    assert_eq!(read(&dir.config()), good, "the previous file must be back");
    assert_eq!(protocols(bird.socket()).await, ["Mesh_10_0_1_11"]);
    assert!(!applier.reload_pending());
}

/// BIRD as Debian runs it: its own user, reading a 0640 file of its
/// group. The new file keeps owner, group and mode, so BIRD can read it.
#[tokio::test]
async fn the_new_file_keeps_owner_group_and_mode() {
    if !ready("the_new_file_keeps_owner_group_and_mode") {
        return;
    }
    let ns = TestNetns::new("bird-owner");
    let dir = BirdDir::new("owner");
    dir.write_config(PLACEHOLDER);
    let nogroup = nix::unistd::Group::from_name("nogroup")
        .expect("group lookup")
        .expect("group nogroup exists");
    std::os::unix::fs::chown(dir.config(), Some(0), Some(nogroup.gid.as_raw())).expect("chown");
    std::fs::set_permissions(dir.config(), std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let bird = TestBird::start_as(&ns, &dir, "nobody", "nogroup");
    let mut applier = applier(&dir);

    let text = config_with_peers(&[[10, 0, 1, 11]]);
    assert_eq!(
        applier.apply(&text).await.expect("apply"),
        ApplyOutcome::Reloaded
    );
    let meta = std::fs::metadata(dir.config()).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (0, nogroup.gid.as_raw()));
    assert_eq!(protocols(bird.socket()).await, ["Mesh_10_0_1_11"]);
}

#[tokio::test]
async fn a_missing_directory_is_an_error() {
    let dir = BirdDir::new("missing");
    let mut applier = BirdConfigApplier::new(
        dir.root().join("no/such/dir/bird.conf"),
        dir.socket(),
        "/usr/sbin/bird".into(),
    );
    let result = applier.apply("router id 10.9.9.9;\n").await;
    assert!(result.is_err(), "{result:?}");
}
