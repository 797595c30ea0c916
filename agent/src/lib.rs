//! The margay agent as a library: the `margay` binary (`main.rs`) is a thin
//! wrapper around [`cli::main`], and integration tests drive the same modules.
//!
//! - [`cli`], [`settings`]: command line and layered settings loading.
//! - [`sync`]: etcd list + watch with resync; [`heartbeat`]: status reports.
//! - [`run`]: the event loop joining sync, calculation and dataplane;
//!   [`dataplane_setup`]: settings into dataplane configuration;
//!   [`host_guard`]: what keeps data from cutting the host off.
//! - [`cmd`]: the subcommands `run`, `check`, `plan`, `status`.
//! - [`conflicts`]: endpoint conflicts into log lines and a gauge.
//! - [`metrics`], [`http`], [`logging`], [`notify`]: observability;
//!   [`preflight`]: what `margay check` is made of.
#![forbid(unsafe_code)]

pub mod cli;
pub mod cmd;
pub mod conflicts;
pub mod dataplane_setup;
pub mod foreign_drop;
pub mod heartbeat;
pub mod host_guard;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod preflight;
pub mod run;
pub mod settings;
pub mod sync;

/// This binary's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

// The old path of the etcd connect helpers in `margay check`, for the calls
// that move to the datastore layer (helper "ds"); remove with them.
use cmd::check;
