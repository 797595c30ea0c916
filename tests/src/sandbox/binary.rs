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
    // `cargo test` gives each test process its crate's variables
    // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...). ring's build script reruns
    // when they change, so passing them on would rebuild ring and everything
    // above it whenever the last build came from a plain `cargo build` (as
    // `make unit` does first) or another crate's tests: half a minute or
    // more, inside a test's own timing. Without them this build is the same
    // as `cargo build -p margay-agent`, and a no-op after it.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_per_crate_cargo_var) {
            cmd.env_remove(name);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo build -p margay-agent: {e}"));
    assert!(status.success(), "cargo build -p margay-agent failed");
}

/// True for the variables cargo sets for one crate's build or test run,
/// as opposed to cargo's configuration (CARGO_TARGET_DIR, CARGO_HOME, ...).
fn is_per_crate_cargo_var(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_EXE_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
        )
}
