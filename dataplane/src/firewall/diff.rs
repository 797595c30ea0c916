//! Placeholder for firewall/diff.
