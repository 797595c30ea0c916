//! Host networking of one namespace over netlink and `/proc/sys`: our
//! routes, static neighbour entries and per-interface sysctls, kept in line
//! with the desired state by [`HostNetwork`].
//!
//! Layering (imports only point down this list):
//! - [`host`]: [`HostNetwork`], the facade owning the sockets, the interface
//!   cache and the three managers; applies desired state and watcher events.
//! - [`routes`], [`neigh`], [`sysctl`]: one manager per kind of object,
//!   each over the generic per-interface manager [`iface_objects`].
//! - [`watch`]: link/address/route notifications as [`DataplaneEvent`]s.
//! - [`addresses`]: the interfaces' addresses by interface name (what host
//!   endpoints bound by expected address follow).
//! - shared pieces: [`tracker`] (desired vs observed, pure), [`links`]
//!   (interface cache), [`netlink`] (sockets, the batch writer) and
//!   [`report`] (what a flush did, typed write failures).

pub mod addresses;
pub mod host;
pub mod iface_objects;
pub mod links;
pub mod neigh;
pub mod netlink;
pub mod report;
pub mod routes;
pub mod sysctl;
pub mod tracker;
pub mod watch;

pub use host::{HostNetError, HostNetwork, HostReport};
pub use report::{FlushReport, ObjectKind, WriteFailure, WriteKind};
pub use routes::{HostFacts, KernelRoute, ProtectReason, RefusedRoute, RouteManager};
pub use watch::DataplaneEvent;
