//! Normal form and canonical text of selector expressions: flattening,
//! sorting, de-duplication and negation push-down, then rendering the one
//! canonical spelling that [`super::Selector`] compares by.

use std::collections::BTreeSet;

use super::Expr;

/// Brings an expression (whose children may not be normal yet) into normal form.
pub(super) fn normalise(e: Expr) -> Expr {
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

pub(super) fn render(e: &Expr, out: &mut String) {
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
