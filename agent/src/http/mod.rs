//! The small HTTP endpoint on `--metrics-addr`: `/metrics`, `/livez`, `/readyz`.
//!
//! Routing, `HEAD` (the `GET` headers, the real `Content-Length`, no body)
//! and the HTTP/1.1 protocol come from axum over hyper; this module only says
//! what each path answers and keeps the limits a privileged agent wants: one
//! request per connection (no keep-alive), bounded request size, time and
//! number of connections.
//!
//! - `GET /metrics`: [`Metrics::render`] as OpenMetrics text.
//! - `GET /livez` (alias `/healthz`): `200 ok` while the main loop turns, 503 once it
//!   has not turned for `LIVENESS_WINDOW_SECS`.
//! - `GET /readyz`: `200` once a first dataplane apply succeeded, else `503`;
//!   `503` again while the last [`NOT_READY_AFTER_FAILED_APPLIES`] applies failed.
//! - Other paths `404`, other methods `405`, a malformed request `400`.
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

use axum::extract::State;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of every answer but `/metrics`.
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Largest request head we buffer (hyper's smallest allowed limit);
/// anything longer is refused.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request and read the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once (a scraper needs one).
const MAX_CONNECTIONS: usize = 32;

/// `/readyz`: after [`NOT_READY_AFTER_FAILED_APPLIES`] dataplane applies
/// failed in a row the kernel no longer follows the datastore: not ready
/// until one succeeds again.
pub const NOT_READY_AFTER_FAILED_APPLIES: u64 = 3;

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
        let service = TowerToHyperService::new(router(self.metrics));
        loop {
            match self.listener.accept().await {
                Ok((stream, _peer)) => {
                    // Over the limit: dropping the stream closes it.
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        continue;
                    };
                    let service = service.clone();
                    tokio::spawn(async move {
                        serve_connection(stream, service).await;
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

/// Answers one request on `stream` and closes it; gives up after
/// [`CONNECTION_TIMEOUT`]. Client errors are the client's problem.
async fn serve_connection(stream: TcpStream, service: TowerToHyperService<Router>) {
    let connection = http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(MAX_REQUEST_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(CONNECTION_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
}

/// The routes, over the shared [`Metrics`].
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/livez", get(livez_handler))
        .route("/healthz", get(livez_handler))
        .route("/readyz", get(readyz_handler))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(unknown_path)
        .with_state(metrics)
}

/// One answer: what a path serves, without the HTTP around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Reply {
    fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Reply {
            status,
            content_type: TEXT_CONTENT_TYPE,
            body: body.into(),
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, self.content_type)],
            self.body,
        )
            .into_response()
    }
}

/// `/metrics`: every family as OpenMetrics text.
pub fn metrics_page(metrics: &Metrics) -> Reply {
    Reply {
        status: StatusCode::OK,
        content_type: OPENMETRICS_CONTENT_TYPE,
        body: metrics.render(),
    }
}

/// `/livez`: is the main loop still turning?
pub fn livez(metrics: &Metrics) -> Reply {
    if metrics.loop_alive() {
        Reply::text(StatusCode::OK, "ok\n")
    } else {
        Reply::text(StatusCode::SERVICE_UNAVAILABLE, "main loop stalled\n")
    }
}

/// `/readyz`: has the kernel followed the datastore (see
/// [`NOT_READY_AFTER_FAILED_APPLIES`])?
pub fn readyz(metrics: &Metrics) -> Reply {
    let failed = metrics.consecutive_apply_failures();
    if failed >= NOT_READY_AFTER_FAILED_APPLIES {
        let body = format!("not ready: the last {failed} dataplane applies failed\n");
        return Reply::text(StatusCode::SERVICE_UNAVAILABLE, body);
    }
    match metrics.last_apply_timestamp() {
        Some(_) => Reply::text(StatusCode::OK, "ready\n"),
        None => Reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no dataplane apply yet\n",
        ),
    }
}

async fn metrics_handler(State(metrics): State<Metrics>) -> Reply {
    metrics_page(&metrics)
}

async fn livez_handler(State(metrics): State<Metrics>) -> Reply {
    livez(&metrics)
}

async fn readyz_handler(State(metrics): State<Metrics>) -> Reply {
    readyz(&metrics)
}

async fn method_not_allowed() -> Reply {
    Reply::text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n")
}

/// Unknown paths: `404` for `GET`/`HEAD`, `405` for any other method (the
/// method is refused whatever the path).
async fn unknown_path(method: Method) -> Reply {
    if method == Method::GET || method == Method::HEAD {
        Reply::text(StatusCode::NOT_FOUND, "not found; try /metrics\n")
    } else {
        method_not_allowed().await
    }
}

#[cfg(test)]
mod tests;
