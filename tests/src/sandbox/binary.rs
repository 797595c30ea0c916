//! Finding the `margay` binary under test (and building it when missing).

use super::*;

/// The `margay` binary to test: `$MARGAY_BIN`, else the one next to this test
/// executable's profile directory, built (once per process) with cargo so it
/// is never stale.
pub fn margay_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("MARGAY_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no current exe: {e}"));
        // target/<profile>/deps/<test>-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("unexpected test path {}", exe.display()))
            .to_path_buf();
        build_margay(&profile_dir);
        let bin = profile_dir.join("margay");
        assert!(bin.is_file(), "no margay binary at {}", bin.display());
        bin
    })
    .clone()
}

pub(super) fn build_margay(profile_dir: &Path) {
    let Some(target_dir) = profile_dir.parent() else {
        panic!("no target dir above {}", profile_dir.display());
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "margay-agent", "--target-dir"])
        .arg(target_dir);
    if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    if let Some(manifest_dir) = option_env!("CARGO_MANIFEST_DIR") {
        cmd.current_dir(manifest_dir);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo build -p margay-agent: {e}"));
    assert!(status.success(), "cargo build -p margay-agent failed");
}
