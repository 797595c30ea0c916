//! Datastore key + value parsing and validation (`parse_update`,
//! `parse_key`), for every resource kind.
//!
//! Input: the key, then optionally `\n` and the value (no newline: a
//! deletion). Properties: no panic; `parse_update` agrees with `parse_key`
//! on what the key names; error reasons stay short whatever the input.

use margay_policy::model::ResourceKey;
use margay_policy::update::{parse_key, parse_update};

const PREFIX: &str = "/calico/v1";

/// Longest error reason accepted: reasons quote input shortened, so a huge
/// value can never make a huge log line.
const MAX_REASON: usize = 2048;

/// The fuzz target `datastore_update`.
pub fn datastore_update(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (key, value) = match text.split_once('\n') {
        Some((k, v)) => (k, Some(v)),
        None => (text.as_ref(), None),
    };
    let named = parse_key(PREFIX, key);
    check(key, value, &named);
    if value.is_some() {
        // The deletion of the same key takes the other path.
        check(key, None, &named);
    }
}

fn check(key: &str, value: Option<&str>, named: &Result<Option<ResourceKey>, String>) {
    let got = parse_update(PREFIX, key, value);
    match (named, &got) {
        (Err(_), Err(e)) => assert_eq!(e.resource, None, "bad key, yet a resource: {e}"),
        (Ok(None), Ok(None)) => {}
        (Ok(Some(r)), Ok(Some(u))) => {
            assert_eq!(&u.key, r, "parse_update names another resource");
            // A deletion reads as one; a value reads as one too, except an
            // empty `bird_ip`, which DATAMODEL makes a deletion.
            let empty_bird_ip = matches!(r, ResourceKey::HostIp(_)) && value == Some("");
            assert_eq!(
                value.is_none() || empty_bird_ip,
                u.value.is_none(),
                "deletion mismatch"
            );
        }
        (Ok(Some(r)), Err(e)) => {
            assert_eq!(
                e.resource.as_ref(),
                Some(r),
                "invalid value of another resource"
            );
            assert!(
                value.is_some(),
                "a deletion of a well-formed key failed: {e}"
            );
        }
        _ => panic!("parse_key {named:?} but parse_update {got:?}"),
    }
    if let Err(e) = &got {
        let _ = e.kind();
        assert!(
            e.reason.len() <= MAX_REASON,
            "reason of {} bytes",
            e.reason.len()
        );
    }
}
