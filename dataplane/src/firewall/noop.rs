//! Placeholder for firewall/noop.
