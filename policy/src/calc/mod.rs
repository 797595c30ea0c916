//! The incremental calculation engine (placeholder).
