//! Placeholder for neigh.
