//! The subcommands: `margay run`, `check`, `plan` and `status`, one module
//! each. The command line ([`crate::cli`]) parses and dispatches here.

pub mod check;
pub mod plan;
pub mod run;
pub mod status;
