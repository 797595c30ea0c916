//! Placeholder for firewall/lower.
