//! Placeholder for sandbox fixture.
