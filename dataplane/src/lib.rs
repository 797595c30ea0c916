//! margay's dataplane: desired state in, kernel state out.
//!
//! For each kind of kernel object (routes, neighbours, sysctls, firewall
//! chains and sets) there is a pure diff of desired against observed state,
//! and a thin layer that reads and writes the kernel. Only the thin layers
//! do I/O.

pub mod firewall;
pub mod neigh;
pub mod netns;
pub mod routes;
pub mod sysctl;
