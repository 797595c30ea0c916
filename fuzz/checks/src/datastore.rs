//! Datastore key + value parsing and validation (`parse_update`,
//! `parse_key`), for every resource kind, BGP keys (`/calico/bgp/v1`) included.
//!
//! Input: the key, then optionally `\n` and the value (no newline: a
//! deletion). Properties: no panic; `parse_update` agrees with `parse_key`
//! on what the key names; error reasons stay short whatever the input.

use margay_policy::model::{BgpKey, ResourceKey};
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
            // empty `bird_ip`, `ip_addr_v4` or `ip_addr_v6`, which DATAMODEL
            // makes a deletion.
            let address_key = matches!(
                r,
                ResourceKey::HostIp(_)
                    | ResourceKey::Bgp(BgpKey::HostAddressV4(_) | BgpKey::HostAddressV6(_))
            );
            assert_eq!(
                value.is_none() || (address_key && value == Some("")),
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
