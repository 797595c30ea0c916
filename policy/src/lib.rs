//! margay's data model and policy calculation: Calico v1 datastore keys and
//! JSON in, the desired dataplane state of one host out. Pure: no I/O, no
//! clocks, no kernel; everything here is testable and benchmarkable without root.
#![forbid(unsafe_code)]

pub mod bgp;
pub mod calc;
pub mod desired;
pub mod model;
pub mod names;
pub mod selector;
pub mod update;
