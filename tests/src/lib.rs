//! Shared fixtures for margay's integration and end-to-end tests: a real etcd
//! server on a free loopback port, throw-away network namespaces, and the
//! multi-host sandbox, the fan-out harness (many agents, etcd and its
//! grpc-proxy) and the soak harness.

pub mod bird;
pub mod certs;
pub mod contract;
pub mod docker;
pub mod etcd;
pub mod etcd_cluster;
pub mod fanout;
pub mod netns;
pub mod sandbox;
pub mod soak;
