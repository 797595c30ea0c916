//! Clear messages for the usual etcd TLS mistakes.
//!
//! An expired (or not yet valid) client certificate is caught before
//! connecting, by reading its validity from the PEM file: etcd would only
//! drop the connection, which the client reports as "operation was
//! canceled". Server-side problems (a CA that did not sign the server's
//! certificate, a certificate that does not name the endpoint's host) are
//! recognised in the TLS library's error text and explained in front of it.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::EtcdError;
use crate::time::{format_rfc3339, unix_seconds};

/// Fails when the first certificate in `pem` (read from `path`) is outside
/// its validity period at `now`. A certificate that cannot be parsed here
/// passes: the TLS library reports it.
pub fn check_client_cert(path: &Path, pem: &[u8], now: SystemTime) -> Result<(), EtcdError> {
    let Some((not_before, not_after)) = first_cert_der(pem).and_then(|der| validity(&der)) else {
        return Ok(());
    };
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    if now > not_after {
        return Err(EtcdError::ClientCertExpired {
            path: path.to_path_buf(),
            not_after: format_rfc3339(secs_to_time(not_after)),
        });
    }
    if now < not_before {
        return Err(EtcdError::ClientCertNotYetValid {
            path: path.to_path_buf(),
            not_before: format_rfc3339(secs_to_time(not_before)),
        });
    }
    Ok(())
}

/// What a TLS failure in `error` (an error's text) means, if recognised.
pub fn explain_tls_error(error: &str) -> Option<&'static str> {
    if error.contains("UnknownIssuer") || error.contains("unknown issuer") {
        Some("TLS: the server's certificate is not signed by the configured CA (etcd_ca_file)")
    } else if error.contains("not valid for name") || error.contains("NotValidForName") {
        Some("TLS: hostname mismatch: the server's certificate does not name the endpoint's host")
    } else if error.contains("Expired") && error.contains("invalid peer certificate") {
        Some("TLS: the server's certificate has expired")
    } else {
        None
    }
}

fn secs_to_time(secs: i64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// The DER bytes of the first `CERTIFICATE` block in `pem`.
fn first_cert_der(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + text[start..].find("-----END CERTIFICATE-----")?;
    base64_decode(&text[start..end])
}

/// Standard base64, ignoring whitespace.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// One DER element: (tag, contents, rest).
fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// (notBefore, notAfter) in Unix seconds from a certificate's DER.
fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer.
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    let (_, validity, _) = tlv(rest)?;
    let (t1, before, rest) = tlv(validity)?;
    let (t2, after, _) = tlv(rest)?;
    Some((asn1_time(t1, before)?, asn1_time(t2, after)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn asn1_time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    unix_seconds(year, month, day, hour, minute, second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_convert() {
        assert_eq!(asn1_time(0x17, b"200102000000Z"), Some(18_263 * 86_400));
        assert_eq!(asn1_time(0x18, b"20200102000000Z"), Some(18_263 * 86_400));
        assert_eq!(asn1_time(0x17, b"2001"), None);
    }

    #[test]
    fn garbage_is_left_to_the_tls_library() {
        let now = SystemTime::now();
        assert!(check_client_cert(Path::new("x"), b"not pem", now).is_ok());
        let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(check_client_cert(Path::new("x"), bad, now).is_ok());
    }

    #[test]
    fn tls_errors_are_explained() {
        assert!(explain_tls_error("invalid peer certificate: UnknownIssuer")
            .is_some_and(|s| s.contains("CA")));
        assert!(
            explain_tls_error("certificate not valid for name \"localhost\"")
                .is_some_and(|s| s.contains("hostname mismatch"))
        );
        assert_eq!(explain_tls_error("connection refused"), None);
    }
}
