//! Placeholder for netns.
