//! Selector tests: matching, normal form, canonical text, parse errors, and
//! property tests that canonical text re-parses to an equal selector.

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
