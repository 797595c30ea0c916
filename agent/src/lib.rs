//! The margay agent as a library: the `margay` binary (`main.rs`) is a thin
//! wrapper around [`cli::main`], and integration tests drive the same modules.
//!
//! - [`cli`], [`settings`]: command line and layered settings loading.
//! - etcd (connecting, sync, status reports, datastore settings) lives in
//!   the `margay_datastore` crate.
//! - [`run`]: the event loop joining sync, calculation and dataplane;
//!   [`host_guard`]: what keeps data from cutting the host off.
//! - [`plan`]: `margay plan`.
//! - [`conflicts`]: endpoint conflicts into log lines and a gauge.
//! - [`metrics`], [`http`], [`logging`], [`notify`], [`check`],
//!   [`status_cmd`]: observability and the other subcommands.
#![forbid(unsafe_code)]

pub mod check;
pub mod cli;
pub mod conflicts;
pub mod foreign_drop;
pub mod host_guard;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod run;
pub mod settings;
pub mod status_cmd;
