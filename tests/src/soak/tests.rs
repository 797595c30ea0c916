//! Unit tests of the soak's own arithmetic: metric sums, fd target diffs and
//! the growth checks.

use super::figures::added_targets;
use super::runner::sum_series;
use super::*;

#[test]
fn series_are_summed_and_a_missing_one_panics() {
    let text = "# HELP x\nmargay_a_total{k=\"1\"} 2\nmargay_a_total{k=\"2\"} 3\nmargay_ab 7\nmargay_b 1.5\n";
    assert_eq!(sum_series(text, "margay_a_total"), 5.0);
    assert_eq!(sum_series(text, "margay_a_total{k=\"2\"}"), 3.0);
    assert_eq!(sum_series(text, "margay_b"), 1.5);
    let missing = std::panic::catch_unwind(|| sum_series(text, "margay_c"));
    assert!(missing.is_err());
}

#[test]
fn added_fd_targets_count_duplicates() {
    let v = |xs: &[&str]| xs.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let before = v(&["/dev/null", "socket:[1]"]);
    let now = v(&["/dev/null", "/dev/null", "socket:[1]", "socket:[2]"]);
    assert_eq!(
        added_targets(&before, &now),
        v(&["/dev/null", "socket:[2]"])
    );
}

#[test]
fn growth_and_fd_checks_fail_when_they_should() {
    let mut f = Figures {
        fds_warm_max: 20,
        warm: Some(Sample {
            rss_kib: 1000,
            anon_kib: 500,
            fds: 19,
        }),
        end: Some(Sample {
            rss_kib: 1049,
            anon_kib: 500,
            fds: 20,
        }),
        ..Figures::default()
    };
    f.check_process();
    assert!(f.problems.is_empty(), "{:?}", f.problems);
    f.end = Some(Sample {
        rss_kib: 1050,
        anon_kib: 500,
        fds: 21,
    });
    f.check_process();
    assert_eq!(f.problems.len(), 2, "{:?}", f.problems);
}
