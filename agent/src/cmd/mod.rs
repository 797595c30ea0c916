//! The subcommands: `margay run`, `check`, `plan` and `status`, one module
//! each. The command line ([`crate::cli`]) parses and dispatches here;
//! nothing here depends on it.

pub mod check;
pub mod host_endpoints;
pub mod plan;
pub mod run;
pub mod status;

/// Writes a command's report to stdout. A reader that has gone away (`margay
/// plan | head`) is not an error: the rest of the report is simply dropped,
/// as with any Unix filter.
pub fn print_report(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
