//! The margay agent as a library: the `margay` binary (`main.rs`) is a thin
//! wrapper around [`cli::main`], and integration tests drive the same modules.
//!
//! - [`cli`], [`settings`]: command line and layered settings loading.
//! - etcd (connecting, sync, status reports, datastore settings) lives in
//!   the `margay_datastore` crate.
//! - [`run`]: the event loop joining sync, calculation and dataplane;
//!   [`dataplane_setup`]: settings into dataplane configuration;
//!   [`host_guard`]: what keeps data from cutting the host off.
//! - [`cmd`]: the subcommands `run`, `check`, `plan`, `status`.
//! - [`conflicts`]: endpoint conflicts into log lines and a gauge.
//! - [`metrics`], [`http`], [`logging`], [`notify`]: observability;
//!   [`preflight`]: what `margay check` is made of.
#![forbid(unsafe_code)]

pub mod bird_sync;
pub mod cli;
pub mod cmd;
pub mod conflicts;
pub mod dataplane_setup;
pub mod foreign_drop;
pub mod host_guard;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod preflight;
pub mod run;
pub mod settings;

/// This binary's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
