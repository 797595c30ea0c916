//! Placeholder for routes.
