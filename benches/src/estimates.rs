//! Criterion's own figures, read back after a run so a bench can print them
//! as README rows ([`crate::report::Row`]), plus the way figures are written.
//!
//! A bench gives criterion a fresh output directory of its own
//! ([`CriterionRun::fresh`]), so every estimate found there was measured by
//! this run and none is left from an older one.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a figure could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EstimateError {
    /// The output directory could not be made fresh.
    #[error("criterion output directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The benchmark did not run (or criterion wrote nothing).
    #[error("no estimates for {id} at {path}: {source}")]
    Missing {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not criterion's estimates.
    #[error("estimates for {id} unreadable: {reason}")]
    Unreadable { id: String, reason: String },
}

/// One bench's criterion output directory, emptied when the run starts.
#[derive(Debug)]
pub struct CriterionRun {
    dir: PathBuf,
}

impl CriterionRun {
    /// An empty directory for `bench`'s estimates (under the system's temp
    /// directory, one per bench).
    pub fn fresh(bench: &str) -> Result<Self, EstimateError> {
        let dir = std::env::temp_dir().join(format!("margay-criterion-{bench}"));
        let err = |source| EstimateError::Directory {
            path: dir.clone(),
            source,
        };
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
            _ => {}
        }
        std::fs::create_dir_all(&dir).map_err(err)?;
        Ok(CriterionRun { dir })
    }

    /// Where criterion must write (`Criterion::output_directory`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The median time of one iteration of `group`/`function`, as criterion
    /// estimated it in this run.
    pub fn median(&self, group: &str, function: &str) -> Result<Duration, EstimateError> {
        let id = format!("{group}/{function}");
        let path = self
            .dir
            .join(criterion_dir_name(group))
            .join(criterion_dir_name(function))
            .join("new")
            .join("estimates.json");
        let text = std::fs::read_to_string(&path).map_err(|source| EstimateError::Missing {
            id: id.clone(),
            path: path.clone(),
            source,
        })?;
        let unreadable = |reason: String| EstimateError::Unreadable {
            id: id.clone(),
            reason,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
        let nanos = json["median"]["point_estimate"]
            .as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| unreadable("no median.point_estimate".into()))?;
        Ok(Duration::from_secs_f64(nanos / 1e9))
    }
}

/// The directory name criterion gives a group or function id.
fn criterion_dir_name(id: &str) -> String {
    id.replace(['?', '"', '/', '\\', '*', '<', '>', ':', '|', '^'], "_")
}

/// Whether this criterion run measures everything: run by `cargo bench`
/// (`--bench`) with no name filter. Rows are printed only then; a filtered
/// or `cargo test` run prints none.
pub fn criterion_full_run() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.iter().any(|a| a == "--bench") && args.iter().all(|a| a.starts_with('-'))
}

/// A duration in milliseconds, to three significant digits or two decimals.
pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 1.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

/// A duration in microseconds, one decimal.
pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Prints `message` on stderr and exits 1: a figure missed its target or
/// could not be measured, so the run must fail (and print no row for it).
pub fn fail(bench: &str, message: &str) -> ! {
    eprintln!("{bench}: FAILED: {message}");
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_written_as_the_readme_writes_them() {
        assert_eq!(ms(Duration::from_micros(124_400)), "124 ms");
        assert_eq!(ms(Duration::from_micros(3_340)), "3.3 ms");
        assert_eq!(ms(Duration::from_micros(220)), "0.22 ms");
        assert_eq!(us(Duration::from_nanos(5_040)), "5.0 µs");
    }

    #[test]
    fn a_median_is_read_from_this_runs_directory_only() {
        let run = CriterionRun::fresh("estimates-unit-test").expect("fresh dir");
        assert!(matches!(
            run.median("calc/remote", "move"),
            Err(EstimateError::Missing { .. })
        ));
        let dir = run.dir().join("calc_remote").join("move").join("new");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("estimates.json"),
            r#"{"median":{"point_estimate":5040.0}}"#,
        )
        .expect("write");
        assert_eq!(
            run.median("calc/remote", "move").expect("median"),
            Duration::from_nanos(5_040)
        );
        let again = CriterionRun::fresh("estimates-unit-test").expect("fresh dir");
        assert!(again.median("calc/remote", "move").is_err(), "emptied");
    }
}
