//! What can go wrong talking to etcd, and etcd client errors in words.

use std::path::PathBuf;

use thiserror::Error;

/// Why talking to etcd failed.
#[derive(Debug, Error)]
pub enum EtcdError {
    /// No endpoint could be reached.
    #[error("no etcd endpoint reachable ({tried}): {endpoint}: {reason}")]
    Unreachable {
        /// The endpoints tried.
        tried: String,
        /// The last endpoint tried.
        endpoint: String,
        /// Why it failed (with a TLS explanation in front when recognised).
        reason: String,
    },
    /// A TLS file could not be read.
    #[error("cannot read etcd TLS file {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The client certificate's validity period has ended.
    #[error("etcd client certificate {path} expired at {not_after}")]
    ClientCertExpired {
        /// The certificate file.
        path: PathBuf,
        /// Its end of validity (RFC 3339).
        not_after: String,
    },
    /// The client certificate's validity period has not begun.
    #[error("etcd client certificate {path} is not valid before {not_before}")]
    ClientCertNotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// Its start of validity (RFC 3339).
        not_before: String,
    },
    /// An etcd request failed.
    #[error("etcd {op} failed: {}", describe_etcd_error(error))]
    Request {
        /// What we were doing.
        op: &'static str,
        /// The client's error (boxed: it is large). Not a `source`: the
        /// message above already says what the chain behind it holds.
        error: Box<etcd_client::Error>,
    },
    /// One value is larger than the client accepts.
    #[error("etcd value of key {key} is larger than the client accepts ({limit} bytes a message)")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// The client's receive limit.
        limit: usize,
    },
    /// An etcd request took too long.
    #[error("etcd {0} timed out")]
    Timeout(&'static str),
    /// The watch ended, was cancelled or fell behind a compaction.
    #[error("etcd watch lost: {0}")]
    WatchLost(String),
    /// The consumer went away.
    #[error("sync consumer closed")]
    Closed,
}

impl EtcdError {
    /// The error without the endpoint list, for a caller that shows the
    /// endpoints itself (`margay check`): for [`EtcdError::Unreachable`]
    /// the last endpoint's reason, otherwise the whole text.
    pub fn reason(&self) -> String {
        match self {
            EtcdError::Unreachable { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }
}

/// An etcd client error in words: for a gRPC status its message and the
/// causes behind it (e.g. `tcp connect error: Connection refused (os error
/// 111)`), not the status's debug dump.
pub fn describe_etcd_error(error: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return error_chain(error);
    };
    let message = status.message();
    let mut deepest = None;
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        deepest = Some(e.to_string());
        source = e.source();
    }
    match deepest {
        Some(cause) if message.is_empty() => cause,
        Some(cause) if !message.contains(&cause) => format!("{message}: {cause}"),
        _ if message.is_empty() => format!("{:?}", status.code()),
        _ => message.to_string(),
    }
}

/// An error and its sources, `: `-separated (etcd's transport errors hide
/// the useful part, e.g. "connection refused", in the source chain).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    #[test]
    fn error_chain_includes_sources() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("transport error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(error_chain(&e), "transport error: connection refused");
    }
}
