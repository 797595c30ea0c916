//! The small HTTP endpoint on `--metrics-addr`: `/metrics`, `/livez`, `/readyz`.
//!
//! A deliberately minimal HTTP/1.x server on tokio: one request per
//! connection, `GET`/`HEAD` only, bounded request size, time and number of
//! connections, no keep-alive.
//! That is all a Prometheus scraper or a health probe needs, and it keeps a
//! web framework out of a privileged agent.
//!
//! - `GET /metrics`: [`Metrics::render`] as OpenMetrics text.
//! - `GET /livez` (alias `/healthz`): `200 ok` while the main loop turns, 503 once it
//!   has not turned for `LIVENESS_WINDOW_SECS`.
//! - `GET /readyz`: `200` once a first dataplane apply succeeded, else `503`;
//!   `503` again while the last [`NOT_READY_AFTER_FAILED_APPLIES`] applies failed.
//!
//! Usage (from the agent's main loop):
//! ```ignore
//! let server = http::MetricsServer::bind(settings.metrics_addr, metrics.clone()).await?;
//! tracing::info!(addr = %server.local_addr(), "serving metrics");
//! tokio::spawn(server.serve());
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Largest request head we read; anything longer is refused.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request and read the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once (a scraper needs one).
const MAX_CONNECTIONS: usize = 32;

/// Why the metrics endpoint could not start.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr} for metrics: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A bound, not yet serving, metrics endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics: Metrics,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port; see [`Self::local_addr`]).
    pub async fn bind(addr: SocketAddr, metrics: Metrics) -> Result<Self, HttpError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| HttpError::Bind { addr, source })?;
        Ok(MetricsServer {
            listener,
            local_addr,
            metrics,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until the task is dropped/aborted. Each connection runs in its
    /// own task; a failing client never stops the server.
    pub async fn serve(self) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            match self.listener.accept().await {
                Ok((stream, _peer)) => {
                    // Over the limit: dropping the stream closes it.
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        continue;
                    };
                    let metrics = self.metrics.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            CONNECTION_TIMEOUT,
                            handle_connection(stream, &metrics),
                        )
                        .await;
                        drop(permit);
                    });
                }
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "metrics endpoint cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

async fn handle_connection(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let head = read_request_head(&mut stream).await?;
    let response = match head {
        Some(head) => respond(&head, metrics),
        None => Response::text(400, "Bad Request", "bad request\n"),
    };
    stream.write_all(&response.to_bytes()).await?;
    stream.shutdown().await
}

/// Reads up to the blank line ending the request head; `None` when the
/// request is too long or the connection closes first.
async fn read_request_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&buf) {
            return Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()));
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n"))
}

/// One HTTP response, fully buffered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: &'static str,
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// Body (empty for HEAD).
    pub body: String,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Self {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

/// Decides the answer to a request head (request line + headers). Pure.
pub fn respond(head: &str, metrics: &Metrics) -> Response {
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Response::text(400, "Bad Request", "bad request\n");
    };
    let path = target.split('?').next().unwrap_or(target);
    let mut response = match path {
        "/metrics" => Response {
            status: 200,
            reason: "OK",
            content_type: OPENMETRICS_CONTENT_TYPE,
            body: metrics.render(),
        },
        "/livez" | "/healthz" if metrics.loop_alive() => Response::text(200, "OK", "ok\n"),
        "/livez" | "/healthz" => Response::text(503, "Service Unavailable", "main loop stalled\n"),
        "/readyz" => readyz(metrics),
        _ => Response::text(404, "Not Found", "not found; try /metrics\n"),
    };
    match method {
        "GET" => response,
        "HEAD" => {
            response.body.clear();
            response
        }
        _ => Response::text(405, "Method Not Allowed", "only GET and HEAD\n"),
    }
}

/// `/readyz`: after [`NOT_READY_AFTER_FAILED_APPLIES`] dataplane applies
/// failed in a row the kernel no longer follows the datastore: not ready
/// until one succeeds again.
pub const NOT_READY_AFTER_FAILED_APPLIES: u64 = 3;

fn readyz(metrics: &Metrics) -> Response {
    let failed = metrics.consecutive_apply_failures();
    if failed >= NOT_READY_AFTER_FAILED_APPLIES {
        let body = format!("not ready: the last {failed} dataplane applies failed\n");
        return Response::text(503, "Service Unavailable", &body);
    }
    match metrics.last_apply_timestamp() {
        Some(_) => Response::text(200, "OK", "ready\n"),
        None => Response::text(
            503,
            "Service Unavailable",
            "not ready: no dataplane apply yet\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new("test", "none")
    }

    #[test]
    fn metrics_path_serves_openmetrics() {
        let r = respond("GET /metrics HTTP/1.1\r\nHost: x\r\n", &metrics());
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, OPENMETRICS_CONTENT_TYPE);
        assert!(r.body.contains("margay_build_info"));
        assert!(r.body.ends_with("# EOF\n"));
    }

    #[test]
    fn query_strings_are_ignored() {
        let r = respond("GET /metrics?x=1 HTTP/1.0", &metrics());
        assert_eq!(r.status, 200);
    }

    #[test]
    fn readyz_follows_the_first_apply() {
        let m = metrics();
        assert_eq!(respond("GET /readyz HTTP/1.1", &m).status, 503);
        m.observe_apply("none", Duration::from_millis(1), false);
        assert_eq!(respond("GET /readyz HTTP/1.1", &m).status, 503);
        m.observe_apply("none", Duration::from_millis(1), true);
        assert_eq!(respond("GET /readyz HTTP/1.1", &m).status, 200);
    }

    #[test]
    fn readyz_fails_after_consecutive_failed_applies_until_one_succeeds() {
        let m = metrics();
        m.observe_apply("none", Duration::from_millis(1), true);
        for _ in 1..NOT_READY_AFTER_FAILED_APPLIES {
            m.observe_apply("none", Duration::from_millis(1), false);
            assert_eq!(respond("GET /readyz HTTP/1.1", &m).status, 200);
        }
        m.observe_apply("none", Duration::from_millis(1), false);
        let r = respond("GET /readyz HTTP/1.1", &m);
        assert_eq!(r.status, 503);
        assert!(
            r.body.contains("the last 3 dataplane applies failed"),
            "{}",
            r.body
        );
        m.observe_apply("none", Duration::from_millis(1), true);
        assert_eq!(respond("GET /readyz HTTP/1.1", &m).status, 200);
    }

    #[test]
    fn other_methods_paths_and_garbage_are_refused() {
        let m = metrics();
        assert_eq!(respond("POST /metrics HTTP/1.1", &m).status, 405);
        assert_eq!(respond("GET /nope HTTP/1.1", &m).status, 404);
        assert_eq!(respond("GET /livez HTTP/1.1", &m).status, 200);
        m.loop_turned();
        assert_eq!(respond("GET /livez HTTP/1.1", &m).status, 200);
        m.set_loop_turn_for_test(1);
        assert_eq!(respond("GET /livez HTTP/1.1", &m).status, 503);
        m.loop_turned();
        assert_eq!(respond("", &m).status, 400);
        let head = respond("HEAD /metrics HTTP/1.1", &m);
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
    }

    #[test]
    fn response_bytes_carry_length_and_close() {
        let bytes = Response::text(200, "OK", "ok\n").to_bytes();
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 3\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nok\n"));
    }

    #[tokio::test]
    async fn serves_over_tcp_on_loopback() {
        let server = MetricsServer::bind("127.0.0.1:0".parse().expect("addr"), metrics())
            .await
            .expect("bind");
        let addr = server.local_addr();
        let task = tokio::spawn(server.serve());
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        task.abort();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("# TYPE margay_datastore_connected gauge"));
    }

    #[tokio::test]
    async fn bind_error_names_the_address() {
        let first = MetricsServer::bind("127.0.0.1:0".parse().expect("addr"), metrics())
            .await
            .expect("bind");
        let taken = first.local_addr();
        let err = MetricsServer::bind(taken, metrics())
            .await
            .expect_err("second bind must fail");
        assert!(err.to_string().contains(&taken.to_string()), "{err}");
    }
}
