//! margay's datastore layer: everything about etcd, behind one API.
//!
//! - [`connect`]: the one connect path (TLS files, timeouts, keep-alive,
//!   the probe read, the system-CA fallback, TLS errors in words), used by
//!   the syncer, the status writer and the `check`, `status` and `plan`
//!   subcommands.
//! - [`sync`]: the syncer, a converging stream of key changes (list +
//!   watch, resume, resync).
//! - [`status`]: the status writer (heartbeats and endpoint status keys).
//! - [`settings`]: the one owner of the datastore settings (`/config/*`
//!   and this host's `/host/<me>/config/*`).
//! - [`backoff`], [`error`], [`time`]: reconnect timing, errors, RFC 3339.
//!
//! It reads and writes keys but does not interpret the Calico data model
//! (the `policy` crate does).
#![forbid(unsafe_code)]

pub mod backoff;
pub mod connect;
pub mod error;
pub mod settings;
pub mod status;
pub mod sync;
pub mod time;

pub use error::EtcdError;
