//! The soak (issue 10, point 5): the real `margay run` against a real etcd
//! under a stream of endpoint/profile/policy churn with etcd compactions,
//! etcd restarts and SIGHUPs; then the kernel must equal `margay plan`'s
//! expectation, memory and descriptors must not have grown after the
//! warm-up, and the agent must never have restarted. See
//! `margay_tests::soak` for what is measured and how.
//!
//! - `nftables::soak` and `iptables::soak`: the test-sized soak CI runs, one
//!   per backend (about a minute each).
//! - `long_soak` (ignored; `make soak`): `SOAK_UPDATES` updates (default
//!   1,000,000) on `SOAK_DATAPLANE` (default nftables); prints the figures.

use margay_tests::both_backends;
use margay_tests::netns::require_root;
use margay_tests::sandbox::Dataplane;
use margay_tests::soak::{self, SoakConfig};

both_backends!(soak);

fn soak(dp: Dataplane) {
    let figures = soak::run(&SoakConfig::ci(dp));
    eprintln!("{figures}");
    assert!(figures.problems.is_empty(), "{figures}");
}

#[test]
#[ignore = "long: run by hand with `make soak`"]
fn long_soak() {
    if !require_root("long_soak") {
        return;
    }
    let figures = soak::run(&SoakConfig::long_from_env());
    println!("{figures}");
    assert!(figures.problems.is_empty(), "{figures}");
}
