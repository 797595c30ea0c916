//! Reading the agents' and etcd's pages over plain HTTP/1.0 from inside
//! the hub namespace: one sample of a metric, and when an agent last applied.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime};

/// `(margay_last_apply_revision, margay_last_apply_timestamp_seconds)` on
/// the agent at `addr`, `None` when it does not answer.
pub(super) fn last_apply(addr: SocketAddr) -> Option<(i64, SystemTime)> {
    let page = http_get(addr, "/metrics")?;
    let revision = sample(&page, "margay_last_apply_revision")?;
    let at = sample(&page, "margay_last_apply_timestamp_seconds")?;
    let at = SystemTime::UNIX_EPOCH + Duration::try_from_secs_f64(at).ok()?;
    Some((revision as i64, at))
}

/// `GET path` over HTTP/1.0: the whole response, `None` when nothing answered.
pub(super) fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The value of the unlabelled series `name` on `page`.
pub(super) fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The value of the unlabelled series `name` on the agent at `addr`.
pub(super) fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    sample(&http_get(addr, "/metrics")?, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_found_by_its_exact_name() {
        let page = "a_total 3\na 1.5\nab 7\n";
        assert_eq!(sample(page, "a"), Some(1.5));
        assert_eq!(sample(page, "a_total"), Some(3.0));
        assert_eq!(sample(page, "b"), None);
    }
}
