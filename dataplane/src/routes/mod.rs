//! Host networking over netlink: routes, links, and (through the sibling
//! `neigh` and `sysctl` modules) neighbours and sysctls.
//!
//! - [`tracker`]: the generic desired-vs-observed tracker (pure).
//! - [`model`]: our routes as kernel messages (pure).
//! - [`manager`]: the route manager (pure plan + pipelined flush).
//! - [`links`]: interface cache.
//! - [`protect`]: addresses routes must never cover (pure); [`facts`] reads them.
//! - [`netlink`]: sockets opened in the target namespace, the batch writer.
//! - [`watch`]: link/address/route notifications as [`watch::DataplaneEvent`]s.
//! - [`host`]: [`host::HostNetwork`], which ties them together for the facade.

pub mod dumps;
pub mod facts;
pub mod host;
pub mod links;
pub mod manager;
pub mod model;
pub mod netlink;
pub mod protect;
pub mod tracker;
pub mod watch;

pub use host::{HostNetError, HostNetwork, HostReport};
pub use manager::{FlushReport, RouteManager, WriteFailure};
pub use model::KernelRoute;
pub use protect::{HostFacts, ProtectReason, RefusedRoute};
pub use watch::DataplaneEvent;
