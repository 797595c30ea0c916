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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use thiserror::Error;

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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    canonical: String,
    expr: Expr,
}

impl Selector {
    /// Parses `text` (see the module docs for the grammar).
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let tokens = lex(text)?;
        let mut parser = Parser {
            tokens,
            next: 0,
            depth: 0,
        };
        let expr = if parser.peek().tok == Tok::End {
            Expr::All
        } else {
            let e = parser.or()?;
            parser.expect_end()?;
            e
        };
        Ok(Selector::from_expr(expr))
    }

    /// The selector that matches everything (`all()`).
    pub fn all() -> Selector {
        Selector::from_expr(Expr::All)
    }

    /// True when `labels` satisfy the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        eval(&self.expr, labels)
    }

    /// The normalised text: equal selectors have equal canonical text, and
    /// parsing it gives back an equal selector.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// True for a selector that matches every label set.
    pub fn is_all(&self) -> bool {
        self.expr == Expr::All
    }

    fn from_expr(expr: Expr) -> Selector {
        let expr = normalise(expr);
        let mut canonical = String::new();
        render(&expr, &mut canonical);
        Selector { canonical, expr }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
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

// ------------------------------------------------------------- normalisation

/// Brings an expression (whose children may not be normal yet) into normal form.
fn normalise(e: Expr) -> Expr {
    match e {
        Expr::In(k, set) => normal_in(k, set),
        Expr::NotIn(k, set) => normal_not_in(k, set),
        Expr::Not(inner) => negate(normalise(*inner)),
        Expr::And(items) => normal_and(items.into_iter().map(normalise).collect()),
        Expr::Or(items) => normal_or(items.into_iter().map(normalise).collect()),
        leaf => leaf,
    }
}

fn normal_in(k: String, set: BTreeSet<String>) -> Expr {
    if set.len() == 1 {
        let v = set.into_iter().next().unwrap_or_default();
        Expr::Eq(k, v)
    } else {
        Expr::In(k, set)
    }
}

fn normal_not_in(k: String, set: BTreeSet<String>) -> Expr {
    if set.len() == 1 {
        let v = set.into_iter().next().unwrap_or_default();
        Expr::Ne(k, v)
    } else {
        Expr::NotIn(k, set)
    }
}

/// Negates an expression already in normal form, keeping it normal.
fn negate(e: Expr) -> Expr {
    match e {
        Expr::Not(inner) => *inner,
        Expr::Eq(k, v) => Expr::Ne(k, v),
        Expr::Ne(k, v) => Expr::Eq(k, v),
        Expr::In(k, s) => Expr::NotIn(k, s),
        Expr::NotIn(k, s) => Expr::In(k, s),
        other => Expr::Not(Box::new(other)),
    }
}

/// Joins normal operands with `&&`.
fn normal_and(items: Vec<Expr>) -> Expr {
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Expr::All => {}
            Expr::And(inner) => flat.extend(inner),
            other => flat.push(other),
        }
    }
    finish_list(flat, Expr::And, Expr::All)
}

/// Joins normal operands with `||`.
fn normal_or(items: Vec<Expr>) -> Expr {
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Expr::All => return Expr::All,
            Expr::Or(inner) => flat.extend(inner),
            other => flat.push(other),
        }
    }
    // An empty `||` cannot come from the parser; `all()` is a safe identity only
    // for `&&`, so fall back to "nothing" (`!all()`) for completeness.
    finish_list(flat, Expr::Or, Expr::Not(Box::new(Expr::All)))
}

fn finish_list(mut flat: Vec<Expr>, wrap: fn(Vec<Expr>) -> Expr, empty: Expr) -> Expr {
    flat.sort();
    flat.dedup();
    match flat.len() {
        0 => empty,
        1 => flat.pop().unwrap_or(empty),
        _ => wrap(flat),
    }
}

// ----------------------------------------------------------------- rendering

fn render(e: &Expr, out: &mut String) {
    match e {
        Expr::All => out.push_str("all()"),
        Expr::Eq(k, v) => render_cmp(k, "==", v, out),
        Expr::Ne(k, v) => render_cmp(k, "!=", v, out),
        Expr::In(k, s) => render_set(k, "in", s, out),
        Expr::NotIn(k, s) => render_set(k, "not in", s, out),
        Expr::Has(k) => {
            out.push_str("has(");
            out.push_str(k);
            out.push(')');
        }
        Expr::Not(inner) => {
            out.push('!');
            render_grouped(inner, matches!(**inner, Expr::And(_) | Expr::Or(_)), out);
        }
        Expr::And(items) => render_list(items, " && ", |i| matches!(i, Expr::Or(_)), out),
        Expr::Or(items) => render_list(items, " || ", |_| false, out),
    }
}

fn render_grouped(e: &Expr, parens: bool, out: &mut String) {
    if parens {
        out.push('(');
        render(e, out);
        out.push(')');
    } else {
        render(e, out);
    }
}

fn render_list(items: &[Expr], sep: &str, needs_parens: fn(&Expr) -> bool, out: &mut String) {
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push_str(sep);
        }
        render_grouped(item, needs_parens(item), out);
    }
}

fn render_cmp(k: &str, op: &str, v: &str, out: &mut String) {
    out.push_str(k);
    out.push(' ');
    out.push_str(op);
    out.push(' ');
    render_str(v, out);
}

fn render_set(k: &str, op: &str, set: &BTreeSet<String>, out: &mut String) {
    out.push_str(k);
    out.push(' ');
    out.push_str(op);
    out.push_str(" {");
    for (n, v) in set.iter().enumerate() {
        if n > 0 {
            out.push_str(", ");
        }
        render_str(v, out);
    }
    out.push('}');
}

/// Quotes with `"` unless the value holds one (a parsed value never holds both kinds).
fn render_str(v: &str, out: &mut String) {
    let q = if v.contains('"') { '\'' } else { '"' };
    out.push(q);
    out.push_str(v);
    out.push(q);
}

// -------------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    EqEq,
    NotEq,
    Bang,
    AndAnd,
    OrOr,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("{:?}", shorten(w)),
            Tok::Str(s) => format!("string {:?}", shorten(s)),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Comma => "','".into(),
            Tok::EqEq => "'=='".into(),
            Tok::NotEq => "'!='".into(),
            Tok::Bang => "'!'".into(),
            Tok::AndAnd => "'&&'".into(),
            Tok::OrOr => "'||'".into(),
            Tok::End => "end of selector".into(),
        }
    }
}

/// The start of a long word or string, for error messages.
fn shorten(s: &str) -> String {
    const MAX: usize = 32;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

fn lex(text: &str) -> Result<Vec<Token>, SelectorError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let pos = i;
        let two = bytes.get(i + 1).copied();
        let (tok, len) = match (b, two) {
            (b'(', _) => (Tok::LParen, 1),
            (b')', _) => (Tok::RParen, 1),
            (b'{', _) => (Tok::LBrace, 1),
            (b'}', _) => (Tok::RBrace, 1),
            (b',', _) => (Tok::Comma, 1),
            (b'=', Some(b'=')) => (Tok::EqEq, 2),
            (b'!', Some(b'=')) => (Tok::NotEq, 2),
            (b'!', _) => (Tok::Bang, 1),
            (b'&', Some(b'&')) => (Tok::AndAnd, 2),
            (b'|', Some(b'|')) => (Tok::OrOr, 2),
            (b'"' | b'\'', _) => lex_string(text, pos)?,
            _ if is_key_byte(b) => {
                let len = bytes[i..].iter().take_while(|&&c| is_key_byte(c)).count();
                (Tok::Word(text[i..i + len].to_owned()), len)
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('\u{fffd}');
                return Err(SelectorError::BadChar { pos, ch });
            }
        };
        tokens.push(Token { tok, pos });
        i += len;
    }
    tokens.push(Token {
        tok: Tok::End,
        pos: text.len(),
    });
    Ok(tokens)
}

/// Lexes a quoted string starting at `pos`; returns the token and its byte length.
fn lex_string(text: &str, pos: usize) -> Result<(Tok, usize), SelectorError> {
    let quote = text.as_bytes()[pos] as char;
    let body = &text[pos + 1..];
    match body.find(quote) {
        Some(end) => Ok((Tok::Str(body[..end].to_owned()), end + 2)),
        None => Err(SelectorError::UnterminatedString { pos }),
    }
}

// ------------------------------------------------------------------- parsing

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The token list always ends with `End`, and `bump` never passes it.
        &self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn peek2(&self) -> &Tok {
        &self.tokens[(self.next + 1).min(self.tokens.len() - 1)].tok
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::End {
            self.next += 1;
        }
        t
    }

    fn unexpected<T>(&self, expected: &'static str) -> Result<T, SelectorError> {
        let t = self.peek();
        Err(SelectorError::Unexpected {
            pos: t.pos,
            expected,
            found: t.tok.describe(),
        })
    }

    fn expect(&mut self, tok: Tok, expected: &'static str) -> Result<(), SelectorError> {
        if self.peek().tok == tok {
            self.bump();
            Ok(())
        } else {
            self.unexpected(expected)
        }
    }

    fn expect_end(&mut self) -> Result<(), SelectorError> {
        self.expect(Tok::End, "'&&', '||' or end of selector")
    }

    fn descend(&mut self) -> Result<(), SelectorError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SelectorError::TooDeep {
                pos: self.peek().pos,
            });
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, SelectorError> {
        let mut items = vec![self.and()?];
        while self.peek().tok == Tok::OrOr {
            self.bump();
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::All)
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> Result<Expr, SelectorError> {
        let mut items = vec![self.unary()?];
        while self.peek().tok == Tok::AndAnd {
            self.bump();
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::All)
        } else {
            Expr::And(items)
        })
    }

    fn unary(&mut self) -> Result<Expr, SelectorError> {
        match self.peek().tok.clone() {
            Tok::Bang => {
                self.bump();
                self.descend()?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(inner)))
            }
            Tok::LParen => {
                self.bump();
                self.descend()?;
                let inner = self.or()?;
                self.expect(Tok::RParen, "')', '&&' or '||'")?;
                self.depth -= 1;
                Ok(inner)
            }
            Tok::Word(w) if self.peek2() == &Tok::LParen => self.function(&w),
            Tok::Word(key) => {
                self.bump();
                self.comparison(key)
            }
            _ => self.unexpected("a label key, 'has(', 'all(', '!' or '('"),
        }
    }

    fn function(&mut self, name: &str) -> Result<Expr, SelectorError> {
        match name {
            "all" => {
                self.bump();
                self.bump();
                self.expect(Tok::RParen, "')' after 'all('")?;
                Ok(Expr::All)
            }
            "has" => {
                self.bump();
                self.bump();
                let key = self.key("a label key inside 'has('")?;
                self.expect(Tok::RParen, "')' after the key in 'has('")?;
                Ok(Expr::Has(key))
            }
            _ => {
                self.bump();
                self.unexpected("'==', '!=', 'in' or 'not in' (only 'has' and 'all' are functions)")
            }
        }
    }

    fn key(&mut self, expected: &'static str) -> Result<String, SelectorError> {
        match self.peek().tok.clone() {
            Tok::Word(w) => {
                self.bump();
                Ok(w)
            }
            _ => self.unexpected(expected),
        }
    }

    fn comparison(&mut self, key: String) -> Result<Expr, SelectorError> {
        const OPS: &str = "'==', '!=', 'in' or 'not in' after a label key";
        match self.peek().tok.clone() {
            Tok::EqEq => {
                self.bump();
                Ok(Expr::Eq(key, self.string()?))
            }
            Tok::NotEq => {
                self.bump();
                Ok(Expr::Ne(key, self.string()?))
            }
            Tok::Word(w) if w == "in" => {
                self.bump();
                Ok(Expr::In(key, self.set()?))
            }
            Tok::Word(w) if w == "not" && matches!(self.peek2(), Tok::Word(n) if n == "in") => {
                self.bump();
                self.bump();
                Ok(Expr::NotIn(key, self.set()?))
            }
            _ => self.unexpected(OPS),
        }
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        match self.peek().tok.clone() {
            Tok::Str(s) => {
                self.bump();
                Ok(s)
            }
            _ => self.unexpected("a quoted string"),
        }
    }

    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        self.expect(Tok::LBrace, "'{' to start a set of strings")?;
        let mut set = BTreeSet::new();
        if self.peek().tok == Tok::RBrace {
            self.bump();
            return Ok(set);
        }
        loop {
            set.insert(self.string()?);
            match self.bump().tok {
                Tok::Comma => {}
                Tok::RBrace => return Ok(set),
                _ => {
                    self.next -= 1;
                    return self.unexpected("',' or '}' in a set of strings");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn sel(text: &str) -> Selector {
        match Selector::parse(text) {
            Ok(s) => s,
            Err(e) => panic!("{text:?} should parse: {e}"),
        }
    }

    #[test]
    fn empty_and_all_match_everything() {
        for text in ["", "   ", "\t\n", "all()", " all ( ) "] {
            let s = sel(text);
            assert!(s.is_all(), "{text:?}");
            assert_eq!(s, Selector::all());
            assert!(s.matches(&labels(&[])));
            assert!(s.matches(&labels(&[("a", "b")])));
        }
        assert_eq!(Selector::all().canonical(), "all()");
    }

    #[test]
    fn equality_and_inequality() {
        let eq = sel("role == \"web\"");
        assert!(eq.matches(&labels(&[("role", "web")])));
        assert!(!eq.matches(&labels(&[("role", "db")])));
        assert!(!eq.matches(&labels(&[])));
        let ne = sel("role != 'web'");
        assert!(!ne.matches(&labels(&[("role", "web")])));
        assert!(ne.matches(&labels(&[("role", "db")])));
        assert!(
            ne.matches(&labels(&[])),
            "!= is true when the key is absent"
        );
    }

    #[test]
    fn sets_and_absent_keys() {
        let inn = sel("env in {\"a\", 'b'}");
        assert!(inn.matches(&labels(&[("env", "a")])));
        assert!(inn.matches(&labels(&[("env", "b")])));
        assert!(!inn.matches(&labels(&[("env", "c")])));
        assert!(!inn.matches(&labels(&[])));
        let not_in = sel("env not in {\"a\",\"b\"}");
        assert!(!not_in.matches(&labels(&[("env", "a")])));
        assert!(not_in.matches(&labels(&[("env", "c")])));
        assert!(not_in.matches(&labels(&[])));
        let empty = sel("env in {}");
        assert!(!empty.matches(&labels(&[("env", "")])));
        assert!(sel("env not in {}").matches(&labels(&[("env", "")])));
    }

    #[test]
    fn has_and_negation() {
        let has = sel("has(calico/k8s_ns)");
        assert!(has.matches(&labels(&[("calico/k8s_ns", "")])));
        assert!(!has.matches(&labels(&[("other", "x")])));
        let not_has = sel("!has(a)");
        assert!(not_has.matches(&labels(&[])));
        assert!(!not_has.matches(&labels(&[("a", "1")])));
        assert!(!sel("!all()").matches(&labels(&[])));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        // a || b && c  ==  a || (b && c)
        let s = sel("a == '1' || b == '1' && c == '1'");
        assert!(s.matches(&labels(&[("a", "1")])));
        assert!(!s.matches(&labels(&[("b", "1")])));
        assert!(s.matches(&labels(&[("b", "1"), ("c", "1")])));
        let p = sel("(a == '1' || b == '1') && c == '1'");
        assert!(!p.matches(&labels(&[("a", "1")])));
        assert!(p.matches(&labels(&[("a", "1"), ("c", "1")])));
        assert_ne!(s, p);
    }

    #[test]
    fn keys_take_the_calico_charset_and_keywords_stay_usable_as_keys() {
        let s = sel("a.b/c-d_E9 == 'x' && has == 'y' && in in {'z', 'w'} && not not in {'q', 'r'}");
        assert!(s.matches(&labels(&[
            ("a.b/c-d_E9", "x"),
            ("has", "y"),
            ("in", "z"),
            ("not", "s"),
        ])));
    }

    #[test]
    fn spelling_differences_normalise_to_one_canonical_text() {
        let a = sel("b == \"2\" && a == '1'");
        let b = sel("(a=='1')&&(b=='2')");
        let c = sel("a == '1' && a == '1' && all() && b == '2'");
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.canonical(), "a == \"1\" && b == \"2\"");
        assert_eq!(sel("!!(x == 'y')"), sel("x == 'y'"));
        assert_eq!(sel("!(x == 'y')"), sel("x != 'y'"));
        assert_eq!(sel("!(x in {'a','b'})"), sel("x not in {'b', 'a'}"));
        assert_eq!(sel("x in {'a'}"), sel("x == 'a'"));
        assert_eq!(sel("x not in {'a', 'a'}"), sel("x != 'a'"));
        assert_eq!(sel("a == '1' || all()"), Selector::all());
        assert_eq!(
            sel("(a=='1'||b=='2')||c=='3'"),
            sel("c=='3'||b=='2'||a=='1'")
        );
    }

    #[test]
    fn canonical_text_keeps_grouping() {
        let s = sel("(a == '1' || b == '2') && !(c == '3' && has(d))");
        assert_eq!(
            s.canonical(),
            "!(c == \"3\" && has(d)) && (a == \"1\" || b == \"2\")"
        );
        assert_eq!(sel(s.canonical()), s);
        assert_eq!(s.to_string(), s.canonical());
        let q = sel("a == 'say \"hi\"'");
        assert_eq!(q.canonical(), "a == 'say \"hi\"'");
        assert_eq!(sel(q.canonical()), q);
    }

    fn err(text: &str) -> SelectorError {
        match Selector::parse(text) {
            Ok(s) => panic!("{text:?} should not parse, got {s}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parse_errors_say_where_and_what() {
        assert_eq!(
            err("a == "),
            SelectorError::Unexpected {
                pos: 5,
                expected: "a quoted string",
                found: "end of selector".into()
            }
        );
        assert!(matches!(
            err("a = 'b'"),
            SelectorError::BadChar { pos: 2, ch: '=' }
        ));
        assert!(matches!(
            err("a == 'b"),
            SelectorError::UnterminatedString { pos: 5 }
        ));
        assert!(matches!(
            err("a == 'b' &&"),
            SelectorError::Unexpected { pos: 11, .. }
        ));
        assert!(matches!(
            err("(a == 'b'"),
            SelectorError::Unexpected { pos: 9, .. }
        ));
        assert!(matches!(
            err("a == 'b')"),
            SelectorError::Unexpected { pos: 8, .. }
        ));
        assert!(matches!(err("a"), SelectorError::Unexpected { pos: 1, .. }));
        assert!(matches!(
            err("a in {'b',}"),
            SelectorError::Unexpected { pos: 10, .. }
        ));
        assert!(matches!(
            err("a in {'b' 'c'}"),
            SelectorError::Unexpected { pos: 10, .. }
        ));
        assert!(matches!(
            err("a in 'b'"),
            SelectorError::Unexpected { pos: 5, .. }
        ));
        assert!(matches!(
            err("a not 'b'"),
            SelectorError::Unexpected { pos: 2, .. }
        ));
        assert!(matches!(
            err("has()"),
            SelectorError::Unexpected { pos: 4, .. }
        ));
        assert!(matches!(
            err("has(a"),
            SelectorError::Unexpected { pos: 5, .. }
        ));
        assert!(matches!(
            err("foo(a)"),
            SelectorError::Unexpected { pos: 3, .. }
        ));
        assert!(matches!(
            err("all(x)"),
            SelectorError::Unexpected { pos: 4, .. }
        ));
        assert!(matches!(
            err("a == 'b' c == 'd'"),
            SelectorError::Unexpected { pos: 9, .. }
        ));
        assert!(matches!(
            err("a == \"b\"; rm -rf /"),
            SelectorError::BadChar { pos: 8, ch: ';' }
        ));
        assert!(matches!(
            err("a & b"),
            SelectorError::BadChar { pos: 2, ch: '&' }
        ));
        assert!(matches!(
            err("é == 'x'"),
            SelectorError::BadChar { pos: 0, ch: 'é' }
        ));
        let long = format!("a == 'b' '{}'", "x".repeat(1000));
        let msg = err(&long).to_string();
        assert!(msg.len() < 150, "long tokens are shortened: {msg}");
        let msg = err("a == ").to_string();
        assert!(
            msg.contains("byte 5") && msg.contains("quoted string"),
            "{msg}"
        );
    }

    #[test]
    fn hostile_nesting_is_refused_not_overflowed() {
        let deep = format!("{}a == 'b'{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(err(&deep), SelectorError::TooDeep { .. }));
        let bangs = format!("{}has(a)", "!".repeat(10_000));
        assert!(matches!(err(&bangs), SelectorError::TooDeep { .. }));
        let ok = format!("{}a == 'b'{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(sel(&ok), sel("a == 'b'"));
    }

    #[test]
    fn values_may_hold_any_text_but_keys_may_not() {
        let s = sel("a == 'x; \"y\"\n{}()&&||'");
        assert!(s.matches(&labels(&[("a", "x; \"y\"\n{}()&&||")])));
        assert_eq!(sel(s.canonical()), s);
    }

    // -------------------------------------------------------------- proptest

    fn arb_key() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c", "in", "has", "x.y/z-1_2"]).prop_map(String::from)
    }

    fn arb_value() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["1", "2", "", "it's", "say \"hi\"", " sp ace "])
            .prop_map(String::from)
    }

    fn arb_expr() -> impl Strategy<Value = Expr> {
        let leaf = prop_oneof![
            Just(Expr::All),
            (arb_key(), arb_value()).prop_map(|(k, v)| Expr::Eq(k, v)),
            (arb_key(), arb_value()).prop_map(|(k, v)| Expr::Ne(k, v)),
            (arb_key(), prop::collection::btree_set(arb_value(), 0..4))
                .prop_map(|(k, s)| Expr::In(k, s)),
            (arb_key(), prop::collection::btree_set(arb_value(), 0..4))
                .prop_map(|(k, s)| Expr::NotIn(k, s)),
            arb_key().prop_map(Expr::Has),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
                prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
            ]
        })
    }

    /// Writes an arbitrary (non-normal) expression with full parentheses and
    /// varied spacing/quoting, the way a person might.
    fn write_loose(e: &Expr, out: &mut String) {
        let q = |v: &str| {
            if v.contains('\'') {
                format!("\"{v}\"")
            } else {
                format!("'{v}'")
            }
        };
        match e {
            Expr::All => out.push_str("all( )"),
            Expr::Eq(k, v) => out.push_str(&format!("{k}=={}", q(v))),
            Expr::Ne(k, v) => out.push_str(&format!("{k}  != {}", q(v))),
            Expr::In(k, s) => {
                let vals: Vec<String> = s.iter().map(|v| q(v)).collect();
                out.push_str(&format!("{k} in {{{}}}", vals.join(",")));
            }
            Expr::NotIn(k, s) => {
                let vals: Vec<String> = s.iter().map(|v| q(v)).collect();
                out.push_str(&format!("{k} not  in{{ {} }}", vals.join(" , ")));
            }
            Expr::Has(k) => out.push_str(&format!("has( {k} )")),
            Expr::Not(inner) => {
                out.push_str("!(");
                write_loose(inner, out);
                out.push(')');
            }
            Expr::And(items) | Expr::Or(items) => {
                let sep = if matches!(e, Expr::And(_)) {
                    "&&"
                } else {
                    "||"
                };
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        out.push_str(sep);
                    }
                    out.push('(');
                    write_loose(item, out);
                    out.push(')');
                }
            }
        }
    }

    fn arb_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map(arb_key(), arb_value(), 0..4)
    }

    proptest! {
        #[test]
        fn canonical_reparses_to_an_equal_selector(e in arb_expr()) {
            let mut text = String::new();
            write_loose(&e, &mut text);
            let s = Selector::parse(&text).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
            let again = Selector::parse(s.canonical())
                .map_err(|err| TestCaseError::fail(format!("{}: {err}", s.canonical())))?;
            prop_assert_eq!(&again, &s);
            prop_assert_eq!(again.canonical(), s.canonical());
        }

        #[test]
        fn normalising_keeps_the_meaning(e in arb_expr(), l in arb_labels()) {
            let mut text = String::new();
            write_loose(&e, &mut text);
            let s = Selector::parse(&text).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
            prop_assert_eq!(s.matches(&l), eval(&e, &l), "{} vs {}", text, s);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,40}") {
            let _ = Selector::parse(&text);
        }
    }
}
