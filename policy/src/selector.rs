//! Calico v1 label selectors: parser, evaluator and canonical text.
//!
//! Grammar (`&&` binds tighter than `||`; `!` tighter than both):
//!
//! ```text
//! selector := <empty> | or
//! or       := and ( "||" and )*
//! and      := unary ( "&&" unary )*
//! unary    := "!" unary | "(" or ")" | "all" "(" ")" | "has" "(" key ")"
//!           | key "==" string | key "!=" string
//!           | key "in" set | key "not" "in" set
//! set      := "{" [ string ( "," string )* ] "}"
//! string   := '"' any-but-'"' '"' | "'" any-but-"'" "'"      (no escapes)
//! key      := [A-Za-z0-9_./-]+
//! ```
//!
//! `k != "v"` and `k not in {...}` are true when `k` is absent. Empty or
//! whitespace-only text means "everything", like `all()`.
//!
//! Every parsed selector is normalised (nested `&&`/`||` flattened, operands
//! sorted and de-duplicated, double negation removed, `!(k == v)` written
//! `k != v`, one-element sets written as `==`/`!=`) and rendered once into a
//! canonical text. Selectors that differ only in spelling therefore compare
//! equal and share one kernel address set.

mod normal;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use normal::{normalise, render};

/// Deepest nesting of `(` and `!` accepted, so hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// Why a selector failed to parse. Positions are byte offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectorError {
    /// The parser met something other than what the grammar allows here.
    #[error("selector: at byte {pos}: expected {expected}, found {found}")]
    Unexpected {
        /// Byte offset of the offending token.
        pos: usize,
        /// What the grammar allows at this point.
        expected: &'static str,
        /// What was found (a token description, or "end of selector").
        found: String,
    },
    /// A character that starts no token.
    #[error("selector: at byte {pos}: unexpected character {ch:?}")]
    BadChar {
        /// Byte offset of the character.
        pos: usize,
        /// The character.
        ch: char,
    },
    /// A quoted string without its closing quote.
    #[error("selector: at byte {pos}: string is not terminated")]
    UnterminatedString {
        /// Byte offset of the opening quote.
        pos: usize,
    },
    /// More than [`MAX_DEPTH`] nested `(` or `!`.
    #[error("selector: at byte {pos}: nested deeper than {MAX_DEPTH} levels")]
    TooDeep {
        /// Byte offset where the limit was passed.
        pos: usize,
    },
}

/// A selector expression, always kept in normal form (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Expr {
    /// Matches every label set.
    All,
    /// `k == "v"`.
    Eq(String, String),
    /// `k != "v"` (true when `k` is absent).
    Ne(String, String),
    /// `k in {...}` (two or more values, or none).
    In(String, BTreeSet<String>),
    /// `k not in {...}` (true when `k` is absent).
    NotIn(String, BTreeSet<String>),
    /// `has(k)`.
    Has(String),
    /// `!e` where `e` is `All`, `Has`, `And` or `Or`.
    Not(Box<Expr>),
    /// All of these (two or more, sorted, distinct, none an `And` or `All`).
    And(Vec<Expr>),
    /// Any of these (two or more, sorted, distinct, none an `Or` or `All`).
    Or(Vec<Expr>),
}

/// A parsed, normalised label selector.
///
/// Equality, ordering and hashing follow the canonical text, so two
/// selectors are equal exactly when they normalise to the same expression.
/// One word wide (the parsed form is shared): rules hold two selector
/// slots per side, mostly empty, for every profile of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector(Arc<Parsed>);

/// A selector's canonical text and expression.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Parsed {
    canonical: String,
    expr: Expr,
}

impl Selector {
    /// Parses `text` (see the module docs for the grammar).
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        Ok(Selector::from_expr(parse::parse_expr(text)?))
    }

    /// The selector that matches everything (`all()`).
    pub fn all() -> Selector {
        Selector::from_expr(Expr::All)
    }

    /// True when `labels` satisfy the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        eval(&self.0.expr, labels)
    }

    /// The normalised text: equal selectors have equal canonical text, and
    /// parsing it gives back an equal selector.
    pub fn canonical(&self) -> &str {
        &self.0.canonical
    }

    /// True for a selector that matches every label set.
    pub fn is_all(&self) -> bool {
        self.0.expr == Expr::All
    }

    fn from_expr(expr: Expr) -> Selector {
        let expr = normalise(expr);
        let mut canonical = String::new();
        render(&expr, &mut canonical);
        Selector(Arc::new(Parsed { canonical, expr }))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.canonical)
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

// ---------------------------------------------------------------- evaluation

fn eval(e: &Expr, labels: &BTreeMap<String, String>) -> bool {
    match e {
        Expr::All => true,
        Expr::Eq(k, v) => labels.get(k) == Some(v),
        Expr::Ne(k, v) => labels.get(k) != Some(v),
        Expr::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
        Expr::NotIn(k, set) => !labels.get(k).is_some_and(|v| set.contains(v)),
        Expr::Has(k) => labels.contains_key(k),
        Expr::Not(inner) => !eval(inner, labels),
        Expr::And(items) => items.iter().all(|i| eval(i, labels)),
        Expr::Or(items) => items.iter().any(|i| eval(i, labels)),
    }
}
