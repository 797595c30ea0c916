//! Placeholder for firewall/iptables.
