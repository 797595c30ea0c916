//! Placeholder for sysctl.
