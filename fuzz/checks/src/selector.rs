//! The label selector parser (`Selector::parse`).
//!
//! Input: selector text. Properties: no panic (deep nesting is an error,
//! not a stack overflow); a parsed selector's canonical text parses back to
//! an equal selector with the same canonical text and the same verdict on a
//! label set drawn from the input's own words; `Display` is that text.

use std::collections::BTreeMap;

use margay_policy::selector::Selector;

/// The fuzz target `selector`.
pub fn selector(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(s) = Selector::parse(&text) else {
        return;
    };
    let canonical = s.canonical().to_owned();
    assert_eq!(s.to_string(), canonical, "Display differs from canonical");
    let again = Selector::parse(&canonical)
        .unwrap_or_else(|e| panic!("canonical {canonical:?} of {text:?} does not parse: {e}"));
    assert_eq!(
        again, s,
        "canonical {canonical:?} of {text:?} parses differently"
    );
    assert_eq!(again.canonical(), canonical, "canonical text is not stable");
    let labels = labels_from(&text);
    assert_eq!(
        s.matches(&labels),
        again.matches(&labels),
        "verdicts differ on {labels:?}"
    );
}

/// Pairs of consecutive words of the text as labels, so that keys and
/// values the selector names can be present.
fn labels_from(text: &str) -> BTreeMap<String, String> {
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || "_./-".contains(c)))
        .filter(|w| !w.is_empty())
        .collect();
    words
        .chunks(2)
        .map(|p| (p[0].to_owned(), p.get(1).copied().unwrap_or("").to_owned()))
        .collect()
}
