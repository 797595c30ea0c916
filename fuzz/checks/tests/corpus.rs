//! Replays every checked-in fuzz corpus file (`fuzz/corpus/<target>/`,
//! crash inputs included) through its target's checks on stable, so the
//! properties hold in every CI run even without a nightly toolchain.

use std::path::PathBuf;

use margay_fuzz_checks::TARGETS;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../corpus")).join(target)
}

#[test]
fn every_corpus_file_passes_its_target() {
    let mut failed = Vec::new();
    for (target, check) in TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 3,
            "{target}: only {} corpus files",
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failed.push(format!("{target}: {}", file.display()));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "failing corpus files:\n{}",
        failed.join("\n")
    );
}
