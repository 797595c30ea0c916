//! Placeholder for netns fixture.
