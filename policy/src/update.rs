//! Raw datastore key/value → typed [`crate::model::Update`] (placeholder).
