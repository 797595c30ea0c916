//! Placeholder for firewall/nft.
