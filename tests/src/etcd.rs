//! Placeholder for etcd fixture.
