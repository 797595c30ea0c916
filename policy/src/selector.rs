//! Placeholder: the selector parser and evaluator land here (owned by the policy-model work).

/// A parsed selector (placeholder representation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector(String);
