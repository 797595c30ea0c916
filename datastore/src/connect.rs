//! The one way margay connects to etcd, for the syncer, the status writer,
//! `margay check`, `margay status` and `margay plan`.
//!
//! [`connect_any`] tries the configured endpoints in order (from the last
//! good one), each with a connect timeout, HTTP/2 keep-alive and, for
//! `https://` endpoints, the TLS files (or the system CA bundle when no CA
//! is configured). Connecting is lazy in the client, so a count-only read
//! of a probe key proves the endpoint serves requests; its response header
//! gives the cluster id and the store's revision. Client certificates
//! outside their validity period and the usual server-side TLS mistakes are
//! explained in words ([`check_client_cert`], [`explain_tls_error`]).

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

use crate::error::EtcdError;

mod tls_check;

pub use tls_check::{check_client_cert, explain_tls_error};

/// The largest message the client accepts from etcd (list pages and watch
/// responses). etcd refuses any request over its `--max-request-bytes`
/// (1.5 MiB by default, and it warns above 10 MiB), so every value and every
/// transaction it accepts fits, with room for a watch response that batches
/// several revisions. The client's own default is 4 MiB.
pub const MAX_RECEIVE_BYTES: usize = 64 * 1024 * 1024;

/// The CA bundle used for `https://` endpoints when none is configured
/// (Felix's default).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// HTTP/2 keep-alive: a ping this often, the connection is dead when
/// unanswered for [`KEEP_ALIVE_TIMEOUT`] (also while idle).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS material for etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle (PEM); `None` uses [`SYSTEM_CA_BUNDLE`] when it exists.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    pub key: Option<PathBuf>,
}

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs, tried in order (starting after the last good one).
    pub endpoints: Vec<String>,
    /// TLS files; only used with `https://` endpoints.
    pub tls: TlsFiles,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one unary request (one list page, one put).
    pub request_timeout: Duration,
}

impl EtcdConfig {
    /// From the agent's settings, with default timeouts.
    pub fn from_settings(s: &margay_config::Settings) -> Self {
        EtcdConfig {
            endpoints: s.etcd_endpoints.clone(),
            tls: TlsFiles {
                ca: s.etcd_ca_file.clone(),
                cert: s.etcd_cert_file.clone(),
                key: s.etcd_key_file.clone(),
            },
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// The same, with `timeout` for connecting and for each request (the
    /// one-shot subcommands, which must answer quickly).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self.request_timeout = timeout;
        self
    }
}

/// A connected client and the endpoint it talks to.
pub struct Connection {
    /// The client.
    pub client: Client,
    /// Its endpoint.
    pub endpoint: String,
    /// The etcd cluster's id, from the probe's response header.
    pub cluster_id: u64,
    /// The store's revision at the probe.
    pub revision: i64,
}

/// Connects to the first endpoint that answers a read of `probe_key`,
/// starting with the first configured one.
pub async fn connect(cfg: &EtcdConfig, probe_key: &str) -> Result<Connection, EtcdError> {
    connect_any(cfg, &mut 0, probe_key).await
}

/// Connects to the first endpoint that answers, trying them in order from
/// `*start` (wrapping). On success `*start` is that endpoint's index, so the
/// next attempt begins with it.
pub async fn connect_any(
    cfg: &EtcdConfig,
    start: &mut usize,
    probe_key: &str,
) -> Result<Connection, EtcdError> {
    let n = cfg.endpoints.len();
    let mut last = (String::new(), String::from("no endpoints configured"));
    for i in 0..n {
        let idx = (*start + i) % n;
        let endpoint = &cfg.endpoints[idx];
        match connect_one(cfg, endpoint, probe_key).await {
            Ok((client, cluster_id, revision)) => {
                *start = idx;
                return Ok(Connection {
                    client,
                    endpoint: endpoint.clone(),
                    cluster_id,
                    revision,
                });
            }
            Err(e) => {
                tracing::debug!(%endpoint, error = %e, "etcd endpoint not usable");
                let text = e.to_string();
                let reason = match explain_tls_error(&text) {
                    Some(cause) => format!("{cause}: {text}"),
                    None => text,
                };
                last = (endpoint.clone(), reason);
            }
        }
    }
    let (endpoint, reason) = last;
    Err(EtcdError::Unreachable {
        tried: cfg.endpoints.join(","),
        endpoint,
        reason,
    })
}

/// Connects to one endpoint and checks it answers a read of `probe_key`;
/// returns the client, the cluster id and the store's revision.
async fn connect_one(
    cfg: &EtcdConfig,
    endpoint: &str,
    probe_key: &str,
) -> Result<(Client, u64, i64), EtcdError> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(cfg.connect_timeout)
        .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
        .with_keep_alive_while_idle(true);
    if endpoint.starts_with("https://") {
        opts = opts.with_tls(tls_options(&cfg.tls)?);
    }
    let connect = Client::connect([endpoint], Some(opts));
    let mut client = timed(cfg.connect_timeout, "connect", connect).await?;
    // Connecting is lazy; a read proves the endpoint serves requests.
    let probe = client.get(probe_key, Some(GetOptions::new().with_count_only()));
    let answer = timed(cfg.request_timeout, "probe", probe).await?;
    let (cluster_id, revision) = answer
        .header()
        .map_or((0, 0), |h| (h.cluster_id(), h.revision()));
    Ok((client, cluster_id, revision))
}

/// The client's TLS settings: the configured CA (or the system bundle when
/// it exists) and the client identity, whose validity is checked first.
fn tls_options(files: &TlsFiles) -> Result<TlsOptions, EtcdError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| EtcdError::TlsFile {
            path: path.clone(),
            source,
        })
    };
    let mut tls = TlsOptions::new();
    let system = PathBuf::from(SYSTEM_CA_BUNDLE);
    let ca = files
        .ca
        .as_ref()
        .or_else(|| system.exists().then_some(&system));
    if let Some(ca) = ca {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
        let pem = read(cert)?;
        check_client_cert(cert, &pem, std::time::SystemTime::now())?;
        tls = tls.identity(Identity::from_pem(pem, read(key)?));
    }
    Ok(tls)
}

/// Runs `fut` with a deadline, mapping both failure kinds to [`EtcdError`].
pub async fn timed<T, F>(limit: Duration, op: &'static str, fut: F) -> Result<T, EtcdError>
where
    F: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(error)) => Err(EtcdError::Request {
            op,
            error: Box::new(error),
        }),
        Err(_) => Err(EtcdError::Timeout(op)),
    }
}
