//! `bench-table`: rewrites the README's figure tables from bench output.
//!
//! `bench-table [--readme README.md] [--dry-run] [LOG...]` reads the logs
//! (stdin when none is given), takes every `MARGAY-ROW` line, checks them
//! and replaces each marked table of the README (see
//! `margay_benches::table`) with a heading line — the date of the run (UTC,
//! from the system clock), the machine (cores, CPU, kernel) and the command —
//! and the rows in the order they were printed. On any error it exits
//! non-zero and the README is left as it was. `--dry-run` checks the rows and
//! prints the tables instead of touching the README (what `make bench` does
//! for a subset of the benches).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use margay_benches::report::Row;
use margay_benches::table::{collect_rows, render_table, rewrite, TABLES};

struct Args {
    readme: PathBuf,
    dry_run: bool,
    logs: Vec<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        readme: PathBuf::from("README.md"),
        dry_run: false,
        logs: Vec::new(),
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--readme") => {
                args.readme = it.next().context("--readme needs a path")?.into();
            }
            Some("--dry-run") => args.dry_run = true,
            Some("-h" | "--help") => {
                println!("usage: bench-table [--readme README.md] [--dry-run] [LOG...]");
                std::process::exit(0);
            }
            Some(flag) if flag.starts_with("--") => bail!("unknown option {flag}"),
            _ => args.logs.push(arg.into()),
        }
    }
    Ok(args)
}

/// The logs' text, named for error messages; stdin when there is no log.
fn read_outputs(logs: &[PathBuf]) -> Result<Vec<(String, String)>> {
    if logs.is_empty() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        return Ok(vec![("stdin".to_owned(), text)]);
    }
    logs.iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok((path.display().to_string(), text))
        })
        .collect()
}

/// The first `model name` of /proc/cpuinfo, if any.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// One line: when (now, UTC), where (cores, CPU, kernel) and how the figures
/// were taken.
fn run_heading() -> Result<String> {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC");
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading the kernel release")?;
    let cpu = cpu_model().map(|m| format!(" ({m})")).unwrap_or_default();
    Ok(format!(
        "Figures of one `make bench` run, {now}, on {cores} cores{cpu}, kernel {}.",
        kernel.trim()
    ))
}

fn print_tables(rows: &[Row]) {
    for table in TABLES {
        let of_table: Vec<&Row> = rows.iter().filter(|r| r.table == table).collect();
        if !of_table.is_empty() {
            println!(
                "table {} ({} rows):\n{}",
                table.as_str(),
                of_table.len(),
                render_table(&of_table)
            );
        }
    }
}

/// Writes `text` beside `path` and renames it over `path`, so the README is
/// either the old one or the whole new one.
fn replace_file(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("md.bench-table.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let outputs = read_outputs(&args.logs)?;
    let rows = collect_rows(outputs.iter().map(|(n, t)| (n.as_str(), t.as_str())))?;
    if rows.is_empty() {
        bail!("no MARGAY-ROW line in the bench output");
    }
    if args.dry_run {
        print_tables(&rows);
        println!(
            "bench-table: {} rows checked; README not touched (dry run)",
            rows.len()
        );
        return Ok(());
    }
    let readme = std::fs::read_to_string(&args.readme)
        .with_context(|| format!("reading {}", args.readme.display()))?;
    let updated = rewrite(&readme, &rows, &run_heading()?)?;
    replace_file(&args.readme, &updated)?;
    println!(
        "bench-table: {} rows written to {}",
        rows.len(),
        args.readme.display()
    );
    Ok(())
}
