//! Raw datastore `(key, Option<value>)` → typed [`Update`], or an
//! [`InvalidUpdate`] naming the key and the reason.
//!
//! This is the only place that reads datastore text. Every rule of
//! `shared/DATAMODEL.md` is enforced here, except the interface-prefix check
//! of local workload endpoints, which needs the live `InterfacePrefix` setting
//! and is therefore done by the calculation.
//!
//! Outcomes of [`parse_update`]:
//! - `Ok(None)`: a key margay does not read (other paths under the prefix, or
//!   outside it); ignore it silently.
//! - `Ok(Some(update))` with `value: None`: the object was deleted.
//! - `Err(e)` with `e.resource == None`: the key has a known shape but a bad
//!   segment (e.g. an id with a space); nothing to remove.
//! - `Err(e)` with `e.resource == Some(r)`: the value is invalid; the
//!   calculation treats `r` as absent until a valid value arrives.
//!
//! Decisions beyond the contract text (all fail-closed):
//! - Addresses and nets must be written in full (`std` address syntax: no
//!   short forms, no leading zeros, no spaces). A bare address where a net is
//!   expected means the host net (`/32`, `/128`), as Felix read it.
//! - Rule nets with host bits set (`10.0.0.1/24`) are accepted and truncated
//!   to their network (`10.0.0.0/24`), which is what iptables/nft match anyway.
//!   Pool CIDRs must be network addresses: a pool key is an identity.
//! - A rule key that is not in the contract invalidates the document even when
//!   its value is null (a typo must not silently widen a rule).
//! - Only matches have a negated `!key` form (`!action`, `!ip_version` and
//!   `!log_prefix` are unknown keys).
//! - An endpoint with both `profile_id` and `profile_ids` is invalid.
//! - `bird_ip` set to the empty string means "no address" (a deletion).
//! - Special-purpose addresses (loopback, unspecified, multicast, broadcast,
//!   link-local, IPv4-mapped; see `special`) invalidate an endpoint that
//!   lists one as its own address or floating IP, and a `bird_ip`; an
//!   endpoint gateway may be link-local (its normal form) but not the others.
//! - A profile or policy holds at most [`MAX_RULES_PER_DIRECTION`] rules in
//!   `inbound_rules` and in `outbound_rules`; a longer list invalidates the
//!   whole document (the reason names the limit), so that no single document
//!   can stall a host's firewall.

mod bgp;
mod documents;
mod endpoint;
mod fields;
mod key;
mod rule;
mod special;

use thiserror::Error;

use crate::model::{ResourceKey, Update, Value};

pub use bgp::{bgp_prefix, MAX_HOST_LEN};
pub use key::parse_key;
pub use rule::MAX_RULES_PER_DIRECTION;

/// A datastore key or value that failed to parse or validate.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {} {key:?}: {reason}", self.kind())]
pub struct InvalidUpdate {
    /// The raw datastore key.
    pub key: String,
    /// The object the key names, when the key itself was well-formed: that
    /// object must now be treated as absent.
    pub resource: Option<ResourceKey>,
    /// Why it was rejected (quotes any offending text, escaped and shortened).
    pub reason: String,
}

impl InvalidUpdate {
    /// A stable, low-cardinality label for metrics: `endpoint`,
    /// `host_endpoint`, `profile`, `tier`, `policy`, `pool`, `config`,
    /// `host_ip`, `ready`, `bgp`, or `key` when the key itself was malformed.
    pub fn kind(&self) -> &'static str {
        match &self.resource {
            None => "key",
            Some(r) => resource_kind(r),
        }
    }
}

/// The metric label of a resource kind.
fn resource_kind(r: &ResourceKey) -> &'static str {
    match r {
        ResourceKey::Ready => "ready",
        ResourceKey::GlobalConfig(_) | ResourceKey::HostConfig { .. } => "config",
        ResourceKey::HostIp(_) => "host_ip",
        ResourceKey::WorkloadEndpoint(_) => "endpoint",
        ResourceKey::HostEndpoint(_) => "host_endpoint",
        ResourceKey::ProfileRules(_)
        | ResourceKey::ProfileTags(_)
        | ResourceKey::ProfileLabels(_) => "profile",
        ResourceKey::TierMetadata(_) => "tier",
        ResourceKey::Policy { .. } => "policy",
        ResourceKey::IpPool(_) => "pool",
        ResourceKey::Bgp(_) => "bgp",
    }
}

/// Parses one datastore change. `prefix` is the root of the Calico v1 tree
/// (normally `/calico/v1`); keys of the BGP tree beside it (`/calico/bgp/v1`,
/// see [`bgp_prefix`]) are read too. `value` is `None` for a deletion.
// The error carries its ResourceKey by value (the calculation needs it); it is
// no larger than the `Update` on the success side, so boxing would gain nothing.
#[allow(clippy::result_large_err)]
pub fn parse_update(
    prefix: &str,
    key: &str,
    value: Option<&str>,
) -> Result<Option<Update>, InvalidUpdate> {
    let invalid = |resource: Option<ResourceKey>, reason: String| InvalidUpdate {
        key: key.to_owned(),
        resource,
        reason,
    };
    let resource = match parse_key(prefix, key) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(reason) => return Err(invalid(None, reason)),
    };
    let Some(text) = value else {
        return Ok(Some(Update {
            key: resource,
            value: None,
        }));
    };
    match parse_value(&resource, text) {
        Ok(value) => Ok(Some(Update {
            key: resource,
            value,
        })),
        Err(reason) => Err(invalid(Some(resource), reason)),
    }
}

/// Parses the value text of a well-formed key. `Ok(None)` means "absent".
fn parse_value(resource: &ResourceKey, text: &str) -> Result<Option<Value>, String> {
    let value = match resource {
        ResourceKey::Ready => Value::Ready(text == "true"),
        ResourceKey::GlobalConfig(_) | ResourceKey::HostConfig { .. } => {
            Value::Config(text.to_owned())
        }
        ResourceKey::HostIp(_) => return documents::host_ip(text),
        ResourceKey::WorkloadEndpoint(_) => Value::WorkloadEndpoint(endpoint::workload(text)?),
        ResourceKey::HostEndpoint(_) => Value::HostEndpoint(endpoint::host(text)?),
        ResourceKey::ProfileRules(_) => Value::ProfileRules(documents::profile_rules(text)?),
        ResourceKey::ProfileTags(_) => Value::ProfileTags(documents::profile_tags(text)?),
        ResourceKey::ProfileLabels(_) => Value::ProfileLabels(documents::profile_labels(text)?),
        ResourceKey::TierMetadata(_) => Value::TierMetadata(documents::tier_metadata(text)?),
        ResourceKey::Policy { .. } => Value::Policy(documents::policy(text)?),
        ResourceKey::IpPool(cidr) => Value::IpPool(documents::pool(*cidr, text)?),
        ResourceKey::Bgp(key) => return Ok(bgp::parse_value(key, text)?.map(Value::Bgp)),
    };
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stable_metric_labels() {
        let e = parse_update(
            "/calico/v1",
            "/calico/v1/policy/profile/a b/rules",
            Some("{}"),
        )
        .expect_err("bad id");
        assert_eq!(e.kind(), "key");
        assert_eq!(e.resource, None);
        let e = parse_update("/calico/v1", "/calico/v1/policy/profile/p/tags", Some("{}"))
            .expect_err("tags must be a list");
        assert_eq!(e.kind(), "profile");
        assert!(e
            .to_string()
            .starts_with("invalid profile \"/calico/v1/policy/profile/p/tags\": "));
    }

    #[test]
    fn deletions_of_well_formed_keys_pass_through() {
        let u = parse_update("/calico/v1", "/calico/v1/Ready", None)
            .expect("ok")
            .expect("read");
        assert_eq!(u.key, ResourceKey::Ready);
        assert_eq!(u.value, None);
    }

    #[test]
    fn ready_is_true_only_for_the_exact_string() {
        let ready = |v| {
            parse_update("/calico/v1", "/calico/v1/Ready", Some(v))
                .expect("ok")
                .expect("read")
                .value
        };
        assert_eq!(ready("true"), Some(Value::Ready(true)));
        assert_eq!(ready("false"), Some(Value::Ready(false)));
        assert_eq!(ready("TRUE"), Some(Value::Ready(false)));
        assert_eq!(ready(" true"), Some(Value::Ready(false)));
    }
}
