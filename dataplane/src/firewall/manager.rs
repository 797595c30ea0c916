//! Placeholder for firewall/manager.
