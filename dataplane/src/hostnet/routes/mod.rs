//! Our routes: the kernel messages that carry them ([`model`]), the manager
//! that keeps them in line ([`manager`]), the dumps that read them back
//! ([`dumps`]), and host protection: the addresses no endpoint route may
//! cover ([`protect`], pure) and the facts they come from ([`facts`]).

pub mod dumps;
pub mod facts;
pub mod manager;
pub mod model;
pub mod protect;

pub use manager::RouteManager;
pub use model::KernelRoute;
pub use protect::{HostFacts, ProtectReason, RefusedRoute};
