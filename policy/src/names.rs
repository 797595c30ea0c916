//! Validated names that come from the datastore.
//!
//! Every string that may later reach a kernel object name or ruleset text is
//! wrapped in one of these types, and the only way to build one is through a
//! validating constructor. Code downstream can therefore trust the charset.

use std::fmt;
use thiserror::Error;

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// An id (profile, tier, policy, endpoint, tag) with characters outside `[A-Za-z0-9_.-]` or empty.
    #[error("invalid id {0:?}: must match ^[A-Za-z0-9_.-]+$")]
    BadId(String),
    /// An interface name that is not 1-15 characters of `[A-Za-z0-9_-]`.
    #[error("invalid interface name {0:?}: must match ^[A-Za-z0-9_-]{{1,15}}$")]
    BadInterface(String),
    /// A MAC address in neither `aa:bb:cc:dd:ee:ff` nor `aa-bb-cc-dd-ee-ff` form.
    #[error("invalid MAC address {0:?}")]
    BadMac(String),
}

/// An id segment: profile, tier, policy, endpoint or tag name (`^[A-Za-z0-9_.-]+$`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(String);

impl Id {
    /// Validates `s` as an id.
    pub fn new(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(Id(s.to_owned()))
        } else {
            Err(NameError::BadId(s.to_owned()))
        }
    }

    /// The id as text (always within the id charset).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host-side interface name (`^[A-Za-z0-9_-]{1,15}$`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceName(String);

impl InterfaceName {
    /// Validates `s` as a Linux interface name in the Calico charset.
    pub fn new(s: &str) -> Result<Self, NameError> {
        let ok = (1..=15).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if ok {
            Ok(InterfaceName(s.to_owned()))
        } else {
            Err(NameError::BadInterface(s.to_owned()))
        }
    }

    /// The name as text (always within the interface charset).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the name starts with one of `prefixes`.
    pub fn has_prefix(&self, prefixes: &[String]) -> bool {
        prefixes.iter().any(|p| self.0.starts_with(p.as_str()))
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (one separator kind throughout).
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let bad = || NameError::BadMac(s.to_owned());
        let sep = if s.contains(':') { ':' } else { '-' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_charset_and_reject_the_rest() {
        assert!(Id::new("prof-1_a.b").is_ok());
        assert!(Id::new("").is_err());
        assert!(Id::new("a b").is_err());
        assert!(Id::new("a;drop").is_err());
        assert!(Id::new("a/b").is_err());
    }

    #[test]
    fn interface_names_are_bounded() {
        assert!(InterfaceName::new("cali12345678901").is_ok());
        assert!(InterfaceName::new("cali123456789012").is_err());
        assert!(InterfaceName::new("cali.x").is_err());
        assert!(InterfaceName::new("").is_err());
    }

    #[test]
    fn macs_in_both_forms() {
        let a = MacAddr::parse("AA:bb:cc:dd:ee:01").expect("colon form");
        let b = MacAddr::parse("aa-bb-cc-dd-ee-01").expect("dash form");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "aa:bb:cc:dd:ee:01");
        assert!(MacAddr::parse("aa:bb:cc:dd:ee").is_err());
        assert!(MacAddr::parse("aa:bb:cc:dd:ee:ff:00").is_err());
        assert!(MacAddr::parse("aa:bb-cc:dd:ee:ff").is_err());
        assert!(MacAddr::parse("zz:bb:cc:dd:ee:ff").is_err());
    }
}
